"""Frame sources (camera index, video file, stream URL) and the frame ring buffer.

Every frame gets an index and a timestamp. Files in analyze mode are read synchronously, every
frame, as fast as possible. Live sources (cameras, URLs, files played at their own rate) are read
by a thread into a bounded queue of a few seconds, so the analysis sees every frame even when it
briefly falls behind; only display frames are skipped (counted by the pipeline). A camera whose
queue overflows (analysis slower than capture for seconds) loses frames: they are counted."""

from __future__ import annotations

import os
import queue
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from slstt.errors import SlsttError

Source = int | str


@dataclass
class Frame:
    index: int  # 0-based position in the stream
    t: float  # seconds since the stream started (file: index / fps; camera: wall clock)
    image: np.ndarray  # BGR uint8 (H, W, 3)


def resolve_source(camera: int | None = None, video: str | None = None, source: str | None = None) -> Source:
    """Exactly one of --camera, --video, --source; a --source of digits is a camera index."""
    given = [x for x in (camera, video, source) if x is not None]
    if len(given) != 1:
        raise SlsttError("give exactly one input: --camera INDEX, --video PATH or --source INDEX|PATH|URL")
    if camera is not None:
        return int(camera)
    if video is not None:
        return str(video)
    text = str(source).strip()
    return int(text) if text.isdigit() else text


def describe(source: Source) -> str:
    return f"camera {source}" if isinstance(source, int) else str(source)


def _is_url(source: Source) -> bool:
    return isinstance(source, str) and "://" in source


def _open(source: Source, timeout_s: float) -> tuple[cv2.VideoCapture, np.ndarray]:
    """Open and read the first frame within timeout_s (a missing camera or dead stream may hang)."""
    if isinstance(source, str) and not _is_url(source):
        path = Path(source)
        if not path.is_file():
            raise SlsttError(f"video not found: {path}; pass an existing video file to --video")
        if not os.access(path, os.R_OK):
            raise SlsttError(f"video not readable: {path}; check its permissions")
    result: dict[str, object] = {}

    def worker() -> None:
        try:
            if isinstance(source, int):
                cap = cv2.VideoCapture(source)
            else:
                cap = cv2.VideoCapture(source, cv2.CAP_FFMPEG)
            ok, frame = cap.read() if cap.isOpened() else (False, None)
            result["cap"], result["ok"], result["frame"] = cap, ok, frame
        except cv2.error as exc:  # some backends raise instead of returning isOpened() == False
            result["error"] = str(exc).strip().splitlines()[-1] if str(exc).strip() else "cv2.error"

    thread = threading.Thread(target=worker, name="slstt-open", daemon=True)
    thread.start()
    thread.join(timeout_s)
    where = describe(source)
    if thread.is_alive():
        raise SlsttError(f"{where}: no frame within {timeout_s:.1f} s; check that the device or stream "
                         "is connected and not used by another program")
    frame = result.get("frame")
    if not result.get("ok") or not isinstance(frame, np.ndarray):
        cap = result.get("cap")
        if isinstance(cap, cv2.VideoCapture):
            cap.release()
        if isinstance(source, int):
            raise SlsttError(f"camera {source} is not available (no device, busy or no permission); "
                             "try another --camera index or use --video PATH")
        if _is_url(source):
            raise SlsttError(f"cannot open stream {source}; check the URL and that the stream is live")
        raise SlsttError(f"cannot read video {source}: OpenCV cannot decode it (not a video or corrupt); "
                         "convert it to mp4/avi or pass another file")
    if frame.ndim == 2:
        frame = cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR)
    return result["cap"], frame  # type: ignore[return-value]


