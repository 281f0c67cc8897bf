"""Dataclass configs shared by every stage. They round-trip to JSON/YAML and are saved inside
every checkpoint and every exported model, so a file alone says how to rebuild and feed its model."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import numbers
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
            if isinstance(value, float) and value.is_integer() and known[name].type in ("int", "int | None"):
                value = int(value)  # 384.0 from a YAML/JSON writer is 384; 384.5 is refused by validate()
            kwargs[name] = value
        try:
            obj = cls(**kwargs)  # __post_init__ validates every field (type and range)
        except SlsttError:
            raise
        except (TypeError, ValueError, AttributeError) as exc:  # e.g. a string where a mapping belongs
            raise SlsttError(f"{cls.__name__}: invalid value ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})") from None
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
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise SlsttError(f"cannot read config file {path} as UTF-8 text ({type(exc).__name__}); "
                             "save it as UTF-8") from None
        if path.suffix in (".yaml", ".yml"):
            import yaml

            try:
                data = yaml.safe_load(text)
            except yaml.YAMLError as exc:
                raise SlsttError(f"config file {path} is not valid YAML ({str(exc).splitlines()[0]})") from None
            return cls.from_dict(data)
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise SlsttError(f"config file {path} is not valid JSON ({exc})") from None
        return cls.from_dict(data)

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


def _check_choice(owner: str, name: str, value: Any, choices: tuple[Any, ...]) -> None:
    if isinstance(value, bool) or not isinstance(value, (str, int)) or value not in choices:
        raise SlsttError(f"{owner}.{name}: unknown value {_short(value)}; choose one of {', '.join(map(str, choices))}")


# ---- ranges: configs also come from untrusted files (a model's metadata, a checkpoint, YAML), and
# their numbers reach native code (OpenCV, torch allocations), so every field is type- and range-checked.
MAX_FRAMES = 128  # T; the paper uses 11
MAX_INPUT_SIZE = 1024  # px; ViT-B/384 is the largest shipped model
MAX_CLASSES = 1000
MAX_FPS = 10000.0

# ("int", lo, hi) | ("float", lo, hi, lo_open, hi_open) | ("choice", values) | ("bool",)
_Spec = tuple
# OpenCV's documented ranges, or the narrowest that keeps its native code safe: Farneback winsize <= 0
# corrupts the heap; poly_n is 5 or 7 as documented; a DIS patch_stride of 0 divides by zero; TV-L1
# medianFiltering takes 1, 3 or 5.
FLOW_PARAM_SPECS: dict[str, dict[str, _Spec]] = {
    "farneback": {
        "pyr_scale": ("float", 0.0, 1.0, True, True),
        "levels": ("int", 0, 20),
        "winsize": ("int", 1, 255),
        "iterations": ("int", 1, 100),
        "poly_n": ("choice", (5, 7)),
        "poly_sigma": ("float", 0.0, 10.0, True, False),
        "flags": ("choice", (0, 256)),  # 256 = OPTFLOW_FARNEBACK_GAUSSIAN; USE_INITIAL_FLOW needs an input flow
    },
    "dis": {
        "preset": ("choice", ("ultrafast", "fast", "medium")),
        "finest_scale": ("int", 0, 10),
        "coarsest_scale": ("int", -1, 20),
        "patch_size": ("int", 2, 32),
        "patch_stride": ("int", 1, 32),
        "gradient_descent_iterations": ("int", 0, 1000),
        "variational_refinement_iterations": ("int", 0, 1000),
        "variational_refinement_alpha": ("float", 0.0, 1000.0, False, False),
        "variational_refinement_delta": ("float", 0.0, 1000.0, False, False),
        "variational_refinement_gamma": ("float", 0.0, 1000.0, False, False),
        "use_mean_normalization": ("bool",),
        "use_spatial_propagation": ("bool",),
    },
    "tvl1": {
        "tau": ("float", 0.0, 1.0, True, False),
        "lambda_": ("float", 0.0, 100.0, True, False),
        "theta": ("float", 0.0, 10.0, True, False),
        "nscales": ("int", 1, 20),
        "warps": ("int", 1, 50),
        "epsilon": ("float", 0.0, 1.0, True, False),
        "innnerIterations": ("int", 1, 1000),
        "outerIterations": ("int", 1, 1000),
        "scaleStep": ("float", 0.3, 1.0, False, True),
        "gamma": ("float", 0.0, 100.0, False, False),
        "medianFiltering": ("choice", (1, 3, 5)),
    },
}
DIS_PRESET_PATCH = {"ultrafast": (8, 4), "fast": (8, 4), "medium": (8, 3)}  # OpenCV 5.1 presets: (size, stride)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(float(value))


def check_spec(name: str, value: Any, spec: _Spec) -> None:
    """SlsttError naming the field unless `value` fits `spec` (type and range)."""
    kind = spec[0]
    if kind == "int" and not (_is_int(value) and spec[1] <= value <= spec[2]):
        raise SlsttError(f"{name} must be an integer in [{spec[1]}, {spec[2]}], got {_short(value)}")
    if kind == "float":
        lo, hi, lo_open, hi_open = spec[1:]
        ok = _is_number(value) and (value > lo if lo_open else value >= lo) and (value < hi if hi_open else value <= hi)
        if not ok:
            interval = f"{'(' if lo_open else '['}{lo:g}, {hi:g}{')' if hi_open else ']'}"
            raise SlsttError(f"{name} must be a finite number in {interval}, got {_short(value)}")
    if kind == "choice" and (isinstance(value, bool) or not isinstance(value, (str, int)) or value not in spec[1]):
        raise SlsttError(f"{name} must be one of {', '.join(map(str, spec[1]))}, got {_short(value)}")
    if kind == "bool" and not isinstance(value, bool):
        raise SlsttError(f"{name} must be true or false, got {_short(value)}")


def _check_text(name: str, value: Any, max_len: int = 200, empty: bool = False) -> None:
    if not isinstance(value, str) or len(value) > max_len or (not empty and not value.strip()):
        raise SlsttError(f"{name} must be {'a' if empty else 'a non-empty'} text of at most {max_len} characters, "
                         f"got {_short(value)}")


def _check_triple(name: str, value: Any, spec: _Spec) -> None:
    if not isinstance(value, (list, tuple)) or len(value) != 3:
        raise SlsttError(f"{name} must be 3 numbers (R, G, B), got {_short(value)}")
    for i, item in enumerate(value):
        check_spec(f"{name}[{i}]", item, spec)


def validate_flow_params(backend: str, params: Any, name: str = "preprocess.flow_params") -> None:
    """Every parameter a native OpenCV flow call will receive: known name, type and documented range."""
    if not isinstance(params, dict):
        raise SlsttError(f"{name} must be a mapping of {backend} parameters, got {_short(params)}")
    specs = FLOW_PARAM_SPECS[backend]
    for key, value in params.items():
        if key not in specs:
            raise SlsttError(f"{name}.{key} is not a {backend} parameter; known: {', '.join(specs)}")
        check_spec(f"{name}.{key}", value, specs[key])
    if backend == "dis":
        size, stride = DIS_PRESET_PATCH[params.get("preset", "medium")]
        size, stride = params.get("patch_size", size), params.get("patch_stride", stride)
        if stride > size:
            raise SlsttError(f"{name}.patch_stride ({stride}) must not exceed patch_size ({size})")


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
        check_spec("preprocess.num_frames", self.num_frames, ("int", 1, MAX_FRAMES))
        check_spec("preprocess.input_size", self.input_size, ("int", 16, MAX_INPUT_SIZE))
        if self.flow_size is not None:
            check_spec("preprocess.flow_size (or unset)", self.flow_size, ("int", 16, MAX_INPUT_SIZE))
        if self.fps is not None:
            check_spec("preprocess.fps (or unset)", self.fps, ("float", 0.0, MAX_FPS, True, False))
        check_spec("preprocess.uvm_scale", self.uvm_scale, ("float", 0.0, 1000.0, True, False))
        _check_triple("preprocess.mean", self.mean, ("float", -10.0, 10.0, False, False))
        # a zero std divides to inf/NaN: NaN probabilities on every event
        _check_triple("preprocess.std", self.std, ("float", 1e-6, 100.0, False, False))
        validate_flow_params(self.flow, self.flow_params)

    def __post_init__(self) -> None:
        if isinstance(self.flow_params, dict) and self.flow != "farneback" and self.flow_params == FARNEBACK_PAPER:
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
        _check_text("model.backbone", self.backbone)
        _check_text("model.act_layer", self.act_layer)
        _check_text("model.class_scheme", self.class_scheme, empty=True)
        check_spec("model.input_size", self.input_size, ("int", 16, MAX_INPUT_SIZE))
        check_spec("model.num_frames", self.num_frames, ("int", 1, MAX_FRAMES))
        check_spec("model.num_classes", self.num_classes, ("int", 2, MAX_CLASSES))
        check_spec("model.lstm_hidden", self.lstm_hidden, ("int", 1, 1 << 16))
        check_spec("model.lstm_layers", self.lstm_layers, ("int", 1, 64))
        check_spec("model.head_hidden", self.head_hidden, ("int", 1, 1 << 16))
        check_spec("model.finetune_blocks", self.finetune_blocks, ("int", 0, 1000))
        check_spec("model.freeze_backbone", self.freeze_backbone, ("bool",))
        check_spec("model.drop_rate", self.drop_rate, ("float", 0.0, 1.0, False, True))
        if not isinstance(self.labels, (list, tuple)):
            raise SlsttError(f"model.labels must be a list of class names, got {_short(self.labels)}")
        for i, label in enumerate(self.labels):
            _check_text(f"model.labels[{i}]", label, max_len=100)
        if len(set(self.labels)) != len(self.labels):
            raise SlsttError(f"model.labels has duplicate class names: {_short(list(self.labels))}")
        if self.labels and len(self.labels) != self.num_classes:
            raise SlsttError(
                f"model.labels has {len(self.labels)} names but num_classes is {self.num_classes}"
            )

    def __post_init__(self) -> None:
        self.validate()

    @property
    def class_names(self) -> list[str]:
        return list(self.labels) if self.labels else [f"class_{i}" for i in range(self.num_classes)]


def config_hash(obj: Any, length: int = 12) -> str:
    text = json.dumps(_plain(obj), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:length]
