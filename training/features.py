"""Frozen-feature cache: run the frozen ViT once per sample, then train only the head.

With a frozen backbone (the paper's setting) every fold and every epoch of the authors' code
pushes the same frames through the same 86M frozen parameters; only the final LayerNorm, the
temporal aggregator and the head learn. Here the per-frame class tokens are computed ONCE per
(sample, prepared-set key, backbone identity) and stored as
`cache_dir/features/<backbone_id>/<prep_key>/<dataset>/<subject>/<clip>-<sig>.npy` (float32, T x D,
written atomically). prep_key is the prepared flow images' key (preprocessing config + face model);
sig hashes the sample's annotation signature (onset/apex/offset frames, fps), the same one that
invalidates its prepared .npz, so a re-annotated clip never reuses stale tokens. A damaged file
(truncated, empty, wrong shape) is recomputed. Backbone identity = timm name + input size + activation + sha-256 of the
backbone weights that feed the trunk, so new weights or a new input size never reuse stale
features. The cached token is taken BEFORE the final LayerNorm (`SLSTT.trunk`): that norm is
trainable in the paper, so training applies the model's own norm and aggregator
(`SLSTT.aggregate_trunk`) to the cached tokens and learns exactly the parameters the paper learns.

Dropout: the paper's code keeps dropout (p=0.1) active inside the frozen transformer blocks in
train mode, so each epoch sees slightly different tokens. Cached features are computed in eval
mode (dropout off) - the tokens the model sees at test time - so training is deterministic and
matches inference. `TrainConfig.feature_dropout` (default 0) optionally applies dropout to the
cached tokens during training as a cheap stand-in for that noise; it is not the same
distribution as dropout inside 12 attention blocks. `--no-feature-cache` reproduces the authors'
behaviour exactly (backbone run every step, in-block dropout on), at full cost. A fine-tuned
backbone (`finetune_blocks > 0` or `freeze_backbone=False`) always bypasses the cache.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from slstt.config import PreprocessConfig
from slstt.io import atomic_write

if TYPE_CHECKING:  # only for annotations: importing the model here would import timm eagerly
    from slstt.models.slstt import SLSTT

FEATURE_DIR = "features"


def backbone_id(model: SLSTT) -> str:
    """Identity of everything that produces the pre-norm class token."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.backbone.state_dict().items()):
        if name.startswith("norm."):  # the final norm is applied after the cache, in training
            continue
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    cfg = model.cfg
    return f"{cfg.backbone}-{cfg.input_size}-{cfg.act_layer}-{digest.hexdigest()[:12]}"


def can_cache(model: torch.nn.Module) -> bool:
    return bool(getattr(model, "backbone_frozen", False))


def feature_root(cache_dir: str | Path, bb_id: str, prep: PreprocessConfig, face_sha: str | None = None) -> Path:
    from slstt.data.prepare import cache_key

    return Path(cache_dir) / FEATURE_DIR / bb_id / cache_key(prep, face_sha)


def feature_path(root: Path, sample) -> Path:
    from slstt.data.prepare import sample_signature

    sig = hashlib.sha256(sample_signature(sample).encode()).hexdigest()[:8]
    return root / sample.dataset / sample.subject / f"{sample.clip}-{sig}.npy"


def load_input(cache_dir: str | Path, prep: PreprocessConfig, sample, face_sha: str | None = None) -> torch.Tensor:
    """Prepared flow images of one sample as network input (T, 3, S, S) float32."""
    from slstt.data.prepare import load_prepared
    from slstt.preprocess.flow import flow_images_to_input

    return torch.as_tensor(flow_images_to_input(load_prepared(cache_dir, prep, sample, face_sha), prep))


def _read_tokens(path: Path, shape: tuple[int, int] | None = None) -> np.ndarray | None:
    """The cached (T, D) float32 tokens, or None when the file is missing or damaged (or not `shape`)."""
    try:
        tokens = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError):  # missing, truncated, empty, not an .npy
        return None
    if tokens.ndim != 2 or tokens.dtype != np.float32 or (shape is not None and tokens.shape != tuple(shape)):
        return None
    return tokens if np.isfinite(tokens).all() else None


def token_shape(model: SLSTT, prep: PreprocessConfig) -> tuple[int, int]:
    """(T, D) of one sample's cached tokens."""
    return prep.num_frames, int(model.backbone.embed_dim)


@torch.no_grad()
def compute_features(model: SLSTT, samples: Sequence, cache_dir: str | Path,
                     prep: PreprocessConfig, device: torch.device | str = "cpu", batch_size: int = 4,
                     on_sample: Callable[[int], None] | None = None, face_sha: str | None = None) -> Path:
    """Write the pre-norm class tokens of every sample that has no readable ones yet; returns the root dir."""
    root = feature_root(cache_dir, backbone_id(model), prep, face_sha)
    shape = token_shape(model, prep)
    missing = [s for s in samples if _read_tokens(feature_path(root, s), shape) is None]
    if on_sample is not None and len(samples) > len(missing):
        on_sample(len(samples) - len(missing))
    was_training = model.training
    model.eval()  # dropout off: the tokens the model sees at test time
    try:
        for start in range(0, len(missing), batch_size):
            batch = missing[start : start + batch_size]
            frames = torch.stack([load_input(cache_dir, prep, s, face_sha) for s in batch]).to(device)
            tokens = model.trunk(frames).float().cpu().numpy()
            for sample, token in zip(batch, tokens, strict=True):
                atomic_write(feature_path(root, sample), partial(_save_npy, array=token))
            if on_sample is not None:
                on_sample(len(batch))
    finally:
        model.train(was_training)
    return root


def _save_npy(path: Path, array: np.ndarray) -> None:
    with open(path, "wb") as fh:  # a file handle: np.save would append .npy to the temp name
        np.save(fh, array)


def load_features(root: str | Path, samples: Sequence, shape: tuple[int, int] | None = None) -> torch.Tensor:
    """(N, T, D) float32 tokens of `samples`, in order; SlsttError (one line) for a missing or damaged
    file (or one not of `shape`, or of a shape other than the first file's)."""
    from slstt.errors import SlsttError

    arrays: list[np.ndarray] = []
    for sample in samples:
        path = feature_path(Path(root), sample)
        tokens = _read_tokens(path, shape or (arrays[0].shape if arrays else None))
        if tokens is None:
            raise SlsttError(f"cached features of {sample.key} are missing or damaged ({path}); "
                             f"re-run the same `slstt train` command to recompute them")
        arrays.append(tokens)
    return torch.from_numpy(np.stack(arrays))
