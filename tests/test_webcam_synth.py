"""slstt.data.webcam: determinism, ground truth, micro-event displacement, 3-D parallax, H.264, CLI."""

from __future__ import annotations

import csv
import dataclasses
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from slstt.data import synth, webcam
from slstt.errors import SlsttError

FARNEBACK = (0.5, 3, 15, 3, 5, 1.2, 0)  # spec 1.3
SMALL = (320, 240)
# landmarks each micro region's motion must sit next to
REGION_POINTS = {
    "brow_raise": synth.INNER_BROWS + synth.MID_BROWS + synth.OUTER_BROWS,
    "brow_lower": synth.INNER_BROWS + synth.MID_BROWS,
    "lip_corner": synth.LIP_CORNERS,
    "lower_lip_chin": (synth.LOWER_LIP, synth.CHIN, 84, 314),
    "nose_wrinkle": synth.NOSE_WINGS + (168,),
}


def read_rows(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        return list(reader.fieldnames or []), list(reader)


def decode(path: Path) -> tuple[list[np.ndarray], float, str]:
    cap = cv2.VideoCapture(str(path))
    assert cap.isOpened()
    fps = cap.get(cv2.CAP_PROP_FPS)
    fourcc = int(cap.get(cv2.CAP_PROP_FOURCC)).to_bytes(4, "little").decode(errors="replace")
    frames = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(frame)
    cap.release()
    return frames, fps, fourcc


@pytest.fixture(scope="module")
def small_video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 6 s 320x240 webcam video with 3 micro events (one per amplitude); returns its gt path."""
    return webcam.make_webcam_video(tmp_path_factory.mktemp("webcam") / "a.mp4", seed=5, duration_s=6, size=SMALL,
                                    n_micro=3)


# ---------------------------------------------------------------------------------------------
# files

def test_same_seed_gives_identical_files(small_video: Path, tmp_path: Path) -> None:
    again = webcam.make_webcam_video(tmp_path / "a.mp4", seed=5, duration_s=6, size=SMALL, n_micro=3)
    for suffix in (".gt.csv", ".events.json"):
        assert again.with_name("a" + suffix).read_bytes() == small_video.with_name("a" + suffix).read_bytes()
    assert (tmp_path / "a.mp4").read_bytes() == small_video.with_name("a.mp4").read_bytes()
    other = webcam.make_webcam_video(tmp_path / "b.mp4", seed=6, duration_s=6, size=SMALL, n_micro=3)
    assert other.read_bytes() != small_video.read_bytes()
    assert not [p for p in tmp_path.iterdir() if "tmp" in p.name]  # atomic: no temp files left


def test_ground_truth_columns_and_values(small_video: Path) -> None:
    from slstt.realtime.analyze import read_ground_truth

    columns, rows = read_rows(small_video)
    assert ",".join(columns) == webcam.GT_COLUMNS
    micro = [r for r in rows if r["kind"] == "micro"]
    assert sorted(float(r["amplitude_px"]) for r in micro) == [1.5, 2.5, 4.0]
    for r in micro:
        assert r["label"] == r["region"] and r["region"] in webcam.MICRO_REGIONS
        assert r["context"] in ("quiet", "busy")
        onset, apex, offset = int(r["onset_frame"]), int(r["apex_frame"]), int(r["offset_frame"])
        assert onset < apex < offset and 0.2 - 1 / 30 <= (offset - onset) / 30 <= 0.5 + 1 / 30
        assert abs(float(r["apex_s"]) - apex / 30) < 1e-3
    assert {r["kind"] for r in rows} <= {"micro", "macro", "blink", "talk", "hand", "head_turn", "natural"}
    assert "talk" in {r["kind"] for r in rows}
    assert {r["face"] for r in rows} == {webcam.IDENTITIES[list(webcam.IDENTITIES)[5 % 3]].name}
    # the spotter's reader still reads it
    truth = read_ground_truth(small_video)
    assert [t.kind for t in truth].count("micro") == 3
    info = json.loads(small_video.with_name("a.events.json").read_text())
    assert info["seed"] == 5 and info["size"] == list(SMALL) and info["n_frames"] == 180
    assert info["generator_version"] == webcam.GENERATOR_VERSION  # a cached set of another version is not reused
    assert 55 < info["face_px"] < 165 and len(info["head_pose"]["frames"]) >= 40
    assert all(e["amplitude_crop112"] > 0 for e in info["events"] if e["kind"] == "micro")
    # the ground truth carries each micro event's size on the spotter's 112 px crop, as events.json has it
    crop = {e["onset"]: e["amplitude_crop112"] for e in info["events"] if e["kind"] == "micro"}
    assert {int(r["onset_frame"]): float(r["amplitude_crop112"]) for r in micro} == crop
    for r in micro:
        assert float(r["amplitude_crop112"]) == pytest.approx(float(r["amplitude_px"]) * 112 / info["crop_px"], rel=2e-3)
    assert sorted(t.amplitude_crop112 for t in truth if t.kind == "micro") == sorted(crop.values())


def test_h264_readable_by_opencv(small_video: Path) -> None:
    frames, fps, fourcc = decode(small_video.with_name("a.mp4"))
    assert len(frames) == 180 and abs(fps - 30) < 0.01
    assert frames[0].shape == (SMALL[1], SMALL[0], 3)
    assert fourcc.lower() in ("avc1", "h264")
    assert float(np.std(frames[0])) > 10  # a picture, not a blank frame


def test_no_event_video_has_same_kinds_of_motion_but_no_micro() -> None:
    plan, _ = webcam.plan_webcam_video(7, duration_s=20, size=SMALL, n_micro=0)
    kinds = {e.kind for e in plan.events}
    assert "micro" not in kinds and {"talk", "blink"} <= kinds
    assert np.abs(plan.head[:, :3]).max() <= 15 and plan.head[:, :3].std(0).max() > 1.5


# ---------------------------------------------------------------------------------------------
# pixels

def test_micro_event_moves_its_region_by_the_amplitude() -> None:
    """Apex frame rendered with and without the micro events (no camera effects): Farneback
    between them peaks at about the requested amplitude, next to the region's landmarks."""
    plan, scene = webcam.plan_webcam_video(3, duration_s=14, n_micro=5, face_px=260)
    micro = [e for e in plan.events if e.kind == "micro"]
    assert {e.region for e in micro} == set(webcam.MICRO_REGIONS)
    for e in micro:
        with_event, = webcam.render_frames(plan, scene, [e.apex], micro=True, camera=False)
        without, = webcam.render_frames(plan, scene, [e.apex], micro=False, camera=False)
        gray = [cv2.cvtColor(x, cv2.COLOR_BGR2GRAY) for x in (without, with_event)]
        mag = np.linalg.norm(cv2.calcOpticalFlowFarneback(gray[0], gray[1], None, *FARNEBACK), axis=2)
        peak = float(np.quantile(mag, 0.9995))
        assert 0.6 * e.amplitude_px < peak < 1.4 * e.amplitude_px, (e.region, e.amplitude_px, peak)
        y, x = np.unravel_index(np.argmax(cv2.GaussianBlur(mag, (0, 0), 2)), mag.shape)
        lm = scene.project(e.apex)
        near = np.linalg.norm(lm[list(REGION_POINTS[e.region])] - (x, y), axis=1).min()
        assert near < 0.12 * plan.face_px, (e.region, near)


def test_the_face_moves_on_its_own_and_the_lids_follow_the_gaze() -> None:
    """Version 4: natural actions (never overlapping a micro event in its face area: exact ground truth)
    move their landmarks by their amplitude; the upper lids follow the gaze in fixations and saccades."""
    plan, scene = webcam.plan_webcam_video(3, duration_s=20, n_micro=5, face_px=260)
    natural = [e for e in plan.events if e.kind == "natural"]
    micro = [e for e in plan.events if e.kind == "micro"]
    assert len(natural) >= 10 and {e.region for e in natural} <= set(webcam.NATURAL_ACTIONS)
    pad = round(0.15 * plan.fps)
    for n in natural:
        same_area = [m for m in micro if webcam.MICRO_AREAS[m.region] == webcam.NATURAL_AREAS[n.region]]
        assert all(n.offset < m.onset - pad or n.onset > m.offset + pad for m in same_area), (n, micro)
        assert 0.15 * plan.fps - 1 <= n.offset - n.onset <= 0.9 * plan.fps + 1 and n.amplitude_px > 0
    # the largest lone action, rendered with and without it: flow peaks at its amplitude, at its landmarks
    lone = [e for e in natural if not any(o is not e and o.onset <= e.offset and e.onset <= o.offset
                                          for o in plan.events if o.kind in ("natural", "blink", "macro", "hand"))]
    e = max(lone, key=lambda x: x.amplitude_px)
    without_plan = dataclasses.replace(plan, events=[o for o in plan.events if o is not e])
    with_it, = webcam.render_frames(plan, scene, [e.apex], camera=False)
    without, = webcam.render_frames(without_plan, scene, [e.apex], camera=False)
    gray = [cv2.cvtColor(x, cv2.COLOR_BGR2GRAY) for x in (without, with_it)]
    mag = np.linalg.norm(cv2.calcOpticalFlowFarneback(gray[0], gray[1], None, *FARNEBACK), axis=2)
    peak = float(np.quantile(mag, 0.9995))
    assert 0.6 * e.amplitude_px < peak < 1.4 * e.amplitude_px, (e.region, e.amplitude_px, peak)
    # gaze: fixations (most frames hold the level) and saccades (a few large steps); lids within reach
    lid = plan.gaze_lid
    assert lid is not None and lid.shape == (plan.n_frames,)
    steps = np.abs(np.diff(lid))
    scale = plan.crop_px / webcam.CROP_PX
    assert np.mean(steps < 0.01 * scale) > 0.6 and steps.max() > 0.3 * scale
    assert 0.5 * scale < lid.std() < 3 * webcam.GAZE_LID_CROP_PX * scale


def test_talking_articulates_the_lips_beyond_the_jaw() -> None:
    """While talking the lip corners spread and round at syllable rate (Farneback between the frame
    with and without the articulation peaks at its amplitude, at a lip corner); outside talk bursts
    the lips do not articulate."""
    plan, scene = webcam.plan_webcam_video(3, duration_s=14, n_micro=0, face_px=220)
    animator = webcam._Animator(scene, plan)
    spread = animator.speech[0][0]
    talk = webcam._busy_mask(plan.n_frames, [e for e in plan.events if e.kind == "talk"], 5)
    assert not spread[~talk].any() and np.abs(spread[talk]).std() > 0.01 * plan.face_px
    i = int(np.argmax(np.abs(spread)))
    frames = []
    for speech in (animator.speech, []):
        animator.speech = speech
        frames.append(cv2.cvtColor(np.clip(np.round(scene.render(i, **animator.args(i))), 0, 255).astype(np.uint8),
                                   cv2.COLOR_BGR2GRAY))
    mag = np.linalg.norm(cv2.calcOpticalFlowFarneback(frames[1], frames[0], None, *FARNEBACK), axis=2)
    assert 0.6 * abs(spread[i]) < float(np.quantile(mag, 0.9995)) < 1.4 * abs(spread[i])
    y, x = np.unravel_index(np.argmax(cv2.GaussianBlur(mag, (0, 0), 2)), mag.shape)
    corners = scene.project(i)[list(synth.LIP_CORNERS)]
    assert np.linalg.norm(corners - (x, y), axis=1).min() < 0.12 * plan.face_px


def test_yaw_gives_parallax_seen_by_mediapipe() -> None:
    """Turning the head 12 deg: MediaPipe sees the nose tip move further than the cheeks."""
    from slstt.preprocess.face import FaceLandmarker

    plan, scene = webcam.plan_webcam_video(4, duration_s=2, n_micro=0, face_px=240)
    plan.events, plan.jaw[:] = [], 0.0
    plan.head[:] = (0, 0, 0, 0, 0, 1)
    plan.head[1, 0] = 12.0  # yaw
    frames = webcam.render_frames(plan, scene, [0, 1], camera=False)
    with FaceLandmarker() as landmarker:
        a, b = (landmarker.detect(f) for f in frames)
    assert a is not None and b is not None
    face_w = float(np.linalg.norm(a[454] - a[234]))
    nose = b[synth.NOSE_TIP, 0] - a[synth.NOSE_TIP, 0]
    cheeks = float(np.mean(b[list(synth.CHEEKS), 0] - a[list(synth.CHEEKS), 0]))
    assert abs(nose) > 0.1 * face_w  # the head really turned
    assert abs(nose) - abs(cheeks) > 0.04 * face_w, (nose, cheeks, face_w)
    # the same in the renderer's own geometry, and a 2-D affine could not produce it
    p0, p1 = scene.project(0), scene.project(1)
    assert abs(p1[1, 0] - p0[1, 0]) - abs(np.mean(p1[[50, 280], 0] - p0[[50, 280], 0])) > 0.04 * face_w


def test_identities_differ_and_unknown_is_refused() -> None:
    _, a = webcam.identity_landmarks(webcam.IDENTITIES["astronaut"])
    _, b = webcam.identity_landmarks(webcam.IDENTITIES["astronaut_b"])
    assert np.abs(a - b).max() > 5
    with pytest.raises(SlsttError, match="unknown face identity"):
        webcam.plan_webcam_video(0, duration_s=3, identity="bob")


def test_head_warp_keeps_orientation_and_is_exact_up_to_15_degrees() -> None:
    """The warp is the projection of one smooth head surface: over the head (sprite alpha > 0.5)
    its Jacobian determinant stays well above 0 (no fold) at every corner of the pose range, jaw
    open or closed, and the per-pixel inversion lands where the projection says."""
    import itertools

    plan, scene = webcam.plan_webcam_video(0, duration_s=3, n_micro=0, face_px=120)
    surface = scene.surface
    ys, xs = np.nonzero(scene.sprite[::2, ::2, 3] > 128)
    pts = np.column_stack([xs, ys]).astype(np.float64) * 2
    value, dx, dy = surface._lookup(pts)
    worst = np.inf
    for yaw, pitch, roll, jaw in itertools.product((-15, 15), (-15, 15), (-8, 8), (0.0, 0.06 * plan.face_px)):
        a = webcam.rotation(yaw, pitch, roll)[:2]
        m = np.column_stack([a, jaw * a[:, 1]])
        jx, jy = dx @ m.T, dy @ m.T
        worst = min(worst, float((jx[:, 0] * jy[:, 1] - jy[:, 0] * jx[:, 1]).min()))
        frame = value @ m.T + 300.0
        back = surface.inverse(a, np.array([300.0, 300.0]), frame, jaw)
        assert np.abs(back - pts).max() < 0.05, (yaw, pitch, roll, jaw)
    assert worst > 0.3, worst


GAP = 8  # frames between the three compared frames (c - GAP, c, c + GAP)


def turning_head_plan(module=webcam) -> tuple:
    """A 640x480, 120 px face plan with nothing but the head moving: poses like the ones where the
    spline warp folded the brows (pitch about -11 deg while yawing/rolling, and a nod), no talk,
    blink, hand, macro or micro event."""
    plan, scene = module.plan_webcam_video(0, duration_s=4, n_micro=0, face_px=120)
    plan.events, plan.jaw[:] = [], 0.0
    t = np.linspace(0, 1, plan.n_frames)
    plan.head[:] = 0.0
    plan.head[:, 0] = -12 + 24 * t  # yaw -12 .. 12
    plan.head[:, 1] = -11 + 4 * np.sin(2 * np.pi * t)  # pitch about -11, nodding a little
    plan.head[:, 2] = 4 * np.sin(np.pi * t)  # roll
    plan.head[:, 3:5] = 0.0
    plan.head[:, 5] = 1.0
    return plan, scene


def rise_and_return(plan, scene, c: int, module=webcam) -> np.ndarray:
    """|second temporal difference| (px, 112 px crop) of the Farneback flow on the face at frame c:
    flow(c-GAP -> c) - flow(c-GAP -> c+GAP) / 2, minus its quadratic fit over the face (the smooth
    part a rigid turn leaves), over the face hull of frame c-GAP (its outline trimmed)."""
    frames = module.render_frames(plan, scene, [c - GAP, c, c + GAP], camera=False)
    lm = scene.project(c - GAP)
    side = plan.crop_px
    x0, y0 = (lm.min(0) + lm.max(0)) / 2 - side / 2
    m = np.array([[112 / side, 0, -x0 * 112 / side], [0, 112 / side, -y0 * 112 / side]])
    gray = [cv2.warpAffine(cv2.cvtColor(f, cv2.COLOR_BGR2GRAY), m, (112, 112), flags=cv2.INTER_AREA) for f in frames]
    half = cv2.calcOpticalFlowFarneback(gray[0], gray[1], None, *FARNEBACK)
    full = cv2.calcOpticalFlowFarneback(gray[0], gray[2], None, *FARNEBACK)
    second = half - full / 2
    mask = np.zeros((112, 112), np.uint8)
    hull = cv2.convexHull(np.round(lm @ m[:, :2].T + m[:, 2]).astype(np.int32))
    cv2.fillConvexPoly(mask, hull, 1)
    mask = cv2.erode(mask, np.ones((9, 9), np.uint8)).astype(bool)
    y, x = np.nonzero(mask)
    basis = np.column_stack([np.ones_like(x), x, y, x * x, x * y, y * y]).astype(np.float64) / [1, 112, 112, 112**2, 112**2, 112**2]
    coef, *_ = np.linalg.lstsq(basis, second[y, x], rcond=None)
    residual = np.zeros((112, 112))
    residual[y, x] = np.linalg.norm(second[y, x] - basis @ coef, axis=1)
    return residual


RIGID_CENTRES = (20, 40, 60, 80, 100)


def test_turning_head_has_no_brief_local_deformation() -> None:
    """A head turning and nodding without any event: nothing on the face deforms briefly (the
    spline warp used to fold/double the brows for a few frames: a local rise-and-return of the
    flow of up to several px); an injected 2.5 px (112 px crop) micro brow raise does show."""
    plan, scene = turning_head_plan()
    worst = max(float(rise_and_return(plan, scene, c).max()) for c in RIGID_CENTRES)
    assert worst < 0.5, worst
    c = 60
    amplitude = 2.5 * plan.crop_px / webcam.CROP_PX
    plan.events = [webcam.WebcamEvent("micro", "brow_raise", c - 6, c, c + 6, "brow_raise", amplitude, "busy", "AU1+2")]
    micro = float(rise_and_return(plan, scene, c).max())
    assert micro > 1.0, micro  # Farneback on the 112 px crop sees about half the bump peak


# ---------------------------------------------------------------------------------------------
# CLI and bad input

def test_cli_writes_webcam_videos(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from slstt.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["synth", str(tmp_path), "--style", "webcam", "--videos", "1", "--video-seconds", "5"])
    assert exit_info.value.code in (0, None)
    video = tmp_path / "videos" / "webcam_00.mp4"
    frames, _, _ = decode(video)
    assert len(frames) == 150 and frames[0].shape == (480, 640, 3)
    _, rows = read_rows(video.with_suffix(".gt.csv"))
    assert sum(r["kind"] == "micro" for r in rows) == 1
    assert not (tmp_path / "CASME2_RAW_selected").exists()  # webcam style writes videos only
    assert "webcam style" in capsys.readouterr().out
    assert not (tmp_path / "videos" / "controls").exists()
    with pytest.raises(SystemExit) as exit_info:  # --controls: the same videos without their micro events
        main(["synth", str(tmp_path / "c"), "--style", "webcam", "--videos", "1", "--video-seconds", "5", "--controls"])
    assert exit_info.value.code in (0, None)
    _, rows = read_rows(tmp_path / "c" / "videos" / "controls" / "webcam_00.gt.csv")
    assert rows and not any(r["kind"] == "micro" for r in rows)
    assert "control" in capsys.readouterr().out


@pytest.mark.parametrize("args, message", [
    (["--style", "cartoon"], "--style must be classic or webcam"),
    (["--style", "webcam", "--videos", "0"], "--videos must be at least 1"),
    (["--style", "webcam", "--video-seconds", "2"], "--video-seconds must be at least 5"),
    (["--controls"], "--controls is for --style webcam"),
])
def test_cli_bad_options_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture, args: list[str], message: str) -> None:
    from slstt.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["synth", str(tmp_path / "out"), *args])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err and "\n" not in err
    assert not (tmp_path / "out").exists()


