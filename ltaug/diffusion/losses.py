"""Training losses as pure functions in a registry (method.md §1-§3).

Every loss has one signature, `fn(net, schedule, x0, y, generator, **kw) -> dict`:
  net        eps-prediction network `net(x, t, y) -> eps`; label `num_classes` is the null class
  schedule   a `NoiseSchedule`
  x0         float [N, C, H, W] in [-1, 1]; y LongTensor [N] in [0, num_classes)
  generator  a CPU `torch.Generator`: every random draw of the loss comes from it, in a fixed order
             (t, eps, label dropout, then y' for CBDM, then y_neg for DiffROP), and is moved to x0's device
and returns per-sample float32 tensors [N]: "loss" (what is averaged and minimized) and one entry per term ("dm",
"cbdm", "overlap", and the diagnostics "D" (NaN where the label was dropped) and "active"). The options are the
recipe's own sections: `cbdm` a `CbdmConfig`, `diffrop` a `DiffropConfig` (gamma, margin, variant, ...), so every
default lives in ltaug.config.generator; `loss_options(generator_config, counts)` builds the keyword arguments of
any loss. Keyword arguments a loss does not use are ignored, so a caller can pass one set of options to any loss.
Fixed draws can be passed in (`t`, `eps`, `keep`, `y_prime`, `y_neg`) to evaluate a loss on chosen values (tests do).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable, Optional

import torch

from ltaug.config.generator import STOP_GRADS, CbdmConfig, DiffropConfig, GeneratorConfig
from ltaug.errors import LtaugError

LossFn = Callable[..., dict]
LOSSES: dict[str, LossFn] = {}


def register(name: str) -> Callable[[LossFn], LossFn]:
    def deco(fn: LossFn) -> LossFn:
        if name in LOSSES:
            raise ValueError(f"loss '{name}' is registered already")
        LOSSES[name] = fn
        return fn

    return deco


def get_loss(name: str) -> LossFn:
    if name not in LOSSES:
        raise LtaugError(f"generator.loss '{name}': unknown; valid: {', '.join(LOSSES)}")
    return LOSSES[name]


# ----------------------------------------------------------------------------------------------- shared pieces


def mse_per_sample(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Mean over pixels of (a - b)^2, float32 [N]."""
    return (a.float() - b.float()).pow(2).flatten(1).mean(1)


def _draw_common(schedule, x0: torch.Tensor, y: torch.Tensor, generator: torch.Generator, num_classes: int,
                 p_uncond: float, label_dropout: str, t=None, eps=None, keep=None):
    """t uniform in [0, T), eps ~ N(0, I), keep = label not dropped; y_in = y or the null class (method.md §1)."""
    n, dev = x0.shape[0], x0.device
    if t is None:
        t = torch.randint(0, schedule.T, (n,), generator=generator)
    if eps is None:
        eps = torch.randn(x0.shape, generator=generator, dtype=torch.float32)
    if keep is None:
        if label_dropout == "sample":
            u = torch.rand(n, generator=generator)
        elif label_dropout == "batch":  # CBDM's code: one draw drops the labels of the whole batch
            u = torch.rand(1, generator=generator).expand(n)
        else:
            raise LtaugError(f"generator.label_dropout '{label_dropout}': expected sample or batch")
        keep = u >= p_uncond
    t, eps, keep = t.to(dev), eps.to(device=dev, dtype=x0.dtype), keep.to(dev)
    y_in = torch.where(keep, y, torch.full_like(y, num_classes))
    return t, eps, keep, y_in


def _class_weights(counts, num_classes: int, name: str) -> torch.Tensor:
    if counts is None or len(counts) != num_classes:
        raise ValueError(f"{name} needs the per-class training counts (counts=[...] of length {num_classes})")
    return torch.as_tensor(counts, dtype=torch.float64)


