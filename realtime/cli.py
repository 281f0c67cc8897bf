"""`slstt live`, `slstt analyze`, `slstt demo`. Only typer/stdlib at import time: the camera is opened
before mediapipe/onnxruntime load, so a missing camera fails in well under 3 s."""

from __future__ import annotations

import math
import os
import signal
import sys
from dataclasses import dataclass
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


def _check_number(option: str, value: float | None, low: float, high: float, *, low_open: bool = False) -> None:
    """Finite and in [low, high] (or (low, high] with low_open); one line naming the option otherwise."""
    from slstt.errors import SlsttError

    if value is None:
        return
    bad = not math.isfinite(value) or value > high or value < low or (low_open and value == low)
    if bad:
        above = f"above {low:g}" if low_open else f"at least {low:g}"
        raise SlsttError(f"{option} {value:g}: give a finite number {above} and at most {high:g}")


def _check_int(option: str, value: int | None, low: int, high: int) -> None:
    from slstt.errors import SlsttError

    if value is not None and not low <= value <= high:
        raise SlsttError(f"{option} {value}: give a whole number from {low} to {high}")


MAX_MICRO_LIMIT_MS = 2000.0  # the frame ring holds 3 s: a micro event and its context must fit


def _live_config(threshold_k: float | None, min_micro_ms: float | None, max_micro_ms: float | None,
                 calibrate: float, landmark_every: int, face_model: Path | None, device: str) -> Any:
    from slstt.errors import SlsttError
    from slstt.realtime.pipeline import LiveConfig
    from slstt.realtime.spotting import SpotterConfig
    from slstt.realtime.tracker import TrackerConfig

    if device not in DEVICES:
        raise SlsttError(f"--device {device!r}: choose {', '.join(DEVICES)}")
    _check_number("--calibrate", calibrate, 0.0, 3600.0)
    _check_number("--threshold-k", threshold_k, 0.0, 1000.0, low_open=True)
    _check_number("--min-micro-ms", min_micro_ms, 0.0, MAX_MICRO_LIMIT_MS, low_open=True)
    _check_number("--max-micro-ms", max_micro_ms, 0.0, MAX_MICRO_LIMIT_MS, low_open=True)
    _check_int("--landmark-every", landmark_every, 1, 1000)
    if face_model is not None and not face_model.is_file():
        raise SlsttError(f"--face-model {face_model}: file not found; pass a MediaPipe .task file or leave it out")
    spot = SpotterConfig(calibrate_s=calibrate)
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
    """SIGINT/SIGTERM -> stop the source; the loop then flushes events and closes the recording.
    A second signal while stopping aborts at once (KeyboardInterrupt: exit 130)."""

    def __init__(self, stop: Any) -> None:
        self.stop = stop
        self.signum: int | None = None
        self._old = {}
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._old[sig] = signal.signal(sig, self._handle)

    @property
    def signalled(self) -> bool:
        return self.signum is not None

    def _handle(self, signum: int, frame: Any) -> None:
        if self.signum is not None:
            self.restore()
            raise KeyboardInterrupt
        self.signum = signum
        self.stop()

    def restore(self) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)


@dataclass
class LiveOutcome:
    events: int
    signum: int | None = None  # the signal that stopped the run
    failure: str | None = None  # why the source ended early (stream lost after the retries)

    @property
    def exit_code(self) -> int:
        """0 finished, 3 stream lost, 128 + signal when stopped by one (130 SIGINT, 143 SIGTERM)."""
        if self.signum is not None:
            return 128 + self.signum
        return 3 if self.failure else 0


