"""Annotated frames for the screen and for --record: face box, the spotter's score / threshold
trace, recent events with the facial region that fired, labels and confidence, fps, recognition
latency, dropped frames, and the note that this is a research tool.

Drawing works on an `OverlayState`, a snapshot taken in the analysis thread (cheap copies), so
the window and the recorder render in their own threads."""

from __future__ import annotations

import math
import os
import queue
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import cv2
import numpy as np

from slstt.errors import SlsttError
from slstt.preprocess.face import CropBox
from slstt.realtime.events import SpotEvent, check_output_file

DISCLAIMER = "Research tool - not a lie detector"
FONT = cv2.FONT_HERSHEY_SIMPLEX
GREEN, RED, YELLOW, WHITE, GREY = (80, 220, 80), (60, 60, 240), (40, 220, 240), (255, 255, 255), (150, 150, 150)
PANEL_H = 90


RECORD_FORMATS = {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov", ".mkv": "matroska"}


def _ffmpeg_encoder(ffmpeg: str) -> str | None:
    """libx264 when this ffmpeg has it, else mpeg4 (both in Debian's ffmpeg); None if it cannot run."""
    try:
        out = subprocess.run([ffmpeg, "-hide_banner", "-encoders"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    return "libx264" if " libx264 " in out.stdout else "mpeg4"


class Recorder:
    """Annotated frames to a video file from a writer thread, so encoding never stalls analysis.

    With ffmpeg on PATH: raw frames are piped to ffmpeg writing fragmented MP4 (moov first, a
    fragment per keyframe, about one a second) or Matroska, flushed per packet, so the file is
    playable after a crash or kill -9 (up to its last second). ffmpeg runs in its own session: a
    terminal Ctrl-C reaches slstt only, which then closes the pipe and ffmpeg finishes the file.
    Without ffmpeg: cv2.VideoWriter (mp4v), playable only once release() ran.

    `drop_when_full`: live runs drop frames (counted in `dropped`) rather than wait when the encoder
    falls seconds behind; analyze waits (every frame recorded)."""

    def __init__(self, path: Path, fps: float, size: tuple[int, int], *, drop_when_full: bool = False,
                 queue_s: float = 2.0) -> None:
        self.path, self.fps, self.size = path, float(fps), (int(size[0]), int(size[1]))
        self.drop_when_full = drop_when_full
        self.dropped = 0
        self.written = 0
        self.error: str | None = None
        self._proc: subprocess.Popen | None = None
        self._cv_writer: cv2.VideoWriter | None = None
        self._log: IO[bytes] | None = None
        ffmpeg = shutil.which("ffmpeg")
        encoder = _ffmpeg_encoder(ffmpeg) if ffmpeg else None
        if ffmpeg and encoder:
            self._start_ffmpeg(ffmpeg, encoder)
            kind = "Matroska" if RECORD_FORMATS[path.suffix.lower()] == "matroska" else "fragmented mp4"
            self.backend = f"ffmpeg {encoder}, {kind}"
        else:
            self._cv_writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"mp4v"), self.fps, self.size)
            if not self._cv_writer.isOpened():
                raise SlsttError(f"cannot write the recording {path}; check the folder is writable")
            self.backend = "cv2 mp4v (no ffmpeg on PATH: the file is playable only after a clean stop)"
        self._queue: queue.Queue[tuple[np.ndarray, OverlayState | None] | None] = queue.Queue(
            maxsize=max(4, int(queue_s * self.fps)))
        self._thread = threading.Thread(target=self._run, name="slstt-recorder", daemon=True)
        self._thread.start()

    def _start_ffmpeg(self, ffmpeg: str, encoder: str) -> None:
        fmt = RECORD_FORMATS[self.path.suffix.lower()]
        gop = str(max(1, round(self.fps)))  # a keyframe, hence a fragment, about every second
        codec = (["-c:v", "libx264", "-preset", "ultrafast", "-tune", "zerolatency", "-crf", "23"]
                 if encoder == "libx264" else ["-c:v", "mpeg4", "-q:v", "4"])
        container = ["-movflags", "+frag_keyframe+empty_moov+default_base_moof"] if fmt in ("mp4", "mov") else []
        w, h = self.size
        cmd = [ffmpeg, "-hide_banner", "-loglevel", "error", "-nostats",
               "-f", "rawvideo", "-pix_fmt", "bgr24", "-video_size", f"{w}x{h}", "-framerate", f"{self.fps:g}",
               "-i", "pipe:0", "-an", "-vf", "pad=ceil(iw/2)*2:ceil(ih/2)*2", *codec, "-pix_fmt", "yuv420p",
               "-g", gop, *container, "-flush_packets", "1", "-f", fmt, "-y", str(self.path)]
        self._log = tempfile.TemporaryFile()  # noqa: SIM115 - ffmpeg's messages; closed in release()
        try:
            self._proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=self._log,
                                          start_new_session=True)
        except OSError as exc:
            raise SlsttError(f"cannot start ffmpeg for the recording {self.path}: {exc.strerror or exc}") from None

    def write(self, image: np.ndarray, state: OverlayState | None = None) -> None:
        """Queue one BGR frame; with `state`, the overlay is drawn on it in the writer thread."""
        if self.error is not None:
            return
        if self.drop_when_full:
            try:
                self._queue.put_nowait((image, state))
            except queue.Full:
                self.dropped += 1
            return
        self._queue.put((image, state))

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            if self.error is not None:
                continue  # drain: write() stops queueing once it sees the error
            image = item[0] if item[1] is None else render(item[0], item[1])
            if (image.shape[1], image.shape[0]) != self.size:  # a reconnected stream changed size
                image = cv2.resize(image, self.size, interpolation=cv2.INTER_AREA)
            try:
                if self._proc is not None:
                    assert self._proc.stdin is not None
                    self._proc.stdin.write(np.ascontiguousarray(image).tobytes())
                else:
                    assert self._cv_writer is not None
                    self._cv_writer.write(image)
                self.written += 1
            except (BrokenPipeError, OSError) as exc:
                self.error = f"ffmpeg stopped writing {self.path} ({self._ffmpeg_message() or exc})"

    def _ffmpeg_message(self) -> str:
        if self._log is None:
            return ""
        self._log.seek(0)
        lines = [ln.strip() for ln in self._log.read().decode("utf-8", "replace").splitlines() if ln.strip()]
        return lines[-1][:200] if lines else ""

    def release(self, timeout: float = 60.0) -> None:
        """Write what is queued and finish the file (idempotent)."""
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join(timeout)
        if self._cv_writer is not None:
            self._cv_writer.release()
            self._cv_writer = None
        if self._proc is not None:
            proc, self._proc = self._proc, None
            try:
                if proc.stdin is not None:
                    proc.stdin.close()
            except OSError:
                pass
            try:
                code = proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                code = proc.wait()
            if code != 0 and self.error is None:
                self.error = f"ffmpeg exited with {code} writing {self.path} ({self._ffmpeg_message()})"
        if self._log is not None:
            self._log.close()
            self._log = None


