"""Frame sources (camera index, video file, stream URL) and the frame ring buffer.

Every frame gets an index and a timestamp. Files in analyze mode are read synchronously, every
frame, as fast as possible. Live sources (cameras, URLs, files played at their own rate) are read
by a thread into a bounded queue of a few seconds, so the analysis sees every frame even when it
briefly falls behind; only display frames are skipped (counted by the pipeline). A camera whose
queue overflows (analysis slower than capture for seconds) loses frames: they are counted.

A live source that stops sending (a network stream whose sender stopped, an unplugged camera) is
reported after `StreamPolicy.stall_timeout_s`, then reopened up to `reconnect` times with a
growing wait between attempts. The consumer sees a `GapRecord` (through `on_gap`, in stream order)
for each stall; when every attempt fails the stream ends and `failure` says why. Stream URLs are
opened with FFmpeg's open/read timeouts so a dead sender never blocks a read forever."""

from __future__ import annotations

import os
import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from slstt.errors import SlsttError, first_line
from slstt.realtime.events import GapRecord

Source = int | str

MAX_CAMERA_INDEX = 63  # OpenCV adds backend ids (x100) to larger numbers; no machine has 64 cameras
STREAM_SCHEMES = ("udp", "rtp", "rtsp", "rtsps", "http", "https", "tcp", "rtmp", "rtmps", "srt")


# Threads that may sit inside OpenCV/FFmpeg (opening, reading). One that returns from native code
# while Python shuts down aborts the process ("terminate called without an active exception"), so
# VideoSource.close() waits for them; FFmpeg's open/read timeouts bound that wait for stream URLs.
_CAPTURE_THREADS: list[threading.Thread] = []


def _track(thread: threading.Thread) -> threading.Thread:
    _CAPTURE_THREADS[:] = [t for t in _CAPTURE_THREADS if t.is_alive()]
    _CAPTURE_THREADS.append(thread)
    return thread


def join_capture_threads(timeout: float) -> bool:
    """Wait up to `timeout` s for capture threads still in native code; True when none is left."""
    deadline = time.monotonic() + timeout
    for thread in list(_CAPTURE_THREADS):
        thread.join(max(0.0, deadline - time.monotonic()))
    return not any(t.is_alive() for t in _CAPTURE_THREADS)


class StreamLostError(SlsttError):
    """A live source stopped and did not come back within the reconnection policy."""

    exit_code = 3


@dataclass
class StreamPolicy:
    """What a live source (camera or stream URL) that stops sending frames does."""

    stall_timeout_s: float = 5.0  # no frame for this long: a stall (said at once), then reconnect
    reconnect: int = 5  # reopening attempts per stall; 0 = give up at the first stall
    backoff_s: float = 1.0  # wait before the 2nd attempt (the 1st is immediate); doubles ...
    backoff_max_s: float = 10.0  # ... up to this

    def delay(self, attempt: int) -> float:
        """Seconds to wait before reconnection attempt `attempt` (1-based)."""
        if attempt <= 1:
            return 0.0
        return min(self.backoff_s * 2.0 ** (attempt - 2), self.backoff_max_s)


@dataclass
class Frame:
    index: int  # 0-based position in the stream
    t: float  # seconds since the stream started (file: index / fps; camera: wall clock)
    image: np.ndarray  # BGR uint8 (H, W, 3)


def check_camera_index(index: int, option: str = "--camera") -> int:
    if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index <= MAX_CAMERA_INDEX:
        raise SlsttError(f"{option} {index}: a camera index is a whole number from 0 to {MAX_CAMERA_INDEX} "
                         "(0 = first webcam)")
    return index


def check_stream_url(url: str) -> str:
    scheme = url.split("://", 1)[0].lower()
    if scheme not in STREAM_SCHEMES:
        raise SlsttError(f"--source {url}: unsupported stream scheme {scheme!r}; use one of "
                         f"{', '.join(s + '://' for s in STREAM_SCHEMES)} or a file path")
    return url


