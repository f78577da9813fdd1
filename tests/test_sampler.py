"""The samplers' math: golden timesteps, exact recovery with an oracle eps, DDIM(eta=1, steps=T) == DDPM(small),
guidance in one batched forward, and per-image seeds that make batch size irrelevant."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ltaug.diffusion.sampler import _guided_eps, ddim_timesteps, guidance_scale, sample, to_uint8


def _schedule(T: int):
    try:
        from ltaug.diffusion.schedule import NoiseSchedule

        return NoiseSchedule.linear(T=T, beta_1=1e-4, beta_T=min(0.02, 0.5 * T / 1000))  # scaled by 1000/T there
    except ImportError:  # the generator stage's schedule; same float64 buffers
        class _S:
            pass

        s = _S()
        s.betas = torch.linspace(1e-4 * 1000 / T, min(0.02 * 1000 / T, 0.5), T, dtype=torch.float64)
        s.alphas = 1 - s.betas
        s.alpha_bar = torch.cumprod(s.alphas, 0)
        return s


class TinyEps(torch.nn.Module):
    """A small real conditional eps-net: the exact eps of per-class Gaussians N(mu_y, 0.5^2 I) (so samples stay in
    range) plus a conv / label / time-embedding perturbation. Counts its forward calls."""

    def __init__(self, schedule, num_classes: int = 3, channels: int = 1, resolution: int = 8):
        super().__init__()
        torch.manual_seed(0)
        self.in_channels, self.resolution = channels, resolution
        self.alpha_bar = schedule.alpha_bar.float()
        self.mu = torch.rand(num_classes + 1, channels, resolution, resolution) - 0.5
        self.inp = torch.nn.Conv2d(channels, 16, 3, padding=1)
        self.emb_y = torch.nn.Embedding(num_classes + 1, 16)
        self.emb_t = torch.nn.Embedding(len(self.alpha_bar), 16)
        self.out = torch.nn.Conv2d(16, channels, 3, padding=1)
        self.calls = 0

    def forward(self, x, t, y):
        self.calls += 1
        ab = self.alpha_bar[t][:, None, None, None]
        gauss = (1 - ab).sqrt() * (x - ab.sqrt() * self.mu[y]) / (ab * 0.25 + 1 - ab)
        h = torch.relu(self.inp(x) + (self.emb_y(y) + self.emb_t(t))[:, :, None, None])
        return gauss + 0.2 * torch.tanh(self.out(h))


class Oracle(torch.nn.Module):
    """The exact eps for data that is one point x0*_y per class: eps = (x_t - sqrt(ab_t) x0*) / sqrt(1 - ab_t)."""

    def __init__(self, schedule, targets: torch.Tensor):
        super().__init__()
        self.alpha_bar = schedule.alpha_bar.float()
        self.targets = targets  # [num_classes + 1, C, H, W]
        self.in_channels, self.resolution = targets.shape[1], targets.shape[2]

    def forward(self, x, t, y):
        ab = self.alpha_bar[t][:, None, None, None]
        return (x - ab.sqrt() * self.targets[y]) / (1 - ab).sqrt()


def test_ddim_timesteps_golden():
    assert ddim_timesteps(1000, 50)[:3] == [999, 979, 959]
    assert ddim_timesteps(1000, 50)[-1] == 19
    assert len(ddim_timesteps(1000, 50)) == 50
    assert ddim_timesteps(10, 10) == list(range(9, -1, -1))
    assert ddim_timesteps(1000, 3) == [999, 666, 332]
    with pytest.raises(ValueError):
        ddim_timesteps(10, 11)


def test_to_uint8_golden():
    x = torch.tensor([-1.0, -2.0, 0.0, 1.0, 3.0, 0.5]).view(1, 1, 1, 6)
    assert to_uint8(x).tolist() == [[[[0], [0], [128], [255], [255], [191]]]]
    assert to_uint8(torch.zeros(2, 3, 4, 5)).shape == (2, 4, 5, 3)


@pytest.mark.parametrize("sampler,steps", [("ddim", 5), ("ddim", 40), ("ddpm", 0)])
def test_oracle_eps_recovers_the_class_point(sampler, steps):
    s = _schedule(40)
    g = torch.Generator().manual_seed(1)
    targets = torch.rand(4, 1, 4, 4, generator=g) * 1.6 - 0.8
    y = torch.tensor([0, 2, 1, 2])
    x = sample(Oracle(s, targets), s, y, [5, 6, 7, 8], num_classes=3, sampler=sampler, steps=steps or 1)
    torch.testing.assert_close(x, targets[y], atol=2e-4, rtol=0)


def test_ddim_eta1_all_steps_is_ddpm_small():
    s = _schedule(30)
    net = TinyEps(s)
    y, seeds = torch.tensor([0, 1, 2]), [11, 12, 13]
    a = sample(net, s, y, seeds, num_classes=3, sampler="ddim", steps=30, eta=1.0, w=0.5)
    b = sample(net, s, y, seeds, num_classes=3, sampler="ddpm", variance="small", w=0.5)
    c = sample(net, s, y, seeds, num_classes=3, sampler="ddpm", variance="large", w=0.5)
    torch.testing.assert_close(a, b, atol=1e-4, rtol=0)
    assert (a - c).abs().max() > 1e-2  # fixed-large adds more noise: a different sampler


def test_guidance_is_one_batched_forward_in_the_papers_convention():
    s = _schedule(20)
    net = TinyEps(s)
    x = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    y = torch.tensor([0, 1, 2, 0])
    null = torch.full_like(y, 3)
    w = 1.6
    t = torch.full((4,), 7)
    expect = (1 + w) * net(x, t, y) - w * net(x, t, null)
    net.calls = 0
    got = _guided_eps(net, x, 7, y, null, w)
    assert net.calls == 1
    torch.testing.assert_close(got, expect, atol=1e-5, rtol=1e-5)
    assert guidance_scale(w) == pytest.approx(2.6)
    net.calls = 0
    sample(net, s, y, [1, 2, 3, 4], num_classes=3, sampler="ddim", steps=6, w=w)
    assert net.calls == 6  # one forward per step, null branch included
    # w = 0 is plain conditional sampling; w changes the images
    a = sample(net, s, y, [1, 2, 3, 4], num_classes=3, steps=6, w=0.0)
    b = sample(net, s, y, [1, 2, 3, 4], num_classes=3, steps=6, w=2.0)
    assert (a - b).abs().max() > 1e-3
    with pytest.raises(ValueError, match="w must be >= 0"):
        sample(net, s, y, [1, 2, 3, 4], num_classes=3, w=-0.1)


@pytest.mark.parametrize("sampler", ["ddpm", "ddim"])
def test_one_seed_per_image_whatever_the_batch(sampler):
    s = _schedule(25)
    net = TinyEps(s)
    y = torch.tensor([0, 1, 2, 1, 0, 2, 1])
    seeds = [100, 101, 102, 103, 104, 105, 106]
    kw = dict(num_classes=3, sampler=sampler, steps=8, eta=0.5, w=0.8)
    full = sample(net, s, y, seeds, **kw)
    for bs in (1, 2, 3):
        parts = [sample(net, s, y[i:i + bs], seeds[i:i + bs], **kw) for i in range(0, len(seeds), bs)]
        torch.testing.assert_close(torch.cat(parts), full, atol=1e-5, rtol=0)
        assert np.array_equal(to_uint8(torch.cat(parts)), to_uint8(full))
    # NHWC strides are a speed option only
    cl = sample(net.to(memory_format=torch.channels_last), s, y, seeds, channels_last=True, **kw)
    torch.testing.assert_close(cl, full, atol=1e-5, rtol=0)
    # a permuted batch gives the same images, permuted
    perm = [3, 0, 6, 1, 5, 2, 4]
    shuffled = sample(net, s, y[perm], [seeds[i] for i in perm], **kw)
    torch.testing.assert_close(shuffled, full[perm], atol=1e-5, rtol=0)
    # different seeds, different images; same seed and label, same image
    other = sample(net, s, y, [seed + 1000 for seed in seeds], **kw)
    assert (other - full).abs().amax(dim=(1, 2, 3)).min() > 1e-2
