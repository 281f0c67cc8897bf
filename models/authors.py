"""The authors' published checkpoints (`model_best_*.pth.tar`, spec section 7) -> the project's SLSTT.

Everything is inferred from the tensors: class count, input size (position embedding tokens x patch
size), backbone size (embedding dim), the LSTM/head sizes and the aggregator. The authors' `SLSTT`
module always builds `lstm`, `fc1`, `fc2` AND `vit.fc`, so every file holds every key; the aggregation
was a training flag. What training leaves tells them apart (spec section 7): under LSTM `vit.fc` keeps
its zero initialisation (never in the graph); under Mean `lstm.*`, `fc1`, `fc2` keep their random
initialisation (inside PyTorch's init bounds, biases of N(0, 1e-6) or default-init size), while `vit.fc`
is trained. `aggregator=` overrides the detection when the evidence is ambiguous, and is refused when
the file contradicts it. Class NAMES are not stored in those files; they are guessed from the file name
and marked as assumed.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import torch

from slstt.config import ModelConfig, PreprocessConfig
from slstt.data.schemes import CLASS_SCHEMES
from slstt.errors import SlsttError, first_line
from slstt.models.checkpoint import LoadedCheckpoint
from slstt.models.factory import authors_vit_to_timm, build_backbone, read_torch_file, strip_prefix
from slstt.models.slstt import SLSTT

# embedding dim -> (timm size name, heads, depth) of the standard ViTs
VIT_SIZES = {192: ("tiny", 3, 12), 384: ("small", 6, 12), 768: ("base", 12, 12), 1024: ("large", 16, 24)}
# file-name token -> (data set, class scheme); "com" (MEGC 2019 composite) is checked first
FILE_DATASETS = (("com", "composite", "megc-3"), ("casme2", "casme2", "casme2-5"),
                 ("samm", "samm", "samm-5"), ("smic", "smic", "smic-3"))
# Frame rate of the clips each data set's checkpoints were trained on (spec section 4): the live
# runtime resamples webcam frames to it, so the 11 frames span the same time as in training.
DATASET_FPS = {"casme2": 200.0, "samm": 200.0, "smic": 100.0}
COMPOSITE_FPS_NOTE = ("data_fps unknown: the composite (MEGC 2019) set mixes SMIC clips at 100 fps with CASME II "
                      "and SAMM clips at 200 fps, so the frame spacing the model learned is not one rate; choose one "
                      "(e.g. export with a preprocess fps, or serve with --fps 200) before live use")
EXPECTED = "a dict with state_dict holding vit.patch_embedding.weight, vit.transformer.blocks.N.* (the authors' model_best_*.pth.tar)"


def authors_state_dict(data: Any) -> dict[str, torch.Tensor] | None:
    """The model state dict (no `module.` prefix) if `data` looks like an authors' checkpoint, else None."""
    if isinstance(data, dict) and isinstance(data.get("state_dict"), dict):
        data = data["state_dict"]
    if not isinstance(data, dict):
        return None
    state = strip_prefix(data, "module.")
    return state if "vit.patch_embedding.weight" in state else None


def _vit_backbone_name(dim: int, depth: int, patch: int, input_size: int) -> str:
    import timm

    if dim not in VIT_SIZES or VIT_SIZES[dim][2] != depth:
        known = ", ".join(f"dim {d} depth {v[2]}" for d, v in VIT_SIZES.items())
        raise SlsttError(f"authors' checkpoint has a ViT with dim {dim} and depth {depth}; supported: {known}")
    size = VIT_SIZES[dim][0]
    for res in (input_size, 384, 224):
        name = f"vit_{size}_patch{patch}_{res}"
        if timm.is_model(name):
            return name
    raise SlsttError(f"timm has no ViT-{size} with patch {patch} for this authors' checkpoint")


AGGREGATOR_HINT = "pass aggregator='lstm' or 'mean' (CLI: --aggregator lstm|mean)"


def _within(tensor: torch.Tensor, bound: float) -> bool:
    # float32 sampling can land a hair outside the bound; 1e-6 relative covers it, training does not
    return bool(tensor.detach().abs().max() <= bound * (1 + 1e-6)) if tensor.numel() else True


