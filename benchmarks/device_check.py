"""One prepared GPU-day check: everything the GPU side of slstt claims, measured in one call.

    python benchmarks/device_check.py            # GPU machine: ViT-B/384, T 11 (< 8 min on an H200)
    python benchmarks/device_check.py --quick    # any machine: tiny ViT at 64 px, T 5 (CPU fallback)

Steps (each one is timed, and a failing step is reported and the rest still run):
 1. doctor         `slstt doctor`'s rows (driver, devices, onnxruntime providers, torch CUDA)
 2. ort_no_torch   a fresh process that never imports torch: is onnxruntime's CUDA provider usable
                   (the pip CUDA/cuDNN preload, issue 14), and does a session really hold it
 3. export         random-weight checkpoint (pretrained=False) -> fp32 and fp16 .onnx
 4. latency        recognition latency, batch 1, T frames, through OnnxClassifier: onnxruntime on
                   CPU / CUDA fp32 / CUDA fp16 / TensorRT, torch CPU / CUDA fp32 / fp16, with max |diff| of
                   the probabilities vs torch fp32 and top-1 agreement
 5. loso_epoch     one LOSO fold of a small synthetic corpus (slstt synth + the training API), seconds
                   per epoch with and without the frozen-feature cache, on the GPU when there is one

Prints one table; writes $OUT/device_check.json (or --json PATH) when set. TensorRT engine builds
run in a child process with a time limit so a slow build cannot eat the budget.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.markup import escape
from rich.table import Table

console = Console()


@dataclass
class Step:
    name: str
    ok: bool
    seconds: float
    summary: str
    data: dict[str, Any] = field(default_factory=dict)


@dataclass
class Settings:
    backbone: str
    input_size: int
    frames: int
    runs: int
    subjects: int
    clips_per_class: int
    epochs: int
    trt_timeout: float
    work: Path
    device: str = "cpu"
    budget_s: float = 450.0
    started: float = field(default_factory=time.perf_counter)

    def left(self) -> float:
        return self.budget_s - (time.perf_counter() - self.started)


def run_step(steps: list[Step], name: str, fn: Callable[[], tuple[str, dict[str, Any]]], settings: Settings,
             needs_s: float = 0.0) -> None:
    """Run one step; its failure (any exception) is recorded with its first line and the run goes on."""
    if settings.left() < needs_s:
        steps.append(Step(name, False, 0.0, f"skipped: {settings.left():.0f} s left of the budget, needs ~{needs_s:.0f}"))
        return
    start = time.perf_counter()
    console.rule(f"[bold]{name}")
    try:
        summary, data = fn()
        steps.append(Step(name, True, time.perf_counter() - start, summary, data))
    except Exception as exc:  # noqa: BLE001 - report and continue is the point of this script
        line = next((s for s in str(exc).splitlines() if s.strip()), type(exc).__name__)
        steps.append(Step(name, False, time.perf_counter() - start, f"{type(exc).__name__}: {line[:200]}",
                          {"traceback": traceback.format_exc()[-3000:]}))
    console.print(f"{name}: {'ok' if steps[-1].ok else 'FAILED'} in {steps[-1].seconds:.1f} s - "
                  f"{escape(steps[-1].summary)}")


# ---- 1, 2: what runs here ---------------------------------------------------------------------

def step_doctor() -> tuple[str, dict[str, Any]]:
    from slstt.gpu import doctor_rows

    rows = [asdict(r) for r in doctor_rows()]
    usable = [r["component"] for r in rows if r["usable"]]
    return f"usable: {', '.join(usable)}", {"rows": rows}


NO_TORCH_PROBE = """
import json, sys
import numpy as np
from slstt.export.runtime import _probe_model, create_session_from_bytes, provider_status
out = {name: provider_status(name) for name in ("cuda", "tensorrt")}
session, used = create_session_from_bytes(_probe_model(), "auto", warmup=False)
out["auto_session_providers"] = session.get_providers()
out["torch_imported"] = "torch" in sys.modules
print(json.dumps(out))
"""


def step_ort_no_torch() -> tuple[str, dict[str, Any]]:
    proc = subprocess.run([sys.executable, "-c", NO_TORCH_PROBE], capture_output=True, text=True, timeout=120)
    if proc.returncode != 0:
        raise RuntimeError(f"probe exited {proc.returncode}: {proc.stderr.strip()[-300:]}")
    data = json.loads(proc.stdout.strip().splitlines()[-1])
    cuda_ok, reason = data["cuda"]
    summary = (f"CUDA provider {'usable' if cuda_ok else 'NOT usable: ' + reason} without torch; "
               f"auto session uses {', '.join(data['auto_session_providers'])}; "
               f"TensorRT {'usable' if data['tensorrt'][0] else 'not usable: ' + data['tensorrt'][1]}")
    return summary, data


# ---- 3, 4: export and recognition latency -----------------------------------------------------

def build_model(s: Settings) -> tuple[Any, Path]:
    import torch

    from slstt.config import ModelConfig, PreprocessConfig
    from slstt.models import create_model, save_checkpoint

    cfg = ModelConfig(backbone=s.backbone, input_size=s.input_size, num_frames=s.frames, num_classes=3,
                      labels=["negative", "positive", "surprise"], class_scheme="megc-3")
    torch.manual_seed(0)
    model = create_model(cfg, pretrained=False).eval()
    ckpt = save_checkpoint(s.work / "model.pt", model,
                           preprocess=PreprocessConfig(input_size=s.input_size, num_frames=s.frames), meta={})
    return model, ckpt


def step_export(s: Settings, state: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    from slstt.export.onnx import export_onnx

    model, ckpt = build_model(s)
    state["model"] = model
    data: dict[str, Any] = {}
    for dtype in ("fp32", "fp16"):
        start = time.perf_counter()
        path = s.work / f"model.{dtype}.onnx"
        export_onnx(ckpt, path, dtype=dtype, parity=False, console=Console(quiet=True))
        state[dtype] = path
        data[dtype] = {"seconds": round(time.perf_counter() - start, 2), "mib": round(path.stat().st_size / 2**20, 1)}
    return ", ".join(f"{k} {v['mib']} MiB in {v['seconds']} s" for k, v in data.items()), data


def median_ms(fn: Callable[[], object], runs: int) -> float:
    fn()  # one more warm-up: first CUDA/TensorRT runs allocate
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


TRT_CHILD = """
import json, sys, time
import numpy as np
from slstt.export.runtime import OnnxClassifier
path, runs = sys.argv[1], int(sys.argv[2])
x = np.load(sys.argv[3])
start = time.perf_counter()
clf = OnnxClassifier(path, provider="tensorrt")
build = time.perf_counter() - start
probs = clf.predict(x)
times = []
for _ in range(runs):
    t = time.perf_counter(); clf.predict(x); times.append((time.perf_counter() - t) * 1000)
