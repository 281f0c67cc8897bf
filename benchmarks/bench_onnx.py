"""Latency per sample (batch 1, T frames) of torch vs onnxruntime fp32 / int8 on CPU, and on a CUDA
machine also torch/onnxruntime CUDA fp32/fp16 (and TensorRT when usable). Random weights
(pretrained=False): speed does not depend on them.

    python benchmarks/bench_onnx.py --runs 10
    python benchmarks/bench_onnx.py --models vit_base_patch16_384 --runs 3
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from slstt.config import ModelConfig, PreprocessConfig
from slstt.export.onnx import export_onnx
from slstt.export.runtime import create_session, provider_reason, usable_providers
from slstt.models import create_model, save_checkpoint

MODELS = ("vit_tiny_patch16_224", "vit_small_patch16_224", "vit_base_patch16_384")


def median_ms(fn: Callable[[], object], runs: int, warmup: int = 0) -> float:
    """Callers warm up already (the reference forward, create_session's warm-up run)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def bench_model(name: str, num_frames: int, runs: int, console: Console) -> list[tuple[str, float, float]]:
    """[(variant, median ms, max |logit diff| vs torch fp32)]."""
    size = int(name.rsplit("_", 1)[-1])
    cfg = ModelConfig(backbone=name, input_size=size, num_frames=num_frames, num_classes=5)
    torch.manual_seed(0)
    model = create_model(cfg, pretrained=False).eval()
    x = torch.randn(1, num_frames, 3, size, size)
    with torch.inference_mode():
        ref = model(x).numpy()
    rows: list[tuple[str, float, float]] = []

    def torch_run(m: torch.nn.Module, inp: torch.Tensor) -> Callable[[], object]:
        def run() -> object:
            with torch.inference_mode():
                return m(inp)
        return run

    with console.status(f"{name}: torch cpu fp32"):
        rows.append(("torch cpu fp32", median_ms(torch_run(model, x), runs), 0.0))
    gpu = [p for p in usable_providers() if p != "cpu"]
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = save_checkpoint(Path(tmp) / f"{name}.pt", model,
                               preprocess=PreprocessConfig(input_size=size, num_frames=num_frames), meta={})
        dtypes = ["fp32", "int8"] + (["fp16"] if gpu else [])
        for dtype in dtypes:
            path = Path(tmp) / f"{name}.{dtype}.onnx"
            with console.status(f"{name}: export {dtype}"):
                export_onnx(ckpt, path, dtype=dtype, parity=False, console=Console(quiet=True))
            providers = {"fp32": ["cpu", *gpu], "int8": ["cpu"], "fp16": gpu}[dtype]
            for provider in providers:
                with console.status(f"{name}: onnxruntime {provider} {dtype}"):
                    session, used = create_session(path, provider)
                    feed = {session.get_inputs()[0].name: x.numpy()}
                    out = session.run(None, feed)[0]
                    ms = median_ms(lambda s=session, f=feed: s.run(None, f), runs)
                rows.append((f"ort {provider} {dtype}", ms, float(np.abs(out - ref).max())))
    if torch.cuda.is_available():
        cuda_model, xc = model.cuda(), x.cuda()
        rows.append(("torch cuda fp32", median_ms(torch_run(cuda_model, xc), runs), 0.0))
        half = cuda_model.half()
        with torch.inference_mode():
            diff = float((half(xc.half()).float().cpu().numpy() - ref).__abs__().max())
        rows.append(("torch cuda fp16", median_ms(torch_run(half, xc.half()), runs), diff))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--frames", type=int, default=11)
    args = parser.parse_args()
    console = Console()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    console.print(f"torch {torch.__version__} threads={torch.get_num_threads()}, cpus={os.cpu_count()}, "
                  f"load avg {load:.1f}, providers usable: {', '.join(usable_providers())}, "
                  f"batch 1, T={args.frames}, median of {args.runs} runs")
    for gpu in ("cuda", "tensorrt"):
        reason = provider_reason(gpu)
        if reason:  # say why a GPU row is missing instead of leaving it out silently
            console.print(f"{gpu}: not usable ({reason})", markup=False)
    for name in args.models:
        rows = bench_model(name, args.frames, args.runs, console)
        base = rows[0][1]
        table = Table(title=f"{name} (pretrained=False, LSTM)")
        for col in ("variant", "ms / sample", "speed-up vs torch cpu", "max |logit diff|"):
            table.add_column(col)
        for variant, ms, diff in rows:
            table.add_row(variant, f"{ms:.1f}", f"{base / ms:.2f}x", f"{diff:.1e}")
        console.print(table)


if __name__ == "__main__":
    main()
