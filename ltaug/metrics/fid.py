"""Fréchet Inception Distance, Kernel Inception Distance and Inception Score on feature / probability arrays.

FID (Heusel et al. 2017) between Gaussians N(mu1, S1), N(mu2, S2) fitted to Inception pool features:

    FID = ||mu1 - mu2||^2 + tr(S1) + tr(S2) - 2 tr( (S1 S2)^{1/2} )

clean-fid computes the last trace with scipy's `sqrtm`, which takes ~40 s for 2048 x 2048 on a small CPU. The trace
only needs the eigenvalues of S1 S2, which are those of the symmetric PSD matrix S1^{1/2} S2 S1^{1/2}, so two
`eigh` calls give the same number (tests check it against `cleanfid.fid.frechet_distance`). When S1 comes from
n < D samples, S1 = A^T A / (n-1) with A the centred features [n, D], and the non-zero eigenvalues of S1 S2 are those
of the n x n matrix A S2 A^T / (n-1): per-class FIDs with a few hundred images then cost milliseconds.

KID (Binkowski et al. 2018): the unbiased MMD^2 with the kernel k(x, y) = (x.y / D + 1)^3, averaged over random
subsets, as clean-fid's `kernel_distance` but with a seeded generator so that a number is reproducible.

IS (Salimans et al. 2016): exp( E_x KL(p(y|x) || p(y)) ) over 10 splits, mean and standard deviation.
"""

from __future__ import annotations

import numpy as np

from ltaug.errors import LtaugError


def feature_stats(feats: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean [D] and unbiased covariance [D, D] (float64) of features [N, D]; N >= 2."""
    feats = np.asarray(feats, dtype=np.float64)
    if feats.ndim != 2 or len(feats) < 2:
        raise LtaugError(f"FID needs at least 2 feature vectors to estimate a covariance, got {len(feats)}")
    return feats.mean(axis=0), np.cov(feats, rowvar=False)


def _psd_sqrt(s: np.ndarray) -> np.ndarray:
    lam, v = np.linalg.eigh((s + s.T) / 2)
    return (v * np.sqrt(np.clip(lam, 0, None))) @ v.T


def trace_sqrt_product(sigma1: np.ndarray, sigma2: np.ndarray) -> float:
    """tr((S1 S2)^{1/2}) for symmetric PSD S1, S2 [D, D]."""
    r1 = _psd_sqrt(sigma1)
    m = r1 @ sigma2 @ r1
    lam = np.linalg.eigvalsh((m + m.T) / 2)
    return float(np.sqrt(np.clip(lam, 0, None)).sum())


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """FID between two Gaussians (means [D], covariances [D, D]). Equal to clean-fid's value, without sqrtm."""
    mu1, mu2 = np.atleast_1d(mu1).astype(np.float64), np.atleast_1d(mu2).astype(np.float64)
    sigma1, sigma2 = np.atleast_2d(sigma1).astype(np.float64), np.atleast_2d(sigma2).astype(np.float64)
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape:
        raise LtaugError(f"FID statistics of different feature sizes: {mu1.shape} vs {mu2.shape}")
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * trace_sqrt_product(sigma1, sigma2))


def fid_from_feats(feats: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """FID of features [n, D] against reference statistics; uses the n x n form when n <= D (same value)."""
    feats = np.asarray(feats, dtype=np.float64)
    n, dim = feats.shape
    if n < 2:
        raise LtaugError(f"FID needs at least 2 images, got {n}")
    if n > dim:
        return frechet_distance(*feature_stats(feats), mu2, sigma2)
    mu1 = feats.mean(axis=0)
    a = (feats - mu1) / np.sqrt(n - 1)                  # S1 = a^T a
    m = a @ np.asarray(sigma2, np.float64) @ a.T       # [n, n], same non-zero spectrum as S1 S2
    tr_sqrt = float(np.sqrt(np.clip(np.linalg.eigvalsh((m + m.T) / 2), 0, None)).sum())
    diff = mu1 - mu2
    return float(diff @ diff + (a * a).sum() + np.trace(sigma2) - 2 * tr_sqrt)


def kid(feats1: np.ndarray, feats2: np.ndarray, num_subsets: int = 100, max_subset_size: int = 1000,
        seed: int = 0) -> tuple[float, float]:
    """KID between features [N1, D] and [N2, D]: (mean, std over subsets) of the unbiased polynomial MMD^2."""
    f1, f2 = np.asarray(feats1, np.float64), np.asarray(feats2, np.float64)
    m = min(len(f1), len(f2), max_subset_size)
    if m < 2:
        raise LtaugError(f"KID needs at least 2 images in each set, got {len(f1)} and {len(f2)}")
    dim = f1.shape[1]
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(num_subsets):
        x = f2[rng.choice(len(f2), m, replace=False)]
        y = f1[rng.choice(len(f1), m, replace=False)]
        a = (x @ x.T / dim + 1) ** 3 + (y @ y.T / dim + 1) ** 3
        b = (x @ y.T / dim + 1) ** 3
        values.append(((a.sum() - np.trace(a)) / (m - 1) - b.sum() * 2 / m) / m)
    return float(np.mean(values)), float(np.std(values))


def inception_score(probs: np.ndarray, splits: int = 10) -> tuple[float, float]:
    """IS from class probabilities [N, K] (rows sum to 1): mean and std of exp(mean KL) over `splits` chunks."""
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim != 2 or len(p) < splits:
        raise LtaugError(f"Inception Score with {splits} splits needs at least {splits} images, got {len(p)}")
    scores = []
    for part in np.array_split(p, splits):
        py = part.mean(axis=0, keepdims=True)
        kl = (part * (np.log(part + 1e-12) - np.log(py + 1e-12))).sum(axis=1)
        scores.append(np.exp(kl.mean()))
    return float(np.mean(scores)), float(np.std(scores))
