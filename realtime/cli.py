"""`slstt live`, `slstt analyze`, `slstt demo`. Only typer/stdlib at import time: the camera is opened
before mediapipe/onnxruntime load, so a missing camera fails in well under 3 s."""

from __future__ import annotations

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


DEVICE_HELP = "Recognition device: auto | tensorrt | cuda | cpu."


def _echo(message: str) -> None:
    typer.echo(message, err=True)


def _check_number(option: str, value: float | None, low: float, high: float, *, low_open: bool = False) -> None:
    from slstt.errors import check_number

    check_number(option, value, low, high, low_open=low_open)


def _check_int(option: str, value: int | None, low: int, high: int) -> None:
    from slstt.errors import check_int

    check_int(option, value, low, high)


def _live_config(threshold_k: float | None, min_micro_ms: float | None, max_micro_ms: float | None,
                 calibrate: float, landmark_every: int, face_model: Path | None, device: str,
                 during_speech: str, sweep_k: str | None = None) -> Any:
    from slstt.realtime.pipeline import live_config

    return live_config(threshold_k=threshold_k, min_micro_ms=min_micro_ms, max_micro_ms=max_micro_ms,
                       calibrate=calibrate, landmark_every=landmark_every, face_model=face_model, device=device,
                       during_speech=during_speech, sweep_k=sweep_k or ())


def _check_model(model: Path | None) -> None:
    from slstt.errors import SlsttError

    if model is not None and not model.is_file():
        raise SlsttError(f"model not found: {model}; export one with `slstt export onnx` or run `slstt demo`")


def _event_line(ev: Any) -> str:
    label = f" {ev.label} ({ev.confidence:.0%})" if ev.label and ev.confidence is not None else ""
    error = f" [recognition: {ev.recognition_error}]" if ev.recognition_error else ""
    error += f" [note: {ev.recognition_note}]" if ev.recognition_note else ""
    latency = f", recognised in {ev.recognition_latency_ms:.0f} ms" if ev.recognition_latency_ms else ""
    region = f", {ev.region}" if ev.region else ""
    return (f"{ev.kind:5s} {ev.onset_s:7.2f}-{ev.offset_s:.2f} s (frames {ev.onset_frame}-{ev.offset_frame}, "
            f"{ev.duration_ms:.0f} ms, score {ev.score:.2f}{region}){label}{latency}{error}")


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


def _live_sinks(source: Any, events_path: Path | None, record: Path | None, display: bool,
                warn: Any) -> tuple[Any, Any, list[Any]]:
    """(events sink, recorder sink or None, all sinks); output files open first, so a bad --events
    or --record fails in one line before the models load."""
    from slstt.realtime.sinks import CallbackSink, EventsFileSink, RecorderSink, WindowSink

    events = EventsFileSink(events_path)
    recorder = RecorderSink(record, drop_when_full=True, on_warning=warn, fps=source.fps,
                            size=(source.width, source.height)) if record else None
    sinks: list[Any] = [events, CallbackSink(on_event=lambda ev: _echo(_event_line(ev)))]
    if recorder is not None:
        sinks.append(recorder)
    if display:
        sinks.append(WindowSink("slstt live", on_quit=source.stop, on_message=_echo))
    return events, recorder, sinks


def _start_line(source_spec: int | str, source: Any, model: Path | None, pipe: Any, recorder: Any) -> str:
    mode = f"model {model.name} ({', '.join(pipe.recognizer.providers)})" if pipe.recognizer and model else \
        "spotting only (no --model)"
    name = source_spec if isinstance(source_spec, str) else f"camera {source_spec}"
    return (f"live: {name} {source.width}x{source.height} @ {source.fps:g} fps, {mode}; Ctrl-C to stop"
            + (f"; recording with {recorder.backend}" if recorder is not None and recorder.backend else "")
            + (f"; {pipe.device_note}" if pipe.device_note else ""))


def _stop_line(pipe: Any, source: Any, signum: int | None, window: Any, recorder: Any,
               events_path: Path | None, record: Path | None) -> str:
    stats = pipe.stats
    how = " (signal)" if signum is not None else (" (stream lost)" if source.failure else "")
    dropped_rec = getattr(recorder, "last_dropped", 0) if recorder is not None else 0
    return (f"stopped{how}: {stats.frames} frames, "
            f"{stats.fps:.0f} fps analysis, {stats.micro} micro / {stats.macro} macro events, "
            f"{source.dropped} dropped, {window.skipped if window is not None else 0} display frames skipped"
            + (f", {len(source.gaps)} stream gap(s)" if source.gaps else "")
            + (f", {dropped_rec} recording frames dropped" if dropped_rec else "")
            + (f"; events in {events_path}" if events_path else "")
            + (f"; recording in {record}" if record else "")
            + (f"; exit {128 + signum} ({signal.Signals(signum).name})" if signum is not None else ""))


