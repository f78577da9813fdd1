"""The noise-prediction network for feature vectors: a residual MLP with a time embedding and a class embedding
(with the learned null class), the vector counterpart of `ltaug.diffusion.unet`.

`net(x [N, D], t LongTensor or float [N], y LongTensor [N]) -> eps [N, D]`; `y == num_classes` is the null class
that classifier-free guidance needs. Like the UNet it knows nothing about diffusion. Each block adds the summed
time and class embedding to its hidden state (as the UNet's ResNet blocks do), so every layer is conditioned.
"""

from __future__ import annotations

import math

import torch
from torch import nn


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding of (possibly fractional) timesteps: [N] -> [N, dim] (cos half, sin half)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.float()[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=1)


class _Block(nn.Module):
    def __init__(self, width: int, dropout: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(width)
        self.fc1 = nn.Linear(width, width)
        self.emb = nn.Linear(width, width)
        self.norm2 = nn.LayerNorm(width)
        self.drop = nn.Dropout(dropout)
        self.fc2 = nn.Linear(width, width)
        nn.init.zeros_(self.fc2.weight)  # each block starts as the identity: a deep MLP trains from step 0
        nn.init.zeros_(self.fc2.bias)

    def forward(self, h: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        z = self.fc1(nn.functional.silu(self.norm1(h))) + self.emb(emb)
        return h + self.fc2(self.drop(nn.functional.silu(self.norm2(z))))


class ClassConditionalMLP(nn.Module):
    """eps-prediction for [N, dim] vectors with `num_classes + 1` class embeddings (the last is the null class)."""

    def __init__(self, dim: int, num_classes: int, width: int = 1024, depth: int = 4, dropout: float = 0.0):
        super().__init__()
        self.dim, self.num_classes, self.width, self.depth = dim, num_classes, width, depth
        self.inp = nn.Linear(dim, width)
        self.time = nn.Sequential(nn.Linear(width, width), nn.SiLU(), nn.Linear(width, width))
        self.label = nn.Embedding(num_classes + 1, width)
        self.blocks = nn.ModuleList(_Block(width, dropout) for _ in range(depth))
        self.out_norm = nn.LayerNorm(width)
        self.out = nn.Linear(width, dim)

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        emb = self.time(timestep_embedding(t, self.width)) + self.label(y)
        emb = nn.functional.silu(emb)
        h = self.inp(x)
        for block in self.blocks:
            h = block(h, emb)
        return self.out(nn.functional.silu(self.out_norm(h)))


def build_mlp(cfg, num_classes: int, dim: int) -> ClassConditionalMLP:
    """The network of `generator.mlp` (an MlpConfig) for `dim`-dimensional features."""
    return ClassConditionalMLP(dim, num_classes, width=cfg.width, depth=cfg.depth, dropout=cfg.dropout)
