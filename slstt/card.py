"""The model card: ONE typed owner of what a trained model is and how to feed it.

Labels, class scheme, T and input size (through its PreprocessConfig and ModelConfig), the
preprocessing recipe, the serving frame rate, training provenance and metrics, and the export
facts (dtype, part, time axis, parity). It is written as the "slstt" JSON of an exported ONNX
model (`to_dict`, format_version 1) and read back through `from_dict`, which validates every field
first: a model file is untrusted input, and the numbers reach native code (OpenCV, onnxruntime).

    card = ModelCard.from_training(model_config, preprocess_config, checkpoint_meta)
    card.serving_preprocess()      # the recipe the live runtime applies, frame rate made explicit
    card.to_dict()                 # -> ONNX metadata (slstt.export.metadata.set_metadata)
    ModelCard.from_dict(data, "model.onnx")   # validated, typed

Only slstt.config / slstt.errors / slstt.provenance are imported: every stage may use the card."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from slstt.config import (
    AGGREGATORS,
    APEX_POLICIES,
    CROP_RECIPES,
    DIS_PRESET_PATCH,
    FARNEBACK_PAPER,
    FLOW_BACKENDS,
    FLOW_ENCODINGS,
    FLOW_PARAM_SPECS,
    MAX_CLASSES,
    MAX_FRAMES,
    MAX_INPUT_SIZE,
    ModelConfig,
    PreprocessConfig,
)
from slstt.errors import SlsttError, first_line

FORMAT_VERSION = 1
SUPPORTED_FORMAT_VERSIONS = (1,)
DTYPES = ("fp32", "fp16", "int8")
PARTS = ("full", "encoder", "head")
_Spec = tuple  # ("int", lo, hi) | ("float", lo, hi, lo_open, hi_open) | ("choice", values) | ("bool",)


@dataclass
class TrainingInfo:
    """How the weights were chosen (from the checkpoint's meta)."""

    protocol: str | None = None  # loso | all
    fold: str | None = None  # held-out subject, None for protocol "all"
    optimistic: bool | None = None  # epoch picked on the test subject (the paper's protocol)
    selection: str | None = None
    epoch: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class ExportInfo:
    """What `slstt export onnx` did to the weights."""

    dtype: str = "fp32"
    part: str = "full"  # full | encoder | head (--split)
    dynamic_time: bool = True
    opset: int | None = None
    export_id: str | None = None  # the same for the parts of one export
    split: bool = False
    checkpoint: dict[str, Any] = field(default_factory=dict)  # name, source, git
    parity: dict[str, Any] = field(default_factory=dict)
    exported_at: str = ""


def serving_fps(preprocess_fps: float | None, data_fps: Any, where: str = "model") -> float | None:
    """THE serving frame-rate rule: the recipe's fps when set (clips were resampled to it), else the
    training data's single frame rate; None when unknown (frames are then taken as they come).
    Mixed-rate training data without a recipe fps has no defined live spacing: refused."""
    if preprocess_fps is not None:
        return float(preprocess_fps)
    if data_fps is None:
        return None
    if isinstance(data_fps, (list, tuple)):
        rates = sorted({float(r) for r in data_fps})
        if len(rates) != 1:
            raise SlsttError(f"{where}: trained on clips at several frame rates ({', '.join(f'{r:g}' for r in rates)} "
                             "fps) without preprocess.fps, so the live frame spacing is undefined; retrain with "
                             "--fps set (temporal resampling)")
        return rates[0]
    return float(data_fps)


@dataclass
class ModelCard:
    model: ModelConfig
    preprocess: PreprocessConfig
    labels: list[str]
    class_scheme: str = ""
    data_fps: float | list[float] | None = None  # frame rate(s) of the training clips
    data_fps_note: str | None = None  # why it is unknown, e.g. mixed-rate data
    dataset: str | None = None
    training: TrainingInfo = field(default_factory=TrainingInfo)
    metrics: dict[str, Any] | None = None
    meta: dict[str, Any] = field(default_factory=dict)  # the checkpoint's meta, verbatim
    versions: dict[str, Any] = field(default_factory=dict)
    git: str | None = None
    export: ExportInfo = field(default_factory=ExportInfo)

    # --- derived: one owner, so T and input size cannot disagree -------------------------------
    @property
    def num_frames(self) -> int:
        return self.preprocess.num_frames

    @property
    def input_size(self) -> int:
        return self.preprocess.input_size

    def serving_fps(self, where: str = "model") -> float | None:
        return serving_fps(self.preprocess.fps, self.data_fps, where)

    def serving_preprocess(self, where: str = "model") -> PreprocessConfig:
        """The preprocessing to apply live: the model's own, with the frame rate made explicit."""
        fps = self.serving_fps(where)
        return self.preprocess if fps is None or self.preprocess.fps is not None else self.preprocess.replace(fps=fps)

    # --- construction ----------------------------------------------------------------------------
    @classmethod
    def from_training(cls, model_config: ModelConfig, preprocess_config: PreprocessConfig | None,
                      meta: dict[str, Any] | None, where: str = "checkpoint") -> ModelCard:
        """The card of a trained model (checkpoint contents). A checkpoint without preprocessing gets
        the paper's, at the model's size and T; a disagreeing one is refused."""
        from slstt.provenance import git_revision, package_versions

        meta = dict(meta or {})
        pre = preprocess_config or PreprocessConfig(input_size=model_config.input_size,
                                                    num_frames=model_config.num_frames)
        if (pre.num_frames, pre.input_size) != (model_config.num_frames, model_config.input_size):
            raise SlsttError(
                f"{where}: preprocess (T={pre.num_frames}, {pre.input_size}px) disagrees with its model "
                f"(T={model_config.num_frames}, {model_config.input_size}px); fix the checkpoint's preprocess_config")
        training = TrainingInfo(**{k: meta.get(k) for k in ("protocol", "fold", "optimistic", "selection", "epoch")})
        return cls(model_config, pre, list(model_config.class_names),
                   model_config.class_scheme or meta.get("class_scheme", ""), meta.get("data_fps"),
                   meta.get("data_fps_note"), meta.get("dataset"), training, meta.get("metrics"), meta,
                   package_versions(), git_revision(),
                   ExportInfo(checkpoint={"name": "", "source": "", "git": meta.get("git")},
                              exported_at=datetime.now(timezone.utc).isoformat(timespec="seconds")))

    def to_dict(self) -> dict[str, Any]:
        """The ONNX metadata layout (format_version 1; flat copies of T, input size, mean/std, flow
        and crop for people browsing the file)."""
        pre, ex = self.preprocess, self.export
        rate: dict[str, Any] = {"preprocess_fps": pre.fps, "data_fps": self.data_fps}
        if self.data_fps_note:
            rate["note"] = self.data_fps_note
        data: dict[str, Any] = {
            "format_version": FORMAT_VERSION, "part": ex.part, "model_config": self.model.to_dict(),
            "preprocess_config": pre.to_dict(), "labels": list(self.labels), "class_scheme": self.class_scheme,
            "T": pre.num_frames, "input_size": pre.input_size, "mean": list(pre.mean), "std": list(pre.std),
            "flow": {"backend": pre.flow, "params": dict(pre.flow_params)}, "encoding": pre.encoding,
            "uvm_scale": pre.uvm_scale, "crop": pre.crop, "frame_rate": rate, "training": self.training.to_dict(),
            "dataset": self.dataset, "metrics": self.metrics, "checkpoint": dict(ex.checkpoint), "meta": self.meta,
            "versions": self.versions, "git": self.git, "dtype": ex.dtype, "dynamic_time": ex.dynamic_time,
            "parity": ex.parity, "exported_at": ex.exported_at, "split": ex.split,
        }
        if ex.opset is not None:
            data["opset"] = ex.opset
        if ex.export_id is not None:
            data["export_id"] = ex.export_id
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "model") -> ModelCard:
        """A card from metadata, every field validated first (one line naming the field otherwise)."""
        validate_metadata(data, where)
        try:
            pre = PreprocessConfig.from_dict(data["preprocess_config"])
            model = ModelConfig.from_dict(data["model_config"])
        except (SlsttError, TypeError, ValueError) as exc:
            raise SlsttError(f"{where}: invalid config in metadata ({first_line(exc)}); re-export the model") from None
        rate = data.get("frame_rate") or {}
        meta = data.get("meta") or {}
        training = data.get("training") or {}
        return cls(model, pre, list(data["labels"]), data.get("class_scheme") or "",
                   rate.get("data_fps", meta.get("data_fps")), rate.get("note"), data.get("dataset"),
                   TrainingInfo(**{k: training.get(k) for k in TrainingInfo.__dataclass_fields__}),
                   data.get("metrics"), meta, data.get("versions") or {}, data.get("git"),
                   ExportInfo(data.get("dtype", "fp32"), data.get("part", "full"), bool(data.get("dynamic_time")),
                              data.get("opset"), data.get("export_id"), bool(data.get("split")),
                              data.get("checkpoint") or {}, data.get("parity") or {}, data.get("exported_at") or ""))


