"""slstt: SLSTT micro-expression recognition, from LOSO training to a live detector.

    import slstt
    for event in slstt.Detector("model.onnx").stream(0):   # camera 0, a video file or a stream URL
        print(event.kind, event.onset_s, event.region, event.label)

The API names load lazily: `import slstt` stays fast (no torch, OpenCV or onnxruntime)."""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

_API = {"Detector", "train", "read_run", "TrainResult", "load_card"}
__all__ = ["Detector", "train", "export", "read_run", "TrainResult", "load_card", "ModelCard", "__version__"]


def __getattr__(name: str) -> Any:
    import importlib

    if name in _API:
        return getattr(importlib.import_module("slstt.api"), name)
    if name == "export":  # the subpackage, callable: slstt.export(checkpoint, output, dtype=...)
        return importlib.import_module("slstt.export")
    if name == "ModelCard":
        return importlib.import_module("slstt.card").ModelCard
    raise AttributeError(f"module 'slstt' has no attribute {name!r}")
