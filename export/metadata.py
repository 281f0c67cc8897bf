"""The metadata an exported model carries, so that the .onnx file alone says how to feed it.

Stored in the ONNX `metadata_props` under the key "slstt" as one JSON object (plus a few flat keys
for humans browsing the file in Netron). `check_compatible` is the runtime's gate: it refuses a
model it cannot honour with one line naming the field and the supported values.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from slstt.config import CROP_RECIPES, FLOW_BACKENDS, FLOW_ENCODINGS, ModelConfig, PreprocessConfig
from slstt.errors import SlsttError
from slstt.provenance import git_revision, package_versions

METADATA_KEY = "slstt"
FORMAT_VERSION = 1
SUPPORTED_FORMAT_VERSIONS = (1,)
DTYPES = ("fp32", "fp16", "int8")
PARTS = ("full", "encoder", "head")

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


def parse_metadata(props: dict[str, str], where: str) -> dict[str, Any]:
    """The "slstt" JSON from a metadata_props mapping (onnx or onnxruntime's custom_metadata_map)."""
    if METADATA_KEY not in props:
        raise SlsttError(
            f"{where}: no '{METADATA_KEY}' metadata; it was not exported by `slstt export onnx`, re-export it"
        )
    try:
        data = json.loads(props[METADATA_KEY])
    except json.JSONDecodeError as exc:
        raise SlsttError(f"{where}: '{METADATA_KEY}' metadata is not valid JSON ({exc.msg}); re-export it") from None
    if not isinstance(data, dict):
        raise SlsttError(f"{where}: '{METADATA_KEY}' metadata is not a JSON object; re-export it")
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
    version = _require(metadata, "format_version", where)
    if version not in SUPPORTED_FORMAT_VERSIONS:
        raise SlsttError(
            f"{where}: metadata format_version {version!r} is not supported; supported: "
            f"{', '.join(map(str, SUPPORTED_FORMAT_VERSIONS))} (upgrade slstt or re-export)"
        )
    pre = _require(metadata, "preprocess_config", where)
    model = _require(metadata, "model_config", where)
    checks = (
        ("flow backend", pre.get("flow") if isinstance(pre, dict) else None, FLOW_BACKENDS),
        ("encoding", pre.get("encoding") if isinstance(pre, dict) else None, FLOW_ENCODINGS),
        ("crop", pre.get("crop") if isinstance(pre, dict) else None, CROP_RECIPES),
        ("dtype", metadata.get("dtype"), DTYPES),
        ("part", metadata.get("part", "full"), PARTS),
    )
    for name, value, supported in checks:
        if value not in supported:
            raise SlsttError(f"{where}: unsupported {name} {value!r}; supported: {', '.join(supported)}")
    try:
        pre_cfg = PreprocessConfig.from_dict(pre)
        model_cfg = ModelConfig.from_dict(model)
    except (SlsttError, TypeError) as exc:
        raise SlsttError(f"{where}: invalid config in metadata ({exc}); re-export the model") from None
    labels = _require(metadata, "labels", where)
    if not isinstance(labels, list) or len(labels) != model_cfg.num_classes:
        raise SlsttError(
            f"{where}: metadata has {len(labels) if isinstance(labels, list) else 'no'} labels but "
            f"model_config.num_classes is {model_cfg.num_classes}; re-export the model"
        )
    if _require(metadata, "T", where) != pre_cfg.num_frames:
        raise SlsttError(
            f"{where}: metadata T={metadata['T']} but preprocess_config.num_frames={pre_cfg.num_frames}"
        )
    part = metadata.get("part", "full")
    if output_size is not None and part != "encoder" and output_size != len(labels):
        raise SlsttError(
            f"{where}: the model outputs {output_size} classes but its metadata lists {len(labels)} labels "
            f"({', '.join(labels)}); re-export the model"
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
