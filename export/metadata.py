"""The metadata an exported model carries, so that the .onnx file alone says how to feed it.

The content is the model card (slstt.card.ModelCard: labels, recipe, frame rate, provenance, export
facts), stored in the ONNX `metadata_props` under the key "slstt" as one JSON object (plus a few
flat keys for humans browsing the file in Netron). This module is the ONNX side only: writing,
reading and the graph-shape gate `check_compatible`; validation is the card's (`ModelCard.from_dict`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from slstt.card import (  # noqa: F401 - re-exported: the validation used to live here
    DTYPES,
    FORMAT_VERSION,
    PARTS,
    SUPPORTED_FORMAT_VERSIONS,
    ExportInfo,
    ModelCard,
    validate_flow_params,
    validate_metadata,
    validate_model_config,
    validate_preprocess,
)
from slstt.config import (  # noqa: F401
    FLOW_PARAM_SPECS,
    MAX_CLASSES,
    MAX_FRAMES,
    MAX_INPUT_SIZE,
    ModelConfig,
    PreprocessConfig,
)
from slstt.errors import SlsttError, first_line
from slstt.provenance import git_revision, package_versions  # noqa: F401 - one provenance (tests check it)

METADATA_KEY = "slstt"
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
    """The card of a trained model with the export facts, as the metadata dict."""
    card = ModelCard.from_training(model_config, preprocess_config, meta)
    card.export.dtype, card.export.dynamic_time, card.export.part = dtype, dynamic_time, part
    card.export.checkpoint.update(name=checkpoint_name, source=source)
    card.export.parity = parity or {}
    return card.to_dict()


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


def read_card(path: str | Path) -> ModelCard:
    """The validated model card of an exported .onnx file."""
    return ModelCard.from_dict(read_metadata(path), str(path))


def check_compatible(
    metadata: dict[str, Any],
    *,
    input_shape: list[Any] | tuple[Any, ...] | None = None,
    output_size: int | None = None,
    where: str = "model",
) -> ModelCard:
    """The model's card, or SlsttError (one line) if this runtime cannot honour it.

    input_shape/output_size are the ONNX graph's declared shapes (str or None for dynamic axes).
    """
    card = ModelCard.from_dict(metadata, where)
    part, labels = card.export.part, card.labels
    if isinstance(output_size, int) and part != "encoder" and output_size != len(labels):
        shown = ", ".join(labels)
        raise SlsttError(
            f"{where}: the model outputs {output_size} classes but its metadata lists {len(labels)} labels "
            f"({shown if len(shown) <= 40 else shown[:37] + '...'}); re-export the model"
        )
    if input_shape is not None:
        _check_graph_shape(card, list(input_shape), where)
    return card


def _check_graph_shape(card: ModelCard, shape: list[Any], where: str) -> None:
    part, T, size = card.export.part, card.num_frames, card.input_size
    if part == "full":
        if len(shape) != 5:
            raise SlsttError(f"{where}: input rank {len(shape)} but a full model takes (batch, T, 3, H, W)")
        time_dim, spatial = shape[1], shape[3:]
    elif part == "encoder":
        time_dim, spatial = None, shape[2:]
    else:
        time_dim, spatial = shape[1] if len(shape) == 3 else None, []
    if isinstance(time_dim, int) and time_dim != T:
        raise SlsttError(f"{where}: the graph takes T={time_dim} frames but metadata says T={T}; re-export the model")
    if isinstance(time_dim, int) and card.export.dynamic_time:
        raise SlsttError(f"{where}: metadata says dynamic_time but the graph fixes T={time_dim}")
    for side in spatial:
        if isinstance(side, int) and side != size:
            raise SlsttError(f"{where}: the graph takes {side}px frames but metadata input_size is {size}")