def run_live(source_spec: int | str, *, model: Path | None, config: Any, display: bool,
             events_path: Path | None, record: Path | None, paced: bool, max_seconds: float | None = None,
             note: str | None = None, policy: Any = None) -> LiveOutcome:
    """The live loop (`slstt live`): open the source (fails fast, before heavy imports), open the
    outputs, load the models, run the stream runner with its sinks, report. Output paths must have
    been checked (`slstt.io.check_output`)."""
    import dataclasses

    from slstt.realtime.capture import VideoSource

    warn = lambda message: _echo(f"warning: {message}")  # noqa: E731
    source = VideoSource(source_spec, pace=paced, buffer_s=config.buffer_s, policy=policy, on_message=warn)
    stopper = _GracefulStop(source.stop)
    if note:
        _echo(note)
    pipe = None
    try:
        from slstt.realtime.analyze import context_line
        from slstt.realtime.explain import ContextTally
        from slstt.realtime.pipeline import LivePipeline
        from slstt.realtime.runner import StreamRunner
        from slstt.realtime.sinks import WindowSink

        _, recorder, sinks = _live_sinks(source, events_path, record, display, warn)
        # hours of live video: only the overlay's trace is kept (a copy: the caller's config is not changed)
        pipe = LivePipeline(dataclasses.replace(config, keep_history=False), model=model, on_warning=warn)
        # how often the spotter was open and each context rule on: counts only, for the stop report
        tally = pipe.spot_trace = ContextTally(pipe.config.spotter)
        runner = StreamRunner(source, pipe, sinks, max_seconds=max_seconds, note=pipe.device_note)
        _echo(_start_line(source_spec, source, model, pipe, recorder))
        runner.run()
        window = next((s for s in sinks if isinstance(s, WindowSink)), None)
        _echo(_stop_line(pipe, source, stopper.signum, window, recorder, events_path, record))
        if tally.counts["frames"]:
            _echo(context_line(tally.fractions()))
        return LiveOutcome(pipe.stats.events, stopper.signum, source.failure)
    finally:
        stopper.restore()
        source.close()
        if pipe is not None:
            pipe.close()


# Options shared by `live` and `analyze`: the same detector, so the same knobs and help.
DEVICE_OPTION = typer.Option("auto", "--device", help=DEVICE_HELP)
CALIBRATE_OPTION = typer.Option(0.0, "--calibrate", metavar="SECONDS",
                                help="The first SECONDS of a neutral face measure each region's own noise "
                                "(threshold floor); 0-3600, 0 = off.")
THRESHOLD_K_OPTION = typer.Option(None, "--threshold-k", help="Each region's threshold = median + k * MAD of its "
                                  "recent motion (> 0; default: the spotter's).")
MIN_MICRO_OPTION = typer.Option(None, "--min-micro-ms", help="Shorter measured intervals are widened to this (default 100).")
MAX_MICRO_OPTION = typer.Option(None, "--max-micro-ms", help="Longer intervals are macro (default 500, at most 2000).")
LANDMARK_EVERY_OPTION = typer.Option(3, "--landmark-every", help="Run the face landmarker every k-th frame (1-1000).")
DURING_SPEECH_OPTION = typer.Option("penalise", "--during-speech", help="penalise: while the person talks the "
                                    "mouth, nose wings and cheeks are ignored and the brows need more evidence; skip: no micro spots while they talk (far fewer "
                                    "false spots, blind to expressions made while talking).")
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
    during_speech: str = DURING_SPEECH_OPTION,
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
    from slstt.realtime.analyze import check_record_name, file_inputs
    from slstt.realtime.capture import StreamLostError, StreamPolicy, resolve_source

    _check_number("--stall-timeout", stall_timeout, 0.2, 3600.0)
    _check_int("--reconnect", reconnect, 0, 1000)
    _check_number("--duration", duration, 0.0, 1e7, low_open=True)
    spec = resolve_source(camera, str(video) if video is not None else None, source)
    config = _live_config(threshold_k, min_micro_ms, max_micro_ms, calibrate, landmark_every, face_model, device,
                          during_speech)
    _check_model(model)
    inputs = file_inputs(spec if isinstance(spec, str) else None, model, face_model)
    if events is not None:
        check_output(events, inputs=inputs, overwrite=overwrite, what="--events file")
    if record is not None:
        check_output(record, inputs=inputs, overwrite=overwrite, what="--record file")
        check_record_name(record)
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


