"""Per-sample preprocessing time for each flow backend (face + crop + T flows + encode + resize).

A synthetic 640x480 clip made from the packaged astronaut photo, scaled so the face crop is
~280 px (a typical webcam / CASME II face). Run by hand:

    python benchmarks/bench_preprocess.py [--repeats 3] [--sizes 384 224]
"""

from __future__ import annotations

import argparse
import math
import statistics
import time

import cv2
import numpy as np

from slstt.config import PreprocessConfig
from slstt.preprocess import (
    FaceLandmarker,
    clip_to_flow_images,
    default_face_model_path,
    flow_images_to_input,
)

BACKENDS = {  # label -> (backend, params)
    "farneback (paper)": ("farneback", None),
    "dis medium": ("dis", {"preset": "medium"}),
    "dis fast": ("dis", {"preset": "fast"}),
    "dis ultrafast": ("dis", {"preset": "ultrafast"}),
    "tvl1 (defaults)": ("tvl1", {}),
}


def make_clip(num_frames: int = 20, peak: int = 10, scale: float = 2.45) -> list[np.ndarray]:
    """640x480 frames, face crop ~280 px, the mouth region moving right up to 4 px at `peak`."""
    photo = cv2.imread(str(default_face_model_path().parent / "astronaut.png"))
    big = cv2.resize(photo, None, fx=scale, fy=scale, interpolation=cv2.INTER_CUBIC)
    cx, cy = int(223 * scale), int(131 * scale)
    base = big[cy - 240:cy + 240, cx - 320:cx + 320]
    ys, xs = np.mgrid[0:480, 0:640].astype(np.float32)
    mouth = (320.0, 240.0 + 19 * scale)
    bump = np.exp(-((xs - mouth[0]) ** 2 + (ys - mouth[1]) ** 2) / (2 * (12 * scale) ** 2))
    frames = []
    for t in range(num_frames):
        shift = 4.0 * math.sin(math.pi * min(t, 2 * peak - t) / (2 * peak)) if t <= 2 * peak else 0.0
        frames.append(cv2.remap(base, xs - shift * bump, ys, cv2.INTER_LINEAR))
    return frames


def time_sample(frames, cfg, landmarker, repeats: int) -> tuple[float, float, int]:
    """Median ms per sample for clip_to_flow_images and for flow_images_to_input."""
    load = frames.__getitem__
    clip = clip_to_flow_images(load, len(frames), 0, 10, len(frames) - 1, cfg, landmarker, fps=200.0)  # warm-up
    pipeline, to_input = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        clip = clip_to_flow_images(load, len(frames), 0, 10, len(frames) - 1, cfg, landmarker, fps=200.0)
        t1 = time.perf_counter()
        flow_images_to_input(clip.images, cfg)
        t2 = time.perf_counter()
        pipeline.append((t1 - t0) * 1000)
        to_input.append((t2 - t1) * 1000)
    return statistics.median(pipeline), statistics.median(to_input), clip.box.side


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--sizes", type=int, nargs="+", default=[384, 224])
    parser.add_argument("--skip-tvl1", action="store_true", help="TV-L1 takes seconds per sample")
    args = parser.parse_args()

    frames = make_clip()
    with FaceLandmarker() as landmarker:
        t0 = time.perf_counter()
        for _ in range(10):
            landmarker.detect(frames[10])
        detect_ms = (time.perf_counter() - t0) * 100
        print(f"cv2 threads {cv2.getNumThreads()}, frame 640x480, T=11, face detect {detect_ms:.1f} ms/frame")
        print(f"{'backend':<20}{'input':>6}{'crop':>6}{'ms/sample':>11}{'x farneback':>13}{'to_input ms':>13}")
        for size in args.sizes:
            reference = None
            for label, (backend, params) in BACKENDS.items():
                if backend == "tvl1" and args.skip_tvl1:
                    continue
                cfg = PreprocessConfig(flow=backend, input_size=size)
                if params is not None:
                    cfg = cfg.replace(flow_params=params)
                repeats = 1 if backend == "tvl1" else args.repeats
                ms, input_ms, side = time_sample(frames, cfg, landmarker, repeats)
                reference = reference or ms
                print(f"{label:<20}{size:>6}{side:>6}{ms:>11.1f}{ms / reference:>13.2f}{input_ms:>13.1f}")


if __name__ == "__main__":
    main()
