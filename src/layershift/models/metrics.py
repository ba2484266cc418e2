"""Classification scores: accuracy and macro-F1 (the per-epoch validation score of fine-tuning and the headline
of every evaluation row), the validation loss, and the full report of an evaluation row."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.metrics import classification_report as sk_classification_report
from sklearn.metrics import confusion_matrix, f1_score


def macro_f1(y_true, y_pred) -> float:
    """Mean F1 over the classes that occur in ``y_true`` or ``y_pred``: a class of the label set that the split
    has no row of and that nothing predicts has no F1 (sklearn's zero_division would count it as 0)."""
    present = sorted(set(np.asarray(y_true).tolist()) | set(np.asarray(y_pred).tolist()))
    return float(f1_score(y_true, y_pred, labels=present, average="macro", zero_division=0))


def accuracy_and_macro_f1(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    """The share of rows predicted right and :func:`macro_f1`, of label ids ``y_true`` and ``y_pred`` [n]."""
    return {"accuracy": float((y_true == y_pred).mean()), "macro_f1": macro_f1(y_true, y_pred)}


def score_logits(logits: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Mean cross-entropy, accuracy and macro-F1 of ``logits`` [n, C] against ``labels`` [n]."""
    loss = F.cross_entropy(torch.from_numpy(logits), torch.from_numpy(labels)).item()
    return {"loss": float(loss), **accuracy_and_macro_f1(labels, logits.argmax(axis=1))}


def classification_metrics(y_true, y_pred, label_names: Sequence[str]) -> dict:
    """Accuracy, macro-F1, a per-class report and the confusion matrix (rows = true, columns = predicted)."""
    names = list(label_names)
    y_true, y_pred = np.asarray(y_true, dtype=np.int64), np.asarray(y_pred, dtype=np.int64)
    if y_true.shape != y_pred.shape or y_true.ndim != 1 or len(y_true) == 0:
        raise ValueError(
            f"y_true and y_pred must be equal-length non-empty 1-d arrays, got {y_true.shape}, {y_pred.shape}"
        )
    ids = list(range(len(names)))
    report = sk_classification_report(
        y_true, y_pred, labels=ids, target_names=names, output_dict=True, zero_division=0
    )
    per_class = {
        name: {
            "precision": float(report[name]["precision"]),
            "recall": float(report[name]["recall"]),
            "f1": float(report[name]["f1-score"]),
            "support": int(report[name]["support"]),
        }
        for name in names
    }
    return {
        **accuracy_and_macro_f1(y_true, y_pred),
        "weighted_f1": float(f1_score(y_true, y_pred, labels=ids, average="weighted", zero_division=0)),
        "n": int(len(y_true)),
        "labels": names,
        "per_class": per_class,
        "confusion_matrix": confusion_matrix(y_true, y_pred, labels=ids).tolist(),
    }
