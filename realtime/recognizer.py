"""Asynchronous recognition of spotted micro-expressions with an exported ONNX model.

The network input is built by THE preprocessing used for training: slstt.preprocess.pipeline.
clip_to_flow_images on the event's buffered frames (onset..offset, as a training clip), with the
crop box found as in training: landmarks once on the apex frame by an IMAGE-mode FaceLandmarker
(the worker's own, made once in its thread), never the smoothed live tracker's box; only when no
face is found there does the tracked box stand in (and the event says so). Temporal resampling
follows the model's metadata: preprocess.fps when set, else the training data's frame rate (meta
data_fps), so a 30 fps webcam and 200 fps training clips give frames at the same temporal spacing.
Classification runs in one worker thread; the capture loop only copies the frames out of its ring
buffer and moves on."""

from __future__ import annotations

import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from slstt.card import serving_fps
from slstt.config import PreprocessConfig
from slstt.errors import NoFaceError, first_line
from slstt.preprocess.face import CropBox, FaceLandmarker
from slstt.preprocess.flow import flow_images_to_input
from slstt.preprocess.pipeline import clip_to_flow_images


def serving_preprocess(preprocess: PreprocessConfig, metadata: dict, where: str = "model") -> PreprocessConfig:
    """The preprocessing to apply live: the model's own, with the frame rate made explicit
    (the model card's rule, slstt.card.serving_fps, on a bare metadata dict)."""
    data_fps = (metadata.get("frame_rate") or {}).get("data_fps", (metadata.get("meta") or {}).get("data_fps"))
    fps = serving_fps(preprocess.fps, data_fps, where)
    return preprocess if fps is None or preprocess.fps is not None else preprocess.replace(fps=fps)


LATENCY_WINDOW = 1000  # recent recognition latencies kept for the overlay and the statistics


@dataclass
class ClipFrames:
    """An event's frames copied out of the ring: frames[0] is the onset, frames[-1] the offset."""

    frames: np.ndarray  # (N, H, W, 3) BGR uint8
    times: np.ndarray  # (N,) seconds
    apex: int  # 0-based within frames
    tracked_box: CropBox | None = None  # live tracker's box at the apex: fallback only

    @property
    def fps(self) -> float:
        """Frame rate measured on the clip itself (cameras do not keep their nominal rate)."""
        span = float(self.times[-1] - self.times[0])
        return (len(self.times) - 1) / span if span > 0 else 30.0


TRACKED_BOX_NOTE = "no face found on the apex frame: cropped with the tracked box instead"


@dataclass
class LiveInput:
    x: np.ndarray  # (T, 3, S, S) float32 network input
    box: CropBox  # crop used for every frame
    note: str | None = None  # set when the box did not come from the apex frame


def build_input(clip: ClipFrames, cfg: PreprocessConfig, landmarker: FaceLandmarker | None = None,
                fps: float | None = None) -> LiveInput:
    """The network input for the clip, exactly as training builds it: clip_to_flow_images with
    box=None (landmarks on the apex frame by an IMAGE-mode `landmarker`) + flow_images_to_input.
    No face there (or no landmarker) -> the tracked box, noted; neither -> NoFaceError."""
    n = len(clip.frames)

    def flow(box: CropBox | None):  # noqa: ANN202 - FlowClip
        return clip_to_flow_images(lambda i: clip.frames[i], n, 0, clip.apex, n - 1, cfg, landmarker,
                                   fps or clip.fps, box=box, where="the live event")

    note = None
    try:
        if landmarker is None:
            raise NoFaceError("no face landmarker for the live event")
        images = flow(None)
    except NoFaceError:
        if clip.tracked_box is None:
            raise
        images, note = flow(clip.tracked_box), TRACKED_BOX_NOTE
    return LiveInput(flow_images_to_input(images.images, cfg), images.box, note)


