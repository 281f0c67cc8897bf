"""Project checkpoints: one file holds the model config, the preprocessing config, the weights and
the run's meta. `load_checkpoint` also reads the authors' `model_best_*.pth.tar` files (see
slstt.models.authors).

Two kinds (both `format='slstt.checkpoint'`):
- self-contained (format_version 1): every tensor of the model; the model is rebuilt from the file alone.
  The deployment checkpoint (`slstt train --protocol all`) is always one.
- compact (format_version 2): only what training changed (final norm, aggregator, head, fine-tuned
  blocks) plus the frozen backbone's identity (`BackboneIdentity`: timm name, where its weights came
  from, sha-256 of its frozen tensors). A LOSO run keeps ONE copy of the frozen backbone,
  `<run>/backbone-<sha12>.safetensors`, for all its fold checkpoints. Loading resolves the backbone from
  `backbone_file=`, the checkpoint's folder or its run folder, or rebuilds it from the identity when no
  download is needed (random init from its seed, a local weights file with the same sha-256, timm
  weights already in the local cache); the frozen tensors' hash must match, else one line names both.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import torch
from torch import nn

from slstt.card import ModelCard
from slstt.config import ModelConfig, PreprocessConfig
from slstt.errors import SlsttError
from slstt.io import atomic_torch_save
from slstt.models.factory import create_model, read_torch_file
from slstt.models.slstt import SLSTT

FORMAT = "slstt.checkpoint"
FORMAT_VERSION = 1  # self-contained
COMPACT_VERSION = 2  # frozen backbone stored once per run, referenced by identity
BACKBONE_PREFIX = "backbone."
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

    @property
    def card(self) -> ModelCard:
        """The model card of these weights (labels, recipe, serving frame rate, provenance): what
        export writes into the ONNX metadata; T and input size checked against the model here."""
        return ModelCard.from_training(self.model_config, self.preprocess_config, self.meta, where=f"{self.source} checkpoint")


@dataclass(frozen=True)
class BackboneIdentity:
    """What the frozen backbone of a compact checkpoint is, and how to get it back without a download."""

    timm_name: str
    source: str  # "random" (timm init after torch.manual_seed(seed)) | "pretrained" (timm tag) | "weights" (file)
    frozen_sha256: str  # tensors_sha256 of the frozen backbone tensors (names, dtypes, shapes, bytes)
    seed: int | None = None
    pretrained_tag: str | None = None
    weights_sha256: str | None = None
    weights_file: str | None = None

    @property
    def file_name(self) -> str:
        return f"backbone-{self.frozen_sha256[:12]}.safetensors"

    def describe(self) -> str:
        origin = {"random": f"random init, seed {self.seed}", "pretrained": f"timm weights {self.pretrained_tag}",
                  "weights": f"weights file sha256 {str(self.weights_sha256)[:12]}"}.get(self.source, self.source)
        return f"{self.timm_name} ({origin}; frozen tensors sha256 {self.frozen_sha256[:12]})"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Any) -> BackboneIdentity:
        names = {f.name for f in fields(cls)}
        if not isinstance(data, dict) or not {"timm_name", "source", "frozen_sha256"} <= set(data):
            raise SlsttError(f"backbone identity {str(data)[:80]!r} lacks timm_name/source/frozen_sha256")
        return cls(**{k: v for k, v in data.items() if k in names})


def tensors_sha256(state: dict[str, torch.Tensor]) -> str:
    """Content hash of named tensors, independent of the file format they sit in."""
    digest = hashlib.sha256()
    for name in sorted(state):
        tensor = state[name].detach().cpu().contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()


def frozen_backbone_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The backbone tensors training never changes (model state-dict names), on the CPU."""
    model = _unwrap(model)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    return {k: v.detach().cpu() for k, v in model.state_dict().items()
            if k.startswith(BACKBONE_PREFIX) and k not in trainable}


