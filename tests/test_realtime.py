"""The live detector on generated videos: spotting accuracy, recognition without train/serve skew,
events files, and the one-line failures of the CLI (missing camera, unreadable video, no face)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from slstt.realtime.analyze import GroundTruth, iou, read_ground_truth, score_spotting
from slstt.realtime.events import EventLog, SpotEvent, read_events

SLSTT = [sys.executable, "-c", "from slstt.cli import main; main()"]
EVENT_KEYS = {"event", "kind", "onset_frame", "apex_frame", "offset_frame", "onset_s", "apex_s", "offset_s",
              "score", "threshold", "label", "probabilities", "recognition_latency_ms"}


def run_cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    env = {**os.environ, "DISPLAY": ""}
    return subprocess.run([*SLSTT, *args], capture_output=True, text=True, timeout=timeout, env=env)


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.strip()]


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny SLSTT (random weights) exported to ONNX, with live-compatible metadata."""
    from slstt.config import ModelConfig, PreprocessConfig
    from slstt.export.onnx import export_onnx
    from slstt.models import create_model, save_checkpoint

    labels = ["happiness", "surprise", "disgust", "repression", "others"]
    prep = PreprocessConfig(input_size=32, num_frames=5, fps=30.0)
    mcfg = ModelConfig(backbone="vit_tiny_patch16_224", input_size=32, num_frames=5, num_classes=5, labels=labels,
                       lstm_hidden=32, lstm_layers=1, head_hidden=16)
    out = tmp_path_factory.mktemp("tiny_model")
    model = create_model(mcfg, pretrained=False)
    save_checkpoint(out / "tiny.pt", model, preprocess=prep, meta={"labels": labels, "data_fps": 200.0})
    export_onnx(out / "tiny.pt", out / "tiny.onnx", parity=False)
    return out / "tiny.onnx"


@pytest.fixture(scope="module")
def analyzed(synth_long_video, tiny_model, tmp_path_factory):
    """One pass of the pipeline (with recognition) over the synthetic long video; the recognizer's
    inputs are captured to check them against the training preprocessing."""
    from slstt.realtime.analyze import analyze_video
    from slstt.realtime.pipeline import LivePipeline
    from slstt.realtime.recognizer import Recognizer

    video, gt = synth_long_video
    captured = []
    original = Recognizer.prepare

    def spy(self, clip):
        live = original(self, clip)
        captured.append((clip, live))
        return live

    out = tmp_path_factory.mktemp("analyze")
    Recognizer.prepare = spy
    try:
        result = analyze_video(video, out, model=tiny_model, ground_truth=gt)
    finally:
        Recognizer.prepare = original
    assert LivePipeline  # imported for the side effect of loading the package once
    return result, captured, out


def test_spotting_f1_on_synthetic_video(analyzed, synth_long_video):
    result, _, _ = analyzed
    s = result.scores
    assert s is not None and s.truth >= 4
    assert s.f1 >= 0.8, f"spotting F1 {s.f1:.3f} (P {s.precision:.3f} R {s.recall:.3f}) below 0.8"
    assert result.frames == int(cv2.VideoCapture(str(synth_long_video[0])).get(cv2.CAP_PROP_FRAME_COUNT))


def test_macro_expressions_are_macro(analyzed, synth_long_video):
    result, _, _ = analyzed
    macros = [g for g in read_ground_truth(synth_long_video[1]) if g.kind == "macro"]
    assert macros
    for g in macros:
        overlapping = [e for e in result.events if iou((e.onset_frame, e.offset_frame), (g.onset, g.offset)) > 0.2]
        assert overlapping, f"macro expression at frames {g.onset}-{g.offset} not spotted"
        assert all(e.kind == "macro" for e in overlapping), [e.to_dict() for e in overlapping]


def test_events_files_and_labels(analyzed, tiny_model):
    result, _, out = analyzed
    rows = read_events(out / "events.jsonl")
    assert len(rows) == len(result.events) > 0
    labels = {"happiness", "surprise", "disgust", "repression", "others"}
    for row in rows:
        assert EVENT_KEYS <= set(row)
        assert row["onset_frame"] <= row["apex_frame"] <= row["offset_frame"]
        if row["kind"] == "micro":  # recognised asynchronously: label, probabilities, latency
            assert row["label"] in labels and row["recognition_error"] is None
            assert abs(sum(row["probabilities"].values()) - 1) < 1e-3 and row["recognition_latency_ms"] > 0
        else:
            assert row["label"] is None
    assert (out / "timeline.png").stat().st_size > 10_000
    csv_rows = (out / "events.csv").read_text().strip().splitlines()
    assert len(csv_rows) == len(rows) + 1 and csv_rows[0].startswith("event,kind,onset_frame")
    summary = json.loads((out / "summary.json").read_text())
    assert summary["scores"]["f1"] == pytest.approx(result.scores.f1)


