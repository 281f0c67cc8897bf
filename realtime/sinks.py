"""Where a stream's results go: pluggable sinks of the one stream runner (slstt.realtime.runner).

A sink hears, in stream order and in the analysis thread: open(info) once, frame(frame, runner)
per analysed frame, events(list) as events finish, gap(record) for stream gaps, close() at the end
(always, also after an error or a signal). Per-frame work must be cheap: the window and the
recorder only take an OverlayState snapshot here and draw/encode in their own threads.

    EventsFileSink(path)      JSONL, one fsynced line per event / gap record
    CallbackSink(on_event)    your function per event (the Python API's hook)
    RecorderSink(path)        annotated video (fragmented mp4 / Matroska), writer thread
    WindowSink()              OpenCV window, display thread; q / Esc stops the source
    ProgressSink(total)       rich progress bar (analyze)

A new sink: subclass Sink, override what it needs, pass it in `sinks=[...]` (one file, no other edit)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from slstt.realtime.events import EventLog, GapRecord, SpotEvent

if TYPE_CHECKING:
    from slstt.realtime.capture import Frame
    from slstt.realtime.overlay import OverlayState, Recorder
    from slstt.realtime.runner import StreamRunner


@dataclass
class StreamInfo:
    name: str  # camera N, file name or URL
    fps: float
    width: int
    height: int
    live: bool  # camera or stream URL (frames may be dropped, gaps may happen)


class Sink:
    """No-op base: override what the sink needs."""

    def open(self, info: StreamInfo) -> None:
        pass

    def frame(self, frame: Frame, runner: StreamRunner) -> None:
        pass

    def events(self, events: list[SpotEvent]) -> None:
        pass

    def gap(self, gap: GapRecord) -> None:
        pass

    def close(self) -> None:
        pass


class EventsFileSink(Sink):
    """Events and gap records to a JSONL file (the path was checked by the caller: opening truncates)."""

    def __init__(self, path: str | Path | None) -> None:
        self.log = EventLog(path)  # opened now: a bad path fails before any model loads

    def events(self, events: list[SpotEvent]) -> None:
        for event in events:
            self.log.write(event)

    def gap(self, gap: GapRecord) -> None:
        self.log.write_gap(gap)

    def close(self) -> None:
        self.log.close()


class CallbackSink(Sink):
    def __init__(self, on_event: Callable[[SpotEvent], None] | None = None,
                 on_gap: Callable[[GapRecord], None] | None = None,
                 on_frame: Callable[[Frame, list[SpotEvent]], None] | None = None) -> None:
        self.on_event, self.on_gap, self.on_frame = on_event, on_gap, on_frame
        self._last: list[SpotEvent] = []

    def events(self, events: list[SpotEvent]) -> None:
        self._last = events
        if self.on_event is not None:
            for event in events:
                self.on_event(event)

    def frame(self, frame: Frame, runner: StreamRunner) -> None:
        if self.on_frame is not None:
            self.on_frame(frame, runner.frame_events)

    def gap(self, gap: GapRecord) -> None:
        if self.on_gap is not None:
            self.on_gap(gap)


def _snapshot(runner: StreamRunner, display_skipped: int = 0) -> OverlayState:
    from slstt.realtime.overlay import OverlayState

    return OverlayState.of(runner.pipeline, dropped=runner.source.dropped, display_skipped=display_skipped,
                           note=runner.note)


class RecorderSink(Sink):
    """The annotated video; frames are drawn and encoded in the recorder's thread. `drop_when_full`:
    live runs drop recording frames rather than stall analysis (counted in `dropped`)."""

    def __init__(self, path: str | Path, *, drop_when_full: bool = False,
                 on_warning: Callable[[str], None] | None = None,
                 fps: float | None = None, size: tuple[int, int] | None = None) -> None:
        """With fps and size (the source is open already) the file opens now: a bad path fails
        before the models load, and `backend` is known at once."""
        self.path, self.drop_when_full = Path(path), drop_when_full
        self.on_warning = on_warning or (lambda message: None)
        self.writer: Recorder | None = None
        self.last_dropped = 0
        if fps is not None and size is not None:
            self._open(fps, size)

    def _open(self, fps: float, size: tuple[int, int]) -> None:
        from slstt.realtime.overlay import open_writer

        self.writer = open_writer(self.path, fps, size, drop_when_full=self.drop_when_full)

    def open(self, info: StreamInfo) -> None:
        if self.writer is None:
            self._open(info.fps, (info.width, info.height))

    def frame(self, frame: Frame, runner: StreamRunner) -> None:
        if self.writer is not None:
            self.writer.write(frame.image, _snapshot(runner))

    @property
    def dropped(self) -> int:
        return self.writer.dropped if self.writer is not None else 0

    @property
    def backend(self) -> str:
        return self.writer.backend if self.writer is not None else ""

    def close(self) -> None:
        if self.writer is not None:
            writer, self.writer = self.writer, None
            writer.release()
            self.last_dropped = writer.dropped
            if writer.error:
                self.on_warning(f"recording: {writer.error}")


class WindowSink(Sink):
    """An OpenCV window fed by a display thread that keeps only the newest frame: a slow display
    never delays analysis, and frames it could not show are counted (`skipped`). The display is
    also skipped while more than `max_backlog` captured frames wait for analysis."""

    def __init__(self, title: str = "slstt live", on_quit: Callable[[], None] | None = None,
                 on_message: Callable[[str], None] | None = None, max_backlog: int = 2) -> None:
        self.title, self.on_quit = title, on_quit or (lambda: None)
        self.on_message = on_message or (lambda message: None)
        self.max_backlog = max_backlog
        self.skipped = 0
        self.enabled = True
        self._slot: tuple[Any, OverlayState] | None = None
        self._cond = threading.Condition()
        self._closing = False
        self._thread = threading.Thread(target=self._run, name="slstt-display", daemon=True)

    def open(self, info: StreamInfo) -> None:
        self._thread.start()

    def frame(self, frame: Frame, runner: StreamRunner) -> None:
        if not self.enabled:
            return
        if runner.source.backlog > self.max_backlog:  # analysis first: no drawing while frames queue up
            self.skipped += 1
            return
        with self._cond:
            if self._slot is not None:
                self.skipped += 1  # the display thread had not shown the previous one yet
            self._slot = (frame.image, _snapshot(runner, self.skipped))
            self._cond.notify()

    def _next(self) -> tuple[Any, OverlayState] | None:
        with self._cond:
            while self._slot is None and not self._closing:
                self._cond.wait()
            item, self._slot = self._slot, None
            return item

    def _run(self) -> None:
        import cv2

        from slstt.realtime.overlay import render

        while (item := self._next()) is not None:
            try:
                cv2.imshow(self.title, render(*item))
                key = cv2.waitKey(1) & 0xFF
            except cv2.error:  # an OpenCV build without GUI support
                self.on_message("note: this OpenCV cannot open a window; continuing headless")
                self.enabled = False
                return
            if key in (ord("q"), 27):
                self.on_quit()

    def close(self) -> None:
        with self._cond:
            self._closing = True
            self._cond.notify()
        if self._thread.is_alive():
            self._thread.join(5.0)
        try:
            import cv2

            cv2.destroyAllWindows()
        except Exception:  # noqa: BLE001 - headless OpenCV builds have no GUI to close
            pass


class ProgressSink(Sink):
    """A transient rich progress bar over the frames of a file."""

    def __init__(self, label: str, total: int | None) -> None:
        from rich.progress import Progress

        self.label, self.total = label, total
        self.bar = Progress(transient=True)
        self.task: Any = None

    def open(self, info: StreamInfo) -> None:
        self.bar.start()
        self.task = self.bar.add_task(self.label, total=self.total)

    def frame(self, frame: Frame, runner: StreamRunner) -> None:
        self.bar.advance(self.task)

    def close(self) -> None:
        self.bar.stop()
