"""The one shape every data source returns: uint8 images [N, H, W, C], int64 labels [N], class names, counts."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ltaug.data.longtail import class_groups


class Labelled:
    """What every labelled set (images, features, a generator's training data) derives from `labels` [N] and
    `classes` [C]: its size, its number of classes and its per-class counts."""

    labels: np.ndarray
    classes: list[str]

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def counts(self) -> list[int]:
        """Items per class, indexed by label."""
        return np.bincount(self.labels, minlength=self.num_classes).astype(int).tolist()


@dataclass
class LTDataset(Labelled):
    images: np.ndarray  # uint8 [N, H, W, C], C in {1, 3}
    labels: np.ndarray  # int64 [N], in [0, num_classes)
    classes: list[str]  # names, indexed by label
    name: str = ""
    meta: dict = field(default_factory=dict)  # provenance: source path, ratio, seed, ...

    def __post_init__(self) -> None:
        self.images = np.ascontiguousarray(self.images, dtype=np.uint8)
        self.labels = np.asarray(self.labels, dtype=np.int64)
        if self.images.ndim != 4 or self.images.shape[-1] not in (1, 3):
            raise ValueError(f"images must be [N, H, W, 1|3] uint8, got {self.images.shape}")
        if len(self.images) != len(self.labels):
            raise ValueError(f"{len(self.images)} images but {len(self.labels)} labels")

    @property
    def resolution(self) -> int:
        return int(self.images.shape[1])

    @property
    def channels(self) -> int:
        return int(self.images.shape[-1])

    @property
    def imbalance_ratio(self) -> float:
        nonzero = [c for c in self.counts if c > 0]
        return max(nonzero) / min(nonzero) if nonzero else float("nan")

    def groups(self) -> dict[str, list[int]]:
        """many / medium / few class indices from this set's counts (meaningful for a training set)."""
        return class_groups(self.counts)

    def subset(self, index: np.ndarray) -> "LTDataset":
        return LTDataset(self.images[index], self.labels[index], list(self.classes), self.name, dict(self.meta))