def run_live(source_spec: int | str, *, model: Path | None, config: Any, display: bool,
             events_path: Path | None, record: Path | None, paced: bool, max_seconds: float | None = None,
             note: str | None = None, policy: Any = None) -> LiveOutcome:
    """The live loop (`slstt live`). Output paths must have been checked (`slstt.io.check_output`)."""
    from slstt.realtime.capture import VideoSource

    warn = lambda message: _echo(f"warning: {message}")  # noqa: E731
    source = VideoSource(source_spec, pace=paced, buffer_s=config.buffer_s, policy=policy,
                         on_message=warn)  # fails fast, before heavy imports
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

        # output files first: a bad --events/--record fails in one line before the models load
        log = EventLog(events_path)
        writer = open_writer(record, source.fps, (source.width, source.height), drop_when_full=True) \
            if record else None
        config.keep_history = False  # hours of live video: only the overlay's trace is kept
        pipe = LivePipeline(config, model=model, on_warning=warn)
        pipe.start(source.fps)
        mode = f"model {model.name} ({', '.join(pipe.recognizer.providers)})" if pipe.recognizer else \
            "spotting only (no --model)"
        _echo(f"live: {source_spec if isinstance(source_spec, str) else f'camera {source_spec}'} "
              f"{source.width}x{source.height} @ {source.fps:g} fps, {mode}; Ctrl-C to stop"
              + (f"; recording with {writer.backend}" if writer is not None else ""))
        display_skipped = 0
        window = "slstt live"

        def emit(events: list) -> None:
            for ev in events:
                log.write(ev)
                _echo(_event_line(ev))

        def on_gap(gap: Any) -> None:
            emit(pipe.finish())  # events from before the gap first: the file stays in time order
            log.write_gap(gap)
            if gap.end_s is not None:
                pipe.start(source.fps)  # fresh spotter: the jump across the gap is not an expression

        source.on_gap = on_gap
        for frame in source.frames():
            emit(pipe.process(frame.image, frame.t, frame.index))
            show = display and source.backlog <= 2  # analysis first: no drawing while frames queue up
            if display and not show:
                display_skipped += 1
            if show or writer is not None:
                annotated = render(frame.image, pipe, dropped=source.dropped, display_skipped=display_skipped)
                if writer is not None:
                    writer.write(annotated)  # queued: the writer thread encodes
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
        open_gap = source.unfinished_gap()
        if open_gap is not None:
            log.write_gap(open_gap)
        if writer is not None:
            writer.release()
            if writer.error:
                warn(f"recording: {writer.error}")
        stats = pipe.stats
        how = " (signal)" if stopper.signum is not None else (" (stream lost)" if source.failure else "")
        _echo(f"stopped{how}: {stats.frames} frames, "
              f"{stats.fps:.0f} fps analysis, {stats.micro} micro / {stats.macro} macro events, "
              f"{source.dropped} dropped, {display_skipped} display frames skipped"
              + (f", {len(source.gaps)} stream gap(s)" if source.gaps else "")
              + (f", {writer.dropped} recording frames dropped" if writer is not None and writer.dropped else "")
              + (f"; events in {events_path}" if events_path else "")
              + (f"; recording in {record}" if record else "")
              + (f"; exit {128 + stopper.signum} ({signal.Signals(stopper.signum).name})"
                 if stopper.signum is not None else ""))
        return LiveOutcome(stats.events, stopper.signum, source.failure)
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


RECORD_SUFFIXES = (".mp4", ".m4v", ".mov", ".mkv")  # = overlay.RECORD_FORMATS (checked here before any work)


def _check_record_name(record: Path | None) -> None:
    from slstt.errors import SlsttError

    if record is not None and record.suffix.lower() not in RECORD_SUFFIXES:
        raise SlsttError(f"--record {record}: name it .mp4 or .mkv (fragmented mp4 / Matroska stay playable "
                         "after a crash)")


def _file_inputs(*paths: Path | str | None) -> list[Path]:
    """The given paths that are local files (not URLs or camera indices): outputs must not hit them."""
    out = []
    for p in paths:
        if p is None or isinstance(p, int) or "://" in str(p):
            continue
        out.append(Path(p))
    return out


# Options shared by `live` and `analyze`: the same detector, so the same knobs and help.
DEVICE_OPTION = typer.Option("auto", "--device", help=DEVICE_HELP)
CALIBRATE_OPTION = typer.Option(0.0, "--calibrate", help="Seconds of neutral face first: sets the noise baseline (0-3600).")
THRESHOLD_K_OPTION = typer.Option(None, "--threshold-k", help="Threshold = median + k * MAD of recent motion "
                                  "(> 0; default: the spotter's).")
MIN_MICRO_OPTION = typer.Option(None, "--min-micro-ms", help="Shorter intervals are ignored (default 100).")
MAX_MICRO_OPTION = typer.Option(None, "--max-micro-ms", help="Longer intervals are macro (default 500, at most 2000).")
LANDMARK_EVERY_OPTION = typer.Option(3, "--landmark-every", help="Run the face landmarker every k-th frame (1-1000).")
OVERWRITE_OPTION = typer.Option(False, "--overwrite", help="Replace output files left by an earlier run "
                                "(never an input file).")


