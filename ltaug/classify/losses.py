"""Long-tail classification losses (method.md §6) as `train-classifier` configures them: `make_loss(cfg, counts)`.
The math lives in ltaug.losses (functions, and nn.Modules for other training loops, as timm's train.py).

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

import torch

from ltaug.losses import (  # noqa: F401  (the functions are part of this module's interface too)
    cross_entropy,
    effective_number_weights,
    ldam_ce,
    ldam_margins,
    logit_adjusted_ce,
)
from ltaug.losses import log_prior as log_prior_of


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
    log_prior = margins = weights = None
    tau = 1.0
    if cfg.loss in ("balanced_softmax", "logit_adjust"):
        log_prior = log_prior_of(counts).to(device)
        tau = 1.0 if cfg.loss == "balanced_softmax" else cfg.la_tau
    if cfg.loss in ("ldam", "ldam_drw"):
        margins = torch.as_tensor(ldam_margins(counts, cfg.ldam_max_m), dtype=torch.float32, device=device)
    drw = cfg.drw or cfg.loss == "ldam_drw"
    start = 0
    if cfg.loss == "cb" or drw:
        weights = torch.as_tensor(effective_number_weights(counts, cfg.cb_beta), dtype=torch.float32, device=device)
        start = 0 if cfg.loss == "cb" and not drw else int(cfg.drw_start * epochs)
    return LTLoss(cfg.loss, log_prior, tau, margins, logit_scale, weights, start)
