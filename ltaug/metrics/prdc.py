"""Improved precision / recall (Kynkäänniemi et al. 2019) plus density / coverage (Naeem et al. 2020), in blocks.

Each point gets a k-NN ball: radius r_i = distance to its k-th nearest neighbour in its own set (itself excluded).
With real features R [N, D] and fake features F [M, D] and d_ij = ||R_i - F_j||:

    precision = 1/M  sum_j  [exists i: d_ij <= r_real_i]          fake inside the real manifold
    recall    = 1/N  sum_i  [exists j: d_ij <= r_fake_j]          real inside the fake manifold (method.md §5)
    density   = 1/(kM) sum_j sum_i [d_ij <= r_real_i]
    coverage  = 1/N  sum_i  [min_j d_ij <= r_real_i]

A 50k x 50k distance matrix is 10 GB in float32, so no full matrix is ever held: rows are processed in blocks whose
size follows from `max_bytes`, and every statistic above is a running OR / count / min over blocks.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.spatial.distance import cdist

from ltaug.errors import LtaugError

# Bytes of block-sized float buffers alive at once per block element: the distance block, the matmul output it is
# built from, and one boolean/compare temporary (counted as float to stay conservative).
_BUFFERS_PER_ELEMENT = 3


def _rows_per_block(cols: int, itemsize: int, max_bytes: int) -> int:
    return max(1, int(max_bytes // (cols * itemsize * _BUFFERS_PER_ELEMENT)))


def _sq_norms(x):
    return (x * x).sum(dim=1)


def _dist_block(a, a_sq, b, b_sq):
    """Euclidean distances [len(a), len(b)] via ||a||^2 + ||b||^2 - 2 a.b (clamped: rounding can go below 0)."""
    d = a @ b.T
    d.mul_(-2).add_(a_sq[:, None]).add_(b_sq[None, :]).clamp_(min=0).sqrt_()
    return d


def knn_radii(x: np.ndarray, k: int = 5, *, device: str = "cpu", max_bytes: int = 2 << 30,
              dtype: str = "float32") -> np.ndarray:
    """Distance of every row of x [N, D] to its k-th nearest other row, float64 [N]. Needs N > k."""
    n = len(x)
    if n <= k:
        raise LtaugError(f"k-NN radii need more than k={k} points, got {n}: raise --num-samples")
    t = torch.as_tensor(np.asarray(x), dtype=getattr(torch, dtype), device=device)
    t_sq = _sq_norms(t)
    rows = _rows_per_block(n, t.element_size(), max_bytes)
    out = np.empty(n, dtype=np.float64)
    for s in range(0, n, rows):
        d = _dist_block(t[s:s + rows], t_sq[s:s + rows], t, t_sq)
        # The point itself sits at distance ~0 and is the first of the k+1 smallest.
        out[s:s + rows] = torch.topk(d, k + 1, dim=1, largest=False).values[:, k].double().cpu().numpy()
        del d
    return out


def prdc(real: np.ndarray, fake: np.ndarray, k: int = 5, *, device: str = "cpu", max_bytes: int = 2 << 30,
         dtype: str = "float32") -> dict[str, float]:
    """Precision, recall, density, coverage of fake features [M, D] against real features [N, D].

    `max_bytes` bounds the block buffers (about 2 GiB by default, enough for 50k x 50k); `dtype` is the arithmetic
    precision of the distances ("float32", or "float64" for bit-for-bit agreement with a dense float64 reference).
    Returns floats in [0, 1] (density can exceed 1).
    """
    real, fake = np.asarray(real), np.asarray(fake)
    if real.ndim != 2 or fake.ndim != 2 or real.shape[1] != fake.shape[1]:
        raise LtaugError(f"precision/recall needs two [N, D] feature arrays of equal D, got {real.shape} and "
                         f"{fake.shape}")
    r_real = knn_radii(real, k, device=device, max_bytes=max_bytes, dtype=dtype)
    r_fake = knn_radii(fake, k, device=device, max_bytes=max_bytes, dtype=dtype)

    tdt = getattr(torch, dtype)
    R = torch.as_tensor(real, dtype=tdt, device=device)
    F = torch.as_tensor(fake, dtype=tdt, device=device)
    R_sq, F_sq = _sq_norms(R), _sq_norms(F)
    rr = torch.as_tensor(r_real, dtype=tdt, device=device)
    rf = torch.as_tensor(r_fake, dtype=tdt, device=device)
    n, m = len(R), len(F)

    fake_inside = torch.zeros(m, dtype=torch.bool, device=device)   # precision: OR over real blocks
    fake_count = torch.zeros(m, dtype=torch.float64, device=device)  # density: count over real blocks
    real_recalled = torch.zeros(n, dtype=torch.bool, device=device)
    real_covered = torch.zeros(n, dtype=torch.bool, device=device)
    rows = _rows_per_block(m, R.element_size(), max_bytes)
    for s in range(0, n, rows):
        e = min(s + rows, n)
        d = _dist_block(R[s:e], R_sq[s:e], F, F_sq)                 # [rows, M]
        inside_real_ball = d <= rr[s:e, None]
        fake_inside |= inside_real_ball.any(dim=0)
        fake_count += inside_real_ball.sum(dim=0, dtype=torch.float64)
        del inside_real_ball
        real_recalled[s:e] = (d <= rf[None, :]).any(dim=1)
        real_covered[s:e] = d.min(dim=1).values <= rr[s:e]
        del d
    return {
        "precision": float(fake_inside.double().mean()),
        "recall": float(real_recalled.double().mean()),
        "density": float(fake_count.mean() / k),
        "coverage": float(real_covered.double().mean()),
    }


def prdc_dense(real: np.ndarray, fake: np.ndarray, k: int = 5) -> dict[str, float]:
    """The same four numbers from full float64 distance matrices (small inputs only; the reference for tests)."""
    real, fake = np.asarray(real, np.float64), np.asarray(fake, np.float64)
    d_rr, d_ff, d_rf = cdist(real, real), cdist(fake, fake), cdist(real, fake)
    r_real = np.sort(d_rr, axis=1)[:, k]
    r_fake = np.sort(d_ff, axis=1)[:, k]
    inside = d_rf <= r_real[:, None]
    return {
        "precision": float(inside.any(axis=0).mean()),
        "recall": float((d_rf <= r_fake[None, :]).any(axis=1).mean()),
        "density": float(inside.sum(axis=0).mean() / k),
        "coverage": float((d_rf.min(axis=1) <= r_real).mean()),
    }
