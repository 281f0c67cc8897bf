"""The metadata an exported model carries, so that the .onnx file alone says how to feed it.

Stored in the ONNX `metadata_props` under the key "slstt" as one JSON object (plus a few flat keys
for humans browsing the file in Netron). `check_compatible` is the runtime's gate: it refuses a
model it cannot honour with one line naming the field and the supported values.
"""

from __future__ import annotations

import json
import math
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from slstt.config import (
    AGGREGATORS,
    APEX_POLICIES,
    CROP_RECIPES,
    FARNEBACK_PAPER,
    FLOW_BACKENDS,
    FLOW_ENCODINGS,
    ModelConfig,
    PreprocessConfig,
)
from slstt.errors import SlsttError, first_line
from slstt.provenance import git_revision, package_versions

METADATA_KEY = "slstt"
FORMAT_VERSION = 1
SUPPORTED_FORMAT_VERSIONS = (1,)
DTYPES = ("fp32", "fp16", "int8")
PARTS = ("full", "encoder", "head")
MAX_FRAMES = 128  # T; the paper uses 11
MAX_INPUT_SIZE = 1024  # px; ViT-B/384 is the largest shipped
MAX_CLASSES = 1000
MAX_METADATA_CHARS = 16 * 2**20


def _reject_constant(token: str) -> Any:
    raise ValueError(f"{token} is not a JSON number")