def analyze_command(
    video: Path = typer.Argument(..., metavar="VIDEO|DIR|LIST.csv",
                                 help="A video file; or a folder of videos, each with <stem>.gt.csv beside it; or a "
                                 "CSV list with columns video,ground_truth: pooled micro scores over all of them."),
    out: Path = typer.Option(Path("analyze_out"), "--out", help="Folder for events.jsonl, events.csv, timeline.png, "
                             "summary.json (many videos: pooled.json, per_video.csv, per_group.csv, pooled.png, "
                             "videos/; with --sweep-k: operating_curve.csv/.png)."),
    model: Path | None = typer.Option(None, "--model", help="Exported model.onnx to label micro events."),
    ground_truth: Path | None = typer.Option(None, "--ground-truth", help="Ground-truth CSV (synth .gt.csv form) to "
                                             "score one video against."),
    device: str = DEVICE_OPTION,
    record: Path | None = typer.Option(None, "--record", help="Also write the annotated video (.mp4 or .mkv)."),
    overwrite: bool = OVERWRITE_OPTION,
    calibrate: float = CALIBRATE_OPTION,
    threshold_k: float | None = THRESHOLD_K_OPTION,
    min_micro_ms: float | None = MIN_MICRO_OPTION,
    max_micro_ms: float | None = MAX_MICRO_OPTION,
    landmark_every: int = LANDMARK_EVERY_OPTION,
    during_speech: str = DURING_SPEECH_OPTION,
    face_model: Path | None = FACE_MODEL_OPTION,
    explain: bool = typer.Option(False, "--explain", help="Many videos: also say why each missed micro event was "
                                 "missed (the rules in its way; with the control of an injected copy, whether it "
                                 "rose above the footage's own movement) into explain.csv."),
    jobs: int = typer.Option(1, "--jobs", "-j", help="A folder or list: analyse this many videos at once, in "
                             "worker processes (about one per CPU core; the same results)."),
    sweep_k: str | None = typer.Option(None, "--sweep-k", metavar="K1,K2,...",
                                       help="With ground truth: also score the spotter at these threshold_k values "
                                       "on the same flows (one pass) -> operating_curve.csv/.png: recall against "
                                       "false spots per minute."),
) -> None:
    """Run the live pipeline over a video file (or many, pooled) as fast as possible and report events."""
    from slstt.realtime.analyze import summary_lines

    many = video.is_dir() or video.suffix.lower() == ".csv"
    config = _live_config(threshold_k, min_micro_ms, max_micro_ms, calibrate, landmark_every, face_model, device,
                          during_speech, sweep_k)
    _check_model(model)
    if sweep_k and not many and ground_truth is None:
        from slstt.errors import SlsttError

        raise SlsttError(f"--sweep-k scores against ground truth: pass --ground-truth for {video}, or a folder or "
                         "CSV list of videos with <stem>.gt.csv")
    if many:
        for line in _analyze_many(video, out, model=model, config=config, ground_truth=ground_truth, record=record,
                                  overwrite=overwrite, face_model=face_model, explain=explain, jobs=jobs):
            typer.echo(line)
        return
    if explain or jobs != 1:
        from slstt.errors import SlsttError

        option = "--explain" if explain else "--jobs"
        raise SlsttError(f"{option} needs a folder or CSV list of videos with ground truth (<stem>.gt.csv), "
                         f"not the single video {video}")
    from slstt.api import analyze_one

    result = analyze_one(video, out, model=model, ground_truth=ground_truth, config=config, record=record,
                         overwrite=overwrite, face_model=face_model, progress=sys.stderr.isatty(),
                         on_warning=lambda m: _echo(f"warning: {m}"))
    if result.frames and not result.events and result.warnings:
        _echo("no events: no face was tracked long enough in this video")
    for line in summary_lines(result):
        typer.echo(line)


def _analyze_many(spec: Path, out: Path, *, model: Path | None, config: Any, ground_truth: Path | None,
                  record: Path | None, overwrite: bool, face_model: Path | None, explain: bool = False,
                  jobs: int = 1) -> list[str]:
    from slstt.api import analyze_many
    from slstt.errors import SlsttError
    from slstt.realtime.pooled import pooled_lines

    if ground_truth is not None or record is not None:
        option = "--ground-truth" if ground_truth is not None else "--record"
        raise SlsttError(f"{option} applies to one video; a folder or list brings each video's ground truth "
                         "(<stem>.gt.csv) and records nothing")
    result = analyze_many(spec, out, model=model, config=config, overwrite=overwrite, face_model=face_model,
                          progress=sys.stderr.isatty(), on_warning=lambda m: _echo(f"warning: {m}"), explain=explain,
                          jobs=jobs)
    return pooled_lines(result)


def demo_command(
    out: Path = typer.Option(Path("demo_out"), "--out", help="Folder for the corpus, model, video and results."),
    seconds: float = typer.Option(30.0, "--seconds", help="Length of the synthetic test video."),
    seed: int = typer.Option(0, "--seed", help="Random seed for the synthetic data."),
    epochs: int = typer.Option(300, "--epochs", help="Training epochs of the small demo model (cached features: fast)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace the results of an earlier demo in --out."),
) -> None:
    """End-to-end demo with no camera and no data: synth, train, export, live on a video."""
    from slstt.realtime.demo import run_demo

    _check_number("--seconds", seconds, 0.0, 3600.0, low_open=True)
    _check_int("--seed", seed, 0, 2**32 - 1)
    _check_int("--epochs", epochs, 1, 100_000)

    run_demo(out, seconds=seconds, seed=seed, epochs=epochs, overwrite=overwrite)
