"""Wall-clock of the same small LOSO with the local executor and with Ray, same machine, one run.

    python benchmarks/bench_ray.py [--subjects 4] [--epochs 20] [--input-size 64] [--address auto]

Builds a synthetic corpus (slstt synth), prepares it and fills the feature cache once (shared by
both runs, as in real use), then times train_run() with LocalExecutor and with RayExecutor.
Ray start-up is timed separately: on a long-lived cluster (--address auto) it is paid once.
On N machines, wall-clock ~= driver preparation + ceil(folds / parallel slots) x per-fold cost.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from rich.console import Console


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--subjects", type=int, default=4)
    ap.add_argument("--clips-per-class", type=int, default=2)
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--input-size", type=int, default=64)
    ap.add_argument("--frames", type=int, default=5)
    ap.add_argument("--address", default=None, help="Ray address (default: a private local instance)")
    ap.add_argument("--cpus-per-fold", type=float, default=1.0)
    args = ap.parse_args()

    import ray

    from slstt.config import ModelConfig, PreprocessConfig
    from slstt.data.synth import make_corpus
    from slstt.training.cli import load_training_samples
    from slstt.training.config import TrainConfig
    from slstt.training.executors import LocalExecutor
    from slstt.training.loso import train_run
    from slstt.training.ray_executor import RayExecutor

    root = Path(tempfile.mkdtemp(prefix="slstt_bench_ray_"))
    classes = ("happiness", "surprise", "disgust")
    annotations = make_corpus(root / "corpus", subjects=args.subjects, clips_per_class=args.clips_per_class,
                              classes=classes, size=128)
    model = ModelConfig(backbone="vit_tiny_patch16_224", input_size=args.input_size, num_frames=args.frames,
                        aggregator="mean")
    cfg = TrainConfig(dataset="casme2", data_root=str(root / "corpus"), annotations=str(annotations),
                      scheme="megc-3", cache_dir=str(root / "cache"),
                      preprocess=PreprocessConfig(num_frames=args.frames, input_size=args.input_size).to_dict(),
                      model=model.to_dict(), pretrained=False, epochs=args.epochs, device="cpu", workers=0,
                      out_dir=str(root / "warmup"))
    samples, cfg = load_training_samples(cfg, Console(stderr=True, quiet=True))
    # Warm-up run: prepares nothing more, fills the shared feature cache, so both timed runs train only.
    train_run(cfg.replace(epochs=1), samples)

    start = time.perf_counter()
    local = train_run(cfg.replace(out_dir=str(root / "local")), samples, executor=LocalExecutor())
    local_s = time.perf_counter() - start

    executor = RayExecutor(address=args.address, cpus_per_fold=args.cpus_per_fold)
    start = time.perf_counter()
    executor.connect()
    startup_s = time.perf_counter() - start
    timings = []
    for name in ("ray_cold", "ray_warm"):  # cold: worker processes start and import torch
        start = time.perf_counter()
        result = train_run(cfg.replace(out_dir=str(root / name)), samples, executor=executor)
        timings.append(time.perf_counter() - start)
        assert result["pooled"] == local["pooled"], "Ray and local disagree"
    executor.close()
    if ray.is_initialized():
        ray.shutdown()

    folds = len(local["folds"])
    print(f"{folds} folds, {len(samples)} samples, vit_tiny @{args.input_size}px, T={args.frames}, "
          f"{args.epochs} epochs, cached features; pooled metrics identical: {local['pooled']}")
    print(f"local executor        : {local_s:7.2f} s")
    print(f"ray start-up          : {startup_s:7.2f} s")
    print(f"ray, cold workers     : {timings[0]:7.2f} s  ({local_s / timings[0]:.2f}x local)")
    print(f"ray, warm workers     : {timings[1]:7.2f} s  ({local_s / timings[1]:.2f}x local)")


if __name__ == "__main__":
    main()
