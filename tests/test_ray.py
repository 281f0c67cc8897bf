"""Folds on Ray: same numbers as the local executor, a worker killed mid-fold loses nothing, the
no-shared-filesystem path (inputs via the object store, fold files back as bytes), resume,
sweeps, and the install hint without Ray. One local Ray instance (loopback, 2 CPUs) for the file."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ray = pytest.importorskip("ray")

from slstt.errors import SlsttError  # noqa: E402
from slstt.training.ray_executor import INSTALL_HINT, RayExecutor, localize_job, pack_inputs, unpack_once  # noqa: E402

SUBJECTS = 2  # two folds: the smallest LOSO
CLASSES = ("happiness", "surprise", "disgust")  # megc-3: positive, surprise, negative


@pytest.fixture(scope="module")
def ray_session(tmp_path_factory):
    worker_tmp = tmp_path_factory.mktemp("ray_worker_tmp")  # node input caches + fold scratch stay in the test dir
    ray.init(address="local", num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1",
             logging_level="warning", runtime_env={"env_vars": {"TMPDIR": str(worker_tmp)}})
    yield worker_tmp
    ray.shutdown()


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """A tiny prepared corpus and the training config every test runs (vit_tiny, 32 px, T=4, 2 epochs)."""
    from rich.console import Console

    from slstt.config import ModelConfig, PreprocessConfig
    from slstt.data.synth import make_corpus
    from slstt.training.cli import load_training_samples
    from slstt.training.config import TrainConfig

    root = tmp_path_factory.mktemp("ray_data")
    annotations = make_corpus(root / "corpus", subjects=SUBJECTS, clips_per_class=1, classes=CLASSES, size=128)
    model = ModelConfig(backbone="vit_tiny_patch16_224", input_size=32, num_frames=4, lstm_hidden=16,
                        lstm_layers=1, head_hidden=16)
    cfg = TrainConfig(dataset="casme2", data_root=str(root / "corpus"), annotations=str(annotations),
                      scheme="megc-3", cache_dir=str(root / "cache"),
                      preprocess=PreprocessConfig(num_frames=4, input_size=32).to_dict(), model=model.to_dict(),
                      pretrained=False, epochs=2, device="cpu", workers=0, out_dir=str(root / "local"))
    samples, cfg = load_training_samples(cfg, Console(stderr=True, quiet=True))
    return root, samples, cfg


@pytest.fixture(scope="module")
def local_run(data):
    from slstt.training.loso import train_run

    root, samples, cfg = data
    return train_run(cfg, samples)


def _predictions(run_dir: Path) -> dict[str, np.ndarray]:
    probs = {}
    for path in sorted(run_dir.glob("fold_*/predictions.csv")):
        with open(path, newline="") as fh:
            for row in csv.DictReader(fh):
                probs[row["key"]] = np.array([float(v) for k, v in row.items() if k.startswith("prob_")])
    return probs


def _assert_same_as_local(results: dict, local: dict, run_dir: Path, local_dir: Path) -> None:
    """Same pooled metrics, same per-sample probabilities, every fold present."""
    assert results["folds"] == local["folds"] and len(results["folds"]) == SUBJECTS
    for name in ("n", "accuracy", "uf1", "uar"):
        assert results["pooled"][name] == local["pooled"][name], name
    ours, theirs = _predictions(run_dir), _predictions(local_dir)
    assert ours.keys() == theirs.keys() and len(ours) == SUBJECTS * len(CLASSES)
    for key in ours:
        np.testing.assert_allclose(ours[key], theirs[key], atol=1e-5)


@pytest.fixture(scope="module")
def local_dir(data, local_run):
    return Path(data[2].out_dir)


def test_ray_folds_match_local_and_resume(ray_session, data, local_run, local_dir):
    from slstt.training.loso import train_run

    root, samples, cfg = data
    executor = RayExecutor(cpus_per_fold=1)
    ray_cfg = cfg.replace(out_dir=str(root / "ray_shared"))
    results = train_run(ray_cfg, samples, executor=executor)
    assert executor.last_mode == "shared-fs"  # one machine: workers write the run dir in place
    _assert_same_as_local(results, local_run, root / "ray_shared", local_dir)

    statuses = []  # the same command again: every fold is already done and is skipped
    again = train_run(ray_cfg, samples, executor=executor, on_fold=lambda fold, status: statuses.append(status))
    assert statuses == ["skipped (done)"] * SUBJECTS and again["pooled"] == results["pooled"]


def test_worker_killed_mid_fold_without_shared_fs(ray_session, data, local_run, local_dir, tmp_path):
    """The first fold's worker dies in epoch 1 (os._exit); Ray retries it; inputs travel through
    the object store and fold files come back as bytes (shared_fs=False), yet nothing is lost."""
    from slstt.training.loso import run_fold, train_run

    root, samples, cfg = data
    marker = tmp_path / "killed_once"
    first = sorted({s.subject for s in samples})[0]

    def crash_once(job):  # nested: cloudpickle ships it by value to the worker
        def progress(fold, epoch, epochs, row):
            if fold == first and not marker.exists():
                marker.write_text(str(os.getpid()))
                os._exit(1)  # the worker process dies mid-fold, like an OOM kill
        return run_fold(job, progress=progress)

    executor = RayExecutor(shared_fs=False, max_retries=2)
    out = tmp_path / "ray_bytes"
    results = train_run(cfg.replace(out_dir=str(out)), samples, executor=_FoldFn(executor, crash_once))
    assert marker.exists() and int(marker.read_text()) != os.getpid()  # a worker really died
    assert executor.last_mode == "object-store"
    _assert_same_as_local(results, local_run, out, local_dir)
    from slstt.models import load_checkpoint

    for fold in results["folds"]:
        done = json.loads((out / f"fold_{fold}" / "done.json").read_text())
        assert done["fold"] == fold and (out / f"fold_{fold}" / "checkpoint.pt").stat().st_size > 0
        # compact fold checkpoints written from bytes load with the backbone copy the driver wrote
        assert (out / done["backbone"]["file"]).is_file()
        assert load_checkpoint(out / f"fold_{fold}" / "checkpoint.pt").meta["fold"] == fold
    assert not list(out.glob(".*partial"))
    assert len(list((ray_session / "slstt-ray" / "slstt-inputs").iterdir())) == 1  # unpacked once
    assert list((ray_session / "slstt-ray" / "folds").iterdir()) == []  # the dead worker's scratch is gone


def test_shared_dir_stages_inputs_once(ray_session, data, local_run, local_dir, tmp_path):
    """--shared-dir: inputs unpacked once into a folder every node sees; fold files still come back as bytes."""
    from slstt.training.loso import train_run

    root, samples, cfg = data
    executor = RayExecutor(shared_fs=False, shared_dir=tmp_path / "shared")
    results = train_run(cfg.replace(out_dir=str(tmp_path / "run")), samples, executor=executor)
    assert executor.last_mode == "shared-dir"
    staged = list((tmp_path / "shared" / "slstt-inputs").iterdir())
    assert len(staged) == 1 and (staged[0] / "samples").is_dir() and (staged[0] / "features").is_dir()
    _assert_same_as_local(results, local_run, tmp_path / "run", local_dir)


def test_failed_fold_keeps_the_others_and_resumes(ray_session, data, tmp_path):
    """A fold that raises a user error: one clear line, the other fold is on disk, and the same
    command afterwards runs only the missing fold."""
    from slstt.training.loso import run_fold, train_run

    root, samples, cfg = data
    bad = sorted({s.subject for s in samples})[-1]

    def fail_one(job):
        if job.fold == bad:
            raise SlsttError(f"fold {job.fold}: broken on purpose")
        return run_fold(job)

    run_cfg = cfg.replace(out_dir=str(tmp_path / "run"))
    with pytest.raises(SlsttError) as info:
        train_run(run_cfg, samples, executor=_FoldFn(RayExecutor(), fail_one))
    assert "\n" not in str(info.value) and str(info.value).startswith(f"fold {bad}: broken on purpose")
    good = [s.subject for s in samples if s.subject != bad][0]
    assert [p.parent.name for p in (tmp_path / "run").glob("fold_*/done.json")] == [f"fold_{good}"]
    assert not (tmp_path / "run" / f"fold_{bad}").exists()
    statuses = []
    train_run(run_cfg, samples, executor=RayExecutor(), on_fold=lambda fold, status: statuses.append((fold, status)))
    assert sorted(statuses) == sorted((f, "done" if f == bad else "skipped (done)") for f in {s.subject for s in samples})


def test_unsatisfiable_request_fails_fast(ray_session, data):
    """A GPU per fold on a CPU-only cluster would wait forever in Ray's queue: one line instead."""
    from slstt.training.executors import FoldJob
    from slstt.training.loso import run_fold

    root, samples, cfg = data
    job = FoldJob(cfg.to_dict(), samples[0].subject, str(root / "gpu"), {})
    with pytest.raises(SlsttError, match=r"no Ray node has 1 CPU\(s\) and 1.0 GPU\(s\)"):
        RayExecutor(gpus_per_fold=1).run_folds(run_fold, [job])
    assert not (root / "gpu").exists()


