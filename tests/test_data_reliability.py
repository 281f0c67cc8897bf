"""Reliability of the data stage (issue 12): configs from untrusted files are type- and range-checked
field by field, bad annotation/manifest rows are listed (never trained on twice, never a traceback),
non-UTF-8 files are read or refused in one line, and `slstt prepare` dies with its workers on
kill -9, SIGTERM and Ctrl-C (exit 143 / 130, resumable cache, no orphan holding its stdout)."""

from __future__ import annotations

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
from typer.testing import CliRunner

from slstt.cli import app
from slstt.config import ModelConfig, PreprocessConfig
from slstt.data.adapters import load_dataset
from slstt.errors import SlsttError

ASTRONAUT = Path(__file__).parents[1] / "slstt" / "assets" / "astronaut.png"
SLSTT = [sys.executable, "-c", "from slstt.cli import main; main()"]

# ---------------------------------------------------------------- configs


@pytest.mark.parametrize(("changes", "field"), [
    ({"num_frames": 0}, "num_frames"), ({"num_frames": 100000}, "num_frames"), ({"num_frames": True}, "num_frames"),
    ({"num_frames": 11.5}, "num_frames"), ({"num_frames": "11"}, "num_frames"),
    ({"input_size": 100000}, "input_size"), ({"input_size": 8}, "input_size"), ({"flow_size": 0}, "flow_size"),
    ({"fps": 0}, "fps"), ({"fps": -30}, "fps"), ({"fps": math.nan}, "fps"), ({"fps": math.inf}, "fps"),
    ({"uvm_scale": 0}, "uvm_scale"), ({"uvm_scale": math.nan}, "uvm_scale"),
    ({"std": [0, 0, 0]}, "std[0]"), ({"std": [0.2, 0.2]}, "std"), ({"mean": [math.nan, 0, 0]}, "mean[0]"),
    ({"mean": "abc"}, "mean"), ({"crop": ["slstt"]}, "crop"), ({"flow": "magic"}, "flow"),
    ({"flow_params": {"winsize": -5}}, "flow_params.winsize"), ({"flow_params": {"winsize": 0}}, "flow_params.winsize"),
    ({"flow_params": {"levels": -1}}, "flow_params.levels"), ({"flow_params": {"pyr_scale": 1.0}}, "flow_params.pyr_scale"),
    ({"flow_params": {"pyr_scale": math.nan}}, "flow_params.pyr_scale"), ({"flow_params": {"poly_n": 6}}, "flow_params.poly_n"),
    ({"flow_params": {"iterations": 0}}, "flow_params.iterations"), ({"flow_params": {"flags": 4}}, "flow_params.flags"),
    ({"flow_params": {"bogus": 1}}, "flow_params.bogus"), ({"flow_params": "x"}, "flow_params"),
    ({"flow": "dis", "flow_params": {"patch_stride": 0}}, "flow_params.patch_stride"),
    ({"flow": "dis", "flow_params": {"patch_size": 4, "patch_stride": 8}}, "flow_params.patch_stride"),
    ({"flow": "dis", "flow_params": {"preset": "slow"}}, "flow_params.preset"),
    ({"flow": "tvl1", "flow_params": {"medianFiltering": 2}}, "flow_params.medianFiltering"),
    ({"flow": "tvl1", "flow_params": {"scaleStep": 1.5}}, "flow_params.scaleStep"),
])
def test_preprocess_config_fields_checked(changes, field):
    with pytest.raises(SlsttError, match=f"preprocess.{field}".replace("[", r"\[").replace("]", r"\]")) as info:
        PreprocessConfig.from_dict(changes)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(("changes", "field"), [
    ({"lstm_layers": 0}, "lstm_layers"), ({"lstm_hidden": -1}, "lstm_hidden"), ({"head_hidden": 0}, "head_hidden"),
    ({"num_classes": 1}, "num_classes"), ({"num_classes": 10**9}, "num_classes"), ({"input_size": 100000}, "input_size"),
    ({"num_frames": 0}, "num_frames"), ({"drop_rate": 1.0}, "drop_rate"), ({"drop_rate": math.nan}, "drop_rate"),
    ({"finetune_blocks": -1}, "finetune_blocks"), ({"freeze_backbone": "yes"}, "freeze_backbone"),
    ({"backbone": 3}, "backbone"), ({"backbone": ""}, "backbone"), ({"act_layer": None}, "act_layer"),
    ({"labels": "ab", "num_classes": 2}, "labels"), ({"labels": ["a", 1], "num_classes": 2}, r"labels\[1\]"),
    ({"labels": ["a", "a"], "num_classes": 2}, "labels"), ({"labels": ["a", "b", "c"], "num_classes": 2}, "labels"),
    ({"aggregator": "gru"}, "aggregator"),
])
def test_model_config_fields_checked(changes, field):
    with pytest.raises(SlsttError, match=f"model.{field}"):
        ModelConfig.from_dict(changes)


