"""The long-tailed profile (method.md §4): how many images each class keeps, which ones, and the reporting groups."""

from __future__ import annotations

import numpy as np

from ltaug.config.data import FEW_BELOW, GROUP_NAMES, GROUPS, MANY_ABOVE  # noqa: F401 (re-exported)
from ltaug.errors import LtaugError


def longtail_counts(n_max: int, num_classes: int, imbalance_ratio: float, profile: str = "exp") -> list[int]:
    """Images kept per class, class 0 the head.

    exp:  n_i = int(n_max * (1 / r) ** (i / (C - 1)))   (LDAM-DRW; CIFAR-10 at r=100 gives 5000 ... 50)
    step: the first half of the classes keep n_max, the rest int(n_max / r).
    """
    if imbalance_ratio < 1:
        raise LtaugError(f"imbalance ratio {imbalance_ratio}: must be >= 1 (1 = balanced, 100 = the standard)")
    if num_classes < 1 or n_max < 1:
        raise LtaugError(f"need at least one class and one image per class (got {num_classes} classes, n_max {n_max})")
    if profile == "exp":
        if num_classes == 1:
            return [int(n_max)]
        return [int(n_max * (1.0 / imbalance_ratio) ** (i / (num_classes - 1.0))) for i in range(num_classes)]
    if profile == "step":
        half = num_classes // 2
        return [int(n_max)] * half + [int(n_max / imbalance_ratio)] * (num_classes - half)
    raise LtaugError(f"long-tail profile '{profile}': expected exp or step")


def select_longtail(labels: np.ndarray, counts: list[int], seed: int = 0) -> np.ndarray:
    """Indices that keep counts[c] images of each class c: per class, shuffle its indices with `seed`, keep the first.

    The result lists class 0's picks first, then class 1's, ... (each in shuffled order).
    """
    labels = np.asarray(labels)
    rng = np.random.RandomState(seed)
    keep = []
    for c, n in enumerate(counts):
        idx = np.flatnonzero(labels == c)
        if len(idx) < n:
            raise LtaugError(f"class {c} has {len(idx)} images, fewer than the {n} the long-tail profile keeps")
        rng.shuffle(idx)
        keep.append(idx[:n])
    return np.concatenate(keep) if keep else np.zeros(0, dtype=np.int64)


def select_leftover(labels: np.ndarray, used: np.ndarray, per_class: int, seed: int = 0) -> np.ndarray:
    """A held-out split from the images a long-tailed subset leaves out: per class, up to `per_class` of the indices
    not in `used`, from a shuffle seeded by `seed` (the validation split). A class whose images the subset uses
    whole (the head class of the exponential profile) gets none."""
    labels = np.asarray(labels)
    free = np.ones(len(labels), dtype=bool)
    free[np.asarray(used, dtype=np.int64)] = False
    rng = np.random.RandomState(seed)
    picks = []
    for c in range(int(labels.max()) + 1 if len(labels) else 0):
        idx = np.flatnonzero(free & (labels == c))
        rng.shuffle(idx)
        picks.append(idx[:per_class])
    return np.concatenate(picks) if picks else np.zeros(0, dtype=np.int64)


def class_groups(counts: list[int] | np.ndarray) -> dict[str, list[int]]:
    """Class indices by group from training counts: many (> 100), medium (20..100), few (< 20)."""
    counts = [int(c) for c in counts]
    return {
        "many": [i for i, n in enumerate(counts) if n > MANY_ABOVE],
        "medium": [i for i, n in enumerate(counts) if FEW_BELOW <= n <= MANY_ABOVE],
        "few": [i for i, n in enumerate(counts) if n < FEW_BELOW],
    }


def group_of(counts: list[int] | np.ndarray) -> list[str]:
    """The group name of each class."""
    names = [""] * len(counts)
    for g, idx in class_groups(counts).items():
        for i in idx:
            names[i] = g
    return names
