"""Face tracking for the live pipeline: MediaPipe FaceLandmarker (VIDEO mode, via
slstt.preprocess.face), One-Euro smoothing of the landmarks, and the training crop box.

Speed: the landmarker (~8 ms per call on one CPU core) runs on every `every`-th frame only; the
smoothed landmarks and the box are carried unchanged between runs. That is safe for spotting
because the spotter crops the reference and the current frame with the same box and removes
residual head motion from the flow itself."""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from slstt.errors import SlsttError
from slstt.preprocess.face import CropBox, FaceLandmarker, face_box


@dataclass
class TrackerConfig:
    every: int = 3  # run the landmarker on every k-th frame (1 = every frame)
    recipe: str = "slstt"  # crop recipe, the same one training used
    min_cutoff: float = 1.5  # One-Euro filter: Hz of smoothing at rest (lower = smoother)
    beta: float = 0.05  # One-Euro filter: how fast the cutoff rises with speed (lower = less lag)
    lost_after_s: float = 0.5  # forget the face after this long without a detection
    warn_after_s: float = 3.0  # emit a "no face" warning after this long without a face
    min_confidence: float = 0.5


class OneEuroFilter:
    """One-Euro filter (Casiez et al. 2012) over an array of values, e.g. (478, 2) landmarks."""

    def __init__(self, min_cutoff: float, beta: float, d_cutoff: float = 1.0) -> None:
        self.min_cutoff, self.beta, self.d_cutoff = min_cutoff, beta, d_cutoff
        self.x: np.ndarray | None = None
        self.dx: np.ndarray | None = None
        self.t: float | None = None

    @staticmethod
    def _alpha(cutoff: np.ndarray | float, dt: float) -> np.ndarray | float:
        tau = 1.0 / (2 * math.pi * cutoff)
        return 1.0 / (1.0 + tau / dt)

    def reset(self) -> None:
        self.x = self.dx = self.t = None

    def __call__(self, x: np.ndarray, t: float) -> np.ndarray:
        if self.x is None or self.t is None or t <= self.t:
            self.x, self.dx, self.t = x.astype(np.float32).copy(), np.zeros_like(x, dtype=np.float32), t
            return self.x
        dt = t - self.t
        dx = (x - self.x) / dt
        a_d = self._alpha(self.d_cutoff, dt)
        self.dx = self.dx + a_d * (dx - self.dx)
        cutoff = self.min_cutoff + self.beta * np.abs(self.dx)
        a = self._alpha(cutoff, dt)
        self.x = (self.x + a * (x - self.x)).astype(np.float32)
        self.t = t
        return self.x


@dataclass
class FaceState:
    landmarks: np.ndarray  # (478, 2) smoothed pixel coordinates
    box: CropBox  # crop box of the smoothed landmarks (training recipe)
    detected_index: int  # frame of the last landmarker detection
    fresh: bool  # landmarks were updated on this frame
    depth: np.ndarray | None = None  # (478,) MediaPipe's relative depth of the last detection (px, nearer = smaller)


def tracking_box(landmarks: np.ndarray, recipe: str) -> CropBox | None:
    """The crop box of these landmarks (face_box: the training recipe's, upright for a face turned in
    the frame, so a sideways face is kept, not lost); None for degenerate landmarks."""
    try:
        return face_box(landmarks, recipe)
    except SlsttError:
        return None


class FaceTracker:
    """update(image, index, t) -> FaceState | None. Keeps a short per-frame history of boxes so
    the recognizer can look up the box at an event's apex frame."""

    def __init__(self, cfg: TrackerConfig | None = None, face_model: str | Path | None = None,
                 history: int = 600) -> None:
        self.cfg = cfg or TrackerConfig()
        self.landmarker = FaceLandmarker(face_model, video=True, min_confidence=self.cfg.min_confidence)
        self.filter = OneEuroFilter(self.cfg.min_cutoff, self.cfg.beta)
        self.state: FaceState | None = None
        self.last_seen_t: float | None = None
        self.no_face_since: float | None = 0.0
        self.detections = 0
        self.calls = 0
        self._boxes: deque[tuple[int, CropBox]] = deque(maxlen=history)

    def update(self, image: np.ndarray, index: int, t: float) -> FaceState | None:
        due = self.state is None or index - self.state.detected_index >= self.cfg.every
        if self.state is not None and not due:
            self.state.fresh = False
            self._boxes.append((index, self.state.box))
            return self.state
        self.calls += 1
        points = self.landmarker.detect(image, int(round(t * 1000)))
        if points is None:
            if self.last_seen_t is not None and t - self.last_seen_t > self.cfg.lost_after_s:
                self.state, self.last_seen_t = None, None
                self.filter.reset()
                self.no_face_since = t
            if self.state is not None:  # brief miss: carry the last state, try again next frame
                self.state.fresh = False
                self._boxes.append((index, self.state.box))
            return self.state
        self.detections += 1
        smooth = self.filter(points, t)
        box = tracking_box(smooth, self.cfg.recipe)
        if box is None:  # degenerate landmarks: keep the previous state
            return self.state
        self.state = FaceState(smooth, box, index, True, self.landmarker.last_depth)
        self.last_seen_t, self.no_face_since = t, None
        self._boxes.append((index, box))
        return self.state

    def no_face_for(self, t: float) -> float:
        """Seconds without a face (0 while one is tracked)."""
        return 0.0 if self.no_face_since is None else t - self.no_face_since

    def box_at(self, index: int) -> CropBox | None:
        """The box used on frame `index` (nearest earlier frame if that one had none)."""
        best = None
        for i, box in tuple(self._boxes):  # a copy: the tracking thread may be appending
            if i <= index:
                best = box
            else:
                break
        return best

    def close(self) -> None:
        self.landmarker.close()
