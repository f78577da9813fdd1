"""Long-tail classification losses (method.md §6): the math, as functions, and as `nn.Module`s for any training loop.

This module imports torch and numpy only (never ltaug's training loop, never timm), so a timm `train.py` user can
take a loss on its own:

    from ltaug.losses import BalancedSoftmaxLoss
    train_loss_fn = BalancedSoftmaxLoss(class_counts).to(device)     # in timm's train.py, instead of its CE
    loss = train_loss_fn(model(x), y)                                # y: labels [N], or mixup's soft targets [N, C]

class_counts are the training images per class (`np.bincount(dataset.targets)` for an ImageFolder).

- CrossEntropy:        -sum_c t_c log softmax(z)_c                                   (soft targets)
- ClassBalancedLoss:   ce x class weight 1 / E(n_c), E(n) = (1 - beta^n) / (1 - beta)   (Cui et al. 2019)
- BalancedSoftmaxLoss: ce on z + log pi, pi = training label frequencies                 (Ren et al. 2020)
- LogitAdjustedLoss:   ce on z + tau log pi                                              (Menon et al. 2021)
- LDAMLoss:            ce on s (z - t * m), m_c = max_m (n_min / n_c)^(1/4)              (Cao et al. 2019)
- drw_start_epoch (LogitAdjusted, LDAM, CrossEntropy): deferred re-weighting, the class-balanced weights switch on
  at that 0-based epoch; call `loss_fn.set_epoch(epoch)` at the start of each epoch.
At test time all of them predict with the raw logits z. `ltaug train-classifier` uses the same functions
(ltaug.classify.losses.make_loss).
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["CrossEntropy", "ClassBalancedLoss", "BalancedSoftmaxLoss", "LogitAdjustedLoss", "LDAMLoss",
           "cross_entropy", "logit_adjusted_ce", "ldam_ce", "effective_number_weights", "ldam_margins", "log_prior"]


def cross_entropy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-sample CE with soft targets: logits, target [N, C] -> [N]."""
    return -(target * F.log_softmax(logits.float(), dim=1)).sum(dim=1)


def logit_adjusted_ce(logits: torch.Tensor, target: torch.Tensor, log_prior: torch.Tensor,
                      tau: float = 1.0) -> torch.Tensor:
    """CE on z + tau log pi (tau = 1: balanced softmax). log_prior [C]. A uniform prior gives plain CE."""
    return cross_entropy(logits.float() + tau * log_prior, target)


def ldam_ce(logits: torch.Tensor, target: torch.Tensor, margins: torch.Tensor, s: float) -> torch.Tensor:
    """LDAM: subtract the class margin from the true-class logit, scale by s, CE. margins [C]."""
    return cross_entropy(s * (logits.float() - target * margins), target)


def effective_number_weights(counts: Sequence[int] | np.ndarray, beta: float) -> np.ndarray:
    """Class weights 1 / E(n_c), normalized to sum to the number of classes present; 0 for an empty class."""
    n = np.asarray(counts, dtype=np.float64)
    w = np.zeros_like(n)
    present = n > 0
    w[present] = (1.0 - beta) / (1.0 - np.power(beta, n[present]))
    return w * (present.sum() / w.sum()) if w.sum() > 0 else w


def ldam_margins(counts: Sequence[int] | np.ndarray, max_m: float) -> np.ndarray:
    """m_c proportional to n_c^(-1/4), the largest (rarest class) equal to max_m; 0 for an empty class."""
    n = np.asarray(counts, dtype=np.float64)
    m = np.zeros_like(n)
    present = n > 0
    m[present] = n[present] ** -0.25
    return m * (max_m / m.max()) if m.max() > 0 else m


def log_prior(counts: Sequence[int] | np.ndarray) -> torch.Tensor:
    """log pi_c of the training label frequencies [C] (an empty class counts as one image, so log pi stays finite)."""
    c = torch.as_tensor(np.maximum(np.asarray(counts, dtype=np.float64), 1.0), dtype=torch.float32)
    return torch.log(c / c.sum())


