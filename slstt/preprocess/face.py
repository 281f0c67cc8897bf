"""Face landmarks (MediaPipe Tasks FaceLandmarker, 478-point mesh) and the face crop box.

The paper used dlib-68 points; LANDMARKS maps them to the MediaPipe mesh so that the crop
recipe of spec 1.2 reads the same points: nose tip (dlib 30), chin (8), mid-brow (19) and
lower lip (57). "Right"/"left" are the subject's: the subject's right eye is on the image left.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import os
import sys
import weakref
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from slstt.errors import SlsttError, first_line

FACE_MODEL_SHA256 = "64184e229b263107bc2b804c6625db1341ff2bb731874b0bcc2fe6544e0bc9ff"
NUM_LANDMARKS = 478

LANDMARKS: dict[str, int] = {
    # Crop points of spec 1.2. Mesh 1 is the pronasale (most protruding nose point), which is
    # where dlib 30 sits on a frontal face; mesh 4 lies ~4% of the face height higher, on the ridge.
    "nose_tip": 1,  # dlib 30
    "chin": 152,  # dlib 8 (menton, lowest chin point)
    "brow": 105,  # dlib 19, middle of the subject's right brow (upper contour)
    "lower_lip": 17,  # dlib 57, bottom centre of the lower lip's outer contour
    # Eyes (dlib 36/39/42/45 corners; eyelid midpoints).
    "right_eye_outer": 33,
    "right_eye_inner": 133,
    "left_eye_inner": 362,
    "left_eye_outer": 263,
    "right_eye_upper": 159,
    "right_eye_lower": 145,
    "left_eye_upper": 386,
    "left_eye_lower": 374,
    # Brows (dlib 17/21/22/24/26).
    "right_brow_outer": 70,
    "right_brow_inner": 107,
    "left_brow_inner": 336,
    "left_brow_mid": 334,
    "left_brow_outer": 300,
    # Nose (dlib 27 bridge, 33 base, 31/35 alae).
    "nose_bridge": 168,
    "nose_base": 2,
    "right_nose_ala": 98,
    "left_nose_ala": 327,
    # Mouth (dlib 48/54 corners, 51 upper lip top).
    "mouth_right": 61,
    "mouth_left": 291,
    "upper_lip": 0,
    "forehead": 10,
}

# Named regions for the live spotter (motion per region); both sides in each list.
REGIONS: dict[str, list[int]] = {
    "brows": [70, 63, 105, 66, 107, 55, 65, 52, 53, 46,
              336, 296, 334, 293, 300, 285, 295, 282, 283, 276],
    "eyes": [33, 7, 163, 144, 145, 153, 154, 155, 133, 173, 157, 158, 159, 160, 161, 246,
             362, 382, 381, 380, 374, 373, 390, 249, 263, 466, 388, 387, 386, 385, 384, 398],
    "nose": [168, 6, 197, 195, 5, 4, 1, 2, 98, 327, 129, 358, 64, 294],
    "mouth": [61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291,
              409, 270, 269, 267, 0, 37, 39, 40, 185],
    "cheeks": [50, 101, 118, 117, 123, 147, 187, 205, 36, 142,
               280, 330, 347, 346, 352, 376, 411, 425, 266, 371],
    "chin": [152, 148, 176, 149, 150, 377, 400, 378, 379, 175, 199, 200, 18],
}

_ASSET_PATH = Path(__file__).resolve().parent.parent / "assets" / "face_landmarker.task"


@lru_cache(maxsize=1)
def default_face_model_path() -> Path:
    """The packaged FaceLandmarker model, SHA-256 checked once per process."""
    if not _ASSET_PATH.is_file():
        raise SlsttError(f"face model missing: {_ASSET_PATH}; reinstall slstt or pass --face-model")
    digest = hashlib.sha256(_ASSET_PATH.read_bytes()).hexdigest()
    if digest != FACE_MODEL_SHA256:
        raise SlsttError(
            f"face model {_ASSET_PATH} is corrupt (sha256 {digest[:12]}..., expected "
            f"{FACE_MODEL_SHA256[:12]}...); reinstall slstt or pass --face-model"
        )
    return _ASSET_PATH


def _close_quietly(task: Any) -> None:
    try:
        task.close()
    except Exception:  # noqa: BLE001 - interpreter shutdown; nothing useful to report
        pass


@contextlib.contextmanager
def quiet_native_stderr():
    """MediaPipe's C++ side logs start-up chatter straight to fd 2; hide it (user errors are ours)."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no real fd 2 (e.g. captured by a test runner)
        yield
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