@dataclass
class Recognition:
    label: str | None
    probabilities: dict[str, float] | None
    latency_ms: float
    error: str | None = None
    note: str | None = None  # e.g. the crop box came from the tracker, not the apex frame


class Recognizer:
    """submit(key, clip, on_done) queues a clip; on_done(key, Recognition) runs in the worker."""

    def __init__(self, model_path: str | Path, provider: str = "auto", max_pending: int = 8,
                 face_model: str | Path | None = None) -> None:
        from slstt.export.runtime import OnnxClassifier, check_provider

        check_provider(provider, "--device")  # said with the live commands' option name
        self.classifier = OnnxClassifier(model_path, provider)
        self.labels = list(self.classifier.labels)
        self.card = self.classifier.card
        self.preprocess = self.card.serving_preprocess(str(model_path))
        self.providers = self.classifier.providers
        self.face_model = face_model
        self._landmarker: FaceLandmarker | None = None  # IMAGE mode, as training; owned by the worker
        self._queue: queue.Queue = queue.Queue(maxsize=max_pending)
        self._thread = threading.Thread(target=self._work, name="slstt-recognizer", daemon=True)
        self._pending = 0
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._ready = threading.Event()
        self._start_error: Exception | None = None
        self.skipped = 0  # clips dropped because the worker was max_pending behind
        self.latencies_ms: deque[float] = deque(maxlen=LATENCY_WINDOW)  # bounded: live runs last hours
        self.recognized = 0  # clips classified (or failed) since the start
        self._thread.start()
        self._ready.wait()
        if self._start_error is not None:  # e.g. a bad --face-model: one line, before any frame
            raise self._start_error

    def prepare(self, clip: ClipFrames) -> LiveInput:
        """Network input for the clip (worker thread: it owns the landmarker)."""
        return build_input(clip, self.preprocess, self._landmarker)

    def classify(self, clip: ClipFrames) -> Recognition:
        t0 = time.perf_counter()
        live = self.prepare(clip)
        probs = self.classifier.predict(live.x[None])[0]
        label = self.labels[int(np.argmax(probs))]
        return Recognition(label, {k: float(p) for k, p in zip(self.labels, probs, strict=True)},
                           (time.perf_counter() - t0) * 1000.0, note=live.note)

    def submit(self, key: object, clip: ClipFrames, on_done: Callable[[object, Recognition], None]) -> bool:
        with self._lock:
            if self._queue.full():
                self.skipped += 1
                return False
            self._pending += 1
        self._queue.put((key, clip, on_done, time.perf_counter()))
        return True

    def _work(self) -> None:
        try:  # made in this thread and used only here: MediaPipe tasks are not shared across threads
            self._landmarker = FaceLandmarker(self.face_model)
        except Exception as exc:  # noqa: BLE001 - re-raised by __init__ in the caller's thread
            self._start_error = exc
            return
        finally:
            self._ready.set()
        try:
            while True:
                item = self._queue.get()
                if item is None:
                    return
                self._handle(*item)
        finally:
            self._landmarker.close()

    def _handle(self, key: object, clip: ClipFrames, on_done: Callable[[object, Recognition], None],
                t0: float) -> None:
        try:
            result = self.classify(clip)
        except Exception as exc:  # noqa: BLE001 - one bad clip must not stop the live loop
            msg = first_line(exc)
            result = Recognition(None, None, 0.0, msg)
        result.latency_ms = (time.perf_counter() - t0) * 1000.0  # event closed -> label known
        self.latencies_ms.append(result.latency_ms)
        self.recognized += 1
        try:
            on_done(key, result)
        finally:
            with self._lock:
                self._pending -= 1
                self._idle.notify_all()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until every submitted clip is classified (True) or the timeout passes."""
        with self._lock:
            return self._idle.wait_for(lambda: self._pending == 0, timeout)

    def close(self) -> None:
        try:
            self._queue.put_nowait(None)
        except queue.Full:  # stopping mid-backlog: the daemon worker ends with the process
            return
        self._thread.join(timeout=5.0)
