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


_Errors = tuple[type[BaseException], ...]


def _click_exceptions() -> tuple[_Errors, _Errors, _Errors]:
    """(usage errors, aborts, exits) of click and of the click copy newer typer releases vendor."""
    modules = []
    for name in ("typer._click.exceptions", "click.exceptions"):
        try:
            modules.append(importlib.import_module(name))
        except ImportError:
            pass
    usage: _Errors = tuple(m.UsageError for m in modules if hasattr(m, "UsageError"))
    aborts: _Errors = (*(m.Abort for m in modules if hasattr(m, "Abort")), typer.Abort)
    exits: _Errors = (*(m.Exit for m in modules if hasattr(m, "Exit")), typer.Exit)
    return usage, aborts, exits


def _usage_error(exc: Any) -> int:
    ctx = getattr(exc, "ctx", None)
    if type(exc).__name__ == "NoArgsIsHelpError" and ctx is not None:  # `slstt` or `slstt export`: the help
        typer.echo(ctx.get_help(), err=True)
        return 2
    command = ctx.command_path if ctx is not None else "slstt"
    typer.echo(f"error: {exc.format_message().rstrip('.')}; see {command} --help", err=True)
    return 2


def main(argv: list[str] | None = None) -> None:
    """Run a command; user errors are one line and exit 2 (SlsttError: its exit_code), a wrong-type
    value too (`--threshold-k abc`: no usage box), Ctrl-C exits 130."""
    usage, aborts, exits = _click_exceptions()
    stops: _Errors = (*aborts, KeyboardInterrupt)
    try:
        code = app(args=argv, prog_name="slstt", standalone_mode=False)
    except SlsttError as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except usage as exc:
        sys.exit(_usage_error(exc))
    except exits as exc:
        sys.exit(getattr(exc, "exit_code", 0))
    except stops:
        typer.echo("interrupted", err=True)
        sys.exit(130)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
