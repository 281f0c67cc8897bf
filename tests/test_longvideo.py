"""MEGC long videos: CAS(ME)^2 and SAMM Long Videos adapters on fixture trees in the released
layouts (tiny frames, xlsx files written in the released column layout), `slstt data check` on them,
the MEGC spotting score against a hand computation, and `slstt spot-long` end to end."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from slstt.cli import app
from slstt.data.longvideo import GTInterval, interval_iou, load_long_videos, match_count, score_megc
from slstt.errors import SlsttError
from slstt.realtime.spotting import SpotterConfig

runner = CliRunner()


def _frames(folder: Path, pattern: str, numbers, source: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for n in numbers:
        os.link(source, folder / pattern.format(n))


def _tiny_jpg(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    path = root / "tiny.jpg"
    cv2.imwrite(str(path), np.full((8, 8, 3), 128, np.uint8))
    return path


def _casme_xlsx(path: Path, rows: list[list], rule1: list[list], rule2: list[list]) -> Path:
    """CAS(ME)^2code_final.xlsx as released: a code sheet without a header row, then the two naming sheets."""
    import openpyxl

    book = openpyxl.Workbook()
    sheet = book.active
    sheet.title = "CASMEcode_final"
    for row in rows:
        sheet.append(row)
    for title, table in (("naming rule1", rule1), ("naming rule2", rule2)):
        extra = book.create_sheet(title)
        for row in table:
            extra.append(row)
    book.save(path)
    return path


RULE1 = [[15, "s15", 1], [16, "s16", 2]]  # subject number, folder, participant in the code sheet
RULE2 = [["0101", "disgust1"], ["0102", "disgust2"], ["0401", "anger1"], ["0502", "sad1"]]


@pytest.fixture()
def casme_tree(tmp_path: Path) -> Path:
    root = tmp_path / "CASME_sq"
    jpg = _tiny_jpg(tmp_path)
    raw = root / "rawpic"
    _frames(raw / "s15" / "15_0101disgustingteeth", "img{}.jpg", range(1, 301), jpg)
    _frames(raw / "s15" / "15_0102eatingworms", "img{}.jpg", [n for n in range(1, 201) if n not in (50, 51, 52)], jpg)
    _frames(raw / "s16" / "16_0101disgustingteeth", "img{}.jpg", range(1, 101), jpg)
    _frames(raw / "s16" / "16_0401girlcrashing", "img{}.jpg", range(1, 51), jpg)  # no expression annotated
    rows = [
        [1, "disgust1_1", 10, 15, 20, "4+9", "negative", "micro-expression", "disgust"],
        [1, "disgust1_2", 100, 130, 180, "4+9", "negative", "macro-expression", "disgust"],
        [1, "disgust1_3", 200, 210, 0, "12", "positive", "macro-expression", "happy"],  # offset 0: apex closes it
        [1, "disgust2_1", 30, 0, 40, "4", "negative", "micro-expression", "disgust"],  # apex 0: not annotated
        [1, "disgust2_1", 30, 0, 40, "4", "negative", "micro-expression", "disgust"],  # duplicated row
        [2, "disgust1_1", 50, 45, 40, "4", "negative", "micro-expression", "disgust"],  # onset > offset
        [2, "disgust1_2", 60, 70, 90, "12", "positive", "macro-expression", "happy"],
        [3, "disgust1_1", 5, 6, 7, "4", "negative", "micro-expression", "disgust"],  # participant 3 unknown
        [2, "sad1_1", 5, 6, 7, "4", "negative", "micro-expression", "sad"],  # s16 has no 0502 video
        [1, "disgust1_4", 295, 300, 305, "4", "negative", "micro-expression", "disgust"],  # past the last frame
    ]
    _casme_xlsx(root / "CAS(ME)^2code_final.xlsx", rows, RULE1, RULE2)
    return root


SAMM_HEADER = ["Subject", "Filename", "Inducement Code", "Onset", "Apex", "Offset", "Duration", "Type",
               "Action Units", "Notes"]


def _samm_xlsx(path: Path, rows: list[list], header: list[str] = SAMM_HEADER) -> Path:
    """SAMM_LongVideos_V3_Release.xlsx as released: nine title/notes rows, then the header row."""
    import openpyxl

    book = openpyxl.Workbook()
    sheet = book.active
    sheet.append(["SAMM Long Videos - Micro and Macro Movements"])
    sheet.append(["Version 3"])
    for i in range(7):
        sheet.append([f"note {i}: Onset/Apex/Offset are frame numbers; -1 means not coded" if i == 3 else None])
    sheet.append(header)
    for row in rows:
        sheet.append(row)
    book.save(path)
    return path


@pytest.fixture()
def samm_tree(tmp_path: Path) -> Path:
    root = tmp_path / "SAMM_LV"
    jpg = _tiny_jpg(tmp_path)
    videos = root / "SAMM_longvideos"
    _frames(videos / "006_1", "006_1_{:04d}.jpg", range(1, 1001), jpg)
    _frames(videos / "006_2", "006_2_{:04d}.jpg", range(1, 501), jpg)
    _frames(videos / "007_3", "007_3_{:04d}.jpg", range(1, 401), jpg)
    rows = [
        [6, "006_1_1", 1, 100, 150, 180, 81, "Micro - 1/2", "R12", ""],
        [6, "006_1_2", 1, 300, 400, 600, 301, "Macro", "12+25", ""],
        [6, "006_2_1", 2, 50, -1, 90, 41, "Micro - 1/2", "4", "apex not coded"],
        [7, "007_3_1", 3, 10, 20, 5, -4, "Macro", "1+2", ""],  # onset > offset
        [7, "007_3_2", 3, 100, 150, 300, 201, "Micro - 1/2", "14", ""],  # 200 frames at 200 fps: > 0.5 s
        [8, "008_1_1", 1, 10, 20, 30, 21, "Micro - 1/2", "4", ""],  # no 008_1 folder
    ]
    _samm_xlsx(root / "SAMM_LongVideos_V3_Release.xlsx", rows)
    return root


def test_casme_sq_counts_and_problems(casme_tree):
    table = load_long_videos("casme_sq", casme_tree)
    assert table.counts() == {"videos": 4, "subjects": 2, "micro": 2, "macro": 3, "frames": 647,
                              "missing_frames": 3, "problems": 8}
    assert table.problem_counts() == {"apex_missing": 1, "bad_annotation": 1, "duplicate": 1, "frame_gaps": 1,
                                      "missing_frames": 1, "missing_video": 1, "offset_missing": 1, "unknown_video": 1}
    video = next(v for v in table.videos if v.key == "s15/15_0101disgustingteeth")
    assert video.fps == 30 and video.frames[0].name == "img1.jpg" and video.frame_numbers[:2] == [1, 2]
    assert [(iv.kind, iv.onset, iv.apex, iv.offset) for iv in video.intervals] == [
        ("micro", 10, 15, 20), ("macro", 100, 130, 180), ("macro", 200, 210, 210)]
    worms = next(v for v in table.videos if v.video == "15_0102eatingworms")
    assert [(iv.kind, iv.onset, iv.apex, iv.offset) for iv in worms.intervals] == [("micro", 30, None, 40)]
    assert next(v for v in table.videos if v.video == "16_0401girlcrashing").intervals == []
    # the rawpic folder itself and the folder above the release are accepted as --data-root
    above = load_long_videos("casme_sq", casme_tree.parent)
    assert above.counts() == table.counts()


def test_samm_lv_counts_and_problems(samm_tree):
    table = load_long_videos("samm_lv", samm_tree)
    assert table.counts() == {"videos": 3, "subjects": 2, "micro": 3, "macro": 1, "frames": 1900,
                              "missing_frames": 0, "problems": 4}
    assert table.problem_counts() == {"apex_missing": 1, "bad_annotation": 1, "missing_video": 1, "type_length": 1}
    first = table.videos[0]
    assert (first.key, first.fps, first.frames[0].name) == ("006/006_1", 200, "006_1_0001.jpg")
    assert [(iv.kind, iv.onset, iv.apex, iv.offset) for iv in first.intervals] == [
        ("micro", 100, 150, 180), ("macro", 300, 400, 600)]


def test_long_video_errors_are_one_line(casme_tree, samm_tree, tmp_path):
    with pytest.raises(SlsttError, match="does not exist"):
        load_long_videos("casme_sq", tmp_path / "nowhere")
    with pytest.raises(SlsttError, match="no rawpic folder"):
        load_long_videos("casme_sq", samm_tree)
    with pytest.raises(SlsttError, match="unknown long-video data set"):
        load_long_videos("casme3", casme_tree)
    (samm_tree / "SAMM_LongVideos_V3_Release.xlsx").unlink()
    with pytest.raises(SlsttError, match="no SAMM_LongVideos_V3_Release.xlsx"):
        load_long_videos("samm_lv", samm_tree)
    garbage = tmp_path / "garbage.xlsx"
    garbage.write_bytes(b"not a workbook")
    with pytest.raises(SlsttError, match="cannot read annotation workbook"):
        load_long_videos("casme_sq", casme_tree, annotations=garbage)
    import openpyxl

    book = openpyxl.Workbook()
    book.active.append([1, "disgust1_1", 10, 15, 20, "4", "negative", "micro-expression", "disgust"])
    book.save(tmp_path / "no_naming.xlsx")
    with pytest.raises(SlsttError, match="naming rule1"):
        load_long_videos("casme_sq", casme_tree, annotations=tmp_path / "no_naming.xlsx")
    no_type = _samm_xlsx(tmp_path / "SAMM_LongVideos_V2_Release.xlsx", [[6, "006_1_1", 1, 100, 150, 180]],
                         header=SAMM_HEADER[:7])
    with pytest.raises(SlsttError, match="no Type column"):
        load_long_videos("samm_lv", samm_tree, annotations=no_type)


def test_data_check_long_videos(casme_tree, samm_tree):
    result = runner.invoke(app, ["data", "check", "--dataset", "casme_sq", "--data-root", str(casme_tree)])
    assert result.exit_code == 1, result.output  # rows were skipped
    assert "4 long videos, 2 subjects" in result.output and "647" in result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 4 and any("unknown_video" in line for line in errors)
    result = runner.invoke(app, ["data", "check", "--dataset", "samm_lv", "--data-root", str(samm_tree)])
    assert result.exit_code == 1 and "1900" in result.output and "3 long videos" in result.output
    result = runner.invoke(app, ["data", "check", "--dataset", "samm_lv", "--data-root", str(casme_tree)])
    assert isinstance(result.exception, SlsttError) and "samm_lv: no SAMM_longvideos folder" in str(result.exception)


# ---------------------------------------------------------------- MEGC scoring

def test_iou_and_one_to_one_matching():
    assert interval_iou((10, 20), (12, 22)) == pytest.approx(9 / 13)
    assert interval_iou((10, 20), (21, 30)) == 0.0 and interval_iou((5, 5), (5, 5)) == 1.0
    # greedy by IoU would pair s1-t1 (IoU 1) and leave s2 unmatched; the maximum matching pairs both
    spotted, truth = [(0, 10), (0, 7)], [(0, 10), (3, 12)]
    assert interval_iou(spotted[0], truth[1]) >= 0.5 and interval_iou(spotted[1], truth[1]) < 0.5
    assert match_count(spotted, truth) == 2
    assert match_count([(0, 10), (0, 10)], [(0, 10)]) == 1  # one ground truth, one true positive


def test_score_megc_equals_hand_computation():
    truth = {"A": [GTInterval("micro", 10, 15, 20), GTInterval("micro", 100, 105, 110), GTInterval("macro", 200, 250, 300)],
             "B": [GTInterval("macro", 50, 100, 150)]}
    predicted = {"A": [("micro", 12, 22), ("micro", 15, 30), ("micro", 100, 104), ("macro", 210, 300),
                       ("macro", 205, 295)],
                 "B": [{"kind": "micro", "onset": 60, "offset": 70}],  # a micro spot on a macro truth
                 "C": [("macro", 1, 50)]}  # a video without ground truth
    score = score_megc(predicted, truth).to_dict()
    # micro: (12,22) hits (10,20) (IoU 9/13); (15,30) 6/21; (100,104) 5/11; B's micro has no micro truth
    assert {k: score["micro"][k] for k in ("tp", "fp", "fn")} == {"tp": 1, "fp": 3, "fn": 1}
    assert score["micro"]["precision"] == pytest.approx(0.25) and score["micro"]["f1"] == pytest.approx(1 / 3, abs=1e-6)
    # macro: (210,300) hits (200,300); (205,295) hits it too but one-to-one; C's spot is false
    assert {k: score["macro"][k] for k in ("tp", "fp", "fn")} == {"tp": 1, "fp": 2, "fn": 1}
    assert score["macro"]["f1"] == pytest.approx(0.4)
    assert {k: score["overall"][k] for k in ("tp", "fp", "fn")} == {"tp": 2, "fp": 5, "fn": 2}
    assert score["overall"]["f1"] == pytest.approx(4 / 11, abs=1e-6)
    empty = score_megc({}, {}).to_dict()
    assert empty["overall"] == {"tp": 0, "fp": 0, "fn": 0, "precision": 0.0, "recall": 0.0, "f1": 0.0}


# ---------------------------------------------------------------- slstt spot-long end to end

def _max_matching_by_brute_force(spotted: list[tuple[int, int]], truth: list[tuple[int, int]]) -> int:
    """Hand reference: try every assignment of spotted intervals to distinct truths (tiny inputs)."""
    def iou(a, b):
        inter = len(set(range(a[0], a[1] + 1)) & set(range(b[0], b[1] + 1)))
        return inter / len(set(range(a[0], a[1] + 1)) | set(range(b[0], b[1] + 1)))

    def best(i: int, used: frozenset) -> int:
        if i == len(spotted):
            return 0
        options = [best(i + 1, used)]
        options += [1 + best(i + 1, used | {j}) for j, t in enumerate(truth) if j not in used and iou(spotted[i], t) >= 0.5]
        return max(options)

    return best(0, frozenset())


@pytest.fixture(scope="module")
def casme_synth(tmp_path_factory, read_video) -> tuple[Path, list[tuple[str, int, int, int]]]:
    """A CAS(ME)^2-layout tree from a short synthetic 30 fps face video (2 micro, 1 macro expression)
    plus a 30-frame video without expressions; returns (root, ground truth in frame numbers)."""
    from slstt.data.synth import make_long_video

    work = tmp_path_factory.mktemp("casme_synth")
    gt_path = make_long_video(work / "v.mp4", seed=3, duration_s=7, fps=30, n_micro=2, n_macro=1, n_head=0)
    frames, _ = read_video(work / "v.mp4")
    root = work / "CASME_sq"
    for folder, count in (("15_0101disgustingteeth", len(frames)), ("15_0102eatingworms", 30)):
        target = root / "rawpic" / "s15" / folder
        target.mkdir(parents=True)
        for i in range(count):
            cv2.imwrite(str(target / f"img{i + 1}.jpg"), frames[i], [cv2.IMWRITE_JPEG_QUALITY, 95])
    with open(gt_path, newline="") as f:
        events = [r for r in csv.DictReader(f) if r["kind"] in ("micro", "macro")]
    truth, rows = [], []
    for n, e in enumerate(events, start=1):
        onset, apex, offset = (int(e[c]) + 1 for c in ("onset_frame", "apex_frame", "offset_frame"))
        truth.append((e["kind"], onset, apex, offset))
        rows.append([1, f"disgust1_{n}", onset, apex, offset, "12", "positive", f"{e['kind']}-expression", "happy"])
    _casme_xlsx(root / "CAS(ME)^2code_final.xlsx", rows, RULE1, RULE2)
    return root, truth


def test_spot_long_end_to_end_equals_hand_computation(casme_synth, tmp_path):
    root, truth = casme_synth
    out = tmp_path / "megc"
    args = ["spot-long", "--dataset", "casme_sq", "--data-root", str(root), "--out", str(out), "--no-progress"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "MDMD" in result.output and "0.0376" in result.output  # the baseline beside the scores
    results = json.loads((out / "results.json").read_text())
    with open(out / "predictions.csv", newline="") as f:
        predictions = list(csv.DictReader(f))
    assert predictions, "the spotter found none of the synthetic expressions"
    assert all(p["video"].startswith("s15/15_01") for p in predictions)
    # hand computation from the written predictions and the annotated intervals
    videos = {"s15/15_0101disgustingteeth": truth, "s15/15_0102eatingworms": []}
    expected = {}
    for kind in ("micro", "macro"):
        tp = fp = fn = 0
        for key, gt in videos.items():
            s = [(int(p["onset"]), int(p["offset"])) for p in predictions if p["video"] == key and p["kind"] == kind]
            t = [(on, off) for k, on, _, off in gt if k == kind]
            hits = _max_matching_by_brute_force(s, t)
            tp, fp, fn = tp + hits, fp + len(s) - hits, fn + len(t) - hits
        expected[kind] = (tp, fp, fn)
    expected["overall"] = tuple(sum(v) for v in zip(expected["micro"], expected["macro"], strict=True))
    for kind, (tp, fp, fn) in expected.items():
        got = results["score"][kind]
        assert (got["tp"], got["fp"], got["fn"]) == (tp, fp, fn), kind
        p = tp / (tp + fp) if tp + fp else 0.0
        r = tp / (tp + fn) if tp + fn else 0.0
        assert got["f1"] == pytest.approx(2 * p * r / (p + r) if p + r else 0.0, abs=1e-6)
    assert results["baseline"]["micro"] == 0.0082 and results["videos"] == 2 and results["frames"] == 210 + 30
    with open(out / "per_video.csv", newline="") as f:
        per_video = list(csv.DictReader(f))
    assert [r["video"] for r in per_video] == list(videos) and int(per_video[0]["face_frames"]) > 150

    # resumable per video: a damaged record is streamed again, the finished one is reused
    from slstt.realtime.megc import VideoRecord

    record = out / "videos" / "s15__15_0102eatingworms.json"
    data = json.loads(record.read_text())
    for bad in ({"streamed_frames": "30"}, {"swept": {"2": "x"}}, {"spotted": [{"kind": "blink"}]}):
        record.write_text(json.dumps({**data, **bad}))
        assert VideoRecord.read(record) is None, bad
    record.write_text(json.dumps(data))
    assert VideoRecord.read(record) is not None
    record.write_text(record.read_text()[:20])
    again = runner.invoke(app, args)
    assert again.exit_code == 0 and "resumed: 1 video(s)" in again.output
    assert json.loads((out / "results.json").read_text())["score"] == results["score"]
    # another selection in the same folder is refused (no silent mix or overwrite of an earlier result)
    other = runner.invoke(app, args + ["--videos", "0102"])
    assert isinstance(other.exception, SlsttError) and "--overwrite" in str(other.exception)
    assert json.loads((out / "results.json").read_text())["videos"] == 2


def test_spot_long_sweep_equals_runs_at_each_k(casme_synth, tmp_path):
    """--sweep-k decides the same flows at other threshold_k values: each swept k's intervals equal a
    run with that k as the spotter's own, and the curve's row at the run's k is the run's score."""
    root, _ = casme_synth
    base = ["spot-long", "--dataset", "casme_sq", "--data-root", str(root), "--no-progress"]
    swept = runner.invoke(app, base + ["--out", str(tmp_path / "swept"), "--sweep-k", "2.5,1000"])
    assert swept.exit_code == 0, swept.output
    assert "per threshold_k" in swept.output and "needs two subjects" in swept.output  # one subject: no choice
    results = json.loads((tmp_path / "swept" / "results.json").read_text())
    curve = {row["threshold_k"]: row for row in results["operating_curve"]}
    own = SpotterConfig().threshold_k
    assert sorted(curve) == sorted({2.5, 1000.0, own}) and curve[own]["this_run"] and results["subject_choice"] is None
    assert {k: curve[own][f"overall_{k}"] for k in ("tp", "fp", "fn")} == {
        k: results["score"]["overall"][k] for k in ("tp", "fp", "fn")}
    # k 1000 puts every region's threshold out of reach: no micro spot, where the run's own k finds them
    assert curve[1000.0]["micro_tp"] == curve[1000.0]["micro_fp"] == 0 < curve[own]["micro_tp"]
    assert (tmp_path / "swept" / "operating_curve.png").stat().st_size > 0
    with open(tmp_path / "swept" / "operating_curve.csv", newline="") as f:
        assert [float(r["threshold_k"]) for r in csv.DictReader(f)] == sorted(curve)
    record = json.loads((tmp_path / "swept" / "videos" / "s15__15_0101disgustingteeth.json").read_text())
    assert set(record["swept"]) == {"2.5", "1000"} and record["swept"]["1000"] != record["spotted"]
    for k in ("2.5", "1000"):  # a follower decides exactly as a spotter run with its k
        alone = runner.invoke(app, base + ["--out", str(tmp_path / f"alone{k}"), "--threshold-k", k])
        assert alone.exit_code == 0, alone.output
        single = json.loads((tmp_path / f"alone{k}" / "videos" / "s15__15_0101disgustingteeth.json").read_text())
        assert single["spotted"] == record["swept"][k] and single["swept"] == {}
    # the Python API runs the same command: the same scores and curve
    import slstt

    api = slstt.Detector(sweep_k=(2.5, 1000)).spot_long("casme_sq", root, out=tmp_path / "api")
    assert api["score"] == results["score"] and api["operating_curve"] == results["operating_curve"]
    assert json.loads((tmp_path / "api" / "results.json").read_text())["score"] == results["score"]
    bad = runner.invoke(app, base + ["--out", str(tmp_path / "bad"), "--sweep-k", "2,x"])
    assert isinstance(bad.exception, SlsttError) and "--sweep-k" in str(bad.exception)


def _run_of(records: dict[str, dict[float, list[tuple[str, int, int]]]], truth: dict[str, list[GTInterval]]):
    """A MegcRun over hand-made records: video key 'subject/video' -> {threshold_k: [(kind, onset, offset)]}."""
    from slstt.data.longvideo import LongVideo
    from slstt.realtime.megc import MegcRun, VideoRecord, k_key

    run = MegcRun("casme_sq", threshold_k=4.0, sweep_k=(2.0, 6.0))
    for key, by_k in records.items():
        subject, name = key.split("/")
        spotted = {k: [{"kind": kind, "onset": on, "apex": on, "offset": off, "onset_s": 0.0, "offset_s": 0.0,
                        "score": 1.0} for kind, on, off in v] for k, v in by_k.items()}
        video = LongVideo(subject, name, [], [1], 30.0, truth.get(key, []))
        run.videos.append((video, VideoRecord(key, "sig", spotted[4.0], 100, 100, 0, 1.0,
                                              swept={k_key(k): spotted[k] for k in (2.0, 6.0)})))
    return run


def test_leave_one_subject_out_threshold_equals_hand_computation():
    micro = [GTInterval("micro", 10, 12, 20), GTInterval("micro", 50, 52, 60)]
    truth = {"a/1": micro, "b/1": micro, "c/1": micro}
    hit1, hit2, miss = ("micro", 10, 20), ("micro", 50, 60), ("micro", 80, 90)
    records = {  # k 2 finds everything with one false spot; k 4 finds one; k 6 none (per video)
        "a/1": {2.0: [hit1, hit2, miss], 4.0: [hit1], 6.0: []},
        "b/1": {2.0: [hit1, hit2, miss], 4.0: [hit1], 6.0: []},
        "c/1": {2.0: [miss, ("micro", 81, 91), ("micro", 82, 92)], 4.0: [hit1, hit2], 6.0: [hit1]},
    }
    run = _run_of(records, truth)
    # hand: F1 per k on the other two subjects
    #   without a: b k2 (2 tp, 1 fp) + c k2 (0, 3) -> tp 2 fp 4 fn 2: F1 4/10; k4: tp 3 fp 0 fn 1 -> 6/7; k6: tp 1 -> 2/5
    #   without b: the same as without a -> k 4
    #   without c: k2: tp 4 fp 2 fn 0 -> 8/10; k4: tp 2 fp 0 fn 2 -> 4/6; k6: 0 -> k 2
    choice = run.subject_choice("overall")
    assert choice["chosen_k"] == {"a": 4.0, "b": 4.0, "c": 2.0}
    # scored at the chosen k: a k4 (1 tp, 1 fn), b k4 (1, 1), c k2 (0 tp, 3 fp, 2 fn)
    assert {m: choice["score"]["micro"][m] for m in ("tp", "fp", "fn")} == {"tp": 2, "fp": 3, "fn": 4}
    assert choice["score"]["micro"]["f1"] == pytest.approx(2 * 2 / (2 * 2 + 3 + 4))
    curve = run.operating_curve()
    assert [(r["threshold_k"], r["micro_tp"], r["micro_fp"], r["this_run"]) for r in curve] == [
        (2.0, 4, 5, False), (4.0, 4, 0, True), (6.0, 1, 0, False)]
    # ties go to the spotter's own k: with identical records at every k, every subject keeps 4
    same = _run_of({key: {k: v[4.0] for k in (2.0, 4.0, 6.0)} for key, v in records.items()}, truth)
    assert set(same.subject_choice("micro")["chosen_k"].values()) == {4.0}
    assert _run_of({"a/1": records["a/1"]}, truth).subject_choice() is None  # one subject


def test_spot_long_frame_step(casme_synth, casme_tree, tmp_path):
    """--frame-step N streams frame numbers first, first + N, ... as a video at fps / N (a missing
    frame leaves its gap) and reports intervals in the data set's own frame numbers."""
    from slstt.realtime.megc import FrameFolderSource

    table = load_long_videos("casme_sq", casme_tree)
    worms = next(v for v in table.videos if v.key == "s15/15_0102eatingworms")  # frames 50-52 missing
    source = FrameFolderSource(worms, step=2)
    assert source.fps == 15.0
    expected = [n for n in range(1, 201, 2) if n != 51]
    assert [n for n, _ in source.selected] == expected
    assert [(f.index, f.t) for f in source.frames()] == [((n - 1) // 2, (n - 1) // 2 / 15.0) for n in expected]

    root, _ = casme_synth
    out = tmp_path / "step"
    args = ["spot-long", "--dataset", "casme_sq", "--data-root", str(root), "--out", str(out), "--no-progress",
            "--frame-step", "2"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    with open(out / "per_video.csv", newline="") as f:
        rows = {r["video"]: r for r in csv.DictReader(f)}
    first = rows["s15/15_0101disgustingteeth"]
    assert (first["frames"], first["streamed_frames"], first["face_frames"]) == ("210", "105", "105")
    assert rows["s15/15_0102eatingworms"]["streamed_frames"] == "15"
    with open(out / "predictions.csv", newline="") as f:
        predictions = list(csv.DictReader(f))
    assert predictions and all(int(p[c]) % 2 == 1 for p in predictions for c in ("onset", "apex", "offset"))
    results = json.loads((out / "results.json").read_text())
    assert results["frame_step"] == 2 and results["score"]["micro"]["tp"] >= 1  # found at 15 fps too
    bad = runner.invoke(app, args[:-1] + ["0"])
    assert isinstance(bad.exception, SlsttError) and "--frame-step" in str(bad.exception)