class FaceLandmarker:
    """One face's 478 landmarks in pixel coordinates. Creating one costs ~0.1 s: make it once
    and pass it around. video=True uses MediaPipe's tracking mode (monotonic timestamps)."""

    def __init__(self, model_path: str | Path | None = None, video: bool = False,
                 min_confidence: float = 0.5) -> None:
        from mediapipe.tasks.python import BaseOptions, vision

        path = default_face_model_path() if model_path is None else Path(model_path)
        if not path.is_file():
            raise SlsttError(f"face model not found: {path}; pass an existing .task file to --face-model")
        options = vision.FaceLandmarkerOptions(
            base_options=BaseOptions(model_asset_path=str(path)),
            running_mode=vision.RunningMode.VIDEO if video else vision.RunningMode.IMAGE,
            num_faces=1,
            min_face_detection_confidence=min_confidence,
            min_face_presence_confidence=min_confidence,
            min_tracking_confidence=min_confidence,
        )
        try:
            with quiet_native_stderr():
                self._task = vision.FaceLandmarker.create_from_options(options)
        except Exception as exc:  # noqa: BLE001 - mediapipe raises RuntimeError/ValueError
            reason = first_line(exc)
            raise SlsttError(f"cannot load face model {path}: {reason}; pass a MediaPipe "
                             "face_landmarker.task file") from None
        self.video = video
        self.model_path = path
        self._last_ts = -1
        self.last_depth: np.ndarray | None = None  # (478,) depth of the last detection (px; nearer = smaller)
        self._quiet_calls = 1  # the first inference logs native chatter too
        # Close before interpreter teardown (mediapipe's own __del__ fails at shutdown).
        self._finalizer = weakref.finalize(self, _close_quietly, self._task)

    def detect(self, frame_bgr: np.ndarray, timestamp_ms: int | None = None) -> np.ndarray | None:
        """(478, 2) float32 pixel x, y of the most confident face, or None.

        Video mode needs increasing timestamps: None means "last + 1", and a repeated or
        decreasing one is bumped to last + 1 rather than failing inside MediaPipe."""
        import mediapipe as mp

        channels = 1 if frame_bgr.ndim == 2 else frame_bgr.shape[2]
        code = {1: cv2.COLOR_GRAY2RGB, 3: cv2.COLOR_BGR2RGB, 4: cv2.COLOR_BGRA2RGB}.get(channels)
        if code is None or frame_bgr.dtype != np.uint8:
            raise SlsttError(f"detect: expected a uint8 gray, BGR or BGRA frame, got {frame_bgr.shape} {frame_bgr.dtype}")
        rgb = cv2.cvtColor(frame_bgr, code)  # a contiguous copy, as mp.Image needs
        image = mp.Image(image_format=mp.ImageFormat.SRGB, data=rgb)
        quiet = quiet_native_stderr() if self._quiet_calls else contextlib.nullcontext()
        self._quiet_calls = max(0, self._quiet_calls - 1)
        with quiet:
            if self.video:
                ts = self._last_ts + 1 if timestamp_ms is None else max(int(timestamp_ms), self._last_ts + 1)
                self._last_ts = ts
                result = self._task.detect_for_video(image, ts)
            else:
                result = self._task.detect(image)
        if not result.face_landmarks:
            self.last_depth = None
            return None
        h, w = rgb.shape[:2]
        xyz = np.array([(p.x, p.y, p.z) for p in result.face_landmarks[0]], dtype=np.float32)
        # MediaPipe's z is relative depth on the scale of the image width (the spotter models parallax with it)
        self.last_depth = xyz[:, 2] * np.float32(w)
        return xyz[:, :2] * np.array([w, h], dtype=np.float32)

    def close(self) -> None:
        self._finalizer()

    def __enter__(self) -> FaceLandmarker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass(frozen=True)