def draw_y_prime(y: torch.Tensor, num_classes: int, mode: str, counts, generator: torch.Generator) -> torch.Tensor:
    """CBDM's second label y' [N] (y' = y is possible): by training frequency, or uniform (method.md §2)."""
    n = y.shape[0]
    if mode == "frequency":
        w = _class_weights(counts, num_classes, "cbdm y_prime=frequency")
        yp = torch.multinomial(w, n, replacement=True, generator=generator)
    elif mode == "uniform":
        yp = torch.randint(0, num_classes, (n,), generator=generator)
    else:
        raise LtaugError(f"generator.cbdm.y_prime '{mode}': expected frequency or uniform")
    return yp.to(y.device)


def head_classes(counts, num_classes: int) -> list[int]:
    """The most frequent third of the classes (at least one), most frequent first: the `head` negatives."""
    order = sorted(range(num_classes), key=lambda c: (-counts[c], c))
    return order[: max(1, math.ceil(num_classes / 3))]


def negative_weights(num_classes: int, mode: str, counts=None) -> torch.Tensor:
    """[C, C] float64: row y is the (unnormalized) distribution of y_neg given y; the diagonal is zero."""
    c = num_classes
    off = 1.0 - torch.eye(c, dtype=torch.float64)
    if mode == "uniform":
        return off
    w = _class_weights(counts, c, f"diffrop negatives={mode}")
    if mode == "frequency":
        rows = w[None, :] * off
    elif mode == "head":
        # The head set without y; a head class itself draws from the head plus the next most frequent class.
        order = sorted(range(c), key=lambda k: (-counts[k], k))
        k = len(head_classes(counts, c))
        rows = torch.zeros(c, c, dtype=torch.float64)
        for yc in range(c):
            cand = [j for j in order if j != yc][:k]
            rows[yc, cand] = 1.0
    elif mode == "more_frequent":
        rows = (w[None, :] > w[:, None]).to(torch.float64)
    else:
        raise LtaugError(f"generator.diffrop.negatives '{mode}': expected uniform, frequency, head, all or "
                         "more_frequent")
    empty = rows.sum(1) == 0  # e.g. frequency when every other class has no image: fall back to uniform
    rows[empty] = off[empty]
    return rows


def draw_negatives(y: torch.Tensor, num_classes: int, mode: str, counts, generator: torch.Generator) -> torch.Tensor:
    """y_neg != y: LongTensor [N, K] (K = 1, or C - 1 for `all`)."""
    n, c = y.shape[0], num_classes
    if mode == "all":
        shift = torch.arange(1, c, device=y.device)
        return (y[:, None] + shift[None, :]) % c
    if mode == "uniform":  # y + r mod C with r uniform in [1, C): uniform over the other classes
        r = torch.randint(1, c, (n,), generator=generator).to(y.device)
        return ((y + r) % c)[:, None]
    rows = negative_weights(c, mode, counts)
    return torch.multinomial(rows[y.cpu()], 1, generator=generator).to(y.device)


def has_negatives(num_classes: int, mode: str, counts=None) -> torch.Tensor:
    """[C] bool: classes that get an overlap term at all (`more_frequent`: not the most frequent class)."""
    if mode != "more_frequent":
        return torch.ones(num_classes, dtype=torch.bool)
    w = _class_weights(counts, num_classes, "diffrop negatives=more_frequent")
    return (w[None, :] > w[:, None]).any(1)


def class_pair_weights(num_classes: int, mode: str, negatives: str, counts=None) -> torch.Tensor:
    """[C, C] float64: the weight of a (positive y, negative j) pair before the time window (pair_weight).

    none: 1. rarity: 1 - n_y / n_max, the positive's rarity. count: min(1, p_j / q_j), p_j = n_j / N the share of
    the denoising loss class j gets and q_j the share of the overlap terms in which it is the negative (its rows
    normalized as drawn), so that no class is pushed as a negative more often than it is denoised: with uniform
    negatives a 4-image class is otherwise a negative as often as a 400-image one."""
    c = num_classes
    ones = torch.ones(c, c, dtype=torch.float64)
    if mode == "none":
        return ones
    w = _class_weights(counts, c, f"diffrop pair_weight={mode}")
    if mode == "rarity":
        return (1.0 - w / w.max())[:, None] * ones
    if mode == "count":
        p = w / w.sum()
        if negatives == "all":
            rows = 1.0 - torch.eye(c, dtype=torch.float64)
        else:
            rows = negative_weights(c, negatives, counts)
        rows = rows * has_negatives(c, negatives, counts)[:, None]
        rows = rows / rows.sum(1, keepdim=True).clamp_min(1e-300)
        q = (p[:, None] * rows).sum(0)
        return torch.where(q > 0, (p / q.clamp_min(1e-300)).clamp(max=1.0), torch.ones_like(q))[None, :] * ones
    raise LtaugError(f"generator.diffrop.pair_weight '{mode}': expected none, rarity or count")


