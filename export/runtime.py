"""onnxruntime sessions for exported models: pick the fastest provider that really works here,
warm it up, and wrap it in a classifier that knows its labels and preprocessing.

onnxruntime-gpu lists CUDA/TensorRT even on machines where their libraries or the GPU are missing;
asking for them then prints errors and silently falls back. So usability is probed once, quietly,
on a one-node model, and a session is accepted only if it really holds the provider asked for.
"""

from __future__ import annotations

import contextlib
import functools
import io
import logging
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np

from slstt.errors import SlsttError, first_line

log = logging.getLogger("slstt.export")

PROVIDER_NAMES = {
    "tensorrt": "TensorrtExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "cpu": "CPUExecutionProvider",
}
SHORT_NAMES = {v: k for k, v in PROVIDER_NAMES.items()}
CHOICES = ("auto", *PROVIDER_NAMES)
ORT_DEFAULT_SEVERITY = 2  # onnxruntime's default logger level (warning)


def _probe_model() -> bytes:
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])], "probe",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


@contextlib.contextmanager
def _silenced():
    """Mute onnxruntime's C++ logger and its Python 'EP Error ... falling back' print."""
    import onnxruntime as ort

    ort.set_default_logger_severity(4)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        ort.set_default_logger_severity(ORT_DEFAULT_SEVERITY)


def _gpu_device_missing() -> str | None:
    """Cheap reason why no GPU provider can work, without touching CUDA."""
    if sys.platform.startswith("linux") and not any(Path("/dev").glob("nvidia[0-9]*")):
        return "no NVIDIA GPU device found"
    return None


@functools.cache
def provider_status(name: str) -> tuple[bool, str]:
    """(usable, reason) for 'tensorrt' | 'cuda' | 'cpu'; probed once per process."""
    import onnxruntime as ort

    full = PROVIDER_NAMES[name]
    if name == "cpu":
        return True, "always available"
    if full not in ort.get_available_providers():
        return False, f"this onnxruntime build has no {full}"
    missing = _gpu_device_missing()
    if missing:
        return False, missing
    options = ort.SessionOptions()
    options.log_severity_level = 4
    try:
        with _silenced():
            session = ort.InferenceSession(_probe_model(), options, providers=[full, "CPUExecutionProvider"])
    except Exception as exc:
        return False, f"session failed: {first_line(exc, 120)}"
    if full not in session.get_providers():
        return False, "its libraries (CUDA/cuDNN/TensorRT) could not be loaded"
    return True, "usable"


def usable_providers() -> list[str]:
    """Short names of the providers that really run here, fastest first (always ends with 'cpu')."""
    return [name for name in PROVIDER_NAMES if provider_status(name)[0]]


def available_providers() -> list[str]:
    return usable_providers()


def _provider_entries(names: list[str]) -> list[Any]:
    entries: list[Any] = []
    for name in names:
        if name == "tensorrt":
            cache = Path(os.environ.get("SLSTT_TRT_CACHE", Path.home() / ".cache" / "slstt" / "tensorrt"))
            cache.mkdir(parents=True, exist_ok=True)  # engines take minutes to build; reuse them
            entries.append((PROVIDER_NAMES[name], {"trt_engine_cache_enable": True,
                                                   "trt_engine_cache_path": str(cache)}))
        else:
            entries.append(PROVIDER_NAMES[name])
    return entries


@functools.cache
def _note_once(message: str) -> None:
    log.info(message)


def _resolve(provider: str) -> list[str]:
    if provider not in CHOICES:
        raise SlsttError(f"unknown provider {provider!r}; choose one of {', '.join(CHOICES)}")
    if provider == "auto":
        chain = usable_providers()
        if "cuda" not in chain:
            _note_once(f"CUDA not usable ({provider_status('cuda')[1]}), using {', '.join(chain).upper()}")
        return chain
    ok, reason = provider_status(provider)
    if not ok:
        raise SlsttError(f"provider {provider} is not usable here ({reason}); use --provider auto or cpu")
    return [provider] if provider == "cpu" else [provider, "cpu"]  # CPU takes ops the GPU EP lacks


def _warmup(session: Any, num_frames: int) -> None:
    inp = session.get_inputs()[0]
    shape = [d if isinstance(d, int) else 1 for d in inp.shape]
    if len(shape) in (3, 5) and not isinstance(inp.shape[1], int):
        shape[1] = num_frames  # (batch, T, ...) with dynamic T: warm up at the model's own T
    dtype = np.float16 if inp.type == "tensor(float16)" else np.float32
    session.run(None, {inp.name: np.zeros(shape, dtype=dtype)})


def create_session_from_bytes(model: bytes | str, provider: str = "auto", warmup: bool = True,
                              num_frames: int = 1) -> tuple[Any, list[str]]:
    import onnxruntime as ort

    chain = _resolve(provider)
    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # Idle intra-op threads sleep instead of spinning: the live pipeline's capture, tracking and
    # flow threads need those cores (measured: ViT-B/384 2.5 s -> 2.1 s per 2 frames on a busy 2-core box).
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    try:
        session = ort.InferenceSession(model, options, providers=_provider_entries(chain))
    except Exception as exc:
        raise SlsttError(f"onnxruntime cannot load the model ({first_line(exc)})") from None
    used = [SHORT_NAMES.get(p, p) for p in session.get_providers()]
    if provider not in ("auto", "cpu") and provider not in used:
        raise SlsttError(f"provider {provider} could not run this model (got {', '.join(used)}); use --provider auto")
    if warmup:
        _warmup(session, num_frames)
    return session, used