class _FoldFn:
    """Run the executor with another fold function (the crashing one) than train_run passes."""

    def __init__(self, inner, fold_fn) -> None:
        self.inner, self.fold_fn = inner, fold_fn

    def run_folds(self, fold_fn, jobs, on_done=None):
        return self.inner.run_folds(self.fold_fn, jobs, on_done)


def test_bundle_ships_prepared_images_without_feature_cache(data, local_run, local_dir, tmp_path):
    """No feature cache: the bundle carries the prepared flow images; unpacked elsewhere, a fold
    reads every sample from it (and packing is deterministic, so nodes reuse what they unpacked)."""
    from slstt.data.prepare import load_prepared
    from slstt.training.config import TrainConfig
    from slstt.training.executors import FoldJob

    root, samples, cfg = data
    job = FoldJob(cfg.to_dict(), samples[0].subject, str(local_dir),
                  {"samples": str(local_dir / "samples.json"), "features": ""})
    data_bytes, digest = pack_inputs(job)
    assert pack_inputs(job)[1] == digest
    inputs = unpack_once(data_bytes, digest, tmp_path / "node")
    assert unpack_once(b"not read again", digest, tmp_path / "node") == inputs
    moved = localize_job(job, inputs, str(tmp_path / "run"))
    local_cfg = TrainConfig.from_dict(moved.config)
    assert Path(moved.shared["samples"]).is_file() and local_cfg.cache_dir.startswith(str(inputs))
    assert local_cfg.run_hash() == cfg.run_hash()  # resume still recognises the fold
    prep = cfg.preprocess_config()
    for sample in samples:
        np.testing.assert_array_equal(load_prepared(local_cfg.cache_dir, prep, sample),
                                      load_prepared(cfg.cache_dir, prep, sample))


