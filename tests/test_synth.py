"""slstt.data.synth: determinism, CASME II layout, injected motion (field + Farneback), long videos, CLI."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from slstt.data import synth
from slstt.errors import SlsttError

FARNEBACK = (0.5, 3, 15, 3, 5, 1.2, 0)  # spec §1.3


def flow(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Farneback magnitude (pixels) from BGR frame a to b."""
    gray = [cv2.cvtColor(x, cv2.COLOR_BGR2GRAY) for x in (a, b)]
    return np.linalg.norm(cv2.calcOpticalFlowFarneback(gray[0], gray[1], None, *FARNEBACK), axis=2)


def face_mask(landmarks: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    mask = np.zeros(shape, np.uint8)
    cv2.fillConvexPoly(mask, cv2.convexHull(np.round(landmarks).astype(np.int32)), 1)
    return mask.astype(bool)


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def tree_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


# ---------------------------------------------------------------------------------------------
# fields

@pytest.mark.parametrize("label", synth.DEFAULT_CLASSES)
def test_expression_field_peak_and_place(label: str) -> None:
    lm = synth.photo_landmarks()
    field = synth.expression_field(lm, label, 2.0, (512, 512))
    mag = np.linalg.norm(field, axis=2)
    assert 1.9 < mag.max() < 2.1
    # the motion stays local: the field vanishes at the top corners and far below the chin
    assert mag[:40, :40].max() < 1e-3 and mag[-40:, :].max() < 1e-3
    # and sits where the class says (image y grows downwards)
    y, x = np.unravel_index(np.argmax(mag), mag.shape)
    brows_y = lm[list(synth.MID_BROWS), 1].mean()
    eyes_y = lm[list(synth.UPPER_LIDS + synth.LOWER_LIDS), 1].mean()
    mouth_y = lm[list(synth.LIP_CORNERS), 1].mean()
    expected = {"happiness": (mouth_y - 15, mouth_y + 15), "surprise": (brows_y - 12, eyes_y),
                "disgust": (brows_y - 5, lm[synth.NOSE_TIP, 1]), "repression": (lm[0, 1] - 8, lm[17, 1] + 8),
                "others": (mouth_y - 8, lm[synth.CHIN, 1] + 8)}[label]
    assert expected[0] <= y <= expected[1], (label, y, expected)


def test_class_fields_differ() -> None:
    lm = synth.photo_landmarks()
    fields = {c: synth.expression_field(lm, c, 2.0, (512, 512)).ravel() for c in synth.DEFAULT_CLASSES}
    for a in fields:
        for b in fields:
            if a < b:
                cos = fields[a] @ fields[b] / np.linalg.norm(fields[a]) / np.linalg.norm(fields[b])
                assert cos < 0.6, (a, b, cos)


def test_unknown_class_is_a_user_error() -> None:
    with pytest.raises(SlsttError, match="unknown class 'anger'"):
        synth.expression_field(synth.photo_landmarks(), "anger", 2.0, (64, 64))


# ---------------------------------------------------------------------------------------------
# corpus

def test_corpus_layout_and_annotations(synth_corpus: Path) -> None:
    raw = (synth_corpus / "CASME2-coding-synth.csv").read_bytes()
    assert raw.startswith(b"Subject,Filename,Aus,Emotion,OnsetFrame,ApexFrame,OffsetFrame\r\n")
    assert raw.count(b"\r\n") == raw.count(b"\n") == 1 + 6 * 5 * 3
    coding = read_csv(synth_corpus / "CASME2-coding-synth.csv")
    manifest = read_csv(synth_corpus / "manifest.csv")
    assert len(coding) == len(manifest) == 90
    assert sorted({int(r["Subject"]) for r in coding}) == [1, 2, 3, 4, 5, 6]
    assert {r["Emotion"] for r in coding} == set(synth.DEFAULT_CLASSES)
    durations = []
    for c, m in zip(coding, manifest, strict=True):
        folder = synth_corpus / m["frames_dir"]
        assert folder == synth_corpus / "CASME2_RAW_selected" / f"sub{int(c['Subject']):02d}" / c["Filename"]
        numbers = sorted(int(p.stem[3:]) for p in folder.glob("img*.jpg"))
        assert numbers == list(range(numbers[0], numbers[-1] + 1))  # contiguous img<N>.jpg
        onset, apex, offset = (int(c[k]) for k in ("OnsetFrame", "ApexFrame", "OffsetFrame"))
        assert (onset, apex, offset) == (int(m["onset"]), int(m["apex"]), int(m["offset"]))
        assert numbers[0] < onset < apex < offset < numbers[-1]  # neutral frames on both sides
        assert m["label"] == c["Emotion"] and float(m["fps"]) == 200
        durations.append((offset - onset) / 200)
    assert min(durations) >= 0.1 - 1e-9 and max(durations) <= 0.5 + 1e-9
    assert len({int(r["OnsetFrame"]) - 10 for r in coding}) > 10  # frame numbers start at random offsets
    img = cv2.imread(str(next((synth_corpus / "CASME2_RAW_selected" / "sub01").rglob("*.jpg"))))
    assert img.shape == (192, 192, 3)


def test_corpus_loads_with_the_adapters(synth_corpus: Path) -> None:
    from slstt.data.adapters import load_dataset

    table = load_dataset("casme2", synth_corpus)
    assert len(table.samples) == 90 and not table.problems
    via_manifest = load_dataset("manifest", synth_corpus / "manifest.csv")
    assert len(via_manifest.samples) == 90
    by_clip = {(int(r["Subject"]), r["Filename"]): r for r in read_csv(synth_corpus / "CASME2-coding-synth.csv")}
    for s in table.samples:
        row = by_clip[(int(s.subject.removeprefix("sub")), s.clip)]
        assert s.label == row["Emotion"] and s.fps == 200 and 0 <= s.onset < s.apex < s.offset < len(s.frames)
        assert [s.frame_numbers[i] for i in (s.onset, s.apex, s.offset)] == [
            int(row[k]) for k in ("OnsetFrame", "ApexFrame", "OffsetFrame")]


def test_same_seed_same_bytes_other_seed_differs(tmp_path: Path) -> None:
    args = dict(subjects=2, clips_per_class=1, classes=("happiness", "surprise"), size=128)
    a = tree_bytes(synth.make_corpus(tmp_path / "a", seed=3, **args).parent)
    b = tree_bytes(synth.make_corpus(tmp_path / "b", seed=3, **args).parent)
    c = tree_bytes(synth.make_corpus(tmp_path / "c", seed=4, **args).parent)
    assert len(a) > 50 and a == b
    assert a.keys() != c.keys() or any(a[k] != c[k] for k in a)
    # rerunning into the same folder replaces the old corpus whole
    synth.make_corpus(tmp_path / "a", seed=4, **args)
    assert tree_bytes(tmp_path / "a") == c


def test_motion_injected_where_the_class_says(synth_corpus: Path) -> None:
    """On the written JPEG frames (all distractors on): the apex-onset difference is larger in
    the class region than elsewhere on the face, for clips without a blink."""
    meta = json.loads((synth_corpus / "synth.json").read_text())
    ratios = {}
    for clip in meta["clips"]:
        if clip["blink"] is not None:
            continue
        _, _, lm, _ = synth.corpus_subject(meta["seed"], clip["subject"], meta["size"])
        mag = np.linalg.norm(synth.expression_field(lm, clip["label"], 2.0, (192, 192)), axis=2)
        region, rest = mag > 1.0, (mag < 0.05) & face_mask(lm, mag.shape)
        folder = synth_corpus / "CASME2_RAW_selected" / f"sub{clip['subject']:02d}" / clip["clip"]
        first = clip["first_frame"]
        on, ap = (cv2.imread(str(folder / f"img{first + clip[k]}.jpg"), cv2.IMREAD_GRAYSCALE).astype(float)
                  for k in ("onset", "apex"))
        diff = np.abs(ap - on)
        ratios.setdefault(clip["label"], []).append(diff[region].mean() / diff[rest].mean())
    assert set(ratios) == set(synth.DEFAULT_CLASSES)
    for label, r in ratios.items():
        assert np.median(r) > 1.5 and min(r) > 1.0, (label, r)


@pytest.mark.parametrize("label", synth.DEFAULT_CLASSES)
def test_apex_flow_is_one_to_three_pixels_in_region_only(label: str) -> None:
    """Farneback (paper settings) onset -> apex on a clip without distractors: the class region
    moves ~1-3 px, the rest of the face stays below 0.5 px."""
    plan = synth.plan_clip(np.random.default_rng([21, len(label)]), 1, "x", label, 200)
    assert 1.0 <= plan.amplitude <= 3.0
    _, base, lm, noise = synth.corpus_subject(0, 2, 192)
    frames = synth.render_clip(plan, base, lm, noise, np.random.default_rng(1), distractors=False)
    mag = np.linalg.norm(synth.expression_field(lm, label, plan.amplitude, (192, 192)), axis=2)
    motion = flow(frames[plan.onset], frames[plan.apex])
    region = mag > 0.5 * mag.max()
    far = (mag < 0.02 * mag.max()) & face_mask(lm, mag.shape)
    assert 0.4 * plan.amplitude < np.median(motion[region]) < 3.0
    assert np.median(motion[far]) < 0.1 and np.percentile(motion[far], 90) < 0.5
    # no motion before onset: the first frame equals the onset frame
    assert np.array_equal(frames[0], frames[plan.onset])


def test_mediapipe_finds_the_synthetic_faces(synth_corpus: Path) -> None:
    from slstt.preprocess.face import FaceLandmarker

    meta = json.loads((synth_corpus / "synth.json").read_text())
    with FaceLandmarker() as landmarker:
        flips = {int(k[3:]): v["flip"] for k, v in meta["looks"].items()}
        assert len(set(flips.values())) == 2  # both a mirrored and a plain subject are checked
        for subject in (min(s for s, f in flips.items() if f), min(s for s, f in flips.items() if not f)):
            clip = next(c for c in meta["clips"] if c["subject"] == subject)
            path = synth_corpus / "CASME2_RAW_selected" / f"sub{subject:02d}" / clip["clip"] / f"img{clip['first_frame']}.jpg"
            found = landmarker.detect(cv2.imread(str(path)))
            _, _, lm, _ = synth.corpus_subject(meta["seed"], subject, meta["size"])
            assert found is not None
            assert np.median(np.linalg.norm(found - lm, axis=1)) < 4  # our landmarks match the pixels


# ---------------------------------------------------------------------------------------------
# long videos

def test_long_video_file_and_ground_truth(synth_long_video: tuple[Path, Path], read_video) -> None:
    video, gt = synth_long_video
    frames, fps = read_video(video)
    assert fps == 30 and len(frames) == 24 * 30 and frames[0].shape == (480, 640, 3)  # conftest: 24 s
    rows = read_csv(gt)
    assert list(rows[0]) == ["kind", "label", "onset_frame", "apex_frame", "offset_frame", "onset_s", "apex_s", "offset_s"]
    events = [(r["kind"], r["label"], int(r["onset_frame"]), int(r["apex_frame"]), int(r["offset_frame"])) for r in rows]
    kinds = [e[0] for e in events]
    assert kinds.count("micro") == 6 and kinds.count("macro") == 2 and kinds.count("blink") >= 3 and "head_motion" in kinds
    for kind, label, on, ap, off in events:
        assert 0 <= on < ap < off < len(frames)
        assert abs(float(rows[events.index((kind, label, on, ap, off))]["apex_s"]) - ap / 30) < 1e-3
        if kind in ("micro", "macro"):
            assert label in synth.DEFAULT_CLASSES
    # micro, macro and head-motion intervals never overlap; blinks keep clear of expressions
    solid = sorted(e for e in events if e[0] != "blink")
    spans = sorted((e[2], e[4]) for e in solid)
    assert all(a[1] < b[0] for a, b in zip(spans, spans[1:], strict=False))
    expressions = [e for e in events if e[0] in ("micro", "macro")]
    for blink in (e for e in events if e[0] == "blink"):
        assert all(blink[4] < e[2] or blink[2] > e[4] for e in expressions)
    micro = [e[4] - e[2] for e in events if e[0] == "micro"]
    macro = [e[4] - e[2] for e in events if e[0] == "macro"]
    assert 3 <= min(micro) and max(micro) <= 15 and min(macro) > max(micro)  # 100-500 ms vs 1-4 s


def test_long_video_motion_sizes(synth_long_video: tuple[Path, Path], read_video) -> None:
    """Measured on the decoded mp4: macro expressions move far more than micro ones, and a
    quiet stretch (no event) shows only noise-level flow."""
    video, gt = synth_long_video
    frames, _ = read_video(video)
    rows = read_csv(gt)

    def peak_flow(kind: str) -> list[float]:
        return [float(np.percentile(flow(frames[int(r["onset_frame"])], frames[int(r["apex_frame"])]), 99.5))
                for r in rows if r["kind"] == kind]

    micro, macro = peak_flow("micro"), peak_flow("macro")
    assert 0.7 < np.median(micro) < 4.0, micro
    assert min(macro) > 4.0 and min(macro) > 2 * max(micro), (macro, micro)
    quiet = flow(frames[0], frames[10])  # the lead-in before any event
    assert np.percentile(quiet, 99.5) < 0.7


def test_long_video_face_found_and_no_face_video(synth_long_video: tuple[Path, Path], no_face_video: Path,
                                                 read_video) -> None:
    from slstt.preprocess.face import FaceLandmarker

    cap = cv2.VideoCapture(str(synth_long_video[0]))
    ok, frame = cap.read()
    cap.release()
    with FaceLandmarker() as landmarker:
        points = landmarker.detect(frame)
        assert points is not None
        height = points[:, 1].max() - points[:, 1].min()
        assert 180 < height < 290  # face ~200-260 px tall
        frames, fps = read_video(no_face_video)
        assert fps == 30 and len(frames) == 90 and frames[0].shape == (480, 640, 3)
        assert all(landmarker.detect(f) is None for f in frames[::30])


def test_long_video_is_deterministic(tmp_path: Path, read_video) -> None:
    small = dict(duration_s=4, n_micro=1, n_macro=0, n_head=1, size=(320, 240))
    a = synth.make_long_video(tmp_path / "a.mp4", seed=5, **small)
    b = synth.make_long_video(tmp_path / "b.mp4", seed=5, **small)
    c = synth.make_long_video(tmp_path / "c.mp4", seed=6, **small)
    assert a.read_bytes() == b.read_bytes() != c.read_bytes()
    fa, fb = read_video(tmp_path / "a.mp4")[0], read_video(tmp_path / "b.mp4")[0]
    assert len(fa) == 120 and fa[0].shape == (240, 320, 3)
    assert all(np.array_equal(x, y) for x, y in zip(fa, fb, strict=True))


def test_long_video_too_short_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(SlsttError, match="cannot hold"):
        synth.make_long_video(tmp_path / "v.mp4", duration_s=5, n_micro=6, n_macro=2)
    assert not list(tmp_path.iterdir())


# ---------------------------------------------------------------------------------------------
# CLI

def test_cli_writes_corpus_and_videos(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from slstt.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["synth", str(tmp_path), "--subjects", "2", "--clips-per-class", "1", "--classes", "happiness,others",
              "--size", "128", "--videos", "1", "--video-seconds", "8"])
    assert exit_info.value.code in (0, None)
    assert len(read_csv(tmp_path / "CASME2-coding-synth.csv")) == 4
    assert (tmp_path / "videos" / "video_00.mp4").stat().st_size > 10_000
    assert len(read_csv(tmp_path / "videos" / "video_00.gt.csv")) >= 1
    assert "CASME2-coding-synth.csv" in capsys.readouterr().out


@pytest.mark.parametrize("args, message", [
    (["--subjects", "1"], "--subjects must be at least 2"),
    (["--classes", "happiness,anger"], "unknown class 'anger'"),
    (["--classes", "happiness"], "at least 2 distinct classes"),
    (["--size", "20"], "--size must be within"),
])
def test_cli_bad_input_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture, args: list[str], message: str) -> None:
    from slstt.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["synth", str(tmp_path / "out"), *args])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err and "\n" not in err
    assert not (tmp_path / "out" / "CASME2_RAW_selected").exists()


