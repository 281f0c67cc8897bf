"""`slstt live` on a network stream that stops: ffmpeg sends MPEG-TS over UDP to 127.0.0.1, the sender is
killed and restarted; live must say that the stream stalled, reconnect, keep one events file with a gap
record and exit cleanly, and fail with one line (exit 3) when the sender never comes back. Loopback only;
the timeouts are options, kept short here (the defaults are 5 s and 5 attempts)."""

from __future__ import annotations

import os
import queue
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import cv2
import pytest

from slstt.realtime.events import read_events, read_records

pytestmark = pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="needs the ffmpeg command (apt ffmpeg)")

SLSTT = [sys.executable, "-c", "from slstt.cli import main; main()"]


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 5 s 320x240 30 fps synthetic face video (one micro-expression): what the sender loops."""
    from slstt.data.synth import make_long_video

    video = tmp_path_factory.mktemp("stream") / "clip.mp4"
    make_long_video(video, seed=3, duration_s=5, fps=30, size=(320, 240), n_micro=1, n_macro=0)
    return video


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_sender(video: Path, port: int) -> subprocess.Popen:
    """ffmpeg looping the clip in real time as MPEG-TS to 127.0.0.1:port."""
    return subprocess.Popen(["ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin", "-re", "-stream_loop", "-1",
                             "-i", str(video), "-f", "mpegts", f"udp://127.0.0.1:{port}?pkt_size=1316"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def stop(proc: subprocess.Popen | None) -> None:
    if proc is not None and proc.poll() is None:
        proc.kill()
        proc.wait(10)


class Live:
    """`slstt live` in a subprocess with its stderr lines collected by a thread."""

    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen([*SLSTT, "live", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True, env={**os.environ, "DISPLAY": ""})
        self.lines: list[str] = []
        self._new: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line.rstrip("\n"))
            self._new.put(line)

    def wait_for(self, text: str, timeout: float) -> float:
        """Block until a stderr line containing `text` (returns when it came); fails after timeout."""
        deadline = time.monotonic() + timeout
        while not any(text in line for line in self.lines):
            left = deadline - time.monotonic()
            if left <= 0 or self.proc.poll() is not None and self._new.empty():
                if any(text in line for line in self.lines):
                    break
                pytest.fail(f"no {text!r} within {timeout} s; stderr so far:\n" + "\n".join(self.lines))
            try:
                self._new.get(timeout=min(left, 0.2))
            except queue.Empty:
                pass
        return time.monotonic()

    def finish(self, timeout: float) -> int:
        try:
            code = self.proc.wait(timeout)
        finally:
            stop(self.proc)
        time.sleep(0.2)  # the reader thread takes the last lines
        return code


def test_stream_stall_reconnect_gap_and_clean_exit(clip, tmp_path):
    port = free_udp_port()
    events, record = tmp_path / "events.jsonl", tmp_path / "rec.mkv"
    sender = start_sender(clip, port)
    live = None
    try:
        live = Live("--source", f"udp://127.0.0.1:{port}", "--no-display", "--events", str(events),
                    "--record", str(record), "--stall-timeout", "1.5", "--reconnect", "4", "--duration", "10")
        live.wait_for("Ctrl-C to stop", 30)  # models loaded, frames flowing; stream time ~0 s
        time.sleep(1.5)
        stop(sender)
        killed = time.monotonic()
        stalled = live.wait_for("stream stalled", 10)
        assert stalled - killed < 1.5 + 2.0  # said within the stall timeout (and some scheduling slack)
        time.sleep(max(0.0, killed + 2.5 - time.monotonic()))  # the sender is away for 2.5 s
        sender = start_sender(clip, port)
        live.wait_for("reconnected after", 20)
        code = live.finish(30)  # --duration 10: a normal end
    finally:
        stop(sender)
        if live is not None:
            stop(live.proc)
    err = "\n".join(live.lines)
    assert code == 0, err
    assert "reconnecting (attempt 1 of 4)" in err and "error" not in err
    assert "1 stream gap(s)" in err
    records = read_records(events)  # one events file across the reconnection, strict JSON
    gaps = [r for r in records if r.get("type") == "gap"]
    assert len(gaps) == 1, records
    gap = gaps[0]
    assert gap["end_s"] is not None and gap["duration_s"] >= 1.5  # at least the stall timeout without frames
    assert 0.5 <= gap["start_s"] < gap["end_s"] <= 10.5
    assert gap["attempts"] >= 1 and gap["reason"].startswith("no frame for 1.5 s")
    assert all(r.get("type", "event") in ("event", "gap") for r in records)
    assert all("kind" in r for r in read_events(events))
    # the recording runs across the reconnection: frames from before and after the gap
    cap = cv2.VideoCapture(str(record))
    n = 0
    while cap.read()[0]:
        n += 1
    cap.release()
    assert n > gap["last_frame"] + 30, (n, gap)


def test_stream_that_never_comes_back_fails_with_one_line_and_exit_3(clip, tmp_path):
    port = free_udp_port()
    events = tmp_path / "events.jsonl"
    sender = start_sender(clip, port)
    live = None
    try:
        live = Live("--source", f"udp://127.0.0.1:{port}", "--no-display", "--events", str(events),
                    "--stall-timeout", "1", "--reconnect", "1")
        live.wait_for("Ctrl-C to stop", 30)
        time.sleep(1.0)
        stop(sender)
        code = live.finish(30)  # 1 s stall + one attempt (2.5 s open timeout): gives up by itself
    finally:
        stop(sender)
        if live is not None:
            stop(live.proc)
    err = "\n".join(live.lines)
    assert code == 3, err
    errors = [line for line in live.lines if line.startswith("error:")]
    assert len(errors) == 1 and "stream lost" in errors[0] and "--reconnect" in errors[0], err
    assert "stopped (stream lost)" in err
    gaps = [r for r in read_records(events) if r.get("type") == "gap"]
    assert len(gaps) == 1 and gaps[0]["end_s"] is None and gaps[0]["attempts"] == 1, gaps


def test_sigint_during_a_stall_records_the_open_gap_and_exits_130(clip, tmp_path):
    port = free_udp_port()
    events = tmp_path / "events.jsonl"
    sender = start_sender(clip, port)
    live = None
    try:
        live = Live("--source", f"udp://127.0.0.1:{port}", "--no-display", "--events", str(events),
                    "--stall-timeout", "1", "--reconnect", "50")
        live.wait_for("Ctrl-C to stop", 30)
        time.sleep(1.0)
        stop(sender)
        live.wait_for("stream stalled", 10)
        start = time.monotonic()
        live.proc.send_signal(signal.SIGINT)
        code = live.finish(30)
        assert time.monotonic() - start < 8.0  # not waiting out the 50 attempts
    finally:
        stop(sender)
        if live is not None:
            stop(live.proc)
    assert code == 130, "\n".join(live.lines)
    gaps = [r for r in read_records(events) if r.get("type") == "gap"]
    assert len(gaps) == 1 and gaps[0]["end_s"] is None, gaps
