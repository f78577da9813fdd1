"""Long-tail classification losses (method.md §6), as pure functions of logits and soft targets.

Every loss takes logits [N, C] float and targets [N, C] float (one-hot, or mixed by mixup; rows sum to 1) and
returns the per-sample loss [N], so the caller can weight samples (synthetic images, DRW) before averaging.

- ce:                -sum_c t_c log softmax(z)_c
- cb:                ce x class weight 1 / E(n_c), E(n) = (1 - beta^n) / (1 - beta)   (Cui et al. 2019)
- balanced_softmax:  ce on z + log pi, pi = training label frequencies                 (Ren et al. 2020)
- logit_adjust:      ce on z + tau log pi                                              (Menon et al. 2021)
- ldam:              ce on s (z - t * m), m_c = max_m (n_min / n_c)^(1/4)              (Cao et al. 2019)
- ldam_drw / drw:    the class weights above switch on at epoch drw_start x epochs (deferred re-weighting)
At test time all of them predict with the raw logits z.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F


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


def effective_number_weights(counts: list[int] | np.ndarray, beta: float) -> np.ndarray:
    """Class weights 1 / E(n_c), normalized to sum to the number of classes present; 0 for an empty class."""
    n = np.asarray(counts, dtype=np.float64)
    w = np.zeros_like(n)
    present = n > 0
    w[present] = (1.0 - beta) / (1.0 - np.power(beta, n[present]))
    return w * (present.sum() / w.sum()) if w.sum() > 0 else w


def ldam_margins(counts: list[int] | np.ndarray, max_m: float) -> np.ndarray:
    """m_c proportional to n_c^(-1/4), the largest (rarest class) equal to max_m; 0 for an empty class."""
    n = np.asarray(counts, dtype=np.float64)
    m = np.zeros_like(n)
    present = n > 0
    m[present] = n[present] ** -0.25
    return m * (max_m / m.max()) if m.max() > 0 else m


@dataclass
class LTLoss:
    """A configured loss: `loss(logits, target, epoch)` -> per-sample loss [N] (class weights included)."""

    name: str
    log_prior: torch.Tensor | None  # [C] for balanced_softmax / logit_adjust
    tau: float
    margins: torch.Tensor | None  # [C] for LDAM
    s: float
    class_weights: torch.Tensor | None  # [C] for cb / DRW
    weights_from_epoch: int  # class weights apply from this 0-based epoch on (0 = always)

    def __call__(self, logits: torch.Tensor, target: torch.Tensor, epoch: int) -> torch.Tensor:
        if self.log_prior is not None:
            loss = logit_adjusted_ce(logits, target, self.log_prior, self.tau)
        elif self.margins is not None:
            loss = ldam_ce(logits, target, self.margins, self.s)
        else:
            loss = cross_entropy(logits, target)
        if self.class_weights is not None and epoch >= self.weights_from_epoch:
            loss = loss * (target @ self.class_weights)
        return loss


def make_loss(cfg, counts: list[int], epochs: int, device, logit_scale: float = 1.0) -> LTLoss:
    """The loss named by `cfg.loss` (a ClassifierConfig) for training label counts [C] (real + synthetic).

    logit_scale: LDAM's s when the model has the cosine head, else 1 (margins then act on raw logits).
    """
    counts_t = torch.as_tensor(np.maximum(np.asarray(counts, dtype=np.float64), 1.0), dtype=torch.float32)
    log_prior = margins = weights = None
    tau = 1.0
    if cfg.loss in ("balanced_softmax", "logit_adjust"):
        log_prior = torch.log(counts_t / counts_t.sum()).to(device)
        tau = 1.0 if cfg.loss == "balanced_softmax" else cfg.la_tau
    if cfg.loss in ("ldam", "ldam_drw"):
        margins = torch.as_tensor(ldam_margins(counts, cfg.ldam_max_m), dtype=torch.float32, device=device)
    drw = cfg.drw or cfg.loss == "ldam_drw"
    start = 0
    if cfg.loss == "cb" or drw:
        weights = torch.as_tensor(effective_number_weights(counts, cfg.cb_beta), dtype=torch.float32, device=device)
        start = 0 if cfg.loss == "cb" and not drw else int(cfg.drw_start * epochs)
    return LTLoss(cfg.loss, log_prior, tau, margins, logit_scale, weights, start)