def open_writer(path: Path, fps: float, size: tuple[int, int], *, drop_when_full: bool = False) -> Recorder:
    """A Recorder for `path` (.mp4/.mov/.m4v/.mkv); the caller calls write() per frame and release()."""
    path = Path(path)
    check_output_file(path, "recording", "live.mp4")
    if path.suffix.lower() not in RECORD_FORMATS:
        raise SlsttError(f"recording {path}: name it .mp4 or .mkv (fragmented mp4 / Matroska stay playable "
                         "after a crash)")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SlsttError(f"cannot write the recording {path}: {exc.strerror or exc}; "
                         "pass a path in a writable folder") from None
    if not os.access(path.parent, os.W_OK):  # ffmpeg would only fail at the first frame
        raise SlsttError(f"cannot write the recording {path}: folder not writable; pass a path in a writable folder")
    return Recorder(path, fps, size, drop_when_full=drop_when_full)


@dataclass
class OverlayState:
    """What the overlay shows, copied out of the pipeline in the analysis thread."""

    face_box: CropBox | None = None
    active: bool = False  # a candidate interval is open
    trace: list[tuple[float, float, float]] = field(default_factory=list)  # (t, score, threshold)
    recent: list[SpotEvent] = field(default_factory=list)
    fps: float = 0.0
    latency_ms: float | None = None
    has_model: bool = False
    dropped: int = 0
    display_skipped: int = 0
    note: str | None = None  # e.g. why recognition runs on the CPU

    @classmethod
    def of(cls, pipe: Any, *, fps: float | None = None, dropped: int = 0, display_skipped: int = 0,
           note: str | None = None) -> OverlayState:
        """A snapshot of a LivePipeline (face, last step, trace, recent events, statistics)."""
        rec = pipe.recognizer
        latencies = rec.latencies_ms if rec is not None else ()
        step = pipe.last_step
        return cls(pipe.face.box if pipe.face is not None else None, bool(step is not None and step.active),
                   list(pipe.trace), list(pipe.recent), pipe.stats.fps if fps is None else fps,
                   latencies[-1] if latencies else None, rec is not None, dropped, display_skipped,
                   note if note is not None else getattr(pipe, "device_note", None))


def _text(img: np.ndarray, text: str, org: tuple[int, int], color=WHITE, scale: float = 0.45) -> None:
    (w, h), base = cv2.getTextSize(text, FONT, scale, 1)
    x, y = org
    y0, y1, x1 = max(y - h - 3, 0), min(y + base + 1, img.shape[0]), min(x + w + 3, img.shape[1])
    if y1 > y0 and x1 > x:  # darkened box behind the text: readable on any video
        img[y0:y1, max(x - 3, 0):x1] //= 3
    cv2.putText(img, text, org, FONT, scale, color, 1, cv2.LINE_AA)