def untouched_lstm_head(state: dict[str, torch.Tensor]) -> tuple[bool, str]:
    """(True, why) when lstm.*, fc1, fc2 still hold values their initialisation can produce:
    nn.LSTM's uniform(+-1/sqrt(hidden)); fc weights within the Xavier-uniform or nn.Linear default
    bound; fc biases of N(0, 1e-6) (the ViT-style init) or within nn.Linear's default bound. Trained
    weights leave these bounds: with hundreds of thousands of uniform values, many sit at the edge and
    any update pushes some of them past it."""
    hidden = state["lstm.weight_hh_l0"].shape[1]
    lstm_bound = 1.0 / math.sqrt(hidden)
    for key in sorted(k for k in state if k.startswith("lstm.")):
        if not _within(state[key], lstm_bound):
            return False, f"{key} leaves nn.LSTM's init range +-{lstm_bound:.4g} (trained)"
    for name in ("fc1", "fc2"):
        weight, bias = state[f"{name}.weight"], state[f"{name}.bias"]
        fan_out, fan_in = weight.shape
        w_bound = max(math.sqrt(6.0 / (fan_in + fan_out)), 1.0 / math.sqrt(fan_in))
        if not _within(weight, w_bound):
            return False, f"{name}.weight leaves its init range +-{w_bound:.4g} (trained)"
        if not _within(bias, max(1e-4, 1.0 / math.sqrt(fan_in))):
            return False, f"{name}.bias leaves its init range (trained)"
    return True, "lstm/fc1/fc2 hold untouched initial values"


def detect_aggregator(state: dict[str, torch.Tensor], given: str | None = None, where: str = "checkpoint") -> str:
    """'lstm' | 'mean' from what the authors' training leaves in the file (see the module doc); `given`
    is used when the evidence is ambiguous and refused (one line) when the evidence contradicts it."""
    if given is not None and given not in ("lstm", "mean"):
        raise SlsttError(f"aggregator {given!r} is not valid; {AGGREGATOR_HINT}")
    has_lstm = all(k in state for k in ("lstm.weight_hh_l0", "fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"))
    has_fc = "vit.fc.weight" in state and "vit.fc.bias" in state
    if not has_lstm and not has_fc:
        raise SlsttError(f"{where}: authors' checkpoint has neither lstm/fc1/fc2 nor vit.fc tensors; expected {EXPECTED}")
    if not has_lstm or not has_fc:  # a file from another writer with only one head: nothing to decide
        only = "lstm" if has_lstm else "mean"
        if given is not None and given != only:
            raise SlsttError(f"{where}: aggregator {given!r} given but the file only holds the {only} head's "
                             f"tensors; pass aggregator='{only}' or leave it out")
        return only
    found: str | None  # None: both heads look trained, the evidence decides nothing
    fc_zero = not (state["vit.fc.weight"].any() or state["vit.fc.bias"].any())
    untouched, why = untouched_lstm_head(state)
    if fc_zero:
        evidence, found = "vit.fc is all zero (never trained: the LSTM aggregation)", "lstm"
    elif untouched:
        evidence, found = f"vit.fc is trained and {why} (the Mean aggregation)", "mean"
    else:
        evidence, found = f"vit.fc is trained and {why}", None
    if found is None:
        if given is None:
            raise SlsttError(f"{where}: cannot tell the aggregator of this authors' checkpoint: {evidence}, so "
                             f"both heads look trained; {AGGREGATOR_HINT}")
        return given
    if given is not None and given != found:
        raise SlsttError(f"{where}: aggregator {given!r} contradicts the file: {evidence}; "
                         f"pass aggregator='{found}' or leave it out (auto-detect)")
    return found


def infer_model_config(state: dict[str, torch.Tensor], labels: list[str], scheme: str,
                       aggregator: str = "lstm") -> ModelConfig:
    patch_w = state["vit.patch_embedding.weight"]  # (dim, 3, p, p)
    dim, patch = patch_w.shape[0], patch_w.shape[-1]
    tokens = state["vit.positional_embedding.pos_embedding"].shape[1]
    grid = math.isqrt(tokens - 1)
    if grid * grid != tokens - 1:
        raise SlsttError(f"authors' checkpoint: position embedding has {tokens} tokens, not 1 + a square grid")
    depth = 1 + max(int(k.split(".")[3]) for k in state if k.startswith("vit.transformer.blocks."))
    input_size = grid * patch
    backbone = _vit_backbone_name(dim, depth, patch, input_size)
    if aggregator == "lstm":
        layers = sum(1 for k in state if k.startswith("lstm.weight_ih_l"))
        return ModelConfig(aggregator="lstm", num_classes=state["fc2.weight"].shape[0],
                           lstm_hidden=state["lstm.weight_hh_l0"].shape[1], lstm_layers=layers,
                           head_hidden=state["fc1.weight"].shape[0], backbone=backbone, input_size=input_size,
                           num_frames=11, labels=labels, class_scheme=scheme)
    return ModelConfig(aggregator="mean", num_classes=state["vit.fc.weight"].shape[0], backbone=backbone,
                       input_size=input_size, num_frames=11, labels=labels, class_scheme=scheme)


