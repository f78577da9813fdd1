"""Overlap diagnostics: where a reference classifier puts each class's synthetic images.

M[y, c] = share of the synthetic images generated for class y that the classifier assigns to class c (argmax), so
each row sums to 1 and the diagonal is the classifier's agreement with the requested label. Off-diagonal mass in the
columns of head ("many") classes is the leakage DiffROP aims to reduce: a tail class's samples drifting toward the
head classes it shares reverse kernels with (method.md §3).
"""

from __future__ import annotations

import os

import numpy as np
from matplotlib.figure import Figure

from ltaug.data.longtail import class_groups, group_of
from ltaug.data.plot import plain
from ltaug.errors import LtaugError
from ltaug.files import atomic_savefig


def overlap_matrix(probs: np.ndarray, labels: np.ndarray, num_classes: int, *, soft: bool = False) -> np.ndarray:
    """[C, C] float64: row y = distribution of predicted classes over the images labelled y.

    probs: float [N, C] class probabilities; labels: int [N] the class each image was generated for.
    `soft=True` averages the probabilities instead of counting argmax predictions. Rows of classes with no images
    are NaN.
    """
    probs = np.asarray(probs, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    if probs.ndim != 2 or probs.shape[1] != num_classes or len(probs) != len(labels):
        raise LtaugError(f"overlap needs probabilities [N, {num_classes}] and labels [N], got {probs.shape} and "
                         f"{labels.shape}: does the classifier have the generator's classes?")
    votes = probs if soft else np.eye(num_classes)[probs.argmax(axis=1)]
    sums = np.zeros((num_classes, num_classes))
    np.add.at(sums, labels, votes)
    n = np.bincount(labels, minlength=num_classes).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return sums / n[:, None]


def leakage_summary(matrix: np.ndarray, train_counts: list[int] | np.ndarray) -> dict:
    """Per group of the generated class (many / medium / few, from real training counts):

    - `agreement`: mean over its classes of M[y, y];
    - `leakage_into_head`: mean over its classes of sum_{c in many, c != y} M[y, c];
    - `leakage_other`: the rest of the off-diagonal mass.
    Also per class: agreement, leakage_into_head and the class it leaks into most.
    """
    m = np.asarray(matrix, dtype=np.float64)
    c = len(m)
    if len(train_counts) != c:
        raise LtaugError(f"{len(train_counts)} training counts for a {c}-class overlap matrix")
    groups = class_groups(train_counts)
    head = np.zeros(c, dtype=bool)
    head[groups["many"]] = True
    diag = np.diag(m)
    off = m.copy()
    np.fill_diagonal(off, 0.0)
    into_head = (off * head[None, :]).sum(axis=1)
    other = off.sum(axis=1) - into_head
    per_class = []
    names = group_of(train_counts)
    for y in range(c):
        row = off[y]
        top = int(np.nanargmax(row)) if np.isfinite(row).any() and np.nansum(row) > 0 else None
        per_class.append({"class": y, "group": names[y], "agreement": _f(diag[y]),
                          "leakage_into_head": _f(into_head[y]), "top_confusion": top,
                          "top_confusion_share": _f(row[top]) if top is not None else 0.0})
    out = {}
    for g, idx in groups.items():
        idx = [i for i in idx if np.isfinite(diag[i])]
        out[g] = {"classes": len(idx),
                  "agreement": _f(np.mean(diag[idx])) if idx else None,
                  "leakage_into_head": _f(np.mean(into_head[idx])) if idx else None,
                  "leakage_other": _f(np.mean(other[idx])) if idx else None}
    finite = np.isfinite(diag)
    out["overall"] = {"classes": int(finite.sum()), "agreement": _f(np.mean(diag[finite])) if finite.any() else None,
                      "leakage_into_head": _f(np.mean(into_head[finite])) if finite.any() else None,
                      "leakage_other": _f(np.mean(other[finite])) if finite.any() else None}
    out["per_class"] = per_class
    return out


def _f(x) -> float | None:
    x = float(x)
    return None if np.isnan(x) else x


def plot_overlap(matrix: np.ndarray, classes: list[str], path: str | os.PathLike, title: str = "") -> None:
    """Heat map of the overlap matrix (rows: generated class, head to tail; columns: predicted class)."""
    c = len(classes)
    size = min(4 + 0.35 * c, 24)
    fig = Figure(figsize=(size, size * 0.85))
    ax = fig.subplots()
    im = ax.imshow(np.nan_to_num(matrix, nan=0.0), cmap="viridis", vmin=0.0, vmax=1.0)
    if c <= 40:
        ax.set_xticks(range(c), [plain(x) for x in classes], rotation=90, fontsize=8)
        ax.set_yticks(range(c), [plain(x) for x in classes], fontsize=8)
    if c <= 12:
        for i in range(c):
            for j in range(c):
                v = matrix[i, j]
                if np.isfinite(v) and v >= 0.005:
                    ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=7,
                            color="black" if v > 0.5 else "white")
    ax.set_xlabel("predicted class (reference classifier)")
    ax.set_ylabel("generated class")
    ax.set_title(title or "share of each class's synthetic images classified as each class")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    fig.tight_layout()
    atomic_savefig(fig, path, dpi=110)
