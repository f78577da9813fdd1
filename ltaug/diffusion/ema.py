"""Exponential moving average of the network weights, with a warmup so that short runs get a useful EMA.

At optimizer step s (counted from 0) the decay is `min(decay, (1 + s) / (10 + s))`: the EMA follows the raw weights
closely at first and settles at `decay` later (a 0.9999 EMA would otherwise still be mostly the random init after a
few thousand steps). Buffers are copied, not averaged.
"""

from __future__ import annotations

import copy

import torch
from torch import nn


class EMA:
    def __init__(self, net: nn.Module, decay: float):
        self.decay = float(decay)
        self.net = copy.deepcopy(net).eval().requires_grad_(False)

    def decay_at(self, step: int) -> float:
        return min(self.decay, (1.0 + step) / (10.0 + step))

    @torch.no_grad()
    def update(self, net: nn.Module, step: int) -> None:
        d = self.decay_at(step)
        ema_p = dict(self.net.named_parameters())
        for name, p in net.named_parameters():
            ema_p[name].lerp_(p.detach().to(ema_p[name].dtype), 1.0 - d)
        ema_b = dict(self.net.named_buffers())
        for name, b in net.named_buffers():
            ema_b[name].copy_(b)

    def state_dict(self) -> dict:
        return self.net.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.net.load_state_dict(state)