def tau_of_t(kind: str, tau0: float, t: torch.Tensor, schedule, variance: str = "large") -> torch.Tensor:
    """tau(t), float32 [N]: constant tau0; increasing tau0 t/T; decreasing tau0 (1 - t/T); kl tau0 lambda_t."""
    T = schedule.T
    tf = t.to(torch.float32)
    if kind == "constant":
        return torch.full_like(tf, tau0)
    if kind == "increasing":
        return tau0 * tf / T
    if kind == "decreasing":
        return tau0 * (1.0 - tf / T)
    if kind == "kl":
        return tau0 * schedule.kl_weight(t, variance).to(torch.float32)
    raise LtaugError(f"generator.diffrop.tau '{kind}': expected constant, increasing, decreasing or kl")


def distance(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor, kind: str, schedule,
             variance: str = "large") -> torch.Tensor:
    """D between two eps predictions, float32 [N]: `mse` mean over pixels of (a - b)^2, or `kl` the exact KL of the
    two reverse kernels, lambda_t * sum over pixels of (a - b)^2 (method.md §3)."""
    d2 = (a.float() - b.float()).pow(2).flatten(1)
    if kind == "mse":
        return d2.mean(1)
    if kind == "kl":
        return schedule.kl_weight(t, variance).to(torch.float32) * d2.sum(1)
    raise LtaugError(f"generator.diffrop.distance '{kind}': expected mse or kl")


def _term(variant: str, m: float, D, dpos=None, dneg=None) -> torch.Tensor:
    """The per-pair overlap term before tau(t) (method.md §3 table)."""
    if variant == "hinge":
        return torch.relu(m - D)
    if variant == "squared_hinge":
        return torch.relu(m - D).pow(2)
    if variant == "triplet":
        return torch.relu(dpos - dneg + m)
    if variant == "plain":
        return -torch.clamp(D, max=m)
    raise LtaugError(f"generator.diffrop.variant '{variant}': expected hinge, squared_hinge, triplet or plain")


def _active(variant: str, m: float, D, dpos, dneg) -> torch.Tensor:
    """Pairs whose term still has a gradient (the others are `m` apart already)."""
    if variant in ("hinge", "squared_hinge", "plain"):
        return D < m
    return dpos - dneg + m > 0  # triplet


