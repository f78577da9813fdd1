"""The noise schedule: data (float64 betas, alphas, alpha_bar) plus the closed-form math of the forward process.

Conventions (method.md §1): `t` is a LongTensor [N] of 0-based step indices in [0, T); `alpha_bar[t]` is the product
of `alpha[0..t]`, so `alpha_bar[0] = 1 - beta[0]`. Buffers stay float64 and are cast to the input's dtype and device
at each use, so the schedule is exact however the network runs.
"""

from __future__ import annotations

import math

import torch


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

    @staticmethod
    def _at(buf: torch.Tensor, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """buf[t] as [N, 1, 1, ...] in like's dtype/device, ready to broadcast against like [N, ...]."""
        v = buf[t.to("cpu")].to(device=like.device, dtype=like.dtype)
        return v.view(-1, *([1] * (like.ndim - 1)))

    # -------------------------------------------------------------------------------------------- the math

    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        """x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps (Ho et al. eq. 4)."""
        ab = self._at(self.alpha_bar, t, x0)
        return ab.sqrt() * x0 + (1 - ab).sqrt() * eps

    def predict_x0(self, xt: torch.Tensor, t: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        """x_0 = (x_t - sqrt(1 - alpha_bar_t) eps) / sqrt(alpha_bar_t): the inverse of q_sample."""
        ab = self._at(self.alpha_bar, t, xt)
        return (xt - (1 - ab).sqrt() * eps) / ab.sqrt()

    def posterior(self, x0: torch.Tensor, xt: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """q(x_{t-1} | x_t, x_0) = N(mean, var) (Ho et al. eq. 6-7); var is [N, 1, ...] (beta tilde)."""
        ab = self._at(self.alpha_bar, t, xt)
        ab_prev = self._at(self.alpha_bar_prev, t, xt)
        beta = self._at(self.betas, t, xt)
        alpha = self._at(self.alphas, t, xt)
        mean = (ab_prev.sqrt() * beta / (1 - ab)) * x0 + (alpha.sqrt() * (1 - ab_prev) / (1 - ab)) * xt
        var = beta * (1 - ab_prev) / (1 - ab)
        return mean, var

    def mean_from_eps(self, xt: torch.Tensor, t: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        """mu_theta = (x_t - beta_t / sqrt(1 - alpha_bar_t) eps) / sqrt(alpha_t) (method.md §1)."""
        ab = self._at(self.alpha_bar, t, xt)
        beta = self._at(self.betas, t, xt)
        alpha = self._at(self.alphas, t, xt)
        return (xt - beta / (1 - ab).sqrt() * eps) / alpha.sqrt()

    def sigma2_table(self, kind: str = "large") -> torch.Tensor:
        """sigma_t^2 for every t, float64 [T]: beta_t ('large', the CIFAR default) or beta tilde_t ('small')."""
        if kind == "large":
            return self.betas
        if kind == "small":
            return self.betas * (1 - self.alpha_bar_prev) / (1 - self.alpha_bar)
        raise ValueError(f"unknown variance '{kind}' (large or small)")

    def sigma2(self, t: torch.Tensor, kind: str = "large") -> torch.Tensor:
        """sigma_t^2 at the given steps, float64 [N] on t's device."""
        return self.sigma2_table(kind)[t.to("cpu")].to(t.device)

    def kl_weight(self, t: torch.Tensor, kind: str = "large") -> torch.Tensor:
        """lambda_t with KL[p(.|x_t,c_i) || p(.|x_t,c_j)] = lambda_t * sum_pixels ||eps_i - eps_j||^2 (method.md §3):
        lambda_t = beta_t^2 / (2 sigma_t^2 alpha_t (1 - alpha_bar_t)); float64 [N] on t's device."""
        tc = t.to("cpu")
        beta, alpha, ab = self.betas[tc], self.alphas[tc], self.alpha_bar[tc]
        lam = beta ** 2 / (2 * self.sigma2_table(kind)[tc] * alpha * (1 - ab))
        return lam.to(t.device)
