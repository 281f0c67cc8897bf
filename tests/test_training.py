"""slstt train: metrics vs scikit-learn, LOSO end to end on a synthetic corpus (acceptance:
pooled UF1 >= 0.9), report recomputation, determinism, resume, optimistic labelling, bad inputs."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, f1_score, recall_score

from slstt.cli import main
from slstt.training.metrics import classification_scores

CLASSES = ("happiness", "surprise", "disgust")  # megc-3: positive, surprise, negative
# A random-init frozen tiny ViT gives weak but linearly separable class tokens on this corpus;
# the Mean aggregator (a linear head per frame) needs ~60 epochs of SGD to converge on them.
RECIPE = ["--scheme", "megc-3", "--backbone", "vit_tiny_patch16_224", "--no-pretrained", "--aggregator", "mean",
          "--input-size", "64", "--frames", "5", "--epochs", "60", "--lr", "0.03", "--lr-step-epoch", "45",
          "--batch-size", "4", "--seed", "0", "--device", "cpu", "--workers", "0"]


def run_cli(args: list[str]) -> int:
    try:
        main(["train", *map(str, args)])
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """The heads trained here are tiny: on a shared 2-core machine, thread contention costs 10x."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from slstt.data.synth import make_corpus

    out = tmp_path_factory.mktemp("train_corpus")
    make_corpus(out, subjects=6, clips_per_class=3, classes=CLASSES, seed=0, fps=60, size=128)
    return out