def resolve_source(camera: int | None = None, video: str | None = None, source: str | None = None) -> Source:
    """Exactly one of --camera, --video, --source; a --source of digits is a camera index."""
    given = [x for x in (camera, video, source) if x is not None]
    if len(given) != 1:
        raise SlsttError("give exactly one input: --camera INDEX, --video PATH or --source INDEX|PATH|URL")
    if camera is not None:
        return check_camera_index(camera)
    if video is not None:
        return str(video)
    text = str(source).strip()
    if text.lstrip("+-").isdigit():
        return check_camera_index(int(text), "--source")
    if _is_url(text):
        return check_stream_url(text)
    return text


def describe(source: Source) -> str:
    return f"camera {source}" if isinstance(source, int) else str(source)


def _is_url(source: Source) -> bool:
    return isinstance(source, str) and "://" in source


def _check_local(source: Source) -> None:
    if isinstance(source, int):
        check_camera_index(source)  # OpenCV crashes on some negative indices: never pass one
    elif not _is_url(source):
        path = Path(source)
        if not path.is_file():
            raise SlsttError(f"video not found: {path}; pass the path of an existing video file")
        if not os.access(path, os.R_OK):
            raise SlsttError(f"video not readable: {path}; check its permissions")


def _open_failed(source: Source, timeout_s: float) -> SlsttError:
    if isinstance(source, int):
        return SlsttError(f"camera {source} is not available (no device, busy or no permission); "
                          "try another --camera index or use --video PATH")
    if _is_url(source):
        return SlsttError(f"cannot open stream {source} (no frame within {timeout_s:g} s); check the URL "
                          "and that the stream is live")
    return SlsttError(f"cannot read video {source}: OpenCV cannot decode it (not a video or corrupt); "
                      "convert it to mp4/avi or pass another file")


def _open(source: Source, timeout_s: float, read_timeout_s: float | None = None
          ) -> tuple[cv2.VideoCapture, np.ndarray]:
    """Open and read the first frame within timeout_s (a missing camera or dead stream may hang)."""
    _check_local(source)
    result: dict[str, object] = {}
    abandoned = threading.Event()
    params: list[int] = []
    wait_s = timeout_s
    if _is_url(source):  # FFmpeg aborts a blocked open/read itself: no thread left hanging
        read_s = read_timeout_s or timeout_s
        params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, int(timeout_s * 1000),
                  cv2.CAP_PROP_READ_TIMEOUT_MSEC, int(read_s * 1000)]
        wait_s = timeout_s + read_s + 1.0

    def worker() -> None:
        try:
            if isinstance(source, int):
                cap = cv2.VideoCapture(source)
            else:
                cap = cv2.VideoCapture(source, cv2.CAP_FFMPEG, params)
            ok, frame = cap.read() if cap.isOpened() else (False, None)
            result["cap"], result["ok"], result["frame"] = cap, ok, frame
            if abandoned.is_set():  # the caller gave up waiting: nobody else will release it
                cap.release()
        except cv2.error as exc:  # some backends raise instead of returning isOpened() == False
            result["error"] = str(exc).strip().splitlines()[-1] if str(exc).strip() else "cv2.error"

    thread = _track(threading.Thread(target=worker, name="slstt-open", daemon=True))
    thread.start()
    thread.join(wait_s)
    where = describe(source)
    if thread.is_alive():
        abandoned.set()
        raise SlsttError(f"{where}: no frame within {timeout_s:.1f} s; check that the device or stream "
                         "is connected and not used by another program")
    frame = result.get("frame")
    if not result.get("ok") or not isinstance(frame, np.ndarray):
        cap = result.get("cap")
        if isinstance(cap, cv2.VideoCapture):
            cap.release()
        raise _open_failed(source, timeout_s)
    if frame.ndim == 2:
        frame = cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR)
    return result["cap"], frame  # type: ignore[return-value]