def create_session(path: str | Path, provider: str = "auto", warmup: bool = True) -> tuple[Any, list[str]]:
    """(onnxruntime session, short names of the providers it really uses), warmed up once."""
    path = Path(path)
    if not path.is_file():
        raise SlsttError(f"ONNX model not found: {path}; export one with `slstt export onnx`")
    session, used = create_session_from_bytes(str(path), provider, warmup=False)
    if warmup:
        _warmup(session, _metadata_T(session))
    return session, used


def _metadata_T(session: Any) -> int:
    try:
        return max(1, int(session.get_modelmeta().custom_metadata_map.get("T", 1)))
    except ValueError:
        return 1


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)


class OnnxClassifier:
    """An exported SLSTT model: predict(flows (B, T, 3, S, S) float32, already normalised) -> probs (B, C)."""

    def __init__(self, path: str | Path, provider: str = "auto", warmup: bool = True):
        from slstt.config import ModelConfig, PreprocessConfig
        from slstt.export.metadata import check_compatible, parse_metadata

        self.path = Path(path)
        self.session, self.providers = create_session(self.path, provider, warmup=False)
        self.metadata = parse_metadata(self.session.get_modelmeta().custom_metadata_map, str(self.path))
        inp, out = self.session.get_inputs()[0], self.session.get_outputs()[0]
        check_compatible(self.metadata, input_shape=inp.shape, output_size=out.shape[-1], where=str(self.path))
        if self.metadata.get("part", "full") != "full":
            raise SlsttError(f"{self.path} is the {self.metadata['part']} part; load the full <stem>.onnx model")
        self.preprocess = PreprocessConfig.from_dict(self.metadata["preprocess_config"])
        self.model_config = ModelConfig.from_dict(self.metadata["model_config"])
        self.labels: list[str] = list(self.metadata["labels"])
        self.num_frames = self.preprocess.num_frames
        self.input_size = self.preprocess.input_size
        self.dynamic_time = bool(self.metadata.get("dynamic_time"))
        self.dtype = self.metadata.get("dtype", "fp32")
        self._input_name = inp.name
        self._input_dtype = np.float16 if inp.type == "tensor(float16)" else np.float32
        self._parts: dict[str, Any] = {}
        self._provider = provider
        if warmup:
            _warmup(self.session, self.num_frames)

    def __repr__(self) -> str:
        return (f"OnnxClassifier({self.path.name}, T={self.num_frames}, {self.input_size}px, "
                f"{len(self.labels)} classes, {self.dtype}, providers={self.providers})")

    def _check_input(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x)
        S = self.input_size
        if x.ndim == 4:
            x = x[None]
        if x.ndim != 5 or x.shape[2:] != (3, S, S):
            raise SlsttError(f"input shape {tuple(x.shape)}; this model takes (batch, T, 3, {S}, {S})")
        if x.shape[1] != self.num_frames and not self.dynamic_time:
            raise SlsttError(f"input has T={x.shape[1]} frames but this model was exported for T={self.num_frames}")
        return np.ascontiguousarray(x, dtype=self._input_dtype)

    def logits(self, x: np.ndarray) -> np.ndarray:
        out = self.session.run(None, {self._input_name: self._check_input(x)})[0]
        return np.asarray(out, dtype=np.float32)

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Softmax probabilities (B, C) float32, columns in `labels` order."""
        return softmax(self.logits(x))

    # ---- optional streaming parts (<stem>.encoder.onnx / <stem>.head.onnx from --split) ------
    def _part(self, part: str) -> Any:
        if part not in self._parts:
            from slstt.export.metadata import parse_metadata

            path = self.path.with_name(f"{self.path.stem}.{part}.onnx")
            if not path.is_file():
                raise SlsttError(f"{path} not found; re-export with `slstt export onnx --split`")
            session, _ = create_session(path, self._provider, warmup=False)
            meta = parse_metadata(session.get_modelmeta().custom_metadata_map, str(path))
            if meta.get("export_id") != self.metadata.get("export_id"):
                raise SlsttError(f"{path} comes from another export than {self.path.name}; re-export with --split")
            self._parts[part] = session
        return self._parts[part]

    @property
    def has_parts(self) -> bool:
        return all(self.path.with_name(f"{self.path.stem}.{p}.onnx").is_file() for p in ("encoder", "head"))

    def encode(self, frames: np.ndarray) -> np.ndarray:
        """frames (N, 3, S, S) float32 normalised -> features (N, D)."""
        session = self._part("encoder")
        inp = session.get_inputs()[0]
        x = np.ascontiguousarray(frames, dtype=np.float16 if inp.type == "tensor(float16)" else np.float32)
        return np.asarray(session.run(None, {inp.name: x})[0], dtype=np.float32)

    def aggregate(self, features: np.ndarray) -> np.ndarray:
        """features (B, T, D) -> logits (B, C)."""
        session = self._part("head")
        inp = session.get_inputs()[0]
        x = np.ascontiguousarray(features, dtype=np.float16 if inp.type == "tensor(float16)" else np.float32)
        return np.asarray(session.run(None, {inp.name: x})[0], dtype=np.float32)