# ---- validation: a model file is untrusted input ---------------------------------------------
# The flow parameter ranges are slstt.config.FLOW_PARAM_SPECS (one spec for configs and metadata);
# the messages here name the metadata field and say to re-export.

def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


class _Fields:
    """Checks one metadata object; each failure is one line naming the field."""

    def __init__(self, where: str) -> None:
        self.where = where

    def fail(self, name: str, problem: str) -> None:
        raise SlsttError(f"{self.where}: metadata field '{name}' {problem}; the model file is damaged or "
                         "was not written by this slstt, re-export it")

    def spec(self, name: str, value: Any, spec: _Spec) -> None:
        kind = spec[0]
        if kind == "int" and not (_is_int(value) and spec[1] <= value <= spec[2]):
            self.fail(name, f"must be an integer in [{spec[1]}, {spec[2]}], got {_short(value)}")
        if kind == "float":
            lo, hi, lo_open, hi_open = spec[1:]
            ok = _is_number(value) and (value > lo if lo_open else value >= lo) and (value < hi if hi_open else value <= hi)
            if not ok:
                interval = f"{'(' if lo_open else '['}{lo:g}, {hi:g}{')' if hi_open else ']'}"
                self.fail(name, f"must be a finite number in {interval}, got {_short(value)}")
        if kind == "choice" and (isinstance(value, bool) or value not in spec[1]):
            self.fail(name, f"must be one of {', '.join(map(str, spec[1]))}, got {_short(value)}")
        if kind == "bool" and not isinstance(value, bool):
            self.fail(name, f"must be true or false, got {_short(value)}")

    def integer(self, name: str, value: Any, lo: int, hi: int) -> None:
        self.spec(name, value, ("int", lo, hi))

    def number(self, name: str, value: Any, lo: float, hi: float, lo_open: bool = False) -> None:
        self.spec(name, value, ("float", lo, hi, lo_open, False))

    def choice(self, name: str, value: Any, choices: tuple[Any, ...]) -> None:
        self.spec(name, value, ("choice", choices))

    def type(self, name: str, value: Any, types: type | tuple[type, ...], optional: bool = False) -> None:
        if value is None and optional:
            return
        if not isinstance(value, types):
            wanted = " or ".join(t.__name__ for t in (types if isinstance(types, tuple) else (types,)))
            self.fail(name, f"must be {wanted}{' or null' if optional else ''}, got {type(value).__name__}")

    def text(self, name: str, value: Any, max_len: int = 200, optional: bool = False) -> None:
        self.type(name, value, str, optional)
        if isinstance(value, str) and len(value) > max_len:
            self.fail(name, f"is {len(value)} characters long, over {max_len}")

    def triple(self, name: str, value: Any, lo: float, hi: float, lo_open: bool) -> None:
        if not isinstance(value, (list, tuple)) or len(value) != 3:
            self.fail(name, f"must be a list of 3 numbers (R, G, B), got {_short(value)}")
        for i, item in enumerate(value):
            self.number(f"{name}[{i}]", item, lo, hi, lo_open)