def build_metadata(
    model_config: ModelConfig,
    preprocess_config: PreprocessConfig,
    meta: dict[str, Any],
    *,
    dtype: str,
    dynamic_time: bool,
    part: str = "full",
    source: str = "",
    checkpoint_name: str = "",
    parity: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Everything the runtime needs to rebuild the input pipeline, and what the model was trained on."""
    pre = preprocess_config
    meta = dict(meta or {})
    return {
        "format_version": FORMAT_VERSION,
        "part": part,
        "model_config": model_config.to_dict(),
        "preprocess_config": pre.to_dict(),
        "labels": model_config.class_names,
        "class_scheme": model_config.class_scheme or meta.get("class_scheme", ""),
        "T": pre.num_frames,
        "input_size": pre.input_size,
        "mean": list(pre.mean),
        "std": list(pre.std),
        "flow": {"backend": pre.flow, "params": dict(pre.flow_params)},
        "encoding": pre.encoding,
        "uvm_scale": pre.uvm_scale,
        "crop": pre.crop,
        "frame_rate": _frame_rate(pre, meta),
        "training": {
            "protocol": meta.get("protocol"),
            "fold": meta.get("fold"),
            "optimistic": meta.get("optimistic"),
            "selection": meta.get("selection"),
            "epoch": meta.get("epoch"),
        },
        "dataset": meta.get("dataset"),
        "metrics": meta.get("metrics"),
        "checkpoint": {"name": checkpoint_name, "source": source, "git": meta.get("git")},
        "meta": meta,
        "versions": package_versions(),
        "git": git_revision(),
        "dtype": dtype,
        "dynamic_time": dynamic_time,
        "parity": parity or {},
        "exported_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def _frame_rate(pre: PreprocessConfig, meta: dict[str, Any]) -> dict[str, Any]:
    """Rate the network's frames were spaced at; a note says why it is unknown (e.g. mixed-rate data)."""
    rate: dict[str, Any] = {"preprocess_fps": pre.fps, "data_fps": meta.get("data_fps")}
    if meta.get("data_fps_note"):
        rate["note"] = meta["data_fps_note"]
    return rate


def set_metadata(model_proto: Any, metadata: dict[str, Any]) -> None:
    """Write the JSON under "slstt" plus flat keys for humans into an onnx.ModelProto (replacing old ones)."""
    flat = {
        METADATA_KEY: json.dumps(metadata, sort_keys=True, default=str),
        "slstt_format_version": str(metadata["format_version"]),
        "labels": ",".join(metadata["labels"]),
        "T": str(metadata["T"]),
        "input_size": str(metadata["input_size"]),
        "dtype": metadata["dtype"],
    }
    keep = [p for p in model_proto.metadata_props if p.key not in flat]
    del model_proto.metadata_props[:]
    model_proto.metadata_props.extend(keep)
    for key, value in flat.items():
        model_proto.metadata_props.add(key=key, value=value)


def parse_metadata(props: dict[str, str], where: str, validate: bool = True) -> dict[str, Any]:
    """The "slstt" JSON from a metadata_props mapping (onnx or onnxruntime's custom_metadata_map),
    validated field by field (a model file is untrusted input) unless validate=False."""
    if METADATA_KEY not in props:
        raise SlsttError(
            f"{where}: no '{METADATA_KEY}' metadata; it was not exported by `slstt export onnx`, re-export it"
        )
    text = props[METADATA_KEY]
    if len(text) > MAX_METADATA_CHARS:
        raise SlsttError(f"{where}: '{METADATA_KEY}' metadata is {len(text)} characters, over "
                         f"{MAX_METADATA_CHARS}; not an slstt export, re-export it")
    try:
        data = json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        raise SlsttError(f"{where}: '{METADATA_KEY}' metadata is not valid JSON ({exc.msg}); re-export it") from None
    except (ValueError, RecursionError) as exc:
        raise SlsttError(f"{where}: '{METADATA_KEY}' metadata is not valid JSON ({first_line(exc)}); "
                         "re-export it") from None
    if not isinstance(data, dict):
        raise SlsttError(f"{where}: '{METADATA_KEY}' metadata is not a JSON object; re-export it")
    if validate:
        validate_metadata(data, where)
    return data


def read_metadata(path: str | Path) -> dict[str, Any]:
    """The metadata dict written at export (weights are parsed but not kept)."""
    import onnx

    path = Path(path)
    if not path.is_file():
        raise SlsttError(f"ONNX model not found: {path}")
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # protobuf raises a bare DecodeError for a non-ONNX file
        raise SlsttError(f"{path}: not a readable ONNX model ({type(exc).__name__}); pass a .onnx file") from None
    return parse_metadata({p.key: p.value for p in proto.metadata_props}, str(path))


def _require(metadata: dict[str, Any], field: str, where: str) -> Any:
    if field not in metadata:
        raise SlsttError(f"{where}: metadata field '{field}' is missing; re-export the model")
    return metadata[field]


# ---- validation: a model file is untrusted input ---------------------------------------------
# Ranges are those OpenCV documents (or the narrowest that keeps its native code safe: winsize <= 0
# corrupts the heap, a DIS patch_stride of 0 divides by zero, TV-L1 medianFiltering only takes 1/3/5).

_Spec = tuple  # ("int", lo, hi) | ("float", lo, hi, lo_open, hi_open) | ("choice", values) | ("bool",)

FLOW_PARAM_SPECS: dict[str, dict[str, _Spec]] = {
    "farneback": {
        "pyr_scale": ("float", 0.0, 1.0, True, True),
        "levels": ("int", 0, 20),
        "winsize": ("int", 1, 255),
        "iterations": ("int", 1, 100),
        "poly_n": ("choice", (5, 7)),  # as OpenCV documents (3..11 run, but 5 and 7 are the tested ones)
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
DIS_PRESET_PATCH = {"ultrafast": (8, 4), "fast": (8, 4), "medium": (8, 3)}  # OpenCV 4-5 presets: (size, stride)


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

    def int(self, name: str, value: Any, lo: int, hi: int) -> None:
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
    check.int(f"{name}.num_frames", pre.get("num_frames", 11), 1, MAX_FRAMES)
    check.int(f"{name}.input_size", pre.get("input_size", 384), 16, MAX_INPUT_SIZE)
    if pre.get("flow_size") is not None:
        check.int(f"{name}.flow_size", pre["flow_size"], 16, MAX_INPUT_SIZE)
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
    check.int(f"{name}.num_classes", model.get("num_classes", 5), 2, MAX_CLASSES)
    check.int(f"{name}.input_size", model.get("input_size", 384), 16, MAX_INPUT_SIZE)
    check.int(f"{name}.num_frames", model.get("num_frames", 11), 1, MAX_FRAMES)
    for key, hi in (("lstm_hidden", 1 << 16), ("lstm_layers", 64), ("head_hidden", 1 << 16), ("finetune_blocks", 1000)):
        if key in model:
            check.int(f"{name}.{key}", model[key], 0 if key == "finetune_blocks" else 1, hi)
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
    for name, value, supported in (("dtype", metadata.get("dtype"), DTYPES), ("part", metadata.get("part", "full"), PARTS),
                                   ("crop", pre.get("crop", "slstt"), CROP_RECIPES)):
        if isinstance(value, bool) or value not in supported:
            raise SlsttError(f"{where}: unsupported {name} {_short(value)}; supported: {', '.join(supported)}")
    labels = _require(metadata, "labels", where)
    _check_labels(check, "labels", labels)
    if len(labels) != model.get("num_classes", 5):
        raise SlsttError(f"{where}: metadata has {len(labels)} labels but model_config.num_classes is "
                         f"{model.get('num_classes', 5)}; re-export the model")
    check.int("T", _require(metadata, "T", where), 1, MAX_FRAMES)
    if metadata["T"] != pre.get("num_frames", 11):
        check.fail("T", f"({metadata['T']}) differs from preprocess_config.num_frames ({pre.get('num_frames', 11)})")
    if "input_size" in metadata:
        check.int("input_size", metadata["input_size"], 16, MAX_INPUT_SIZE)
        if metadata["input_size"] != pre.get("input_size", 384):
            check.fail("input_size", f"({metadata['input_size']}) differs from preprocess_config.input_size")
    if "mean" in metadata:
        check.triple("mean", metadata["mean"], -10.0, 10.0, False)
    if "std" in metadata:
        check.triple("std", metadata["std"], 1e-6, 100.0, False)
    if "uvm_scale" in metadata:
        check.number("uvm_scale", metadata["uvm_scale"], 0.0, 1000.0, lo_open=True)
    for name in ("dynamic_time", "split"):
        if name in metadata:
            check.spec(name, metadata[name], ("bool",))
    if "opset" in metadata:
        check.int("opset", metadata["opset"], 1, 100)
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


def check_compatible(
    metadata: dict[str, Any],
    *,
    input_shape: list[Any] | tuple[Any, ...] | None = None,
    output_size: int | None = None,
    where: str = "model",
) -> None:
    """Raise SlsttError (one line) if this runtime cannot honour the model's metadata.

    input_shape/output_size are the ONNX graph's declared shapes (str or None for dynamic axes).
    """
    validate_metadata(metadata, where)
    pre, model, labels = metadata["preprocess_config"], metadata["model_config"], metadata["labels"]
    try:
        pre_cfg = PreprocessConfig.from_dict(pre)
        ModelConfig.from_dict(model)
    except (SlsttError, TypeError, ValueError) as exc:
        raise SlsttError(f"{where}: invalid config in metadata ({first_line(exc)}); re-export the model") from None
    part = metadata.get("part", "full")
    if isinstance(output_size, int) and part != "encoder" and output_size != len(labels):
        raise SlsttError(
            f"{where}: the model outputs {output_size} classes but its metadata lists {len(labels)} labels "
            f"({_short(', '.join(labels))}); re-export the model"
        )
    if input_shape is None:
        return
    shape = list(input_shape)
    if part == "full":
        if len(shape) != 5:
            raise SlsttError(f"{where}: input rank {len(shape)} but a full model takes (batch, T, 3, H, W)")
        time_dim, spatial = shape[1], shape[3:]
    elif part == "encoder":
        time_dim, spatial = None, shape[2:]
    else:
        time_dim, spatial = shape[1] if len(shape) == 3 else None, []
    if isinstance(time_dim, int) and time_dim != pre_cfg.num_frames:
        raise SlsttError(
            f"{where}: the graph takes T={time_dim} frames but metadata says T={pre_cfg.num_frames}; "
            "re-export the model"
        )
    if isinstance(time_dim, int) and metadata.get("dynamic_time"):
        raise SlsttError(f"{where}: metadata says dynamic_time but the graph fixes T={time_dim}")
    for side in spatial:
        if isinstance(side, int) and side != pre_cfg.input_size:
            raise SlsttError(
                f"{where}: the graph takes {side}px frames but metadata input_size is {pre_cfg.input_size}"
            )