def live_command(
    camera: int | None = typer.Option(None, "--camera", help="Camera index 0-63 (0 = first webcam)."),
    video: Path | None = typer.Option(None, "--video", help="Video file, played at its own frame rate."),
    source: str | None = typer.Option(None, "--source", help="Camera index, video file or stream URL "
                                      "(udp://, rtsp://, http://, tcp://, ...)."),
    model: Path | None = typer.Option(None, "--model", help="Exported model.onnx; without it only spotting runs."),
    device: str = DEVICE_OPTION,
    no_display: bool = typer.Option(False, "--no-display", help="Headless: no window."),
    events: Path | None = typer.Option(None, "--events", help="Write events here as JSONL (flushed per event)."),
    record: Path | None = typer.Option(None, "--record", help="Write the annotated video here (.mp4 or .mkv; "
                                       "playable even after a crash)."),
    overwrite: bool = OVERWRITE_OPTION,
    calibrate: float = CALIBRATE_OPTION,
    threshold_k: float | None = THRESHOLD_K_OPTION,
    min_micro_ms: float | None = MIN_MICRO_OPTION,
    max_micro_ms: float | None = MAX_MICRO_OPTION,
    landmark_every: int = LANDMARK_EVERY_OPTION,
    face_model: Path | None = FACE_MODEL_OPTION,
    fast: bool = typer.Option(False, "--fast", help="Video files: as fast as possible instead of real time."),
    stall_timeout: float = typer.Option(5.0, "--stall-timeout", help="Cameras/streams: seconds without a frame "
                                        "before the stream counts as stalled and is reopened (0.2-3600)."),
    reconnect: int = typer.Option(5, "--reconnect", help="Cameras/streams: reopening attempts per stall, "
                                  "waiting 1, 2, 4 .. 10 s between them (0-1000; 0 = stop at the first stall)."),
    duration: float | None = typer.Option(None, "--duration", help="Stop after this many seconds of input."),
) -> None:
    """Live micro-expression detector on a camera, video file or stream.

    Exit codes: 0 done, 2 bad input, 3 stream lost after --reconnect attempts, 130 Ctrl-C (SIGINT),
    143 SIGTERM; events and the recording are complete in every case."""
    from slstt.io import check_distinct_outputs, check_output
    from slstt.realtime.capture import StreamLostError, StreamPolicy, resolve_source

    _check_number("--stall-timeout", stall_timeout, 0.2, 3600.0)
    _check_int("--reconnect", reconnect, 0, 1000)
    _check_number("--duration", duration, 0.0, 1e7, low_open=True)
    spec = resolve_source(camera, str(video) if video is not None else None, source)
    config = _live_config(threshold_k, min_micro_ms, max_micro_ms, calibrate, landmark_every, face_model, device)
    _check_model(model)
    inputs = _file_inputs(spec if isinstance(spec, str) else None, model, face_model)
    if events is not None:
        check_output(events, inputs=inputs, overwrite=overwrite, what="--events file")
    if record is not None:
        check_output(record, inputs=inputs, overwrite=overwrite, what="--record file")
        _check_record_name(record)
    check_distinct_outputs({"--events": events, "--record": record})
    display, note = not no_display, None
    if display and sys.platform.startswith("linux") and not os.environ.get("DISPLAY") \
            and not os.environ.get("WAYLAND_DISPLAY"):
        display, note = False, "note: no display ($DISPLAY unset); running headless as with --no-display"
    outcome = run_live(spec, model=model, config=config, display=display, events_path=events, record=record,
                       paced=not fast, note=note, max_seconds=duration,
                       policy=StreamPolicy(stall_timeout_s=stall_timeout, reconnect=reconnect))
    if outcome.signum is not None:
        raise typer.Exit(outcome.exit_code)
    if outcome.failure:
        raise StreamLostError(outcome.failure)


ANALYZE_OUTPUTS = ("events.jsonl", "events.csv", "timeline.png", "summary.json")  # what analyze writes in --out


def check_analyze_outputs(out: Path, *, record: Path | None, inputs: list[Path], overwrite: bool,
                          names: tuple[str, ...] = ANALYZE_OUTPUTS) -> None:
    """--out may hold earlier results (`names`, the files written there) only with --overwrite; no
    output may be an input, ever."""
    from slstt.errors import SlsttError
    from slstt.io import check_distinct_outputs, check_output

    if out.exists() and not out.is_dir():
        raise SlsttError(f"--out {out} is a file; pass a folder (it is created when missing)")
    earlier = [name for name in names if (out / name).exists() or (out / name).is_symlink()]
    for name in names:  # an input inside --out under an output's name: refused even with --overwrite
        check_output(out / name, inputs=inputs, overwrite=True, what=f"--out {out}: output")
    if earlier and not overwrite:
        raise SlsttError(f"--out {out} holds results of an earlier run ({', '.join(earlier)}); pass --overwrite "
                         "to replace them or choose another --out folder")
    if record is not None:
        check_output(record, inputs=inputs, overwrite=overwrite, what="--record file")
        _check_record_name(record)
        check_distinct_outputs({"--record": record, **{f"--out {name}": out / name for name in names}})


def analyze_command(
    video: Path = typer.Argument(..., help="Video file to analyse (every frame)."),
    out: Path = typer.Option(Path("analyze_out"), "--out", help="Folder for events.jsonl, events.csv, timeline.png."),
    model: Path | None = typer.Option(None, "--model", help="Exported model.onnx to label micro events."),
    ground_truth: Path | None = typer.Option(None, "--ground-truth", help="Ground-truth CSV (synth .gt.csv form) to score against."),
    device: str = DEVICE_OPTION,
    record: Path | None = typer.Option(None, "--record", help="Also write the annotated video (.mp4 or .mkv)."),
    overwrite: bool = OVERWRITE_OPTION,
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
    check_analyze_outputs(out, record=record, inputs=_file_inputs(video, model, ground_truth, face_model),
                          overwrite=overwrite)
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

    _check_number("--seconds", seconds, 0.0, 3600.0, low_open=True)
    _check_int("--seed", seed, 0, 2**32 - 1)
    _check_int("--epochs", epochs, 1, 100_000)

    run_demo(out, seconds=seconds, seed=seed, epochs=epochs)
