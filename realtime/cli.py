"""`slstt live`, `slstt analyze`, `slstt demo`. Only typer/stdlib at import time: the camera is opened
before mediapipe/onnxruntime load, so a missing camera fails in well under 3 s."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path
from typing import Any

import typer

from slstt.data.cli import FACE_MODEL_OPTION

# OpenCV/FFmpeg print their own warnings for a missing camera or a broken file; we say it in one line.
os.environ.setdefault("OPENCV_LOG_LEVEL", "OFF")
os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")  # AV_LOG_QUIET
os.environ.setdefault("OPENCV_VIDEOIO_DEBUG", "0")


DEVICES = ("auto", "tensorrt", "cuda", "cpu")  # onnxruntime providers of slstt.export.runtime
DEVICE_HELP = "Recognition device: auto | tensorrt | cuda | cpu."


def _echo(message: str) -> None:
    typer.echo(message, err=True)


def _live_config(threshold_k: float | None, min_micro_ms: float | None, max_micro_ms: float | None,
                 calibrate: float, landmark_every: int, face_model: Path | None, device: str) -> Any:
    from slstt.errors import SlsttError
    from slstt.realtime.pipeline import LiveConfig
    from slstt.realtime.spotting import SpotterConfig
    from slstt.realtime.tracker import TrackerConfig

    if device not in DEVICES:
        raise SlsttError(f"--device {device!r}: choose {', '.join(DEVICES)}")
    if landmark_every < 1:
        raise SlsttError(f"--landmark-every must be >= 1, got {landmark_every}")
    spot = SpotterConfig(calibrate_s=max(0.0, calibrate))
    if threshold_k is not None:
        spot.threshold_k = threshold_k
    if min_micro_ms is not None:
        spot.min_micro_ms = min_micro_ms
    if max_micro_ms is not None:
        spot.max_micro_ms = max_micro_ms
    if spot.min_micro_ms >= spot.max_micro_ms:
        raise SlsttError(f"--min-micro-ms ({spot.min_micro_ms:g}) must be below --max-micro-ms ({spot.max_micro_ms:g})")
    return LiveConfig(spotter=spot, tracker=TrackerConfig(every=landmark_every),
                      face_model=str(face_model) if face_model else None, device=device)


def _check_model(model: Path | None) -> None:
    from slstt.errors import SlsttError

    if model is not None and not model.is_file():
        raise SlsttError(f"model not found: {model}; export one with `slstt export onnx` or run `slstt demo`")


def _event_line(ev: Any) -> str:
    label = f" {ev.label} ({ev.confidence:.0%})" if ev.label and ev.confidence is not None else ""
    error = f" [recognition: {ev.recognition_error}]" if ev.recognition_error else ""
    error += f" [note: {ev.recognition_note}]" if ev.recognition_note else ""
    latency = f", recognised in {ev.recognition_latency_ms:.0f} ms" if ev.recognition_latency_ms else ""
    return (f"{ev.kind:5s} {ev.onset_s:7.2f}-{ev.offset_s:.2f} s (frames {ev.onset_frame}-{ev.offset_frame}, "
            f"{ev.duration_ms:.0f} ms, score {ev.score:.2f}){label}{latency}{error}")


class _GracefulStop:
    """SIGINT/SIGTERM -> stop the source; the loop then flushes events and closes the recording."""

    def __init__(self, stop: Any) -> None:
        self.stop, self.signalled = stop, False
        self._old = {}
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._old[sig] = signal.signal(sig, self._handle)

    def _handle(self, signum: int, frame: Any) -> None:
        self.signalled = True
        self.stop()

    def restore(self) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)


def run_live(source_spec: int | str, *, model: Path | None, config: Any, display: bool,
             events_path: Path | None, record: Path | None, paced: bool, max_seconds: float | None = None,
             note: str | None = None) -> int:
    """The live loop; returns the number of events. Used by `slstt live` and `slstt demo`."""
    from slstt.realtime.capture import VideoSource

    source = VideoSource(source_spec, pace=paced, buffer_s=config.buffer_s)  # fails fast, before heavy imports
    stopper = _GracefulStop(source.stop)
    if note:
        _echo(note)
    log = writer = None
    pipe = None
    try:
        import cv2

        from slstt.realtime.events import EventLog
        from slstt.realtime.overlay import open_writer, render
        from slstt.realtime.pipeline import LivePipeline

        # output paths first: a bad --events/--record fails in one line before the models load
        log = EventLog(events_path)
        writer = open_writer(record, source.fps, (source.width, source.height)) if record else None
        config.keep_history = False  # hours of live video: only the overlay's trace is kept
        pipe = LivePipeline(config, model=model, on_warning=lambda m: _echo(f"warning: {m}"))
        pipe.start(source.fps)
        mode = f"model {model.name} ({', '.join(pipe.recognizer.providers)})" if pipe.recognizer else \
            "spotting only (no --model)"
        _echo(f"live: {source_spec if isinstance(source_spec, str) else f'camera {source_spec}'} "
              f"{source.width}x{source.height} @ {source.fps:g} fps, {mode}; Ctrl-C to stop")
        display_skipped = 0
        window = "slstt live"

        def emit(events: list) -> None:
            for ev in events:
                log.write(ev)
                _echo(_event_line(ev))

        for frame in source.frames():
            emit(pipe.process(frame.image, frame.t, frame.index))
            show = display and source.backlog <= 2  # analysis first: no drawing while frames queue up
            if display and not show:
                display_skipped += 1
            if show or writer is not None:
                annotated = render(frame.image, pipe, dropped=source.dropped, display_skipped=display_skipped)
                if writer is not None:
                    writer.write(annotated)  # the recording keeps every frame
                if show:
                    try:
                        cv2.imshow(window, annotated)
                        key = cv2.waitKey(1) & 0xFF
                    except cv2.error:  # an OpenCV build without GUI support
                        _echo("note: this OpenCV cannot open a window; continuing headless")
                        display, key = False, -1
                    if key in (ord("q"), 27):
                        source.stop()
            if max_seconds is not None and frame.t >= max_seconds:
                source.stop()
        emit(pipe.finish())
        stats = pipe.stats
        _echo(f"stopped{' (signal)' if stopper.signalled else ''}: {stats.frames} frames, "
              f"{stats.fps:.0f} fps analysis, {stats.micro} micro / {stats.macro} macro events, "
              f"{source.dropped} dropped, {display_skipped} display frames skipped"
              + (f"; events in {events_path}" if events_path else "")
              + (f"; recording in {record}" if record else ""))
        return stats.events
    finally:
        stopper.restore()
        if log is not None:
            log.close()
        if writer is not None:
            writer.release()
        if display:
            try:
                import cv2

                cv2.destroyAllWindows()
            except Exception:  # noqa: BLE001 - headless OpenCV builds have no GUI to close
                pass
        source.close()
        if pipe is not None:
            pipe.close()


# Options shared by `live` and `analyze`: the same detector, so the same knobs and help.
DEVICE_OPTION = typer.Option("auto", "--device", help=DEVICE_HELP)
CALIBRATE_OPTION = typer.Option(0.0, "--calibrate", help="Seconds of neutral face first: sets the noise baseline.")
THRESHOLD_K_OPTION = typer.Option(None, "--threshold-k", help="Threshold = median + k * MAD of recent motion (default 5).")
MIN_MICRO_OPTION = typer.Option(None, "--min-micro-ms", help="Shorter intervals are ignored (default 100).")
MAX_MICRO_OPTION = typer.Option(None, "--max-micro-ms", help="Longer intervals are macro (default 500).")
LANDMARK_EVERY_OPTION = typer.Option(3, "--landmark-every", help="Run the face landmarker every k-th frame.")


def live_command(
    camera: int | None = typer.Option(None, "--camera", help="Camera index (0 = first webcam)."),
    video: Path | None = typer.Option(None, "--video", help="Video file, played at its own frame rate."),
    source: str | None = typer.Option(None, "--source", help="Camera index, video file or stream URL (rtsp://, http://)."),
    model: Path | None = typer.Option(None, "--model", help="Exported model.onnx; without it only spotting runs."),
    device: str = DEVICE_OPTION,
    no_display: bool = typer.Option(False, "--no-display", help="Headless: no window."),
    events: Path | None = typer.Option(None, "--events", help="Write events here as JSONL (flushed per event)."),
    record: Path | None = typer.Option(None, "--record", help="Write the annotated video here (mp4)."),
    calibrate: float = CALIBRATE_OPTION,
    threshold_k: float | None = THRESHOLD_K_OPTION,
    min_micro_ms: float | None = MIN_MICRO_OPTION,
    max_micro_ms: float | None = MAX_MICRO_OPTION,
    landmark_every: int = LANDMARK_EVERY_OPTION,
    face_model: Path | None = FACE_MODEL_OPTION,
    fast: bool = typer.Option(False, "--fast", help="Video files: as fast as possible instead of real time."),
) -> None:
    """Live micro-expression detector on a camera, video file or stream."""
    from slstt.realtime.capture import resolve_source

    spec = resolve_source(camera, str(video) if video is not None else None, source)
    config = _live_config(threshold_k, min_micro_ms, max_micro_ms, calibrate, landmark_every, face_model, device)
    _check_model(model)
    display, note = not no_display, None
    if display and sys.platform.startswith("linux") and not os.environ.get("DISPLAY") \
            and not os.environ.get("WAYLAND_DISPLAY"):
        display, note = False, "note: no display ($DISPLAY unset); running headless as with --no-display"
    run_live(spec, model=model, config=config, display=display, events_path=events, record=record,
             paced=not fast, note=note)


def analyze_command(
    video: Path = typer.Argument(..., help="Video file to analyse (every frame)."),
    out: Path = typer.Option(Path("analyze_out"), "--out", help="Folder for events.jsonl, events.csv, timeline.png."),
    model: Path | None = typer.Option(None, "--model", help="Exported model.onnx to label micro events."),
    ground_truth: Path | None = typer.Option(None, "--ground-truth", help="Ground-truth CSV (synth .gt.csv form) to score against."),
    device: str = DEVICE_OPTION,
    record: Path | None = typer.Option(None, "--record", help="Also write the annotated video."),
    calibrate: float = CALIBRATE_OPTION,
    threshold_k: float | None = THRESHOLD_K_OPTION,
    min_micro_ms: float | None = MIN_MICRO_OPTION,
    max_micro_ms: float | None = MAX_MICRO_OPTION,
    landmark_every: int = LANDMARK_EVERY_OPTION,
    face_model: Path | None = FACE_MODEL_OPTION,
) -> None:
    """Run the live pipeline over a video file as fast as possible and report events."""
    from slstt.realtime.analyze import analyze_video, summary_lines
    from slstt.realtime.capture import resolve_source

    resolve_source(video=str(video))
    config = _live_config(threshold_k, min_micro_ms, max_micro_ms, calibrate, landmark_every, face_model, device)
    _check_model(model)
    result = analyze_video(video, out, model=model, ground_truth=ground_truth, config=config, record=record,
                           progress=sys.stderr.isatty(), on_warning=lambda m: _echo(f"warning: {m}"))
    if result.frames and not result.events and result.warnings:
        _echo("no events: no face was tracked long enough in this video")
    for line in summary_lines(result):
        typer.echo(line)


def demo_command(
    out: Path = typer.Option(Path("demo_out"), "--out", help="Folder for the corpus, model, video and results."),
    seconds: float = typer.Option(30.0, "--seconds", help="Length of the synthetic test video."),
    seed: int = typer.Option(0, "--seed", help="Random seed for the synthetic data."),
    epochs: int = typer.Option(300, "--epochs", help="Training epochs of the small demo model (cached features: fast)."),
) -> None:
    """End-to-end demo with no camera and no data: synth, train, export, live on a video."""
    from slstt.realtime.demo import run_demo

    run_demo(out, seconds=seconds, seed=seed, epochs=epochs)
