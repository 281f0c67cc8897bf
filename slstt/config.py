"""Dataclass configs shared by every stage. They round-trip to JSON/YAML and are saved inside
every checkpoint and every exported model, so a file alone says how to rebuild and feed its model."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, TypeVar

from slstt.errors import SlsttError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# OpenCV Farneback parameters of the paper (spec section 1.3).
FARNEBACK_PAPER = {
    "pyr_scale": 0.5,
    "levels": 3,
    "winsize": 15,
    "iterations": 3,
    "poly_n": 5,
    "poly_sigma": 1.2,
    "flags": 0,
}

CROP_RECIPES = ("slstt", "aligned")
FLOW_BACKENDS = ("farneback", "dis", "tvl1")
FLOW_ENCODINGS = ("hsv", "uvm")
APEX_POLICIES = ("middle", "flow")
AGGREGATORS = ("lstm", "mean")

T = TypeVar("T", bound="ConfigBase")


class ConfigBase:
    """to_dict / from_dict / JSON / YAML round trip for the dataclass configs below."""

    def to_dict(self) -> dict[str, Any]:
        return _plain(asdict(self))  # type: ignore[call-overload]

    @classmethod
    def from_dict(cls: type[T], data: dict[str, Any]) -> T:
        if not isinstance(data, dict):
            raise SlsttError(f"{cls.__name__}: expected a mapping, got {type(data).__name__}")
        known = {f.name: f for f in fields(cls)}  # type: ignore[arg-type]
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise SlsttError(
                f"{cls.__name__}: unknown field(s) {', '.join(unknown)}; known: {', '.join(known)}"
            )
        kwargs = {}
        for name, value in data.items():
            default = known[name].default
            if isinstance(default, tuple) and isinstance(value, list):
                value = tuple(value)
            kwargs[name] = value
        obj = cls(**kwargs)
        obj.validate()  # type: ignore[attr-defined]
        return obj

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_json(cls: type[T], text: str) -> T:
        return cls.from_dict(json.loads(text))

    def save(self, path: str | Path) -> None:
        from slstt.io import atomic_write_text

        path = Path(path)
        if path.suffix in (".yaml", ".yml"):
            import yaml

            atomic_write_text(path, yaml.safe_dump(self.to_dict(), sort_keys=False))
        else:
            atomic_write_text(path, json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls: type[T], path: str | Path) -> T:
        path = Path(path)
        if not path.is_file():
            raise SlsttError(f"config file not found: {path}")
        text = path.read_text(encoding="utf-8")
        if path.suffix in (".yaml", ".yml"):
            import yaml

            return cls.from_dict(yaml.safe_load(text))
        return cls.from_json(text)

    def replace(self: T, **changes: Any) -> T:
        obj = dataclasses.replace(self, **changes)  # type: ignore[type-var]
        obj.validate()  # type: ignore[attr-defined]
        return obj


def _plain(value: Any) -> Any:
    """Tuples become lists so that JSON and YAML hold plain types."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _check_choice(owner: str, name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise SlsttError(f"{owner}.{name}: unknown value {value!r}; choose one of {', '.join(choices)}")


@dataclass
class PreprocessConfig(ConfigBase):
    """Everything that turns raw frames into network input. One implementation
    (slstt.preprocess.pipeline) reads it for training, export metadata and the live runtime."""

    crop: str = "slstt"  # slstt (paper: square at nose tip, no rotation) | aligned (eye-line rotation)
    flow: str = "farneback"  # farneback (paper) | dis (fast) | tvl1 (opencv-contrib)
    flow_params: dict[str, Any] = field(default_factory=lambda: dict(FARNEBACK_PAPER))
    encoding: str = "hsv"  # hsv (paper's flow image) | uvm (u, v, magnitude scaled)
    num_frames: int = 11  # T frames around the apex (spec section 1.1)
    input_size: int = 384  # network input side in pixels
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    # Temporal resampling: when set, every clip is resampled to this frame rate before frame
    # selection, so 200 fps training data and a 30 fps webcam give the same temporal spacing.
    fps: float | None = None
    apex_policy: str = "middle"  # used when a clip has no annotated apex: middle | flow
    # Side the face crop is resized to before optical flow. None = the crop's native size (the
    # paper). Setting it (e.g. 224) makes faces of different sizes (a ~250 px CASME II crop, a
    # ~450 px webcam face) give comparable flow: Farneback's window and uvm_scale are in pixels.
    flow_size: int | None = None
    uvm_scale: float = 8.0  # uvm encoding: pixels of motion that map to full scale

    def validate(self) -> None:
        _check_choice("preprocess", "crop", self.crop, CROP_RECIPES)
        _check_choice("preprocess", "flow", self.flow, FLOW_BACKENDS)
        _check_choice("preprocess", "encoding", self.encoding, FLOW_ENCODINGS)
        _check_choice("preprocess", "apex_policy", self.apex_policy, APEX_POLICIES)
        if self.num_frames < 1:
            raise SlsttError(f"preprocess.num_frames must be >= 1, got {self.num_frames}")
        if self.input_size < 16:
            raise SlsttError(f"preprocess.input_size must be >= 16, got {self.input_size}")
        if self.flow_size is not None and self.flow_size < 16:
            raise SlsttError(f"preprocess.flow_size must be >= 16 or unset, got {self.flow_size}")
        if self.fps is not None and self.fps <= 0:
            raise SlsttError(f"preprocess.fps must be > 0 or unset, got {self.fps}")

    def __post_init__(self) -> None:
        if self.flow != "farneback" and self.flow_params == FARNEBACK_PAPER:
            self.flow_params = {}  # backend defaults; the paper's parameters only fit Farneback
        self.validate()

    def cache_key(self) -> str:
        """Short hash of every field that changes the prepared flow images."""
        return config_hash(self.to_dict())


@dataclass
class ModelConfig(ConfigBase):
    """The SLSTT network: a timm ViT per frame, then a temporal aggregator."""

    backbone: str = "vit_base_patch16_384"  # any timm ViT name
    input_size: int = 384
    num_frames: int = 11
    aggregator: str = "lstm"  # lstm | mean
    num_classes: int = 5
    labels: list[str] = field(default_factory=list)
    class_scheme: str = ""
    lstm_hidden: int = 512
    lstm_layers: int = 3
    head_hidden: int = 256
    freeze_backbone: bool = True  # as in the authors' code; the final LayerNorm stays trainable
    finetune_blocks: int = 0  # unfreeze the last k transformer blocks
    act_layer: str = "gelu_tanh"  # the authors' ViT uses tanh-approximated GELU
    drop_rate: float = 0.1  # dropout inside the transformer blocks (paper: 0.1)

    def validate(self) -> None:
        _check_choice("model", "aggregator", self.aggregator, AGGREGATORS)
        if self.num_classes < 2:
            raise SlsttError(f"model.num_classes must be >= 2, got {self.num_classes}")
        if self.labels and len(self.labels) != self.num_classes:
            raise SlsttError(
                f"model.labels has {len(self.labels)} names but num_classes is {self.num_classes}"
            )
        if self.finetune_blocks < 0:
            raise SlsttError("model.finetune_blocks must be >= 0")

    def __post_init__(self) -> None:
        self.validate()

    @property
    def class_names(self) -> list[str]:
        return list(self.labels) if self.labels else [f"class_{i}" for i in range(self.num_classes)]


def config_hash(obj: Any, length: int = 12) -> str:
    text = json.dumps(_plain(obj), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:length]