def validate_flow_params(backend: str, params: Any, where: str, name: str = "preprocess_config.flow_params") -> None:
    """Every flow parameter a native OpenCV call will receive: known name, type and documented range."""
    check = _Fields(where)
    check.type(name, params, dict)
    specs = FLOW_PARAM_SPECS[backend]
    for key, value in params.items():
        if key not in specs:
            check.fail(f"{name}.{key}", f"is not a {backend} parameter (known: {', '.join(specs)})")
        check.spec(f"{name}.{key}", value, specs[key])
    if backend == "dis":
        size, stride = DIS_PRESET_PATCH[params.get("preset", "medium")]
        size, stride = params.get("patch_size", size), params.get("patch_stride", stride)
        if stride > size:
            check.fail(f"{name}.patch_stride", f"({stride}) must not exceed patch_size ({size})")


def validate_preprocess(pre: Any, where: str, name: str = "preprocess_config") -> None:
    check = _Fields(where)
    check.type(name, pre, dict)
    check.choice(f"{name}.crop", pre.get("crop", "slstt"), CROP_RECIPES)
    backend = pre.get("flow", "farneback")
    if backend not in FLOW_BACKENDS:  # the message tests and users look for
        raise SlsttError(f"{where}: unsupported flow backend {_short(backend)}; supported: {', '.join(FLOW_BACKENDS)}")
    encoding = pre.get("encoding", "hsv")
    if encoding not in FLOW_ENCODINGS:
        raise SlsttError(f"{where}: unsupported encoding {_short(encoding)}; supported: {', '.join(FLOW_ENCODINGS)}")
    # PreprocessConfig drops the paper's Farneback defaults under another backend: not used, not checked
    if "flow_params" in pre and not (backend != "farneback" and pre["flow_params"] == FARNEBACK_PAPER):
        validate_flow_params(backend, pre["flow_params"], where, f"{name}.flow_params")
    check.choice(f"{name}.apex_policy", pre.get("apex_policy", "middle"), APEX_POLICIES)
    check.integer(f"{name}.num_frames", pre.get("num_frames", 11), 1, MAX_FRAMES)
    check.integer(f"{name}.input_size", pre.get("input_size", 384), 16, MAX_INPUT_SIZE)
    if pre.get("flow_size") is not None:
        check.integer(f"{name}.flow_size", pre["flow_size"], 16, MAX_INPUT_SIZE)
    if "mean" in pre:
        check.triple(f"{name}.mean", pre["mean"], -10.0, 10.0, False)
    if "std" in pre:  # a zero std divides to inf/NaN: NaN probabilities on every event
        check.triple(f"{name}.std", pre["std"], 1e-6, 100.0, False)
    if pre.get("fps") is not None:
        check.number(f"{name}.fps", pre["fps"], 0.0, 10000.0, lo_open=True)
    if "uvm_scale" in pre:
        check.number(f"{name}.uvm_scale", pre["uvm_scale"], 0.0, 1000.0, lo_open=True)


