"""Leave-one-subject-out training (spec sections 3 and 5).

`train_run` plans the folds, computes the shared inputs once (sample table, frozen-feature cache)
and hands one `FoldJob` per test subject to an executor. `run_fold` is a pure function of that
job: it seeds everything, builds the model, trains with the paper's SGD recipe, picks the epoch
(`last` | `val` | `test`), and writes `fold_<subject>/` atomically (built in a temp dir, renamed;
`done.json` is the last file written). Restarting the same command skips finished folds.
"""

from __future__ import annotations

import csv
import io
import json
import os
import random
import shutil
import zlib
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F

from slstt.errors import SlsttError
from slstt.io import atomic_write_json, atomic_write_text
from slstt.provenance import git_revision, package_versions
from slstt.training.config import TrainConfig
from slstt.training.executors import Executor, FoldJob, LocalExecutor, ProgressFn
from slstt.training.metrics import classification_scores

if TYPE_CHECKING:  # only for annotations: the model module imports timm
    from slstt.models.slstt import SLSTT

ALL_FOLD = "all"
RESULT_FILES = ("results.json", "results.csv", "per_subject.csv", "per_dataset.csv",
                "confusion_matrix.png", "curves.png")


# ---- small helpers --------------------------------------------------------------------------
def resolve_device(name: str) -> torch.device:
    """auto | cpu | cuda | cuda:N -> a torch.device that exists here; SlsttError (one line) otherwise."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    valid = ["auto", "cpu"] + (["cuda"] + [f"cuda:{i}" for i in range(count)] if count else [])
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        device = None
    if device is None or device.type not in ("cpu", "cuda"):
        raise SlsttError(f"--device {name!r} is not a device; valid here: {', '.join(valid)}")
    if device.type == "cuda" and (count == 0 or (device.index or 0) >= count):
        where = "CUDA is not available here" if count == 0 else f"this machine has {count} CUDA device(s)"
        raise SlsttError(f"--device {name}: {where}; valid here: {', '.join(valid)}")
    return device


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    # Same seed -> same metrics. warn_only: a CUDA op without a deterministic kernel warns, not fails.
    torch.use_deterministic_algorithms(True, warn_only=True)
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")


@contextmanager
def head_threads(device: torch.device, cached: bool) -> Iterator[None]:
    """Training only the head on cached tokens: on CPU, intra-op threads over such small tensors are
    pure overhead (10x slower on a busy 2-core machine), so use one thread, then restore."""
    if not cached or device.type != "cpu":
        yield
        return
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def fold_dir_name(subject: str) -> str:
    """Composite subjects look like 'samm/006': keep the directory flat."""
    return "fold_" + subject.replace("/", "__")


def subject_from_fold_dir(name: str) -> str:
    """fold_dir_name's inverse: 'fold_samm__006' -> 'samm/006'."""
    return name.removeprefix("fold_").replace("__", "/")


def choose_val_subjects(train_subjects: Sequence[str], count: int, seed: int, fold: str) -> list[str]:
    """Deterministic held-out TRAINING subjects for epoch selection (never the test subject)."""
    pool = sorted(train_subjects)
    if len(pool) < 2:
        raise SlsttError(f"fold {fold}: --select val needs >= 2 training subjects, got {len(pool)}; use --select last")
    count = min(count, len(pool) - 1)
    rng = np.random.default_rng([seed, zlib.crc32(fold.encode())])
    return sorted(rng.choice(pool, size=count, replace=False).tolist())


def samples_hash(samples: Sequence) -> str:
    """Identity of a sample set: sorted keys with their annotation signatures. A fold trained on another
    set (samples added, dropped or re-annotated) is not a finished fold of this run."""
    import hashlib

    from slstt.data.prepare import sample_signature

    lines = sorted(f"{s.key}={sample_signature(s)}" for s in samples)
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()[:16]


def samples_to_json(samples: Sequence) -> list[dict[str, Any]]:
    return [asdict(s) for s in samples]


def samples_from_json(path: str | Path) -> list:
    from slstt.data.samples import Sample

    return [Sample(**row) for row in json.loads(Path(path).read_text(encoding="utf-8"))]


def check_classes(samples: Sequence, labels: Sequence[str], dataset: str, scheme: str) -> None:
    counts = {name: 0 for name in labels}
    for s in samples:
        counts[s.label] = counts.get(s.label, 0) + 1
    empty = [name for name, n in counts.items() if n == 0]
    if empty:
        raise SlsttError(
            f"class {', '.join(map(repr, empty))} has no samples in {dataset} under scheme {scheme!r}; "
            f"pick a scheme that fits the labels with --scheme (e.g. megc-3)"
        )