def test_cli_out_dir_is_a_file_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from slstt.cli import main

    afile = tmp_path / "afile"
    afile.write_text("x")
    for target in (afile, afile / "sub"):  # the folder itself, or one that cannot be created
        with pytest.raises(SystemExit) as exit_info:
            main(["synth", str(target), "--subjects", "2", "--classes", "happiness,others", "--videos", "0"])
        assert exit_info.value.code == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and str(afile) in err and "\n" not in err


def test_interrupted_synth_is_replaced_by_a_rerun(tmp_path: Path) -> None:
    """A run killed mid-corpus leaves its marker; the next run recognises the folder and replaces it."""
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-c", "from slstt.cli import main; main()", "synth", str(out),
                             "--videos", "0"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 60
        while time.time() < deadline and not list(out.glob("CASME2_RAW_selected/sub01/EP*")):
            time.sleep(0.02)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL, "synth finished before it could be interrupted"
    assert json.loads((out / "synth.json").read_text()) == {"kind": synth.SYNTH_KIND, "complete": False}
    assert not (out / "CASME2-coding-synth.csv").exists()
    annotation = synth.make_corpus(out, subjects=2, clips_per_class=1, classes=("happiness", "others"), size=128)
    assert len(read_csv(annotation)) == 4 and json.loads((out / "synth.json").read_text())["complete"] is True
    clips = sorted(str(p.relative_to(out / "CASME2_RAW_selected")) for p in out.glob("CASME2_RAW_selected/*/*"))
    assert len(clips) == 4 and all(c.split("/")[0] in ("sub01", "sub02") and "tmp" not in c for c in clips)


def test_foreign_corpus_folder_is_refused(tmp_path: Path) -> None:
    (tmp_path / "CASME2_RAW_selected" / "sub01").mkdir(parents=True)
    (tmp_path / "synth.json").write_text('{"kind": "someone else"}')
    with pytest.raises(SlsttError, match="not written by `slstt synth`"):
        synth.make_corpus(tmp_path, subjects=2, clips_per_class=1, classes=("happiness", "others"), size=128)
    assert (tmp_path / "CASME2_RAW_selected" / "sub01").is_dir()  # left alone
