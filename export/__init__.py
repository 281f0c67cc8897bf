"""slstt.export: ONNX export with parity check and metadata, and the onnxruntime runtime.

Names are imported lazily so that `slstt --help` does not pay for torch/onnx imports.

The package is callable: `slstt.export(checkpoint, output, dtype="fp32")` is slstt.api.export, the
function behind `slstt export onnx` (the name `slstt.export` is both this package and the API verb).
"""

from __future__ import annotations

import sys
import types
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


class _CallableModule(types.ModuleType):
    def __call__(self, checkpoint: Any, output: Any = None, **options: Any) -> Any:
        from slstt.api import export

        return export(checkpoint, output, **options)


sys.modules[__name__].__class__ = _CallableModule