class VideoSource:
    """frames() yields every Frame of the source in order; stop() ends it early (thread-safe)."""

    def __init__(self, source: Source, *, threaded: bool | None = None, pace: bool = False,
                 buffer_s: float = 3.0, open_timeout_s: float = 2.5) -> None:
        self.source = source
        self.is_camera = isinstance(source, int)
        self.is_live = self.is_camera or _is_url(source)
        self._cap, self._first = _open(source, open_timeout_s)
        fps = float(self._cap.get(cv2.CAP_PROP_FPS) or 0.0)
        self.fps = fps if 1.0 <= fps <= 1000.0 else 30.0  # cameras often report 0
        self.height, self.width = self._first.shape[:2]
        count = int(self._cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        self.frame_count = count if count > 0 and not self.is_live else None
        self.threaded = self.is_live or pace if threaded is None else threaded
        self.pace = pace and not self.is_live  # a file played at its own frame rate, like a camera
        self.dropped = 0  # frames lost before analysis (camera queue overflow only)
        self._stop = threading.Event()
        self._queue: queue.Queue[Frame | None] = queue.Queue(maxsize=max(2, int(buffer_s * self.fps)))
        self._thread: threading.Thread | None = None

    def stop(self) -> None:
        self._stop.set()

    @property
    def stopped(self) -> bool:
        return self._stop.is_set()

    def _read_all(self) -> Iterator[Frame]:
        """Synchronous reader: every frame, stamped by its position (files) or clock (live)."""
        t0 = time.monotonic()
        image: np.ndarray | None = self._first
        index = 0
        while image is not None and not self._stop.is_set():
            if self.is_live:
                t = time.monotonic() - t0
            else:
                t = index / self.fps
                if self.pace:
                    delay = t0 + t - time.monotonic()
                    if delay > 0:
                        time.sleep(delay)
            if image.ndim == 2:
                image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
            yield Frame(index, t, image)
            index += 1
            ok, image = self._cap.read()
            if not ok:
                image = None

    def _reader(self) -> None:
        try:
            for frame in self._read_all():
                if self.is_camera:
                    try:
                        self._queue.put_nowait(frame)
                    except queue.Full:
                        self.dropped += 1  # analysis is seconds behind a camera that cannot wait
                    continue
                while not self._stop.is_set():  # files/streams: wait, never drop
                    try:
                        self._queue.put(frame, timeout=0.1)
                        break
                    except queue.Full:
                        continue
        finally:
            self._queue.put(None)

    def frames(self) -> Iterator[Frame]:
        if not self.threaded:
            yield from self._read_all()
            return
        self._thread = threading.Thread(target=self._reader, name="slstt-capture", daemon=True)
        self._thread.start()
        while True:
            try:
                item = self._queue.get(timeout=0.1)
            except queue.Empty:
                if self._stop.is_set() and not self._thread.is_alive():
                    return
                continue
            if item is None or self._stop.is_set():
                return
            yield item

    @property
    def backlog(self) -> int:
        """Frames captured but not yet analysed (the display is skipped while this is large)."""
        return self._queue.qsize()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2.0)
        self._cap.release()

    def __enter__(self) -> VideoSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class FrameRing:
    """The last `capacity` frames (preallocated, overwritten in place), addressed by stream index.

    The recognizer copies an event's frames out of it when the event closes, so the capture
    loop can keep overwriting the ring while recognition runs in its worker thread."""

    def __init__(self, capacity: int) -> None:
        self.capacity = max(2, int(capacity))
        self._images: np.ndarray | None = None
        self._times = np.zeros(self.capacity, dtype=np.float64)
        self._indices = np.full(self.capacity, -1, dtype=np.int64)
        self.last = -1

    def push(self, frame: Frame) -> None:
        if self._images is None or self._images.shape[1:] != frame.image.shape:
            self._images = np.empty((self.capacity,) + frame.image.shape, dtype=np.uint8)
            self._indices[:] = -1
        slot = frame.index % self.capacity
        self._images[slot] = frame.image
        self._times[slot] = frame.t
        self._indices[slot] = frame.index
        self.last = frame.index

    def has(self, index: int) -> bool:
        return index >= 0 and self._indices[index % self.capacity] == index

    def image(self, index: int) -> np.ndarray:
        if not self.has(index) or self._images is None:
            raise KeyError(f"frame {index} is no longer in the ring (last {self.last}, capacity {self.capacity})")
        return self._images[index % self.capacity]

    def time(self, index: int) -> float:
        if not self.has(index):
            raise KeyError(f"frame {index} is no longer in the ring")
        return float(self._times[index % self.capacity])

    def copy_range(self, start: int, end: int) -> tuple[np.ndarray, np.ndarray]:
        """Frames start..end inclusive as an owned (N, H, W, 3) array and their times."""
        idx = list(range(start, end + 1))
        return np.stack([self.image(i) for i in idx]), np.array([self.time(i) for i in idx])
