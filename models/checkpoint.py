"""Project checkpoints: one file holds the model config, the preprocessing config, the weights and
the run's meta, so a model can be rebuilt from the file alone. `load_checkpoint` also reads the
authors' `model_best_*.pth.tar` files (see slstt.models.authors)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from slstt.config import ModelConfig, PreprocessConfig
from slstt.errors import SlsttError
from slstt.io import atomic_torch_save
from slstt.models.factory import create_model, read_torch_file
from slstt.models.slstt import SLSTT

FORMAT = "slstt.checkpoint"
FORMAT_VERSION = 1
EXPECTED = (
    "an slstt checkpoint (dict with format='slstt.checkpoint', model_config, state_dict) or an "
    "SLSTT-authors model_best_*.pth.tar (dict with state_dict holding vit.* keys)"
)


@dataclass
class LoadedCheckpoint:
    model: SLSTT  # eval mode
    model_config: ModelConfig
    preprocess_config: PreprocessConfig  # the paper's defaults for the authors' files
    meta: dict[str, Any]
    source: str  # "slstt" | "authors"


def _unwrap(model: nn.Module) -> SLSTT:
    """DataParallel / DDP (`module`) and torch.compile (`_orig_mod`) wrappers -> the SLSTT inside."""
    while not isinstance(model, SLSTT):
        inner = getattr(model, "module", None) or getattr(model, "_orig_mod", None)
        if inner is None:
            raise TypeError(f"save_checkpoint expects an SLSTT model, got {type(model).__name__}")
        model = inner
    return model


def save_checkpoint(path: str | Path, model: nn.Module, *, preprocess: PreprocessConfig | None = None,
                    meta: dict[str, Any] | None = None) -> Path:
    """Write the checkpoint atomically. `meta` must be JSON-able (it also goes into ONNX metadata)."""
    model = _unwrap(model)
    meta = dict(meta or {})
    try:
        json.dumps(meta)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"checkpoint meta must be JSON-able: {exc}") from None
    if preprocess is not None and preprocess.input_size != model.cfg.input_size:
        raise SlsttError(
            f"preprocess.input_size {preprocess.input_size} != model.input_size {model.cfg.input_size}; make them equal"
        )
    payload = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "model_config": model.cfg.to_dict(),
        "preprocess_config": preprocess.to_dict() if preprocess is not None else None,
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "meta": meta,
    }
    return atomic_torch_save(path, payload)


def _describe(data: Any) -> str:
    if isinstance(data, dict):
        keys = [str(k) for k in list(data)[:5]]
        return "a dict with keys " + (", ".join(keys) or "(none)") + (", ..." if len(data) > 5 else "")
    return f"a {type(data).__name__}"


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> LoadedCheckpoint:
    """A project or authors' checkpoint -> LoadedCheckpoint with the model rebuilt from the file alone."""
    from slstt.models.authors import authors_state_dict, load_authors_checkpoint

    path = Path(path)
    data = read_torch_file(path, EXPECTED, map_location)
    if isinstance(data, dict) and data.get("format") == FORMAT:
        return _load_project(path, data, map_location)
    if authors_state_dict(data) is not None:
        return load_authors_checkpoint(data, name=path.name, map_location=map_location)
    raise SlsttError(f"{path} is not an slstt or SLSTT-authors checkpoint ({_describe(data)}); expected {EXPECTED}")


def _load_project(path: Path, data: dict[str, Any], map_location: str | torch.device) -> LoadedCheckpoint:
    version = data.get("format_version")
    if version != FORMAT_VERSION:
        raise SlsttError(f"{path}: checkpoint format_version {version} is not supported (this slstt reads {FORMAT_VERSION})")
    try:
        cfg = ModelConfig.from_dict(data["model_config"])
        pre = data.get("preprocess_config")
        preprocess = PreprocessConfig.from_dict(pre) if pre is not None else PreprocessConfig(
            input_size=cfg.input_size, num_frames=cfg.num_frames)
        state = data["state_dict"]
    except KeyError as exc:
        raise SlsttError(f"{path}: slstt checkpoint without {exc}; expected {EXPECTED}") from None
    except SlsttError as exc:
        raise SlsttError(f"{path}: bad config inside the checkpoint: {exc}") from None
    model = create_model(cfg, pretrained=False)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
        raise SlsttError(f"{path}: weights do not match its model_config ({' '.join(lines[:2])[:200]})") from None
    return LoadedCheckpoint(model.to(map_location).eval(), cfg, preprocess, dict(data.get("meta") or {}), "slstt")
