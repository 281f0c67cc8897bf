"""Why the spotter missed an event (slstt.realtime.explain): the rules, as the spotter applies them,
and the event's lift over a control of the same footage."""

from __future__ import annotations

import csv
import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest

from slstt.data import inject, webcam
from slstt.errors import SlsttError
from slstt.realtime import explain
from slstt.realtime.explain import rules_against
from slstt.realtime.pooled import analyze_many, collect_videos, pooled_lines
from slstt.realtime.spotting import CandidateTrace, SpotterConfig


@pytest.fixture(scope="module")
def injected(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    src = tmp_path_factory.mktemp("src") / "talk.mp4"
    webcam.make_webcam_video(src, seed=7, duration_s=6, size=(320, 240), n_micro=0)
    gt, control_gt = inject.inject_videos(src, src.parent / "out", copies=1, seed=3, n_micro=2)
    return gt.with_suffix("").with_suffix(".mp4"), control_gt.with_suffix("").with_suffix(".mp4")


def _trace(**kw) -> CandidateTrace:
    base = dict(index=90, time_s=3.0, scores={"inner_brow_r": 1.2, "lip_corner_r": 1.5}, thresholds={"inner_brow_r": 1.0,
                "lip_corner_r": 1.0}, moved_before=frozenset(), speech="", blink=False, macro=frozenset(), head=1.0)
    return CandidateTrace(**{**base, **kw})


def test_rules_are_the_spotters() -> None:
    cfg = SpotterConfig()  # talk_factor 0: speech regions ignored while talking; talk_face_factor 1.6
    assert rules_against(_trace(), "inner_brow_r", cfg) == (pytest.approx(1.2), [])
    assert rules_against(_trace(index=10, time_s=10 / 30), "inner_brow_r", cfg)[1] == [explain.WARMUP]
    assert rules_against(_trace(scores={"inner_brow_r": 0.5}), "inner_brow_r", cfg)[1] == [explain.BELOW]
    talking = _trace(speech="penalised")
    assert rules_against(talking, "lip_corner_r", cfg)[1] == [explain.SPEECH]  # ignored
    assert rules_against(talking, "inner_brow_r", cfg)[1] == [explain.SPEECH]  # 1.2 < 1.6
    assert rules_against(_trace(speech="penalised", scores={"inner_brow_r": 2.0}), "inner_brow_r", cfg)[1] == []
    assert rules_against(_trace(speech="skipped", scores={"inner_brow_r": 9.0}), "inner_brow_r", cfg)[1] == [
        explain.SPEECH]
    blink = _trace(blink=True)
    assert rules_against(blink, "inner_brow_r", cfg)[1] == [explain.BLINK]  # a region the lids drag
    assert rules_against(blink, "lip_corner_r", cfg)[1] == [explain.BLINK]  # 1.5 < blink_factor 2
    # both penalties together: 4 / 1.6 / 2 = 1.25 passes, 3 / 1.6 / 2 does not, and both are named
    both = dict(speech="penalised", blink=True, thresholds={"upper_lip": 1.0})
    assert rules_against(_trace(**both, scores={"upper_lip": 4.0}), "upper_lip", cfg)[1] == [explain.SPEECH]
    cfg_penalised = SpotterConfig(talk_factor=1.6)
    assert rules_against(_trace(**both, scores={"upper_lip": 4.0}), "upper_lip", cfg_penalised)[1] == []
    assert rules_against(_trace(**both, scores={"upper_lip": 3.0}), "upper_lip", cfg_penalised)[1] == [
        explain.SPEECH, explain.BLINK]
    assert rules_against(_trace(moved_before=frozenset({"inner_brow_r"})), "inner_brow_r", cfg)[1] == [
        explain.MOVED]
    assert rules_against(_trace(macro=frozenset({"inner_brow_r"})), "inner_brow_r", cfg)[1] == [explain.MACRO]
    assert rules_against(_trace(head=cfg.head_fast + 1), "inner_brow_r", cfg)[1] == [explain.HEAD]
    # open: the context leaves some region open to a large, isolated movement; warm-up frames do not count
    frames = {i: _trace(index=i, time_s=i / 30, **kw) for i, kw in (
        (10, {}), (90, {}), (91, {"speech": "skipped"}), (92, {"scores": {"inner_brow_r": 0.1, "lip_corner_r": 0.1}}),
        (93, {"moved_before": frozenset({"inner_brow_r", "lip_corner_r"})}), (94, {"speech": "penalised"}),
        (95, {"blink": True, "macro": frozenset({"lip_corner_r"})}), (96, {"head": cfg.head_fast + 1}))}
    kept: dict[int, CandidateTrace] = {}
    tally = explain.ContextTally(cfg, keep=kept)
    for i, t in frames.items():
        tally[i] = t
    assert kept == frames  # the tally forwards every trace when asked to keep them
    assert tally.wants_thresholds and not explain.ContextTally(cfg).wants_thresholds  # counts need none
    assert tally.fractions() == {"rules_open": round(4 / 7, 4),  # 90, 92, 93 and 94 (the brow, penalised)
                                 "speech_frames": round(2 / 7, 4), "blink_frames": round(1 / 7, 4),
                                 "macro_frames": round(1 / 7, 4), "fast_head_frames": round(1 / 7, 4)}


def test_every_event_is_found_or_has_a_reason_and_its_lift_is_measured(injected: tuple[Path, Path],
                                                                       tmp_path: Path) -> None:
    copy, control = injected
    assert explain.control_for(copy) == control
    assert explain.control_for(control) is None
    result = explain.explain_video(copy)
    assert result.control == control.name
    truth = [r for r in csv.DictReader(copy.with_suffix(".gt.csv").open()) if r["kind"] == "micro"]
    assert [(e.onset, e.offset) for e in result.events] == [(int(r["onset_frame"]), int(r["offset_frame"]))
                                                             for r in truth]
    known = {explain.BELOW, explain.MOVED, explain.SPEECH, explain.BLINK, explain.MACRO, explain.HEAD,
             explain.WARMUP, explain.INTERVAL, explain.MACHINE}
    for e in result.events:
        assert e.found == (not e.reasons) and set(e.reasons) <= known
        assert e.site in explain.SITES[e.region] and e.onset <= e.frame <= e.offset
        assert e.lift is not None and e.natural is not None and e.lift_threshold is not None and e.lift_threshold > 0
        assert e.strong == (e.lift >= e.lift_threshold)
    # the events move their regions: the copy scores above the same frames of the control
    assert max(e.lift for e in result.events if e.lift is not None) > 0.1
    # the control against itself (its own trace as the control): nothing added anywhere
    same = explain.explain_video(control, copy.with_suffix(".gt.csv"), control=control,
                                 control_trace=result.control_trace)
    assert [e.lift for e in same.events] == [0.0] * len(truth)
    assert not any(e.strong for e in same.events)
    lines = explain.summary_lines(result.events)
    assert lines[0].startswith(f"{len(truth)} micro events: {sum(e.found for e in result.events)} found")
    # the pooled analysis of the folder (copy and control) explains the same, in one pass
    pooled = analyze_many(collect_videos(copy.parent), tmp_path / "pooled", explain=True)
    assert pooled.explained == result.events
    rows = list(csv.DictReader((tmp_path / "pooled" / "explain.csv").open()))
    assert [r["reasons"] for r in rows] == ["; ".join(e.reasons) for e in result.events]
    assert any(line.startswith("why events were missed") for line in pooled_lines(pooled))
    assert (tmp_path / "pooled" / "explain.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    per_video = {Path(r["video"]).name: r for r in csv.DictReader((tmp_path / "pooled" / "per_video.csv").open())}
    assert 0.0 < float(per_video[control.name]["rules_open"]) <= 1.0
    assert 0.0 < float(per_video[control.name]["speech_frames"]) < 1.0  # the source talks part of the time
    # the tally is the trace's: recomputed from the kept traces, the same fractions
    again = explain.ContextTally(SpotterConfig())
    for i, t in result.trace.items():
        again[i] = t
    assert {k: float(per_video[copy.name][k]) for k in again.fractions()} == again.fractions()
    bare = explain.ContextTally(SpotterConfig())  # as on the live path: traces without thresholds
    for i, t in result.trace.items():
        bare[i] = dataclasses.replace(t, thresholds={})
    assert bare.fractions() == again.fractions()
    summary = json.loads((tmp_path / "pooled" / "videos" / copy.stem / "summary.json").read_text())
    assert summary["rules_open"] == again.fractions()["rules_open"]


def test_cli_explains_a_folder_and_refuses_a_single_video(injected: tuple[Path, Path], tmp_path: Path) -> None:
    copy, _ = injected
    run = subprocess.run([sys.executable, "-m", "slstt.cli", "analyze", str(copy.parent), "--out", str(tmp_path / "a"),
                          "--explain"], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert "why events were missed" in run.stdout and "micro events:" in run.stdout
    assert (tmp_path / "a" / "explain.csv").is_file()
    run = subprocess.run([sys.executable, "-m", "slstt.cli", "analyze", str(copy), "--out", str(tmp_path / "b"),
                          "--explain"], capture_output=True, text=True, timeout=300)
    assert run.returncode == 2 and "--explain needs a folder" in run.stderr
    assert len(run.stderr.strip().splitlines()) == 1 and not (tmp_path / "b").exists()


def test_missing_ground_truth_is_one_clear_line(injected: tuple[Path, Path], tmp_path: Path) -> None:
    lone = tmp_path / "lone.mp4"
    lone.write_bytes(injected[0].read_bytes())
    with pytest.raises(SlsttError, match="no ground truth for .*lone.mp4"):
        explain.explain_video(lone)
