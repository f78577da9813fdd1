"""The losses against direct evaluations of method.md's formulas on a fixed tiny network and fixed draws."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from ltaug.config import CbdmConfig, DiffropConfig
from ltaug.diffusion.losses import LOSSES, distance, draw_negatives, draw_y_prime, get_loss, head_classes, overlap
from ltaug.diffusion.schedule import NoiseSchedule
from ltaug.diffusion.unet import build_unet
from ltaug.errors import LtaugError

C = 4
COUNTS = [40, 12, 4, 1]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)  # the CI box is shared: one thread is faster than two oversubscribed ones
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def sched():
    return NoiseSchedule.linear()


def tiny_net(num_classes=C, seed=0):
    torch.manual_seed(seed)
    return build_unet("tiny", num_classes, 1, 8)


def batch(n=6, seed=1, num_classes=C):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 1, 8, 8, generator=g) * 2 - 1, torch.randint(0, num_classes, (n,), generator=g)


def grads(net):
    return [p.grad.clone() if p.grad is not None else torch.zeros_like(p) for p in net.parameters()]


def test_registry_and_unknown_loss():
    assert set(LOSSES) == {"ddpm", "cbdm", "diffrop", "cbdm+diffrop"}
    with pytest.raises(LtaugError, match="generator.loss 'nope'"):
        get_loss("nope")


def test_cbdm_equals_its_formula(sched):
    """L = ||eps - eps(x_t,y~)||^2 + tau t/T [||eps_y - sg eps_y'||^2 + 1/4 ||sg eps_y - eps_y'||^2]: value and grad."""
    net = tiny_net()
    x0, y = batch()
    t = torch.tensor([0, 5, 100, 500, 900, 999])
    eps = torch.randn(x0.shape, generator=torch.Generator().manual_seed(2))
    keep = torch.tensor([True, True, False, True, True, True])
    y_prime = torch.tensor([1, 1, 2, 3, 0, 3])
    out = LOSSES["cbdm"](net, sched, x0, y, None, num_classes=C, cbdm=CbdmConfig(tau=1.0), t=t, eps=eps, keep=keep,
                         y_prime=y_prime)
    out["loss"].sum().backward()
    g_loss = grads(net)

    net.zero_grad()
    ab = sched.alpha_bar[t].float().view(-1, 1, 1, 1)
    xt = ab.sqrt() * x0 + (1 - ab).sqrt() * eps
    y_in = torch.where(keep, y, torch.full_like(y, C))
    e_y = net(xt, t, y_in)
    e_yp = net(xt, t, y_prime)
    mse = lambda a, b: ((a - b) ** 2).mean(dim=(1, 2, 3))  # noqa: E731
    w = t.float() / 1000 * keep.float()
    direct = mse(eps, e_y) + w * (mse(e_y, e_yp.detach()) + 0.25 * mse(e_y.detach(), e_yp))
    direct.sum().backward()
    torch.testing.assert_close(out["loss"], direct, rtol=1e-5, atol=1e-6)
    assert out["cbdm"][2] == 0 and out["cbdm"][0] == 0  # dropped label; t = 0
    assert out["cbdm"][3] > 0
    for a, b in zip(g_loss, grads(net)):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_cbdm_y_prime_draws():
    g = torch.Generator().manual_seed(0)
    y = torch.zeros(20000, dtype=torch.long)
    freq = torch.bincount(draw_y_prime(y, C, "frequency", COUNTS, g), minlength=C).float() / len(y)
    torch.testing.assert_close(freq, torch.tensor(COUNTS).float() / sum(COUNTS), atol=0.01, rtol=0)
    uni = torch.bincount(draw_y_prime(y, C, "uniform", None, g), minlength=C).float() / len(y)
    torch.testing.assert_close(uni, torch.full((C,), 0.25), atol=0.015, rtol=0)
    assert freq[0] > 0.5  # y' = y (class 0) is allowed


def test_negative_draws():
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, C, (4000,), generator=g)
    for mode in ("uniform", "frequency", "head"):
        yn = draw_negatives(y, C, mode, COUNTS, g)
        assert yn.shape == (4000, 1) and bool((yn[:, 0] != y).all()), mode
    assert head_classes(COUNTS, C) == [0, 1]
    yn = draw_negatives(y, C, "head", COUNTS, g)[:, 0]
    assert set(yn[y >= 2].tolist()) == {0, 1} and set(yn[y == 0].tolist()) == {1, 2}  # head class: next in line
    yn = draw_negatives(y, C, "frequency", COUNTS, g)[:, 0]
    assert (yn[y == 3] == 0).float().mean() > 0.6  # tail images mostly meet the head as negative
    all_ = draw_negatives(y[:5], C, "all", COUNTS, g)
    assert all_.shape == (5, C - 1) and all(set(r.tolist()) == set(range(C)) - {int(v)} for r, v in zip(all_, y[:5]))


def test_label_dropout_per_batch_drops_all_or_nothing(sched):
    net = tiny_net()
    x0, y = batch(8)
    seen = set()
    for seed in range(12):
        out = LOSSES["diffrop"](net, sched, x0, y, torch.Generator().manual_seed(seed), num_classes=C, p_uncond=0.5,
                                label_dropout="batch", counts=COUNTS, diffrop=DiffropConfig(margin=1.0))
        dropped = torch.isnan(out["D"])
        assert bool(dropped.all()) or not bool(dropped.any())
        seen.add(bool(dropped.all()))
    assert seen == {True, False}


@pytest.mark.parametrize("loss", ["diffrop", "cbdm+diffrop"])
def test_diffrop_gamma_zero_is_ddpm(sched, loss):
    x0, y = batch()
    ref_net, net = tiny_net(), tiny_net()
    ref = LOSSES["ddpm" if loss == "diffrop" else "cbdm"](ref_net, sched, x0, y, torch.Generator().manual_seed(3),
                                                         num_classes=C, counts=COUNTS)
    out = LOSSES[loss](net, sched, x0, y, torch.Generator().manual_seed(3), num_classes=C, counts=COUNTS,
                       diffrop=DiffropConfig(gamma=0.0, margin=10.0, stop_grad="none"))
    assert out["overlap"].sum() > 0  # the term is computed, and weighted by zero
    torch.testing.assert_close(out["loss"], ref["loss"], rtol=0, atol=0)
    ref["loss"].mean().backward()
    out["loss"].mean().backward()
    for a, b in zip(grads(ref_net), grads(net)):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-9)


def test_diffrop_one_class_is_ddpm(sched):
    x0, y = batch(num_classes=1)
    ref = LOSSES["ddpm"](tiny_net(1), sched, x0, y, torch.Generator().manual_seed(4), num_classes=1)
    out = LOSSES["diffrop"](tiny_net(1), sched, x0, y, torch.Generator().manual_seed(4), num_classes=1,
                            diffrop=DiffropConfig(gamma=1.0, margin=10.0))
    torch.testing.assert_close(out["loss"], ref["loss"], rtol=0, atol=0)
    assert (out["overlap"] == 0).all()


def test_kl_distance_is_the_gaussian_kl(sched):
    g = torch.Generator().manual_seed(5)
    xt = torch.randn(5, 1, 4, 4, generator=g, dtype=torch.float64)
    e_i = torch.randn(5, 1, 4, 4, generator=g, dtype=torch.float64)
    e_j = torch.randn(5, 1, 4, 4, generator=g, dtype=torch.float64)
    t = torch.tensor([0, 3, 200, 600, 999])
    for variance in ("large", "small"):
        tt = t if variance == "large" else t[1:]  # beta tilde_0 = 0: no KL at t = 0 for the small variance
        n = len(tt)
        beta, alpha, ab = sched.betas[tt], sched.alphas[tt], sched.alpha_bar[tt]
        v = lambda a: a.view(-1, 1, 1, 1)  # noqa: E731
        mu_i = (xt[-n:] - v(beta / (1 - ab).sqrt()) * e_i[-n:]) / v(alpha.sqrt())
        mu_j = (xt[-n:] - v(beta / (1 - ab).sqrt()) * e_j[-n:]) / v(alpha.sqrt())
        sigma = v(sched.sigma2(tt, variance).sqrt()).expand_as(mu_i)
        kl = torch.distributions.kl_divergence(torch.distributions.Normal(mu_i, sigma),
                                               torch.distributions.Normal(mu_j, sigma)).flatten(1).sum(1)
        D = distance(e_i[-n:], e_j[-n:], tt, "kl", sched, variance)
        torch.testing.assert_close(D.double(), kl, rtol=1e-5, atol=0)


def _overlap_grads(sched, stop_grad, variant="hinge", margin=10.0):
    """Gradient reaching the positive prediction (a leaf) and the net (only through the negative branch)."""
    net = tiny_net()
    x0, y = batch()
    t = torch.tensor([100, 300, 500, 700, 900, 999])
    eps = torch.randn(x0.shape, generator=torch.Generator().manual_seed(6))
    xt = sched.q_sample(x0, t, eps)
    eps_pos = (eps + 0.1 * torch.randn(x0.shape, generator=torch.Generator().manual_seed(7))).requires_grad_(True)
    y_neg = ((y + 1) % C)[:, None]
    o = overlap(net, sched, xt, t, eps, eps_pos, y_neg, margin=margin, variant=variant, tau="constant",
                stop_grad=stop_grad)
    o["overlap"].sum().backward()
    g_pos = eps_pos.grad.clone() if eps_pos.grad is not None else torch.zeros_like(eps_pos)
    return g_pos, grads(net), o


@pytest.mark.parametrize("variant", ["hinge", "squared_hinge", "triplet", "plain"])
def test_stop_gradient_modes(sched, variant):
    norm = lambda gs: sum(float(g.abs().sum()) for g in gs)  # noqa: E731
    gp_pos, gn_pos, _ = _overlap_grads(sched, "positive", variant)
    gp_neg, gn_neg, _ = _overlap_grads(sched, "negative", variant)
    gp_none, gn_none, _ = _overlap_grads(sched, "none", variant)
    gp_both, gn_both, _ = _overlap_grads(sched, "both_sided", variant)
    assert float(gp_pos.abs().sum()) == 0 and norm(gn_pos) > 0  # only the negative branch moves
    assert float(gp_neg.abs().sum()) > 0 and norm(gn_neg) == 0  # only the true-label prediction moves
    assert float(gp_none.abs().sum()) > 0 and norm(gn_none) > 0
    # the same two gradients, each alone, add up to `none`; both_sided weighs the negative side by 1/4
    torch.testing.assert_close(gp_neg, gp_none)
    for a, b, c in zip(gn_pos, gn_none, gn_both):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-7)
        torch.testing.assert_close(c, 0.25 * b, rtol=1e-4, atol=1e-7)
    torch.testing.assert_close(gp_both, gp_none)


def test_hinge_has_no_gradient_past_the_margin(sched):
    gp, gn, o = _overlap_grads(sched, "none", "hinge", margin=0.0)
    assert float(o["overlap"].detach().abs().sum()) == 0 and float(gp.abs().sum()) == 0
    assert sum(float(g.abs().sum()) for g in gn) == 0
    assert float(o["active"].sum()) == 0


@pytest.mark.parametrize("stop_grad", ["positive", "none", "both_sided"])
def test_active_only_equals_the_two_pass_step(sched, stop_grad):
    """Recomputing the negative branch only for penalized pairs gives the plain two-pass loss and gradient."""
    x0, y = batch(8)
    results = []
    for active_only in (True, False):
        net = tiny_net()
        # every pair and every t carries the term (uniform negatives, no weights, no window): the case to compare
        section = DiffropConfig(gamma=1.0, stop_grad=stop_grad, active_only=active_only, tau="constant", margin=1.0,
                                negatives="uniform", pair_weight="none", t_max=1.0)
        kw = dict(num_classes=C, p_uncond=0.0)
        probe = LOSSES["diffrop"](net, sched, x0, y, torch.Generator().manual_seed(8), diffrop=section, **kw)
        margin = float(probe["D"].median())  # about half of the pairs are still penalized
        net.zero_grad()
        out = LOSSES["diffrop"](net, sched, x0, y, torch.Generator().manual_seed(8),
                                diffrop=dataclasses.replace(section, margin=margin), **kw)
        out["loss"].sum().backward()
        results.append((out, grads(net)))
    (a, ga), (b, gb) = results
    assert 0 < float(a["active"].mean()) < 1
    torch.testing.assert_close(a["loss"], b["loss"], rtol=1e-5, atol=1e-7)
    for u, v in zip(ga, gb):
        torch.testing.assert_close(u, v, rtol=1e-3, atol=1e-6)


def test_margin_none_measures_d_only(sched):
    net = tiny_net()
    x0, y = batch()
    out = LOSSES["diffrop"](net, sched, x0, y, torch.Generator().manual_seed(9), num_classes=C, p_uncond=0.0,
                            measure_only=True, counts=COUNTS, diffrop=DiffropConfig(gamma=1.0))
    assert (out["overlap"] == 0).all() and (out["D"] > 0).all()
    ref = LOSSES["ddpm"](net, sched, x0, y, torch.Generator().manual_seed(9), num_classes=C, p_uncond=0.0)
    torch.testing.assert_close(out["loss"], ref["loss"], rtol=0, atol=0)


@pytest.mark.parametrize("sets,match", [
    (["generator.diffrop.margin=-0.1"], "margin"),
    (["generator.diffrop.gamma=-1"], "gamma"),
    (["generator.diffrop.margin=big"], "margin"),
    (["generator.diffrop.variant=cosine"], "variant"),
    (["generator.loss=gan"], "generator.loss"),
])
def test_bad_recipe_values(sets, match):
    from ltaug.config import load_recipe

    with pytest.raises(LtaugError, match=match):
        load_recipe("mnist_lt", sets)


def test_margin_auto_parses():
    from ltaug.config import load_recipe

    assert load_recipe("mnist_lt", ["generator.diffrop.margin=auto"]).generator.diffrop.margin == "auto"
    assert load_recipe("mnist_lt", ["generator.diffrop.margin=2"]).generator.diffrop.margin == 2.0


def test_more_frequent_negatives_and_pair_weights(sched):
    """more_frequent draws only classes with more images (the most frequent class gets no term); rarity weights by
    1 - n_y / n_max; count caps how often a class is a negative at its own data share; the window masks t."""
    from ltaug.diffusion.losses import class_pair_weights, has_negatives

    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, C, (4000,), generator=g)
    yn = draw_negatives(y, C, "more_frequent", COUNTS, g)[:, 0]
    for c in range(1, C):
        assert set(yn[y == c].tolist()) == set(range(c))  # COUNTS are sorted: exactly the classes before c
    assert has_negatives(C, "more_frequent", COUNTS).tolist() == [False, True, True, True]
    rar = class_pair_weights(C, "rarity", "uniform", COUNTS)
    torch.testing.assert_close(rar[:, 0], torch.tensor([0.0, 0.7, 0.9, 0.975], dtype=torch.float64))
    cnt = class_pair_weights(C, "count", "uniform", COUNTS)[0]
    p = torch.tensor(COUNTS, dtype=torch.float64) / sum(COUNTS)
    q = (p[:, None] * (1 - torch.eye(C, dtype=torch.float64)) / (C - 1)).sum(0)
    torch.testing.assert_close(cnt, (p / q).clamp(max=1.0))
    assert cnt[0] == 1.0 and cnt[3] < 0.1  # the rarest class is rarely pushed as a negative

    net = tiny_net()
    x0, yb = batch()
    t = torch.tensor([0, 5, 100, 500, 900, 999])
    fixed = dict(num_classes=C, counts=COUNTS, t=t, keep=torch.ones(6, dtype=torch.bool), y_neg=(yb + 1)[:, None] % C)
    plain = DiffropConfig(margin=10.0, tau="constant", pair_weight="none", t_max=1.0, negatives="uniform")
    full = LOSSES["diffrop"](net, sched, x0, yb, torch.Generator().manual_seed(3), diffrop=plain, **fixed)
    win = LOSSES["diffrop"](net, sched, x0, yb, torch.Generator().manual_seed(3),
                            diffrop=dataclasses.replace(plain, t_min=0.1, t_max=0.7), **fixed)
    inside = (t >= 100) & (t < 700)
    torch.testing.assert_close(win["overlap"][inside], full["overlap"][inside])
    assert bool((win["overlap"][~inside] == 0).all()) and bool((full["overlap"][~inside] > 0).all())
    with pytest.raises(LtaugError, match="t_min"):
        DiffropConfig(t_min=0.8, t_max=0.5)