def test_configs_keep_their_behaviour(tmp_path):
    cfg = PreprocessConfig(flow="dis", flow_params={"preset": "fast", "patch_stride": 3}, fps=30, flow_size=224)
    assert PreprocessConfig.from_dict(cfg.to_dict()) == cfg
    assert PreprocessConfig(flow="dis").flow_params == {}  # the paper's Farneback parameters are dropped
    assert PreprocessConfig.from_dict({"input_size": 64.0, "num_frames": 8}).input_size == 64  # 64.0 from YAML
    model = ModelConfig(num_classes=3, labels=["negative", "positive", "surprise"], lstm_layers=1)
    assert ModelConfig.from_dict(model.to_dict()) == model
    with pytest.raises(SlsttError, match="unknown field"):
        ModelConfig.from_dict({"layers": 3})
    with pytest.raises(SlsttError, match="expected a mapping"):
        PreprocessConfig.from_dict(["not", "a", "mapping"])
    (tmp_path / "latin1.yaml").write_bytes("crop: slstt # caf\xe9\n".encode("latin-1"))
    with pytest.raises(SlsttError, match="UTF-8"):
        PreprocessConfig.load(tmp_path / "latin1.yaml")
    (tmp_path / "broken.yaml").write_text("crop: [slstt\n")
    with pytest.raises(SlsttError, match="not valid YAML"):
        PreprocessConfig.load(tmp_path / "broken.yaml")
    (tmp_path / "broken.json").write_text("{")
    with pytest.raises(SlsttError, match="not valid JSON"):
        PreprocessConfig.load(tmp_path / "broken.json")


def test_prepare_refuses_nonsense_numbers_before_any_work(tmp_path):
    result = CliRunner().invoke(app, ["prepare", "-d", "manifest", "--data-root", str(tmp_path / "none.csv"),
                                      "--cache-dir", str(tmp_path / "cache"), "--frames", "100000"])
    assert isinstance(result.exception, SlsttError) and "num_frames" in str(result.exception)
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").iterdir())


# ---------------------------------------------------------------- annotation and manifest rows

def _tiny_frames(folder: Path, numbers: range) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    image = np.full((8, 8, 3), 128, np.uint8)
    for n in numbers:
        cv2.imwrite(str(folder / f"img{n}.png"), image)


def _manifest(root: Path, lines: list[str], encoding: str = "utf-8") -> Path:
    _tiny_frames(root / "a", range(1, 21))
    _tiny_frames(root / "b", range(1, 21))
    path = root / "manifest.csv"
    header = "dataset,subject,clip,frames_dir,onset,apex,offset,label,fps"
    path.write_bytes(("\n".join([header, *lines]) + "\n").encode(encoding))
    return path