def backbone_identity(model: nn.Module, source: str, *, seed: int | None = None, pretrained_tag: str | None = None,
                      weights_file: str | None = None) -> BackboneIdentity:
    weights_sha = file_sha256(weights_file) if weights_file else None
    return BackboneIdentity(_unwrap(model).cfg.backbone, source, tensors_sha256(frozen_backbone_state(model)),
                            seed=seed, pretrained_tag=pretrained_tag, weights_sha256=weights_sha,
                            weights_file=str(weights_file) if weights_file else None)


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def save_backbone_copy(path: str | Path, model: nn.Module, identity: BackboneIdentity) -> Path:
    """Write the frozen backbone tensors once (safetensors, atomically) with the identity as metadata."""
    from safetensors.torch import save_file

    from slstt.io import atomic_write

    state = {k: v.contiguous() for k, v in frozen_backbone_state(model).items()}
    if tensors_sha256(state) != identity.frozen_sha256:
        raise ValueError("backbone copy does not match the identity it is saved with")
    meta = {"format": "slstt.backbone", "identity": json.dumps(identity.to_dict())}
    return atomic_write(path, lambda p: save_file(state, str(p), metadata=meta))


def read_backbone_copy(path: str | Path) -> tuple[dict[str, torch.Tensor], BackboneIdentity | None]:
    """(tensors, stored identity or None) of a backbone copy; SlsttError (one line) when unreadable."""
    from safetensors import safe_open

    state = read_torch_file(path, "a backbone-<sha>.safetensors written by `slstt train`")
    try:
        with safe_open(str(path), framework="pt") as fh:
            stored = json.loads((fh.metadata() or {}).get("identity", "null"))
        identity = BackboneIdentity.from_dict(stored) if stored else None
    except (SlsttError, ValueError, OSError):
        identity = None
    return state, identity


def _unwrap(model: nn.Module) -> SLSTT:
    """DataParallel / DDP (`module`) and torch.compile (`_orig_mod`) wrappers -> the SLSTT inside."""
    while not isinstance(model, SLSTT):
        inner = getattr(model, "module", None) or getattr(model, "_orig_mod", None)
        if inner is None:
            raise TypeError(f"save_checkpoint expects an SLSTT model, got {type(model).__name__}")
        model = inner
    return model


def save_checkpoint(path: str | Path, model: nn.Module, *, preprocess: PreprocessConfig | None = None,
                    meta: dict[str, Any] | None = None, backbone: BackboneIdentity | None = None) -> Path:
    """Write the checkpoint atomically. `meta` must be JSON-able (it also goes into ONNX metadata).
    backbone=None: self-contained. backbone=identity: compact, without the frozen backbone tensors
    (write them once with `save_backbone_copy` beside the checkpoint or in its run folder)."""
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
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    payload = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "model_config": model.cfg.to_dict(),
        "preprocess_config": preprocess.to_dict() if preprocess is not None else None,
        "state_dict": state,
        "meta": meta,
    }
    if backbone is not None:
        frozen = frozen_backbone_state(model)
        if tensors_sha256(frozen) != backbone.frozen_sha256:
            raise ValueError(f"model's frozen backbone is not {backbone.describe()}")
        payload.update(format_version=COMPACT_VERSION, backbone=backbone.to_dict(),
                       state_dict={k: v for k, v in state.items() if k not in frozen})
    return atomic_torch_save(path, payload)