def validate_model_config(model: Any, where: str, name: str = "model_config") -> None:
    check = _Fields(where)
    check.type(name, model, dict)
    for key in ("backbone", "act_layer", "class_scheme"):
        if key in model:
            check.text(f"{name}.{key}", model[key])
    check.choice(f"{name}.aggregator", model.get("aggregator", "lstm"), AGGREGATORS)
    check.integer(f"{name}.num_classes", model.get("num_classes", 5), 2, MAX_CLASSES)
    check.integer(f"{name}.input_size", model.get("input_size", 384), 16, MAX_INPUT_SIZE)
    check.integer(f"{name}.num_frames", model.get("num_frames", 11), 1, MAX_FRAMES)
    for key, hi in (("lstm_hidden", 1 << 16), ("lstm_layers", 64), ("head_hidden", 1 << 16), ("finetune_blocks", 1000)):
        if key in model:
            check.integer(f"{name}.{key}", model[key], 0 if key == "finetune_blocks" else 1, hi)
    if "freeze_backbone" in model:
        check.spec(f"{name}.freeze_backbone", model["freeze_backbone"], ("bool",))
    if "drop_rate" in model:
        check.spec(f"{name}.drop_rate", model["drop_rate"], ("float", 0.0, 1.0, False, True))
    if "labels" in model:
        _check_labels(check, f"{name}.labels", model["labels"], allow_empty=True)


def _check_labels(check: _Fields, name: str, labels: Any, allow_empty: bool = False) -> None:
    if not isinstance(labels, list) or not (allow_empty and not labels or 2 <= len(labels) <= MAX_CLASSES):
        check.fail(name, f"must be a list of 2..{MAX_CLASSES} class names, got {_short(labels)}")
    for i, label in enumerate(labels):
        check.text(f"{name}[{i}]", label, max_len=100)
        if not label.strip():
            check.fail(f"{name}[{i}]", "is empty")
    if len(set(labels)) != len(labels):
        check.fail(name, f"has duplicate class names {_short(labels)}")


def _check_rate(check: _Fields, name: str, value: Any) -> None:
    rates = value if isinstance(value, list) else [value]
    if value is None:
        return
    if not rates or len(rates) > 1000:
        check.fail(name, f"must be a frame rate or a list of frame rates, got {_short(value)}")
    for rate in rates:
        check.number(name, rate, 0.0, 10000.0, lo_open=True)


