"""Dense optical flow (onset -> frame), its colour encoding and the network input tensor."""

from __future__ import annotations

import threading
from typing import Any

import cv2
import numpy as np

from slstt.config import FARNEBACK_PAPER, PreprocessConfig
from slstt.errors import SlsttError

DIS_PRESETS = {
    "ultrafast": cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST,
    "fast": cv2.DISOPTICAL_FLOW_PRESET_FAST,
    "medium": cv2.DISOPTICAL_FLOW_PRESET_MEDIUM,
}
# DIS parameters accepted besides "preset" (snake_case name -> setter).
_DIS_SETTERS = {
    "finest_scale": "setFinestScale",
    "coarsest_scale": "setCoarsestScale",
    "patch_size": "setPatchSize",
    "patch_stride": "setPatchStride",
    "gradient_descent_iterations": "setGradientDescentIterations",
    "variational_refinement_iterations": "setVariationalRefinementIterations",
    "variational_refinement_alpha": "setVariationalRefinementAlpha",
    "variational_refinement_delta": "setVariationalRefinementDelta",
    "variational_refinement_gamma": "setVariationalRefinementGamma",
    "use_mean_normalization": "setUseMeanNormalization",
    "use_spatial_propagation": "setUseSpatialPropagation",
}
_TVL1_PARAMS = ("tau", "lambda_", "theta", "nscales", "warps", "epsilon", "innnerIterations",
                "outerIterations", "scaleStep", "gamma", "medianFiltering")

# DIS / TV-L1 objects are costly to create and not thread-safe: one per thread and setting.
_solvers = threading.local()


def _solver(backend: str, params: dict[str, Any]) -> Any:
    cache = _solvers.__dict__.setdefault("cache", {})
    key = (backend, tuple(sorted((k, repr(v)) for k, v in params.items())))
    if key in cache:
        return cache[key]
    if backend == "dis":
        preset = params.get("preset", "medium")
        if preset not in DIS_PRESETS:
            raise SlsttError(f"flow_params.preset: unknown DIS preset {preset!r}; choose {', '.join(DIS_PRESETS)}")
        solver = cv2.DISOpticalFlow.create(DIS_PRESETS[preset])
        for name, value in params.items():
            if name == "preset":
                continue
            if name not in _DIS_SETTERS:
                raise SlsttError(f"flow_params: unknown DIS parameter {name!r}; known: preset, {', '.join(_DIS_SETTERS)}")
            getattr(solver, _DIS_SETTERS[name])(value)
    else:  # tvl1
        optflow = getattr(cv2, "optflow", None)
        if optflow is None:
            raise SlsttError("flow backend tvl1 needs cv2.optflow: install opencv-contrib-python "
                             "(not opencv-python) or use --flow farneback|dis")
        unknown = sorted(set(params) - set(_TVL1_PARAMS))
        if unknown:
            raise SlsttError(f"flow_params: unknown TV-L1 parameter(s) {', '.join(unknown)}; known: {', '.join(_TVL1_PARAMS)}")
        solver = optflow.DualTVL1OpticalFlow_create(**params)
    cache[key] = solver
    return solver