def _describe(data: Any) -> str:
    if isinstance(data, dict):
        keys = [str(k) for k in list(data)[:5]]
        return "a dict with keys " + (", ".join(keys) or "(none)") + (", ..." if len(data) > 5 else "")
    return f"a {type(data).__name__}"


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu", aggregator: str | None = None,
                    backbone_file: str | Path | None = None) -> LoadedCheckpoint:
    """A project or authors' checkpoint -> LoadedCheckpoint (model in eval mode).

    aggregator: 'lstm' | 'mean' | None (auto). For the authors' files it overrides the detection when
    the evidence is ambiguous and is refused when the file contradicts it; for project files it must
    match the stored config. backbone_file: the run's backbone copy for a compact fold checkpoint
    (found automatically next to it or in its run folder)."""
    from slstt.models.authors import AGGREGATOR_HINT, authors_state_dict, load_authors_checkpoint

    if aggregator is not None and aggregator not in ("lstm", "mean"):
        raise SlsttError(f"aggregator {aggregator!r} is not valid; {AGGREGATOR_HINT}")
    path = Path(path)
    data = read_torch_file(path, EXPECTED, map_location)
    if isinstance(data, dict) and data.get("format") == FORMAT:
        loaded = _load_project(path, data, map_location, backbone_file)
        if aggregator is not None and aggregator != loaded.model_config.aggregator:
            raise SlsttError(f"{path}: aggregator {aggregator!r} given but this slstt checkpoint was trained with "
                             f"{loaded.model_config.aggregator!r} (stored in its config); leave the flag out")
        return loaded
    if authors_state_dict(data) is not None:
        return load_authors_checkpoint(data, name=path.name, map_location=map_location, aggregator=aggregator)
    raise SlsttError(f"{path} is not an slstt or SLSTT-authors checkpoint ({_describe(data)}); expected {EXPECTED}")


def checkpoint_card(path: str | Path) -> ModelCard:
    """The model card of a checkpoint file (what `slstt export onnx` writes into the ONNX metadata), read
    from its configs and meta without building the model. An authors' file is loaded in full: only its
    tensors tell its aggregator."""
    path = Path(path)
    data = read_torch_file(path, EXPECTED, "cpu")
    if isinstance(data, dict) and data.get("format") == FORMAT:
        cfg, preprocess = _project_configs(path, data)
        return ModelCard.from_training(cfg, preprocess, dict(data.get("meta") or {}), where=f"{path}")
    return load_checkpoint(path).card


def _project_configs(path: Path, data: dict[str, Any]) -> tuple[ModelConfig, PreprocessConfig]:
    """The model and preprocessing configs of a project checkpoint's payload (one line when bad)."""
    version = data.get("format_version")
    if version not in (FORMAT_VERSION, COMPACT_VERSION):
        raise SlsttError(f"{path}: checkpoint format_version {version} is not supported "
                         f"(this slstt reads {FORMAT_VERSION} and {COMPACT_VERSION})")
    try:
        cfg = ModelConfig.from_dict(data["model_config"])
        pre = data.get("preprocess_config")
        preprocess = PreprocessConfig.from_dict(pre) if pre is not None else PreprocessConfig(
            input_size=cfg.input_size, num_frames=cfg.num_frames)
    except KeyError as exc:
        raise SlsttError(f"{path}: slstt checkpoint without {exc}; expected {EXPECTED}") from None
    except SlsttError as exc:
        raise SlsttError(f"{path}: bad config inside the checkpoint: {exc}") from None
    return cfg, preprocess


def _load_project(path: Path, data: dict[str, Any], map_location: str | torch.device,
                  backbone_file: str | Path | None = None) -> LoadedCheckpoint:
    cfg, preprocess = _project_configs(path, data)
    version = data.get("format_version")
    state = data.get("state_dict")
    if state is None:
        raise SlsttError(f"{path}: slstt checkpoint without 'state_dict'; expected {EXPECTED}")
    if not isinstance(state, dict):
        raise SlsttError(f"{path}: state_dict is not a dict of tensors; expected {EXPECTED}")
    if version == COMPACT_VERSION:
        state = {**resolve_backbone(path, data, cfg, backbone_file), **state}
    model = create_model(cfg, pretrained=False)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
        raise SlsttError(f"{path}: weights do not match its model_config ({' '.join(lines[:2])[:200]})") from None
    return LoadedCheckpoint(model.to(map_location).eval(), cfg, preprocess, dict(data.get("meta") or {}), "slstt")


