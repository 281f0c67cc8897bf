"""slstt.export: ONNX export with parity check and metadata, and the onnxruntime runtime.

Names are imported lazily so that `slstt --help` does not pay for torch/onnx imports.
"""

from __future__ import annotations

from typing import Any

_EXPORTS = {
    "export_onnx": "slstt.export.onnx",
    "ExportReport": "slstt.export.onnx",
    "read_metadata": "slstt.export.metadata",
    "check_compatible": "slstt.export.metadata",
    "available_providers": "slstt.export.runtime",
    "create_session": "slstt.export.runtime",
    "OnnxClassifier": "slstt.export.runtime",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'slstt.export' has no attribute {name!r}")
