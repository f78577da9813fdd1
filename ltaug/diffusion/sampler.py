"""The sampling loop: ancestral DDPM and DDIM with classifier-free guidance (method.md §1), and the same guidance loop
over any diffusers scheduler (DPM-Solver++, UniPC, Euler, ...: ltaug.diffusion.schedulers). No file I/O.

For "ddpm" / "ddim" the math of one step is the schedule's (`NoiseSchedule.ddpm_step` / `ddim_step`); this loop picks
the timesteps, computes the guided eps and hands each step its image's own noise. For the other samplers the step is
the diffusers scheduler's `step()`, on the training schedule (`make_scheduler`), a fresh scheduler per call (the
multistep ones keep the previous eps as state).

Guidance convention (the long-tail papers'): `eps~ = (1 + w) * eps(x_t, t, y) - w * eps(x_t, t, null)`, so `w = 0` is
plain conditional sampling and the "guidance scale" of other libraries is `s = 1 + w`. The conditional and the null
prediction come from ONE forward pass over the doubled batch `[x_t, x_t]` with labels `[y, null]`.

Reproducibility: image i draws all of its noise (x_T and every ancestral step) from its own
`torch.Generator().manual_seed(seeds[i])`, on the CPU, in a fixed order; the draws are then moved to the device. So an
image depends on its (label, seed) only, never on the batch it was drawn in or on the worker that drew it (up to the
float rounding of batched kernels, far below one uint8 level). A diffusers scheduler that draws noise in `step()`
(DDPMScheduler, DDIMScheduler with eta > 0, the ancestral ones) gets the list of the per-image generators, which
diffusers' `randn_tensor` draws from one image at a time; x_T is image i's first draw either way.
"""

from __future__ import annotations

from typing import Callable, Optional, Sequence

import numpy as np
import torch

from ltaug.config.synth import VARIANCES
from ltaug.diffusion.schedulers import NATIVE, make_scheduler, traits


def guidance_scale(w: float) -> float:
    """The scale `s = 1 + w` of libraries that write `eps_null + s * (eps_c - eps_null)`."""
    return 1.0 + float(w)


class _PerImageNoise:
    """One CPU generator per image seed; `draw()` returns [N, C, H, W] standard normals, image i from generator i."""

    def __init__(self, seeds: Sequence[int], shape: tuple[int, int, int], device: torch.device, dtype: torch.dtype):
        self.gens = [torch.Generator().manual_seed(int(s)) for s in seeds]
        self.shape, self.device, self.dtype = tuple(shape), device, dtype

    def draw(self) -> torch.Tensor:
        z = torch.stack([torch.randn(self.shape, generator=g) for g in self.gens])
        return z.to(device=self.device, dtype=self.dtype)


def _guided_eps(net: torch.nn.Module, xt: torch.Tensor, t: int | float, y: torch.Tensor, null: torch.Tensor,
                w: float) -> torch.Tensor:
    """eps~ = (1 + w) eps(x_t, t, y) - w eps(x_t, t, null): both branches in one forward of the doubled batch.
    t is an index; a fractional t (the midpoints of KDPM2) goes to the net as a float (the UNet's sinusoidal
    time embedding takes any real t)."""
    n = xt.shape[0]
    t_dtype = torch.long if float(t).is_integer() else torch.float32
    if w == 0.0:  # exactly the conditional prediction; the null branch would be multiplied by zero
        return net(xt, torch.full((n,), t, dtype=t_dtype, device=xt.device), y)
    tt = torch.full((2 * n,), t, dtype=t_dtype, device=xt.device)
    eps_c, eps_u = net(torch.cat([xt, xt]), tt, torch.cat([y, null])).chunk(2)
    return (1.0 + w) * eps_c - w * eps_u


def ddim_timesteps(T: int, steps: int) -> list[int]:
    """The `steps` 0-based indices visited by DDIM, descending, "trailing" spacing: they start at T-1 (the pure-noise
    end, where x_T is drawn) and are evenly spaced by T/steps, so steps=T visits every index (and is DDPM-exact)."""
    if not 1 <= steps <= T:
        raise ValueError(f"DDIM steps must be in [1, {T}], got {steps}")
    return [int(round(T - i * T / steps)) - 1 for i in range(steps)]


