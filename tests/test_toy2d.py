"""The 2-D Gaussian toy of method.md §3: a narrow tail class N((0,0), I) under a broad head N((2,2), 1.5^2 I),
imbalance 100 (20 tail points). With a small network, plain DDPM's tail samples drift toward the head; DiffROP (the
defaults: gamma 0.1, tau increasing, uniform negatives, positive stop-gradient) with margin 0.02 lands the tail closer
to the true tail (energy distance).

Margins, documented: D is the mean over the 2 coordinates of the squared eps difference. Guidance multiplies the
distance between two classes' guided predictions by (1 + w)^2, so the margin that matches MARGIN for guided sampling
is MARGIN / (1 + w)^2 (0.005 at w = 1). In this toy, guidance alone already throws the tail past its true place (the
null class is mostly head), and a margin too large for the guidance (MARGIN itself at w = 1) pushes it further still.
"""

from __future__ import annotations

import pytest
import torch

from ltaug.toy2d import T, energy_distance, sample_toy, train_toy

MARGIN = 0.02  # works unguided (w = 0); MARGIN / (1 + w)^2 with guidance w
W = 1.0


def train(loss: str, margin: float = MARGIN):
    return train_toy(loss, margin=margin)


def sample_tail(net, w: float = 0.0):
    return sample_toy(net, label=0, w=w)


@pytest.fixture(scope="module")
def models():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    nets = {"ddpm": train("ddpm"), "diffrop": train("diffrop"),
            "diffrop_guided": train("diffrop", MARGIN / (1 + W) ** 2)}
    torch.set_num_threads(n)
    return nets


@pytest.fixture(scope="module")
def true_tail():
    from ltaug.toy2d import true_tail as draw

    return draw()


def test_diffrop_tail_is_closer_to_the_true_tail(models, true_tail):
    ddpm, rop = sample_tail(models["ddpm"]), sample_tail(models["diffrop"])
    e_ddpm, e_rop = energy_distance(ddpm, true_tail), energy_distance(rop, true_tail)
    print(f"w=0: energy distance to the true tail: ddpm {e_ddpm:.4f}, diffrop(m={MARGIN}) {e_rop:.4f}")
    assert float(ddpm.mean(0).sum()) > 0.5  # DDPM's tail has drifted toward the head at (2, 2)
    assert e_rop < 0.8 * e_ddpm
    assert float(rop.mean(0).norm()) < float(ddpm.mean(0).norm())  # the tail mean is nearer its true place (0, 0)


def test_guidance_scales_the_distance_by_one_plus_w_squared(models):
    net = models["diffrop"]
    g = torch.Generator().manual_seed(9)
    x, t = torch.randn(64, 2, generator=g), torch.randint(0, T, (64,), generator=g)
    with torch.no_grad():
        e = {c: net(x, t, torch.full((64,), c)) for c in (0, 1, 2)}
    guided = {c: (1 + W) * e[c] - W * e[2] for c in (0, 1)}
    d = ((e[0] - e[1]) ** 2).mean(1)
    d_guided = ((guided[0] - guided[1]) ** 2).mean(1)
    torch.testing.assert_close(d_guided, (1 + W) ** 2 * d, rtol=1e-4, atol=1e-7)


def test_margin_with_guidance(models, true_tail):
    """With guidance w = 1, the margin MARGIN / (1 + w)^2 beats MARGIN: the unadjusted margin pushes the tail
    further past its true place, away from the head."""
    adjusted = sample_tail(models["diffrop_guided"], w=W)
    unadjusted = sample_tail(models["diffrop"], w=W)
    e_adj, e_un = energy_distance(adjusted, true_tail), energy_distance(unadjusted, true_tail)
    print(f"w={W}: diffrop(m={MARGIN / (1 + W) ** 2}) {e_adj:.4f} (tail mean {adjusted.mean(0).tolist()}), "
          f"diffrop(m={MARGIN}) {e_un:.4f} (tail mean {unadjusted.mean(0).tolist()})")
    assert e_adj < e_un
    assert float(unadjusted.mean(0).sum()) < float(adjusted.mean(0).sum()) < 0  # past (0, 0), away from the head