@pytest.fixture(scope="module")
def data_args(corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    cache = tmp_path_factory.mktemp("train_cache")
    return ["--dataset", "casme2", "--data-root", str(corpus), "--cache-dir", str(cache)]


@pytest.fixture(scope="module")
def loso_run(data_args: list[str], tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "loso"
    assert run_cli([*data_args, *RECIPE, "--out", out]) == 0
    return out


def read_predictions(run: Path) -> list[dict[str, str]]:
    rows = []
    for path in sorted(run.glob("fold_*/predictions.csv")):
        with open(path, newline="") as fh:
            rows.extend(csv.DictReader(fh))
    return rows


# ---- metrics --------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", range(5))
def test_metrics_match_sklearn(seed: int) -> None:
    rng = np.random.default_rng(seed)
    num_classes = 5
    y_true = rng.integers(0, num_classes, 200)
    y_pred = np.where(rng.random(200) < 0.6, y_true, rng.integers(0, num_classes, 200))
    y_pred[y_pred == 3] = 1  # class 3 is never predicted: F1 = recall = 0 for it
    got = classification_scores(y_true, y_pred, num_classes)
    assert got["accuracy"] == pytest.approx(accuracy_score(y_true, y_pred))
    assert got["uf1"] == pytest.approx(f1_score(y_true, y_pred, average="macro", zero_division=0))
    assert got["uar"] == pytest.approx(recall_score(y_true, y_pred, average="macro", zero_division=0))
    # a class with neither support nor predictions (index 4 of 6) is left out, as sklearn does
    mask = y_true != 4
    got6 = classification_scores(y_true[mask], np.where(y_pred[mask] == 4, 0, y_pred[mask]), 6)
    assert got6["uf1"] == pytest.approx(f1_score(y_true[mask], np.where(y_pred[mask] == 4, 0, y_pred[mask]),
                                                 average="macro", zero_division=0))


def test_composite_breakdown_per_dataset_matches_sklearn() -> None:
    """Composite runs report each data set's own UF1/UAR (spec section 5) beside the pooled ones."""
    from slstt.training.metrics import grouped_scores

    rng = np.random.default_rng(7)
    datasets = rng.choice(["casme2", "samm", "smic"], 300)
    y_true = rng.integers(0, 3, 300)
    y_pred = np.where(rng.random(300) < 0.7, y_true, rng.integers(0, 3, 300))
    rows = grouped_scores(datasets.tolist(), y_true, y_pred, 3)
    assert [r["group"] for r in rows] == ["casme2", "samm", "smic"]
    for row in rows:
        mask = datasets == row["group"]
        assert row["n"] == mask.sum()
        assert row["uf1"] == pytest.approx(f1_score(y_true[mask], y_pred[mask], average="macro"))
        assert row["uar"] == pytest.approx(recall_score(y_true[mask], y_pred[mask], average="macro"))


# ---- end to end -----------------------------------------------------------------------------
def test_loso_acceptance_and_report(loso_run: Path) -> None:
    results = json.loads((loso_run / "results.json").read_text())
    assert results["optimistic"] is False and results["selection"] == "last"
    assert sorted(results["folds"]) == [f"sub{i:02d}" for i in range(1, 7)]
    pooled = results["pooled"]
    assert pooled["n"] == 54
    assert pooled["uf1"] >= 0.9, pooled  # ACCEPTANCE

    # results.json is an independent recomputation away from the saved per-sample predictions
    rows = read_predictions(loso_run)
    labels = results["labels"]
    y_true = [labels.index(r["true"]) for r in rows]
    y_pred = [int(np.argmax([float(r[f"prob_{c}"]) for c in labels])) for r in rows]
    assert pooled["accuracy"] == pytest.approx(accuracy_score(y_true, y_pred))
    assert pooled["uf1"] == pytest.approx(f1_score(y_true, y_pred, average="macro"))
    assert pooled["uar"] == pytest.approx(recall_score(y_true, y_pred, average="macro"))
    assert len({r["key"] for r in rows}) == 54  # every sample tested exactly once

    for name in ("results.csv", "per_subject.csv", "per_dataset.csv", "confusion_matrix.png", "curves.png",
                 "config.yaml"):
        assert (loso_run / name).stat().st_size > 0, name
    from slstt.models import load_checkpoint

    ckpt = load_checkpoint(loso_run / "fold_sub01" / "checkpoint.pt")
    assert ckpt.meta["fold"] == "sub01" and ckpt.meta["optimistic"] is False
    # compact folds: no copy of the frozen backbone in any fold, one per run, referenced by hash
    import torch

    copies = list(loso_run.glob("backbone-*.safetensors"))
    assert len(copies) == 1
    for path in loso_run.glob("fold_*/checkpoint.pt"):
        raw = torch.load(path, weights_only=True)
        assert raw["format_version"] == 2 and copies[0].name == f"backbone-{raw['backbone']['frozen_sha256'][:12]}.safetensors"
        assert {k for k in raw["state_dict"] if k.startswith("backbone.")} == {"backbone.norm.weight", "backbone.norm.bias"}
        assert path.stat().st_size < 100_000  # the Mean head + final norm; the backbone copy is ~22 MB
    assert ckpt.meta["labels"] == labels and ckpt.preprocess_config.input_size == 64
    history = json.loads((loso_run / "fold_sub01" / "history.json").read_text())
    assert len(history["epochs"]) == 60 and "test_acc" not in history["epochs"][0]


def test_same_seed_same_predictions(loso_run: Path, data_args: list[str], tmp_path: Path) -> None:
    out = tmp_path / "again"
    assert run_cli([*data_args, *RECIPE, "--out", out, "--fold", "sub02"]) == 0
    assert (out / "fold_sub02" / "predictions.csv").read_text() == \
        (loso_run / "fold_sub02" / "predictions.csv").read_text()


def test_resume_skips_done_folds(loso_run: Path, data_args: list[str], tmp_path: Path,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "resumed"
    shutil.copytree(loso_run, run)
    before = json.loads((run / "results.json").read_text())["pooled"]
    # a killed run: fold sub03 half written (no done.json), results not yet written
    (run / "fold_sub03" / "done.json").unlink()
    (run / "fold_sub03" / "predictions.csv").write_text("garbage")
    (run / "results.json").unlink()
    done_mtime = (run / "fold_sub01" / "done.json").stat().st_mtime_ns
    capsys.readouterr()
    assert run_cli([*data_args, *RECIPE, "--out", run]) == 0
    err = capsys.readouterr().err
    assert err.count("skipped (done)") == 5 and "fold sub03: skipped" not in err
    assert (run / "fold_sub01" / "done.json").stat().st_mtime_ns == done_mtime
    assert (run / "fold_sub03" / "done.json").is_file()
    assert json.loads((run / "results.json").read_text())["pooled"] == before

    # same run dir, different config -> one line, exit 2
    assert run_cli([*data_args, *RECIPE, "--out", run, "--epochs", "3"]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(err) == 1 and "different config" in err[0] and "--overwrite" in err[0]


def test_kill_and_resume_real_process(loso_run: Path, data_args: list[str], tmp_path: Path) -> None:
    """SIGKILL a real `slstt train` after its first finished fold; the same command resumes and
    gives exactly the uninterrupted run's predictions."""
    import os
    import signal
    import subprocess
    import sys
    import time

    run = tmp_path / "killed"
    cmd = [sys.executable, "-m", "slstt.cli", "train", *data_args, *RECIPE, "--out", str(run)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    while not list(run.glob("fold_*/done.json")) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    finished = len(list(run.glob("fold_*/done.json")))
    assert 1 <= finished < 6, f"kill landed after {finished} folds; the test needs a run cut mid-way"
    assert not (run / "results.json").exists()

    assert run_cli([*data_args, *RECIPE, "--out", run]) == 0
    assert len(list(run.glob("fold_*/done.json"))) == 6
    assert read_predictions(run) == read_predictions(loso_run)
    assert json.loads((run / "results.json").read_text())["pooled"] == \
        json.loads((loso_run / "results.json").read_text())["pooled"]


def test_optimistic_and_val_selection(data_args: list[str], tmp_path: Path) -> None:
    from slstt.models import load_checkpoint

    quick = [*RECIPE, "--epochs", "4", "--fold", "sub01"]
    assert run_cli([*data_args, *quick, "--select", "test", "--out", tmp_path / "opt"]) == 0
    results = json.loads((tmp_path / "opt" / "results.json").read_text())
    assert results["optimistic"] is True and results["note"].startswith("OPTIMISTIC")
    assert "True" in (tmp_path / "opt" / "results.csv").read_text().splitlines()[1]
    assert load_checkpoint(tmp_path / "opt" / "fold_sub01" / "checkpoint.pt").meta["optimistic"] is True
    history = json.loads((tmp_path / "opt" / "fold_sub01" / "history.json").read_text())
    assert history["optimistic"] and "test_acc" in history["epochs"][0]

    assert run_cli([*data_args, *quick, "--select", "val", "--val-subjects", "2", "--out", tmp_path / "val"]) == 0
    done = json.loads((tmp_path / "val" / "fold_sub01" / "done.json").read_text())
    assert len(done["val_subjects"]) == 2 and "sub01" not in done["val_subjects"]
    assert done["n_train"] == 27 and done["n_test"] == 9 and not done["optimistic"]


@pytest.mark.parametrize("change, expected", [
    (["--data-root", "/nonexistent/corpus"], "does not exist"),
    (["--dataset", "casme3"], "casme3"),
    (["--scheme", "casme2-5"], "--scheme"),  # repression and others have no samples
    (["--fold", "sub99"], "sub01"),  # lists the available subjects
])
def test_bad_inputs_one_line(data_args: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str],
                             change: list[str], expected: str) -> None:
    args = [*data_args, *RECIPE, "--out", tmp_path / "bad", *change]
    capsys.readouterr()
    assert run_cli(args) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(err) == 1 and expected in err[0], err
    assert not (tmp_path / "bad" / "results.json").exists()


# ---- review fixes ----------------------------------------------------------------------------
def test_fold_subset_rerun_keeps_full_report(loso_run: Path, data_args: list[str], tmp_path: Path) -> None:
    """`--fold sub02` inside a finished full run: nothing retrains, the report still pools all 6 folds."""
    run = tmp_path / "subset"
    shutil.copytree(loso_run, run)
    full = json.loads((run / "results.json").read_text())
    assert run_cli([*data_args, *RECIPE, "--out", run, "--fold", "sub02"]) == 0
    results = json.loads((run / "results.json").read_text())
    assert results["folds"] == [f"sub{i:02d}" for i in range(1, 7)] and results["folds_requested"] == ["sub02"]
    assert results["pooled"] == full["pooled"] and "6 fold(s)" in results["folds_note"]


def test_changed_sample_set_recomputes_finished_fold(loso_run: Path, tmp_path: Path) -> None:
    """A finished fold trained on another sample set is not reused: recomputed with a warning, and the
    report pools only folds of the current sample set."""
    from slstt.training.config import TrainConfig
    from slstt.training.loso import samples_from_json, train_run

    run = tmp_path / "changed"
    shutil.copytree(loso_run, run)
    cfg = TrainConfig.load(run / "config.yaml").replace(out_dir=str(run), folds=["sub01"])
    samples = samples_from_json(run / "samples.json")
    fewer = [s for s in samples if s.key != samples[0].key]  # one sample dropped
    old_done = json.loads((run / "fold_sub01" / "done.json").read_text())
    warnings: list[str] = []
    results = train_run(cfg, fewer, on_warning=warnings.append)
    done = json.loads((run / "fold_sub01" / "done.json").read_text())
    assert len(warnings) == 1 and "sub01" in warnings[0] and "recomputing" in warnings[0]
    assert done["samples_hash"] != old_done["samples_hash"] and done["n_train"] == old_done["n_train"] - (
        samples[0].subject != "sub01")
    assert results["folds"] == ["sub01"] and results["pooled"]["n"] == done["n_test"]
    assert json.loads((run / "run.json").read_text())["samples_hash"] == done["samples_hash"]


def test_feature_cache_keyed_by_annotations_and_damage_recomputed(loso_run: Path, data_args: list[str],
                                                                  tmp_path: Path) -> None:
    from dataclasses import replace

    from slstt.errors import SlsttError
    from slstt.training.features import feature_path, load_features
    from slstt.training.loso import samples_from_json

    sample = samples_from_json(loso_run / "samples.json")[0]
    root = Path("root")
    assert feature_path(root, sample) != feature_path(root, replace(sample, offset=sample.offset - 1))
    assert feature_path(root, sample) == feature_path(root, replace(sample, label="other"))

    cache = Path(data_args[data_args.index("--cache-dir") + 1])
    files = sorted((cache / "features").rglob("*.npy"))
    assert files
    feature_root = files[0].parents[2]  # features/<backbone>/<key>/<dataset>/<subject>/<clip>.npy
    victim = feature_path(feature_root, sample)
    victim.write_bytes(victim.read_bytes()[:100])  # truncated
    with pytest.raises(SlsttError, match="damaged"):
        load_features(feature_root, [sample])
    assert run_cli([*data_args, *RECIPE, "--epochs", "2", "--fold", sample.subject, "--out", tmp_path / "fix"]) == 0
    assert load_features(feature_root, [sample]).shape[0] == 1


@pytest.mark.parametrize("change, expected", [
    (["--out", "AFILE"], "--out"),
    (["--cache-dir", "AFILE/cache"], "--cache-dir"),
    (["--device", "gpu"], "cpu"),  # lists the valid values
    (["--device", "cuda:7"], "--device cuda:7"),
    (["--backbone", "vit_tiny_patch16_22"], "vit_tiny_patch16_224"),  # suggests the close name
    (["--weights", "/nonexistent/w.pth"], "--weights"),
    (["--face-model", "/nonexistent/f.task"], "--face-model"),
    (["--lr", "nan"], "--lr"), (["--lr", "inf"], "--lr"), (["--lr", "0"], "--lr"), (["--lr", "-0.1"], "--lr"),
    (["--lr-step-epoch", "-1"], "--lr-step-epoch"), (["--epochs", "0"], "--epochs"),
    (["--batch-size", "0"], "--batch-size"), (["--lstm-layers", "0"], "lstm_layers"),
    (["--feature-dropout", "1"], "--feature-dropout"), (["--feature-dropout", "nan"], "--feature-dropout"),
    (["--select", "val", "--val-subjects", "0"], "--val-subjects"), (["--optimizer", "adam"], "adamw"),
    (["--grad-clip", "-1"], "--grad-clip"), (["--grad-clip", "nan"], "--grad-clip"),
    (["--warmup-epochs", "-2"], "--warmup-epochs"),
])
def test_bad_options_fail_before_data_work(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                           change: list[str], expected: str) -> None:
    """Checked first: the data root does not even exist, yet the option's own error is the one shown."""
    import time

    afile = tmp_path / "afile"
    afile.write_text("x")
    change = [c.replace("AFILE", str(afile)) for c in change]
    args = ["--dataset", "casme2", "--data-root", tmp_path / "nowhere", "--cache-dir", tmp_path / "cache",
            *RECIPE, "--out", tmp_path / "run", *change]
    capsys.readouterr()
    start = time.monotonic()
    assert run_cli(args) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(err) == 1 and expected in err[0], err
    assert time.monotonic() - start < 15 and not (tmp_path / "cache").exists()


def test_face_model_identity_in_run_hash(tmp_path: Path) -> None:
    import zipfile

    from slstt.preprocess.face import default_face_model_path
    from slstt.training.config import TrainConfig

    same, other = tmp_path / "same.task", tmp_path / "other.task"
    shutil.copyfile(default_face_model_path(), same)
    shutil.copyfile(default_face_model_path(), other)
    with zipfile.ZipFile(other, "a") as z:
        z.comment = b"another build"
    base = TrainConfig()
    assert TrainConfig(face_model=str(same)).run_hash() == base.run_hash()  # packaged bytes: old runs stay valid
    changed = TrainConfig(face_model=str(other))
    assert changed.run_hash() != base.run_hash()
    assert TrainConfig.from_dict(changed.to_dict()).run_hash() == changed.run_hash()  # workers need no file


# ---- damaged run files (issue 12) -------------------------------------------------------------
def test_damaged_fold_records_recomputed_not_trusted(loso_run: Path, data_args: list[str], tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    """Truncated predictions.csv / checkpoint.pt, a missing history.json, a garbage run.json and a damaged
    backbone copy: each damaged fold is recomputed with a line saying so; the report is the uninterrupted one."""
    run = tmp_path / "damaged"
    shutil.copytree(loso_run, run)
    before = json.loads((run / "results.json").read_text())["pooled"]
    predictions = run / "fold_sub02" / "predictions.csv"
    predictions.write_text("".join(predictions.read_text().splitlines(keepends=True)[:-2]))  # rows lost
    checkpoint = run / "fold_sub04" / "checkpoint.pt"
    checkpoint.write_bytes(checkpoint.read_bytes()[:-100])
    (run / "fold_sub05" / "history.json").unlink()
    (run / "run.json").write_text("{not json")
    backbone = next(run.glob("backbone-*.safetensors"))
    backbone.write_bytes(backbone.read_bytes()[:1000])
    kept = (run / "fold_sub01" / "done.json").stat().st_mtime_ns
    capsys.readouterr()
    assert run_cli([*data_args, *RECIPE, "--out", run]) == 0
    err = " ".join(capsys.readouterr().err.split())  # rich wraps long lines
    for fold, why in (("sub02", "predictions.csv"), ("sub04", "checkpoint.pt"), ("sub05", "history.json")):
        assert f"fold {fold}: damaged: {why}" in err and "recomputing" in err, err
    assert "run.json was damaged" in err and "backbone" in err and "rewriting" in err
    assert err.count("skipped (done)") == 3 and (run / "fold_sub01" / "done.json").stat().st_mtime_ns == kept
    assert json.loads((run / "results.json").read_text())["pooled"] == before
    from slstt.models import load_checkpoint

    load_checkpoint(run / "fold_sub01" / "checkpoint.pt")  # the rewritten backbone copy serves old folds


def test_run_json_of_another_config_and_loso_subject_count(loso_run: Path, tmp_path: Path) -> None:
    from slstt.errors import SlsttError
    from slstt.training.config import TrainConfig
    from slstt.training.loso import open_run_dir, plan_folds

    run = tmp_path / "other"
    shutil.copytree(loso_run, run)
    (run / "run.json").write_text("[]")
    cfg = TrainConfig.load(run / "config.yaml").replace(out_dir=str(run), epochs=3)  # another config
    with pytest.raises(SlsttError, match="damaged.*another config.*--overwrite"):
        open_run_dir(cfg, overwrite=False)
    with pytest.raises(SlsttError, match="needs >= 2 subjects.*--protocol all"):
        plan_folds(cfg, ["sub01"])
    assert plan_folds(cfg.replace(protocol="all"), ["sub01"]) == ["all"]


def test_cached_features_of_wrong_shape_recomputed(loso_run: Path, data_args: list[str]) -> None:
    from slstt.errors import SlsttError
    from slstt.training.features import _read_tokens, feature_path, load_features
    from slstt.training.loso import samples_from_json

    samples = samples_from_json(loso_run / "samples.json")
    cache = Path(data_args[data_args.index("--cache-dir") + 1])
    root = sorted((cache / "features").rglob("*.npy"))[0].parents[2]
    victim = feature_path(root, samples[0])
    good = np.load(victim)
    np.save(victim, np.zeros((good.shape[0] + 2, good.shape[1]), np.float32))  # another T
    assert _read_tokens(victim, good.shape) is None
    with pytest.raises(SlsttError, match="damaged"):
        load_features(root, samples[:1], good.shape)
    np.save(victim, good)


def test_sweep_yaml_not_utf8_one_line(tmp_path: Path) -> None:
    from slstt.errors import SlsttError
    from slstt.training.sweep import load_sweep

    path = tmp_path / "sweep.yaml"
    path.write_bytes("base: {dataset: casme2}\ngrid: {lr: [0.01]}\n# caf\xe9\n".encode("latin-1"))
    with pytest.raises(SlsttError, match="not UTF-8") as info:
        load_sweep(path)
    assert "\n" not in str(info.value)
