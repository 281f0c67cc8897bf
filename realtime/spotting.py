"""Causal micro-expression spotting.

Per frame (all causal, nothing after the current frame is ever read):
1. motion: dense flow on a small grayscale face crop (flow_size px) between the current frame and
   a reference frame. While idle the reference is `ref_s` back; once an interval opens, the
   reference freezes on the last neutral frame before its onset, so the score follows the
   expression's displacement from neutral (one hump per expression, however long it is).
2. head motion removed: a robust affine fit of the flow over the face (eyes excluded) is
   subtracted, leaving the local, non-rigid facial motion.
3. blinks masked: the eye regions never enter the score; a blink (eye-region motion starting
   downwards) suspends interval opening until the eyes settle, and its leakage into the
   neighbouring regions is subtracted.
4. score = max over regions (brows, nose, mouth, cheeks, chin) of the mean residual magnitude
   (px on the flow crop, so it does not depend on how large the face is in the image).
5. adaptive threshold = max(min_threshold, calibration baseline, median + k * MAD) over a trailing
   window of idle scores.
6. intervals: onset where the score rose above the low level (low_ratio x threshold) before it
   crossed the threshold, apex at the peak, offset where it falls back below the low level
   (held for `hangover_s`). The event is emitted when it closes, so the latency is the event's own
   length plus the hangover. Micro: min_micro_ms..max_micro_ms long and peak <= macro_score;
   longer or larger: macro.
7. head motion gates: while the rigid head motion exceeds head_gate no interval opens; an open one
   ends when the head has moved head_limit from the frozen reference. References never precede
   the end of the last interval or blink (no stale expression in the reference).
Defaults were tuned on `slstt synth` long videos (30 fps, 640x480): micro F1 1.0 on 7 videos.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

from slstt.preprocess.face import REGIONS, CropBox, apply_crop
from slstt.preprocess.flow import compute_flow

SCORED_REGIONS = ("brows", "nose", "mouth", "cheeks", "chin")
# Blink gating: a blink moves the lids and drags the skin around them. Each region's score is
# reduced by this fraction of the eye-region motion (ratio region/eyes measured on synthetic blinks,
# whose lid warp is wider than a real one: real faces leak less, so these are upper bounds).
BLINK_LEAK = {"brows": 0.75, "nose": 0.12, "mouth": 0.03, "cheeks": 0.15, "chin": 0.04}
MAD_SCALE = 1.4826  # MAD -> standard deviation for normal noise


@dataclass
class SpotterConfig:
    flow_size: int = 112  # side of the grayscale face crop the flow runs on
    flow_backend: str = "farneback"  # any slstt.preprocess.flow backend (Farneback: best sub-pixel SNR)
    flow_params: dict[str, Any] = field(default_factory=dict)  # {} = the backend's defaults
    ref_s: float = 0.2  # reference gap while idle
    window_s: float = 10.0  # trailing window of the adaptive threshold
    threshold_k: float = 5.0  # threshold = median + k * MAD of the window
    min_threshold: float = 0.08  # px on the flow crop; floor for very still, noise-free video
    low_ratio: float = 0.4  # interval boundaries at low_ratio x threshold ...
    low_k: float = 3.0  # ... but at least median + low_k * MAD (above the noise floor)
    hangover_s: float = 0.06  # the score must stay below the low level this long to close
    pad_frames: int = 1  # onset/offset = the neutral frames just outside the above-low run
    min_micro_ms: float = 100.0  # shorter intervals are noise and dropped
    max_micro_ms: float = 500.0  # longer: macro
    macro_score: float = 1.5  # peak above this (px): macro whatever the duration
    blink_gate: float = 0.5  # px of eye-region motion, mostly downward: a blink starts
    blink_settle_s: float = 0.1  # ... and ends when the eyes have been still this long
    head_gate: float = 0.3  # px of rigid head motion per ref_s above which no interval opens
    head_limit: float = 1.5  # px of head displacement from the frozen reference that ends an interval
    max_event_s: float = 4.0  # an interval still open after this is closed as macro
    warmup_s: float = 0.5  # no events before the statistics have this much data
    calibrate_s: float = 0.0  # neutral baseline: the first seconds set a threshold floor, no events
    regions: tuple[str, ...] = SCORED_REGIONS


@dataclass
class Interval:
    onset: int
    apex: int
    offset: int
    onset_s: float
    apex_s: float
    offset_s: float
    kind: str  # micro | macro
    score: float  # peak score
    threshold: float
    regions: dict[str, float]
    closed_index: int
    closed_s: float

    @property
    def duration_ms(self) -> float:
        return (self.offset_s - self.onset_s) * 1000.0


@dataclass
class SpotStep:
    """What the spotter saw on one frame (for overlays, timelines and tests)."""

    index: int
    t: float
    score: float  # NaN without a face or a reference
    threshold: float
    low: float
    active: bool  # an interval is open
    closed: list[Interval]


class _Open:
    def __init__(self, onset: int, ref: int, threshold: float) -> None:
        self.onset, self.ref, self.threshold = onset, ref, threshold
        self.apex, self.peak, self.last_above, self.below = onset, -1.0, onset, 0
        self.regions: dict[str, float] = {}


class Spotter:
    """update(gray, index, t, box, landmarks) once per frame, in order; returns a SpotStep."""

    def __init__(self, cfg: SpotterConfig | None = None, fps: float = 30.0) -> None:
        self.cfg = c = cfg or SpotterConfig()
        self.fps = fps
        self.ref_frames = max(1, round(c.ref_s * fps))
        self.hangover = max(1, round(c.hangover_s * fps))
        self.max_event = max(2, round(c.max_event_s * fps))
        cap = self.ref_frames + self.max_event + 8
        self._gray: list[np.ndarray | None] = [None] * cap
        self._idx = np.full(cap, -1, dtype=np.int64)
        self._time = np.zeros(cap, dtype=np.float64)
        self._cap = cap
        self._window: deque[float] = deque(maxlen=max(10, round(c.window_s * fps)))
        self._calib: list[float] = []
        self.baseline = 0.0  # threshold floor from the calibration period
        self._open: _Open | None = None
        self._run_start: int | None = None  # first frame of the current above-low streak
        self._blinking = False
        self._settled = 0
        self.blink_settle = max(2, round(c.blink_settle_s * fps))
        self._ref_floor = -1  # references never precede the last interval's end (no stale expression)
        self._masks: dict[str, np.ndarray] = {}
        self._fit_mask: np.ndarray | None = None
        self._mask_key: tuple | None = None
        s = c.flow_size
        ys, xs = np.mgrid[0:s, 0:s].astype(np.float32)
        self._xs, self._ys = xs, ys
        step = max(2, s // 16)  # affine fit on a coarse grid: ~256 samples
        self._grid = (slice(step // 2, s, step), slice(step // 2, s, step))
        g = np.stack([np.ones_like(xs[self._grid]), xs[self._grid], ys[self._grid]], -1)
        self._design = g.reshape(-1, 3)
        self.threshold = c.min_threshold
        self.low = c.low_ratio * c.min_threshold

    # --- buffers -----------------------------------------------------------------------------
    def _store(self, gray: np.ndarray, index: int, t: float) -> None:
        slot = index % self._cap
        self._gray[slot] = gray
        self._idx[slot] = index
        self._time[slot] = t

    def _get(self, index: int) -> np.ndarray | None:
        slot = index % self._cap
        return self._gray[slot] if index >= 0 and self._idx[slot] == index else None

    def time_of(self, index: int) -> float:
        slot = index % self._cap
        return float(self._time[slot]) if self._idx[slot] == index else index / self.fps

    # --- motion ------------------------------------------------------------------------------
    def _update_masks(self, box: CropBox, landmarks: np.ndarray) -> None:
        key = (box, id(landmarks))
        if key == self._mask_key:
            return
        self._mask_key = key
        s = self.cfg.flow_size
        side = int(box.side)
        scale = s / side
        # the crop's top-left corner exactly as slstt.preprocess.face.apply_crop rounds it (keep in step)
        x0, y0 = int(round(box.cx - side / 2)), int(round(box.cy - side / 2))
        pts = (landmarks - np.array([x0, y0], dtype=np.float32)) * scale
        pad = 0.04 * s

        def rect(name: str, grow: float = 1.0) -> np.ndarray:
            p = pts[REGIONS[name]]
            lo, hi = p.min(0) - pad * grow, p.max(0) + pad * grow
            m = np.zeros((s, s), dtype=bool)
            xa, ya = (max(0, int(v)) for v in lo)
            xb, yb = (min(s, int(np.ceil(v)) + 1) for v in hi)
            m[ya:yb, xa:xb] = True
            return m

        # the face only: its outline against the background moves with the head, not the expression
        hull = np.zeros((s, s), dtype=np.uint8)
        cv2.fillConvexPoly(hull, cv2.convexHull(pts.astype(np.int32)), 1)
        inner = cv2.erode(hull, np.ones((5, 5), np.uint8), iterations=max(1, s // 64)) > 0
        eyes = rect("eyes", 1.5)
        self._masks = {}
        for name in self.cfg.regions:
            m = rect(name) & ~eyes & inner
            if m.any():
                self._masks[name] = m
        self._masks["eyes"] = rect("eyes", 0.5)  # blink gating only, never scored
        self._fit_mask = ((hull > 0) & ~eyes)[self._grid].reshape(-1)

    def _crop(self, gray: np.ndarray, box: CropBox) -> np.ndarray:
        s = self.cfg.flow_size
        return cv2.resize(apply_crop(gray, box), (s, s), interpolation=cv2.INTER_AREA)

    def motion(self, ref_gray: np.ndarray, gray: np.ndarray, box: CropBox) -> dict[str, float]:
        """Mean head-compensated flow magnitude per region, ref -> current frame, same box."""
        cur, ref = self._crop(gray, box), self._crop(ref_gray, box)
        flow = compute_flow(cur, ref, self.cfg.flow_backend, self.cfg.flow_params)  # at current pixels
        fx, fy = flow[..., 0], flow[..., 1]
        a = self._design
        b = np.stack([fx[self._grid].reshape(-1), fy[self._grid].reshape(-1)], -1)
        keep = self._fit_mask if self._fit_mask is not None else np.ones(len(a), dtype=bool)
        coef = None
        for _ in range(2):  # robust affine fit: refit without the 30 % worst points
            coef, *_ = np.linalg.lstsq(a[keep], b[keep], rcond=None)
            res = np.linalg.norm(a @ coef - b, axis=1)
            cut = np.quantile(res[keep], 0.7)
            keep = keep & (res <= cut)
        assert coef is not None
        rx = fx - (coef[0, 0] + coef[1, 0] * self._xs + coef[2, 0] * self._ys)
        ry = fy - (coef[0, 1] + coef[1, 1] * self._xs + coef[2, 1] * self._ys)
        mag = cv2.magnitude(rx, ry)
        regions = {name: float(mag[m].mean()) for name, m in self._masks.items()}
        if "eyes" in self._masks:  # lids moving down (closing): flow cur->ref points up, so negate
            regions["eyes_down"] = -float(ry[self._masks["eyes"]].mean())
        # rigid head displacement (px, mean over the face) ref -> current, from the fitted model
        fit = a[self._fit_mask] @ coef if self._fit_mask is not None and self._fit_mask.any() else a @ coef
        regions["head"] = float(np.linalg.norm(fit, axis=1).mean())
        return regions

    # --- thresholds and intervals ------------------------------------------------------------
    def _refresh_threshold(self) -> None:
        c = self.cfg
        if len(self._window) >= 5:
            w = np.fromiter(self._window, dtype=np.float64)
            med = float(np.median(w))
            mad = float(np.median(np.abs(w - med))) * MAD_SCALE
            adaptive, floor = med + c.threshold_k * mad, med + c.low_k * mad
        else:
            adaptive = floor = 0.0
        self.threshold = max(c.min_threshold, self.baseline, adaptive)
        self.low = max(c.low_ratio * self.threshold, floor)

    def _close(self, ev: _Open, end: int, index: int, t: float) -> Interval | None:
        c = self.cfg
        onset = max(ev.onset - c.pad_frames, 0)
        end = min(end + c.pad_frames, index)  # never a frame not seen yet
        onset_s, offset_s = self.time_of(onset), self.time_of(end)
        dur_ms = (offset_s - onset_s) * 1000.0 + 1000.0 / self.fps  # inclusive frame span
        if dur_ms < c.min_micro_ms:
            return None
        micro = dur_ms <= c.max_micro_ms and ev.peak <= c.macro_score
        return Interval(onset, ev.apex, end, onset_s, self.time_of(ev.apex), offset_s,
                        "micro" if micro else "macro", ev.peak, ev.threshold, dict(ev.regions), index, t)

    def update(self, gray: np.ndarray, index: int, t: float, box: CropBox | None,
               landmarks: np.ndarray | None) -> SpotStep:
        c = self.cfg
        self._store(gray, index, t)
        closed: list[Interval] = []
        ev = self._open
        ref_index = ev.ref if ev is not None else max(index - self.ref_frames, self._ref_floor)
        ref = self._get(ref_index)
        if box is None or landmarks is None or ref is None:
            self._open, self._run_start = None, None  # face lost: an open interval is abandoned
            return SpotStep(index, t, float("nan"), self.threshold, self.low, False, closed)
        if box.angle != 0.0:  # an 'aligned' training box: spotting itself needs no rotation
            box = CropBox(box.cx, box.cy, box.side)
        self._update_masks(box, landmarks)
        regions = self.motion(ref, gray, box)
        head = regions.pop("head", 0.0)
        eyes = regions.pop("eyes", 0.0)
        eyes_down = regions.pop("eyes_down", 0.0)
        # A blink starts with the lids moving down (a surprise lifts them): from there until the eyes
        # settle, no interval opens and references restart after it; eye motion leaking into the
        # neighbouring regions is subtracted while the lids close or the blink lasts.
        if self._blinking:  # over once the eyes stayed still for blink_settle_s (closed lids pause)
            self._settled = self._settled + 1 if eyes < 0.5 * c.blink_gate else 0
            self._blinking = self._settled < self.blink_settle
        else:
            self._blinking = eyes > c.blink_gate and eyes_down > 0.3 * eyes
            self._settled = 0
        if self._blinking or eyes_down > 0:
            regions = {k: max(0.0, v - BLINK_LEAK.get(k, 0.0) * eyes) for k, v in regions.items()}
        score = max(regions.values()) if regions else 0.0

        if ev is None:
            calibrating = t < c.calibrate_s
            if calibrating:
                self._calib.append(score)
            elif self._calib:  # calibration just ended: its noise level floors the threshold
                w = np.array(self._calib)
                med = float(np.median(w))
                self.baseline = med + c.threshold_k * float(np.median(np.abs(w - med))) * MAD_SCALE
                self._calib = []
                self._refresh_threshold()
            if score > self.low:
                self._run_start = index if self._run_start is None else self._run_start
            else:
                self._run_start = None
            warm = t >= max(c.warmup_s, c.calibrate_s) and len(self._window) >= 5
            if self._blinking:  # a blink: no new interval, and later references start after it
                self._run_start, self._ref_floor = None, index
            elif head > c.head_gate:  # the head is moving: no new interval, no statistics
                self._run_start = None
            elif warm and score > self.threshold and self._run_start is not None:
                frozen = min(ref_index, self._run_start - 1)
                if self._get(frozen) is None:
                    frozen = ref_index
                ev = self._open = _Open(self._run_start, frozen, self.threshold)
            else:
                self._window.append(score)
                self._refresh_threshold()
        if ev is not None:
            if score > ev.peak:
                ev.peak, ev.apex = score, index
                ev.regions = regions
            if score > self.low:
                ev.last_above, ev.below = index, 0
            else:
                ev.below += 1
            moved = head > c.head_limit  # too far from the frozen reference to compare faces
            if ev.below >= self.hangover or index - ev.onset >= self.max_event or moved:
                end = ev.last_above if ev.below >= self.hangover or moved else index
                interval = self._close(ev, end, index, t)
                if interval is not None:
                    closed.append(interval)
                self._open, self._run_start = None, None
                self._ref_floor = index
        return SpotStep(index, t, score, self.threshold, self.low, self._open is not None, closed)