def convert_state_dict(state: dict[str, torch.Tensor], cfg: ModelConfig) -> dict[str, torch.Tensor]:
    vit = {k[4:]: v for k, v in state.items() if k.startswith("vit.")}
    out = {f"backbone.{k}": v for k, v in authors_vit_to_timm(vit).items()}
    if cfg.aggregator == "lstm":
        out.update({k: v for k, v in state.items() if k.startswith("lstm.")})
        for src, dst in (("fc1", "head.0"), ("fc2", "head.2")):
            out[f"{dst}.weight"], out[f"{dst}.bias"] = state[f"{src}.weight"], state[f"{src}.bias"]
    else:
        out["frame_fc.weight"], out["frame_fc.bias"] = state["vit.fc.weight"], state["vit.fc.bias"]
    return out


def labels_from_name(name: str | None, num_classes: int) -> tuple[str, str, str, str | None]:
    """(dataset, class scheme or "", note, fold) guessed from e.g. model_best_casme2_sub01.pth.tar."""
    stem = re.sub(r"\.pth(\.tar)?$|\.pt$|\.tar$", "", Path(name).name.lower()) if name else ""
    tokens = [t for t in re.split(r"[_\-\s]+", stem) if t]
    for token, dataset, scheme in FILE_DATASETS:
        if token in tokens:
            fold = "_".join(tokens[tokens.index(token) + 1 :]) or None
            if len(CLASS_SCHEMES[scheme].labels) == num_classes:
                return dataset, scheme, f"class names assumed from the file name ({scheme} order); the file stores none", fold
            note = f"file name suggests {scheme} but the file has {num_classes} classes; names are placeholders"
            return dataset, "", note, fold
    return "", "", "class names unknown (not stored in the file, not guessable from its name); names are placeholders", None


def _plain_number(value: Any) -> Any:
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        return float(value)
    if hasattr(value, "item") and not isinstance(value, torch.Tensor):
        return value.item()  # numpy scalar
    return value if isinstance(value, (int, float, str)) or value is None else str(value)


def load_authors_checkpoint(source: str | Path | dict, name: str | None = None,
                            map_location: str | torch.device = "cpu", aggregator: str | None = None) -> LoadedCheckpoint:
    """An authors' checkpoint (path or already-loaded dict) as a project SLSTT in eval mode.
    aggregator: 'lstm' | 'mean' | None (detected from the tensors, see `detect_aggregator`)."""
    if isinstance(source, dict):
        data, path = source, None
    else:
        path = Path(source)
        data = read_torch_file(path, EXPECTED, map_location)
        name = name or path.name
    state = authors_state_dict(data)
    if state is None:
        raise SlsttError(f"{path or 'checkpoint dict'}: not an SLSTT-authors checkpoint; expected {EXPECTED}")
    where = str(path or name or "checkpoint dict")
    chosen = detect_aggregator(state, aggregator, where)
    num_classes = state["fc2.weight" if chosen == "lstm" else "vit.fc.weight"].shape[0]
    dataset, scheme, note, fold = labels_from_name(name, num_classes)
    labels = list(CLASS_SCHEMES[scheme].labels) if scheme else []
    try:
        cfg = infer_model_config(state, labels, scheme, chosen)
        model = SLSTT(cfg, build_backbone(cfg, pretrained=False))
        model.load_state_dict(convert_state_dict(state, cfg), strict=True)
    except (KeyError, RuntimeError) as exc:
        raise SlsttError(f"{path or 'checkpoint dict'}: authors' checkpoint with unexpected tensors ({type(exc).__name__}: "
                         f"{first_line(exc, 120)}); expected {EXPECTED}") from None
    info = data if isinstance(data, dict) and "state_dict" in data else {}
    meta = {
        "source": "authors",
        "file": name,
        "arch": _plain_number(info.get("arch")),
        "epoch": _plain_number(info.get("epoch")),
        "metrics": {k: _plain_number(info[k]) for k in ("best_acc1", "best_f1") if k in info},
        "dataset": dataset,
        "class_scheme": scheme,
        "labels": cfg.class_names,
        "labels_assumed": True,
        "assumptions": [note, "preprocessing assumed to be the paper's (spec section 1)"],
        "protocol": "loso",
        "fold": fold,
        "aggregator": chosen,
        "aggregator_source": "given" if aggregator is not None else "detected",
        "optimistic": True,  # the authors kept the best epoch on the test subject (spec section 3)
        "selection": "best epoch on the left-out subject (authors' code)",
        "data_fps": DATASET_FPS.get(dataset),
    }
    if dataset == "composite":
        meta["data_fps_note"] = COMPOSITE_FPS_NOTE
        meta["assumptions"].append(COMPOSITE_FPS_NOTE)
    elif dataset in DATASET_FPS:
        meta["assumptions"].append(f"data_fps {DATASET_FPS[dataset]:g} assumed from the file name ({dataset})")
    preprocess = PreprocessConfig(input_size=cfg.input_size, num_frames=cfg.num_frames)
    return LoadedCheckpoint(model.to(map_location).eval(), cfg, preprocess, meta, "authors")