def draw_trace(img: np.ndarray, trace: Sequence[tuple[float, float, float]], top: int) -> None:
    """The spotter's score / threshold (green, red at or above 1) and the threshold line (yellow, at
    1.0: the score is already relative to each region's own threshold) in a strip at `top`."""
    h, w = img.shape[:2]
    panel = img[top:h]
    panel[:] = (panel * 0.35).astype(np.uint8)
    values = [(s, thr) for _, s, thr in trace if math.isfinite(s)]
    if len(trace) < 2 or not values:
        _text(img, "score / threshold (waiting for a face)", (8, top + 16), GREY)
        return
    top_value = max(max(thr for _, thr in values) * 2.0, max(s for s, _ in values) * 1.1, 1e-6)
    n = trace[-1][0] - trace[0][0] or 1.0
    inner_h = h - top - 22

    def y(v: float) -> int:
        return int(h - 6 - min(v, top_value) / top_value * inner_h)

    def x(t: float) -> int:
        return int(8 + (t - trace[0][0]) / n * (w - 16))

    points = [(x(t), y(s), s >= thr) for t, s, thr in trace if math.isfinite(s)]
    for (x0, y0, _), (x1, y1, hot) in zip(points, points[1:], strict=False):
        cv2.line(img, (x0, y0), (x1, y1), RED if hot else GREEN, 1, cv2.LINE_AA)
    thr_pts = np.array([(x(t), y(thr)) for t, _, thr in trace if math.isfinite(thr)], dtype=np.int32)
    if len(thr_pts) >= 2:
        cv2.polylines(img, [thr_pts], False, YELLOW, 1, cv2.LINE_AA)
    _text(img, f"score / threshold {values[-1][0]:.2f}", (8, top + 16), WHITE, 0.4)


def _draw_face(img: np.ndarray, box: CropBox | None, active: bool) -> None:
    if box is None:
        _text(img, "no face", (10, 48), RED, 0.6)
        return
    color = RED if active else GREEN
    if box.angle == 0.0:
        half = box.side / 2
        cv2.rectangle(img, (int(box.cx - half), int(box.cy - half)), (int(box.cx + half), int(box.cy + half)), color, 2)
    else:
        pts = cv2.boxPoints(((box.cx, box.cy), (box.side, box.side), -box.angle))
        cv2.polylines(img, [pts.astype(np.int32)], True, color, 2)


def _status_line(state: OverlayState) -> str:
    status = [f"{state.fps:5.1f} fps"]
    if state.latency_ms is not None:
        status.append(f"recognition {state.latency_ms:.0f} ms")
    status.append(f"dropped {state.dropped}")
    if state.display_skipped:
        status.append(f"display skipped {state.display_skipped}")
    return "  |  ".join(status)


def event_caption(ev: SpotEvent, has_model: bool) -> str:
    """One recent event: time, kind, duration, the facial region that fired, label and confidence."""
    label = ev.label or ("" if ev.kind == "macro" or not has_model else "?")
    conf = f" {ev.confidence:.0%}" if ev.confidence is not None else ""
    region = f" [{ev.region}]" if ev.region else ""
    return f"{ev.apex_s:6.2f}s {ev.kind} {ev.duration_ms:.0f}ms{region} {label}{conf}".rstrip()


def render(image: np.ndarray, state: Any, *, fps: float | None = None, dropped: int = 0,
           display_skipped: int = 0) -> np.ndarray:
    """A copy of `image` (BGR) with the live state drawn on it; `state` is an OverlayState (or a
    LivePipeline, snapshotted here with the keyword values)."""
    if not isinstance(state, OverlayState):
        state = OverlayState.of(state, fps=fps, dropped=dropped, display_skipped=display_skipped)
    img = image.copy()
    h, w = img.shape[:2]
    _draw_face(img, state.face_box, state.active)
    draw_trace(img, state.trace, h - PANEL_H)
    _text(img, _status_line(state), (10, 20))
    if not state.has_model:
        _text(img, "spotting only (no --model): events are not classified", (10, 40), YELLOW)
    elif state.note:
        _text(img, state.note[:90], (10, 40), YELLOW)
    top = 20 if w >= 640 else 60  # narrow frames: below the status lines
    for k, ev in enumerate(reversed(state.recent)):  # newest first, right-aligned
        caption = event_caption(ev, state.has_model)
        width = cv2.getTextSize(caption, FONT, 0.45, 1)[0][0]
        _text(img, caption, (max(4, w - width - 8), top + 18 * k), RED if ev.kind == "micro" else GREY)
    _text(img, DISCLAIMER, (10, h - PANEL_H - 8), WHITE, 0.5)
    return img
