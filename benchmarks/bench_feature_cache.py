"""Epoch time with the frozen-feature cache vs running the frozen backbone every step (the
authors' way), same synthetic data, same machine, one process.

    python benchmarks/bench_feature_cache.py --backbone vit_small_patch16_224 --input-size 224

Both paths use the trainer's own epoch loop (slstt.training.loso._train_epoch) and the paper's
SLSTT-LSTM head and SGD recipe; only where the class tokens come from differs.
"""

from __future__ import annotations

import argparse
import time

import torch

from slstt.config import ModelConfig
from slstt.models import create_model
from slstt.training.loso import _train_epoch, head_threads, seed_everything


class InMemoryInputs:
    """Duck-types training.loso.FoldInputs: frames through the backbone, or cached trunk tokens."""

    def __init__(self, frames: torch.Tensor, tokens: torch.Tensor | None = None):
        self.frames, self.tokens = frames, tokens

    def logits(self, model, idx, training: bool) -> torch.Tensor:
        if self.tokens is not None:
            return model.aggregate_trunk(self.tokens[list(idx)])
        return model(self.frames[list(idx)])  # frozen blocks under no_grad, dropout on (train mode)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backbone", default="vit_small_patch16_224")
    ap.add_argument("--input-size", type=int, default=224)
    ap.add_argument("--samples", type=int, default=40)
    ap.add_argument("--frames", type=int, default=11)
    ap.add_argument("--batch-size", type=int, default=2)
    ap.add_argument("--cached-epochs", type=int, default=5)
    args = ap.parse_args()

    seed_everything(0)
    cfg = ModelConfig(backbone=args.backbone, input_size=args.input_size, num_frames=args.frames,
                      num_classes=3, aggregator="lstm")
    model = create_model(cfg, pretrained=False)
    frames = torch.randn(args.samples, args.frames, 3, args.input_size, args.input_size)
    targets = torch.randint(0, 3, (args.samples,))
    idx = list(range(args.samples))

    def epoch(inputs: InMemoryInputs) -> float:
        opt = torch.optim.SGD(model.trainable_parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
        start = time.perf_counter()
        _train_epoch(model, inputs, idx, targets, opt, torch.Generator().manual_seed(0), args.batch_size)
        return time.perf_counter() - start

    start = time.perf_counter()
    model.eval()
    with torch.no_grad():
        tokens = torch.cat([model.trunk(frames[i : i + 4]) for i in range(0, args.samples, 4)])
    extract = time.perf_counter() - start
    with head_threads(torch.device("cpu"), cached=True):  # as the trainer does for the cached path
        cached = min(epoch(InMemoryInputs(frames, tokens)) for _ in range(args.cached_epochs))
    recompute = epoch(InMemoryInputs(frames))

    print(f"backbone {args.backbone} @ {args.input_size}px, {args.samples} samples x T={args.frames}, "
          f"batch {args.batch_size}, LSTM head; backbone path on "
          f"{torch.get_num_threads()} CPU thread(s), cached path on 1 (as the trainer runs them)")
    print(f"recompute backbone every step : {recompute:8.3f} s / epoch")
    print(f"feature cache                 : {cached:8.3f} s / epoch  (+ {extract:.2f} s once to fill the cache)")
    print(f"ratio                         : {recompute / cached:8.1f} x per epoch")
    epochs = 40
    print(f"40 epochs: {recompute * epochs:.1f} s recompute vs {extract + cached * epochs:.1f} s cached "
          f"({recompute * epochs / (extract + cached * epochs):.1f} x), per fold; the cache is shared by all folds")


if __name__ == "__main__":
    main()
