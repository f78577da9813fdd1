"""Class grids: one row per class, head (most training images) to tail, each row labelled with the class name and
its training count. `class_grid` samples a generator's grid from fixed seeds (the same seeds at every step of a
run, so successive grids show the same noise turning into images); `save_grid` tiles and writes any rows of images
(the synthesis stage writes synth/grid.png with it).
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from ltaug.diffusion.sampler import sample, to_uint8
from ltaug.files import atomic_write_bytes

GRID_SEED = 10_000  # image (row r, column c) uses seed GRID_SEED + r * cols + c
PAD = 2


def head_to_tail(counts: list[int]) -> list[int]:
    """Class indices sorted by training count, descending (ties by index)."""
    return sorted(range(len(counts)), key=lambda c: (-counts[c], c))


def row_label(name: str, count: int) -> str:
    return f"{name} ({count:,})"


@torch.no_grad()
def class_grid(net, schedule, counts: list[int], *, cols: int = 8, steps: int = 50, w: float = 1.0,
               device="cpu") -> tuple[list[np.ndarray], list[int]]:
    """Sample the grid with DDIM (eta 0, predicted x0 clipped to [-1, 1]): rows of uint8 [cols, H, W, C], one per
    class from head to tail, and the class index of each row."""
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
    return [imgs[i * cols:(i + 1) * cols] for i in range(len(order))], order


def tile(rows: list[np.ndarray], labels: list[str], scale: int = 2) -> Image.Image:
    """Rows of uint8 images [k, H, W, C] (k may differ per row) as one picture: images upscaled `scale` times
    (nearest neighbour), 2-pixel gaps, and each row's label written to its left."""
    font = ImageFont.load_default()
    h, w = rows[0].shape[1] * scale, rows[0].shape[2] * scale
    cols = max(len(r) for r in rows)
    label_w = max(int(font.getbbox(t)[2]) for t in labels) + 3 * PAD if labels else 0
    canvas = Image.new("RGB", (label_w + cols * (w + PAD) + PAD, len(rows) * (h + PAD) + PAD), "white")
    draw = ImageDraw.Draw(canvas)
    for r, (row, text) in enumerate(zip(rows, labels)):
        top = PAD + r * (h + PAD)
        bbox = font.getbbox(text)
        draw.text((PAD, top + (h - (bbox[3] - bbox[1])) // 2 - bbox[1]), text, fill="black", font=font)
        for k, img in enumerate(row):
            pic = Image.fromarray(img[:, :, 0] if img.shape[-1] == 1 else img).convert("RGB")
            canvas.paste(pic.resize((w, h), Image.NEAREST), (label_w + PAD + k * (w + PAD), top))
    return canvas


def save_grid(rows: list[np.ndarray], labels: list[str], path: str | Path, scale: int = 2) -> Path:
    """Write `tile(rows, labels)` as a PNG, atomically."""
    buf = io.BytesIO()
    tile(rows, labels, scale).save(buf, format="PNG")
    atomic_write_bytes(path, buf.getvalue())
    return Path(path)