def overlap(net, schedule, xt: torch.Tensor, t: torch.Tensor, eps: torch.Tensor, eps_pos: torch.Tensor,
            y_neg: torch.Tensor, *, margin: Optional[float], variant: str = "hinge", distance_kind: str = "mse",
            tau: str = "increasing", tau0: float = 1.0, stop_grad: str = "positive", active_only: bool = True,
            variance: str = "large", weight: Optional[torch.Tensor] = None) -> dict:
    """DiffROP's overlap term for M kept samples (method.md §3).

    xt, eps, eps_pos: [M, C, H, W] (eps_pos = the positive prediction eps_theta(x_t, t, y) that L_DM computed);
    t [M]; y_neg [M, K]; weight [M, K] multiplies each pair's term (pair_weight and the time window; None = 1).
    margin None = measure D only (for `margin: auto`), the term is then zero.
    Returns float32 [M] tensors: "overlap" (mean over the K negatives of tau(t) * term), "D" (mean over K), "active"
    (fraction of the K pairs with a gradient).
    """
    if stop_grad not in STOP_GRADS:
        raise LtaugError(f"generator.diffrop.stop_grad '{stop_grad}': expected {', '.join(STOP_GRADS)}")
    M, K = y_neg.shape
    if M == 0:
        z = eps_pos.new_zeros(0, dtype=torch.float32)
        return {"overlap": z, "D": z, "active": z}
    # Pairs: sample i against each of its K negatives, flattened to M*K.
    rep = lambda v: v.repeat_interleave(K, dim=0) if K > 1 else v  # noqa: E731
    xt_p, t_p, eps_p, pos_p, yn = rep(xt), rep(t), rep(eps), rep(eps_pos), y_neg.reshape(-1)
    m = 0.0 if margin is None else float(margin)
    triplet = variant == "triplet"

    def dist(a, b):
        return distance(a, b, t_p, distance_kind, schedule, variance)

    # The negative pass. Two-pass (stop_grad other than negative, active_only off): once, with a graph, for every
    # pair. Otherwise first without a graph for every pair (that decides which pairs are still penalized), then
    # with a graph for the active pairs only (active_only) or for none (negative: 3 + 1 passes).
    two_pass = margin is not None and stop_grad != "negative" and not active_only
    with torch.set_grad_enabled(two_pass and torch.is_grad_enabled()):
        neg_full = net(xt_p, t_p, yn)
    neg0 = neg_full.detach()
    with torch.no_grad():
        D0 = dist(pos_p, neg0)
        dpos0 = dist(eps_p, pos_p) if triplet else None
        dneg0 = dist(eps_p, neg0) if triplet else None
    tau_t = tau_of_t(tau, tau0, t_p, schedule, variance)
    if weight is not None:
        tau_t = tau_t * weight.reshape(-1).to(device=tau_t.device, dtype=tau_t.dtype)
    if margin is None:
        zero = torch.zeros(M * K, device=xt.device)
        return {"overlap": zero.view(M, K).mean(1), "D": D0.view(M, K).mean(1), "active": zero.view(M, K).mean(1)}
    act = _active(variant, m, D0, dpos0, dneg0) & (tau_t > 0)

    if two_pass:
        neg = neg_full
    elif stop_grad == "negative":
        neg = neg0
    else:
        # Recompute with a graph only the pairs that are still penalized; the others have no gradient anyway.
        idx = act.nonzero().squeeze(1)
        neg = neg0
        if idx.numel():
            neg = neg0.index_copy(0, idx, net(xt_p[idx], t_p[idx], yn[idx]).to(neg0.dtype))

    def pair_term(a, b):
        D = dist(a, b)
        dpos = dist(eps_p, a) if triplet else None
        dneg = dist(eps_p, b) if triplet else None
        return _term(variant, m, D, dpos, dneg)

    pos = pos_p
    if stop_grad == "positive":
        term = pair_term(pos.detach(), neg)
    elif stop_grad == "negative":
        term = pair_term(pos, neg.detach())
    elif stop_grad == "none":
        term = pair_term(pos, neg)
    else:  # both_sided: CBDM's form, 1/4 commitment weight on the negative side
        term = pair_term(pos, neg.detach()) + 0.25 * pair_term(pos.detach(), neg)
    per_pair = tau_t * term
    return {"overlap": per_pair.view(M, K).mean(1), "D": D0.view(M, K).mean(1),
            "active": act.float().view(M, K).mean(1)}


# ----------------------------------------------------------------------------------------------- the losses


@register("ddpm")
def ddpm_loss(net, schedule, x0, y, generator, *, num_classes: int, p_uncond: float = 0.1,
              label_dropout: str = "sample", t=None, eps=None, keep=None, **_) -> dict:
    """L_DM = mean over pixels of (eps - eps_theta(x_t, t, c~))^2, c~ = null with probability p_uncond."""
    t, eps, keep, y_in = _draw_common(schedule, x0, y, generator, num_classes, p_uncond, label_dropout, t, eps, keep)
    xt = schedule.q_sample(x0, t, eps)
    dm = mse_per_sample(net(xt, t, y_in), eps)
    return {"loss": dm, "dm": dm}