class _LTLoss(nn.Module):
    """Shared plumbing: integer labels or soft targets, optional class weights (from an epoch on), reduction."""

    def __init__(self, counts: Sequence[int], *, beta: float = 0.9999, weighted: bool = False,
                 drw_start_epoch: Optional[int] = None, reduction: str = "mean"):
        super().__init__()
        if reduction not in ("mean", "sum", "none"):
            raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
        counts = np.asarray(counts)
        if counts.ndim != 1 or len(counts) < 2 or (counts < 0).any():
            raise ValueError("counts: the training images per class, one non-negative number per class")
        self.num_classes, self.reduction = len(counts), reduction
        use = weighted or drw_start_epoch is not None
        weights = torch.as_tensor(effective_number_weights(counts, beta), dtype=torch.float32) if use else None
        self.register_buffer("class_weights", weights)
        self.weights_from_epoch = 0 if drw_start_epoch is None else int(drw_start_epoch)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """The 0-based epoch about to run (deferred re-weighting switches its weights on at drw_start_epoch)."""
        self.epoch = int(epoch)

    def per_sample(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Cross-entropy on soft targets [N]; the long-tail losses override it with their adjusted logits."""
        return cross_entropy(logits, target)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if target.dim() == 1:
            target = F.one_hot(target.long(), self.num_classes)
        target = target.to(torch.float32)
        loss = self.per_sample(logits, target)
        if self.class_weights is not None and self.epoch >= self.weights_from_epoch:
            loss = loss * (target @ self.class_weights)
        if self.reduction == "none":
            return loss
        return loss.sum() if self.reduction == "sum" else loss.mean()


class CrossEntropy(_LTLoss):
    """Plain CE with soft targets (with drw_start_epoch: CE + deferred re-weighting)."""


class ClassBalancedLoss(_LTLoss):
    """Class-balanced CE: every sample weighted by 1 / E(n_c) of its class (Cui et al. 2019), from the start."""

    def __init__(self, counts: Sequence[int], beta: float = 0.9999, reduction: str = "mean"):
        super().__init__(counts, beta=beta, weighted=True, reduction=reduction)


class LogitAdjustedLoss(_LTLoss):
    """Logit-adjusted CE: CE on z + tau log pi (Menon et al. 2021; tau = 1 is the balanced softmax)."""

    def __init__(self, counts: Sequence[int], tau: float = 1.0, *, beta: float = 0.9999,
                 drw_start_epoch: Optional[int] = None, reduction: str = "mean"):
        super().__init__(counts, beta=beta, drw_start_epoch=drw_start_epoch, reduction=reduction)
        self.tau = float(tau)
        self.register_buffer("log_prior", log_prior(counts))

    def per_sample(self, logits, target):
        return logit_adjusted_ce(logits, target, self.log_prior, self.tau)


class BalancedSoftmaxLoss(LogitAdjustedLoss):
    """Balanced softmax: CE on z + log pi (Ren et al. 2020)."""

    def __init__(self, counts: Sequence[int], *, beta: float = 0.9999, drw_start_epoch: Optional[int] = None,
                 reduction: str = "mean"):
        super().__init__(counts, 1.0, beta=beta, drw_start_epoch=drw_start_epoch, reduction=reduction)


class LDAMLoss(_LTLoss):
    """LDAM (Cao et al. 2019): CE on s (z - t * m), margins m_c = max_m (n_min / n_c)^(1/4). s = 30 for a cosine
    head (ltaug's CIFAR ResNets with normed_head=True: logits in [-1, 1]), 1 for a linear head (ltaug's rule);
    LDAM-DRW is drw_start_epoch = 0.8 x epochs (with set_epoch)."""

    def __init__(self, counts: Sequence[int], max_m: float = 0.5, s: float = 1.0, *, beta: float = 0.9999,
                 drw_start_epoch: Optional[int] = None, reduction: str = "mean"):
        super().__init__(counts, beta=beta, drw_start_epoch=drw_start_epoch, reduction=reduction)
        self.s = float(s)
        self.register_buffer("margins", torch.as_tensor(ldam_margins(counts, max_m), dtype=torch.float32))

    def per_sample(self, logits, target):
        return ldam_ce(logits, target, self.margins, self.s)
