"""The samplers from diffusers' schedulers (ltaug.diffusion.schedulers) in ltaug's guidance loop: DDIMScheduler and
DDPMScheduler reproduce the native ddim / ddpm loops, every alias keeps the one-seed-per-image rule (an image is the
same alone or in a batch), and `synth.sampler` accepts aliases and class names, names them in the identity and
refuses anything else with the list."""

from __future__ import annotations

import pytest
import torch
from test_sampler import TinyEps, _schedule  # per-class Gaussians' exact eps + a small net: samples stay inside [-1, 1]

from ltaug.config import SynthConfig
from ltaug.diffusion.sampler import sample
from ltaug.diffusion.schedulers import ALIASES, class_names, traits
from ltaug.errors import LtaugError

T = 40


@pytest.fixture(scope="module")
def net():
    return TinyEps(_schedule(T))


def _draw(net, sampler, y, seeds, **kw):
    x = sample(net, _schedule(T), torch.tensor(y), seeds, num_classes=3, w=0.7, sampler=sampler, **kw)
    assert (x.abs() < 1).float().mean() > 0.3  # mostly not clamped: comparing saturated images would prove nothing
    return x


@pytest.mark.parametrize("eta", [0.0, 0.6])
def test_diffusers_ddim_is_the_native_ddim(net, eta):
    """Trailing spacing and alpha_bar_{-1} = 1: the same deterministic map; with eta > 0 the same per-image noise
    too (DDIMScheduler draws it from the list of generators). Measured: max |diff| < 1e-6 (float32 arithmetic)."""
    y, seeds = [0, 1, 2, 1], [5, 6, 7, 8]
    native = _draw(net, "ddim", y, seeds, steps=8, eta=eta)
    ours = _draw(net, "DDIMScheduler", y, seeds, steps=8, eta=eta)
    assert (native - ours).abs().max() < 1e-4


@pytest.mark.parametrize("variance", ["large", "small"])
def test_diffusers_ddpm_is_the_native_ddpm_with_the_same_noise(net, variance):
    """DDPMScheduler with all T steps draws its step noise (t > 0) from the same per-image generators in the same
    order as the native loop, so the images agree (measured: max |diff| < 1e-6)."""
    y, seeds = [2, 0], [11, 12]
    native = _draw(net, "ddpm", y, seeds, variance=variance)
    ours = _draw(net, "DDPMScheduler", y, seeds, steps=T, variance=variance)
    assert (native - ours).abs().max() < 1e-4
    other = _draw(net, "DDPMScheduler", y, seeds, steps=T, variance="small" if variance == "large" else "large")
    assert (other - ours).abs().max() > 1e-3  # the variance reaches the scheduler


@pytest.mark.parametrize("sampler", [*ALIASES, "EulerAncestralDiscreteScheduler"])
def test_an_image_is_the_same_alone_or_in_a_batch(net, sampler):
    """One seed per image also for the steps' noise (the ancestral samplers get the per-image generators), and a
    fresh scheduler per call (the multistep ones keep state): batch of 4 == each image alone."""
    y, seeds = [0, 1, 2, 1], [21, 22, 23, 24]
    batch = _draw(net, sampler, y, seeds, steps=6, eta=0.5)
    alone = torch.cat([_draw(net, sampler, y[i:i + 1], seeds[i:i + 1], steps=6, eta=0.5) for i in range(4)])
    torch.testing.assert_close(batch, alone, atol=1e-4, rtol=0)
    other = _draw(net, sampler, y, [s + 100 for s in seeds], steps=6, eta=0.5)
    assert (other - batch).abs().amax(dim=(1, 2, 3)).min() > 1e-2  # x_T (and any step noise) comes from the seed


def test_the_ode_solvers_approach_the_same_solution_as_many_step_ddim(net):
    """dpm++, unipc and euler integrate the probability-flow ODE that deterministic DDIM discretizes: at 20 of 40
    steps they land near DDIM-40 (measured mean |diff|: unipc 0.02, dpm++ 0.03, euler 0.05; DDIM-6: 0.22)."""
    y, seeds = [0, 1, 2, 1], [21, 22, 23, 24]
    ref = _draw(net, "ddim", y, seeds, steps=T)
    coarse = (_draw(net, "ddim", y, seeds, steps=6) - ref).abs().mean()
    for sampler in ("dpm++", "unipc", "euler"):
        err = (_draw(net, sampler, y, seeds, steps=20) - ref).abs().mean()
        assert err < 0.08 and err < coarse / 3, (sampler, float(err), float(coarse))


def test_the_global_generator_plays_no_part(net):
    """dpm++ (multistep dpmsolver++), unipc and euler (s_churn 0) are deterministic maps of x_T; the ancestral
    ones draw only from the image's own generator."""
    for sampler in ("dpm++", "unipc", "euler", "EulerAncestralDiscreteScheduler"):
        torch.manual_seed(1)
        a = _draw(net, sampler, [1], [3], steps=5)
        torch.manual_seed(2)
        assert torch.equal(a, _draw(net, sampler, [1], [3], steps=5)), sampler


def test_sampler_names_in_the_recipe_and_the_identity():
    assert SynthConfig(sampler="dpm++").identity(T) == SynthConfig(sampler="DPMSolverMultistepScheduler").identity(T)
    ident = SynthConfig(sampler="dpm++", steps=20, eta=0.3, variance="small").identity(1000)
    assert ident["sampler"] == "DPMSolverMultistepScheduler" and ident["steps"] == 20
    assert ident["eta"] is None and ident["variance"] is None  # knobs DPM-Solver++ does not use
    assert SynthConfig(sampler="DDIMScheduler", eta=0.3).identity(1000)["eta"] == 0.3
    ddpm = SynthConfig(sampler="DDPMScheduler", steps=100, variance="small").identity(1000)
    assert ddpm["variance"] == "small" and ddpm["steps"] == 100
    assert SynthConfig(sampler="ddim").identity(1000)["sampler"] == "ddim"  # the native loops keep their names
    assert traits("unipc").name == "UniPCMultistepScheduler" and "EDMEulerScheduler" not in class_names()
    for bad in ("dpm", "UNet2DModel", "EDMEulerScheduler"):  # not a scheduler / not on a DDPM schedule
        with pytest.raises(LtaugError, match=r"--sampler .* \(recipe key 'synth.sampler'\) is not one of ddpm, "
                                             r"ddim, dpm\+\+, unipc, euler or a diffusers scheduler class name "
                                             r"\(DDIMScheduler, .*UniPCMultistepScheduler\)"):
            SynthConfig(sampler=bad)
    with pytest.raises(LtaugError, match="UniPCMultistepScheduler has no x0 clipping"):
        SynthConfig(sampler="unipc", clip_x0=True)
    with pytest.raises(ValueError, match="unknown sampler 'dpm'"):
        _draw(TinyEps(_schedule(T)), "dpm", [0], [0])
