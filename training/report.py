"""Run report: pooled metrics recomputed from the folds' predictions.csv files (so anyone can
recompute them), per-subject and per-data-set tables, confusion matrix and curves. Every file is
written atomically. A run with test-subject epoch selection is marked OPTIMISTIC everywhere."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from slstt.io import atomic_savefig, atomic_write_json, atomic_write_text
from slstt.training.config import TrainConfig
from slstt.training.metrics import confusion_matrix, grouped_scores, per_class_table, scores_from_confusion

OPTIMISTIC_NOTE = ("OPTIMISTIC: epochs were selected on the test subject (as in the paper); "
                   "these scores are inflated and not comparable to honest LOSO results")


def read_predictions(run_dir: Path, folds: Sequence[str]) -> list[dict[str, str]]:
    from slstt.training.loso import fold_dir_name

    rows: list[dict[str, str]] = []
    for fold in folds:
        with open(run_dir / fold_dir_name(fold) / "predictions.csv", newline="", encoding="utf-8") as fh:
            rows.extend(csv.DictReader(fh))
    return rows


def _csv(rows: list[dict[str, Any]]) -> str:
    out = io.StringIO()
    if rows:
        writer = csv.DictWriter(out, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    return out.getvalue()


def write_report(run_dir: str | Path, cfg: TrainConfig, folds: Sequence[str],
                 requested: Sequence[str] | None = None) -> dict[str, Any]:
    """Pool `folds` (every finished fold of the run, not only the ones this invocation trained, so a
    --fold re-run inside a full run keeps reporting the full run); results.json says which folds."""
    from slstt.provenance import package_versions
    from slstt.training.loso import fold_dir_name

    run_dir = Path(run_dir)
    mcfg = cfg.model_config()
    labels = mcfg.class_names
    rows = read_predictions(run_dir, folds)
    y_true = np.array([int(r["true_index"]) for r in rows], dtype=np.int64)
    y_pred = np.array([int(r["pred_index"]) for r in rows], dtype=np.int64)
    cm = confusion_matrix(y_true, y_pred, len(labels))
    done = {f: json.loads((run_dir / fold_dir_name(f) / "done.json").read_text(encoding="utf-8")) for f in folds}

    results: dict[str, Any] = {
        "optimistic": cfg.optimistic,
        "note": OPTIMISTIC_NOTE if cfg.optimistic else "honest protocol: no test-subject information used",
        "dataset": cfg.dataset, "class_scheme": mcfg.class_scheme, "labels": labels,
        "protocol": cfg.protocol, "selection": cfg.select, "folds": list(folds),
        "folds_note": f"pooled over {len(folds)} fold(s): {', '.join(folds)}",
        "folds_requested": list(requested if requested is not None else folds),
        "backbone": mcfg.backbone, "aggregator": mcfg.aggregator,
        "pooled": scores_from_confusion(cm) if rows else None,
        "per_class": per_class_table(cm, labels) if rows else [],
        "confusion_matrix": cm.tolist(),
        "per_subject": grouped_scores([r["subject"] for r in rows], y_true, y_pred, len(labels)),
        "per_dataset": grouped_scores([r["dataset"] for r in rows], y_true, y_pred, len(labels)),
        "fold_epochs": {f: d.get("epoch") for f, d in done.items()},
        "versions": package_versions(),
    }
    atomic_write_json(run_dir / "results.json", results)
    cfg.save(run_dir / "config.yaml")
    if rows:
        pooled = results["pooled"]
        atomic_write_text(run_dir / "results.csv", _csv([{
            "optimistic": cfg.optimistic, "dataset": cfg.dataset, "scheme": mcfg.class_scheme,
            "protocol": cfg.protocol, "selection": cfg.select, "folds": len(folds), **pooled}]))
        for name, key in (("per_subject", "subject"), ("per_dataset", "dataset")):
            atomic_write_text(run_dir / f"{name}.csv", _csv(
                [{"optimistic": cfg.optimistic, key: r["group"], **{k: v for k, v in r.items() if k != "group"}}
                 for r in results[name]]))
        plot_confusion(run_dir / "confusion_matrix.png", cm, labels, _title(cfg, pooled))
    plot_curves(run_dir / "curves.png", {f: _history(run_dir / fold_dir_name(f)) for f in folds}, cfg)
    return results


def _history(fold_dir: Path) -> list[dict[str, Any]]:
    return json.loads((fold_dir / "history.json").read_text(encoding="utf-8"))["epochs"]


def _title(cfg: TrainConfig, pooled: dict[str, Any]) -> str:
    head = f"{cfg.dataset} {cfg.protocol} select={cfg.select}: UF1 {pooled['uf1']:.3f} UAR {pooled['uar']:.3f}"
    return f"OPTIMISTIC (test-subject selection) {head}" if cfg.optimistic else head


def plot_confusion(path: Path, cm: np.ndarray, labels: Sequence[str], title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(1.2 * len(labels) + 3, 1.0 * len(labels) + 2.5))
    ax.imshow(cm, cmap="Blues")
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for i in range(cm.shape[0]):
        for j in range(cm.shape[1]):
            ax.text(j, i, str(cm[i, j]), ha="center", va="center",
                    color="white" if cm[i, j] > cm.max() / 2 else "black")
    ax.set_title(title, fontsize=9, color="red" if title.startswith("OPTIMISTIC") else "black")
    fig.tight_layout()
    atomic_savefig(path, fig, dpi=120)
    plt.close(fig)


def plot_curves(path: Path, histories: dict[str, list[dict[str, Any]]], cfg: TrainConfig) -> None:
    """Mean train loss/accuracy over folds; val (held-out training subjects) or, in an optimistic
    run only, test-subject curves, labelled as such."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series = ["train"] + ([cfg.select] if cfg.select in ("val", "test") else [])
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for metric, ax in zip(("loss", "acc"), axes, strict=True):
        for name in series:
            curves = [[row[f"{name}_{metric}"] for row in h] for h in histories.values() if h]
            if not curves:
                continue
            epochs = np.arange(1, len(curves[0]) + 1)
            label = {"train": "train", "val": "val (held-out training subjects)",
                     "test": "test subject (OPTIMISTIC)"}[name]
            ax.plot(epochs, np.nanmean(np.array(curves, dtype=float), axis=0), label=label)
        ax.set_xlabel("epoch")
        ax.set_ylabel(metric)
        ax.legend()
    title = f"{cfg.dataset} {cfg.protocol}: mean over {len(histories)} fold(s)"
    if cfg.optimistic:
        title = "OPTIMISTIC (test-subject selection) " + title
    fig.suptitle(title, fontsize=10, color="red" if cfg.optimistic else "black")
    fig.tight_layout()
    atomic_savefig(path, fig, dpi=110)
    plt.close(fig)
