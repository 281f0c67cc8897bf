"""`slstt export onnx` and `slstt export check` (typer only at the top; torch/onnx inside)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

export_app = typer.Typer(
    help="Export models to ONNX (slstt export onnx) and check exported files.", no_args_is_help=True
)


@export_app.command("onnx")
def onnx_command(
    checkpoint: Path = typer.Option(..., "--checkpoint", "-c", help="Project checkpoint or authors' model_best_*.pth.tar."),
    output: Path = typer.Option(None, "--output", "-o", help="Output .onnx (default: checkpoint stem + .onnx)."),
    split: bool = typer.Option(False, "--split", help="Also write <stem>.encoder.onnx and <stem>.head.onnx for streaming."),
    dtype: str = typer.Option("fp32", "--dtype", help="fp32 | fp16 (GPU) | int8 (dynamic quantisation, CPU)."),
    opset: int = typer.Option(17, "--opset", help="ONNX opset (14..20)."),
    static_time: bool = typer.Option(False, "--static-time", help="Fix T to the model's T instead of a dynamic axis."),
    no_parity: bool = typer.Option(False, "--no-parity", help="Skip the torch vs onnxruntime check (not advised)."),
    aggregator: str = typer.Option("auto", "--aggregator",
                                   help="auto (from the checkpoint) | lstm | mean: the temporal head of an authors' checkpoint."),
) -> None:
    """Export a checkpoint to one self-contained .onnx file with its preprocessing in the metadata."""
    from rich.console import Console

    from slstt.export.onnx import export_checkpoint

    console = Console()
    report = export_checkpoint(checkpoint, output, dtype=dtype, split=split, opset=opset,
                               dynamic_time=not static_time, parity=not no_parity, aggregator=aggregator,
                               console=console)
    time_axis = "dynamic" if report.dynamic_time else f"fixed at {report.num_frames}"
    for path in report.outputs:
        console.print(f"wrote {path} ({path.stat().st_size / 2**20:.1f} MiB)")
    console.print(f"{dtype}, opset {opset}, T {time_axis}, input {report.input_size}px, {report.seconds:.1f} s")


@export_app.command("check")
def check_command(
    model: Path = typer.Argument(..., help="An .onnx file written by `slstt export onnx`."),
    runs: int = typer.Option(20, "--runs", help="Timed runs per provider (median reported)."),
    provider: str = typer.Option("all", "--provider", help="all usable providers, or one of auto|tensorrt|cuda|cpu."),
) -> None:
    """Print the model's metadata and its batch-1 latency on each usable provider."""
    from rich.console import Console

    from slstt.errors import SlsttError
    from slstt.export.metadata import read_metadata
    from slstt.export.runtime import check_provider, provider_status, usable_providers

    if runs < 1:
        raise SlsttError(f"--runs must be >= 1, got {runs}")
    if provider != "all":
        check_provider(provider, "--provider")  # before reading the model: the GPU may be the problem
    metadata = read_metadata(model)
    console = Console()
    console.print(_metadata_table(model, metadata))
    names = usable_providers() if provider == "all" else [provider]
    for gpu in ("cuda", "tensorrt"):
        ok, reason = provider_status(gpu)
        if not ok:
            console.print(f"{gpu}: not usable ({reason})", markup=False)
    console.print(_latency_table(model, metadata, names, runs))


def _metadata_table(model: Path, metadata: dict) -> Any:
    import json

    from rich.table import Table

    table = Table(title=f"{model.name}: slstt metadata", show_lines=False)
    table.add_column("field")
    table.add_column("value", overflow="fold")
    for key in ("part", "dtype", "labels", "class_scheme", "T", "dynamic_time", "input_size", "mean", "std",
                "flow", "encoding", "crop", "frame_rate", "training", "dataset", "metrics", "checkpoint",
                "versions", "git", "opset", "exported_at", "format_version"):
        if key in metadata:
            value = metadata[key]
            table.add_row(key, value if isinstance(value, str) else json.dumps(value, default=str))
    model_cfg = metadata.get("model_config", {})
    table.add_row("backbone", f"{model_cfg.get('backbone')} / {model_cfg.get('aggregator')}")
    checks = [c for c in metadata.get("parity", {}).get("checks", []) if c["dtype"] == metadata.get("dtype")]
    if checks:
        worst = max(c["max_abs_diff"] for c in checks)
        table.add_row("parity", f"max |diff| vs torch {worst:.2e} over {len(checks)} checks")
    return table


def _latency_table(model: Path, metadata: dict, names: list[str], runs: int) -> Any:
    import time

    import numpy as np
    from rich.table import Table

    from slstt.export.metadata import check_compatible
    from slstt.export.runtime import _warmup, create_session

    latency = Table(title=f"latency, batch 1, median of {runs} runs")
    for col in ("provider", "used", "median ms", "min ms"):
        latency.add_column(col)
    for name in names:
        session, used = create_session(model, name, warmup=False)
        inp, out = session.get_inputs()[0], session.get_outputs()[0]
        T = check_compatible(metadata, input_shape=inp.shape, output_size=out.shape[-1], where=str(model)).num_frames
        _warmup(session, T)
        shape = [d if isinstance(d, int) else 1 for d in inp.shape]
        if len(shape) in (3, 5) and not isinstance(inp.shape[1], int):
            shape[1] = T
        x = np.random.default_rng(0).standard_normal(shape).astype(
            np.float16 if inp.type == "tensor(float16)" else np.float32
        )
        times = []
        for _ in range(runs):
            start = time.perf_counter()
            session.run(None, {inp.name: x})
            times.append((time.perf_counter() - start) * 1000)
        latency.add_row(name, ",".join(used), f"{np.median(times):.2f}", f"{min(times):.2f}")
    return latency