def test_recognizer_input_equals_training_preprocessing(analyzed, synth_long_video, tiny_model, read_video):
    """No train/serve skew: the live input for an event == what training builds from the same frames
    (decoded independently from the file): clip_to_flow_images with box=None, i.e. landmarks found
    once on the apex frame by an IMAGE-mode landmarker, + flow_images_to_input, at the training rate."""
    from slstt.export.runtime import OnnxClassifier
    from slstt.preprocess.face import FaceLandmarker
    from slstt.preprocess.flow import flow_images_to_input
    from slstt.preprocess.pipeline import clip_to_flow_images

    result, captured, _ = analyzed
    assert captured, "no micro event reached the recognizer"
    micro = sorted((e for e in result.events if e.kind == "micro"), key=lambda e: e.onset_frame)
    frames, _ = read_video(synth_long_video[0])
    cfg = OnnxClassifier(tiny_model).preprocess  # fps 30 set at training: resampling is explicit
    checked = 0
    with FaceLandmarker() as landmarker:  # IMAGE mode, as prepare uses it
        for clip, live in captured:
            event = next(e for e in micro if e.offset_frame - e.onset_frame + 1 == len(clip.frames)
                         and np.array_equal(frames[e.onset_frame], clip.frames[0]))
            n = event.offset_frame - event.onset_frame + 1
            flow = clip_to_flow_images(lambda i, e=event: frames[e.onset_frame + i], n, 0,
                                       event.apex_frame - event.onset_frame, n - 1, cfg, landmarker, 30.0, box=None)
            expected = flow_images_to_input(flow.images, cfg)
            assert live.note is None and event.recognition_note is None  # box from the apex frame
            assert live.box == flow.box and live.box != clip.tracked_box  # not the smoothed tracker box
            assert live.x.shape == (cfg.num_frames, 3, cfg.input_size, cfg.input_size)
            np.testing.assert_array_equal(live.x, expected)
            checked += 1
    assert checked == len(captured)


def test_no_face_on_apex_falls_back_to_tracked_box_and_says_so(no_face_video, tiny_model):
    """Training would skip such a clip (NoFaceError); live uses the tracked box and notes it in the event."""
    from slstt.errors import NoFaceError
    from slstt.export.runtime import OnnxClassifier
    from slstt.preprocess.face import CropBox, FaceLandmarker
    from slstt.realtime.recognizer import TRACKED_BOX_NOTE, ClipFrames, build_input

    cap = cv2.VideoCapture(str(no_face_video))
    frames = np.stack([cap.read()[1] for _ in range(10)])
    cfg = OnnxClassifier(tiny_model).preprocess
    tracked = CropBox(320.0, 240.0, 200)
    with FaceLandmarker() as landmarker:
        live = build_input(ClipFrames(frames, np.arange(10) / 30.0, 5, tracked), cfg, landmarker)
        assert live.note == TRACKED_BOX_NOTE and live.box == tracked
        assert live.x.shape == (cfg.num_frames, 3, cfg.input_size, cfg.input_size)
        with pytest.raises(NoFaceError):  # no tracked box either: the event gets this as its error
            build_input(ClipFrames(frames, np.arange(10) / 30.0, 5, None), cfg, landmarker)


def test_dropped_frame_in_event_window_is_an_event_error_not_a_crash(tiny_model):
    """A camera that dropped a frame inside an event's window: the event is reported with an error."""
    from slstt.realtime.capture import Frame
    from slstt.realtime.pipeline import LiveConfig, LivePipeline
    from slstt.realtime.spotting import Interval

    pipe = LivePipeline(LiveConfig(), model=tiny_model)
    try:
        pipe.start(30.0)
        image = np.zeros((120, 160, 3), np.uint8)
        for i in [*range(0, 10), *range(11, 20)]:  # frame 10 never arrived
            pipe.ring.push(Frame(i, i / 30.0, image))
        iv = Interval(4, 8, 14, 4 / 30, 8 / 30, 14 / 30, "micro", 1.0, 0.1, {}, 19, 19 / 30)
        clip, why_not = pipe.clip_for(iv)
        assert clip is None and why_not.startswith("frames missing in the analysis window")
        pipe._on_interval(iv)
        (event,) = pipe.finish()
        assert event.label is None and event.recognition_error.startswith("frames missing in the analysis window")
        whole = Interval(11, 13, 18, 11 / 30, 13 / 30, 18 / 30, "micro", 1.0, 0.1, {}, 19, 19 / 30)
        clip, why_not = pipe.clip_for(whole)  # a window without the gap is copied out
        assert why_not is None and len(clip.frames) == 8 and clip.apex == 2
    finally:
        pipe.close()