# ---- one fold -------------------------------------------------------------------------------
class FoldInputs:
    """Network inputs of a fold's samples: cached pre-norm tokens, or flow images run through the backbone."""

    def __init__(self, cfg: TrainConfig, samples: Sequence, feature_root: str | None, device: torch.device,
                 shape: tuple[int, int] | None = None):
        self.cfg, self.samples, self.device = cfg, list(samples), device
        self.prep = cfg.preprocess_config()
        self.tokens = None
        if feature_root:
            from slstt.training.features import load_features

            self.tokens = load_features(feature_root, self.samples, shape).to(device)

    def logits(self, model: SLSTT, idx: Sequence[int], training: bool) -> torch.Tensor:
        if self.tokens is not None:
            tokens = self.tokens[list(idx)]
            if training and self.cfg.feature_dropout > 0:
                tokens = F.dropout(tokens, self.cfg.feature_dropout, training=True)
            return model.aggregate_trunk(tokens)
        from slstt.training.features import load_input

        frames = torch.stack([load_input(self.cfg.cache_dir, self.prep, self.samples[i], self.cfg.face_model_sha)
                              for i in idx])
        return model(frames.to(self.device))


def make_optimizer(cfg: TrainConfig, params: list[torch.nn.Parameter]
                   ) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    """--optimizer sgd (the paper's: momentum, weight decay) | adamw; lr x lr_gamma after lr_step_epoch
    epochs, with an optional linear warm-up over the first warmup_epochs."""
    if cfg.optimizer == "adamw":
        optimizer: torch.optim.Optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    else:
        optimizer = torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    if cfg.warmup_epochs == 0:  # the published schedule, unchanged
        return optimizer, torch.optim.lr_scheduler.MultiStepLR(optimizer, [cfg.lr_step_epoch], gamma=cfg.lr_gamma)

    def factor(epoch: int) -> float:  # epoch = finished epochs
        warm = min(1.0, (epoch + 1) / cfg.warmup_epochs)
        return warm * (cfg.lr_gamma if epoch >= cfg.lr_step_epoch else 1.0)

    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def _train_epoch(model, inputs: FoldInputs, idx: list[int], targets: torch.Tensor, optimizer,
                 generator: torch.Generator, batch_size: int, grad_clip: float = 0.0) -> dict[str, float]:
    model.train()
    order = [idx[i] for i in torch.randperm(len(idx), generator=generator).tolist()]
    total_loss, correct = 0.0, 0
    for start in range(0, len(order), batch_size):
        batch = order[start : start + batch_size]
        logits = inputs.logits(model, batch, training=True)
        loss = F.cross_entropy(logits, targets[batch])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if grad_clip > 0:
            torch.nn.utils.clip_grad_norm_([p for g in optimizer.param_groups for p in g["params"]], grad_clip)
        optimizer.step()
        total_loss += loss.item() * len(batch)
        correct += int((logits.argmax(1) == targets[batch]).sum())
    return {"loss": total_loss / len(order), "acc": correct / len(order)}


@torch.no_grad()
def _evaluate(model, inputs: FoldInputs, idx: list[int], targets: torch.Tensor, num_classes: int,
              batch_size: int = 32) -> tuple[dict[str, float], np.ndarray]:
    model.eval()
    probs = []
    for start in range(0, len(idx), batch_size):
        probs.append(torch.softmax(inputs.logits(model, idx[start : start + batch_size], training=False), 1))
    p = torch.cat(probs) if probs else torch.zeros(0, num_classes, device=targets.device)
    t = targets[idx]
    loss = float(F.nll_loss(torch.log(p.clamp_min(1e-12)), t)) if len(idx) else float("nan")
    scores = classification_scores(t.cpu().numpy(), p.argmax(1).cpu().numpy(), num_classes)
    return {"loss": loss, "acc": scores["accuracy"], "uf1": scores["uf1"]}, p.cpu().numpy()


def _trainable_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """What changes while training: trainable parameters and buffers (frozen weights stay put)."""
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    return {k: v.detach().clone() for k, v in model.state_dict().items() if k not in frozen}


def _better(candidate: dict[str, float], best: dict[str, float] | None, key: str) -> bool:
    """Higher score wins; ties go to the lower loss; remaining ties keep the earlier epoch."""
    if best is None:
        return True
    return (candidate[key], -candidate["loss"]) > (best[key], -best["loss"])