def _cbdm_term(net, schedule, xt, t, eps_pos, y_prime, keep, tau: float) -> torch.Tensor:
    """tau (t/T) [||eps_y - sg(eps_y')||^2 + 1/4 ||sg(eps_y) - eps_y'||^2] for kept samples, 0 elsewhere."""
    out = torch.zeros(xt.shape[0], device=xt.device)
    idx = keep.nonzero().squeeze(1)
    if idx.numel() == 0:
        return out
    e_y = eps_pos[idx]
    e_yp = net(xt[idx], t[idx], y_prime[idx])
    w = tau * t[idx].to(torch.float32) / schedule.T
    reg = mse_per_sample(e_y, e_yp.detach()) + 0.25 * mse_per_sample(e_y.detach(), e_yp)
    return out.index_copy(0, idx, w * reg)


def _margin(diffrop: DiffropConfig, measure_only: bool) -> Optional[float]:
    """The margin in force: None while `measure_only` (margin auto, before calibration), else the section's number."""
    if measure_only:
        return None
    if isinstance(diffrop.margin, str):
        raise LtaugError("generator.diffrop.margin auto is calibrated by the training loop: pass the calibrated "
                         "value (dataclasses.replace(diffrop, margin=m)) or measure_only=True")
    return float(diffrop.margin)


def _pair_weight(diffrop: DiffropConfig, num_classes: int, counts, y, y_neg, t, T: int) -> Optional[torch.Tensor]:
    """[M, K] float32 weight of each pair: pair_weight x the time window x (more_frequent) whether y has negatives;
    None when every weight is 1 (the defaults: the loss is then computed exactly as before these options)."""
    window = (diffrop.t_min, diffrop.t_max) != (0.0, 1.0)
    if diffrop.pair_weight == "none" and not window and diffrop.negatives != "more_frequent":
        return None
    w = class_pair_weights(num_classes, diffrop.pair_weight, diffrop.negatives, counts)
    w = w * has_negatives(num_classes, diffrop.negatives, counts)[:, None]
    out = w[y.cpu()[:, None], y_neg.cpu()].to(torch.float32)
    if window:
        frac = t.cpu().to(torch.float64) / T
        out = out * ((frac >= diffrop.t_min) & (frac < diffrop.t_max)).to(torch.float32)[:, None]
    return out.to(y.device)


def _diffrop_term(net, schedule, xt, t, eps, eps_pos, y, keep, generator, *, num_classes, counts, y_neg,
                  diffrop: DiffropConfig, measure_only: bool) -> dict:
    n = xt.shape[0]
    nan = torch.full((n,), float("nan"), device=xt.device)
    zero = torch.zeros(n, device=xt.device)
    if num_classes < 2:  # no other class to separate from: the overlap term vanishes (DDPM exactly)
        return {"overlap": zero, "D": nan, "active": zero}
    if y_neg is None:
        y_neg = draw_negatives(y, num_classes, diffrop.negatives, counts, generator)
    y_neg = y_neg.view(n, -1).to(xt.device)
    idx = keep.nonzero().squeeze(1)
    weight = _pair_weight(diffrop, num_classes, counts, y[idx], y_neg[idx], t[idx], schedule.T)
    o = overlap(net, schedule, xt[idx], t[idx], eps[idx], eps_pos[idx], y_neg[idx],
                margin=_margin(diffrop, measure_only), variant=diffrop.variant, distance_kind=diffrop.distance,
                tau=diffrop.tau, tau0=diffrop.tau0, stop_grad=diffrop.stop_grad, active_only=diffrop.active_only,
                weight=weight)
    return {"overlap": zero.index_copy(0, idx, o["overlap"]), "D": nan.index_copy(0, idx, o["D"]),
            "active": zero.index_copy(0, idx, o["active"])}


@register("cbdm")
def cbdm_loss(net, schedule, x0, y, generator, *, num_classes: int, p_uncond: float = 0.1,
              label_dropout: str = "sample", counts=None, cbdm: Optional[CbdmConfig] = None,
              t=None, eps=None, keep=None, y_prime=None, **_) -> dict:
    """L = L_DM + L_CBDM (method.md §2), the positive prediction shared by both terms."""
    cbdm = cbdm or CbdmConfig()
    t, eps, keep, y_in = _draw_common(schedule, x0, y, generator, num_classes, p_uncond, label_dropout, t, eps, keep)
    xt = schedule.q_sample(x0, t, eps)
    eps_pos = net(xt, t, y_in)
    dm = mse_per_sample(eps_pos, eps)
    if y_prime is None:
        y_prime = draw_y_prime(y, num_classes, cbdm.y_prime, counts, generator)
    cb = _cbdm_term(net, schedule, xt, t, eps_pos, y_prime.to(y.device), keep, cbdm.tau)
    return {"loss": dm + cb, "dm": dm, "cbdm": cb}