def test_pipeline_copies_its_config_and_bounds_its_statistics(tiny_model):
    """The pipeline adapts its own copy of the config to the model (crop recipe) and keeps only recent
    recognition latencies: a caller's config is reusable, hours of live events do not grow memory."""
    import copy

    from slstt.realtime.pipeline import LiveConfig, LivePipeline
    from slstt.realtime.recognizer import LATENCY_WINDOW

    config = LiveConfig()
    config.tracker.recipe = "aligned"  # the tiny model was trained with the "slstt" crop
    before = copy.deepcopy(config)
    pipe = LivePipeline(config, model=tiny_model)
    try:
        assert pipe.config.tracker.recipe == "slstt" and config == before
        for n in range(LATENCY_WINDOW + 50):
            pipe.recognizer.latencies_ms.append(float(n))
        assert len(pipe.recognizer.latencies_ms) == LATENCY_WINDOW and pipe.recognizer.latencies_ms[-1] == n
    finally:
        pipe.close()


def test_tracking_thread_gives_the_same_spotting_one_frame_later(synth_long_video):
    """Tracking frame i on a worker thread while frame i-1 is spotted is a speed-up only: every frame's
    score and every event equal the one-thread pipeline's, and the worker really tracked."""
    import threading

    from slstt.realtime.pipeline import LiveConfig, LivePipeline

    video, _ = synth_long_video
    cap = cv2.VideoCapture(str(video))
    frames = [cap.read()[1] for _ in range(300)]  # 10 s: two micro events
    cap.release()
    runs = {}
    for parallel in (False, True):
        pipe = LivePipeline(LiveConfig(parallel_tracking=parallel))
        threads = set()
        update = pipe.tracker.update

        def spy(image, index, t, update=update, threads=threads):
            threads.add(threading.current_thread().name)
            return update(image, index, t)

        pipe.tracker.update = spy
        pipe.start(30.0)
        try:
            events, lag = [], []
            for i, image in enumerate(frames):
                events += pipe.process(image, i / 30.0, i)
                lag.append(i - pipe.history[-1][0] if pipe.history else None)
            events += pipe.finish()
        finally:
            pipe.close()
        assert len(pipe.history) == len(frames) and pipe.stats.frames == len(frames)
        runs[parallel] = ([(e.kind, e.onset_frame, e.apex_frame, e.offset_frame, e.region) for e in events], pipe.history, threads,
                          lag)
    assert runs[True][0] == runs[False][0] and len(runs[True][0]) >= 1
    np.testing.assert_array_equal(np.array(runs[True][1]), np.array(runs[False][1]))  # NaN == NaN here
    assert runs[False][2] == {threading.current_thread().name} and runs[True][2] != runs[False][2]
    assert set(runs[False][3]) == {0} and set(runs[True][3][1:]) == {1}  # one frame later


def test_overlay_shows_the_region_and_the_score_threshold_ratio():
    from slstt.realtime.overlay import OverlayState, event_caption, render

    event = SpotEvent(1, "micro", 10, 12, 14, 1.0, 1.1, 1.2, 2.0, 1.0, {"brow_l": 2.0}, region="brow_l")
    assert "[brow_l]" in event_caption(event, has_model=False)
    assert "[" not in event_caption(SpotEvent(2, "macro", 1, 2, 3, 0.1, 0.2, 0.3, 1.0, 1.0), has_model=False)
    blank = np.zeros((240, 640, 3), np.uint8)
    trace = [(t / 30, 0.5 + (t == 20) * 1.5, 1.0) for t in range(40)]  # one frame above the threshold (1.0)
    drawn = render(blank, OverlayState(trace=trace, recent=[event], note="recognition on CPU: test"))
    strip = drawn[240 - 90:]
    red = (strip[..., 2] > 200) & (strip[..., 1] < 100)  # the segments at or above the threshold are red
    assert red.any() and (drawn[:, 300:] != 0).any()  # the event caption is drawn on the right
    assert not blank.any()  # render draws on a copy


