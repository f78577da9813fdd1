"""The class grid: one row per class, head (most images) to tail, `cols` samples per row from fixed seeds.

The same seeds are used at every step of a run, so successive grids show the same noise evolving into digits.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import torch

GRID_SEED = 10_000  # image (row r, column c) uses seed GRID_SEED + r * cols + c


def head_to_tail(counts: list[int]) -> list[int]:
    """Class indices sorted by training count, descending (ties by index)."""
    return sorted(range(len(counts)), key=lambda c: (-counts[c], c))


@torch.no_grad()
def class_grid(net, schedule, counts: list[int], *, cols: int = 8, steps: int = 50, w: float = 1.0,
               device="cpu") -> np.ndarray:
    """Sample the grid with DDIM (eta 0, predicted x0 clipped to [-1, 1]); returns uint8 [rows*H + pad, cols*W + pad, C] (2-pixel gaps)."""
    from ltaug.diffusion.sampler import sample, to_uint8

    order = head_to_tail(counts)
    y = torch.tensor([c for c in order for _ in range(cols)], dtype=torch.long)
    seeds = [GRID_SEED + i for i in range(len(y))]
    was_training = net.training
    net.eval()
    try:
        # x0 clipped at each step: a preview that stays readable early in training (the synth stage decides its own)
        x = sample(net, schedule, y, seeds, num_classes=len(counts), sampler="ddim", steps=min(steps, schedule.T),
                   w=w, device=device, clip_x0=True)
    finally:
        net.train(was_training)
    imgs = to_uint8(x)  # [N, H, W, C]
    n, h, wd, c = imgs.shape
    rows, pad = len(order), 2
    out = np.full((rows * (h + pad) + pad, cols * (wd + pad) + pad, c), 255, dtype=np.uint8)
    for i in range(n):
        r, k = divmod(i, cols)
        out[pad + r * (h + pad): pad + r * (h + pad) + h, pad + k * (wd + pad): pad + k * (wd + pad) + wd] = imgs[i]
    return out


def save_png(image: np.ndarray, path: str | Path, scale: int = 2) -> None:
    """Write uint8 [H, W, C] as a PNG (nearest-neighbour upscaled for viewing), atomically."""
    from PIL import Image

    from ltaug.rundir import atomic_write_bytes

    img = Image.fromarray(image[:, :, 0] if image.shape[-1] == 1 else image)
    if scale > 1:
        img = img.resize((img.width * scale, img.height * scale), Image.NEAREST)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    atomic_write_bytes(path, buf.getvalue())
