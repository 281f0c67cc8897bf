"""Causal micro-expression spotting that keeps working while the face moves and talks.

Three parts, each usable and tested on its own:

1. `MotionScorer` (what moved, where): every frame j gets one dense flow from frame j to frame
   j + gap (about 0.27 s later), on a small grayscale crop of the face in frame j's box. The face's
   own movement is modelled and removed first: a robust fit to a coarse flow, quadratic in x, y
   plus a term in MediaPipe's per-landmark depth (a rotating head moves the nose more than the
   cheeks: that parallax is linear in depth), warps the second crop before the fine flow and is
   subtracted after it. A local high-pass (the flow minus its normalised Gaussian blur over the
   face) then removes whatever smooth movement is left. The jaw's movement (a ramp from the upper
   lip to the chin, fitted to what the head's model leaves) is measured on every flow: a jaw that
   keeps working is speech. The head's rigid motion (robust affine fit) is reported and used to
   reject fast turns. What is left is averaged as a VECTOR in ~14 small regions placed
   on the facial landmarks of the action units that micro-expressions use (brows, glabella, nose
   wings, lip corners, lips, chin, cheeks): noise cancels in the mean, a coherent local movement
   does not.
2. The rise-and-return test: for a candidate apex c (one gap in the past), v1 = movement from
   c - gap to c and v2 = movement from c + gap back to c. A micro-expression is displaced at c from
   both sides (v1 ~ v2); steady motion (a turn, a drift, a slow expression) is not (v1 ~ -v2). The
   per-region score max(0, |v1 + v2| / 2 - |v1 - v2| / 2) is the part of the second temporal
   difference that is not net displacement: it is zero for linear motion and for the ramps of long
   expressions, and equals the amplitude for a movement that rises and returns within 2 gaps.
   `RegionThresholds` gives every region its own adaptive threshold (median + k * MAD of its recent
   idle scores, floored by `--calibrate`'s measure of the user's own noise).
3. `IntervalMachine`: an explicit IDLE -> OPEN -> (emit | reject) -> REFRACTORY state machine over
   the best region's score / threshold. An open candidate is rejected when most regions fire
   together (lighting, global shake), when the head turns fast, or when it is a blink (upper lids
   moving down, brows and cheeks then ignored). While the person talks (the lips' landmarks open
   and close, the jaw opened and closed again in the second before (one movement, such as a nod,
   a smile or a blink's drag, does not change direction twice), or it moves a syllable's worth at
   the candidate) the speech regions (mouth, nose wings, cheeks: what the lips drag) are
   ignored and the others need `talk_face_factor` times their threshold; a speech region must
   also beat `busy_isolation` times its own maximum of the 1.2 s before (during_speech="skip": no
   candidate at all while the jaw works at the candidate's moment; blind during speech, almost
   never wrong). One spot per event: the
   candidate keeps its maximum and the machine is refractory for a while after an emit
   (non-maximum suppression).
   The interval is measured on the firing region's own displacement profile from the neutral frame
   before it (a few extra flows, once per event), classified micro (<= max_micro_ms) or macro, and
   decided about gap + 2 frames after the apex (< 0.5 s at the defaults).

Long expressions (smiles, macro-expressions) are followed by a second, coarse scorer with a 1 s gap:
a region whose displacement over 1 s exceeds `macro_score` marks macro activity; activity that
lasts is a macro event, and micro candidates in a region with macro activity are dropped.

Nothing after the current frame is ever read. Defaults were tuned on the tuning seeds of
`slstt synth --style webcam` (see slstt.data.webcam; seeds 0-5 and six event videos with seeds
20-25: recall at <= 5 false spots per minute on their 90 events, with the lips articulating as
they talk), kept the classic videos' F1 >= 0.9, and never saw the held-out seeds.
"""

from __future__ import annotations

import dataclasses
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Protocol

import cv2
import numpy as np

from slstt.errors import SlsttError
from slstt.preprocess.face import CropBox, apply_crop, crop_box
from slstt.preprocess.flow import compute_flow

# Small regions on MediaPipe 478-mesh landmarks, one per action-unit site (subject's right, left).
REGION_ANCHORS: dict[str, tuple[int, ...]] = {
    "inner_brow_r": (55, 65), "inner_brow_l": (285, 295),  # AU1 / AU4
    "outer_brow_r": (105, 70), "outer_brow_l": (334, 300),  # AU2
    "glabella": (9, 8),  # AU4 (brows drawn together)
    "nose_wing_r": (129, 198), "nose_wing_l": (358, 420),  # AU9 / AU10
    "lip_corner_r": (61, 57), "lip_corner_l": (291, 287),  # AU12 / AU14 / AU15
    "upper_lip": (0, 37, 267),  # AU10
    "lower_lip": (17, 84, 314),  # AU16 / AU25
    "chin": (200, 199),  # AU17
    "cheek_r": (50, 101), "cheek_l": (280, 330),  # AU6
}
DEFAULT_REGIONS = tuple(REGION_ANCHORS)
# Regions a blink drags (the lid pulls the skin around it): ignored while the lids move down.
BLINK_REGIONS = ("inner_brow_r", "inner_brow_l", "outer_brow_r", "outer_brow_l", "glabella", "cheek_r", "cheek_l",
                 "nose_wing_r", "nose_wing_l")
UPPER_LIDS = (159, 386)
EYE_RINGS = ((33, 133, 159, 145, 160, 144, 158, 153), (263, 362, 386, 374, 387, 373, 385, 380))
MOUTH_REGIONS = ("lip_corner_r", "lip_corner_l", "upper_lip", "lower_lip", "chin")
# What speech moves: the mouth, and the nose wings and cheeks its lips drag (spreading, rounding,
# the upper lip lifting)
SPEECH_REGIONS = MOUTH_REGIONS + ("nose_wing_r", "nose_wing_l", "cheek_r", "cheek_l")
UPPER_INNER_LIP, LOWER_INNER_LIP = 13, 14
CHIN_TIP, BROW_MID = 152, 9
# the two-pass flow's coarse pass (half size): a fast, robust estimate of the face's smooth movement
COARSE_FLOW = {"pyr_scale": 0.5, "levels": 3, "winsize": 9, "iterations": 2, "poly_n": 5, "poly_sigma": 1.1, "flags": 0}
MAD_SCALE = 1.4826  # MAD -> standard deviation for normal noise
COARSE = 4  # the smoothed movement field is kept at 1/COARSE of the flow crop


