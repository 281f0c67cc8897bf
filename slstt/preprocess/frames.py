"""Which T frames of a clip feed the network (spec 1.1), optionally in a resampled time base."""

from __future__ import annotations

import math
from collections.abc import Callable

import cv2
import numpy as np

from slstt.errors import SlsttError

_SNAP = 1e-6  # positions this close to a whole frame are that frame (no needless blend)


def _spread_extra(real: list[float], low: float, count: int) -> list[float]:
    """`count` extra positions spread evenly over the gaps between `real` frames, middle gaps
    first; with a single real frame the gap (low, real[0]) after the onset is used."""
    if len(real) == 1:
        step = (real[0] - low) / (count + 1)
        return [low + step * (j + 1) for j in range(count)]
    gaps = len(real) - 1
    per_gap = [count // gaps] * gaps
    centre = (gaps - 1) / 2
    middle_first = sorted(range(gaps), key=lambda g: (abs(g - centre), g))
    for g in middle_first[: count % gaps]:
        per_gap[g] += 1
    extra = []
    for g, k in enumerate(per_gap):
        a, b = real[g], real[g + 1]
        extra += [a + (b - a) * (j + 1) / (k + 1) for j in range(k)]
    return extra


def select_positions(onset: int, apex: int, offset: int, num_frames: int,
                     src_fps: float | None = None, dst_fps: float | None = None) -> list[float]:
    """T positions (sorted, fractional, in the clip's ORIGINAL frame index space) per spec 1.1:
    start = max(apex - T//2, onset + 1), end = min(start + T - 1, offset).

    With src_fps and dst_fps the rule runs on the clip resampled to dst_fps (a frame every
    src_fps/dst_fps original frames), so clips of any frame rate span the same time.
    Fewer than T real frames: the missing ones are spread evenly over the gaps around the
    middle and later made by linear blending of neighbouring real frames (frame_at), which
    replaces the authors' learned frame interpolator. The onset is never selected."""
    if num_frames < 1:
        raise SlsttError(f"num_frames must be >= 1, got {num_frames}")
    if not onset < offset:
        raise SlsttError(f"clip needs onset < offset to have a frame after the onset, got onset {onset}, offset {offset}")
    ratio = 1.0
    if src_fps is not None and dst_fps is not None:
        if src_fps <= 0 or dst_fps <= 0:
            raise SlsttError(f"frame rates must be > 0, got src {src_fps}, dst {dst_fps}")
        ratio = dst_fps / src_fps  # resampled index = original index * ratio
    first = math.floor(onset * ratio + _SNAP) + 1  # first resampled frame after the onset
    last = math.floor(offset * ratio + _SNAP)
    if last < first:  # clip shorter than one resampled frame step: use the original frames
        ratio, first, last = 1.0, onset + 1, offset
    apex_r = math.floor(apex * ratio + 0.5)
    apex_r = min(max(apex_r, first), last)
    start = max(apex_r - num_frames // 2, first)
    end = min(start + num_frames - 1, last)
    real = [float(k) for k in range(start, end + 1)]
    if len(real) < num_frames:
        real = sorted(real + _spread_extra(real, onset * ratio, num_frames - len(real)))
    positions = []
    for k in real:
        p = k / ratio
        r = round(p)
        p = float(r) if abs(p - r) < _SNAP else p
        positions.append(min(p, float(offset)))  # float round-off only
    return positions


def frame_at(load_frame: Callable[[int], np.ndarray], position: float) -> np.ndarray:
    """The frame at a fractional position: a whole frame as loaded, otherwise the linear blend
    of its two neighbours (at most two loads)."""
    i = math.floor(position + _SNAP)
    w = position - i
    if w < _SNAP:
        return load_frame(i)
    a, b = load_frame(i), load_frame(i + 1)
    return cv2.addWeighted(a, 1.0 - w, b, w, 0.0)
