"""The live spot-then-recognise pipeline, with no UI and no loop of its own: the stream runner
(slstt.realtime.runner) feeds it frames for `live`, `analyze`, `demo` and the Python API.

    pipeline = LivePipeline(LiveConfig(), model="model.onnx")   # model=None: spotting only
    for event in pipeline.run(VideoSource("clip.mp4")):          # = StreamRunner(source, pipeline)
        print(event.kind, event.label, event.region)

Per frame: ring buffer <- frame; face tracker (landmarker every k frames) on a worker thread;
spotter (flows on a small face crop) on the frame before, whose face is known by then. When the
spotter closes a micro interval, its frames are copied out of the ring and queued for the
recognizer thread; the event comes out of process() once labelled (macro events, and every event
without a model, come out as soon as they close)."""

from __future__ import annotations

import copy
import dataclasses
import math
import queue
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from slstt.realtime.capture import Frame, FrameRing, VideoSource
from slstt.realtime.events import SpotEvent
from slstt.realtime.recognizer import ClipFrames, Recognition, Recognizer
from slstt.realtime.runner import StreamRunner
from slstt.realtime.sinks import CallbackSink
from slstt.realtime.spotting import Interval, SpotStep, Spotter, SpotterConfig, TraceSink
from slstt.realtime.tracker import FaceState, FaceTracker, TrackerConfig


@dataclass
class LiveConfig:
    spotter: SpotterConfig = field(default_factory=SpotterConfig)
    tracker: TrackerConfig = field(default_factory=TrackerConfig)
    face_model: str | None = None  # MediaPipe .task file (packaged one by default)
    device: str = "auto"  # recognition: auto | tensorrt | cuda | cpu (onnxruntime provider, same names)
    buffer_s: float = 3.0  # frame ring: must hold the longest micro event plus the hangover
    trace_s: float = 10.0  # score history kept for the overlay
    keep_history: bool = True  # every frame's score (analyze's timeline); off for endless live runs
    # track frame i's face on a worker thread while frame i-1 is spotted (MediaPipe and OpenCV release
    # the GIL, so the two share the cores); the same results, one frame later
    parallel_tracking: bool = True
    # analyze's operating curve: followers of the spotter at these threshold_k values, on the same flows
    # (Spotter.follower); their intervals are scored beside the spotter's own, never emitted as events
    sweep_k: tuple[float, ...] = ()


DEVICES = ("auto", "tensorrt", "cuda", "cpu")  # onnxruntime providers of slstt.export.runtime
DURING_SPEECH = ("penalise", "skip")  # SpotterConfig.during_speech
MAX_MICRO_LIMIT_MS = 2000.0  # the frame ring holds 3 s: a micro event and its context must fit


