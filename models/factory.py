"""Build an SLSTT model: a timm ViT backbone (random, timm's pretrained weights, or a local file)
plus the temporal aggregator. Also reads torch files safely (weights_only=True) for the whole package."""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import torch
from torch import nn

from slstt.config import ModelConfig
from slstt.errors import SlsttError
from slstt.models.slstt import SLSTT

if TYPE_CHECKING:  # timm is imported lazily (slow import)
    from timm.models.vision_transformer import VisionTransformer

# Authors' (PyTorch-Pretrained-ViT) names -> timm names, per transformer block (spec section 7).
AUTHORS_BLOCK_NAMES = {
    "norm1": "norm1",
    "proj": "attn.proj",
    "norm2": "norm2",
    "pwff.fc1": "mlp.fc1",
    "pwff.fc2": "mlp.fc2",
}
EXPECTED_WEIGHT_LAYOUTS = (
    "a timm/HF ViT state dict (patch_embed.proj.weight, blocks.N.attn.qkv.weight, ...) or the "
    "authors' B_16_imagenet1k.pth layout (patch_embedding.weight, transformer.blocks.N.attn.proj_q.weight, ...)"
)


# ---- reading torch files ------------------------------------------------------------------
def _first_line(exc: BaseException, limit: int = 160) -> str:
    """A short one-line reason; for weights_only failures the line after 'WeightsUnpickler error'."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    text = lines[0] if lines else ""
    for i, line in enumerate(lines):
        if "WeightsUnpickler error" in line:
            rest = line.split("WeightsUnpickler error:", 1)[-1].strip()
            text = rest or (lines[i + 1] if i + 1 < len(lines) else text)
            break
    text = text.split(". ")[0]  # first sentence is enough
    return f"{type(exc).__name__}: {text[:limit]}"


def _numpy_safe_globals() -> list[Any]:
    """numpy scalars and dtypes (e.g. a best_f1 from scikit-learn in the authors' files) are plain
    data; allow them, under both the numpy 1 and numpy 2 module names, and nothing else."""
    import importlib

    import numpy as np

    # by module name: numpy's stubs do not declare multiarray.scalar (nor numpy 1's np.core here)
    multiarray = importlib.import_module("numpy._core.multiarray" if hasattr(np, "_core") else "numpy.core.multiarray")
    scalar = multiarray.scalar
    allowed: list[Any] = [scalar, (scalar, "numpy.core.multiarray.scalar"), np.dtype]
    allowed += [getattr(np.dtypes, n) for n in ("Float64DType", "Float32DType", "Int64DType", "Int32DType")]
    return allowed


def read_torch_file(path: str | Path, expected: str, map_location: str | torch.device = "cpu") -> Any:
    """torch.load(weights_only=True) with one-line SlsttErrors for a missing, unreadable or unsafe file."""
    path = Path(path)
    if not path.is_file():
        raise SlsttError(f"file not found: {path}; expected {expected}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path), device=str(map_location))
        except Exception as exc:
            raise SlsttError(f"cannot read {path} as safetensors ({_first_line(exc)}); expected {expected}") from None
    try:
        with torch.serialization.safe_globals(_numpy_safe_globals()):
            return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:
        if "Unsupported global" in str(exc):  # a real pickle with arbitrary Python objects
            glob = re.search(r"GLOBAL ([\w.]+)", str(exc))
            raise SlsttError(
                f"refused to load {path}: it holds the Python object {glob.group(1) if glob else '?'}, which "
                f"weights_only=True does not allow (save plain tensors/dicts instead); expected {expected}"
            ) from None
        raise SlsttError(
            f"cannot read {path}: not a readable torch zip or pickle file ({_first_line(exc)}); expected {expected}"
        ) from None


def strip_prefix(state_dict: dict[str, Any], prefix: str) -> dict[str, Any]:
    if state_dict and all(k.startswith(prefix) for k in state_dict):
        return {k[len(prefix) :]: v for k, v in state_dict.items()}
    return state_dict


# ---- authors' ViT layout ------------------------------------------------------------------
def is_authors_vit(state_dict: dict[str, Any]) -> bool:
    return "patch_embedding.weight" in state_dict and any(k.startswith("transformer.blocks.") for k in state_dict)


def resample_pos_embed(pos_embed: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """(1, 1 + g*g, D) learned position embedding -> (1, 1 + grid[0]*grid[1], D), class token kept."""
    from timm.layers import resample_abs_pos_embed

    old = int(math.isqrt(pos_embed.shape[1] - 1))
    if (old, old) == tuple(grid):
        return pos_embed
    return resample_abs_pos_embed(pos_embed, new_size=list(grid), old_size=[old, old], num_prefix_tokens=1)


def authors_vit_to_timm(state_dict: dict[str, torch.Tensor], grid: tuple[int, int] | None = None) -> dict[str, torch.Tensor]:
    """The authors' ViT names (no `vit.` prefix) -> timm VisionTransformer names. q, k, v are fused
    into qkv (timm splits its qkv output in q, k, v order). The classifier `fc` is not included."""
    out: dict[str, torch.Tensor] = {
        "cls_token": state_dict["class_token"],
        "pos_embed": state_dict["positional_embedding.pos_embedding"],
        "patch_embed.proj.weight": state_dict["patch_embedding.weight"],
        "patch_embed.proj.bias": state_dict["patch_embedding.bias"],
        "norm.weight": state_dict["norm.weight"],
        "norm.bias": state_dict["norm.bias"],
    }
    if grid is not None:
        out["pos_embed"] = resample_pos_embed(out["pos_embed"], grid)
    depth = 1 + max(int(k.split(".")[2]) for k in state_dict if k.startswith("transformer.blocks."))
    for i in range(depth):
        src = f"transformer.blocks.{i}."
        for kind in ("weight", "bias"):
            out[f"blocks.{i}.attn.qkv.{kind}"] = torch.cat(
                [state_dict[f"{src}attn.proj_{c}.{kind}"] for c in "qkv"], dim=0
            )
            for a, t in AUTHORS_BLOCK_NAMES.items():
                out[f"blocks.{i}.{t}.{kind}"] = state_dict[f"{src}{a}.{kind}"]
    return out


# ---- building -----------------------------------------------------------------------------
def backbone_kwargs(cfg: ModelConfig) -> dict[str, Any]:
    return dict(
        num_classes=0,  # SLSTT adds its own head
        img_size=cfg.input_size,
        act_layer=cfg.act_layer,
        drop_rate=0.0,
        pos_drop_rate=0.0,  # the authors add the position embedding without dropout
        proj_drop_rate=cfg.drop_rate,
        attn_drop_rate=cfg.drop_rate,
    )


def _pretrained_name(name: str) -> str:
    """An untagged name gets Google's original ImageNet-21k -> 1k weights when timm has them: those
    are the authors' B_16_imagenet1k weights (timm's own default tag is an AugReg variant)."""
    import timm

    if "." not in name and timm.list_pretrained(f"{name}.orig_in21k_ft_in1k"):
        return f"{name}.orig_in21k_ft_in1k"
    return name


WEIGHTS_HINT = "pass --weights PATH (timm .pth/.safetensors or B_16_imagenet1k.pth) or --no-pretrained"


def ensure_pretrained_available(backbone: str, timeout_s: float = 3.0) -> None:
    """Fail in seconds, not after a minute of hub retries, when timm's ImageNet weights for
    `backbone` are neither cached here nor downloadable (offline machine)."""
    import os
    import socket
    from urllib.parse import urlparse

    from timm.models import get_pretrained_cfg

    name = _pretrained_name(backbone)
    cfg = get_pretrained_cfg(name)
    if cfg is None:
        raise SlsttError(f"timm has no pretrained weights for {name}; {WEIGHTS_HINT}")
    if cfg.hf_hub_id:
        from huggingface_hub import try_to_load_from_cache

        repo = cfg.hf_hub_id.split("@")[0]
        if any(isinstance(try_to_load_from_cache(repo, f), str) for f in ("model.safetensors", "pytorch_model.bin")):
            return
        host = "huggingface.co"
    elif cfg.url:
        # timm's url is a string or (url, cached file name), as its download_cached_file reads it
        url, filename = cfg.url if isinstance(cfg.url, tuple) else (cfg.url, os.path.basename(urlparse(cfg.url).path))
        cached = Path(torch.hub.get_dir()) / "checkpoints" / filename
        if cached.is_file():
            return
        host = urlparse(url).hostname or ""
    else:
        raise SlsttError(f"timm has no download source for {name}; {WEIGHTS_HINT}")
    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes")
    try:
        if offline:
            raise OSError("HF_HUB_OFFLINE is set")
        socket.create_connection((host, 443), timeout=timeout_s).close()
    except OSError as exc:
        raise SlsttError(f"ImageNet weights for {name} are not cached and {host} is unreachable "
                         f"({_first_line(exc, 60)}); {WEIGHTS_HINT}") from None


def build_backbone(cfg: ModelConfig, pretrained: bool = False) -> VisionTransformer:
    import timm

    base = cfg.backbone.split(".")[0]
    if not timm.is_model(base) or not base.startswith(("vit_", "deit_")):
        raise SlsttError(
            f"model.backbone {cfg.backbone!r} is not a timm ViT; use e.g. vit_base_patch16_384 or vit_tiny_patch16_224"
        )
    name = _pretrained_name(cfg.backbone) if pretrained else cfg.backbone
    if pretrained:
        ensure_pretrained_available(cfg.backbone)
    try:
        # vit_/deit_ names (checked above) build a VisionTransformer; timm types the result as a Module
        backbone = cast("VisionTransformer", timm.create_model(name, pretrained=pretrained, **backbone_kwargs(cfg)))
    except Exception as exc:
        if not pretrained:
            raise
        raise SlsttError(
            f"cannot get pretrained weights for {name} (offline or not cached: {_first_line(exc, 100)}); "
            f"download them once with network access or {WEIGHTS_HINT}"
        ) from None
    for block in backbone.blocks:
        # The authors' MLP has no dropout between fc1 and fc2 (only after fc2); timm's has both.
        block.get_submodule("mlp").drop1 = nn.Identity()
    return backbone


def load_backbone_weights(backbone: VisionTransformer, path: str | Path) -> None:
    """Load a local weights file into a timm ViT backbone (either layout, position embedding resampled)."""
    data = read_torch_file(path, f"a ViT weights file: {EXPECTED_WEIGHT_LAYOUTS}")
    if isinstance(data, dict):
        for key in ("state_dict", "model"):
            if isinstance(data.get(key), dict):
                data = data[key]
                break
    if not isinstance(data, dict) or not all(isinstance(v, torch.Tensor) for v in data.values()):
        raise SlsttError(f"{path}: not a state dict of tensors; expected {EXPECTED_WEIGHT_LAYOUTS}")
    state = strip_prefix(data, "module.")
    if any(k.startswith("vit.") for k in state):  # a whole authors' model: keep its ViT part
        state = {k[4:]: v for k, v in state.items() if k.startswith("vit.")}
    grid = tuple(backbone.patch_embed.grid_size)
    if is_authors_vit(state):
        try:
            state = authors_vit_to_timm(state, grid)
        except KeyError as exc:
            raise SlsttError(f"{path}: authors' ViT layout but key {exc} is missing; expected {EXPECTED_WEIGHT_LAYOUTS}") from None
    elif "patch_embed.proj.weight" in state:
        from timm.models.vision_transformer import checkpoint_filter_fn

        state = checkpoint_filter_fn(state, backbone)  # timm's own conversion + pos_embed resampling
        state = {k: v for k, v in state.items() if not k.startswith(("head.", "head_dist."))}
    else:
        shown = ", ".join(list(state)[:4])
        raise SlsttError(f"{path}: unknown weights layout (keys {shown}, ...); expected {EXPECTED_WEIGHT_LAYOUTS}")
    try:
        missing, unexpected = backbone.load_state_dict(state, strict=False)
    except RuntimeError as exc:
        detail = next((ln.strip() for ln in str(exc).splitlines() if "size mismatch" in ln), _first_line(exc))
        raise SlsttError(f"{path} does not fit the backbone ({detail}); pick the matching --backbone") from None
    if missing or unexpected:
        raise SlsttError(
            f"{path} does not fit the backbone: missing {', '.join(missing[:3]) or '-'}, "
            f"unexpected {', '.join(unexpected[:3]) or '-'}; pick the matching --backbone"
        )


def create_model(cfg: ModelConfig, pretrained: bool = False, weights: str | Path | None = None) -> SLSTT:
    """SLSTT with a random (pretrained=False), timm-pretrained, or local-file (`weights`) backbone."""
    backbone = build_backbone(cfg, pretrained=pretrained and weights is None)
    if weights is not None:
        load_backbone_weights(backbone, weights)
    return SLSTT(cfg, backbone)