def test_score_spotting_matches_one_to_one():
    truth = [GroundTruth("micro", "a", 10, 12, 20), GroundTruth("micro", "b", 50, 52, 60),
             GroundTruth("macro", "c", 80, 90, 120)]

    def ev(n, a, b, kind="micro", label=None):
        return SpotEvent(n, kind, a, a, b, a / 30, a / 30, b / 30, 1.0, 0.1, label=label)

    events = [ev(1, 10, 19, label="a"), ev(2, 11, 20, label="a"), ev(3, 52, 60, label="x"), ev(4, 80, 120, "macro")]
    s = score_spotting(events, truth)
    assert (s.tp, s.spotted, s.truth) == (2, 3, 2)  # the duplicate on interval 1 is a false positive
    assert s.precision == pytest.approx(2 / 3) and s.recall == 1.0
    assert s.label_accuracy == 0.5 and s.correct_label == 1


def test_event_log_is_flushed_per_event(tmp_path):
    log = EventLog(tmp_path / "ev.jsonl")
    log.write(SpotEvent(1, "micro", 3, 5, 9, 0.1, 0.17, 0.3, 0.5, 0.1))
    assert len(read_events(tmp_path / "ev.jsonl")) == 1  # readable before close
    log.close()


def test_no_face_video_exits_cleanly(no_face_video, tmp_path):
    proc = run_cli("analyze", str(no_face_video), "--out", str(tmp_path / "out"))
    assert proc.returncode == 0, proc.stderr
    assert "no face" in proc.stderr
    assert read_events(tmp_path / "out" / "events.jsonl") == []


def test_missing_camera_fails_fast_with_one_line():
    index = next(i for i in (0, 7, 57) if not Path(f"/dev/video{i}").exists())  # 0 on camera-less machines
    start = time.perf_counter()
    proc = run_cli("live", "--camera", str(index), "--no-display", timeout=20)
    elapsed = time.perf_counter() - start
    assert proc.returncode == 2
    assert elapsed < 3.0, f"took {elapsed:.1f} s"
    lines = error_lines(proc.stderr)
    assert len(lines) == 1 and lines[0].startswith(f"error: camera {index} is not available"), proc.stderr


@pytest.mark.parametrize("command", ["analyze", "live"])
def test_unreadable_video_one_line(tmp_path, command):
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"not a video at all" * 100)
    args = [command, str(bad)] if command == "analyze" else [command, "--video", str(bad), "--no-display"]
    proc = run_cli(*args)
    assert proc.returncode == 2
    lines = error_lines(proc.stderr)
    assert len(lines) == 1 and "cannot read video" in lines[0], proc.stderr