def run_fold(job: FoldJob, progress: ProgressFn | None = None) -> dict[str, Any]:
    """Train and evaluate one fold; writes run_dir/fold_<subject>/ and returns its done.json."""
    from slstt.models import create_model, save_checkpoint

    cfg = TrainConfig.from_dict(job.config)
    device = resolve_device(cfg.device)
    samples = samples_from_json(job.shared["samples"])
    mcfg, prep = cfg.model_config(), cfg.preprocess_config()
    labels = mcfg.class_names
    fold = job.fold

    test_idx = [] if fold == ALL_FOLD else [i for i, s in enumerate(samples) if s.subject == fold]
    train_subjects = sorted({s.subject for s in samples} - ({fold} if fold != ALL_FOLD else set()))
    val_subjects = (choose_val_subjects(train_subjects, cfg.val_subjects, cfg.seed, fold)
                    if cfg.select == "val" else [])
    val_idx = [i for i, s in enumerate(samples) if s.subject in val_subjects]
    train_idx = [i for i, s in enumerate(samples) if s.subject in set(train_subjects) - set(val_subjects)]
    if fold != ALL_FOLD and not test_idx:
        raise SlsttError(f"fold {fold}: no samples of that subject")

    seed_everything(cfg.seed)  # same init in every fold (and the same frozen backbone the cache used)
    model = create_model(mcfg, pretrained=cfg.pretrained, weights=cfg.weights).to(device)
    feature_root = job.shared.get("features") or None
    if feature_root:
        from slstt.training.features import backbone_id

        if Path(feature_root).parent.name != backbone_id(model):
            raise RuntimeError(f"fold {fold}: backbone differs from the one that filled {feature_root}")
    from slstt.training.features import token_shape

    inputs = FoldInputs(cfg, samples, feature_root, device, token_shape(model, prep))
    targets = torch.tensor([s.class_index for s in samples], device=device)

    optimizer, scheduler = make_optimizer(cfg, model.trainable_parameters())
    generator = torch.Generator().manual_seed(cfg.seed)

    history: list[dict[str, Any]] = []
    best, best_state, best_epoch = None, None, cfg.epochs
    watch = {"val": val_idx, "test": test_idx}.get(cfg.select)
    assert cfg.grad_clip is not None  # TrainConfig.__post_init__ resolves None to the optimizer's default
    with head_threads(device, inputs.tokens is not None):
        for epoch in range(1, cfg.epochs + 1):
            row: dict[str, Any] = {"epoch": epoch, "lr": optimizer.param_groups[0]["lr"]}
            row.update({f"train_{k}": v for k, v in _train_epoch(
                model, inputs, train_idx, targets, optimizer, generator, cfg.batch_size, cfg.grad_clip).items()})
            scheduler.step()
            if watch is not None:  # test curves exist only in an optimistic (select=test) run
                scores, _ = _evaluate(model, inputs, watch, targets, mcfg.num_classes)
                row.update({f"{cfg.select}_{k}": v for k, v in scores.items()})
                if _better(scores, best, "acc" if cfg.select == "test" else "uf1"):
                    best, best_state, best_epoch = scores, _trainable_state(model), epoch
            history.append(row)
            if progress is not None:
                progress(fold, epoch, cfg.epochs, row)
        if best_state is not None:
            model.load_state_dict(best_state, strict=False)
        scores, probs = _evaluate(model, inputs, test_idx, targets, mcfg.num_classes)
    metrics = {k: scores[k] for k in ("acc", "uf1")} if test_idx else {}
    meta = {
        "dataset": cfg.dataset, "class_scheme": mcfg.class_scheme, "labels": labels,
        "protocol": cfg.protocol, "fold": None if fold == ALL_FOLD else fold,
        "optimistic": cfg.optimistic, "selection": cfg.select, "epoch": best_epoch,
        "val_subjects": val_subjects, "metrics": metrics, "data_fps": data_fps(samples, prep.fps),
        "versions": package_versions(), "git": git_revision(), "config_hash": cfg.run_hash(),
    }
    done = {"fold": fold, "config_hash": cfg.run_hash(), "samples_hash": samples_hash(samples), "epoch": best_epoch, "selection": cfg.select,
            "optimistic": cfg.optimistic, "n_train": len(train_idx), "n_val": len(val_idx),
            "n_test": len(test_idx), "val_subjects": val_subjects, "metrics": metrics}
    # LOSO folds are compact (the frozen backbone lives once per run); the deployment model
    # (--protocol all) stays self-contained.
    identity = run_backbone_identity(cfg, model.cpu()) if fold != ALL_FOLD else None
    if identity is not None:
        done["backbone"] = {"file": identity.file_name, "frozen_sha256": identity.frozen_sha256}

    final = Path(job.run_dir) / fold_dir_name(fold)
    tmp = final.with_name(f".{final.name}.partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    atomic_write_text(tmp / "predictions.csv", predictions_csv([samples[i] for i in test_idx], probs, labels))
    atomic_write_json(tmp / "history.json", {"optimistic": cfg.optimistic, "selection": cfg.select,
                                             "test_curves": cfg.select == "test", "epochs": history})
    save_checkpoint(tmp / "checkpoint.pt", model.cpu(), preprocess=prep, meta=meta, backbone=identity)
    done["files"] = {name: file_record(tmp / name) for name in FOLD_FILES}  # checked before a resume trusts them
    atomic_write_json(tmp / "done.json", done)  # last file: marks the fold finished
    shutil.rmtree(final, ignore_errors=True)  # a stale, unfinished fold dir from a killed run
    os.replace(tmp, final)
    return done


# ---- run files: the shared backbone copy, verified fold records ---------------------------------
FOLD_FILES = ("predictions.csv", "history.json", "checkpoint.pt")


def run_backbone_identity(cfg: TrainConfig, model: torch.nn.Module):
    """BackboneIdentity of a fold's frozen backbone (how it was built + a hash of its tensors)."""
    from slstt.models.checkpoint import backbone_identity
    from slstt.models.factory import _pretrained_name

    if cfg.weights:
        return backbone_identity(model, "weights", weights_file=cfg.weights)
    if cfg.pretrained:
        return backbone_identity(model, "pretrained", pretrained_tag=_pretrained_name(cfg.model_config().backbone))
    return backbone_identity(model, "random", seed=cfg.seed)


def build_run_model(cfg: TrainConfig) -> SLSTT:
    """The model every fold starts from (seeded as run_fold does), on the CPU."""
    from slstt.models import create_model

    seed_everything(cfg.seed)
    return create_model(cfg.model_config(), pretrained=cfg.pretrained, weights=cfg.weights)


def ensure_backbone_copy(run_dir: Path, model: torch.nn.Module, identity,
                         on_warning: Callable[[str], None] | None = None) -> Path:
    """<run>/backbone-<sha12>.safetensors: the one copy of the frozen backbone the run's compact fold
    checkpoints load with; (re)written when missing or damaged."""
    from slstt.models.checkpoint import read_backbone_copy, save_backbone_copy, tensors_sha256

    path = run_dir / identity.file_name
    if path.is_file():
        try:
            if tensors_sha256(read_backbone_copy(path)[0]) == identity.frozen_sha256:
                return path
        except SlsttError:
            pass
        if on_warning is not None:
            on_warning(f"{path} is damaged or not this run's backbone; rewriting it")
    return save_backbone_copy(path, model, identity)


def file_record(path: Path) -> dict[str, Any]:
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return {"size": path.stat().st_size, "sha256": digest.hexdigest()}


def fold_damage(fold_dir: Path, done: dict[str, Any]) -> str | None:
    """Why a finished fold's files cannot be trusted, or None. Records written with done.json (size,
    sha-256) are compared; older folds without them get the checks their content allows."""
    files = done.get("files")
    for name in FOLD_FILES:
        path = fold_dir / name
        if not path.is_file():
            return f"{name} is missing"
        want = files.get(name) if isinstance(files, dict) else None
        if isinstance(want, dict):
            if path.stat().st_size != want.get("size"):
                return f"{name} has {path.stat().st_size} bytes, its record says {want.get('size')}"
            if file_record(path)["sha256"] != want.get("sha256"):
                return f"{name} differs from its recorded sha256"
    if isinstance(files, dict):
        return None
    try:  # a fold written before records existed: its content must at least be complete
        with open(fold_dir / "predictions.csv", newline="", encoding="utf-8") as fh:
            rows = sum(1 for _ in csv.DictReader(fh))
        epochs = json.loads((fold_dir / "history.json").read_text(encoding="utf-8"))["epochs"]
    except (OSError, ValueError, KeyError, TypeError, csv.Error):
        return "predictions.csv or history.json is unreadable"
    if rows != done.get("n_test") or not isinstance(epochs, list):
        return f"predictions.csv has {rows} rows, done.json says {done.get('n_test')}"
    return None


def data_fps(samples: Sequence, resampled: float | None) -> float | list[float] | None:
    """Frame rate the network saw: the resampling rate, else the data's rate(s)."""
    if resampled:
        return resampled
    rates = sorted({float(s.fps) for s in samples})
    return rates[0] if len(rates) == 1 else rates


PREDICTION_FIELDS = ["key", "subject", "dataset", "true", "pred", "true_index", "pred_index"]


def predictions_csv(samples: Sequence, probs: np.ndarray, labels: Sequence[str]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(PREDICTION_FIELDS + [f"prob_{name}" for name in labels])
    for sample, p in zip(samples, probs, strict=True):
        pred = int(np.argmax(p))
        writer.writerow([sample.key, sample.subject, sample.dataset, sample.label, labels[pred],
                         sample.class_index, pred] + [f"{v:.6f}" for v in p])
    return out.getvalue()


# ---- the whole run --------------------------------------------------------------------------
def plan_folds(cfg: TrainConfig, subjects: Sequence[str]) -> list[str]:
    if cfg.protocol == "all":
        return [ALL_FOLD]
    if len(subjects) < 2:
        raise SlsttError(f"leave-one-subject-out needs >= 2 subjects, the data has {len(subjects)} "
                         f"({', '.join(subjects) or 'none'}); add subjects or use --protocol all")
    if not cfg.folds:
        return sorted(subjects)
    absent = [f for f in cfg.folds if f not in subjects]
    if absent:
        raise SlsttError(f"--fold {', '.join(absent)}: no such subject; available: {', '.join(sorted(subjects))}")
    return sorted(dict.fromkeys(cfg.folds))


def read_run_marker(marker: Path) -> dict[str, Any] | None:
    """run.json's content, or None when it is not a readable JSON object."""
    try:
        data = json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def open_run_dir(cfg: TrainConfig, overwrite: bool, sample_set: str | None = None,
                 on_warning: Callable[[str], None] | None = None) -> Path:
    """Create the run dir, or check that an existing one was made by the same config."""
    run_dir = Path(cfg.out_dir)
    marker = run_dir / "run.json"
    data = read_run_marker(marker) if marker.is_file() else None
    if marker.is_file() and data is None:
        # Damaged marker: each fold's done.json still names its config, so the run is recoverable
        # when every finished fold was made by this config.
        others = {d.get("config_hash") for p in run_dir.glob("fold_*") if (d := read_done(p))} - {cfg.run_hash()}
        if others and not overwrite:
            raise SlsttError(f"{marker} is damaged and {run_dir} holds folds of another config; "
                             f"use another --out, or --overwrite to replace them")
        if on_warning is not None:
            on_warning(f"{marker} was damaged; rewritten (finished folds are checked one by one)")
        if others:
            clear_run_dir(run_dir)
    elif data is not None:  # a readable marker
        old = data.get("config_hash")
        if old != cfg.run_hash():
            if not overwrite:
                raise SlsttError(f"{run_dir} holds a run with a different config ({old} != {cfg.run_hash()}); "
                                 f"use another --out or --overwrite")
            clear_run_dir(run_dir)
    elif run_dir.is_dir() and overwrite:
        clear_run_dir(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(marker, {"config_hash": cfg.run_hash(), "samples_hash": sample_set,
                               "optimistic": cfg.optimistic})
    cfg.save(run_dir / "config.yaml")
    return run_dir


def clear_run_dir(run_dir: Path) -> None:
    """Remove what a training run writes (folds, results), nothing else."""
    for path in run_dir.glob("*fold_*"):
        shutil.rmtree(path, ignore_errors=True)
    for name in (*RESULT_FILES, "run.json", "config.yaml", "samples.json"):
        (run_dir / name).unlink(missing_ok=True)
    for path in run_dir.glob("backbone-*.safetensors"):
        path.unlink(missing_ok=True)


def read_done(fold_dir: Path) -> dict[str, Any] | None:
    try:
        done = json.loads((fold_dir / "done.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return done if isinstance(done, dict) else None


def fold_state(run_dir: Path, fold: str, run_hash: str, sample_set: str) -> str:
    """'done' | 'missing' (never finished, or another config) | 'stale' (finished on another sample set)
    | 'damaged: <why>' (its files do not match their records)."""
    fold_dir = run_dir / fold_dir_name(fold)
    done = read_done(fold_dir)
    if done is None or done.get("config_hash") != run_hash:
        return "missing"
    if done.get("samples_hash") != sample_set:
        return "stale"
    damage = fold_damage(fold_dir, done)
    return f"damaged: {damage}" if damage else "done"


def fold_done(run_dir: Path, fold: str, run_hash: str, sample_set: str) -> bool:
    return fold_state(run_dir, fold, run_hash, sample_set) == "done"


def finished_folds(run_dir: Path, run_hash: str, sample_set: str) -> list[str]:
    """Every fold in run_dir finished with this config on this sample set (earlier --fold runs included)."""
    folds = []
    for fold_dir in sorted(run_dir.glob("fold_*")):
        done = read_done(fold_dir) if fold_dir.is_dir() else None
        if (done and done.get("config_hash") == run_hash and done.get("samples_hash") == sample_set
                and fold_dir.name == fold_dir_name(str(done.get("fold"))) and fold_damage(fold_dir, done) is None):
            folds.append(str(done["fold"]))
    return sorted(folds)


def prepare_features(cfg: TrainConfig, samples: Sequence, device: torch.device,
                     on_sample: Callable[[int], None] | None = None,
                     model: SLSTT | None = None) -> str | None:
    """Fill the frozen-feature cache when it applies; returns its root, or None (backbone runs each step).
    `model`: the run's starting model (build_run_model), built here when not given."""
    if not cfg.feature_cache:
        return None
    from slstt.training.features import can_cache, compute_features

    model = (model or build_run_model(cfg)).to(device)  # exactly the backbone every fold will build
    if not can_cache(model):
        return None
    return str(compute_features(model, samples, cfg.cache_dir, cfg.preprocess_config(), device,
                                on_sample=on_sample, face_sha=cfg.face_model_sha))


def train_run(cfg: TrainConfig, samples: Sequence, *, overwrite: bool = False,
              executor: Executor | None = None, progress: ProgressFn | None = None,
              on_feature: Callable[[int], None] | None = None,
              on_fold: Callable[[str, str], None] | None = None,
              on_warning: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run (or resume) every fold, then write the report; returns results.json's content.

    Resume: a fold finished with the same config AND the same sample set is skipped. A fold finished on
    another sample set (samples added, dropped or re-annotated since) is recomputed, with a warning.
    The report pools every fold of the run dir finished with this config and sample set, so a --fold
    subset re-run inside a full run still reports the full run."""
    from slstt.training.report import write_report

    sample_set = samples_hash(samples)
    run_dir = open_run_dir(cfg, overwrite, sample_set, on_warning)
    subjects = sorted({s.subject for s in samples})
    folds = plan_folds(cfg, subjects)
    samples_path = run_dir / "samples.json"
    atomic_write_json(samples_path, samples_to_json(samples))
    run_hash = cfg.run_hash()
    states = {f: fold_state(run_dir, f, run_hash, sample_set) for f in folds}
    todo = [f for f in folds if states[f] != "done"]
    stale = [f for f in folds if states[f] == "stale"]
    if stale and on_warning is not None:
        on_warning(f"the sample set changed since fold(s) {', '.join(stale)} finished; recomputing them")
    for fold in folds:
        if states[fold].startswith("damaged") and on_warning is not None:
            on_warning(f"fold {fold}: {states[fold]}; recomputing it")
    model = None
    if cfg.protocol != "all":  # the run's one backbone copy, for its compact fold checkpoints
        model = build_run_model(cfg)
        ensure_backbone_copy(run_dir, model, run_backbone_identity(cfg, model), on_warning)
    for fold in folds:
        if fold not in todo and on_fold is not None:
            on_fold(fold, "skipped (done)")
    if todo:
        features = prepare_features(cfg, samples, resolve_device(cfg.device), on_feature, model)
        shared = {"samples": str(samples_path), "features": features or ""}
        jobs = [FoldJob(cfg.to_dict(), fold, str(run_dir), shared) for fold in todo]
        executor = executor or LocalExecutor()
        fold_fn = partial(run_fold, progress=progress) if isinstance(executor, LocalExecutor) else run_fold
        executor.run_folds(fold_fn, jobs, on_done=(lambda job, _: on_fold(job.fold, "done")) if on_fold else None)
    covered = sorted(set(finished_folds(run_dir, run_hash, sample_set)) | set(folds))
    return write_report(run_dir, cfg, covered, requested=folds)