print(json.dumps({"providers": clf.providers, "build_s": build, "ms": sorted(times)[len(times) // 2],
                  "probs": probs.tolist()}))
"""


def step_latency(s: Settings, state: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    import torch

    from slstt.export.runtime import OnnxClassifier, provider_status

    if "fp32" not in state:
        raise RuntimeError("no exported model (the export step failed)")
    x = np.random.default_rng(0).standard_normal((1, s.frames, 3, s.input_size, s.input_size)).astype(np.float32)
    model = state["model"]
    results: dict[str, dict[str, Any]] = {}

    cpu_runs = max(3, s.runs // 4)  # ViT-B/384 on CPU takes ~1 s a run: fewer runs keep the budget

    def torch_variant(name: str, m: Any, inp: Any) -> None:
        def run() -> Any:
            with torch.inference_mode():
                return m(inp)
        ms = median_ms(run, cpu_runs if name.startswith("torch cpu") else s.runs)
        results[name] = {"ms": ms, "probs": torch.softmax(run().float(), 1).cpu().numpy()}

    torch_variant("torch cpu fp32", model, torch.from_numpy(x))
    reference = results["torch cpu fp32"]["probs"]
    if torch.cuda.is_available():
        cuda_model = model.cuda()
        torch_variant("torch cuda fp32", cuda_model, torch.from_numpy(x).cuda())
        torch_variant("torch cuda fp16", cuda_model.half(), torch.from_numpy(x).cuda().half())
        model.float().cpu()
    variants = [("cpu", "fp32")]
    if provider_status("cuda")[0]:
        variants += [("cuda", "fp32"), ("cuda", "fp16")]
    for provider, dtype in variants:
        clf = OnnxClassifier(state[dtype], provider=provider)
        ms = median_ms(lambda c=clf: c.predict(x), cpu_runs if provider == "cpu" else s.runs)
        results[f"ort {provider} {dtype}"] = {"ms": ms, "probs": clf.predict(x), "providers": clf.providers}
    trt_ok, trt_reason = provider_status("tensorrt")
    if trt_ok:
        np.save(s.work / "x.npy", x)
        for dtype in ("fp32", "fp16"):
            try:
                proc = subprocess.run([sys.executable, "-c", TRT_CHILD, str(state[dtype]), str(s.runs),
                                       str(s.work / "x.npy")], capture_output=True, text=True,
                                      timeout=max(30.0, min(s.trt_timeout, s.left() - 60)))
                if proc.returncode != 0:
                    results[f"ort tensorrt {dtype}"] = {"error": proc.stderr.strip()[-300:]}
                    continue
                child = json.loads(proc.stdout.strip().splitlines()[-1])
                results[f"ort tensorrt {dtype}"] = {"ms": child["ms"], "probs": np.array(child["probs"]),
                                                    "providers": child["providers"], "build_s": child["build_s"]}
            except subprocess.TimeoutExpired:
                results[f"ort tensorrt {dtype}"] = {"error": f"engine build/run over {s.trt_timeout:.0f} s"}
    else:
        results["ort tensorrt"] = {"error": f"not usable: {trt_reason}"}

    table = Table(title=f"recognition latency: {s.backbone} {s.input_size}px, T {s.frames}, batch 1, "
                        f"median of {s.runs} (random weights)")
    for col in ("variant", "ms", "max |prob diff| vs torch cpu fp32", "top-1 agrees", "note"):
        table.add_column(col)
    data: dict[str, Any] = {}
    for name, r in results.items():
        if "error" in r:
            table.add_row(name, "-", "-", "-", escape(r["error"][:120]))
            data[name] = {"error": r["error"]}
            continue
        diff = float(np.abs(np.asarray(r["probs"], dtype=np.float32) - reference).max())
        agree = bool(np.argmax(r["probs"]) == np.argmax(reference))
        note = ",".join(r.get("providers", [])) + (f"; engine {r['build_s']:.0f} s" if "build_s" in r else "")
        table.add_row(name, f"{r['ms']:.1f}", f"{diff:.1e}", str(agree), escape(note))
        data[name] = {"ms": round(r["ms"], 2), "max_prob_diff": diff, "top1_agrees": agree, "note": note}
    console.print(table)
    best = min((v["ms"], k) for k, v in data.items() if "ms" in v)
    return f"fastest {best[1]} {best[0]:.1f} ms", data


# ---- 5: LOSO epoch with and without the feature cache ------------------------------------------

def step_loso(s: Settings) -> tuple[str, dict[str, Any]]:
    from slstt.config import ModelConfig, PreprocessConfig
    from slstt.data.synth import make_corpus
    from slstt.training.cli import load_training_samples
    from slstt.training.config import TrainConfig
    from slstt.training.loso import train_run

    corpus = s.work / "corpus"
    start = time.perf_counter()
    make_corpus(corpus, subjects=s.subjects, clips_per_class=s.clips_per_class, size=192)
    synth_s = time.perf_counter() - start
    model = ModelConfig(backbone=s.backbone, input_size=s.input_size, num_frames=s.frames, aggregator="lstm")
    base = TrainConfig(dataset="casme2", data_root=str(corpus), scheme="megc-3", cache_dir=str(s.work / "cache"),
                       preprocess=PreprocessConfig(input_size=s.input_size, num_frames=s.frames).to_dict(),
                       model=model.to_dict(), pretrained=False, epochs=s.epochs, batch_size=2, device=s.device,
                       folds=["sub01"], workers=min(8, os.cpu_count() or 1), out_dir=str(s.work / "run"))
    start = time.perf_counter()
    samples, base = load_training_samples(base, Console(quiet=True))
    prepare_s = time.perf_counter() - start
    data: dict[str, Any] = {"samples": len(samples), "synth_s": round(synth_s, 1), "prepare_s": round(prepare_s, 1),
                            "device": s.device, "epochs": s.epochs}
    for cached in (True, False):
        cfg = base.replace(feature_cache=cached, out_dir=str(s.work / f"run_{cached}"))
        marks: list[float] = []
        start = time.perf_counter()
        train_run(cfg, samples, overwrite=True, progress=lambda *_, m=marks: m.append(time.perf_counter()))
        total = time.perf_counter() - start
        per_epoch = statistics.median(np.diff(marks)) if len(marks) > 1 else float("nan")
        key = "cache" if cached else "no_cache"
        data[key] = {"run_s": round(total, 2), "epoch_s": round(float(per_epoch), 3),
                     "first_epoch_incl_setup_s": round(marks[0] - start, 2) if marks else None}
    ratio = data["no_cache"]["epoch_s"] / data["cache"]["epoch_s"] if data["cache"]["epoch_s"] else float("nan")
    data["ratio"] = round(ratio, 1)
    return (f"{len(samples)} samples on {s.device}: epoch {data['no_cache']['epoch_s']:.3f} s without the cache, "
            f"{data['cache']['epoch_s']:.3f} s with it ({ratio:.1f}x); prepare {prepare_s:.0f} s"), data


# ---- main ---------------------------------------------------------------------------------------

def settings_from(args: argparse.Namespace, work: Path) -> Settings:
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.quick:
        return Settings("vit_tiny_patch16_224", 64, 5, runs=3, subjects=3, clips_per_class=1, epochs=3,
                        trt_timeout=60, work=work, device=device, budget_s=args.budget)
    return Settings(args.backbone, 384, 11, runs=args.runs, subjects=4, clips_per_class=2, epochs=4,
                    trt_timeout=240, work=work, device=device, budget_s=args.budget)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny ViT at 64 px, T 5, small corpus (CPU-friendly)")
    parser.add_argument("--backbone", default="vit_base_patch16_384")
    parser.add_argument("--runs", type=int, default=20, help="timed runs per latency variant")
    parser.add_argument("--budget", type=float, default=450.0, help="seconds; later steps are skipped past it")
    parser.add_argument("--json", type=Path, default=None, help="JSON output (default $OUT/device_check.json)")
    args = parser.parse_args()
    out_json = args.json or (Path(os.environ["OUT"]) / "device_check.json" if os.environ.get("OUT") else None)

    steps: list[Step] = []
    with tempfile.TemporaryDirectory(prefix="slstt_device_check_") as tmp:
        s = settings_from(args, Path(tmp))
        state: dict[str, Any] = {}
        console.print(f"slstt device check: {s.backbone} {s.input_size}px T {s.frames}, torch device {s.device}, "
                      f"budget {s.budget_s:.0f} s, cpus {os.cpu_count()}")
        run_step(steps, "doctor", step_doctor, s)
        run_step(steps, "ort_no_torch", step_ort_no_torch, s)
        run_step(steps, "export", lambda: step_export(s, state), s, needs_s=30)
        run_step(steps, "latency", lambda: step_latency(s, state), s, needs_s=30)
        run_step(steps, "loso_epoch", lambda: step_loso(s), s, needs_s=60)

    table = Table(title=f"slstt device check ({time.perf_counter() - s.started:.0f} s)")
    for col in ("step", "ok", "s", "summary"):
        table.add_column(col, overflow="fold")
    for step in steps:
        table.add_row(step.name, "[green]ok[/]" if step.ok else "[red]FAILED[/]", f"{step.seconds:.1f}",
                      escape(step.summary))
    console.print(table)
    if out_json is not None:
        from slstt.io import atomic_write_json

        report = {"settings": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(s).items()},
                  "total_s": round(time.perf_counter() - s.started, 1), "steps": [asdict(x) for x in steps]}
        atomic_write_json(out_json, json.loads(json.dumps(report, default=str)))
        console.print(f"wrote {out_json}")
    return 0 if all(step.ok for step in steps) else 1


if __name__ == "__main__":
    sys.exit(main())