@dataclass
class SpotterConfig:
    flow_size: int = 112  # side of the grayscale face crop the flow runs on
    flow_backend: str = "farneback"  # any slstt.preprocess.flow backend (Farneback: best sub-pixel SNR)
    # Farneback with a smaller window than the paper's 15 px: a micro-movement is a few px wide here
    flow_params: dict[str, Any] = field(default_factory=lambda: {"winsize": 7, "poly_sigma": 1.1})
    gap_s: float = 0.25  # rise-and-return half window: flows span this many seconds
    highpass: float = 0.12  # local motion compensation: Gaussian sigma as a fraction of the crop
    region_radius: float = 0.04  # smoothing of the movement field (Gaussian sigma) as a fraction of the crop
    align: str = "flow"  # flow | none: remove the face's smooth movement before the fine flow
    depth_model: bool = True  # the face's movement model includes MediaPipe's depth (parallax of head rotation)
    subtract_model: bool = True  # remove the fitted model (head, parallax) before the local high-pass
    zone_radius: float = 0.09  # a region's movement may peak this far from its landmarks (fraction of the crop)
    window_s: float = 5.0  # trailing window of each region's adaptive threshold
    # threshold = median + k * MAD of the region's idle scores. 4: the most recall within 5 false spots a
    # minute on generator version 4's tuning videos (3 gave 6.25 there; real footage: same recall, 30 % fewer)
    threshold_k: float = 4.0
    min_threshold: float = 0.12  # px on the flow crop; floor for very still, noise-free video
    low_ratio: float = 0.5  # a candidate ends when the best ratio falls below this
    edge_ratio: float = 0.25  # interval boundaries: profile below this fraction of its peak
    min_micro_ms: float = 100.0  # shorter measured intervals are widened to this
    max_micro_ms: float = 500.0  # longer: macro
    max_fire_fraction: float = 0.7  # reject when more than this fraction of regions fire together
    head_fast: float = 8.0  # px of head motion per gap (on the crop) above which candidates are rejected
    blink_gate: float = 0.5  # px of upper-lid downward movement that marks a blink
    talk_window_s: float = 1.0  # the lips' opening over this window tells talking
    talk_opening: float = 0.03  # lips opening and closing by more than this fraction of the crop: talking
    talk_jaw: float = 0.8  # px (flow crop) of fitted jaw movement per gap that counts as the jaw working (0: off)
    # speech is the jaw opening and closing again and again: its vertical movement changed direction
    # (beyond +-talk_jaw) this many times in the talk window before a candidate. One movement (a nod,
    # a smile, a blink's drag) changes direction once at most
    talk_flips: int = 2
    talk_now_jaw: float = 2.4  # px of jaw movement on 2 of the flows spanning a candidate: speech at that very
    # moment (the first syllable, before the talk window could say so; a lower-face micro-expression moves
    # the fitted jaw less than a syllable does)
    talk_factor: float = 0.0  # while talking the speech regions' ratios are divided by this (0: ignored)
    talk_face_factor: float = 1.6  # ... and the other regions' ratios by this (brows and head move with speech)
    # penalise: while the person talks the speech regions are ignored (or need talk_factor x their
    # threshold) and the others talk_face_factor x theirs; skip: no candidate at all while the jaw
    # works at the candidate's moment (few false spots, blind during speech)
    during_speech: str = "penalise"
    isolation: float = 2.0  # a region must score this many times its own maximum of the 0.3 s before
    busy_window_s: float = 1.2  # a region that moved within this long before a candidate is busy (talking, fidgeting)
    busy_isolation: float = 2.0  # ... and must then score this many times its maximum of that window (0: off)
    busy_speech_only: bool = True  # the busy rule applies to SPEECH_REGIONS only
    head_leak: float = 0.15  # thresholds rise by this fraction of the head's own rise-and-return
    blink_factor: float = 2.0  # during a blink the other regions need this many times their threshold
    refractory_s: float = 0.3  # no new candidate this soon after an emitted event
    macro_gap_s: float = 1.0  # coarse scorer for long expressions
    macro_flow_size: int = 64
    macro_highpass: float = 0.3  # long expressions are broad: a wider local compensation
    macro_score: float = 0.75  # px (on a flow_size crop) of displacement over macro_gap_s: macro activity
    macro_suppress: float = 2.5  # micro candidates are dropped where macro activity exceeds this x macro_score
    macro_min_s: float = 0.6  # macro activity lasting this long is a macro event
    max_event_s: float = 6.0  # macro activity longer than this is closed as one event
    warmup_s: float = 1.0  # no events before the statistics have this much data
    calibrate_s: float = 0.0  # neutral baseline: the first seconds set each region's threshold floor
    regions: tuple[str, ...] = DEFAULT_REGIONS

    @property
    def decides_from_s(self) -> float:
        """No decision on a candidate earlier than this (the warm-up, and the calibration's baseline)."""
        return max(self.warmup_s, self.calibrate_s)


# what MotionScorer measures: a follower (Spotter.follower) shares its leader's measurements, so these stay equal
MOTION_FIELDS = frozenset({"flow_size", "flow_backend", "flow_params", "gap_s", "highpass", "region_radius", "align",
                           "depth_model", "subtract_model", "zone_radius", "macro_gap_s", "macro_flow_size",
                           "macro_highpass", "regions"})


@dataclass
class Interval:
    onset: int
    apex: int
    offset: int
    onset_s: float
    apex_s: float
    offset_s: float
    kind: str  # micro | macro
    score: float  # peak score (px on the flow crop)
    threshold: float  # the firing region's threshold
    regions: dict[str, float]  # score / threshold per region at the apex (>= 1: fired)
    closed_index: int
    closed_s: float
    region: str = ""  # the region that fired (macro: the most displaced one)

    @property
    def duration_ms(self) -> float:
        return (self.offset_s - self.onset_s) * 1000.0


@dataclass
class SpotStep:
    """What the spotter saw on one frame (for overlays, timelines and tests)."""

    index: int
    t: float
    score: float  # best region's score / threshold at the candidate frame (NaN: nothing to score)
    threshold: float  # 1.0: the score is already relative to each region's threshold
    low: float
    active: bool  # a candidate is open
    closed: list[Interval]
    region: str = ""  # best region at this step
    scored_s: float = float("nan")  # time of the frame the score belongs to (the candidate apex, one gap back)


# --- 1. motion ---------------------------------------------------------------------------------
@dataclass
class FrameMotion:
    """Movement of each region from frame `index` to frame `index + gap` (px on the crop)."""

    index: int
    vectors: dict[str, np.ndarray]  # region -> mean high-passed flow (2,)
    eyes: float  # upper lids' movement along the face's down axis (px, + = down)
    head: float  # rigid head motion magnitude (px)
    field: np.ndarray | None = None  # (g, g, 2) smoothed high-passed flow on a coarse grid
    geometry: RegionGeometry | None = None  # frame index's regions (zones on the coarse grid)
    head_vector: np.ndarray | None = None  # the head's mean movement (px)
    jaw: float = 0.0  # the jaw's opening or closing (px, fitted movement of the chin below the mouth line)
    jaw_y: float = 0.0  # its part along the face's down axis (+: the mouth opening)


def quantile(x: np.ndarray, q: float) -> float:
    """np.quantile(x, q) of a 1-D array, the same float (numpy's linear method, its lerp included),
    by partition: a tenth of the cost on the few hundred residuals of a robust fit."""
    n = x.size
    pos = q * (n - 1)
    lo = int(np.floor(pos))
    hi, t = min(lo + 1, n - 1), pos - lo
    part = np.partition(x, [lo, hi])
    a, b = part[lo], part[hi]
    return float(b - (b - a) * (1 - t) if t >= 0.5 else a + (b - a) * t)


def upright_box(box: CropBox | None, landmarks: np.ndarray | None) -> CropBox | None:
    """The spotter's box: the tracker's centre, no rotation (spotting needs none), and the side measured
    along the face's own vertical (as the 'aligned' recipe does). The paper's recipe measures it along
    the image's vertical, which shrinks the box to the nose of a face turned 90 degrees in the frame (a
    sideways phone, a head on a pillow); for an upright face the two agree."""
    if box is None or landmarks is None:
        return box if box is None or box.angle == 0.0 else CropBox(box.cx, box.cy, box.side)
    try:
        side = crop_box(landmarks, "aligned").side
    except SlsttError:  # degenerate landmarks: the tracker's own side
        side = box.side
    return CropBox(box.cx, box.cy, side)