def compute_flow(ref_gray: np.ndarray, gray: np.ndarray, backend: str = "farneback",
                 params: dict[str, Any] | None = None) -> np.ndarray:
    """Dense flow from ref_gray to gray (both uint8 HxW): (H, W, 2) float32, x then y."""
    if ref_gray.shape != gray.shape or ref_gray.ndim != 2:
        raise SlsttError(f"compute_flow: need two equal 2-D grayscale images, got {ref_gray.shape} and {gray.shape}")
    params = dict(params or {})
    ref_gray, gray = np.ascontiguousarray(ref_gray), np.ascontiguousarray(gray)  # DIS needs it
    if backend == "farneback":
        unknown = sorted(set(params) - set(FARNEBACK_PAPER))
        if unknown:
            raise SlsttError(f"flow_params: unknown Farneback parameter(s) {', '.join(unknown)}; known: {', '.join(FARNEBACK_PAPER)}")
        p = {**FARNEBACK_PAPER, **params}
        try:
            return cv2.calcOpticalFlowFarneback(ref_gray, gray, None, p["pyr_scale"], p["levels"], p["winsize"],
                                                p["iterations"], p["poly_n"], p["poly_sigma"], p["flags"])
        except cv2.error as exc:  # e.g. an image smaller than the window: one line, not an OpenCV dump
            raise SlsttError(f"Farneback flow failed on {ref_gray.shape[1]}x{ref_gray.shape[0]} images with {p}: "
                             f"{_cv_message(exc)}; check flow_params and the crop size") from None
    if backend in ("dis", "tvl1"):
        try:
            return _solver(backend, params).calc(ref_gray, gray, None)
        except cv2.error as exc:
            raise SlsttError(f"{backend} flow failed on {ref_gray.shape[1]}x{ref_gray.shape[0]} images: "
                             f"{_cv_message(exc)}; use larger crops (--flow-size) or smaller patches") from None
    raise SlsttError(f"unknown flow backend {backend!r}; choose farneback, dis or tvl1")


def _cv_message(exc: cv2.error) -> str:
    """The one informative line of an OpenCV error."""
    text = str(exc).strip().splitlines()
    line = next((t for t in text if "error:" in t), text[-1] if text else "OpenCV error")
    return line.split("error:", 1)[-1].strip()


def encode_flow(flow: np.ndarray, encoding: str = "hsv", uvm_scale: float = 8.0) -> np.ndarray:
    """Flow (H, W, 2) -> (H, W, 3) uint8 image in RGB order.

    'hsv' is spec 1.4 exactly as the authors computed it, including numpy's truncation when
    float values are stored into the uint8 HSV image. The authors converted with
    cv2.COLOR_HSV2BGR, saved with cv2 and read the file back with PIL as RGB, so the network
    saw the true-colour image in RGB order: that is cv2.COLOR_HSV2RGB here.
    'uvm': u and v around 128 (uvm_scale px -> +-127), magnitude (uvm_scale px -> 255)."""
    fx, fy = flow[..., 0], flow[..., 1]
    if encoding == "hsv":
        mag, ang = cv2.cartToPolar(fx, fy, angleInDegrees=True)
        hsv = np.empty(flow.shape[:2] + (3,), dtype=np.uint8)
        hsv[..., 0] = ang / 2
        hsv[..., 1] = 255
        hsv[..., 2] = cv2.normalize(mag, None, 0, 255, cv2.NORM_MINMAX)
        return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
    if encoding == "uvm":
        k = 127.0 / uvm_scale
        out = np.empty(flow.shape[:2] + (3,), dtype=np.float32)
        out[..., 0] = fx * k + 128.0
        out[..., 1] = fy * k + 128.0
        out[..., 2] = cv2.magnitude(fx, fy) * (255.0 / uvm_scale)
        np.rint(out, out=out)
        np.clip(out, 0, 255, out=out)
        return out.astype(np.uint8)
    raise SlsttError(f"unknown flow encoding {encoding!r}; choose hsv or uvm")


def flow_images_to_input(images: np.ndarray, cfg: PreprocessConfig) -> np.ndarray:
    """(..., S, S, 3) uint8 flow images -> (..., 3, S, S) float32, scaled to 0..1 and normalised
    with cfg.mean / cfg.std (per-channel lookup table: one pass, no float intermediate)."""
    s = cfg.input_size
    if images.dtype != np.uint8 or images.shape[-3:] != (s, s, 3):
        raise SlsttError(f"flow_images_to_input: expected (..., {s}, {s}, 3) uint8 images for input_size {s}, "
                         f"got {images.shape} {images.dtype}")
    levels = np.arange(256, dtype=np.float64) / 255.0
    out = np.empty(images.shape[:-3] + (3, s, s), dtype=np.float32)
    for c in range(3):
        lut = ((levels - cfg.mean[c]) / cfg.std[c]).astype(np.float32)
        np.take(lut, images[..., c], out=out[..., c, :, :], mode="clip")
    return out
