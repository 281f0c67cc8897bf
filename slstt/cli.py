"""The `slstt` command line. Each stage owns its commands (slstt.<stage>.cli); this file only
wires them together and turns user errors into one clear line and exit code 2."""

from __future__ import annotations

import importlib
import sys
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


def _command(module: str, attr: str) -> Any:
    """A stage's command; stage CLI modules import only typer, so start-up stays fast."""
    return getattr(importlib.import_module(module), attr)


app.command("synth")(_command("slstt.data.synth", "synth_command"))
app.command("prepare")(_command("slstt.data.cli", "prepare_command"))
app.add_typer(_command("slstt.data.cli", "data_app"), name="data", help="Inspect data sets (slstt data check).")
app.command("train")(_command("slstt.training.cli", "train_command"))
app.command("sweep")(_command("slstt.training.sweep", "sweep_command"))
app.add_typer(_command("slstt.export.cli", "export_app"), name="export",
              help="Export models to ONNX (slstt export onnx) and check exported files.")
app.command("live")(_command("slstt.realtime.cli", "live_command"))
app.command("analyze")(_command("slstt.realtime.cli", "analyze_command"))
app.command("demo")(_command("slstt.realtime.cli", "demo_command"))
app.command("doctor")(_command("slstt.gpu", "doctor_command"))
app.command("spot-long")(_command("slstt.realtime.megc", "spot_long_command"))


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
