"""A multi-class 2-D instrument that tells generator losses apart in seconds on one CPU thread.

Ten Gaussian classes with a long-tailed profile (400 down to 4 points, method.md §4's exponential profile) in one of
three layouts: `inside` (each tail class sits inside a head class's region), `between` (each tail class sits
between two head classes) and `separated` (every class on its own: the control, where no loss should matter).
A small eps-MLP with a class embedding (index C = the null class) is trained with the project's own loss functions
(ltaug.diffusion.losses, options from a `GeneratorConfig`, batches from `BatchOrder`, so `class_power` works as in
train-generator) and sampled with the schedule's own ancestral step under guidance `(1 + w) eps_c - w eps_null`.

Metrics, per class, against held-out samples of the true class: the energy distance, and the share of generated
samples that the true densities (equal priors) assign to another class ("leak"; the true distribution leaks too,
so it is compared between methods, never to zero).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ltaug.config.generator import GeneratorConfig
from ltaug.diffusion.batches import BatchOrder
from ltaug.diffusion.losses import get_loss, loss_options
from ltaug.diffusion.schedule import NoiseSchedule

LAYOUTS = ("inside", "between", "separated")
FEW = 20  # method.md §4: few-shot classes have fewer than 20 training images


def lt_counts(num_classes: int = 10, n_max: int = 400, ratio: float = 100.0) -> list[int]:
    """n_i = int(n_max (1/r)^(i/(C-1))): 400, 239, 143, 85, 51, 30, 18, 10, 6, 4 for the defaults."""
    return [int(n_max * (1.0 / ratio) ** (i / (num_classes - 1))) for i in range(num_classes)]


@dataclass
class Layout:
    """Class c is N(means[c], stds[c]^2 I) with counts[c] training points."""

    name: str
    means: np.ndarray  # [C, 2]
    stds: np.ndarray  # [C]
    counts: list[int]

    @property
    def num_classes(self) -> int:
        return len(self.counts)

    def sample(self, c: int, n: int, rng: np.random.Generator) -> np.ndarray:
        return self.means[c] + self.stds[c] * rng.standard_normal((n, 2))

    def train_set(self, data_seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        """x [N, 2] float32, y [N] long: counts[c] points of each class, drawn with `data_seed`."""
        rng = np.random.default_rng(data_seed)
        xs = [self.sample(c, n, rng) for c, n in enumerate(self.counts)]
        ys = [np.full(n, c) for c, n in enumerate(self.counts)]
        return torch.as_tensor(np.concatenate(xs), dtype=torch.float32), torch.as_tensor(np.concatenate(ys))

    def held_out(self, n: int, seed: int) -> list[np.ndarray]:
        """n fresh true samples per class (never used in training)."""
        rng = np.random.default_rng(10_000 + seed)
        return [self.sample(c, n, rng) for c in range(self.num_classes)]

    def region(self, x: np.ndarray) -> np.ndarray:
        """[n] the class whose true density is highest at x (equal priors)."""
        d2 = ((x[:, None, :] - self.means[None]) ** 2).sum(-1)
        logp = -d2 / (2 * self.stds[None] ** 2) - 2 * np.log(self.stds[None])
        return logp.argmax(1)


def make_layout(name: str, counts: list[int] | None = None) -> Layout:
    """The head half of the classes on a ring; the tail half placed inside, between, or away from the heads."""
    counts = counts or lt_counts()
    c = len(counts)
    h = (c + 1) // 2  # heads: the most frequent half (classes 0..h-1)
    tails = c - h
    if name == "separated":
        ang = 2 * math.pi * np.arange(c) / c
        means = 6.0 * np.stack([np.cos(ang), np.sin(ang)], 1)
        return Layout(name, means, np.full(c, 0.5), counts)
    ang = 2 * math.pi * np.arange(h) / h
    heads = 3.0 * np.stack([np.cos(ang), np.sin(ang)], 1)
    if name == "inside":  # tail j inside head j's region, half a head std from its centre
        tail_means = heads[:tails] + 0.5 * heads[:tails] / 3.0
        stds = np.concatenate([np.full(h, 1.0), np.full(tails, 0.3)])
    elif name == "between":  # tail j at the midpoint of heads j and j+1
        tail_means = 0.5 * (heads[np.arange(tails)] + heads[(np.arange(tails) + 1) % h])
        stds = np.concatenate([np.full(h, 0.8), np.full(tails, 0.3)])
    else:
        raise ValueError(f"unknown layout '{name}' ({', '.join(LAYOUTS)})")
    return Layout(name, np.concatenate([heads, tail_means]), stds, counts)


class EpsMLP(nn.Module):
    """eps_theta(x [N,2], t [N], y [N] in [0, C], C = null) -> [N,2]: x, time and class embeddings summed, then an
    MLP; `hidden` 64 is enough for ten classes and still trains in seconds."""

    def __init__(self, num_classes: int, T: int, hidden: int = 64):
        super().__init__()
        self.t_emb = nn.Embedding(T, hidden)
        self.y_emb = nn.Embedding(num_classes + 1, hidden)
        self.inp = nn.Linear(2, hidden)
        self.body = nn.Sequential(nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU(), nn.Linear(hidden, hidden),
                                  nn.SiLU(), nn.Linear(hidden, 2))

    def forward(self, x, t, y):
        return self.body(self.inp(x) + self.t_emb(t) + self.y_emb(y))


@dataclass
class TrainSpec:
    steps: int = 1500  # DDPM's few-shot distance has flattened by then (benchmarks/results/instrument_final_curve.md)
    batch: int = 1024  # the step cost is mostly per-op overhead: a large batch converges in fewer steps for free
    lr: float = 4e-3
    T: int = 100
    hidden: int = 64
    ema: float = 0.995


def train(layout: Layout, g: GeneratorConfig, seed: int, spec: TrainSpec = TrainSpec(),
          record_every: int = 0) -> tuple[nn.Module, list[tuple[int, nn.Module]]]:
    """Train an EpsMLP with `g.loss` (and g's cbdm / diffrop sections, class_power, p_uncond); returns the EMA net
    and, with record_every, EMA snapshots along the way (for the convergence curve). `seed` fixes the data, the
    init, the batches and the loss's draws: two losses trained with the same seed are a pair."""
    x, y = layout.train_set(seed)
    sched = NoiseSchedule.linear(spec.T)
    torch.manual_seed(seed)
    net = EpsMLP(layout.num_classes, spec.T, spec.hidden)
    ema = EpsMLP(layout.num_classes, spec.T, spec.hidden)
    ema.load_state_dict(net.state_dict())
    opt = torch.optim.Adam(net.parameters(), lr=spec.lr, foreach=True)
    params, ema_params = list(net.parameters()), list(ema.parameters())
    order = BatchOrder(y.numpy(), seed, g.class_power)
    gen = torch.Generator().manual_seed(seed + 1)
    loss_fn = get_loss(g.loss)
    margin, measured = _fixed_margin(g), []
    snaps = []
    for step in range(spec.steps):
        measuring = margin is None and g.uses_overlap
        if measuring and step >= g.diffrop.auto_steps:  # margin auto: the quantile of D measured without the term
            margin = float(np.quantile(np.asarray(measured), g.diffrop.auto_quantile))
            measuring = False
        idx = order.indices(step * spec.batch, spec.batch)
        kw = loss_options(g, layout.counts, margin=margin, measure_only=measuring)
        out = loss_fn(net, sched, x[idx], y[idx], gen, **kw)
        if measuring and step >= g.diffrop.auto_steps // 2:
            d = out["D"].detach()
            measured.extend(d[~torch.isnan(d)].tolist())
        opt.zero_grad(set_to_none=True)
        out["loss"].mean().backward()
        nn.utils.clip_grad_norm_(params, 1.0, foreach=True)
        opt.step()
        with torch.no_grad():
            decay = min(spec.ema, (1 + step) / (10 + step))
            torch._foreach_lerp_(ema_params, params, 1 - decay)
        if record_every and (step + 1) % record_every == 0:
            snap = EpsMLP(layout.num_classes, spec.T, spec.hidden)
            snap.load_state_dict(ema.state_dict())
            snaps.append((step + 1, snap.eval()))
    return ema.eval(), snaps


def _fixed_margin(g: GeneratorConfig):
    if not g.uses_overlap:
        return None
    return None if g.diffrop.margin == "auto" else float(g.diffrop.margin)


@torch.no_grad()
def sample(net: nn.Module, num_classes: int, n: int, w: float, seed: int, T: int = 100) -> list[np.ndarray]:
    """n samples per class: ancestral DDPM (`NoiseSchedule.ddpm_step`, sigma_t^2 = beta_t) with guidance
    (1 + w) eps_c - w eps_null, the conditional and null predictions in one batched forward."""
    sched = NoiseSchedule.linear(T)
    gen = torch.Generator().manual_seed(20_000 + seed)
    y = torch.arange(num_classes).repeat_interleave(n)
    m = len(y)
    x = torch.randn(m, 2, generator=gen)
    yy = torch.cat([y, torch.full_like(y, num_classes)])
    for t in range(T - 1, -1, -1):
        tt = torch.full((2 * m,), t, dtype=torch.long)
        e = net(torch.cat([x, x]), tt, yy)
        eps = (1 + w) * e[:m] - w * e[m:]
        x = sched.ddpm_step(eps, t, x, lambda: torch.randn(m, 2, generator=gen))
    return [a.numpy() for a in x.view(num_classes, n, 2)]


def energy_distance(a: np.ndarray, b: np.ndarray) -> float:
    """2 E|a-b| - E|a-a'| - E|b-b'| (0 iff the two distributions are equal)."""
    ta, tb = torch.as_tensor(a, dtype=torch.float64), torch.as_tensor(b, dtype=torch.float64)
    return float(2 * torch.cdist(ta, tb).mean() - torch.cdist(ta, ta).mean() - torch.cdist(tb, tb).mean())


def evaluate(net: nn.Module, layout: Layout, w: float, seed: int, n: int = 500, T: int = 100) -> dict:
    """Per-class energy distance to n held-out true samples and leak share, plus the few-shot means."""
    gen = sample(net, layout.num_classes, n, w, seed, T)
    ref = layout.held_out(n, seed)
    ed = [energy_distance(g, r) for g, r in zip(gen, ref)]
    leak = [float((layout.region(g) != c).mean()) for c, g in enumerate(gen)]
    few = [c for c, k in enumerate(layout.counts) if k < FEW]
    return {"ed": ed, "leak": leak, "ed_few": float(np.mean([ed[c] for c in few])),
            "leak_few": float(np.mean([leak[c] for c in few])), "ed_all": float(np.mean(ed))}


def generator_config(loss: str, class_power: float = 1.0, **diffrop) -> GeneratorConfig:
    """A checked `generator` section: the loss, class_power, and DiffROP options over the shipped defaults."""
    g = GeneratorConfig(loss=loss, class_power=class_power)
    if diffrop:
        g = dataclasses.replace(g, diffrop=dataclasses.replace(g.diffrop, **diffrop))
    return g
