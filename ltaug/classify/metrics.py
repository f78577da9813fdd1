"""Accuracy on a balanced test set, overall and on the many / medium / few groups (method.md §4, §6). numpy only."""

from __future__ import annotations

import numpy as np

from ltaug.data.longtail import class_groups


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> np.ndarray:
    """int64 [C, C]: row = true class, column = predicted class."""
    y_true = np.asarray(y_true, dtype=np.int64)
    y_pred = np.asarray(y_pred, dtype=np.int64)
    return np.bincount(y_true * num_classes + y_pred, minlength=num_classes * num_classes).reshape(num_classes,
                                                                                                    num_classes)


def group_accuracy(confusion, train_counts) -> dict:
    """Accuracy from a confusion matrix [C, C] (rows true) and the REAL training counts [C] that define the groups.

    Returns {"overall": correct / total, "many" / "medium" / "few": mean per-class accuracy over the group's classes
    (None for an empty group), "per_class": [C] accuracy (None for a class absent from the test set)}. Fractions in
    [0, 1]. On a balanced test set a group's mean per-class accuracy equals its pooled accuracy.
    """
    cm = np.asarray(confusion, dtype=np.float64)
    if cm.ndim != 2 or cm.shape[0] != cm.shape[1] or cm.shape[0] != len(train_counts):
        raise ValueError(f"confusion must be [C, C] with C = len(train_counts) = {len(train_counts)}, got {cm.shape}")
    support = cm.sum(axis=1)
    correct = np.diag(cm)
    per_class = [float(c / s) if s > 0 else None for c, s in zip(correct, support)]
    out: dict = {"overall": float(correct.sum() / support.sum()) if support.sum() > 0 else None}
    for group, idx in class_groups(train_counts).items():
        vals = [per_class[i] for i in idx if per_class[i] is not None]
        out[group] = float(np.mean(vals)) if vals else None
    out["per_class"] = per_class
    return out