def test_manifest_rows_checked(tmp_path):
    path = _manifest(tmp_path, [
        "toy,s1,a,a,1,5,10,happy,30",
        "toy,s1,a,a,1,5,10,happy,30",  # identical duplicate: dropped, never trained twice
        "toy,s1,b,b,1,5,10,happy,30",
        "toy,s1,b,b,2,5,10,sad,30",  # conflicting duplicate: skipped, listed
        "toy,s2,a,a,10,5,1,sad,30",  # onset > offset
        "toy,s2,c,a,-3,2,10,sad,30",  # negative onset
        "toy,s3,a,a,1,-1,10,sad,30",  # negative apex: not coded
        "toy,s4,a,a,1,5,10,sad,0",  # fps 0
        "toy,s4,b,b,1,5,10,sad,-30",  # fps < 0
        "toy,s5,a,a,1,5,10,sad,nan",  # fps not finite
        "toy,s5,b,b,1,5,10,sad,inf",
        "toy,s6,a,a,1,4.5,10,sad,30",  # not a whole frame number
        "toy,s6,b,b,inf,5,10,sad,30",
    ])
    table = load_dataset("manifest", path)
    assert sorted(s.key for s in table.samples) == ["toy/s1/a", "toy/s1/b", "toy/s3/a"]
    assert next(s for s in table.samples if s.key == "toy/s3/a").apex is None
    assert table.problem_counts() == {"bad_annotation": 8, "duplicate": 1}
    assert any("duplicate" in e["issue"] for e in table.errata)
    assert any("fps" in p.message for p in table.problems if p.where.endswith(":9"))
    result = CliRunner().invoke(app, ["data", "check", "--dataset", "manifest", "--data-root", str(path)])
    assert result.exit_code == 1 and "3 samples" in result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 2 and all(len(line) < 400 for line in errors)


def test_non_utf8_files_read_or_refused(tmp_path):
    path = _manifest(tmp_path / "cp1252", ["toy,s\xe91,a,a,1,5,10,caf\xe9,30"], encoding="cp1252")  # Excel on Windows
    table = load_dataset("manifest", path)
    assert [s.subject for s in table.samples] == ["s\xe91"] and table.samples[0].label == "caf\xe9"
    assert any("cp1252" in e["issue"] for e in table.errata)
    utf16 = _manifest(tmp_path / "utf16", ["toy,s1,a,a,1,5,10,happy,30"], encoding="utf-16")
    with pytest.raises(SlsttError, match="not a UTF-8 text file") as info:
        load_dataset("manifest", utf16)
    assert "\n" not in str(info.value)
    (tmp_path / "casme").mkdir()
    _tiny_frames(tmp_path / "casme" / "CASME2_RAW_selected" / "sub01" / "EP02_01f", range(46, 87))
    (tmp_path / "casme" / "casme2_coding.csv").write_bytes(
        "Subject,Filename,Aus,Emotion,OnsetFrame,ApexFrame,OffsetFrame\r\n1,EP02_01f,12,happiness,46,59,86\r\n"
        "1,EP02_02f,12\u20136,happiness,46,59,86\r\n".encode("cp1252"))  # en dash: 0x96
    casme = load_dataset("casme2", tmp_path / "casme")
    assert [s.key for s in casme.samples] == ["casme2/sub01/EP02_01f"]
    (tmp_path / "casme" / "casme2_coding.csv").write_bytes(b"Subject,Filename\x00\x81\xff\n")
    with pytest.raises(SlsttError, match="not a UTF-8 text file"):
        load_dataset("casme2", tmp_path / "casme")


# ---------------------------------------------------------------- prepare and signals

@pytest.fixture(scope="module")
def face_manifest(tmp_path_factory) -> Path:
    """24 eight-frame clips of the astronaut's face: a few seconds of work for two workers."""
    root = tmp_path_factory.mktemp("prepare_signals")
    photo = cv2.resize(cv2.imread(str(ASTRONAUT)), (256, 256), interpolation=cv2.INTER_AREA)
    (root / "face").mkdir()
    for t in range(8):
        cv2.imwrite(str(root / "face" / f"f{100 + t}.png"), np.roll(photo, t, axis=1))
    rows = ["dataset,subject,clip,frames_dir,onset,apex,offset,label,fps"]
    rows += [f"toy,s{i % 3},c{i},face,100,104,107,happy,30" for i in range(24)]
    (root / "manifest.csv").write_text("\n".join(rows) + "\n")
    return root / "manifest.csv"


