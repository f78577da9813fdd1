"""Which training images each optimizer step sees, as a function of (seed, step) only.

The sample stream is cut into "epochs" of N positions (N = training images). With `class_power` q = 1 (the
default), epoch e is a permutation of the training set seeded by (seed, e): plain shuffling. With q < 1, epoch e is
N draws with replacement, image i drawn with probability proportional to n_{y_i}^(q - 1), so that class c comes up
with probability proportional to n_c^q (0.5 = square root, 0 = class-balanced): tail images are seen more often,
head images less (resampling, the classic long-tail remedy, here for the generator). Position p of the stream is
sample p % N of epoch p // N, so a step's batch depends only on (seed, step), not on ranks, accumulation or resumes.
"""

from __future__ import annotations

import numpy as np
import torch


def mix_seed(*ints: int) -> int:
    """A 63-bit seed from a few integers (seed, rank, step, stream): FNV-1a over their 64-bit values."""
    h = 1469598103934665603
    for v in ints:
        h = ((h ^ (int(v) & 0xFFFFFFFFFFFFFFFF)) * 1099511628211) & 0xFFFFFFFFFFFFFFFF
    return h & 0x7FFFFFFFFFFFFFFF


def class_probabilities(counts: list[int], class_power: float) -> np.ndarray:
    """p(c) proportional to n_c^q over the classes that have images: [C] float64 summing to 1."""
    n = np.asarray(counts, dtype=np.float64)
    p = np.where(n > 0, np.power(np.maximum(n, 1.0), class_power), 0.0)
    return p / p.sum()


class BatchOrder:
    def __init__(self, labels: np.ndarray | torch.Tensor, seed: int, class_power: float = 1.0):
        labels = torch.as_tensor(np.asarray(labels), dtype=torch.long)
        self.n, self.seed, self.class_power = len(labels), int(seed), float(class_power)
        self._weights = None
        if self.class_power != 1.0:
            counts = torch.bincount(labels).double()
            self._weights = counts[labels].pow(self.class_power - 1.0)  # per image: n_y^(q-1)
        self._cache: dict[int, torch.Tensor] = {}

    def _epoch(self, epoch: int) -> torch.Tensor:
        if epoch not in self._cache:
            self._cache = {k: v for k, v in self._cache.items() if k >= epoch - 1}
            g = torch.Generator().manual_seed(mix_seed(self.seed, epoch))
            self._cache[epoch] = (torch.randperm(self.n, generator=g) if self._weights is None
                                  else torch.multinomial(self._weights, self.n, replacement=True, generator=g))
        return self._cache[epoch]

    def indices(self, start: int, count: int) -> torch.Tensor:
        """Training-set indices of stream positions [start, start + count): LongTensor [count]."""
        pos = torch.arange(start, start + count)
        epochs = pos // self.n
        out = torch.empty(count, dtype=torch.long)
        for e in epochs.unique().tolist():
            sel = epochs == e
            out[sel] = self._epoch(e)[pos[sel] % self.n]
        return out