def validate_metadata(metadata: dict[str, Any], where: str = "model") -> None:
    """Every field the runtime uses, checked for type, range and length before any use; one line
    naming the field otherwise. Informational fields are type-checked so displaying them is safe."""
    check = _Fields(where)
    version = _require(metadata, "format_version", where)
    if isinstance(version, bool) or version not in SUPPORTED_FORMAT_VERSIONS:
        raise SlsttError(
            f"{where}: metadata format_version {_short(version)} is not supported; supported: "
            f"{', '.join(map(str, SUPPORTED_FORMAT_VERSIONS))} (upgrade slstt or re-export)"
        )
    pre = _require(metadata, "preprocess_config", where)
    model = _require(metadata, "model_config", where)
    validate_preprocess(pre, where)
    validate_model_config(model, where)
    _validate_choices(metadata, pre, where)
    _validate_shape_fields(check, metadata, pre, model, where)
    _validate_info_fields(check, metadata)


def _require(metadata: dict[str, Any], name: str, where: str) -> Any:
    if name not in metadata:
        raise SlsttError(f"{where}: metadata field '{name}' is missing; re-export the model")
    return metadata[name]


def _validate_choices(metadata: dict[str, Any], pre: dict[str, Any], where: str) -> None:
    for name, value, supported in (("dtype", metadata.get("dtype"), DTYPES), ("part", metadata.get("part", "full"), PARTS),
                                   ("crop", pre.get("crop", "slstt"), CROP_RECIPES)):
        if isinstance(value, bool) or value not in supported:
            raise SlsttError(f"{where}: unsupported {name} {_short(value)}; supported: {', '.join(supported)}")


def _validate_shape_fields(check: _Fields, metadata: dict[str, Any], pre: dict[str, Any], model: dict[str, Any],
                           where: str) -> None:
    """Labels, T, input size and normalisation: what the graph and the preprocessing must agree on."""
    labels = _require(metadata, "labels", where)
    _check_labels(check, "labels", labels)
    if len(labels) != model.get("num_classes", 5):
        raise SlsttError(f"{where}: metadata has {len(labels)} labels but model_config.num_classes is "
                         f"{model.get('num_classes', 5)}; re-export the model")
    check.integer("T", _require(metadata, "T", where), 1, MAX_FRAMES)
    if metadata["T"] != pre.get("num_frames", 11):
        check.fail("T", f"({metadata['T']}) differs from preprocess_config.num_frames ({pre.get('num_frames', 11)})")
    if "input_size" in metadata:
        check.integer("input_size", metadata["input_size"], 16, MAX_INPUT_SIZE)
        if metadata["input_size"] != pre.get("input_size", 384):
            check.fail("input_size", f"({metadata['input_size']}) differs from preprocess_config.input_size")
    if "mean" in metadata:
        check.triple("mean", metadata["mean"], -10.0, 10.0, False)
    if "std" in metadata:
        check.triple("std", metadata["std"], 1e-6, 100.0, False)
    if "uvm_scale" in metadata:
        check.number("uvm_scale", metadata["uvm_scale"], 0.0, 1000.0, lo_open=True)


def _validate_info_fields(check: _Fields, metadata: dict[str, Any]) -> None:
    """Informational fields: typed, so that showing them (`slstt export check`) is safe."""
    for name in ("dynamic_time", "split"):
        if name in metadata:
            check.spec(name, metadata[name], ("bool",))
    if "opset" in metadata:
        check.integer("opset", metadata["opset"], 1, 100)
    for name in ("class_scheme", "encoding", "exported_at", "export_id", "dataset", "git"):
        if name in metadata:
            check.text(name, metadata[name], optional=True)
    for name in ("flow", "training", "metrics", "checkpoint", "meta", "versions", "parity", "frame_rate"):
        if name in metadata:
            check.type(name, metadata[name], dict, optional=True)
    frame_rate = metadata.get("frame_rate") or {}
    _check_rate(check, "frame_rate.data_fps", frame_rate.get("data_fps"))
    _check_rate(check, "frame_rate.preprocess_fps", frame_rate.get("preprocess_fps"))
    _check_rate(check, "meta.data_fps", (metadata.get("meta") or {}).get("data_fps"))
    parity_checks = (metadata.get("parity") or {}).get("checks", [])
    check.type("parity.checks", parity_checks, list)
    for i, item in enumerate(parity_checks):
        check.type(f"parity.checks[{i}]", item, dict)
        check.text(f"parity.checks[{i}].dtype", item.get("dtype"))
        check.number(f"parity.checks[{i}].max_abs_diff", item.get("max_abs_diff"), 0.0, math.inf)
