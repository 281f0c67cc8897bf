"""onnxruntime sessions for exported models: pick the fastest provider that really works here,
warm it up, and wrap it in a classifier that knows its labels and preprocessing.

onnxruntime-gpu lists CUDA/TensorRT even on machines where their libraries or the GPU are missing;
asking for them then prints errors and silently falls back. So usability is probed once, quietly,
on a one-node model, and a session is accepted only if it really holds the provider asked for.
Before any GPU session the pip-installed CUDA/cuDNN/TensorRT libraries are loaded into the process
(slstt.gpu.preload_gpu_libraries; torch is not imported for that), and a provider that cannot run
says why in one line (provider_status / provider_reason / check_provider; `slstt doctor`).
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
    """Mute onnxruntime's C++ logger and capture its Python 'EP Error ... falling back' print."""
    import onnxruntime as ort

    ort.set_default_logger_severity(4)
    printed = io.StringIO()
    try:
        with contextlib.redirect_stdout(printed):
            yield printed
    finally:
        ort.set_default_logger_severity(ORT_DEFAULT_SEVERITY)


def _gpu_device_missing() -> str | None:
    """Cheap reason why no GPU provider can work, without touching CUDA."""
    if sys.platform.startswith("linux") and not any(Path("/dev").glob("nvidia[0-9]*")):
        return "no NVIDIA GPU device found"
    return None


@functools.cache
def provider_status(name: str) -> tuple[bool, str]:
    """(usable, reason) for 'tensorrt' | 'cuda' | 'cpu'; probed once per process.

    The reason is the first thing in the way, in order: the onnxruntime build, the provider
    library's first missing dependency after the preload (e.g. "NVIDIA driver (libcuda.so.1)
    absent", "TensorRT 10 (libnvinfer.so.10) not installed"), the GPU device, a real session."""
    import onnxruntime as ort

    from slstt.gpu import library_problem

    if name not in PROVIDER_NAMES:
        raise SlsttError(f"unknown provider {name!r}; choose one of {', '.join(CHOICES)}")
    full = PROVIDER_NAMES[name]
    if name == "cpu":
        return True, "always available"
    if full not in ort.get_available_providers():
        return False, f"this onnxruntime build has no {full} (pip install onnxruntime-gpu)"
    problem = library_problem(name)
    if problem:
        return False, problem
    missing = _gpu_device_missing()
    if missing:
        return False, missing
    options = ort.SessionOptions()
    options.log_severity_level = 4
    try:
        with _silenced() as printed:
            session = ort.InferenceSession(_probe_model(), options, providers=[full, "CPUExecutionProvider"])
    except Exception as exc:
        return False, f"session failed: {first_line(exc, 120)}"
    if full not in session.get_providers():
        said = first_line(Exception(printed.getvalue()), 140) if printed.getvalue().strip() else "no reason given"
        return False, f"onnxruntime fell back to the CPU ({said})"
    return True, "usable"


def provider_reason(name: str) -> str | None:
    """Why 'cuda' | 'tensorrt' cannot run here (one short line for status bars and overlays), or None."""
    usable, reason = provider_status(name)
    return None if usable else reason


def check_provider(name: str, option: str = "--device") -> None:
    """Raise SlsttError (one line) if `name` was asked for explicitly and cannot run here.

    Cheap (no model, no video: about 0.5 s on a CPU machine), so a command calls it before opening
    its source; 'auto' and 'cpu' always pass ('auto' falls back with a logged reason)."""
    if name not in CHOICES:
        raise SlsttError(f"{option} {name!r}: choose one of {', '.join(CHOICES)}")
    if name in ("auto", "cpu"):
        return
    usable, reason = provider_status(name)
    if not usable:
        raise SlsttError(f"{option} {name} is not usable here: {reason}; use {option} auto or cpu "
                         "(`slstt doctor` shows what this machine can run)")


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
    check_provider(provider, "--provider")
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
    if any(name != "cpu" for name in chain):
        from slstt.gpu import preload_gpu_libraries

        preload_gpu_libraries()  # done by the probe already; explicit: no GPU session without it
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
    """The model's T for the warm-up run; a tampered value must not size a huge allocation."""
    from slstt.export.metadata import MAX_FRAMES

    try:
        T = int(session.get_modelmeta().custom_metadata_map.get("T", 1))
    except ValueError:
        return 1
    return T if 1 <= T <= MAX_FRAMES else 1


def _finite(logits: np.ndarray, where: str) -> np.ndarray:
    """NaN/inf logits (damaged weights, a bad input) must never become probabilities or events."""
    if not np.isfinite(logits).all():
        raise SlsttError(f"{where}: the model produced non-finite outputs (NaN/inf) for this input; "
                         "check the input and re-export the model")
    return logits


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)


class OnnxClassifier:
    """An exported SLSTT model: predict(flows (B, T, 3, S, S) float32, already normalised) -> probs (B, C)."""

    def __init__(self, path: str | Path, provider: str = "auto", warmup: bool = True):
        from slstt.export.metadata import check_compatible, parse_metadata

        self.path = Path(path)
        self.session, self.providers = create_session(self.path, provider, warmup=False)
        self.metadata = parse_metadata(self.session.get_modelmeta().custom_metadata_map, str(self.path))
        inp, out = self.session.get_inputs()[0], self.session.get_outputs()[0]
        self.card = check_compatible(self.metadata, input_shape=inp.shape, output_size=out.shape[-1],
                                     where=str(self.path))
        if self.card.export.part != "full":
            raise SlsttError(f"{self.path} is the {self.card.export.part} part; load the full <stem>.onnx model")
        self.preprocess = self.card.preprocess
        self.model_config = self.card.model
        self.labels: list[str] = list(self.card.labels)
        self.num_frames = self.card.num_frames
        self.input_size = self.card.input_size
        self.dynamic_time = self.card.export.dynamic_time
        self.dtype = self.card.export.dtype
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
        return _finite(np.asarray(out, dtype=np.float32), self.path.name)

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
        return _finite(np.asarray(session.run(None, {inp.name: x})[0], dtype=np.float32), self.path.name)