def test_bad_arguments_raise_one_line_errors(tmp_path: Path) -> None:
    with pytest.raises(SlsttError, match="even size"):
        webcam.make_webcam_video(tmp_path / "v.mp4", duration_s=3, size=(321, 240))
    with pytest.raises(SlsttError, match="must end in .mp4"):
        webcam.make_webcam_video(tmp_path / "v.avi", duration_s=3, size=SMALL)
    foreign = tmp_path / "mine.mp4"
    foreign.write_bytes(b"not ours")
    with pytest.raises(SlsttError, match="was not written by"):
        webcam.make_webcam_video(foreign, duration_s=3, size=SMALL)
    assert foreign.read_bytes() == b"not ours"
    table = tmp_path / "theirs.gt.csv"  # someone's ground truth, without a video of that name
    table.write_text("kind\n")
    with pytest.raises(SlsttError, match="was not written by"):
        webcam.make_webcam_video(tmp_path / "theirs.mp4", duration_s=3, size=SMALL)
    assert table.read_text() == "kind\n"
    with pytest.raises(SlsttError, match="cannot place 9 micro"):
        webcam.plan_webcam_video(0, duration_s=6, size=SMALL, n_micro=9)


def test_without_ffmpeg_falls_back_to_mp4v_with_a_warning(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(webcam.shutil, "which", lambda name: None)
    with pytest.warns(UserWarning, match="ffmpeg not found"):
        gt = webcam.make_webcam_video(tmp_path / "v.mp4", seed=1, duration_s=3, size=SMALL, n_micro=1)
    frames, _, fourcc = decode(gt.with_name("v.mp4"))
    assert len(frames) == 90 and fourcc.lower() in ("mp4v", "fmp4")  # MPEG-4 part 2, not H.264


def test_spotting_set_writes_event_and_no_event_videos(tmp_path: Path) -> None:
    gts = webcam.spotting_set(tmp_path, [21, 22], duration_s=3, size=SMALL, n_micro=1, event_fraction=0.5)
    assert [g.name for g in gts] == ["webcam_21.gt.csv", "webcam_22_noevents.gt.csv"]
    micro = [sum(r["kind"] == "micro" for r in read_rows(g)[1]) for g in gts]
    assert micro == [1, 0]
    info = json.loads((tmp_path / "set.json").read_text())
    assert info["event_seeds"] == [21] and info["videos"] == ["webcam_21.mp4", "webcam_22_noevents.mp4"]
    assert info["generator_version"] == webcam.GENERATOR_VERSION
    assert all((tmp_path / v).stat().st_size > 1000 for v in info["videos"])


def test_a_control_is_the_same_video_without_its_micro_events(tmp_path: Path) -> None:
    """write_controls: each event video of a set again, without its micro events, under controls/ (out
    of the set: a folder analysis does not pool it); explain finds it; an existing one is kept."""
    from slstt.realtime.explain import control_for
    from slstt.realtime.pooled import collect_videos

    webcam.spotting_set(tmp_path, [21, 22], duration_s=4, size=SMALL, n_micro=1, event_fraction=0.5, controls=True)
    video, control = tmp_path / "webcam_21.mp4", tmp_path / "controls" / "webcam_21.mp4"
    assert control_for(video) == control and control_for(tmp_path / "webcam_22_noevents.mp4") is None
    assert [i.video.name for i in collect_videos(tmp_path)] == ["webcam_21.mp4", "webcam_22_noevents.mp4"]
    _, rows = read_rows(video.with_suffix(".gt.csv"))
    _, control_rows = read_rows(control.with_suffix(".gt.csv"))
    assert control_rows == [r for r in rows if r["kind"] != "micro"] and len(control_rows) < len(rows)
    assert json.loads(control.with_suffix(".events.json").read_text())["control"] is True
    event = next(r for r in rows if r["kind"] == "micro")
    frames, control_frames = decode(video)[0], decode(control)[0]
    diff = [float(np.abs(a.astype(float) - b).mean()) for a, b in zip(frames, control_frames, strict=True)]
    onset = int(event["onset_frame"])
    assert max(diff[:onset]) < 0.05  # identical input frames before the event (the encoder is deterministic)
    assert max(diff[onset:int(event["offset_frame"]) + 1]) > 3 * max(max(diff[:onset]), 0.01)
    # a folder analysis with --explain measures each event against the control it did not pool
    from slstt.realtime.pooled import analyze_many

    result = analyze_many(collect_videos(tmp_path), tmp_path / "out", explain=True)
    assert result.pooled["videos"] == 2 and result.explained is not None and len(result.explained) == 1
    assert result.explained[0].lift is not None and result.explained[0].strong is not None
    stamp = control.stat().st_mtime_ns
    assert webcam.write_controls(tmp_path) == [control] and control.stat().st_mtime_ns == stamp
    record = control.with_suffix(".events.json")
    kept = record.read_text()
    record.write_text(kept.replace('"seed": 21', '"seed": 22'))  # another video's control: refused, kept
    with pytest.raises(SlsttError, match="not the control of seed 21"):
        webcam.write_controls(tmp_path)
    assert control.stat().st_mtime_ns == stamp
    (tmp_path / "set.json").write_text("{}")
    with pytest.raises(SlsttError, match="not a spotting set"):
        webcam.write_controls(tmp_path)


def test_a_blink_closes_the_eye_as_the_face_tracker_sees_it() -> None:
    """At a blink's apex the lid covers the eye: MediaPipe's eye opening (lid to lid over eye width)
    falls to well under 0.7 of the open eye's, as on real footage (about half), not by ~12 % as when
    only the lid's skin moved; the frames just before are untouched."""
    from slstt.preprocess.face import FaceLandmarker

    def eye_opening(lm: np.ndarray) -> float:
        return float(np.mean([np.hypot(*(lm[lo] - lm[up])) / np.hypot(*(lm[a] - lm[b]))
                              for up, lo, (a, b) in ((159, 145, (33, 133)), (386, 374, (263, 362)))]))

    plan, scene = webcam.plan_webcam_video(3, duration_s=8, n_micro=0)
    blink = next(e for e in plan.events if e.kind == "blink")
    before, apex = webcam.render_frames(plan, scene, [blink.onset - 3, blink.apex])
    with FaceLandmarker() as marker:
        lm_before, lm_apex = marker.detect(before), marker.detect(apex)
    assert lm_before is not None and lm_apex is not None
    assert eye_opening(lm_apex) < 0.7 * eye_opening(lm_before), (eye_opening(lm_apex), eye_opening(lm_before))
    assert 0.25 < eye_opening(lm_before) < 0.5
