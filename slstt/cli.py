"""The `slstt` command line. Each stage owns its commands (slstt.<stage>.cli); this file only
wires them together and turns user errors into one clear line and exit code 2."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from typing import Any

import typer

from slstt import __version__
from slstt.errors import SlsttError

app = typer.Typer(
    name="slstt",
    help="SLSTT micro-expression recognition: prepare data, train (LOSO), export to ONNX, run live.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"slstt {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """SLSTT micro-expression recognition toolkit."""


def _load(module: str, attr: str) -> Any | None:
    """The stage's command, or None while that stage's module is not built."""
    try:
        mod = importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name == module:
            return None
        raise
    return getattr(mod, attr, None)


def _not_built(name: str, help_text: str) -> Callable[..., None]:
    def command() -> None:
        typer.echo(f"error: `slstt {name}` is not built yet in this version", err=True)
        raise typer.Exit(2)

    command.__doc__ = help_text
    return command


def _add_command(name: str, module: str, attr: str, help_text: str, target: typer.Typer = app) -> None:
    func = _load(module, attr)
    target.command(name, help=None if func else help_text)(func or _not_built(name, help_text))


def _add_group(name: str, module: str, attr: str, help_text: str) -> None:
    group = _load(module, attr)
    if group is None:
        group = typer.Typer(help=help_text, no_args_is_help=True)
        group.command("run", help=help_text)(_not_built(name, help_text))
    app.add_typer(group, name=name, help=help_text)


_add_command("synth", "slstt.data.synth", "synth_command", "Generate a synthetic micro-expression corpus and long test videos.")
_add_command("prepare", "slstt.data.cli", "prepare_command", "Crop faces, compute long-term optical flow and cache the encoded flow images.")
_add_group("data", "slstt.data.cli", "data_app", "Inspect data sets (slstt data check).")
_add_command("train", "slstt.training.cli", "train_command", "Train SLSTT under leave-one-subject-out (or on all subjects).")
_add_command("sweep", "slstt.training.sweep", "sweep_command", "Run a grid of training runs (seeds, backbones, aggregators, lr) on Ray.")
_add_group("export", "slstt.export.cli", "export_app", "Export models to ONNX (slstt export onnx) and check exported files.")
_add_command("live", "slstt.realtime.cli", "live_command", "Live micro-expression detector on a camera, video file or stream.")
_add_command("analyze", "slstt.realtime.cli", "analyze_command", "Run the live pipeline over a video file as fast as possible and report events.")
_add_command("demo", "slstt.realtime.cli", "demo_command", "End-to-end demo with no camera and no data: synth, train, export, live on a video.")


def main(argv: list[str] | None = None) -> None:
    try:
        app(args=argv, prog_name="slstt")
    except SlsttError as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        sys.exit(130)


if __name__ == "__main__":
    main()