def live_config(*, threshold_k: float | None = None, min_micro_ms: float | None = None,
                max_micro_ms: float | None = None, calibrate: float = 0.0, landmark_every: int = 3,
                face_model: str | Path | None = None, device: str = "auto", sweep_k: str | tuple[float, ...] = (),
                **spotter: Any) -> LiveConfig:
    """A checked LiveConfig from the knobs `live`, `analyze` and `slstt.Detector` share (one line
    naming the option for a bad value; an explicit GPU device that cannot run fails here, in < 3 s).
    `spotter`: any other SpotterConfig field; sweep_k: threshold_k values of an operating curve (analyze)."""
    from slstt.errors import SlsttError, check_int, check_number
    from slstt.export.runtime import check_provider

    if device not in DEVICES:
        raise SlsttError(f"--device {device!r}: choose {', '.join(DEVICES)}")
    check_provider(device)  # before any source opens
    check_number("--calibrate", calibrate, 0.0, 3600.0)
    check_number("--threshold-k", threshold_k, 0.0, 1000.0, low_open=True)
    check_number("--min-micro-ms", min_micro_ms, 0.0, MAX_MICRO_LIMIT_MS, low_open=True)
    check_number("--max-micro-ms", max_micro_ms, 0.0, MAX_MICRO_LIMIT_MS, low_open=True)
    check_int("--landmark-every", landmark_every, 1, 1000)
    sweep_k = check_sweep_k(sweep_k)
    if face_model is not None and not Path(face_model).is_file():
        raise SlsttError(f"--face-model {face_model}: file not found; pass a MediaPipe .task file or leave it out")
    known = set(SpotterConfig.__dataclass_fields__)
    unknown = sorted(set(spotter) - known)
    if unknown:
        raise SlsttError(f"unknown spotter option(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    given = {"threshold_k": threshold_k, "min_micro_ms": min_micro_ms, "max_micro_ms": max_micro_ms, **spotter}
    spot = SpotterConfig(calibrate_s=calibrate, **{k: v for k, v in given.items() if v is not None})
    if spot.during_speech not in DURING_SPEECH:
        raise SlsttError(f"--during-speech {spot.during_speech!r}: choose {' or '.join(DURING_SPEECH)}")
    if spot.min_micro_ms >= spot.max_micro_ms:
        raise SlsttError(f"--min-micro-ms ({spot.min_micro_ms:g}) must be below --max-micro-ms ({spot.max_micro_ms:g})")
    return LiveConfig(spotter=spot, tracker=TrackerConfig(every=landmark_every),
                      face_model=str(face_model) if face_model else None, device=device,
                      sweep_k=tuple(k for k in sweep_k if k != spot.threshold_k))


MAX_SWEEP = 12  # each follower costs its rules on every frame (no flows): a dozen stays cheap


def check_sweep_k(values: Any) -> tuple[float, ...]:
    """--sweep-k: distinct threshold_k values (each > 0), sorted; a string "2,3,4" is accepted."""
    from slstt.errors import SlsttError, check_number

    try:
        parts = values.replace(" ", "").split(",") if isinstance(values, str) else list(values)
        out = sorted({float(v) for v in parts if v != ""})
    except (TypeError, ValueError):
        raise SlsttError(f"--sweep-k {values!r}: give comma-separated numbers, e.g. 2,3,4,6") from None
    for v in out:
        check_number("--sweep-k", v, 0.0, 1000.0, low_open=True)
    if len(out) > MAX_SWEEP:
        raise SlsttError(f"--sweep-k: {len(out)} values; give at most {MAX_SWEEP}")
    return tuple(out)


@dataclass
class PipelineStats:
    frames: int = 0
    face_frames: int = 0
    spot_frames: int = 0  # face frames with a finite spotter score (an interval could open there)
    events: int = 0
    micro: int = 0
    macro: int = 0
    recognized: int = 0
    busy_s: float = 0.0  # time spent in process() (decode excluded)
    started: float = field(default_factory=time.perf_counter)

    @property
    def fps(self) -> float:
        return self.frames / self.busy_s if self.busy_s > 0 else 0.0


class LivePipeline:
    def __init__(self, config: LiveConfig | None = None, model: str | Path | Recognizer | None = None,
                 on_warning: Callable[[str], None] | None = None) -> None:
        self.config = cfg = copy.deepcopy(config or LiveConfig())  # never the caller's object
        self.recognizer: Recognizer | None = None
        if isinstance(model, Recognizer):
            self.recognizer = model
        elif model is not None:
            self.recognizer = Recognizer(model, cfg.device, face_model=cfg.face_model)
        self.device_note = self._device_note()
        if self.recognizer is not None and cfg.tracker.recipe != self.recognizer.preprocess.crop:
            cfg.tracker.recipe = self.recognizer.preprocess.crop  # the fallback box in the model's recipe
        self.tracker = FaceTracker(cfg.tracker, cfg.face_model)
        self.on_warning = on_warning or (lambda message: None)
        self.warnings: list[str] = []
        self.stats = PipelineStats()
        self.spotter: Spotter | None = None
        self.spot_trace: TraceSink | None = None  # the spotter records every candidate's CandidateTrace in it
        self.ring: FrameRing | None = None
        self.fps = 30.0
        self.face: FaceState | None = None
        self.last_step: SpotStep | None = None
        self.trace: deque[tuple[float, float, float]] = deque()  # (t, score, threshold) for the overlay
        self.history: list[tuple[int, float, float, float]] = []  # (index, t, score, threshold), all frames
        self.recent: deque[SpotEvent] = deque(maxlen=6)
        self._done: queue.Queue[SpotEvent] = queue.Queue()
        self._next_index = 0
        self._warned_no_face = False
        self._event_count = 0
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="slstt-track") if cfg.parallel_tracking else None
        self._tracking: tuple[Future[FaceState | None], np.ndarray, int, float] | None = None  # frame in flight

    # --- setup -------------------------------------------------------------------------------
    def _device_note(self) -> str | None:
        """Why recognition runs on the CPU when a GPU provider was possible (for the overlay)."""
        rec = self.recognizer
        if rec is None or self.config.device not in ("auto", "cuda") or any(p != "cpu" for p in rec.providers):
            return None
        from slstt.export.runtime import provider_reason

        reason = provider_reason("cuda")
        return f"recognition on CPU: {reason}" if reason else None

    def start(self, fps: float) -> None:
        self.fps = float(fps) if fps and fps > 0 else 30.0
        self.spotter = Spotter(self.config.spotter, self.fps)
        self.spotter.trace = self.spot_trace
        for k in self.config.sweep_k:
            self.spotter.follower(threshold_k=k)
        self.ring = FrameRing(int(self.config.buffer_s * self.fps) + 2)
        self.trace = deque(maxlen=max(10, int(self.config.trace_s * self.fps)))

    @property
    def has_model(self) -> bool:
        return self.recognizer is not None

    # --- per frame -----------------------------------------------------------------------------
    def process(self, image: np.ndarray, t: float, index: int | None = None) -> list[SpotEvent]:
        """Analyse one BGR frame (in stream order); returns the events finished by now."""
        if self.spotter is None or self.ring is None:
            self.start(self.fps)
        assert self.spotter is not None and self.ring is not None
        t0 = time.perf_counter()
        index = self._next_index if index is None else index
        self._next_index = index + 1
        self.ring.push(Frame(index, t, image))
        if self._pool is None:
            self._analyse(image, index, t, self.tracker.update(image, index, t))
        else:
            previous = self._tracked()
            self._tracking = (self._pool.submit(self._track, image, index, t), image, index, t)
            if previous is not None:
                self._analyse(*previous)
        self.stats.busy_s += time.perf_counter() - t0
        return self._drain()

    def _track(self, image: np.ndarray, index: int, t: float) -> FaceState | None:
        """Worker thread: the tracker mutates its state on later frames, so hand out a copy."""
        face = self.tracker.update(image, index, t)
        return None if face is None else dataclasses.replace(face)

    def _tracked(self) -> tuple[np.ndarray, int, float, FaceState | None] | None:
        """The frame in flight on the tracking thread, once its face is known."""
        if self._tracking is None:
            return None
        future, image, index, t = self._tracking
        self._tracking = None
        return image, index, t, future.result()

    def _analyse(self, image: np.ndarray, index: int, t: float, face: FaceState | None) -> None:
        """Spot on one tracked frame."""
        assert self.spotter is not None
        self.face = face
        gray = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
        step = self.last_step = self.spotter.update(
            gray, index, t, face.box if face else None, face.landmarks if face else None,
            face.depth if face else None)
        self.stats.frames += 1
        if face is not None:
            self.stats.face_frames += 1
            self.stats.spot_frames += int(math.isfinite(step.score))
            self._warned_no_face = False
        elif not self._warned_no_face and self.tracker.no_face_for(t) >= self.config.tracker.warn_after_s:
            self._warned_no_face = True
            self._warn(f"no face found for {self.tracker.no_face_for(t):.1f} s (at {t:.1f} s); "
                       "face the camera, improve the light or check the video")
        self.trace.append((t, step.score, step.threshold))
        if self.config.keep_history:
            # plotted where the score belongs: the candidate apex, one flow gap before this frame
            self.history.append((index, step.scored_s if step.scored_s == step.scored_s else t, step.score,
                                 step.threshold))
        for interval in step.closed:
            self._on_interval(interval)

    def _warn(self, message: str) -> None:
        self.warnings.append(message)
        self.on_warning(message)

    def _on_interval(self, iv: Interval) -> None:
        self._event_count += 1
        event = SpotEvent.from_interval(self._event_count, iv)
        self.stats.events += 1
        if iv.kind == "micro":
            self.stats.micro += 1
        else:
            self.stats.macro += 1
        if iv.kind != "micro" or self.recognizer is None:
            self._done.put(event)
            return
        clip, why_not = self.clip_for(iv)
        if clip is None:
            event.recognition_error = why_not
            self._done.put(event)
        elif not self.recognizer.submit(event, clip, self._on_recognized):
            event.recognition_error = "recognizer busy: event skipped"
            self._done.put(event)

    def clip_for(self, iv: Interval) -> tuple[ClipFrames | None, str | None]:
        """(the event's frames onset..offset, None), or (None, why not) when the ring lacks some.
        Copies: the ring moves on. The tracked apex box rides along as the recognizer's fallback."""
        assert self.ring is not None
        missing = [i for i in range(iv.onset, iv.offset + 1) if not self.ring.has(i)]
        if missing:
            if self.ring.last - iv.onset >= self.ring.capacity:
                return None, "event frames no longer buffered (raise buffer_s)"
            return None, (f"frames missing in the analysis window ({len(missing)} of frames "
                          f"{iv.onset}-{iv.offset} dropped by the camera or source)")
        frames, times = self.ring.copy_range(iv.onset, iv.offset)
        box = self.tracker.box_at(iv.apex) or (self.face.box if self.face else None)
        return ClipFrames(frames, times, iv.apex - iv.onset, box), None

    def _on_recognized(self, event: object, result: Recognition) -> None:
        assert isinstance(event, SpotEvent)
        event.label, event.probabilities = result.label, result.probabilities
        event.recognition_latency_ms, event.recognition_error = result.latency_ms, result.error
        event.recognition_note = result.note
        if result.label is not None:
            self.stats.recognized += 1
        self._done.put(event)

    def _drain(self) -> list[SpotEvent]:
        out = []
        while True:
            try:
                event = self._done.get_nowait()
            except queue.Empty:
                break
            self.recent.append(event)
            out.append(event)
        return out

    def finish(self, timeout: float = 60.0) -> list[SpotEvent]:
        """Close what the stream's end leaves open, wait for pending recognitions; returns the events
        finished meanwhile."""
        previous = self._tracked()
        if previous is not None and self.spotter is not None:
            self._analyse(*previous)
        if self.spotter is not None:
            for interval in self.spotter.flush():
                self._on_interval(interval)
        if self.recognizer is not None:
            self.recognizer.wait(timeout)
        return self._drain()

    # --- whole streams -------------------------------------------------------------------------
    def run(self, source: VideoSource, on_frame: Callable[[Frame, list[SpotEvent]], None] | None = None
            ) -> Iterator[SpotEvent]:
        """Every event of the source, in completion order (the last ones after the stream ends)."""
        return StreamRunner(source, self, [CallbackSink(on_frame=on_frame)]).events()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
        if self.recognizer is not None:
            self.recognizer.close()
        self.tracker.close()
