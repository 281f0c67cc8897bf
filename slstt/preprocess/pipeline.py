"""Clip -> T flow images: THE preprocessing used by prepare (training), export and live."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np

from slstt.config import PreprocessConfig
from slstt.errors import NoFaceError, SlsttError
from slstt.preprocess.face import CropBox, FaceLandmarker, apply_crop, face_box
from slstt.preprocess.flow import compute_flow, encode_flow
from slstt.preprocess.frames import frame_at, select_positions

APEX_SEARCH_SIZE = 96  # crop side (px) for the 'flow' apex search: coarse motion is enough


@dataclass
class FlowClip:
    images: np.ndarray  # (T, S, S, 3) uint8 flow images at cfg.input_size, RGB
    box: CropBox  # crop used for every frame
    positions: list[float]  # frame positions (0-based clip indices; fractional = blended)
    apex: int  # apex used (annotated, or chosen by cfg.apex_policy)


def _gray(image: np.ndarray) -> np.ndarray:
    """A grayscale copy (never a view: callers' frame buffers may be reused meanwhile)."""
    return image.copy() if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)


def _crop_loader(load_frame: Callable[[int], np.ndarray], box: CropBox,
                 side: int | None = None) -> Callable[[int], np.ndarray]:
    """Grayscale crops, each frame loaded and cropped once per clip (blends share neighbours);
    resized to side x side when a side is given (PreprocessConfig.flow_size)."""
    cache: dict[int, np.ndarray] = {}

    def load(i: int) -> np.ndarray:
        if i not in cache:
            crop = _gray(apply_crop(load_frame(i), box))
            if side is not None and crop.shape[0] != side:
                interpolation = cv2.INTER_AREA if crop.shape[0] > side else cv2.INTER_LINEAR
                crop = cv2.resize(crop, (side, side), interpolation=interpolation)
            cache[i] = crop
        return cache[i]

    return load


def _find_box(load_frame: Callable[[int], np.ndarray], index: int, cfg: PreprocessConfig,
              landmarker: FaceLandmarker | None, where: str) -> CropBox:
    # Checked here, where the landmarker is used: only a clip without a given box needs one.
    if landmarker is None:
        raise SlsttError("clip_to_flow_images needs a FaceLandmarker or a crop box")
    landmarks = landmarker.detect(load_frame(index))
    if landmarks is None:
        raise NoFaceError(f"no face found on frame {index} of {where or 'the clip'}; "
                          "check the frames (face visible, not too small) or exclude the sample")
    return face_box(landmarks, cfg.crop)


def flow_magnitude_series(load_gray_crop: Callable[[int], np.ndarray], onset: int, offset: int,
                          size: int = APEX_SEARCH_SIZE) -> np.ndarray:
    """Mean Farneback flow magnitude from the onset to each frame onset+1..offset, computed on
    crops downscaled to size x size (for choosing an apex when none is annotated)."""
    def small(i: int) -> np.ndarray:
        return cv2.resize(load_gray_crop(i), (size, size), interpolation=cv2.INTER_AREA)

    ref = small(onset)
    series = np.empty(offset - onset, dtype=np.float32)
    for k, i in enumerate(range(onset + 1, offset + 1)):
        flow = compute_flow(ref, small(i), "farneback")
        series[k] = float(cv2.magnitude(flow[..., 0], flow[..., 1]).mean())
    return series


def clip_to_flow_images(load_frame: Callable[[int], np.ndarray], num_frames_in_clip: int,
                        onset: int, apex: int | None, offset: int, cfg: PreprocessConfig,
                        landmarker: FaceLandmarker | None, fps: float, box: CropBox | None = None,
                        *, where: str = "") -> FlowClip:
    """Spec 1: landmarks once on the apex frame (unless `box` is given) -> the same crop for the
    onset and every selected frame -> grayscale -> long-term flow onset->frame -> encode ->
    resize to cfg.input_size. `where` names the sample in error messages."""
    last = num_frames_in_clip - 1
    offset = min(offset, last)  # annotations sometimes point one frame past the clip
    if not 0 <= onset < offset:
        raise SlsttError(f"bad frame indices in {where or 'clip'}: onset {onset}, offset {offset}, "
                         f"{num_frames_in_clip} frames; need 0 <= onset < offset < frames")

    if apex is None and cfg.apex_policy == "flow":
        # Motion is measured inside a face box: the given one or the face on the middle frame.
        # The crop itself is then found on the chosen apex (spec 1.2) unless a box was given.
        search_box = box or _find_box(load_frame, (onset + offset) // 2, cfg, landmarker, where)
        series = flow_magnitude_series(_crop_loader(load_frame, search_box), onset, offset)
        apex = onset + 1 + int(np.argmax(series))
    elif apex is None:
        apex = max((onset + offset) // 2, onset + 1)
    apex = min(max(apex, onset + 1), offset)

    if box is None:
        box = _find_box(load_frame, apex, cfg, landmarker, where)
    if cfg.fps is not None and not (fps and fps > 0):
        raise SlsttError(f"preprocess.fps is {cfg.fps} but {where or 'the clip'} has no valid frame rate "
                         f"({fps}); give the clip's fps or unset preprocess.fps")
    positions = select_positions(onset, apex, offset, cfg.num_frames, src_fps=fps, dst_fps=cfg.fps)

    load_crop = _crop_loader(load_frame, box, cfg.flow_size)
    ref = load_crop(onset)
    size = cfg.input_size
    images = np.empty((len(positions), size, size, 3), dtype=np.uint8)
    for t, position in enumerate(positions):
        flow = compute_flow(ref, frame_at(load_crop, position), cfg.flow, cfg.flow_params)
        image = encode_flow(flow, cfg.encoding, cfg.uvm_scale)
        if image.shape[0] != size:
            cv2.resize(image, (size, size), dst=images[t], interpolation=cv2.INTER_LINEAR)
        else:
            images[t] = image
    return FlowClip(images=images, box=box, positions=positions, apex=apex)
