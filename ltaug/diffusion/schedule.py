"""The noise schedule: data (float64 betas, alphas, alpha_bar) plus the closed-form math of the forward process.

Conventions (method.md §1): `t` is a LongTensor [N] of 0-based step indices in [0, T) (training: one step per
sample), or one int for the whole batch (sampling); `alpha_bar[t]` is the product of `alpha[0..t]`, so
`alpha_bar[0] = 1 - beta[0]`, and `alpha_bar[-1] = 1` (x_{-1} is the clean image). Buffers stay float64: for a
tensor `t` they are cast to the input's dtype and device at each use; for an int `t` the coefficients are Python
floats computed in float64. The reverse steps (`ddpm_step`, `ddim_step`) are built on `predict_x0`, `posterior`,
`mean_from_eps` and `sigma2`, so the formulas the golden tests pin are the ones that make the images; the sampler
(sampler.py) only runs the loop, the guidance and the per-image noise.
"""

from __future__ import annotations

import math
from typing import Callable, Optional, Union

import torch

Step = Union[int, torch.Tensor]  # one int for the batch (sampling) or a LongTensor [N] (training)
Noise = Optional[Callable[[], torch.Tensor]]  # draws [N, C, H, W] standard normals; called only when needed


class NoiseSchedule:
    def __init__(self, betas: torch.Tensor, kind: str = "custom"):
        betas = torch.as_tensor(betas, dtype=torch.float64)
        if betas.ndim != 1 or len(betas) < 2 or not bool(((betas > 0) & (betas < 1)).all()):
            raise ValueError("betas must be a 1-D tensor of values in (0, 1) with at least 2 entries")
        self.kind = kind
        self.betas = betas
        self.alphas = 1.0 - betas
        self.alpha_bar = torch.cumprod(self.alphas, dim=0)
        # alpha_bar_{t-1}, with alpha_bar_{-1} = 1 (x_{-1} is the clean image).
        self.alpha_bar_prev = torch.cat([torch.ones(1, dtype=torch.float64), self.alpha_bar[:-1]])

    @property
    def T(self) -> int:
        return len(self.betas)

    # -------------------------------------------------------------------------------------------- constructors

    @classmethod
    def linear(cls, T: int = 1000, beta_1: float = 1e-4, beta_T: float = 0.02) -> "NoiseSchedule":
        """Ho et al. 2020: beta linear from beta_1 to beta_T (scaled by 1000/T so that other T keep the same shape)."""
        scale = 1000.0 / T
        return cls(torch.linspace(beta_1 * scale, beta_T * scale, T, dtype=torch.float64), "linear")

    @classmethod
    def cosine(cls, T: int = 1000, s: float = 0.008, max_beta: float = 0.999) -> "NoiseSchedule":
        """Nichol & Dhariwal 2021: alpha_bar(t) = cos^2((t/T + s) / (1 + s) * pi/2), betas clipped at max_beta."""
        f = lambda u: math.cos((u / T + s) / (1 + s) * math.pi / 2) ** 2  # noqa: E731
        betas = [min(1 - f(i + 1) / f(i), max_beta) for i in range(T)]
        return cls(torch.tensor(betas, dtype=torch.float64), "cosine")

    @classmethod
    def make(cls, kind: str, T: int) -> "NoiseSchedule":
        if kind == "linear":
            return cls.linear(T)
        if kind == "cosine":
            return cls.cosine(T)
        raise ValueError(f"unknown schedule '{kind}' (linear or cosine)")

    # -------------------------------------------------------------------------------------------- helpers

    def _at(self, buf: torch.Tensor, t: Step, like: torch.Tensor):
        """buf[t]: a Python float (float64 math) for an int t; for a tensor t, [N, 1, 1, ...] in like's dtype and
        device, ready to broadcast against like [N, ...]. t = -1 reads alpha_bar_prev[0] = 1 for int t only."""
        if isinstance(t, int):
            return float(buf[t])
        v = buf[t.to("cpu")].to(device=like.device, dtype=like.dtype)
        return v.view(-1, *([1] * (like.ndim - 1)))

    def alpha_bar_at(self, t: int) -> float:
        """alpha_bar_t for an int step, with alpha_bar_{-1} = 1 (the clean image)."""
        return 1.0 if t < 0 else float(self.alpha_bar[t])

    # -------------------------------------------------------------------------------------------- the math

    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        """x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps (Ho et al. eq. 4)."""
        ab = self._at(self.alpha_bar, t, x0)
        return ab.sqrt() * x0 + (1 - ab).sqrt() * eps

    def predict_x0(self, xt: torch.Tensor, t: Step, eps: torch.Tensor) -> torch.Tensor:
        """x_0 = (x_t - sqrt(1 - alpha_bar_t) eps) / sqrt(alpha_bar_t): the inverse of q_sample (Ho et al. eq. 15)."""
        ab = self._at(self.alpha_bar, t, xt)
        return (xt - (1 - ab) ** 0.5 * eps) / ab ** 0.5

    def eps_from_x0(self, xt: torch.Tensor, t: Step, x0: torch.Tensor) -> torch.Tensor:
        """eps = (x_t - sqrt(alpha_bar_t) x_0) / sqrt(1 - alpha_bar_t): the noise that x_0 implies."""
        ab = self._at(self.alpha_bar, t, xt)
        return (xt - ab ** 0.5 * x0) / (1 - ab) ** 0.5

    def posterior(self, x0: torch.Tensor, xt: torch.Tensor, t: Step) -> tuple[torch.Tensor, torch.Tensor]:
        """q(x_{t-1} | x_t, x_0) = N(mean, var) (Ho et al. eq. 6-7); var = beta tilde_t ([N, 1, ...] or a float)."""
        ab = self._at(self.alpha_bar, t, xt)
        ab_prev = self._at(self.alpha_bar_prev, t, xt)
        beta = self._at(self.betas, t, xt)
        alpha = self._at(self.alphas, t, xt)
        mean = (ab_prev ** 0.5 * beta / (1 - ab)) * x0 + (alpha ** 0.5 * (1 - ab_prev) / (1 - ab)) * xt
        var = (1 - ab_prev) / (1 - ab) * beta
        return mean, var

    def mean_from_eps(self, xt: torch.Tensor, t: Step, eps: torch.Tensor) -> torch.Tensor:
        """mu_theta = (x_t - beta_t / sqrt(1 - alpha_bar_t) eps) / sqrt(alpha_t) (Ho et al. eq. 11)."""
        ab = self._at(self.alpha_bar, t, xt)
        beta = self._at(self.betas, t, xt)
        alpha = self._at(self.alphas, t, xt)
        return (xt - beta / (1 - ab) ** 0.5 * eps) / alpha ** 0.5

    def sigma2_table(self, kind: str = "large") -> torch.Tensor:
        """sigma_t^2 for every t, float64 [T]: beta_t ('large', the CIFAR default) or beta tilde_t ('small')."""
        if kind == "large":
            return self.betas
        if kind == "small":
            return (1 - self.alpha_bar_prev) / (1 - self.alpha_bar) * self.betas
        raise ValueError(f"unknown variance '{kind}' (large or small)")

    def sigma2(self, t: Step, kind: str = "large"):
        """sigma_t^2 at the given steps: float64 [N] on t's device, or a Python float for an int t."""
        if isinstance(t, int):
            return float(self.sigma2_table(kind)[t])
        return self.sigma2_table(kind)[t.to("cpu")].to(t.device)

    def kl_weight(self, t: torch.Tensor, kind: str = "large") -> torch.Tensor:
        """lambda_t with KL[p(.|x_t,c_i) || p(.|x_t,c_j)] = lambda_t * sum_pixels ||eps_i - eps_j||^2 (method.md §3):
        lambda_t = beta_t^2 / (2 sigma_t^2 alpha_t (1 - alpha_bar_t)); float64 [N] on t's device."""
        tc = t.to("cpu")
        beta, alpha, ab = self.betas[tc], self.alphas[tc], self.alpha_bar[tc]
        lam = beta ** 2 / (2 * self.sigma2_table(kind)[tc] * alpha * (1 - ab))
        return lam.to(t.device)

    # -------------------------------------------------------------------------------------------- reverse steps

    def ddpm_step(self, eps: torch.Tensor, t: int, xt: torch.Tensor, noise: Noise = None, *,
                  variance: str = "large", clip_x0: bool = False) -> torch.Tensor:
        """One ancestral step x_t -> x_{t-1} ~ N(mu_theta, sigma_t^2 I) (Ho et al. Algorithm 2).

        mu_theta is eq. 11 (`mean_from_eps`), or, with clip_x0, the posterior mean (eq. 7) of the predicted x_0
        clamped to [-1, 1]; sigma_t^2 = `sigma2(t, variance)`. At t = 0 the mean itself is returned (no noise).
        """
        if clip_x0:
            mean, _ = self.posterior(self.predict_x0(xt, t, eps).clamp(-1, 1), xt, t)
        else:
            mean = self.mean_from_eps(xt, t, eps)
        if t == 0:
            return mean
        return mean + self.sigma2(t, variance) ** 0.5 * noise()

    def ddim_sigma(self, t: int, t_prev: int, eta: float) -> float:
        """DDIM's sigma_t (Song et al. eq. 16): eta * sqrt((1 - ab_prev) / (1 - ab_t) * (1 - ab_t / ab_prev))."""
        ab_t, ab_prev = self.alpha_bar_at(t), self.alpha_bar_at(t_prev)
        return eta * ((1 - ab_prev) / (1 - ab_t) * (1 - ab_t / ab_prev)) ** 0.5

    def ddim_step(self, eps: torch.Tensor, t: int, t_prev: int, xt: torch.Tensor, noise: Noise = None, *,
                  eta: float = 0.0, clip_x0: bool = False) -> torch.Tensor:
        """One DDIM step x_t -> x_{t_prev} (Song et al. eq. 12; t_prev = -1 is the clean image):
        x_prev = sqrt(ab_prev) x_0 + sqrt(1 - ab_prev - sigma^2) eps + sigma z, with x_0 = `predict_x0` (clamped,
        and eps recomputed from it, with clip_x0) and sigma = `ddim_sigma` (eta = 0: deterministic)."""
        ab_prev = self.alpha_bar_at(t_prev)
        x0 = self.predict_x0(xt, t, eps)
        if clip_x0:
            x0 = x0.clamp(-1, 1)
            eps = self.eps_from_x0(xt, t, x0)
        sigma = self.ddim_sigma(t, t_prev, eta)
        x = ab_prev ** 0.5 * x0 + max(1 - ab_prev - sigma ** 2, 0.0) ** 0.5 * eps
        if sigma > 0 and t_prev >= 0:
            x = x + sigma * noise()
        return x
