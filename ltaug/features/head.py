"""The classifier head of the feature-space mode: a linear layer retrained on (real + synthetic) backbone features
with any of the long-tail losses (ltaug.classify.losses), then read on the validation and test features.

Real-only, this is classifier re-training (cRT, Kang et al. 2020) on a frozen backbone; with synthetic features it is
LDMLR's step. Features are standardized with the real training features' mean and std (the head stores them), so
one learning rate suits every backbone. LDAM uses the cosine head (NormedLinear, logit scale s), as the image
classifier does. Every draw comes from `seed`, so a head is a function of its inputs.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch

from ltaug.classify.losses import make_loss
from ltaug.classify.metrics import confusion_matrix, group_accuracy
from ltaug.classify.models import NormedLinear
from ltaug.config import ClassifierConfig, FeaturesConfig
from ltaug.data.longtail import GROUPS


@dataclass
class Head:
    linear: torch.nn.Module
    mean: torch.Tensor  # [D] standardization of the inputs
    std: torch.Tensor
    logit_scale: float

    @torch.no_grad()
    def logits(self, x: np.ndarray, batch: int = 8192) -> np.ndarray:
        out = []
        for i in range(0, len(x), batch):
            xb = (torch.from_numpy(np.asarray(x[i:i + batch], dtype=np.float32)) - self.mean) / self.std
            out.append(self.linear(xb) * self.logit_scale)
        return torch.cat(out).numpy() if out else np.zeros((0, 0), np.float32)

    def predict(self, x: np.ndarray) -> np.ndarray:
        return self.logits(x).argmax(1)

    def state(self) -> dict:
        return {"linear": self.linear.state_dict(), "mean": self.mean, "std": self.std,
                "logit_scale": self.logit_scale}


def train_head(x: np.ndarray, y: np.ndarray, synthetic: np.ndarray, real_counts: list[int], cfg: ClassifierConfig,
               fcfg: FeaturesConfig, seed: int, *, mean: np.ndarray, std: np.ndarray) -> Head:
    """Train a linear head on features x [N, D] (rows with synthetic[i] carry cfg.synthetic_weight) with the loss of
    `cfg` (its prior / margins from the training counts, real + synthetic, as the image classifier does)."""
    n, d = x.shape
    c = len(real_counts)
    counts = np.bincount(y, minlength=c)
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    ldam = cfg.loss in ("ldam", "ldam_drw")
    linear = NormedLinear(d, c) if ldam else torch.nn.Linear(d, c)
    scale = cfg.ldam_s if ldam else 1.0
    mean_t, std_t = torch.as_tensor(mean, dtype=torch.float32), torch.as_tensor(std, dtype=torch.float32)
    xs = (torch.from_numpy(np.asarray(x, dtype=np.float32)) - mean_t) / std_t
    ys = torch.from_numpy(np.asarray(y, dtype=np.int64))
    w = torch.where(torch.from_numpy(np.asarray(synthetic, dtype=bool)), cfg.synthetic_weight, 1.0).float()
    loss_fn = make_loss(cfg, counts.tolist(), fcfg.head_epochs, "cpu", scale)
    opt = torch.optim.SGD(linear.parameters(), lr=fcfg.head_lr, momentum=0.9, weight_decay=fcfg.head_weight_decay)
    draw_p = None
    if cfg.sampler != "none":
        power = 1.0 if cfg.sampler == "class_balanced" else 0.5
        draw_p = torch.as_tensor(np.maximum(counts, 1), dtype=torch.float64)[ys] ** -power
    steps = max(1, math.ceil(n / fcfg.head_batch_size))
    total = fcfg.head_epochs * steps
    for epoch in range(fcfg.head_epochs):
        order = torch.multinomial(draw_p, n, replacement=True, generator=g) if draw_p is not None else \
            torch.randperm(n, generator=g)
        for k in range(steps):
            idx = order[k * fcfg.head_batch_size:(k + 1) * fcfg.head_batch_size]
            for group in opt.param_groups:  # cosine to 0 over all steps
                group["lr"] = fcfg.head_lr * 0.5 * (1 + math.cos(math.pi * (epoch * steps + k) / total))
            target = torch.nn.functional.one_hot(ys[idx], c).float()
            loss = (loss_fn(linear(xs[idx]), target, epoch) * w[idx]).mean()  # LDAM scales inside
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    linear.eval().requires_grad_(False)
    return Head(linear, mean_t, std_t, scale)


def head_accuracy(head: Head, x: np.ndarray, y: np.ndarray, real_counts: list[int]) -> dict:
    """{"overall", "many", "medium", "few", "per_class", "confusion"} of the head on features x with labels y."""
    cm = confusion_matrix(y, head.predict(x), len(real_counts))
    acc = group_accuracy(cm, real_counts)
    return {**{k: acc[k] for k in GROUPS}, "per_class": acc["per_class"], "confusion": cm.tolist()}


def fit_and_score(train: tuple, val: Optional[tuple], test: tuple, real_counts: list[int], cfg: ClassifierConfig,
                  fcfg: FeaturesConfig, seed: int, *, mean: np.ndarray, std: np.ndarray) -> tuple[Head, dict]:
    """Train a head on train = (x, y, synthetic) and score it on val / test = (x, y); returns (head, results)."""
    t0 = time.perf_counter()
    head = train_head(*train, real_counts, cfg, fcfg, seed, mean=mean, std=std)
    seconds = time.perf_counter() - t0
    acc = head_accuracy(head, *test, real_counts)
    val_acc = head_accuracy(head, *val, real_counts) if val is not None else None
    syn = np.asarray(train[2], dtype=bool)
    results = {"top1": acc["overall"], "accuracy": {k: acc[k] for k in GROUPS}, "per_class": acc["per_class"],
               "confusion": acc["confusion"],
               "val_accuracy": {k: val_acc[k] for k in GROUPS} if val_acc else None,
               "loss": cfg.loss, "sampler": cfg.sampler, "epochs": fcfg.head_epochs, "seed": seed,
               "train_counts_real": list(map(int, real_counts)),
               "train_counts_synthetic": np.bincount(np.asarray(train[1])[syn], minlength=len(real_counts)).tolist(),
               "train_time_s": seconds}
    return head, results
