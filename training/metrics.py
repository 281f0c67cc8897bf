"""Metrics of spec section 5, on POOLED predictions (all folds concatenated). Pure numpy.

UF1 = mean over classes of 2TP / (2TP + FP + FN); UAR = mean over classes of TP / (TP + FN).
Which classes enter the mean: every class that occurs in the truth OR in the predictions
(sklearn's default `labels`). A class with no support and no predictions has no defined F1
(0/0) and is left out; a class with support but never predicted scores F1 = 0 and recall = 0;
a class predicted but absent from the truth scores F1 = 0 and is left out of UAR (recall 0/0).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

# Class indices: a list, or the int arrays the report and the training loop collect.
IntLabels = Sequence[int] | np.ndarray


def confusion_matrix(y_true: IntLabels, y_pred: IntLabels, num_classes: int) -> np.ndarray:
    """(C, C) counts, rows = true class, columns = predicted class."""
    cm = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(cm, (np.asarray(y_true, dtype=np.int64), np.asarray(y_pred, dtype=np.int64)), 1)
    return cm


def scores_from_confusion(cm: np.ndarray) -> dict[str, float]:
    tp = np.diag(cm).astype(np.float64)
    support = cm.sum(axis=1).astype(np.float64)  # TP + FN
    predicted = cm.sum(axis=0).astype(np.float64)  # TP + FP
    total = cm.sum()
    present = (support + predicted) > 0
    f1_denom = support + predicted  # 2TP + FP + FN
    f1 = np.divide(2 * tp, f1_denom, out=np.zeros_like(tp), where=f1_denom > 0)
    recall = np.divide(tp, support, out=np.zeros_like(tp), where=support > 0)
    return {
        "n": int(total),
        "accuracy": float(tp.sum() / total) if total else float("nan"),
        "uf1": float(f1[present].mean()) if present.any() else float("nan"),
        "uar": float(recall[support > 0].mean()) if (support > 0).any() else float("nan"),
    }


def classification_scores(y_true: IntLabels, y_pred: IntLabels, num_classes: int) -> dict[str, float]:
    """{'n', 'accuracy', 'uf1', 'uar'} of pooled predictions."""
    return scores_from_confusion(confusion_matrix(y_true, y_pred, num_classes))


def per_class_table(cm: np.ndarray, labels: Sequence[str]) -> list[dict[str, Any]]:
    rows = []
    for i, name in enumerate(labels):
        tp, support, predicted = int(cm[i, i]), int(cm[i].sum()), int(cm[:, i].sum())
        denom = support + predicted
        rows.append({
            "class": name, "support": support, "predicted": predicted,
            "f1": 2 * tp / denom if denom else float("nan"),
            "recall": tp / support if support else float("nan"),
        })
    return rows


def grouped_scores(groups: Sequence[str], y_true: IntLabels, y_pred: IntLabels,
                   num_classes: int) -> list[dict[str, Any]]:
    """Scores per group (a subject, or a data set of a composite), groups in sorted order.

    A single subject often has 1-2 classes, so its UF1 is shown for reference only; the
    headline numbers are the pooled ones (spec section 5)."""
    groups_arr, t, p = np.asarray(groups), np.asarray(y_true), np.asarray(y_pred)
    rows = []
    for group in sorted(set(groups_arr.tolist())):
        mask = groups_arr == group
        rows.append({"group": group, **classification_scores(t[mask], p[mask], num_classes)})
    return rows