class CropBox:
    """Square crop: centre (cx, cy) in pixels, integer side, rotation in degrees (the image is
    rotated counter-clockwise by `angle` about the centre before cropping; 0 for 'slstt')."""

    cx: float
    cy: float
    side: int
    angle: float = 0.0

    def to_dict(self) -> dict[str, float]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CropBox:
        return cls(float(data["cx"]), float(data["cy"]), int(data["side"]), float(data.get("angle", 0.0)))


def _eye_centres(landmarks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    right = (landmarks[LANDMARKS["right_eye_outer"]] + landmarks[LANDMARKS["right_eye_inner"]]) / 2
    left = (landmarks[LANDMARKS["left_eye_outer"]] + landmarks[LANDMARKS["left_eye_inner"]]) / 2
    return right, left


def eye_line_angle(landmarks: np.ndarray) -> float:
    """Angle (deg) of the line from the image-left eye to the image-right eye; 0 when level,
    negative when the face is rotated counter-clockwise on screen."""
    right, left = _eye_centres(landmarks)
    return math.degrees(math.atan2(float(left[1] - right[1]), float(left[0] - right[0])))


def crop_box(landmarks: np.ndarray, recipe: str = "slstt") -> CropBox:
    """Spec 1.2: square centred on the nose tip, side = (chin - brow) + (chin - lower lip) in y.

    'aligned' keeps centre and side but rotates so the eye line is horizontal; its distances
    are measured along the face's own vertical axis (identical to 'slstt' for an upright face)."""
    if landmarks.shape != (NUM_LANDMARKS, 2):
        raise SlsttError(f"crop_box: expected ({NUM_LANDMARKS}, 2) landmarks, got {landmarks.shape}")
    nose, chin = landmarks[LANDMARKS["nose_tip"]], landmarks[LANDMARKS["chin"]]
    brow, lip = landmarks[LANDMARKS["brow"]], landmarks[LANDMARKS["lower_lip"]]
    if recipe == "slstt":
        angle = 0.0
        down = np.array([0.0, 1.0])
    elif recipe == "aligned":
        angle = eye_line_angle(landmarks)
        a = math.radians(angle)
        down = np.array([-math.sin(a), math.cos(a)])  # the face's "down" direction in the image
    else:
        raise SlsttError(f"unknown crop recipe {recipe!r}; choose slstt or aligned")
    side = float((chin - brow) @ down + (chin - lip) @ down)
    if not side > 4:
        raise SlsttError(f"crop_box: degenerate landmarks (side {side:.1f} px); check the face detection")
    return CropBox(float(nose[0]), float(nose[1]), int(round(side)), angle)


TURNED_DEG = 30.0  # a face turned further than this in the frame is cropped upright (face_box)


def face_box(landmarks: np.ndarray, recipe: str = "slstt") -> CropBox:
    """The recipe's crop box, except for a face turned more than TURNED_DEG in the frame (a phone held
    sideways, a head on a pillow, upside down): the paper's box is sized along the image's vertical, so
    it shrinks with the turn and vanishes at 90 degrees; that face gets the 'aligned' box (same centre,
    its own size, eye line level), which shows the network an upright face as in its training data.
    The released data sets' faces are upright, so training crops are the recipe's."""
    if recipe == "slstt" and landmarks.shape == (NUM_LANDMARKS, 2) and abs(eye_line_angle(landmarks)) > TURNED_DEG:
        return crop_box(landmarks, "aligned")
    return crop_box(landmarks, recipe)


def apply_crop(frame: np.ndarray, box: CropBox) -> np.ndarray:
    """side x side crop of `frame` (any channels). The top-left corner is rounded to whole
    pixels so an unrotated box is an exact pixel copy; inside the frame it is a view (no copy).
    Parts outside the frame replicate the border."""
    side = int(box.side)
    x0 = int(round(box.cx - side / 2))
    y0 = int(round(box.cy - side / 2))
    h, w = frame.shape[:2]
    if box.angle == 0.0:
        if x0 >= 0 and y0 >= 0 and x0 + side <= w and y0 + side <= h:
            return frame[y0:y0 + side, x0:x0 + side]
        m = np.array([[1.0, 0.0, -x0], [0.0, 1.0, -y0]])
    else:
        centre = (x0 + side / 2, y0 + side / 2)
        m = cv2.getRotationMatrix2D(centre, box.angle, 1.0)
        m[:, 2] += np.array([side / 2 - centre[0], side / 2 - centre[1]])
    return cv2.warpAffine(frame, m, (side, side), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