class VideoSource:
    """frames() yields every Frame of the source in order; stop() ends it early (thread-safe).

    Live sources: `on_message(text)` hears of stalls and reconnection attempts (from the reader
    thread or the consumer), `on_gap(GapRecord)` is called in the consumer's thread, in stream
    order, before the first frame after a gap (or once with end_s None when the stream is lost)."""

    def __init__(self, source: Source, *, threaded: bool | None = None, pace: bool = False,
                 buffer_s: float = 3.0, open_timeout_s: float = 2.5, policy: StreamPolicy | None = None,
                 on_message: Callable[[str], None] | None = None,
                 on_gap: Callable[[GapRecord], None] | None = None) -> None:
        self.source = source
        self.is_camera = isinstance(source, int)
        self.is_url = _is_url(source)
        self.is_live = self.is_camera or self.is_url
        self.policy = policy or StreamPolicy()
        self.on_message = on_message or (lambda message: None)
        self.on_gap = on_gap or (lambda gap: None)
        self._open_timeout_s = max(open_timeout_s, self.policy.stall_timeout_s) if self.is_url else open_timeout_s
        self._cap, self._first = _open(source, self._open_timeout_s, self._read_timeout())
        fps = float(self._cap.get(cv2.CAP_PROP_FPS) or 0.0)
        self.fps = fps if 1.0 <= fps <= 1000.0 else 30.0  # cameras often report 0
        self.height, self.width = self._first.shape[:2]
        count = int(self._cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        self.frame_count = count if count > 0 and not self.is_live else None
        self._finite = count if 0 < count < 10**9 and self.is_url else None  # a stream of a finite file
        self.threaded = self.is_live or pace if threaded is None else threaded
        self.pace = pace and not self.is_live  # a file played at its own frame rate, like a camera
        self.dropped = 0  # frames lost before analysis (camera queue overflow only)
        self.failure: str | None = None  # why a live source ended early (lost, capture error)
        self.gaps: list[GapRecord] = []
        self._stop = threading.Event()
        self._queue: queue.Queue[Frame | GapRecord | None] = queue.Queue(maxsize=max(2, int(buffer_s * self.fps)))
        self._thread: threading.Thread | None = None
        self._last_frame_wall = time.monotonic()
        self._last_frame: tuple[int, float] = (-1, 0.0)  # (index, t) of the newest frame read
        self._stalled: tuple[int, float] | None = None  # the stall reported and not yet over, if any
        self._stall_lock = threading.Lock()

    def _read_timeout(self) -> float | None:
        return self.policy.stall_timeout_s if self.is_url else None

    def stop(self) -> None:
        self._stop.set()

    @property
    def stopped(self) -> bool:
        return self._stop.is_set()

    def _items(self) -> Iterator[Frame | GapRecord]:
        """Every frame, stamped by its position (files) or clock (live); live sources reconnect."""
        t0 = time.monotonic()
        image: np.ndarray | None = self._first
        index = 0
        while not self._stop.is_set():
            if image is None:
                if not self._may_reconnect(index):
                    return
                gap, image = self._reconnect(t0)
                yield gap
                if image is None:
                    return
                continue
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
            self._last_frame, self._last_frame_wall = (index, t), time.monotonic()
            yield Frame(index, t, image)
            index += 1
            ok, image = self._cap.read()
            if not ok:
                image = None

    def _may_reconnect(self, index: int) -> bool:
        if not (self.is_live and self.threaded) or self._stop.is_set():
            return False
        return self._finite is None or index < self._finite  # a finite stream that ended: done

    def _reconnect(self, t0: float) -> tuple[GapRecord, np.ndarray | None]:
        """Reopen the source with the policy's attempts and waits; the gap, and the first frame or None."""
        where, policy = describe(self.source), self.policy
        last_index, last_t = self._last_frame
        reason = (f"no frame for {policy.stall_timeout_s:g} s" if self.is_url else "the camera stopped sending frames")
        self._cap.release()
        if not self._stop.is_set():
            self._report_stall()
        attempts = 0
        for attempt in range(1, policy.reconnect + 1):
            if self._stop.wait(policy.delay(attempt)):
                break
            attempts = attempt
            self.on_message(f"{where}: reconnecting (attempt {attempt} of {policy.reconnect})")
            try:
                cap, image = _open(self.source, self._open_timeout_s, self._read_timeout())
            except SlsttError:
                continue
            if self._stop.is_set():
                cap.release()
                break
            self._cap = cap
            end_s = time.monotonic() - t0
            gap = GapRecord(last_t, end_s, reason, attempts, last_index)
            self.on_message(f"{where}: reconnected after {end_s - last_t:.1f} s without frames "
                            f"(attempt {attempt}); the gap is recorded in the events")
            return gap, image
        if not self._stop.is_set():
            self.failure = (f"{where}: stream lost at {last_t:.1f} s ({reason}; {attempts} reconnection "
                            f"attempt(s) failed); check the sender, or raise --reconnect / --stall-timeout")
        return GapRecord(last_t, None, reason if not self._stop.is_set() else "stopped during a stall",
                         attempts, last_index), None

    def _put(self, item: Frame | GapRecord) -> None:
        if self.is_camera and isinstance(item, Frame):
            try:
                self._queue.put_nowait(item)
            except queue.Full:
                self.dropped += 1  # analysis is seconds behind a camera that cannot wait
            return
        while not self._stop.is_set():  # files/streams: wait, never drop
            try:
                self._queue.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def _reader(self) -> None:
        try:
            for item in self._items():
                self._put(item)
        except Exception as exc:  # noqa: BLE001 - a decoder error ends the stream with a reason, not a thread trace
            self.failure = f"{describe(self.source)}: capture failed: {first_line(exc)}"
        finally:
            self._cap.release()  # the reader owns the capture while it runs
            while True:  # the end marker; once stopped, the consumer may be gone
                try:
                    self._queue.put(None, timeout=0.1)
                    break
                except queue.Full:
                    if self._stop.is_set():
                        break

    def _check_stall(self) -> None:
        """Consumer side: say so as soon as a live source has sent nothing for the stall timeout
        (a camera read may block for longer; a stream read ends at the timeout, see _reconnect)."""
        if self.is_live and time.monotonic() - self._last_frame_wall >= self.policy.stall_timeout_s:
            self._report_stall()

    def _report_stall(self) -> None:
        """Say once per stall that frames stopped and what happens next."""
        with self._stall_lock:
            if self._stalled is not None:
                return
            self._stalled = self._last_frame
        idle = time.monotonic() - self._last_frame_wall
        if self.is_url:  # FFmpeg's read timeout fired: no packet for that long (maybe before the last frame)
            idle = max(idle, self.policy.stall_timeout_s)
        n = self.policy.reconnect
        then = f"reconnecting (up to {n} attempts)" if n else "giving up (--reconnect 0)"
        what = f"no frame for {idle:.1f} s" if idle >= 0.5 else "frames stopped"
        self.on_message(f"{describe(self.source)}: {what} (stream stalled); {then}")

    def unfinished_gap(self) -> GapRecord | None:
        """A stall still open when the run stopped (the reader never reported its end)."""
        if self._stalled is None:
            return None
        index, t = self._stalled
        return GapRecord(t, None, "stopped during a stall", 0, index)

    def frames(self) -> Iterator[Frame]:
        if not self.threaded:
            yield from (frame for frame in self._items() if isinstance(frame, Frame))
            return
        self._last_frame_wall = time.monotonic()  # model loading since the open is not a stall
        self._thread = _track(threading.Thread(target=self._reader, name="slstt-capture", daemon=True))
        self._thread.start()
        while True:
            try:
                item = self._queue.get(timeout=0.1)
            except queue.Empty:
                if self._stop.is_set() or not self._thread.is_alive():
                    return
                self._check_stall()
                continue
            if item is None or self._stop.is_set():
                return
            if isinstance(item, GapRecord):
                with self._stall_lock:
                    self._stalled = None
                self.gaps.append(item)
                self.on_gap(item)
                continue
            yield item

    @property
    def backlog(self) -> int:
        """Frames captured but not yet analysed (the display is skipped while this is large)."""
        return self._queue.qsize()

    def close(self) -> None:
        """Stop and wait for the reader: a stream read or reopen blocks until FFmpeg's timeouts at
        most. The reader thread releases the capture itself (releasing it under a running read
        would crash)."""
        self._stop.set()
        if self._thread is None:
            self._cap.release()
            return
        bound = self._open_timeout_s + (self._read_timeout() or 0.0) + 2.0
        if not join_capture_threads(0.5):
            self.on_message(f"{describe(self.source)}: waiting up to {bound - 0.5:.0f} s for the reader to stop")
            join_capture_threads(bound - 0.5)

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
