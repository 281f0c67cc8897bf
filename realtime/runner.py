"""THE frame loop: a source, the live pipeline, and sinks. `slstt live`, `slstt analyze`, the demo,
`LivePipeline.run` and the Python API (`slstt.Detector.stream`) all run streams through it.

    runner = StreamRunner(VideoSource("clip.mp4", threaded=False), LivePipeline(cfg, model),
                          [EventsFileSink("events.jsonl"), RecorderSink("out.mp4")])
    for event in runner.events():     # or runner.run() -> RunOutcome
        ...

Per frame, in the caller's thread: pipeline.process -> sinks.events (finished events) ->
sinks.frame. A stream gap (a live source that stalled) flushes the events from before it, then
the gap record goes to the sinks, and a fresh spotter starts after it (the jump across a gap is
not an expression). At the end: pending recognitions are awaited, an unfinished gap is recorded,
and every sink is closed, also after an error, a signal or a consumer that stopped iterating."""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from slstt.realtime.capture import Frame, describe
from slstt.realtime.events import GapRecord, SpotEvent
from slstt.realtime.sinks import Sink, StreamInfo

if TYPE_CHECKING:  # the pipeline uses the runner for LivePipeline.run: no import cycle at run time
    from slstt.realtime.pipeline import LivePipeline


class FrameSource(Protocol):
    """What the runner reads: capture.VideoSource (camera, file, URL), megc.FrameFolderSource (a long
    video's frame files), or your own."""

    on_gap: Any  # set by the runner: called with a GapRecord in stream order

    @property
    def source(self) -> Any: ...
    @property
    def fps(self) -> float: ...
    @property
    def width(self) -> int: ...
    @property
    def height(self) -> int: ...
    @property
    def is_live(self) -> bool: ...
    @property
    def dropped(self) -> int: ...
    @property
    def backlog(self) -> int: ...
    @property
    def failure(self) -> str | None: ...
    @property
    def gaps(self) -> list[GapRecord]: ...
    def frames(self) -> Iterator[Frame]: ...
    def unfinished_gap(self) -> GapRecord | None: ...
    def stop(self) -> None: ...


@dataclass
class RunOutcome:
    frames: int
    events: int
    wall_s: float
    failure: str | None = None  # why a live source ended early (stream lost after the retries)
    gaps: int = 0


class StreamRunner:
    def __init__(self, source: FrameSource, pipeline: LivePipeline, sinks: Sequence[Sink] = (), *,
                 max_seconds: float | None = None, note: str | None = None) -> None:
        self.source, self.pipeline, self.sinks = source, pipeline, list(sinks)
        self.max_seconds = max_seconds
        self.note = note  # shown in the overlay's status (e.g. why recognition runs on the CPU)
        self.frame_events: list[SpotEvent] = []  # events finished at the current frame
        self.wall_s = 0.0
        self._pending: list[SpotEvent] = []  # flushed by a gap, yielded with the next frame

    @property
    def info(self) -> StreamInfo:
        s = self.source
        return StreamInfo(describe(s.source), s.fps, s.width, s.height, s.is_live)

    def _emit(self, events: list[SpotEvent]) -> list[SpotEvent]:
        if events:
            for sink in self.sinks:
                sink.events(events)
        return events

    def _on_gap(self, gap: GapRecord) -> None:
        self._pending += self._emit(self.pipeline.finish())  # before the gap: the file stays in time order
        for sink in self.sinks:
            sink.gap(gap)
        if gap.end_s is not None:
            self.pipeline.start(self.source.fps)

    def events(self) -> Iterator[SpotEvent]:
        """Every event of the stream, in completion order (the last ones after the stream ends)."""
        t0 = time.perf_counter()
        opened: list[Sink] = []
        try:
            for sink in self.sinks:
                sink.open(self.info)
                opened.append(sink)
            self.pipeline.start(self.source.fps)
            self.source.on_gap = self._on_gap
            yield from self._loop()
            yield from self._emit(self.pipeline.finish())
            open_gap = self.source.unfinished_gap()
            if open_gap is not None:
                for sink in self.sinks:
                    sink.gap(open_gap)
        finally:
            self.wall_s = time.perf_counter() - t0
            self._close(opened)

    def _loop(self) -> Iterator[SpotEvent]:
        for frame in self.source.frames():
            self.frame_events = self._emit(self.pipeline.process(frame.image, frame.t, frame.index))
            for sink in self.sinks:
                sink.frame(frame, self)
            if self._pending:
                pending, self._pending = self._pending, []
                yield from pending
            yield from self.frame_events
            if self.max_seconds is not None and frame.t >= self.max_seconds:
                self.source.stop()
        yield from self._pending

    def _close(self, sinks: list[Sink]) -> None:
        """Close every sink even when one fails; the first failure is raised afterwards."""
        error: BaseException | None = None
        for sink in reversed(sinks):
            try:
                sink.close()
            except BaseException as exc:  # noqa: BLE001 - re-raised below, after the others closed
                error = error or exc
        if error is not None:
            raise error

    def run(self) -> RunOutcome:
        count = sum(1 for _ in self.events())
        return RunOutcome(self.pipeline.stats.frames, count, self.wall_s, self.source.failure,
                          len(self.source.gaps))
