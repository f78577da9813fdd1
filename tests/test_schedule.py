"""The noise schedule against golden numbers, diffusers' independent implementation, and its own identities."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ltaug.diffusion.schedule import NoiseSchedule


def test_linear_golden_values():
    s = NoiseSchedule.linear(1000)
    assert s.betas.dtype == torch.float64 and s.T == 1000
    assert s.betas[0].item() == pytest.approx(1e-4, abs=1e-15)
    assert s.betas[-1].item() == pytest.approx(0.02, abs=1e-15)
    # alpha_bar_t = prod_{s<=t} (1 - beta_s), 0-based t; the well-known DDPM figures
    assert s.alpha_bar[0].item() == pytest.approx(0.9999, abs=1e-15)
    assert s.alpha_bar[499].item() == pytest.approx(0.0785872428817782, rel=1e-12)
    assert s.alpha_bar[999].item() == pytest.approx(4.0358297653756754e-05, rel=1e-10)
    # an independent float64 evaluation of the product
    betas = np.linspace(1e-4, 0.02, 1000)
    np.testing.assert_allclose(s.alpha_bar.numpy(), np.cumprod(1 - betas), rtol=1e-13)


def test_matches_diffusers_scheduler():
    from diffusers import DDPMScheduler

    ref = DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear", beta_start=1e-4, beta_end=0.02)
    np.testing.assert_allclose(NoiseSchedule.linear().alpha_bar.numpy(), ref.alphas_cumprod.numpy(), rtol=2e-5)
    cos = DDPMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2")
    np.testing.assert_allclose(NoiseSchedule.cosine(1000).betas.numpy(), cos.betas.numpy(), rtol=1e-4, atol=1e-7)


def test_cosine_alpha_bar_formula():
    s = NoiseSchedule.cosine(100)
    f = lambda u: math.cos((u / 100 + 0.008) / 1.008 * math.pi / 2) ** 2  # noqa: E731
    for t in (0, 10, 50, 98):
        assert s.alpha_bar[t].item() == pytest.approx(f(t + 1) / f(0), rel=1e-9)


def test_q_sample_predict_x0_and_posterior_in_float32():
    s = NoiseSchedule.linear()
    g = torch.Generator().manual_seed(0)
    x0 = torch.rand(6, 3, 4, 4, generator=g) * 2 - 1
    eps = torch.randn(6, 3, 4, 4, generator=g)
    t = torch.tensor([0, 1, 10, 500, 998, 999])
    xt = s.q_sample(x0, t, eps)
    assert xt.dtype == torch.float32
    ab = s.alpha_bar[t].float().view(-1, 1, 1, 1)
    torch.testing.assert_close(xt, ab.sqrt() * x0 + (1 - ab).sqrt() * eps)
    x0d, epsd = x0.double(), eps.double()
    xtd = s.q_sample(x0d, t, epsd)  # float64 in, float64 math
    torch.testing.assert_close(s.predict_x0(xtd, t, epsd), x0d, atol=1e-9, rtol=0)
    # The posterior mean with the true x0 equals the eps-parameterized mean with the true eps (Ho et al. eq. 7, 11)
    mean, var = s.posterior(x0d, xtd, t)
    torch.testing.assert_close(mean, s.mean_from_eps(xtd, t, epsd), atol=1e-9, rtol=1e-9)
    torch.testing.assert_close(var.view(-1), s.sigma2(t, "small"), atol=1e-15, rtol=1e-12)
    assert var.view(-1)[0].item() == 0.0  # t = 0: x_{-1} = x_0 exactly


def test_kl_weight_large_and_small():
    s = NoiseSchedule.linear()
    t = torch.tensor([1, 250, 999])
    beta, alpha, ab = s.betas[t], s.alphas[t], s.alpha_bar[t]
    torch.testing.assert_close(s.kl_weight(t, "large"), beta / (2 * alpha * (1 - ab)))
    torch.testing.assert_close(s.kl_weight(t, "small"), beta ** 2 / (2 * s.sigma2(t, "small") * alpha * (1 - ab)))