@register("diffrop")
def diffrop_loss(net, schedule, x0, y, generator, *, num_classes: int, p_uncond: float = 0.1,
                 label_dropout: str = "sample", counts=None, diffrop: Optional[DiffropConfig] = None,
                 measure_only: bool = False, t=None, eps=None, keep=None, y_neg=None, **_) -> dict:
    """L = L_DM + gamma * L_overlap (method.md §3), with gamma, margin, variant, distance, tau, negatives,
    pair_weight, the time window t_min/t_max, stop_grad and active_only from the `diffrop` section. measure_only:
    D is measured without the overlap term (margin auto, before calibration)."""
    diffrop = diffrop or DiffropConfig()
    t, eps, keep, y_in = _draw_common(schedule, x0, y, generator, num_classes, p_uncond, label_dropout, t, eps, keep)
    xt = schedule.q_sample(x0, t, eps)
    eps_pos = net(xt, t, y_in)  # for kept samples this is eps_theta(x_t, t, y): reused as the positive branch
    dm = mse_per_sample(eps_pos, eps)
    o = _diffrop_term(net, schedule, xt, t, eps, eps_pos, y, keep, generator, num_classes=num_classes,
                      counts=counts, y_neg=y_neg, diffrop=diffrop, measure_only=measure_only)
    return {"loss": dm + diffrop.gamma * o["overlap"], "dm": dm, **o}


@register("cbdm+diffrop")
def cbdm_diffrop_loss(net, schedule, x0, y, generator, *, num_classes: int, p_uncond: float = 0.1,
                      label_dropout: str = "sample", counts=None, cbdm: Optional[CbdmConfig] = None,
                      diffrop: Optional[DiffropConfig] = None, measure_only: bool = False, t=None, eps=None,
                      keep=None, y_prime=None, y_neg=None, **_) -> dict:
    """L = L_DM + L_CBDM + gamma * L_overlap."""
    cbdm, diffrop = cbdm or CbdmConfig(), diffrop or DiffropConfig()
    t, eps, keep, y_in = _draw_common(schedule, x0, y, generator, num_classes, p_uncond, label_dropout, t, eps, keep)
    xt = schedule.q_sample(x0, t, eps)
    eps_pos = net(xt, t, y_in)
    dm = mse_per_sample(eps_pos, eps)
    if y_prime is None:
        y_prime = draw_y_prime(y, num_classes, cbdm.y_prime, counts, generator)
    cb = _cbdm_term(net, schedule, xt, t, eps_pos, y_prime.to(y.device), keep, cbdm.tau)
    o = _diffrop_term(net, schedule, xt, t, eps, eps_pos, y, keep, generator, num_classes=num_classes,
                      counts=counts, y_neg=y_neg, diffrop=diffrop, measure_only=measure_only)
    return {"loss": dm + cb + diffrop.gamma * o["overlap"], "dm": dm, "cbdm": cb, **o}


def loss_options(g: GeneratorConfig, counts, *, margin: Optional[float] = None, measure_only: bool = False,
                 active_only: Optional[bool] = None) -> dict:
    """The keyword arguments of any registered loss from a recipe's `generator` section: its cbdm and diffrop
    sections as they are, with the margin replaced by `margin` (margin auto, once calibrated) and active_only by
    the loop's per-step choice when given."""
    diffrop = g.diffrop
    changes = {k: v for k, v in (("margin", margin), ("active_only", active_only)) if v is not None}
    if changes:
        diffrop = dataclasses.replace(diffrop, **changes)
    return dict(num_classes=len(counts), counts=list(counts), p_uncond=g.p_uncond, label_dropout=g.label_dropout,
                cbdm=g.cbdm, diffrop=diffrop, measure_only=measure_only)
