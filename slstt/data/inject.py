"""Micro-movements injected into a REAL video at known times (`slstt synth --inject VIDEO`).

The webcam generator (slstt.data.webcam) is the project's own world; a spotter tuned on it can
still fail on a real person. This puts the same AU-placed micro events (webcam.MICRO_VARIANTS:
Gaussian displacement bumps with a raised-cosine rise and return over 0.2-0.5 s, 1.5 / 2.5 / 4 px
peak displacement in video pixels at the apex) into footage you own: every frame's MediaPipe
landmarks are tracked first, each event's bumps ride on the landmarks they were placed on, and the
frame is warped locally (cv2.remap). Everything else (the person's own talking, head motion,
expressions, the camera) is the real footage. The output is re-encoded (H.264, CRF `crf`) together
with a control copy without events, encoded the same way, so false spots per minute are measured
on the same pixels minus the events.

Ground truth: <name>.gt.csv (webcam.GT_COLUMNS: what `slstt analyze` scores) and <name>.events.json.
context: quiet = within 0.15 s of the event no frame was talking (the tracked inner lips' opening
varied by more than QUIET_LIPS of the crop within 0.5 s of it) and the head moved less than
webcam.QUIET_HEAD_PX (crop-112 px per 0.2 s); busy otherwise. Frames without a detected face never carry an event.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict
from pathlib import Path

import cv2
import numpy as np

from slstt.data import synth
from slstt.data.webcam import (
    CROP_PX,
    GAP_S,
    MICRO_AMPLITUDES,
    MICRO_REGIONS,
    MICRO_VARIANTS,
    QUIET_HEAD_PX,
    WebcamEvent,
    _anchors,
    _H264Writer,
    _ride,
    check_replaceable,
    gt_rows,
)
from slstt.errors import SlsttError

INJECT_KIND = "slstt.synth.injected"
INJECT_VERSION = 1
QUIET_LIPS = 0.02  # inner-lip opening change (fraction of the crop side) that counts as talking
RIGID = (1, 4, 10, 152, 234, 454, 33, 263)  # nose tip, nose bridge, forehead, chin, face sides, eye corners
SMOOTH_FRAMES = 2  # landmarks are averaged over +-this many frames (MediaPipe jitters ~0.3 px)


def _open(video: Path) -> tuple[cv2.VideoCapture, float, int, tuple[int, int]]:
    if not video.is_file():
        raise SlsttError(f"--inject: {video} is not a file; pass a video you recorded (mp4, avi, mov, mkv)")
    cap = cv2.VideoCapture(str(video), cv2.CAP_FFMPEG)
    ok = cap.isOpened()
    fps = float(cap.get(cv2.CAP_PROP_FPS)) if ok else 0.0
    size = (int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))) if ok else (0, 0)
    if not ok or min(size) < 16:
        cap.release()
        raise SlsttError(f"--inject: OpenCV cannot decode {video} (not a video or corrupt); convert it to mp4")
    if not (np.isfinite(fps) and 1.0 <= fps <= 1000.0):
        cap.release()
        raise SlsttError(f"--inject: {video} reports {fps:g} fps; re-encode it with a constant frame rate "
                         "(ffmpeg -i IN -r 30 OUT.mp4)")
    return cap, fps, int(cap.get(cv2.CAP_PROP_FRAME_COUNT)), size


def _frames(video: Path):
    cap, _, _, _ = _open(video)
    try:
        while True:
            ok, frame = cap.read()
            if not ok:
                return
            yield frame if frame.ndim == 3 else cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR)
    finally:
        cap.release()


def track(video: Path, face_model: str | Path | None = None, progress: bool = False) -> tuple[np.ndarray, float,
                                                                                               tuple[int, int]]:
    """(n, 478, 2) landmarks per frame (NaN where no face), fps, (width, height). MediaPipe's
    tracking mode; the landmarks are then averaged over +-SMOOTH_FRAMES frames of the same face run."""
    from slstt.preprocess.face import FaceLandmarker

    cap, fps, count, size = _open(video)
    cap.release()
    out = []
    with FaceLandmarker(face_model, video=True) as marker, \
            synth._progress(progress, f"tracking {video.name}", max(count, 1)) as advance:
        for i, frame in enumerate(_frames(video)):
            lm = marker.detect(frame, int(round(1000 * i / fps)))
            out.append(np.full((478, 2), np.nan, np.float32) if lm is None else lm)
            advance()
    if not out:
        raise SlsttError(f"--inject: {video} has no frames")
    raw = np.stack(out)
    smooth = raw.copy()
    for i in range(len(raw)):
        window = raw[max(0, i - SMOOTH_FRAMES):i + SMOOTH_FRAMES + 1]
        if np.isfinite(raw[i, 0, 0]) and np.isfinite(window[:, 0, 0]).all():
            smooth[i] = window.mean(0)
    return smooth, fps, size


def _crop_side(lm: np.ndarray) -> float:
    from slstt.preprocess.face import face_box

    return float(face_box(lm).side)  # the spotter's crop size, also for a face turned in the frame


def _contexts(lm: np.ndarray, fps: float) -> tuple[np.ndarray, np.ndarray]:
    """Per frame: talking (inner lips opening/closing) and head speed (crop-112 px per 0.2 s)."""
    n = len(lm)
    face = np.isfinite(lm[:, 0, 0])
    side = np.array([_crop_side(lm[i]) if face[i] else np.nan for i in range(n)])
    opening = np.linalg.norm(lm[:, 14] - lm[:, 13], axis=1) / side
    k = max(1, int(round(0.2 * fps)))
    speed = np.full(n, np.inf)
    moved = np.linalg.norm(lm[k:, RIGID] - lm[:-k, RIGID], axis=2).mean(1) * CROP_PX / side[:-k]
    speed[:-k] = np.where(np.isfinite(moved), moved, np.inf)
    w = max(1, int(round(0.5 * fps)))
    talking = np.zeros(n, bool)
    for i in range(n):
        seg = opening[max(0, i - w):i + w + 1]
        seg = seg[np.isfinite(seg)]
        talking[i] = len(seg) > 2 and float(seg.max() - seg.min()) > QUIET_LIPS
    return talking, speed


def plan_injection(lm: np.ndarray, fps: float, seed: int, n_micro: int | None = None,
                   amplitudes: tuple[float, ...] = MICRO_AMPLITUDES,
                   contexts: tuple[np.ndarray, np.ndarray] | None = None) -> list[WebcamEvent]:
    """Micro events at random free moments of the tracked face (>= webcam.GAP_S apart, 1 s from the
    start); regions cycle through webcam.MICRO_REGIONS, amplitudes through `amplitudes`. n_micro None:
    one per 2 s of face. Fewer are placed (never an error) when the face is not there long enough.
    contexts: _contexts(lm, fps) when already computed (one per video, not per copy)."""
    n = len(lm)
    rng = np.random.default_rng([seed, 71])
    face = np.isfinite(lm[:, 0, 0])
    if n_micro is None:
        n_micro = int(face.sum() / fps // 2)
    taken = ~face
    taken[:int(1.0 * fps)] = True
    taken[max(0, n - int(0.8 * fps)):] = True
    talking, speed = _contexts(lm, fps) if contexts is None else contexts
    pad = int(round(0.15 * fps))
    # the cycle starts at a seed-dependent amplitude: short videos with one or two events still cover all
    amps = [amplitudes[(k + seed) % len(amplitudes)] for k in range(n_micro)]
    amps = [amps[k] for k in rng.permutation(len(amps))]
    offset_region = int(rng.integers(len(MICRO_REGIONS)))
    events = []
    for k in range(n_micro):
        length = max(2, int(round(rng.uniform(0.2, 0.5) * fps)))
        free = np.convolve(taken.astype(int), np.ones(length + 1, int), "valid") == 0
        choices = np.flatnonzero(free)
        if not len(choices):
            break
        on = int(choices[rng.integers(len(choices))])
        off = on + length
        taken[max(on - int(GAP_S * fps), 0):off + int(GAP_S * fps) + 1] = True
        region = MICRO_REGIONS[(k + offset_region) % len(MICRO_REGIONS)]
        variants = list(MICRO_VARIANTS[region])
        variant = variants[int(rng.integers(len(variants)))]
        apex = min(max(on + int(round(rng.uniform(0.35, 0.6) * (off - on))), on + 1), off - 1)
        near = slice(max(on - pad, 0), off + pad + 1)
        quiet = not talking[near].any() and float(speed[near].max()) < QUIET_HEAD_PX
        amp = float(amps[k])
        events.append(WebcamEvent("micro", region, on, apex, off, region, amp, "quiet" if quiet else "busy", variant,
                                  round(amp * CROP_PX / _crop_side(lm[apex]), 4)))
    return sorted(events, key=lambda e: e.onset)


def _shapes(events: list[WebcamEvent], lm: np.ndarray) -> list[tuple[WebcamEvent, np.ndarray, list, np.ndarray]]:
    out = []
    t = np.arange(len(lm))
    for e in events:
        apex_lm = lm[e.apex].astype(np.float64)
        bumps = synth.motion_bumps(apex_lm, MICRO_VARIANTS[e.region][e.variant], e.amplitude_px)
        out.append((e, synth.rise_fall(t, e.onset, e.apex, e.offset), bumps, _anchors(bumps, apex_lm)))
    return out


def warp(frame: np.ndarray, bumps: list[synth.Bump]) -> np.ndarray:
    """The frame with the content near each bump moved by its vector (a local remap of its box)."""
    if not bumps:
        return frame
    h, w = frame.shape[:2]
    r = 3.5 * max(b.sigma for b in bumps) + 4 * max(float(np.abs(b.vector).max()) for b in bumps) + 2
    centers = np.array([b.center for b in bumps])
    x0, y0 = (int(max(0, v)) for v in centers.min(0) - r)
    x1, y1 = int(min(w, centers[:, 0].max() + r)), int(min(h, centers[:, 1].max() + r))
    if x1 <= x0 or y1 <= y0:
        return frame
    d = synth.bumps_field(bumps, (y1 - y0, x1 - x0), (x0, y0))
    gy, gx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
    out = frame.copy()
    out[y0:y1, x0:x1] = cv2.remap(frame, gx - d[..., 0], gy - d[..., 1], cv2.INTER_LINEAR,
                                  borderMode=cv2.BORDER_REPLICATE)
    return out


def _check_outputs(video: Path, outs: list[Path]) -> None:
    """Never the input; only our own earlier output (its events.json says so) may be replaced."""
    src = video.resolve()
    for out in outs:
        if any(f.resolve() == src for f in (out, out.with_suffix(".gt.csv"), out.with_suffix(".events.json"))):
            raise SlsttError(f"--inject: the output {out} would overwrite the input video; choose another OUT_DIR")
        check_replaceable(out, INJECT_KIND, "slstt synth --inject")


def inject_videos(video: str | os.PathLike, out_dir: str | os.PathLike, copies: int = 1, seed: int = 0,
                  n_micro: int | None = None, crf: int = 18, face_model: str | Path | None = None,
                  progress: bool = False) -> list[Path]:
    """Write `copies` videos <stem>_inj<seed>_<k>.mp4 with micro events (placement seed [seed, k]) and
    one control <stem>_noevents.mp4 without, all re-encoded alike, each with .gt.csv and .events.json.
    Returns the ground-truth paths (the control's last)."""
    from slstt.io import atomic_write_text

    video, out_dir = Path(video), Path(out_dir)
    if copies < 0:
        raise SlsttError(f"--videos must be 0 or more for --inject, got {copies}")
    if not 0 <= crf <= 51:
        raise SlsttError(f"crf must be in 0..51, got {crf}")
    names = [f"{video.stem}_inj{seed}_{k}.mp4" for k in range(copies)] + [f"{video.stem}_noevents.mp4"]
    outs = [out_dir / name for name in names]
    _check_outputs(video, outs)
    lm, fps, size = track(video, face_model, progress)
    face_frames = int(np.isfinite(lm[:, 0, 0]).sum())
    if face_frames == 0:
        raise SlsttError(f"--inject: no face found in {video}; use footage with one face in view")
    from slstt.provenance import file_sha256

    source = {"name": video.name, "sha256": file_sha256(video), "frames": len(lm), "face_frames": face_frames}
    contexts = _contexts(lm, fps)
    gts = []
    for k, out in enumerate(outs):
        control = k == copies
        events = [] if control else plan_injection(lm, fps, seed * 1000 + k, n_micro, contexts=contexts)
        shapes = _shapes(events, lm)
        with _H264Writer(out, fps, size, crf) as write, \
                synth._progress(progress, f"writing {out.name}", len(lm)) as advance:
            for i, frame in enumerate(_frames(video)):
                if i >= len(lm):
                    break
                bumps = [b for e, profile, made, anchor in shapes if e.onset < i < e.offset and profile[i] > 0
                         for b in _ride(made, anchor, lm[e.apex].astype(np.float64), lm[i].astype(np.float64),
                                        float(profile[i]))]
                write(warp(frame, bumps))
                advance()
        gt = out.with_suffix(".gt.csv")
        atomic_write_text(gt, "\n".join(gt_rows(events, fps, video.stem)) + "\n")
        info = {"kind": INJECT_KIND, "version": INJECT_VERSION, "source": source, "seed": None if control else [seed * 1000 + k, 71],
                "fps": fps, "size": list(size), "n_frames": len(lm), "crf": crf,
                "amplitude_definition": "micro amplitude_px: peak displacement (video px) of the injected warp at the apex",
                "events": [asdict(e) for e in events]}
        atomic_write_text(out.with_suffix(".events.json"), json.dumps(info, indent=1) + "\n")
        gts.append(gt)
    return gts