def test_sigterm_flushes_events_and_recording(synth_long_video, tmp_path):
    video, _ = synth_long_video
    events, record = tmp_path / "events.jsonl", tmp_path / "rec.mp4"
    proc = subprocess.Popen([*SLSTT, "live", "--video", str(video), "--no-display", "--events", str(events),
                             "--record", str(record)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 30
    while time.time() < deadline and not (events.exists() and events.stat().st_size > 0):
        time.sleep(0.2)  # played at real time: wait for the first event
    time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 143, stderr  # 128 + SIGTERM, after flushing everything
    assert "stopped (signal)" in stderr
    assert "spotter open on" in stderr  # how often the context rules left it open (explain.ContextTally)
    rows = read_events(events)
    assert rows and all(EVENT_KEYS <= set(r) for r in rows)
    cap = cv2.VideoCapture(str(record))
    n = 0
    while cap.read()[0]:
        n += 1
    assert n > 30  # a playable mp4 with the frames seen before the signal


def test_model_the_runtime_cannot_honour_fails_with_one_line(tiny_model, no_face_video, tmp_path):
    import onnx

    from slstt.export.metadata import read_metadata, set_metadata

    meta = read_metadata(tiny_model)
    meta["preprocess_config"]["flow"] = "raft"  # a flow backend this runtime does not have
    proto = onnx.load(str(tiny_model))
    set_metadata(proto, meta)
    bad = tmp_path / "raft.onnx"
    onnx.save(proto, str(bad))
    proc = run_cli("analyze", str(no_face_video), "--model", str(bad), "--out", str(tmp_path / "out"))
    assert proc.returncode == 2
    lines = error_lines(proc.stderr)
    assert len(lines) == 1 and "raft" in lines[0], proc.stderr


def test_serving_preprocess_resamples_to_the_training_rate():
    from slstt.config import PreprocessConfig
    from slstt.errors import SlsttError
    from slstt.realtime.recognizer import serving_preprocess

    assert serving_preprocess(PreprocessConfig(fps=50.0), {"frame_rate": {"data_fps": 200.0}}).fps == 50.0
    assert serving_preprocess(PreprocessConfig(), {"frame_rate": {"data_fps": 200.0}}).fps == 200.0
    with pytest.raises(SlsttError, match="several frame rates"):
        serving_preprocess(PreprocessConfig(), {"frame_rate": {"data_fps": [100.0, 200.0]}})


def cli_error(capsys: pytest.CaptureFixture, *args: str) -> str:
    """Run `slstt ARGS` in this process; it must exit 2 with one `error:` line, which is returned."""
    from slstt.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(list(args))
    err = capsys.readouterr().err
    assert exit_info.value.code == 2, err
    lines = error_lines(err)
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


@pytest.mark.parametrize("option", ["--events", "--record"])
def test_live_bad_output_paths_are_one_line(no_face_video, tmp_path, capsys, option):
    afile = tmp_path / "afile"
    afile.write_text("x")
    folder = tmp_path / "somedir"
    folder.mkdir()
    live = ["live", "--video", str(no_face_video), "--no-display", "--fast"]
    assert "is a folder" in cli_error(capsys, *live, option, str(folder))
    name = "ev.jsonl" if option == "--events" else "rec.mp4"
    line = cli_error(capsys, *live, option, str(afile / "sub" / name))  # under a file: cannot be created
    assert f"{afile} is a file, not a folder" in line


def test_analyze_out_is_a_file_or_bad_video_one_line_and_no_folder(no_face_video, tmp_path, capsys):
    afile = tmp_path / "afile"
    afile.write_text("x")
    assert "--out" in cli_error(capsys, "analyze", str(no_face_video), "--out", str(afile))
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"not a video at all" * 100)
    out = tmp_path / "new" / "out"
    assert "cannot read video" in cli_error(capsys, "analyze", str(bad), "--out", str(out))
    assert not (tmp_path / "new").exists()  # the video is checked before any folder is made


def test_device_tensorrt_is_accepted_and_checked(tiny_model, no_face_video, tmp_path, capsys):
    from slstt.cli import main
    from slstt.export.runtime import provider_status

    args = ["analyze", str(no_face_video), "--model", str(tiny_model), "--device", "tensorrt",
            "--out", str(tmp_path / "out")]
    if provider_status("tensorrt")[0]:  # a machine with TensorRT: it really runs
        with pytest.raises(SystemExit) as exit_info:
            main(args)
        assert exit_info.value.code in (0, None)
    else:
        line = cli_error(capsys, *args)
        assert "--device tensorrt is not usable here" in line and "--device auto or cpu" in line
    assert "choose auto, tensorrt, cuda, cpu" in cli_error(capsys, *args[:-4], "--device", "npu")


def test_operating_curve_scores_followers_on_the_same_flows(synth_long_video, tmp_path, capsys):
    """analyze with sweep_k: one pass gives the pooled numbers at each threshold_k beside the run's own
    (whose row equals pooled.json's); a curve left by an earlier run goes when the next has none."""
    from slstt.realtime.pipeline import live_config
    from slstt.realtime.pooled import CURVE_OUTPUTS, analyze_many, collect_videos, pooled_lines

    video, gt = synth_long_video
    folder = tmp_path / "videos"
    folder.mkdir()
    (folder / video.name).symlink_to(video)
    (folder / gt.name).symlink_to(gt)
    out = tmp_path / "out"
    result = analyze_many(collect_videos(folder), out, config=live_config(sweep_k=(50.0, 0.5)))
    assert [(p["threshold_k"], p["this_run"]) for p in result.curve] == [(0.5, False), (4.0, True), (50.0, False)]
    run = result.curve[1]
    assert {k: run[k] for k in ("tp", "spotted", "recall", "false_spots_per_minute")} == {
        k: result.pooled[k] for k in ("tp", "spotted", "recall", "false_spots_per_minute")}
    spotted = [p["spotted"] for p in result.curve]
    assert spotted[0] >= spotted[1] >= spotted[2] and spotted[0] > spotted[2]  # lower k, more spots
    assert json.loads((out / "pooled.json").read_text())["operating_curve"] == result.curve
    per_video = json.loads((out / "videos" / video.stem / "summary.json").read_text())["operating_curve"]
    assert [(p["threshold_k"], p["spotted"]) for p in per_video] == [(p["threshold_k"], p["spotted"]) for p in result.curve]
    assert all((out / name).is_file() for name in CURVE_OUTPUTS)
    assert any(line.startswith("  k 4 ") and "this run" in line for line in pooled_lines(result))
    again = analyze_many(collect_videos(folder), out, config=live_config())
    assert again.curve == [] and not any((out / name).exists() for name in CURVE_OUTPUTS)


@pytest.mark.parametrize(("extra", "message"), [
    (["--sweep-k", "2,x"], "--sweep-k '2,x': give comma-separated numbers"),
    (["--sweep-k", "2,-1"], "--sweep-k -1: give a finite number above 0"),
    (["--sweep-k", "2"], "--sweep-k scores against ground truth: pass --ground-truth"),
])
def test_bad_sweep_is_one_line(no_face_video, tmp_path, extra, message):
    proc = run_cli("analyze", str(no_face_video), "--out", str(tmp_path / "o"), *extra)
    assert proc.returncode == 2
    lines = error_lines(proc.stderr)
    assert len(lines) == 1 and message in lines[0], proc.stderr
    assert not (tmp_path / "o").exists()


@pytest.fixture(scope="module")
def three_clips(tmp_path_factory):
    """(folder of three 6 s classic synth videos with ground truth, pooled numbers of a clean run)."""
    from slstt.data.synth import make_long_video

    folder = tmp_path_factory.mktemp("three_clips")
    for seed in (1, 2, 3):
        make_long_video(folder / f"clip{seed}.mp4", seed=seed, duration_s=6, n_micro=1, n_macro=0)
    clean = tmp_path_factory.mktemp("clean") / "out"
    proc = run_cli("analyze", str(folder), "--out", str(clean), timeout=180)
    assert proc.returncode == 0 and "resumed" not in proc.stdout, proc.stderr
    return folder, json.loads((clean / "pooled.json").read_text())


def test_a_killed_pooled_analysis_resumes_where_it_stopped(three_clips, tmp_path):
    """SIGKILL a real `slstt analyze FOLDER` after its first video; the same command reuses that video's
    finished analysis (videos/<stem>/done.json, untouched) and gives the uninterrupted run's pooled
    numbers; other settings in the same --out are one line (--overwrite or another folder)."""
    folder, clean = three_clips
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "slstt.cli", "analyze", str(folder), "--out", str(out)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    first = out / "videos" / "clip1" / "done.json"
    deadline = time.monotonic() + 180
    while not first.is_file() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL and first.is_file() and not (out / "pooled.json").exists()
    stamp = first.stat().st_mtime_ns

    again = run_cli("analyze", str(folder), "--out", str(out), timeout=180)
    assert again.returncode == 0, again.stderr
    assert again.stdout.startswith("1 of 3 videos resumed") and first.stat().st_mtime_ns == stamp
    pooled = json.loads((out / "pooled.json").read_text())
    assert pooled["pooled"] == clean["pooled"] and pooled["pooled"]["truth"] == 3
    finished = run_cli("analyze", str(folder), "--out", str(out), timeout=60)  # all three, for free
    assert finished.returncode == 0 and finished.stdout.startswith("3 of 3 videos resumed")

    other = run_cli("analyze", str(folder), "--out", str(out), "--threshold-k", "3")
    lines = error_lines(other.stderr)
    assert other.returncode == 2 and len(lines) == 1 and "--overwrite" in lines[0], other.stderr
    assert first.stat().st_mtime_ns == stamp


def _children(pid: int) -> set[int]:
    """Process ids whose parent is `pid` (Linux /proc)."""
    out = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.add(int(stat.parent.name))
    return out


def test_jobs_analyse_videos_in_workers_that_die_with_their_parent(three_clips, tmp_path):
    """--jobs 2: the same pooled numbers as one process; SIGKILL of the parent takes its workers with it."""
    folder, clean = three_clips
    out = tmp_path / "out"
    proc = run_cli("analyze", str(folder), "--out", str(out), "--jobs", "2", timeout=180)
    assert proc.returncode == 0, proc.stderr
    assert json.loads((out / "pooled.json").read_text())["pooled"] == clean["pooled"]
    assert len(list(out.glob("videos/*/done.json"))) == 3

    cmd = [sys.executable, "-m", "slstt.cli", "analyze", str(folder), "--out", str(tmp_path / "killed"), "--jobs", "2"]
    parent = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    def helpers() -> dict[int, str]:  # the workers (spawn_main) and multiprocessing's resource tracker
        found = {}
        for pid in _children(parent.pid):
            try:
                found[pid] = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
            except OSError:
                continue
        return {pid: cmd for pid, cmd in found.items() if "multiprocessing" in cmd}

    deadline, workers = time.monotonic() + 60, {}
    while sum("spawn_main" in cmd for cmd in workers.values()) < 2 and parent.poll() is None \
            and time.monotonic() < deadline:
        workers = helpers()
        time.sleep(0.05)
    assert sum("spawn_main" in cmd for cmd in workers.values()) == 2, workers
    os.kill(parent.pid, signal.SIGKILL)
    parent.wait()
    deadline = time.monotonic() + 2  # a worker's own video takes longer: it must not finish it
    while any(Path(f"/proc/{pid}").exists() and "Z" not in _state(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [pid for pid in workers if Path(f"/proc/{pid}").exists() and "Z" not in _state(pid)]


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "Z"


def test_jobs_from_an_unguarded_script_is_one_line_not_a_hang(three_clips, tmp_path):
    """Python's spawn re-runs a script without `if __name__ == "__main__":` in every worker; the workers
    die, and analyze says so in one line (a restarting pool would hang forever)."""
    folder, _ = three_clips
    script = tmp_path / "unguarded.py"
    script.write_text("from slstt.realtime.pooled import analyze_many, collect_videos\n"
                      f"analyze_many(collect_videos({str(folder)!r}), {str(tmp_path / 'out')!r}, jobs=2)\n")
    start = time.monotonic()
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and time.monotonic() - start < 90
    ours = [line for line in proc.stderr.splitlines() if line.startswith("slstt.errors.SlsttError: analyze --jobs")]
    assert len(ours) == 1 and 'if __name__ == "__main__":' in ours[0], proc.stderr[-3000:]  # workers' output may follow


def test_pooled_groups_events_by_their_size_on_the_crop(tmp_path):
    """per_group.csv's amplitude_crop112 bands: the same video pixels are a smaller movement on a larger
    face; a ground truth without the column (older files, other tools) just has no band."""
    from slstt.errors import SlsttError
    from slstt.realtime.analyze import GroundTruth, read_ground_truth
    from slstt.realtime.pooled import _Pool, crop_band

    assert [crop_band(a) for a in (None, 0.0, 0.99, 1.0, 2.5, 3.999, 4.0, 9.0)] == [
        "", "0-1", "0-1", "1-2", "2-3", "3-4", "4-", "4-"]
    pool = _Pool()
    for crop, hit in ((0.6, 0), (1.4, 1), (1.9, 0), (4.2, 1), (None, 1)):
        pool._count(GroundTruth("micro", "x", 1, 2, 3, "brow_raise", 2.5, "busy", crop), hit)
    bands = {g["value"]: (g["found"], g["truth"]) for g in pool.groups() if g["group"] == "amplitude_crop112"}
    assert bands == {"0-1": (0, 1), "1-2": (1, 2), "4-": (1, 1)}
    gt = tmp_path / "v.gt.csv"
    gt.write_text("kind,label,onset_frame,apex_frame,offset_frame,amplitude_px,amplitude_crop112\n"
                  "micro,a,1,2,3,2.5,1.25\nmicro,b,5,6,7,2.5,\n")
    assert [t.amplitude_crop112 for t in read_ground_truth(gt)] == [1.25, None]
    gt.write_text("kind,label,onset_frame,apex_frame,offset_frame,amplitude_px\nhead_turn,yaw,1,2,3,-10.9\n")
    assert read_ground_truth(gt)[0].amplitude_px == -10.9  # signed: a head turn's degrees
    gt.write_text("kind,label,onset_frame,apex_frame,offset_frame,amplitude_crop112\nmicro,a,1,2,3,-1\n")
    with pytest.raises(SlsttError, match="line 2: amplitude_crop112 must be a finite number >= 0"):
        read_ground_truth(gt)
