"""Annotated frames for the screen and for --record: face box, motion trace with its threshold,
recent events with labels and confidence, fps, recognition latency, dropped frames, and the
note that this is a research tool."""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np

from slstt.errors import SlsttError
from slstt.realtime.events import check_output_file
from slstt.realtime.pipeline import LivePipeline

DISCLAIMER = "Research tool - not a lie detector"
FONT = cv2.FONT_HERSHEY_SIMPLEX
GREEN, RED, YELLOW, WHITE, GREY = (80, 220, 80), (60, 60, 240), (40, 220, 240), (255, 255, 255), (150, 150, 150)
PANEL_H = 90


def open_writer(path: Path, fps: float, size: tuple[int, int]) -> cv2.VideoWriter:
    """An mp4v VideoWriter (released by the caller: the file is playable once released)."""
    check_output_file(path, "recording", "live.mp4")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SlsttError(f"cannot write the recording {path}: {exc.strerror or exc}; "
                         "pass a path in a writable folder") from None
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), float(fps), size)
    if not writer.isOpened():
        raise SlsttError(f"cannot write the recording {path}; check the folder is writable and the name ends in .mp4")
    return writer


def _text(img: np.ndarray, text: str, org: tuple[int, int], color=WHITE, scale: float = 0.45) -> None:
    (w, h), base = cv2.getTextSize(text, FONT, scale, 1)
    x, y = org
    y0, y1, x1 = max(y - h - 3, 0), min(y + base + 1, img.shape[0]), min(x + w + 3, img.shape[1])
    if y1 > y0 and x1 > x:  # darkened box behind the text: readable on any video
        img[y0:y1, max(x - 3, 0):x1] //= 3
    cv2.putText(img, text, org, FONT, scale, color, 1, cv2.LINE_AA)


def draw_trace(img: np.ndarray, trace: list[tuple[float, float, float]], top: int) -> None:
    """Motion score (green, red above threshold) and threshold (yellow) in a strip at `top`."""
    h, w = img.shape[:2]
    panel = img[top:h]
    panel[:] = (panel * 0.35).astype(np.uint8)
    values = [(s, thr) for _, s, thr in trace if not math.isnan(s)]
    if len(trace) < 2 or not values:
        _text(img, "motion score (waiting for a face)", (8, top + 16), GREY)
        return
    top_value = max(max(thr for _, thr in values) * 2.0, max(s for s, _ in values) * 1.1, 1e-6)
    n = trace[-1][0] - trace[0][0] or 1.0
    inner_h = h - top - 22

    def y(v: float) -> int:
        return int(h - 6 - min(v, top_value) / top_value * inner_h)

    def x(t: float) -> int:
        return int(8 + (t - trace[0][0]) / n * (w - 16))

    points = [(x(t), y(s), s > thr) for t, s, thr in trace if not math.isnan(s)]
    for (x0, y0, _), (x1, y1, hot) in zip(points, points[1:], strict=False):
        cv2.line(img, (x0, y0), (x1, y1), RED if hot else GREEN, 1, cv2.LINE_AA)
    thr_pts = np.array([(x(t), y(thr)) for t, _, thr in trace], dtype=np.int32)
    cv2.polylines(img, [thr_pts], False, YELLOW, 1, cv2.LINE_AA)
    _text(img, f"motion {values[-1][0]:.2f}  threshold {values[-1][1]:.2f} (px)", (8, top + 16), WHITE, 0.4)


def render(image: np.ndarray, pipe: LivePipeline, *, fps: float | None = None, dropped: int = 0,
           display_skipped: int = 0) -> np.ndarray:
    """A copy of `image` (BGR) with the live state drawn on it."""
    img = image.copy()
    h, w = img.shape[:2]
    face, step = pipe.face, pipe.last_step
    if face is not None:
        b = face.box
        color = RED if step is not None and step.active else GREEN
        if b.angle == 0.0:
            half = b.side / 2
            cv2.rectangle(img, (int(b.cx - half), int(b.cy - half)), (int(b.cx + half), int(b.cy + half)), color, 2)
        else:
            pts = cv2.boxPoints(((b.cx, b.cy), (b.side, b.side), -b.angle))
            cv2.polylines(img, [pts.astype(np.int32)], True, color, 2)
    else:
        _text(img, "no face", (10, 48), RED, 0.6)
    draw_trace(img, list(pipe.trace), h - PANEL_H)

    # status line
    rec = pipe.recognizer
    status = [f"{fps if fps is not None else pipe.stats.fps:5.1f} fps"]
    if rec is not None and rec.latencies_ms:
        status.append(f"recognition {rec.latencies_ms[-1]:.0f} ms")
    status.append(f"dropped {dropped}")
    if display_skipped:
        status.append(f"display skipped {display_skipped}")
    _text(img, "  |  ".join(status), (10, 20))
    if rec is None:
        _text(img, "spotting only (no --model): events are not classified", (10, 40), YELLOW)

    # recent events, newest first
    for k, ev in enumerate(reversed(pipe.recent)):
        label = ev.label or ("" if ev.kind == "macro" or rec is None else "?")
        conf = f" {ev.confidence:.0%}" if ev.confidence is not None else ""
        line = f"{ev.apex_s:6.2f}s {ev.kind} {ev.duration_ms:.0f}ms {label}{conf}"
        _text(img, line, (w - 290, 20 + 18 * k), RED if ev.kind == "micro" else GREY)
    _text(img, DISCLAIMER, (10, h - PANEL_H - 8), WHITE, 0.5)
    return img
