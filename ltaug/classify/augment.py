"""Augmentation on whole batches of uint8 images, on the training device (the CIFAR standard, method.md §6).

Random crop after zero padding and the horizontal flip are done with one gather per batch instead of a Python loop
per image (the CPU here has two cores). timm's RandAugment works on PIL images, so it runs per image on the CPU,
only when asked. Mixup pairs each image with the batch reversed, as timm's batch mode does.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image
from timm.data.auto_augment import rand_augment_transform

from ltaug.errors import LtaugError


def crop_flip(x: torch.Tensor, padding: int, flip: bool, generator: torch.Generator) -> torch.Tensor:
    """Random crop of the zero-padded image and random horizontal flip, per image.

    x: uint8 [N, H, W, C] on any device; generator: a CPU generator (the draws do not depend on the device).
    Returns uint8 [N, H, W, C].
    """
    n, h, w, _ = x.shape
    if padding > 0:
        xp = torch.nn.functional.pad(x, (0, 0, padding, padding, padding, padding))  # zeros, like RandomCrop(pad)
        oy = torch.randint(0, 2 * padding + 1, (n,), generator=generator).to(x.device)
        ox = torch.randint(0, 2 * padding + 1, (n,), generator=generator).to(x.device)
        rows = oy[:, None] + torch.arange(h, device=x.device)  # [N, H]
        cols = ox[:, None] + torch.arange(w, device=x.device)  # [N, W]
        x = xp[torch.arange(n, device=x.device)[:, None, None], rows[:, :, None], cols[:, None, :]]
    if flip:
        mask = (torch.rand(n, generator=generator) < 0.5).to(x.device)
        x = torch.where(mask[:, None, None, None], x.flip(2), x)
    return x


def to_input(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """uint8 [N, H, W, C] -> normalized float [N, C, H, W]: (x / 255 - mean) / std, mean/std [C] in [0, 1] units."""
    x = x.permute(0, 3, 1, 2).float().div_(255.0)
    return (x - mean[None, :, None, None]) / std[None, :, None, None]


class RandAugment:
    """timm's RandAugment (e.g. 'rand-m9-n2-mstd0.5') on uint8 [N, H, W, C] numpy batches, image by image.

    Draws come from Python's `random` and numpy's global state (timm's choice); the trainer seeds both per epoch.
    """

    def __init__(self, config: str, mean: list[float], resolution: int):
        fill = tuple(int(round(255 * m)) for m in (mean * 3 if len(mean) == 1 else mean))
        try:
            self.transform = rand_augment_transform(config, {"translate_const": int(resolution * 0.45),
                                                             "img_mean": fill})
        except Exception as e:  # noqa: BLE001 - timm raises assertion/key/value errors on a bad string
            raise LtaugError(f"recipe key 'classifier.randaugment': '{config}' is not a timm RandAugment config "
                             f"({type(e).__name__}: {e}); e.g. rand-m9-n2-mstd0.5") from None

    def __call__(self, images: np.ndarray) -> np.ndarray:
        out = np.empty_like(images)
        gray = images.shape[-1] == 1
        for i, img in enumerate(images):
            pil = Image.fromarray(np.repeat(img, 3, axis=2) if gray else img, "RGB")
            arr = np.asarray(self.transform(pil), dtype=np.uint8)
            out[i] = arr.mean(axis=2, keepdims=True).round().astype(np.uint8) if gray else arr
        return out


def mixup(x: torch.Tensor, target: torch.Tensor, weight: torch.Tensor, alpha: float,
          rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Mixup (Zhang et al. 2018): each sample mixed with the batch reversed, lam ~ Beta(alpha, alpha) per batch.

    x [N, C, H, W] float, target [N, K] soft labels, weight [N] per-sample loss weights; all mixed with the same lam.
    """
    lam = float(rng.beta(alpha, alpha))
    mix = lambda a: a * lam + a.flip(0) * (1.0 - lam)  # noqa: E731
    return mix(x), mix(target), mix(weight)
