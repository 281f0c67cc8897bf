"""`slstt live` / `slstt analyze` against a demanding user: a catalogue of bad inputs (one line, exit 2,
no input file touched), outputs that would destroy inputs or earlier results, strict JSON events,
conventional exit codes after a signal, and recordings that survive kill -9."""

from __future__ import annotations

import hashlib
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from slstt.realtime.events import EventLog, GapRecord, SpotEvent, read_events, read_records, write_events_csv

SLSTT = [sys.executable, "-c", "from slstt.cli import main; main()"]
HAS_FFMPEG = bool(__import__("shutil").which("ffmpeg"))


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder of inputs: clip.mp4 (5 s 320x240 synthetic face), its clip.gt.csv, a hard link and a
    symlink to the video, an events file from an earlier run, and an analyze --out folder with results."""
    from slstt.data.synth import make_long_video

    folder = tmp_path_factory.mktemp("inputs")
    make_long_video(folder / "clip.mp4", seed=3, duration_s=5, fps=30, size=(320, 240), n_micro=1, n_macro=0)
    os.link(folder / "clip.mp4", folder / "hardlink.mp4")
    (folder / "symlink.mp4").symlink_to(folder / "clip.mp4")
    (folder / "earlier.jsonl").write_text('{"event": 1, "kind": "micro"}\n')
    (folder / "done").mkdir()
    (folder / "done" / "events.jsonl").write_text('{"event": 1, "kind": "micro"}\n')
    (folder / "gt_inside").mkdir()
    (folder / "gt_inside" / "events.csv").write_bytes((folder / "clip.gt.csv").read_bytes())
    (folder / "linked").mkdir()
    (folder / "linked" / "events.jsonl").symlink_to(folder / "clip.mp4")
    return folder


@pytest.fixture(scope="module")
def long_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """10 s 320x240 with two micro-expressions: long enough to be stopped while playing."""
    from slstt.data.synth import make_long_video

    video = tmp_path_factory.mktemp("long") / "long.mp4"
    make_long_video(video, seed=5, duration_s=10, fps=30, size=(320, 240), n_micro=2, n_macro=0)
    return video


def tree_hashes(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def run_cli(*args: str, cwd: Path | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([*SLSTT, *args], capture_output=True, text=True, timeout=timeout, cwd=cwd,
                          env={**os.environ, "DISPLAY": ""})


def one_error_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    return lines[0]


V = "clip.mp4"  # relative to the inputs folder (the cwd of every case)
LIVE = ["live", "--video", V, "--no-display", "--fast"]

# (arguments, a fragment of the one error line). The cases that reached native code before (camera
# index, outputs onto inputs) run as `slstt ARGS` in a subprocess, where a crash (exit 139) shows as
# such; the others run in this process (same entry point, a fraction of the time).
SUBPROCESS = {"live --camera -1", "live --source -2", "--events clip.mp4 --overwrite", "--record hardlink.mp4"}
CATALOGUE = [
    (["live", "--camera", "-1"], "--camera -1: a camera index is a whole number from 0 to 63"),
    (["live", "--camera", "64"], "--camera 64"),
    (["live", "--source", "-2"], "--source -2: a camera index"),
    (["live", "--source", "ftp://127.0.0.1/x"], "unsupported stream scheme 'ftp'"),
    ([*LIVE, "--threshold-k", "-1"], "--threshold-k -1: give a finite number above 0"),
    ([*LIVE, "--threshold-k", "nan"], "--threshold-k nan"),
    ([*LIVE, "--calibrate", "-5"], "--calibrate -5"),
    ([*LIVE, "--calibrate", "inf"], "--calibrate inf"),
    ([*LIVE, "--min-micro-ms", "-50"], "--min-micro-ms -50"),
    ([*LIVE, "--max-micro-ms", "50"], "must be below --max-micro-ms (50)"),
    ([*LIVE, "--max-micro-ms", "1e9"], "--max-micro-ms 1e+09"),
    ([*LIVE, "--landmark-every", "0"], "--landmark-every 0"),
    ([*LIVE, "--stall-timeout", "0"], "--stall-timeout 0"),
    ([*LIVE, "--stall-timeout", "nan"], "--stall-timeout nan"),
    ([*LIVE, "--reconnect", "-1"], "--reconnect -1"),
    ([*LIVE, "--duration", "-3"], "--duration -3"),
    ([*LIVE, "--face-model", "missing.task"], "--face-model missing.task: file not found"),
    # outputs that are inputs: refused even with --overwrite (same path, hard link, symlink)
    ([*LIVE, "--events", V, "--overwrite"], f"--events file {V} is the input {V}"),
    ([*LIVE, "--record", "hardlink.mp4", "--overwrite"], "--record file hardlink.mp4 is the input"),
    ([*LIVE, "--events", "symlink.mp4", "--overwrite"], "--events file symlink.mp4 is the input"),
    ([*LIVE, "--model", "clip.gt.csv", "--events", "clip.gt.csv", "--overwrite"], "is the input clip.gt.csv"),
    # an earlier result is not silently replaced
    ([*LIVE, "--events", "earlier.jsonl"], "--events file earlier.jsonl already exists"),
    ([*LIVE, "--events", "same.mp4", "--record", "same.mp4"], "--events and --record are the same file"),
    ([*LIVE, "--record", "rec.avi"], "--record rec.avi: name it .mp4 or .mkv"),
    (["analyze", V, "--threshold-k", "nan", "--out", "o1"], "--threshold-k nan"),
    (["analyze", V, "--landmark-every", "-2", "--out", "o1"], "--landmark-every -2"),
    (["analyze", V, "--out", "done"], "--out done holds results of an earlier run (events.jsonl); pass --overwrite"),
    (["analyze", V, "--out", "gt_inside", "--ground-truth", "gt_inside/events.csv", "--overwrite"],
     "is the input gt_inside/events.csv"),
    (["analyze", V, "--out", "linked", "--overwrite"], "is the input clip.mp4"),
    (["analyze", V, "--out", "o2", "--record", "symlink.mp4", "--overwrite"], "--record file symlink.mp4 is the input"),
    (["analyze", V, "--out", "clip.gt.csv"], "--out clip.gt.csv is a file"),
    (["demo", "--seconds", "nan"], "--seconds nan"),
    (["demo", "--epochs", "0"], "--epochs 0"),
]


def run_in_process(args: list[str], capsys: pytest.CaptureFixture) -> tuple[int, str]:
    from slstt.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(args)
    return exit_info.value.code, capsys.readouterr().err


@pytest.mark.parametrize("args, fragment", CATALOGUE, ids=[" ".join(a) for a, _ in CATALOGUE])
def test_bad_input_is_one_line_exit_2_and_touches_no_file(inputs, args, fragment, capsys, monkeypatch):
    before = tree_hashes(inputs)
    monkeypatch.chdir(inputs)
    if any(marker in " ".join(args) for marker in SUBPROCESS):
        proc = run_cli(*args, cwd=inputs)
        code, err = proc.returncode, proc.stderr
    else:
        monkeypatch.setenv("DISPLAY", "")
        code, err = run_in_process(args, capsys)
    assert code == 2, (code, err)
    assert fragment in one_error_line(err)
    assert tree_hashes(inputs) == before  # no input or earlier result changed, nothing new written
    assert not (inputs / "o1").exists() and not (inputs / "o2").exists()


def test_strict_json_events_never_hold_nan(tmp_path):
    nan = float("nan")
    ev = SpotEvent(1, "micro", 3, 5, 9, 0.1, 0.17, 0.3, nan, float("inf"), regions={"brow": nan},
                   label="happiness", probabilities={"happiness": nan, "others": 0.25}, recognition_latency_ms=nan)
    log = EventLog(tmp_path / "ev.jsonl")
    log.write(ev)
    log.write_gap(GapRecord(1.5, None, "no frame for 5 s", 2, 44))
    log.close()

    def no_constants(name: str) -> None:
        raise AssertionError(f"bare {name} in the JSONL")

    rows = [json.loads(line, parse_constant=no_constants)
            for line in (tmp_path / "ev.jsonl").read_text().splitlines()]
    assert rows[0]["score"] is None and rows[0]["threshold"] is None and rows[0]["regions"] == {"brow": None}
    assert rows[0]["probabilities"] == {"happiness": None, "others": 0.25}
    assert rows[0]["recognition_latency_ms"] is None and rows[0]["onset_s"] == 0.1
    assert rows[1] == {"type": "gap", "start_s": 1.5, "end_s": None, "duration_s": None,
                       "reason": "no frame for 5 s", "attempts": 2, "last_frame": 44}
    assert len(read_events(tmp_path / "ev.jsonl")) == 1 and len(read_records(tmp_path / "ev.jsonl")) == 2
    csv_text = write_events_csv(tmp_path / "ev.csv", [ev]).read_text()
    assert "nan" not in csv_text.lower() and "inf" not in csv_text.lower()


def test_json_records_are_strict_json(tmp_path):
    """Every JSON record (summaries, run results, fold histories) goes through atomic_write_json:
    a per-class F1 of a class a subject lacks is NaN in numpy, null in the file, never a bare NaN."""
    import numpy as np

    from slstt.io import atomic_write_json

    path = atomic_write_json(tmp_path / "r.json", {"f1": float("nan"), "rows": [float("inf"), np.float32(1.5)],
                                                   "n": np.int64(3), "kept": (0.25, "x", None, True)})

    def no_constants(name: str) -> None:
        raise AssertionError(f"bare {name} in the JSON")

    assert json.loads(path.read_text(), parse_constant=no_constants) == {
        "f1": None, "rows": [None, 1.5], "n": 3, "kept": [0.25, "x", None, True]}


def count_frames(path: Path) -> int:
    cap = cv2.VideoCapture(str(path))
    n = 0
    while cap.read()[0]:
        n += 1
    cap.release()
    return n


def start_live(*args: str) -> subprocess.Popen:
    return subprocess.Popen([*SLSTT, "live", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "DISPLAY": ""})


def wait_until(condition, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_exit_code_flushes_events_and_recording(long_clip, tmp_path, sig, code):
    """Stopped by a signal: the conventional exit code, and still every event and a playable recording.
    SIGINT also replaces an earlier events file given with --overwrite."""
    events, record = tmp_path / "events.jsonl", tmp_path / "rec.mp4"
    events.write_text('{"event": 99, "kind": "EARLIER-RUN"}\n')
    proc = start_live("--video", str(long_clip), "--no-display", "--events", str(events), "--record", str(record),
                      "--overwrite")  # played in real time: 10 s
    # the first micro-expression is at 1.8 s of 10: stop right after it is written
    wait_until(lambda: '"kind": "micro"' in events.read_text() or proc.poll() is not None, 40)
    assert proc.poll() is None, proc.communicate()
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == code, err
    assert "stopped (signal)" in err and f"exit {code} ({sig.name})" in err
    assert "EARLIER-RUN" not in events.read_text()
    rows = read_events(events)
    assert rows and all(r["kind"] in ("micro", "macro") for r in rows)
    assert count_frames(record) > 30


@pytest.mark.skipif(not HAS_FFMPEG, reason="the crash-proof recording needs the ffmpeg command")
def test_kill_9_during_record_leaves_a_playable_file(long_clip, tmp_path):
    record = tmp_path / "rec.mp4"
    proc = start_live("--video", str(long_clip), "--no-display", "--record", str(record))
    try:
        wait_until(lambda: record.exists() and record.stat().st_size > 20_000 or proc.poll() is not None, 40)
        assert proc.poll() is None, proc.communicate()
        children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
        assert children, "no ffmpeg writer process"
        for pid in children:  # the encoder dies too: what is on disk must play as it is
            os.kill(int(pid), signal.SIGKILL)
    finally:
        proc.kill()
        proc.communicate(timeout=30)
    n = count_frames(record)
    assert n >= 30  # at least the first one-second fragment
    probe = subprocess.run(["ffprobe", "-v", "error", "-count_frames", "-select_streams", "v:0", "-show_entries",
                            "stream=nb_read_frames", "-of", "csv=p=0", str(record)], capture_output=True, text=True)
    assert probe.returncode == 0 and int(probe.stdout.strip()) == n, probe


def test_recorder_without_ffmpeg_falls_back_to_cv2(tmp_path, monkeypatch):
    from slstt.realtime.overlay import open_writer

    monkeypatch.setenv("PATH", str(tmp_path / "empty"))  # no ffmpeg on PATH
    writer = open_writer(tmp_path / "rec.mp4", 30.0, (160, 120))
    assert writer.backend.startswith("cv2 mp4v")
    for i in range(20):
        writer.write(np.full((120, 160, 3), i * 10, np.uint8))
    writer.release()
    assert writer.error is None and count_frames(tmp_path / "rec.mp4") == 20


@pytest.mark.skipif(not HAS_FFMPEG, reason="needs the ffmpeg command")
def test_recorder_resizes_frames_of_another_size(tmp_path):
    from slstt.realtime.overlay import open_writer

    writer = open_writer(tmp_path / "rec.mkv", 30.0, (161, 121))  # odd sizes: padded for yuv420p
    for i in range(10):
        writer.write(np.full((120 if i < 5 else 240, 160 if i < 5 else 320, 3), i * 20, np.uint8))
    writer.release()
    assert writer.error is None and writer.written == 10
    assert count_frames(tmp_path / "rec.mkv") == 10


def test_analyze_overwrite_replaces_earlier_results_only(inputs, tmp_path, capsys):
    from slstt.cli import main

    out = tmp_path / "out"
    out.mkdir()
    (out / "summary.json").write_text("{}")
    (out / "keep.txt").write_text("mine")
    code, err = run_in_process(["analyze", str(inputs / V), "--out", str(out)], capsys)
    assert code == 2 and "pass --overwrite" in one_error_line(err) and (out / "summary.json").read_text() == "{}"
    with pytest.raises(SystemExit) as exit_info:
        main(["analyze", str(inputs / V), "--out", str(out), "--overwrite", "--ground-truth",
              str(inputs / "clip.gt.csv")])
    assert exit_info.value.code in (0, None)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["frames"] == 150 and (out / "keep.txt").read_text() == "mine"
    assert all(math.isfinite(float(v)) for r in read_events(out / "events.jsonl") for v in (r["score"], r["onset_s"]))