# ---- compact checkpoints: finding the frozen backbone -----------------------------------------
def resolve_backbone(path: Path, data: dict[str, Any], cfg: ModelConfig,
                     backbone_file: str | Path | None = None) -> dict[str, torch.Tensor]:
    """The frozen backbone tensors a compact checkpoint was trained with, identity checked."""
    try:
        want = BackboneIdentity.from_dict(data.get("backbone"))
    except (SlsttError, TypeError) as exc:
        raise SlsttError(f"{path}: compact checkpoint with a bad backbone identity ({exc}); re-run `slstt train`") from None
    if backbone_file is not None:
        candidates = [Path(backbone_file)]
        if not candidates[0].is_file():
            raise SlsttError(f"backbone file not found: {backbone_file}; pass the run's {want.file_name}")
    else:
        candidates = [d / want.file_name for d in (path.parent, path.parent.parent) if (d / want.file_name).is_file()]
    for candidate in candidates:
        state, stored = read_backbone_copy(candidate)
        got = tensors_sha256(state)
        if got != want.frozen_sha256:
            found = stored.describe() if stored and stored.frozen_sha256 == got else f"tensors with sha256 {got[:12]}"
            raise SlsttError(f"{path}: backbone mismatch: the checkpoint was trained on {want.describe()} but "
                             f"{candidate} holds {found}; use the backbone file of the run that wrote it")
        return state
    rebuilt, why = _rebuild_backbone(want, cfg)
    if rebuilt is not None:
        return rebuilt
    raise SlsttError(f"{path}: compact fold checkpoint whose backbone copy {want.file_name} is neither next to it nor "
                     f"in its run folder, and {why}; copy the run's {want.file_name} next to it "
                     f"(or pass backbone_file=PATH / --backbone-file PATH)")


def _rebuild_backbone(want: BackboneIdentity, cfg: ModelConfig) -> tuple[dict[str, torch.Tensor] | None, str]:
    """(frozen tensors, "") when the identity can be rebuilt here without a download, else (None, why)."""
    from slstt.models.factory import load_backbone_weights

    with torch.random.fork_rng(devices=[]):  # the caller's random state stays as it was
        if want.source == "random" and want.seed is not None:
            torch.manual_seed(want.seed)
            model = create_model(cfg, pretrained=False)
        elif want.source == "weights" and want.weights_file and Path(want.weights_file).is_file():
            if file_sha256(want.weights_file) != want.weights_sha256:
                return None, f"{want.weights_file} is not the weights file it was trained with (sha256 differs)"
            model = create_model(cfg, pretrained=False, weights=want.weights_file)
        elif want.source == "pretrained" and want.pretrained_tag and (cached := _cached_timm_file(want.pretrained_tag)):
            model = create_model(cfg, pretrained=False)
            load_backbone_weights(model.backbone, cached)
        else:
            return None, f"{want.describe()} cannot be rebuilt without a download"
    state = frozen_backbone_state(model)
    if tensors_sha256(state) != want.frozen_sha256:
        return None, f"rebuilding {want.describe()} here gives other tensors (another timm/torch version?)"
    return state, ""


def _cached_timm_file(tag: str) -> str | None:
    """Local file of timm's pretrained weights `tag` when the Hugging Face cache holds it (no network)."""
    try:
        from huggingface_hub import try_to_load_from_cache
        from timm.models import get_pretrained_cfg

        pcfg = get_pretrained_cfg(tag)
        repo = pcfg.hf_hub_id.split("@")[0] if pcfg is not None and pcfg.hf_hub_id else None
    except Exception:  # an unknown tag or an old timm: treat as not cached
        return None
    if repo is None:
        return None
    for name in ("model.safetensors", "pytorch_model.bin"):
        found = try_to_load_from_cache(repo, name)
        if isinstance(found, str):
            return found
    return None
