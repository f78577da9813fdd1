"""The 2-D Gaussian toy of method.md §3: a narrow tail class N((0,0), I) under a broad head N((2,2), 1.5^2 I),
imbalance 100. Small enough to train in seconds, and it shows the failure DiffROP targets: with a small network,
plain DDPM's tail samples drift into the head's region. Used by tests/test_toy2d.py and benchmarks/compare_methods.py.

Labels: 0 = tail, 1 = head, 2 = the null class of classifier-free guidance.
"""

from __future__ import annotations

import torch
from torch import nn

from ltaug.config import DiffropConfig
from ltaug.diffusion.losses import LOSSES
from ltaug.diffusion.schedule import NoiseSchedule

T = 100
HEAD_MEAN, HEAD_STD, N_HEAD, N_TAIL = 2.0, 1.5, 2000, 20


class ToyMLP(nn.Module):
    """eps_theta(x [N,2], t [N], y [N] in {0 tail, 1 head, 2 null}) -> [N,2]; time and class embeddings added."""

    def __init__(self, hidden: int = 16):
        super().__init__()
        self.t_emb = nn.Embedding(T, hidden)
        self.y_emb = nn.Embedding(3, hidden)
        self.inp = nn.Linear(2, hidden)
        self.body = nn.Sequential(nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU(), nn.Linear(hidden, hidden),
                                  nn.SiLU(), nn.Linear(hidden, 2))

    def forward(self, x, t, y):
        return self.body(self.inp(x) + self.t_emb(t) + self.y_emb(y))


def toy_data(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """x [N_TAIL + N_HEAD, 2], y [N] (0 tail, 1 head)."""
    g = torch.Generator().manual_seed(seed)
    tail = torch.randn(N_TAIL, 2, generator=g)
    head = HEAD_MEAN + HEAD_STD * torch.randn(N_HEAD, 2, generator=g)
    return torch.cat([tail, head]), torch.cat([torch.zeros(N_TAIL), torch.ones(N_HEAD)]).long()


def true_tail(n: int = 2000, seed: int = 123) -> torch.Tensor:
    return torch.randn(n, 2, generator=torch.Generator().manual_seed(seed))


def train_toy(loss: str, margin: float = 0.02, steps: int = 800, seed: int = 0, data_seed: int = 0,
              gamma: float = 0.1, diffrop: dict | None = None) -> nn.Module:
    """Train a ToyMLP with one of the registered losses (ddpm, cbdm, diffrop, cbdm+diffrop); Adam, batch 256."""
    x, y = toy_data(data_seed)
    sched = NoiseSchedule.linear(T)
    torch.manual_seed(seed)
    net = ToyMLP()
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(seed + 1)
    # The form this toy documents (DiffROP's original form), pinned so that changed defaults leave it as is.
    section = DiffropConfig(**{"tau": "increasing", "negatives": "uniform", "stop_grad": "positive",
                               "pair_weight": "none", "t_max": 1.0, "margin": margin, "gamma": gamma,
                               **(diffrop or {})})
    for _ in range(steps):
        idx = torch.randint(0, len(x), (256,), generator=g)
        out = LOSSES[loss](net, sched, x[idx], y[idx], g, num_classes=2, p_uncond=0.1, counts=[N_TAIL, N_HEAD],
                           diffrop=section)
        opt.zero_grad()
        out["loss"].mean().backward()
        opt.step()
    return net.eval()


@torch.no_grad()
def sample_toy(net: nn.Module, label: int = 0, n: int = 2000, w: float = 0.0, seed: int = 5) -> torch.Tensor:
    """Ancestral DDPM (sigma_t^2 = beta_t) with guidance (1 + w) eps_label - w eps_null; returns [n, 2]."""
    s = NoiseSchedule.linear(T)
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 2, generator=g)
    cls, null = torch.full((n,), label, dtype=torch.long), torch.full((n,), 2, dtype=torch.long)
    for t in range(T - 1, -1, -1):
        tt = torch.full((n,), t, dtype=torch.long)
        eps = (1 + w) * net(x, tt, cls) - w * net(x, tt, null)
        x = s.mean_from_eps(x, tt, eps)
        if t > 0:
            x = x + s.betas[t].float().sqrt() * torch.randn(n, 2, generator=g)
    return x


def energy_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    """Two-sample energy distance 2 E|a-b| - E|a-a'| - E|b-b'| (0 iff the distributions are equal)."""
    return float(2 * torch.cdist(a, b).mean() - torch.cdist(a, a).mean() - torch.cdist(b, b).mean())
