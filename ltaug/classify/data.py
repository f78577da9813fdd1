"""The training set of a classifier: the real long-tailed images plus a chosen number of synthetic ones per class.

Synthetic sets are read by `ltaug.data.synthetic.load_synthetic`: a folder from `ltaug synthesize` (the images its
manifest lists), a folder of class sub-folders, or an npz in the shared/data format (`images`, `labels`,
`classes`). Classes are matched to the real dataset by name; a synthetic class the dataset does not have is an
error.

How many synthetic images class c gets (`mix_counts`), with n_c real and a_c available:
  ratio r:  min(a_c, round(r * n_c))          (0 = real only)
  fill:     min(a_c, max_k n_k - n_c)         (every class topped up to the head class's count)
Which ones: a seeded shuffle of each class's pool (all synthetic sets concatenated in the order given).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ltaug.data import LTDataset
from ltaug.data.synthetic import load_synthetic
from ltaug.errors import LtaugError


def mix_counts(real_counts: list[int], available: list[int], mode: str, ratio: float) -> list[int]:
    """Synthetic images to use per class (see the module docstring). ratio >= 0; mode ratio | fill."""
    if ratio < 0:
        raise LtaugError(f"--synthetic-ratio {ratio}: must be >= 0 (0 = real only, 1 = one synthetic per real image)")
    if mode == "ratio":
        want = [int(round(ratio * n)) for n in real_counts]
    elif mode == "fill":
        head = max(real_counts) if real_counts else 0
        want = [head - n for n in real_counts]
    else:
        raise LtaugError(f"--synthetic-mode '{mode}': expected ratio or fill")
    return [max(0, min(int(a), w)) for a, w in zip(available, want)]


def select_per_class(labels: np.ndarray, take: list[int], seed: int) -> np.ndarray:
    """Indices of `take[c]` items of each class c, from a seeded shuffle of that class (sorted, int64)."""
    rng = np.random.default_rng(seed)
    picks = []
    for c, k in enumerate(take):
        idx = np.flatnonzero(labels == c)
        if k > len(idx):
            raise ValueError(f"class {c}: asked for {k} of {len(idx)}")
        picks.append(rng.permutation(idx)[:k])
    return np.sort(np.concatenate(picks)).astype(np.int64) if picks else np.zeros(0, np.int64)


@dataclass
class TrainSet:
    """Real + selected synthetic images, in memory."""

    images: np.ndarray  # uint8 [N, H, W, C]
    labels: np.ndarray  # int64 [N]
    synthetic: np.ndarray  # bool [N], True for synthetic images
    classes: list[str]
    real_counts: list[int]
    synthetic_counts: list[int]  # used per class
    available_counts: list[int]  # synthetic images that existed per class
    sources: list[dict] = field(default_factory=list)

    @property
    def counts(self) -> list[int]:
        return [r + s for r, s in zip(self.real_counts, self.synthetic_counts)]


def build_train_set(real: LTDataset, synthetic_paths: list[str | os.PathLike], mode: str, ratio: float,
                    seed: int) -> TrainSet:
    """Load the synthetic sets, choose per class (mix_counts), and concatenate them after the real images."""
    mix_counts(real.counts, [0] * real.num_classes, mode, ratio)  # checks ratio / mode before any loading
    pools, sources = [], []
    for p in synthetic_paths:
        ds = load_synthetic(p, real.classes, real.resolution, real.channels)
        pools.append(ds)
        sources.append({"path": str(Path(p).expanduser().resolve()), "images": len(ds), "counts": ds.counts})
    zero = [0] * real.num_classes
    if not pools:
        return TrainSet(real.images, real.labels, np.zeros(len(real), bool), list(real.classes), real.counts, zero,
                        zero, sources)
    pool_images = np.concatenate([d.images for d in pools])
    pool_labels = np.concatenate([d.labels for d in pools])
    available = np.bincount(pool_labels, minlength=real.num_classes).tolist()
    take = mix_counts(real.counts, available, mode, ratio)
    idx = select_per_class(pool_labels, take, seed)
    images = np.concatenate([real.images, pool_images[idx]])
    labels = np.concatenate([real.labels, pool_labels[idx]])
    synthetic = np.concatenate([np.zeros(len(real), bool), np.ones(len(idx), bool)])
    return TrainSet(images, labels, synthetic, list(real.classes), real.counts, take, available, sources)