def _children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry))
    return found


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _left_after(pids: list[int], started: float, seconds: float = 5.0) -> list[int]:
    """The processes still alive `seconds` after `started` (returns as soon as none is)."""
    while (alive := [p for p in pids if _alive(p)]) and time.monotonic() - started < seconds:
        time.sleep(0.05)
    return alive


def _prepare_args(manifest: Path, cache: Path, workers: int = 2) -> list[str]:
    return ["prepare", "-d", "manifest", "--data-root", str(manifest), "--cache-dir", str(cache),
            "--input-size", "32", "--frames", "4", "--workers", str(workers)]


def _wait_busy(pid: int, cache: Path, timeout: float = 90) -> list[int]:
    """The prepare process's children (2 workers + the resource tracker) once they cached a sample."""
    before = len(list(cache.rglob("*.npz")))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        kids = _children(pid)
        if len(kids) >= 3 and len(list(cache.rglob("*.npz"))) > before:
            return kids
        time.sleep(0.1)
    raise AssertionError("prepare workers never started")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_prepare_kill9_through_a_pipe_leaves_nothing(face_manifest, tmp_path):
    cache = tmp_path / "cache"
    command = " ".join(f"'{a}'" for a in SLSTT + _prepare_args(face_manifest, cache)) + " | cat"
    shell = subprocess.Popen(["bash", "-c", command], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while not (prepare := [p for p in _children(shell.pid) if "cat" not in Path(f"/proc/{p}/cmdline").read_text()]):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    kids = _wait_busy(prepare[0], cache)
    os.kill(prepare[0], signal.SIGKILL)
    started = time.monotonic()
    shell.communicate(timeout=10)  # `| cat` ends: nothing of prepare holds the pipe any more
    assert _left_after(kids, started) == []


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_prepare_sigterm_and_ctrl_c_exit_codes_and_resume(face_manifest, tmp_path):
    cache = tmp_path / "cache"
    for sig, code in ((signal.SIGTERM, 143), (signal.SIGINT, 130)):
        proc = subprocess.Popen(SLSTT + _prepare_args(face_manifest, cache), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        kids = _wait_busy(proc.pid, cache)
        proc.send_signal(sig)
        started = time.monotonic()
        _, err = proc.communicate(timeout=20)
        assert proc.returncode == code, err
        assert time.monotonic() - started < 10  # the queued samples are not waited for
        assert "re-run to resume" in err and "Traceback" not in err
        assert _left_after(kids, started) == []
        assert (next(cache.iterdir()) / "failures.json").is_file()  # flushed before the exit
    done_before = len(list(cache.rglob("*.npz")))
    assert 0 < done_before < 24
    # the resumed run (in-process: no worker start-up) computes only what is missing
    finish = subprocess.run(SLSTT + _prepare_args(face_manifest, cache, workers=0), capture_output=True, text=True,
                            timeout=300)
    assert finish.returncode == 0, finish.stderr
    assert f"reused {done_before}" in finish.stdout and len(list(cache.rglob("*.npz"))) == 24


def test_prepare_workers_from_an_unguarded_script_is_one_line_not_a_hang(face_manifest, tmp_path):
    """Python's spawn re-runs a script without `if __name__ == "__main__":` in every worker: the workers
    die at start-up, and prepare_samples says so in one line (multiprocessing.Pool restarted them forever)."""
    script = tmp_path / "unguarded.py"
    script.write_text("from slstt.config import PreprocessConfig\n"
                      "from slstt.data.adapters import load_dataset\n"
                      "from slstt.data.prepare import prepare_samples\n"
                      f"table = load_dataset('manifest', {str(face_manifest)!r})\n"
                      "cfg = PreprocessConfig(input_size=32, num_frames=4)\n"
                      f"prepare_samples(table.samples, cfg, {str(tmp_path / 'cache')!r}, workers=2, progress=False)\n")
    start = time.monotonic()
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and time.monotonic() - start < 90
    ours = [line for line in proc.stderr.splitlines() if line.startswith("slstt.errors.SlsttError: prepare --workers")]
    assert len(ours) == 1 and 'if __name__ == "__main__":' in ours[0], proc.stderr[-3000:]