def robust_fit(design: np.ndarray, target: np.ndarray, keep: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Least squares of target on design over the rows in keep, refitted twice without the 30 % of
    them with the largest residuals: (coefficients, rows kept)."""
    for _ in range(2):
        coef, *_ = np.linalg.lstsq(design[keep], target[keep], rcond=None)
        res = np.linalg.norm(design @ coef - target, axis=1)
        keep = keep & (res <= quantile(res[keep], 0.7))
    return coef, keep


def wide_blur(img: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur with a sigma of many pixels (its kernel would span the crop), done on a 4x smaller
    copy and enlarged bilinearly at a fraction of the cost. The local high-pass (flow minus its blur
    normalised by the mask's) moves by ~0.3 % of the flow's RMS (tests/test_spotting.py)."""
    h, w = img.shape[:2]
    if sigma < 8 or h % 4 or w % 4:
        return cv2.GaussianBlur(img, (0, 0), sigma)
    small = cv2.resize(img, (w // 4, h // 4), interpolation=cv2.INTER_AREA)
    return cv2.resize(cv2.GaussianBlur(small, (0, 0), sigma / 4), (w, h), interpolation=cv2.INTER_LINEAR)


class RegionGeometry:
    """Landmark-placed Gaussian windows on the flow crop of one box, plus the face mask."""

    def __init__(self, box: CropBox, landmarks: np.ndarray, size: int, regions: tuple[str, ...],
                 radius: float, zone: float, depth: np.ndarray | None = None) -> None:
        side = int(box.side)
        scale = size / side
        x0, y0 = int(round(box.cx - side / 2)), int(round(box.cy - side / 2))  # as apply_crop rounds
        pts = (landmarks - np.array([x0, y0], dtype=np.float32)) * scale
        hull = np.zeros((size, size), np.uint8)
        cv2.fillConvexPoly(hull, cv2.convexHull(pts.astype(np.int32)), 1)
        face = cv2.erode(hull, np.ones((3, 3), np.uint8), iterations=max(1, size // 40)) > 0
        rings = np.zeros((size, size), np.uint8)
        for ring in EYE_RINGS:
            cv2.fillConvexPoly(rings, cv2.convexHull(pts[list(ring)].astype(np.int32)), 1)
        eyes = cv2.dilate(rings, np.ones((3, 3), np.uint8), iterations=max(1, size // 50)) > 0
        self.mask = (face & ~eyes).astype(np.float32)
        self.blurred_mask: np.ndarray | None = None
        sigma = radius * size
        half = int(np.ceil(2 * sigma))
        g1 = np.exp(-0.5 * (np.arange(-half, half + 1) / sigma) ** 2).astype(np.float32)
        kernel = np.outer(g1, g1)
        self.windows: dict[str, tuple[slice, slice, np.ndarray]] = {}
        for name in regions:
            cx, cy = pts[list(REGION_ANCHORS[name])].mean(0)
            xi, yi = int(round(cx)), int(round(cy))
            ya, yb, xa, xb = max(0, yi - half), min(size, yi + half + 1), max(0, xi - half), min(size, xi + half + 1)
            if yb - ya < half or xb - xa < half:
                continue  # the region is off the crop
            k = kernel[ya - yi + half:yb - yi + half, xa - xi + half:xb - xi + half] * self.mask[ya:yb, xa:xb]
            if k.sum() > 0.25 * kernel.sum():  # most of it on visible skin
                self.windows[name] = (slice(ya, yb), slice(xa, xb), k / k.sum())
        # zones: where a region's movement may peak, on the coarse grid of the smoothed field
        g = size // COARSE
        coarse_mask = cv2.resize(self.mask, (g, g), interpolation=cv2.INTER_AREA) > 0.5
        gy, gx = np.mgrid[0:g, 0:g].astype(np.float32) * COARSE + (COARSE - 1) / 2
        zr2 = (zone * size) ** 2
        self.zones: dict[str, np.ndarray] = {}
        for name in regions:
            cx, cy = pts[list(REGION_ANCHORS[name])].mean(0)
            z = ((gx - cx) ** 2 + (gy - cy) ** 2 <= zr2) & coarse_mask
            if z.sum() >= 2:
                self.zones[name] = z
        lids = np.zeros((size, size), np.float32)
        for i in UPPER_LIDS:
            cv2.circle(lids, (int(pts[i, 0]), int(pts[i, 1])), max(2, int(sigma)), 1.0, -1)
        self.lids = lids / max(lids.sum(), 1.0)
        self.depth: np.ndarray | None = None
        if depth is not None and (dense := self._dense(pts, depth * scale, size)) is not None and self.mask.any():
            self.depth = ((dense - float(np.median(dense[self.mask > 0]))) / size).astype(np.float32)
        self.points = pts  # landmarks on the crop
        # the face's own "down" on the crop (brows to chin): a blink and an opening jaw move along it,
        # whichever way the face is turned in the frame (a sideways phone, a head on a pillow)
        down = (pts[CHIN_TIP] - pts[BROW_MID]).astype(np.float64)
        self.down = down / max(float(np.hypot(*down)), 1e-6)
        self.model_design: tuple[np.ndarray, np.ndarray] | None = None  # (grid design, full design), lazily
        self.jaw_ramp: np.ndarray | None = None  # the jaw's ramp on the face's grid points, lazily (empty: none)

    @staticmethod
    def _dense(pts: np.ndarray, values: np.ndarray, size: int) -> np.ndarray | None:
        """A dense map on the crop interpolated from per-landmark values (normalised Gaussian splats)."""
        xi, yi = np.round(pts[:, 0]).astype(int), np.round(pts[:, 1]).astype(int)
        ok = (xi >= 0) & (xi < size) & (yi >= 0) & (yi < size) & np.isfinite(values)
        if ok.sum() < 50:
            return None
        acc = np.zeros((size, size), np.float32)
        cnt = np.zeros((size, size), np.float32)
        np.add.at(acc, (yi[ok], xi[ok]), values[ok].astype(np.float32))
        np.add.at(cnt, (yi[ok], xi[ok]), 1.0)
        fine = cv2.GaussianBlur(acc, (0, 0), 0.03 * size), cv2.GaussianBlur(cnt, (0, 0), 0.03 * size)
        wide = wide_blur(acc, 0.12 * size), wide_blur(cnt, 0.12 * size)
        return np.where(fine[1] > 0.02, fine[0] / np.maximum(fine[1], 1e-6), wide[0] / np.maximum(wide[1], 1e-6))

    def jaw_map(self, size: int) -> np.ndarray | None:
        """Where an opening jaw moves the face: a ramp from 0 at the upper lip to 1 at the chin."""
        pts = self.points
        up = (pts[BROW_MID] - pts[CHIN_TIP]).astype(np.float64)
        up /= max(float(np.hypot(*up)), 1e-6)
        height = pts @ up  # along the face's up axis
        lip, chin = float(height[UPPER_INNER_LIP]), float(height[CHIN_TIP])
        below = np.clip((lip - height) / max(lip - chin, 1e-3), 0.0, 1.0)
        dense = RegionGeometry._dense(pts, below, size)
        return None if dense is None else dense.astype(np.float32)


class MotionScorer:
    """One flow per frame (frame j -> j + gap, in frame j's box) reduced to region vectors."""

    def __init__(self, cfg: SpotterConfig, gap: int, size: int, regions: tuple[str, ...], highpass: float) -> None:
        self.cfg, self.gap, self.size, self.regions = cfg, gap, size, regions
        self._frames: deque[tuple[int, np.ndarray, CropBox | None, np.ndarray | None, np.ndarray | None]] = deque(
            maxlen=gap + 1)
        self._geometry: dict[int, RegionGeometry] = {}  # by box and landmarks
        s = size
        ys, xs = np.mgrid[0:s, 0:s].astype(np.float32)
        step = max(2, s // 16)
        self._grid = (slice(step // 2, s, step), slice(step // 2, s, step))
        self._design = np.stack([np.ones_like(xs[self._grid]), xs[self._grid], ys[self._grid]], -1).reshape(-1, 3)
        self._sigma = highpass * s
        gx, gy = xs[self._grid], ys[self._grid]
        u, v = gx.reshape(-1) / s - 0.5, gy.reshape(-1) / s - 0.5
        self._qdesign = np.stack([np.ones_like(u), u, v, u * u, u * v, v * v], 1)
        uf, vf = xs.reshape(-1) / s - 0.5, ys.reshape(-1) / s - 0.5
        self._qfull = np.stack([np.ones_like(uf), uf, vf, uf * uf, uf * vf, vf * vf], 1).astype(np.float32)
        self._full = (xs, ys)
        self.stride = 1  # measure every stride-th frame only (the coarse macro scorer)
        self.coarse_field = False  # also return the smoothed high-passed field (the micro scorer)
        self.last_field: np.ndarray | None = None
        self.last_head_vector = np.zeros(2)
        self.measure_jaw = True  # measure the jaw on every flow (the micro scorer; the macro scorer does not)
        self.last_jaw = self.last_jaw_y = 0.0

    def geometry(self, box: CropBox, landmarks: np.ndarray, depth: np.ndarray | None = None) -> RegionGeometry:
        if not self.cfg.depth_model:
            depth = None
        key = hash((box.cx, box.cy, box.side, landmarks.tobytes(), None if depth is None else depth.tobytes()))
        geo = self._geometry.get(key)  # by content: ids of freed arrays recur
        if geo is None:
            if len(self._geometry) > 4 * (self.gap + 2):
                self._geometry.clear()
            geo = self._geometry[key] = RegionGeometry(box, landmarks, self.size, self.regions, self.cfg.region_radius,
                                                       self.cfg.zone_radius, depth)
        return geo

    def model_design(self, geo: RegionGeometry) -> tuple[np.ndarray, np.ndarray]:
        """Design of the face-movement model: quadratic in x, y (+ depth: a rotating head's parallax)."""
        if geo.model_design is None:
            extra = [] if geo.depth is None else [geo.depth]
            geo.model_design = (np.column_stack([self._qdesign] + [e[self._grid].reshape(-1) for e in extra]),
                                np.column_stack([self._qfull] + [e.reshape(-1) for e in extra]).astype(np.float32))
        return geo.model_design

    def crop(self, gray: np.ndarray, box: CropBox) -> np.ndarray:
        return cv2.resize(apply_crop(gray, box), (self.size, self.size), interpolation=cv2.INTER_AREA)

    def flow(self, a: np.ndarray, b: np.ndarray, box: CropBox) -> np.ndarray:
        """Dense flow at frame a's crop pixels pointing to where they are in frame b."""
        return compute_flow(self.crop(a, box), self.crop(b, box), self.cfg.flow_backend, self.cfg.flow_params)

    def reduce(self, flow: np.ndarray, geo: RegionGeometry,
               model: np.ndarray | None = None) -> tuple[dict[str, np.ndarray], float, float]:
        """(region vectors of the high-passed flow, lids' downward movement, head motion)."""
        m = geo.mask
        fx, fy = flow[..., 0], flow[..., 1]
        # head: robust affine fit on the face (the 30 % worst points dropped), its mean magnitude
        b = np.stack([fx[self._grid].reshape(-1), fy[self._grid].reshape(-1)], -1)
        keep = m[self._grid].reshape(-1) > 0
        head = 0.0
        self.last_head_vector = np.zeros(2)
        if keep.sum() >= 12:
            coef, keep = robust_fit(self._design, b, keep)
            fitted = self._design[keep] @ coef
            head = float(np.linalg.norm(fitted, axis=1).mean())
            self.last_head_vector = fitted.mean(0)
        # local compensation: subtract the flow's normalised Gaussian blur over the face
        if geo.blurred_mask is None:  # once per box: the mask's blur normalises the flow's blur
            geo.blurred_mask = wide_blur(m, self._sigma) + 1e-6
        den = geo.blurred_mask
        if model is not None:  # what the face's movement model explains is not local movement
            fx, fy = fx - model[..., 0], fy - model[..., 1]
        bx = wide_blur(fx * m, self._sigma) / den
        by = wide_blur(fy * m, self._sigma) / den
        rx, ry = fx - bx, fy - by
        vectors = {name: np.array([float((rx[ys, xs] * k).sum()), float((ry[ys, xs] * k).sum())])
                   for name, (ys, xs, k) in geo.windows.items()}
        eyes = float(((rx * geo.down[0] + ry * geo.down[1]) * geo.lids).sum())
        self.last_field = None
        if self.coarse_field:
            g = self.size // COARSE
            smooth = cv2.GaussianBlur(np.dstack([rx * m, ry * m]), (0, 0), self.cfg.region_radius * self.size)
            self.last_field = cv2.resize(smooth, (g, g), interpolation=cv2.INTER_AREA)
        return vectors, eyes, head

    def update(self, gray: np.ndarray, index: int, box: CropBox | None,
               landmarks: np.ndarray | None, depth: np.ndarray | None = None) -> FrameMotion | None:
        """Store frame `index`; returns the movement of frame index - gap (None if it had no face)."""
        if box is not None and box.angle != 0.0:  # an 'aligned' training box: spotting needs no rotation
            box = CropBox(box.cx, box.cy, box.side)  # (Spotter.update gives upright_box already)
        self._frames.append((index, gray, box, landmarks, depth))
        if len(self._frames) <= self.gap or index % self.stride:
            return None
        j, old, jbox, jlm, jdepth = self._frames[0]
        if j != index - self.gap or jbox is None or jlm is None:
            return None
        geo = self.geometry(jbox, jlm, jdepth)
        model, self.last_jaw, self.last_jaw_y = None, 0.0, 0.0
        if self.cfg.align == "flow":
            flow, model = self.two_pass_flow(self.crop(old, jbox), self.crop(gray, jbox), geo)
        else:
            flow = self.flow(old, gray, jbox)
        vectors, eyes, head = self.reduce(flow, geo, model if self.cfg.subtract_model else None)
        return FrameMotion(j, vectors, eyes, head, self.last_field, geo, self.last_head_vector, self.last_jaw,
                           self.last_jaw_y)

    def two_pass_flow(self, a: np.ndarray, b: np.ndarray, geo: RegionGeometry) -> tuple[np.ndarray, np.ndarray | None]:
        """(flow a -> b, the face-movement model in it). A fast coarse flow gives a model of the face's
        own movement (robust fit: quadratic in x, y plus depth for a rotating head's parallax), b is
        warped back by it, the fine flow measures what is left (small, so precise), and the model is
        added back. The jaw's movement is measured on what the model leaves (last_jaw)."""
        s = self.size
        half = s // 2
        small = compute_flow(cv2.resize(a, (half, half), interpolation=cv2.INTER_AREA),
                             cv2.resize(b, (half, half), interpolation=cv2.INTER_AREA), "farneback",
                             COARSE_FLOW) * 2.0
        face = keep = geo.mask[self._grid].reshape(-1) > 0
        target = cv2.resize(small, (s, s), interpolation=cv2.INTER_LINEAR)[self._grid].reshape(-1, 2)
        q, qfull = self.model_design(geo)
        if keep.sum() < 12:
            return compute_flow(a, b, self.cfg.flow_backend, self.cfg.flow_params), None
        coef, keep = robust_fit(q, target, keep)
        model = (qfull @ coef).reshape(s, s, 2).astype(np.float32)
        grid_x, grid_y = self._full
        warped = cv2.remap(b, grid_x + model[..., 0], grid_y + model[..., 1], cv2.INTER_LINEAR,
                           borderMode=cv2.BORDER_REPLICATE)
        flow = compute_flow(a, warped, self.cfg.flow_backend, self.cfg.flow_params) + model
        ramp = self.jaw_ramp(geo, q, face) if self.measure_jaw else None
        if ramp is not None:  # the chin's movement that the head's model does not explain
            jaw = ramp @ (target[face] - q[face] @ coef) / max(float(ramp @ ramp), 1e-9)
            self.last_jaw, self.last_jaw_y = float(np.hypot(*jaw)), float(jaw @ geo.down)
        return flow, model

    def jaw_ramp(self, geo: RegionGeometry, q: np.ndarray, face: np.ndarray) -> np.ndarray | None:
        """The jaw's ramp on the face's grid points, less the part any head movement of the model
        makes (once per geometry)."""
        if geo.jaw_ramp is None:
            dense = geo.jaw_map(self.size)
            if dense is None:
                geo.jaw_ramp = np.zeros(0)
            else:
                ramp = dense[self._grid].reshape(-1)[face]
                geo.jaw_ramp = ramp - q[face] @ np.linalg.lstsq(q[face], ramp, rcond=None)[0]
        return geo.jaw_ramp if geo.jaw_ramp.size else None


def rise_return_score(v1: np.ndarray, v2: np.ndarray) -> float:
    """max(0, |v1 + v2| / 2 - |v1 - v2| / 2): displaced from both sides, minus net displacement."""
    return max(0.0, float(np.hypot(*(v1 + v2)) - np.hypot(*(v1 - v2))) / 2.0)


# --- 2. thresholds -------------------------------------------------------------------------------
class RegionThresholds:
    """Per-region adaptive threshold: max(floor, calibration, median + k * MAD of recent idle scores)."""

    def __init__(self, k: float, floor: float, window: int) -> None:
        self.k, self.floor = k, floor
        self.history: dict[str, deque[float]] = {}
        self.window = window
        self.baseline: dict[str, float] = {}
        self._calib: dict[str, list[float]] = {}
        self._cache: dict[str, float] = {}
        self._added = 0
        self.refresh = 1

    def add(self, values: dict[str, float]) -> None:
        for name, v in values.items():
            self.history.setdefault(name, deque(maxlen=self.window)).append(v)
        self._added += 1
        if self._added % self.refresh == 0:  # medians of a 10 s window move slowly: refresh every few frames
            self._cache.clear()

    def calibrate(self, values: dict[str, float]) -> None:
        for name, v in values.items():
            self._calib.setdefault(name, []).append(v)

    def end_calibration(self) -> None:
        """The calibration's noise (median + k * MAD per region) floors each region's threshold."""
        for name, vs in self._calib.items():
            w = np.asarray(vs)
            med = float(np.median(w))
            self.baseline[name] = med + self.k * float(np.median(np.abs(w - med))) * MAD_SCALE
        self._calib = {}
        self._cache.clear()

    @property
    def calibrating(self) -> bool:
        return bool(self._calib)

    def __getitem__(self, name: str) -> float:
        thr = self._cache.get(name)
        if thr is None:
            thr = self._cache[name] = self._compute(name)
        return thr

    def peek(self, name: str) -> float:
        """The threshold as __getitem__ gives it now, without filling the cache (a lookup that must not
        change what later lookups return: Spotter.trace)."""
        thr = self._cache.get(name)
        return self._compute(name) if thr is None else thr

    def _compute(self, name: str) -> float:
        h = self.history.get(name)
        adaptive = 0.0
        if h is not None and len(h) >= 5:
            w = np.fromiter(h, dtype=np.float64)
            med = float(np.median(w))
            adaptive = med + self.k * float(np.median(np.abs(w - med))) * MAD_SCALE
        return max(self.floor, self.baseline.get(name, 0.0), adaptive)


# --- 3. intervals --------------------------------------------------------------------------------
@dataclass
class Candidate:
    """What the state machine sees at one candidate apex frame."""

    index: int
    ratios: dict[str, float]  # score / threshold per region
    scores: dict[str, float]  # px
    head: float
    blink: bool
    macro_regions: frozenset[str] = frozenset()
    peaks: dict[str, tuple[int, int]] = field(default_factory=dict)  # region -> coarse cell of its peak


@dataclass
class CandidateTrace:
    """Everything the rules saw at one candidate apex frame, before the state machine (Spotter.trace:
    what `slstt.realtime.explain` tells a user about each event the spotter missed)."""

    index: int
    time_s: float  # the candidate frame's time: the warm-up is the spotter's, whatever the frame rate
    scores: dict[str, float]  # px on the flow crop
    thresholds: dict[str, float]  # px: each region's adaptive threshold plus the head-motion bar ({}: not wanted)
    moved_before: frozenset[str]  # regions that moved as much just before (the isolation rules)
    speech: str  # "": not talking; "penalised": talking (speech regions ignored, the others need more); "skipped"
    blink: bool
    macro: frozenset[str]  # regions with a longer expression under way
    head: float  # px of rigid head motion


class TraceSink(Protocol):
    """Where Spotter.trace puts each candidate's CandidateTrace (slstt.realtime.explain.ContextTally)."""

    # False: CandidateTrace.thresholds stays empty. A threshold the rules did not need is a median over
    # the region's window, about 40 us each: not worth it on the live path for a sink that only counts
    wants_thresholds: bool

    def __setitem__(self, index: int, trace: CandidateTrace, /) -> None: ...


@dataclass
class Decision:
    kind: str  # "spot" | "reject"
    apex: Candidate
    region: str
    reason: str = ""


class IntervalMachine:
    """IDLE -> OPEN (best ratio >= 1) -> closes when the ratio falls below low_ratio or after
    `max_open` frames -> spot or reject -> REFRACTORY for `refractory` frames -> IDLE."""

    def __init__(self, cfg: SpotterConfig, max_open: int, refractory: int) -> None:
        self.cfg, self.max_open, self.refractory = cfg, max_open, refractory
        self.state = "idle"
        self.best: Candidate | None = None
        self.best_region = ""
        self.best_ratio = 0.0
        self.opened = -1
        self.quiet_until = -1

    def _reject_reason(self, c: Candidate, region: str) -> str:
        n = len(c.ratios)
        level = max(1.0, 0.7 * max(c.ratios.values(), default=0.0))  # comparable to the winner
        fired = sum(r >= level for r in c.ratios.values())
        if n >= 4 and fired > self.cfg.max_fire_fraction * n:
            return f"{fired} of {n} regions fired together"
        if c.head > self.cfg.head_fast:
            return f"head moving fast ({c.head:.1f} px)"
        if region in c.macro_regions:
            return "part of a longer expression"
        return ""

    def step(self, c: Candidate) -> Decision | None:
        if c.blink:  # blink: the lid-dragged regions are not evidence, the others need more of it
            c.ratios = {k: (0.0 if k in BLINK_REGIONS else v / self.cfg.blink_factor) for k, v in c.ratios.items()}
        region, ratio = max(c.ratios.items(), key=lambda kv: kv[1]) if c.ratios else ("", 0.0)
        if self.state == "refractory":
            if c.index < self.quiet_until:
                return None
            self.state = "idle"
        if self.state == "idle":
            if ratio >= 1.0:
                self.state, self.best, self.best_region, self.best_ratio, self.opened = "open", c, region, ratio, c.index
            return None
        # open
        if ratio > self.best_ratio:
            self.best, self.best_region, self.best_ratio = c, region, ratio
        if ratio >= self.cfg.low_ratio and c.index - self.opened < self.max_open:
            return None
        assert self.best is not None
        best, best_region = self.best, self.best_region
        self.state, self.quiet_until, self.best = "refractory", c.index + self.refractory, None
        why = self._reject_reason(best, best_region)
        return Decision("reject" if why else "spot", best, best_region, why)

    @property
    def active(self) -> bool:
        return self.state == "open"


@dataclass
class _Run:
    """A run of macro activity: frames start..last, its most displaced region and that displacement."""

    start: int
    last: int
    region: str
    peak: float
    vector: np.ndarray
    released: bool = False  # the region moved back the other way within the run


# --- the spotter ----------------------------------------------------------------------------------
class Spotter:
    """update(gray, index, t, box, landmarks) once per frame, in order; returns a SpotStep."""

    def __init__(self, cfg: SpotterConfig | None = None, fps: float = 30.0) -> None:
        self.cfg = c = cfg or SpotterConfig()
        self.fps = fps
        self.gap = max(2, round(c.gap_s * fps))
        self.regions = tuple(r for r in c.regions if r in REGION_ANCHORS)
        self.scorer = MotionScorer(c, self.gap, c.flow_size, self.regions, c.highpass)
        self.scorer.coarse_field = True
        self.macro_gap = max(self.gap + 1, round(c.macro_gap_s * fps))
        self.macro = MotionScorer(c, self.macro_gap, c.macro_flow_size, self.regions, c.macro_highpass)
        self.macro.stride = 2  # 1 s movements: every other frame is plenty
        self.macro.measure_jaw = False
        self.thresholds = RegionThresholds(c.threshold_k, c.min_threshold, max(10, round(c.window_s * fps)))
        self.thresholds.refresh = max(1, round(fps / 10))
        self.machine = IntervalMachine(c, max_open=max(2, round(0.5 * c.max_micro_ms / 1000 * fps)),
                                       refractory=max(1, round(c.refractory_s * fps)))
        keep = 2 * self.macro_gap + self.gap + 8
        self._motion: dict[int, FrameMotion] = {}  # candidate bookkeeping (recent frames only)
        self._frames: dict[int, tuple[np.ndarray, CropBox | None, np.ndarray | None, float]] = {}
        self._keep = keep
        self._macro_active: dict[str, int] = {}  # region -> last frame with macro activity
        self._macro_run: _Run | None = None  # the current run of macro activity
        self._macro_rise: _Run | None = None  # the last finished run, waiting for its release
        self._blinks: deque[int] = deque(maxlen=64)  # candidate frames inside a blink (lids down and up)
        self.trace: TraceSink | None = None  # every candidate's CandidateTrace goes in (slstt.realtime.explain)
        self._micro_apexes: deque[int] = deque(maxlen=16)
        self._score_history: dict[int, dict[str, float]] = {}
        self._busy_frames = max(2 * self.gap + 5, round(c.busy_window_s * fps))
        self._mouth: deque[tuple[int, float]] = deque(maxlen=max(4, round(c.talk_window_s * fps)))
        self.rejected: list[Decision] = []  # recent rejections (for diagnostics), bounded
        self.threshold, self.low = 1.0, c.low_ratio
        self.followers: list[Spotter] = []  # fed this spotter's movements (follower())
        self.intervals: list[Interval] = []  # a follower's closed intervals

    # --- frames ----------------------------------------------------------------------------
    def time_of(self, index: int) -> float:
        f = self._frames.get(index)
        return f[3] if f is not None else index / self.fps

    def _remember(self, index: int, gray: np.ndarray, box: CropBox | None, lm: np.ndarray | None, t: float) -> None:
        self._frames[index] = (gray, box, lm, t)
        for old in [k for k in self._frames if k <= index - self._keep]:
            del self._frames[old]
        for old in [k for k in self._motion if k <= index - self._keep]:
            del self._motion[old]

    # --- macro activity ----------------------------------------------------------------------
    def _macro_step(self, m: FrameMotion | None, index: int) -> list[Interval]:
        """Coarse displacements over macro_gap_s. A run of activity is a movement (an expression's
        rise or its release); a rise followed by a release in the opposite direction within
        max_event_s is a macro event. A lone run (a head turn, a shift of pose) is not."""
        if m is None:
            return []
        scale = self.cfg.flow_size / self.cfg.macro_flow_size
        moved = {k: float(np.hypot(*v)) * scale for k, v in m.vectors.items()}
        if any(m.index - self.gap <= b <= m.index + self.macro_gap for b in self._blinks):
            moved = {k: v for k, v in moved.items() if k not in BLINK_REGIONS}  # a blink, not an expression
        active = {k for k, v in moved.items() if v >= self.cfg.macro_score}
        centre = m.index + self.macro_gap // 2  # the movement happened around the window's middle
        for k in active:  # a strong, lasting movement: micro candidates there are part of it
            if moved[k] >= self.cfg.macro_suppress * self.cfg.macro_score:
                self._macro_active[k] = centre
        if active:
            self._extend_run(m, moved, active, centre, scale)
            return []
        run = self._macro_run
        if run is None or centre - run.last <= self.gap:
            return []
        return self._end_run(run, index)

    def _extend_run(self, m: FrameMotion, moved: dict[str, float], active: set[str], centre: int,
                    scale: float) -> None:
        run = self._macro_run
        region = max(active, key=lambda k: moved[k])
        if run is None:
            run = self._macro_run = _Run(m.index, centre, region, moved[region], m.vectors[region] * scale)
        elif run.region in active:  # a short expression: rise and release inside one run
            v = m.vectors[run.region] * scale
            if float(v @ run.vector) < -0.3 * float(np.hypot(*v) * np.hypot(*run.vector)):
                run.released = True
            elif not run.released and moved[run.region] > run.peak:
                run.peak, run.vector = moved[run.region], v
        run.last = centre
        if centre - run.start > round(self.cfg.max_event_s * self.fps):  # continuous movement (talking,
            self._macro_run, self._macro_rise = None, None  # fidgeting): not one expression

    def _end_run(self, run: _Run, index: int) -> list[Interval]:
        """The run ended: a rise, the release of an earlier rise, or both."""
        self._macro_run = None
        if run.released:
            self._macro_rise = None
            return self._macro_interval(run, run, index)
        rise = self._macro_rise
        if rise is not None and rise.region == run.region and run.start - rise.last <= round(self.cfg.max_event_s * self.fps):
            cos = float(rise.vector @ run.vector) / (np.hypot(*rise.vector) * np.hypot(*run.vector) + 1e-9)
            if cos < -0.3:
                self._macro_rise = None
                return self._macro_interval(rise, run, index)
        self._macro_rise = run
        return []

    def _macro_interval(self, rise: _Run, release: _Run, index: int) -> list[Interval]:
        onset, offset = rise.start + self.macro_gap // 2, release.last
        if (offset - onset) / self.fps < self.cfg.macro_min_s:
            return []
        apex = (rise.last + release.start + self.macro_gap) // 2 if rise is not release else (onset + offset) // 2
        apex = min(max(apex, onset), offset)
        peak = max(rise.peak, release.peak)
        if peak < 2 * self.cfg.macro_score and any(onset <= a <= offset for a in self._micro_apexes):
            return []  # a micro-expression already explains this movement
        return [Interval(onset, apex, offset, self.time_of(onset), self.time_of(apex), self.time_of(offset),
                         "macro", peak, self.cfg.macro_score, {rise.region: round(peak / self.cfg.macro_score, 3)},
                         index, self.time_of(index), rise.region)]

    # --- micro candidates --------------------------------------------------------------------
    def _candidate(self, index: int) -> Candidate | None:
        """The candidate apex c = index - gap: the frame whose movements from c - gap and to c + gap
        are both known now."""
        c = index - self.gap  # motion of c (c -> c + gap) just arrived; v1 comes from c - gap
        now, before = self._motion.get(c), self._motion.get(c - self.gap)
        if now is None or before is None:
            return None
        scores: dict[str, float] = {}
        peaks: dict[str, tuple[int, int]] = {}
        if now.field is not None and before.field is not None and now.geometry is not None:
            both = before.field - now.field  # v1 + v2 per cell (v2 = -now: c + gap back to c)
            net = before.field + now.field  # v1 - v2: the net displacement c - gap -> c + gap
            dense = np.maximum(0.0, np.hypot(both[..., 0], both[..., 1]) - np.hypot(net[..., 0], net[..., 1])) / 2
            for name, zone in now.geometry.zones.items():
                values = np.where(zone, dense, -1.0)
                k = int(np.argmax(values))
                scores[name] = float(values.flat[k])
                peaks[name] = divmod(k, values.shape[1])
        # a blink: around c the upper lids went down and came back up (closing, then opening)
        lids = [m.eyes for j in range(c - 2 * self.gap, c + 1) if (m := self._motion.get(j)) is not None]
        blink = max(lids) > self.cfg.blink_gate and min(lids) < -0.5 * self.cfg.blink_gate
        if blink:
            self._blinks.append(c)
        # the head itself rose and returned (a nod, a shake): what the flow gets wrong grows with it
        head_rr = 0.0
        if now.head_vector is not None and before.head_vector is not None:
            head_rr = rise_return_score(before.head_vector, -now.head_vector)
        bar = self.cfg.head_leak * head_rr
        # isolation: a micro-expression rises from calm; a region that moved as much just before it
        # (talking, chewing, fidgeting) is not evidence of one
        past = self._recent_max(range(c - 2 * self.gap - 4, c - self.gap + 1))
        moved_before = {name for name, v in scores.items() if not v > self.cfg.isolation * past.get(name, 0.0)}
        # (a threshold is looked up only for an isolated region: the lookup fills RegionThresholds' cache)
        ratios = {name: 0.0 if name in moved_before else v / (self.thresholds[name] + bar) for name, v in scores.items()}
        if self.cfg.busy_isolation > 0:
            early = self._recent_max(range(c - self._busy_frames, c - 2 * self.gap - 4))
            busy = {name for name, v in scores.items() if (not self.cfg.busy_speech_only or name in SPEECH_REGIONS)
                    and v <= self.cfg.busy_isolation * early.get(name, 0.0)}
            ratios = {name: 0.0 if name in busy else r for name, r in ratios.items()}
            moved_before |= busy
        self._score_history[c] = scores
        for old in [j for j in self._score_history if j < c - max(3 * self.gap, self._busy_frames)]:
            del self._score_history[old]
        speech = ""
        if self.cfg.during_speech == "skip" and self._jaw_near(c):  # speech now: not a micro-expression
            ratios, speech = dict.fromkeys(ratios, 0.0), "skipped"
        elif self._talking(c):  # the lower face's own movements are mostly speech now
            f, g = self.cfg.talk_factor, self.cfg.talk_face_factor
            ratios = {k: ((v / f if f > 0 else 0.0) if k in SPEECH_REGIONS else v / g) for k, v in ratios.items()}
            speech = "penalised"
        recent = c - self.gap
        macro = frozenset(k for k, last in self._macro_active.items() if last >= recent)
        head = max(now.head, before.head)
        if self.trace is not None:
            thresholds = {k: self.thresholds.peek(k) + bar for k in scores} if self.trace.wants_thresholds else {}
            self.trace[c] = CandidateTrace(c, self.time_of(c), scores, thresholds, frozenset(moved_before), speech,
                                           blink, macro, head)
        return Candidate(c, ratios, scores, head, blink, macro, peaks)

    def _recent_max(self, frames: range) -> dict[str, float]:
        """Each region's highest score over candidate frames `frames`."""
        top: dict[str, float] = {}
        for j in frames:
            for name, value in self._score_history.get(j, {}).items():
                top[name] = max(top.get(name, 0.0), value)
        return top

    def _talking(self, c: int) -> bool:
        """Speech (or chewing) around candidate c: the tracked lips opened and closed by more than
        talk_opening (fraction of the crop) within talk_window_s; or the jaw opened and closed (its
        vertical movement changed direction talk_flips times) in the second before the candidate's
        own rise (MediaPipe's lips follow a small opening poorly; the flow sees it); or it moves by
        more than talk_now_jaw at the candidate itself."""
        near = [v for i, v in self._mouth if c - len(self._mouth) <= i <= c + self.gap]
        if len(near) >= 3 and max(near) - min(near) > self.cfg.talk_opening:
            return True
        if self.cfg.talk_jaw > 0:
            window = range(c - round(self.cfg.talk_window_s * self.fps), c - 2 * self.gap - 1)
            if self._jaw_flips(window) >= self.cfg.talk_flips:
                return True
        return self.cfg.talk_now_jaw > 0 and self._jaw_near(c, self.cfg.talk_now_jaw)

    def _jaw_near(self, c: int, above: float | None = None) -> bool:
        """The jaw moved (> above, default talk_jaw) on at least two of the flows that span the
        candidate's frame c (c - gap .. c): speech at the candidate's own moment."""
        return self._jaw_working(range(c - self.gap, c + 1), above) >= 2

    def _jaw_flips(self, flows: range) -> int:
        """How often the jaw's vertical movement changed direction over the flows starting at frames
        `flows` (hysteresis: only movements beyond +-talk_jaw count)."""
        flips, side = 0, 0
        for j in flows:
            m = self._motion.get(j)
            if m is None or abs(m.jaw_y) <= self.cfg.talk_jaw:
                continue
            now = 1 if m.jaw_y > 0 else -1
            flips += side == -now
            side = now
        return flips

    def _jaw_working(self, flows: range, above: float | None = None) -> int:
        """How many of the flows starting at frames `flows` moved the jaw by more than `above`
        (default talk_jaw)."""
        above = self.cfg.talk_jaw if above is None else above
        return sum(m.jaw > above for j in flows if (m := self._motion.get(j)) is not None)

    def _profile_interval(self, d: Decision, index: int) -> Interval | None:
        """Measure the event on the firing region's displacement from the frame before it."""
        c = d.apex.index
        a, b = c - self.gap, min(c + self.gap, index)
        fa = self._frames.get(a)
        if fa is None or fa[1] is None or fa[2] is None:
            return None
        gray_a, box, lm = fa[0], fa[1], fa[2]  # the box is upright_box's (Spotter.update): no rotation
        geo = self.scorer.geometry(box, lm)
        cell = d.apex.peaks.get(d.region)
        if cell is None:
            return None
        crop_a = self.scorer.crop(gray_a, box)
        disp = []
        frames = [f for f in range(a, b + 1) if f in self._frames]
        for f in frames:
            if f == a:
                disp.append(np.zeros(2))
                continue
            flow = compute_flow(crop_a, self.scorer.crop(self._frames[f][0], box), self.cfg.flow_backend,
                                self.cfg.flow_params)
            self.scorer.reduce(flow, geo)
            assert self.scorer.last_field is not None
            disp.append(self.scorer.last_field[cell])
        p = np.asarray(disp)
        # remove what moves linearly from a to b (slow drift), then measure along the peak direction
        w = np.linspace(0.0, 1.0, len(p))[:, None]
        p = p - w * p[-1:]
        k = int(np.argmax(np.hypot(p[:, 0], p[:, 1])))
        direction = p[k] / (np.hypot(*p[k]) + 1e-9)
        prof = p @ direction
        peak = float(prof[k])
        if peak <= 0:
            return None
        edge = self.cfg.edge_ratio * peak
        lo = k
        while lo > 0 and prof[lo - 1] > edge:
            lo -= 1
        hi = k
        while hi < len(prof) - 1 and prof[hi + 1] > edge:
            hi += 1
        lo, hi = max(lo - 1, 0), min(hi + 1, len(frames) - 1)
        # a very brief movement (a few frames) that scored above threshold: widen its interval to the
        # shortest one reported, alternately on either side of the apex
        while (self.time_of(frames[hi]) - self.time_of(frames[lo])) * 1000.0 < self.cfg.min_micro_ms:
            if (hi - k <= k - lo or lo == 0) and hi < len(frames) - 1:
                hi += 1
            elif lo > 0:
                lo -= 1
            else:
                return None
        onset, apex, offset = frames[lo], frames[k], frames[hi]
        onset_s, offset_s = self.time_of(onset), self.time_of(offset)
        dur_ms = (offset_s - onset_s) * 1000.0
        kind = "micro" if dur_ms <= self.cfg.max_micro_ms else "macro"
        region_ratios = {r: round(v, 3) for r, v in sorted(d.apex.ratios.items(), key=lambda kv: -kv[1])[:4]}
        return Interval(onset, apex, offset, onset_s, self.time_of(apex), offset_s, kind,
                        d.apex.scores.get(d.region, 0.0), self.thresholds[d.region], region_ratios, index,
                        self.time_of(index), d.region)

    def flush(self) -> list[Interval]:
        """The stream ended: a long expression whose release was under way is closed now."""
        for follower in self.followers:
            follower.intervals += follower.flush()
        run, self._macro_run = self._macro_run, None
        if run is None or not self._frames:
            return []
        last = max(self._frames)
        run.last = min(run.last, last)
        return self._end_run(run, last)

    # --- followers: the same movements, other thresholds (an operating curve in one pass) -------------
    def follower(self, **changes: Any) -> Spotter:
        """A spotter with this one's config but for `changes` (decision knobs only: threshold_k, the
        rules), fed this spotter's movements on every update instead of measuring its own (the flows are
        most of the cost). Its closed intervals collect in its `intervals`."""
        moved = sorted(k for k in changes if k in MOTION_FIELDS)
        if moved:
            raise ValueError(f"a follower measures nothing itself: {', '.join(moved)} must stay the leader's")
        follower = Spotter(dataclasses.replace(self.cfg, **changes), self.fps)
        self.followers.append(follower)
        return follower

    # --- per frame ------------------------------------------------------------------------------
    def update(self, gray: np.ndarray, index: int, t: float, box: CropBox | None,
               landmarks: np.ndarray | None, depth: np.ndarray | None = None) -> SpotStep:
        """depth: MediaPipe's (478,) relative landmark depth (FaceState.depth); optional."""
        box = upright_box(box, landmarks)
        motion = self.scorer.update(gray, index, box, landmarks, depth)
        macro = self.macro.update(gray, index, box, landmarks)
        for follower in self.followers:
            follower.intervals += follower._step(gray, index, t, box, landmarks, motion, macro).closed
        return self._step(gray, index, t, box, landmarks, motion, macro)

    def _step(self, gray: np.ndarray, index: int, t: float, box: CropBox | None, landmarks: np.ndarray | None,
              motion: FrameMotion | None, macro: FrameMotion | None) -> SpotStep:
        c = self.cfg
        self._remember(index, gray, box, landmarks, t)
        closed: list[Interval] = []
        if motion is not None:
            self._motion[motion.index] = motion
        if landmarks is not None and box is not None:  # how far the lips are apart (talking)
            self._mouth.append((index, float(np.hypot(*(landmarks[LOWER_INNER_LIP] - landmarks[UPPER_INNER_LIP])))
                                / max(float(box.side), 1.0)))
        closed += self._macro_step(macro, index)
        cand = self._candidate(index)
        if cand is None:
            return SpotStep(index, t, float("nan"), self.threshold, self.low, self.machine.active, closed)
        t_c = self.time_of(cand.index)
        if c.calibrate_s > 0 and t_c < c.calibrate_s:
            self.thresholds.calibrate(cand.scores)
            return SpotStep(index, t, 0.0, self.threshold, self.low, False, closed)
        if self.thresholds.calibrating:
            self.thresholds.end_calibration()
        warm = t_c >= c.decides_from_s
        decision = self.machine.step(cand) if warm else None
        if not self.machine.active:
            self.thresholds.add(cand.scores)  # each region's own recent scores, idle frames only
        if decision is not None:
            if decision.kind == "spot":
                interval = self._profile_interval(decision, index)
                if interval is not None:
                    closed.append(interval)
                    self._micro_apexes.append(interval.apex)
            else:
                self.rejected.append(decision)
                del self.rejected[:-50]
        best = max(cand.ratios.items(), key=lambda kv: kv[1]) if cand.ratios else ("", 0.0)
        return SpotStep(index, t, float(best[1]), self.threshold, self.low, self.machine.active, closed, best[0], t_c)
