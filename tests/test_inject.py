"""Micro events put into a video the project did not make (slstt.data.inject, `slstt synth --inject`)."""

from __future__ import annotations

import csv
import hashlib
import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from slstt.data import inject, synth, webcam
from slstt.errors import SlsttError


@pytest.fixture(scope="module")
def injected(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Path]]:
    # the source stands in for the user's footage: a moving, talking face with no micro events
    src = tmp_path_factory.mktemp("src") / "talk.mp4"
    webcam.make_webcam_video(src, seed=7, duration_s=5, size=(320, 240), n_micro=0)
    gts = inject.inject_videos(src, src.parent / "out", copies=1, seed=2, n_micro=2)
    return src, gts


def test_events_are_where_the_ground_truth_says(injected: tuple[Path, list[Path]], read_video) -> None:
    src, (gt, control_gt) = injected
    rows = list(csv.DictReader(gt.open()))
    assert [r["kind"] for r in rows] == ["micro", "micro"]
    assert {float(r["amplitude_px"]) for r in rows} <= set(webcam.MICRO_AMPLITUDES)
    for r in rows:
        assert int(r["onset_frame"]) < int(r["apex_frame"]) < int(r["offset_frame"])
        assert r["region"] in webcam.MICRO_REGIONS and r["context"] in ("quiet", "busy")
    assert int(rows[1]["onset_frame"]) - int(rows[0]["offset_frame"]) >= webcam.GAP_S * 30 - 1
    assert list(csv.DictReader(control_gt.open())) == []
    info = json.loads(gt.with_name("talk_inj2_0.events.json").read_text())
    assert info["kind"] == inject.INJECT_KIND and info["source"]["name"] == src.name
    assert info["source"]["sha256"] == hashlib.sha256(src.read_bytes()).hexdigest()
    # the copy and the control are the same footage encoded alike: frames before the first event decode
    # alike (x264's rate control looks ahead, so not always bit-identical), the apex differs, near the face
    video, control = read_video(gt.with_name("talk_inj2_0.mp4"))[0], read_video(control_gt.with_name("talk_noevents.mp4"))[0]
    assert len(video) == len(control) == len(read_video(src)[0])
    first = int(rows[0]["onset_frame"])
    for i in range(first - 4):
        assert np.abs(video[i].astype(int) - control[i].astype(int)).mean() < 0.5, i
    apex = int(rows[0]["apex_frame"])
    diff = np.abs(video[apex].astype(int) - control[apex].astype(int)).max(2)
    assert diff.max() > 20
    lm = inject.track(src)[0][apex]
    ys, xs = np.nonzero(diff > 20)
    lo, hi = lm.min(0) - 10, lm.max(0) + 10
    assert ((xs >= lo[0]) & (xs <= hi[0]) & (ys >= lo[1]) & (ys <= hi[1])).mean() > 0.95


def test_warp_moves_the_content_by_the_amplitude() -> None:
    photo = synth.photo()
    lm = synth.photo_landmarks()
    for region, amplitude in (("brow_raise", 4.0), ("lip_corner", 2.5)):
        motions = next(iter(webcam.MICRO_VARIANTS[region].values()))
        bumps = synth.motion_bumps(lm.astype(np.float64), motions, amplitude)
        moved = inject.warp(photo, bumps)
        # displacement measured back from the pixels: Farneback from the photo to the warped photo
        a, b = (cv2.cvtColor(x, cv2.COLOR_BGR2GRAY) for x in (photo, moved))
        flow = cv2.calcOpticalFlowFarneback(a, b, None, 0.5, 3, 15, 5, 5, 1.1, 0)
        field = synth.bumps_field(bumps, a.shape)
        peak = np.unravel_index(np.argmax(np.linalg.norm(field, axis=2)), a.shape)
        measured = float(np.linalg.norm(flow[peak]))
        assert measured == pytest.approx(amplitude, rel=0.3), (region, measured)
        far = np.linalg.norm(field, axis=2) < 1e-4
        assert np.array_equal(moved[far], photo[far])  # nothing else is touched


def test_short_footage_gets_fewer_events_not_an_error() -> None:
    lm = np.zeros((90, 478, 2), np.float32) + synth.photo_landmarks()  # 3 s of a still face at 30 fps
    events = inject.plan_injection(lm, 30.0, seed=0, n_micro=5)
    assert 0 < len(events) < 5
    lm[60:] = np.nan  # no face: never an event there
    late = inject.plan_injection(lm, 30.0, seed=1, n_micro=5)
    assert late and all(e.offset < 60 for e in late)


def test_bad_input_is_one_clear_line(injected: tuple[Path, list[Path]], tmp_path: Path) -> None:
    src, _ = injected
    with pytest.raises(SlsttError, match="not a file"):
        inject.inject_videos(tmp_path / "missing.mp4", tmp_path / "o")
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"not a video")
    with pytest.raises(SlsttError, match="cannot decode"):
        inject.inject_videos(junk, tmp_path / "o")
    foreign = tmp_path / "o" / "talk_inj0_0.mp4"
    foreign.parent.mkdir()
    foreign.write_bytes(b"someone else's file")
    with pytest.raises(SlsttError, match="was not written by"):
        inject.inject_videos(src, tmp_path / "o")
    assert foreign.read_bytes() == b"someone else's file"
    foreign.unlink()
    foreign.with_suffix(".gt.csv").write_text("someone else's table\n")  # without its video: still theirs
    with pytest.raises(SlsttError, match="was not written by"):
        inject.inject_videos(src, tmp_path / "o")
    assert foreign.with_suffix(".gt.csv").read_text() == "someone else's table\n"
    run = subprocess.run([sys.executable, "-m", "slstt.cli", "synth", str(tmp_path / "c"), "--inject", str(junk)],
                         capture_output=True, text=True)
    assert run.returncode != 0 and "Traceback" not in run.stderr
    assert "cannot decode" in run.stdout + run.stderr