def _sweep_yaml(path: Path, cfg, seeds: list[int]) -> Path:
    import yaml

    base = {k: v for k, v in cfg.to_dict().items() if k != "out_dir"}
    path.write_text(yaml.safe_dump({"base": base, "grid": {"seed": seeds, "backbone": ["vit_tiny_patch16_224"]}}))
    return path


def test_tiny_sweep_summary(ray_session, data, local_run, tmp_path, capsys):
    from slstt.cli import main

    root, samples, cfg = data
    spec = _sweep_yaml(tmp_path / "sweep.yaml", cfg, [0, 1])
    out = tmp_path / "sweep"
    with pytest.raises(SystemExit) as exit_info:
        main(["sweep", str(spec), "--executor", "ray", "--out", str(out)])
    assert exit_info.value.code in (0, None)
    assert "sweep" in capsys.readouterr().out
    summary = json.loads((out / "summary.json").read_text())
    assert len(summary["runs"]) == 2 and len(summary["table"]) == 1
    row = summary["table"][0]
    assert row["seeds"] == 2 and row["backbone"] == "vit_tiny_patch16_224" and row["aggregator"] == "lstm"
    per_run = [json.loads((Path(r["run_dir"]) / "results.json").read_text())["pooled"] for r in summary["runs"]]
    assert per_run[0] == local_run["pooled"]  # seed 0 = the local run's config and seed
    for m in ("uf1", "uar"):
        values = [p[m] for p in per_run]
        assert row[f"{m}_mean"] == pytest.approx(np.mean(values))
        assert row[f"{m}_std"] == pytest.approx(np.std(values, ddof=1))
    with open(out / "summary.csv", newline="") as fh:
        assert len(list(csv.DictReader(fh))) == 1
    assert (out / "summary.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_without_ray_prints_install_line(data, tmp_path, monkeypatch):
    from slstt.training.executors import get_executor

    monkeypatch.setitem(sys.modules, "ray", None)  # what `import ray` sees when Ray is not installed
    with pytest.raises(SlsttError, match=r'^Ray is not installed: pip install "slstt\[ray\]"$'):
        get_executor("ray")
    spec = _sweep_yaml(tmp_path / "sweep.yaml", data[2], [0])
    code = ("import sys; sys.modules['ray'] = None; from slstt.cli import main; "
            f"main(['sweep', {str(spec)!r}, '--executor', 'ray', '--out', {str(tmp_path / 'out')!r}])")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert proc.stderr.strip().splitlines()[-1] == f"error: {INSTALL_HINT}"
    assert not (tmp_path / "out").exists()  # failed before any work


def test_train_executor_ray_without_ray(tmp_path):
    """`slstt train --executor ray` without Ray: the install line and exit 2, before any data is read."""
    code = ("import sys; sys.modules['ray'] = None; from slstt.cli import main; "
            f"main(['train', '--dataset', 'casme2', '--data-root', {str(tmp_path)!r}, '--executor', 'ray', "
            f"'--out', {str(tmp_path / 'run')!r}])")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [f"error: {INSTALL_HINT}"]
    assert not (tmp_path / "run").exists()


def test_train_cli_executor_ray_equals_local(ray_session, data, tmp_path):
    """The user's command: `slstt train ... --executor ray` gives the local executor's numbers."""
    from slstt.cli import main

    root, _, cfg = data
    args = ["train", "--dataset", "casme2", "--data-root", cfg.data_root, "--annotations", cfg.annotations,
            "--scheme", "megc-3", "--cache-dir", cfg.cache_dir, "--backbone", "vit_tiny_patch16_224",
            "--no-pretrained", "--input-size", "32", "--frames", "4", "--lstm-hidden", "16", "--lstm-layers", "1",
            "--epochs", "2", "--device", "cpu", "--workers", "0"]
    pooled = {}
    for executor in ("local", "ray"):
        try:
            main([*args, "--executor", executor, "--out", str(tmp_path / executor)])
        except SystemExit as exc:
            assert not exc.code, exc.code
        pooled[executor] = json.loads((tmp_path / executor / "results.json").read_text())["pooled"]
    assert pooled["ray"] == pooled["local"]
    assert len(list((tmp_path / "ray").glob("fold_*/done.json"))) == SUBJECTS