@torch.no_grad()
def sample(net: torch.nn.Module, schedule, y: torch.Tensor, seeds: Sequence[int], *, num_classes: int,
           sampler: str = "ddim", steps: int = 50, eta: float = 0.0, w: float = 0.0, variance: str = "large",
           device: str | torch.device = "cpu", shape: Optional[tuple[int, int, int]] = None, clip_x0: bool = False,
           dtype: torch.dtype = torch.float32, channels_last: bool = False, clamp: bool = True,
           callback: Optional[Callable[[int, int], None]] = None) -> torch.Tensor:
    """Draw one image per (label, seed).

    net: eps-prediction network `net(x [N,C,H,W], t LongTensor [N], y LongTensor [N]) -> eps [N,C,H,W]`, with label
        `num_classes` the learned null class; used as is (pass the EMA weights, in eval mode, on `device`).
    schedule: a `NoiseSchedule` (its `ddpm_step` / `ddim_step` make each step).
    y: LongTensor [N], labels in [0, num_classes). seeds: N ints; image i's noise comes from seeds[i] only.
    sampler: "ddpm" = ancestral, all T steps, sigma_t^2 = beta_t (variance "large") or beta~_t ("small");
        "ddim" = `steps` steps, eta = 0 deterministic, eta = 1 with steps = T is ancestral DDPM with beta~_t;
        any other alias ("dpm++", "unipc", "euler") or diffusers scheduler class name: that scheduler on the
        training schedule with `steps` inference steps (eta if its step takes one, variance for DDPMScheduler).
    w: guidance weight (>= 0), eps~ = (1 + w) eps_c - w eps_null; scale s = 1 + w.
    shape: (C, H, W) of one image; by default read from the net (`net.unet.config` of the ltaug UNet, or
        `net.in_channels` / `net.resolution`).
    clip_x0: clamp the predicted x0 to [-1, 1] at every step (off: the published DDPM/DDIM samplers do not).
    channels_last: feed the net NHWC-strided tensors (convert the net too: `net.to(memory_format=...)`); about 1.2x
        faster on CPU.
    clamp: clamp the result to [-1, 1] (images); off for standardized feature vectors, which have no such range
        (shape=(D,) then gives [N, D]).
    callback(done_steps, total_steps) is called after every step.
    Returns float tensor [N, C, H, W] in [-1, 1] on `device`.
    """
    info = None if sampler in NATIVE else traits(sampler)  # ValueError naming the valid samplers
    if variance not in VARIANCES:
        raise ValueError(f"variance must be one of {VARIANCES}, got {variance!r}")
    if w < 0:
        raise ValueError(f"guidance weight w must be >= 0, got {w}")
    if len(seeds) != len(y):
        raise ValueError(f"{len(y)} labels but {len(seeds)} seeds")
    if shape is None:
        try:
            cfg = net.unet.config if hasattr(net, "unet") else net  # a diffusers UNet2DModel keeps its config
            shape = (int(cfg.in_channels), int(cfg.sample_size), int(cfg.sample_size)) if hasattr(net, "unet") \
                else (int(net.in_channels), int(net.resolution), int(net.resolution))
        except AttributeError:
            raise ValueError("pass shape=(C, H, W): the network has no in_channels/resolution attributes") from None
    device = torch.device(device)
    y = torch.as_tensor(y, dtype=torch.long).to(device)
    if len(y) and (int(y.min()) < 0 or int(y.max()) >= num_classes):
        raise ValueError(f"labels must be in [0, {num_classes}), got {int(y.min())}..{int(y.max())}")
    null = torch.full_like(y, num_classes)
    noise = _PerImageNoise(seeds, shape, device, dtype)

    if len(y) == 0:
        return torch.empty((0, *shape), device=device, dtype=dtype)

    x = noise.draw()  # x_T ~ N(0, I)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    if info is not None:
        x = _scheduler_loop(net, schedule, info, x, y, null, noise, steps=steps, eta=eta, w=float(w),
                            variance=variance, clip_x0=clip_x0, callback=callback)
        return x.clamp(-1, 1) if clamp else x
    ts = list(range(schedule.T - 1, -1, -1)) if sampler == "ddpm" else ddim_timesteps(schedule.T, steps)
    for i, t in enumerate(ts):
        eps = _guided_eps(net, x, t, y, null, float(w))
        if sampler == "ddpm":
            x = schedule.ddpm_step(eps, t, x, noise.draw, variance=variance, clip_x0=clip_x0)
        else:
            t_prev = ts[i + 1] if i + 1 < len(ts) else -1
            x = schedule.ddim_step(eps, t, t_prev, x, noise.draw, eta=eta, clip_x0=clip_x0)
        if callback is not None:
            callback(i + 1, len(ts))
    return x.clamp(-1, 1) if clamp else x


def _scheduler_loop(net: torch.nn.Module, schedule, info, x: torch.Tensor, y: torch.Tensor, null: torch.Tensor,
                    noise: _PerImageNoise, *, steps: int, eta: float, w: float, variance: str, clip_x0: bool,
                    callback: Optional[Callable[[int, int], None]]) -> torch.Tensor:
    """The guidance loop over a fresh diffusers scheduler: x_T scaled by its init_noise_sigma (1 for the alpha-
    parameterized ones, sqrt(sigma_max^2 + 1) for Euler-type), scale_model_input before the net, step() after."""
    if not 1 <= steps <= schedule.T:
        raise ValueError(f"{info.name} steps must be in [1, {schedule.T}], got {steps}")
    if clip_x0 and not info.clip:
        raise ValueError(f"{info.name} has no x0 clipping (clip_sample); sample with clip_x0=False")
    sched = make_scheduler(schedule, info.name, variance=variance,
                           **({"clip_sample": True, "clip_sample_range": 1.0} if clip_x0 else {}))
    sched.set_timesteps(steps, device=x.device)
    step_kw: dict = {"return_dict": False}
    if info.eta:
        step_kw["eta"] = float(eta)
    if info.generator:
        step_kw["generator"] = noise.gens  # randn_tensor draws image i from gens[i]
    x = x * sched.init_noise_sigma
    ts = sched.timesteps
    for i, t in enumerate(ts):
        eps = _guided_eps(net, sched.scale_model_input(x, t), float(t), y, null, w)
        x = sched.step(eps.to(x.dtype), t, x, **step_kw)[0]  # the update arithmetic stays in x's dtype under amp
        if callback is not None:
            callback(i + 1, len(ts))
    return x


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """[N, C, H, W] float in [-1, 1] -> np.ndarray uint8 [N, H, W, C] (rounded to the nearest of 256 levels)."""
    x = ((x.detach().float().clamp(-1, 1) + 1) * 127.5).round()
    return x.to(torch.uint8).permute(0, 2, 3, 1).contiguous().cpu().numpy()
