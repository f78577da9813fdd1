"""The noise-prediction network: diffusers' `UNet2DModel` with a class embedding and a learned null class.

The network knows nothing about diffusion: `net(x, t, y) -> eps`. The class label enters as an embedding added to the
time embedding (method.md §1); label `num_classes` is the extra "null" class that classifier-free guidance needs, so
the embedding table has `num_classes + 1` rows. The inner `UNet2DModel` is what `save_pretrained` exports, so the
final weights load in plain diffusers.
"""

from __future__ import annotations

import torch
from diffusers import UNet2DModel
from torch import nn

from ltaug.errors import LtaugError

# Each preset is the UNet2DModel keyword arguments (minus channels, size and classes).
PRESETS: dict[str, dict] = {
    # The DDPM CIFAR-10 UNet (Ho et al. 2020) used by CBDM and its successors: 128 base channels, multipliers
    # (1, 2, 2, 2), 2 res blocks per level, self-attention at 16x16, dropout 0.1; 35.75M parameters with 11 classes.
    "ddpm-cifar": dict(
        block_out_channels=(128, 256, 256, 256), layers_per_block=2,
        down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
        dropout=0.1, attention_head_dim=None, norm_num_groups=32,
    ),
    # A CPU-sized model (2.7M parameters): attention only at 8x8, where it is cheap.
    "small": dict(
        block_out_channels=(32, 64, 128), layers_per_block=1,
        down_block_types=("DownBlock2D", "DownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "UpBlock2D", "UpBlock2D"),
        dropout=0.0, attention_head_dim=None, norm_num_groups=8,
    ),
    # The CPU comparisons' preset (1.1M parameters): "small" with the 4x4 level at 64 instead of 128 channels, where
    # small spends most of its step; about 0.6x small's step time at 16x16 (benchmarks/results/presets.jsonl).
    "cpu": dict(
        block_out_channels=(32, 64, 64), layers_per_block=1,
        down_block_types=("DownBlock2D", "DownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "UpBlock2D", "UpBlock2D"),
        dropout=0.0, attention_head_dim=None, norm_num_groups=8,
    ),
    # For tests: a few tens of thousands of parameters, still with one attention level.
    "tiny": dict(
        block_out_channels=(16, 32), layers_per_block=1,
        down_block_types=("DownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "UpBlock2D"),
        dropout=0.0, attention_head_dim=None, norm_num_groups=8,
    ),
}


class ClassConditionalUNet(nn.Module):
    """`forward(x [N,C,H,W] float, t LongTensor [N] in [0, T), y LongTensor [N] in [0, num_classes]) -> eps`.

    `y == num_classes` is the learned null class (no label).
    """

    def __init__(self, unet: nn.Module, num_classes: int, preset: str):
        super().__init__()
        self.unet = unet
        self.num_classes = num_classes
        self.preset = preset

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.unet(x, t, class_labels=y).sample


def preset_kwargs(preset: str) -> dict:
    if preset not in PRESETS:
        raise LtaugError(f"generator.preset '{preset}': unknown; valid: {', '.join(PRESETS)}")
    return dict(PRESETS[preset])


def build_unet(preset: str, num_classes: int, in_channels: int, resolution: int) -> ClassConditionalUNet:
    """A fresh class-conditional UNet (`num_classes + 1` class embeddings) for [N, in_channels, res, res] inputs."""
    kw = preset_kwargs(preset)
    levels = len(kw["block_out_channels"])
    if resolution % (2 ** (levels - 1)):
        raise LtaugError(f"data.resolution {resolution} must be divisible by {2 ** (levels - 1)} for preset '{preset}'")
    if in_channels not in (1, 3):
        raise LtaugError(f"images must have 1 or 3 channels, got {in_channels}")
    unet = UNet2DModel(sample_size=resolution, in_channels=in_channels, out_channels=in_channels,
                       num_class_embeds=num_classes + 1, **kw)
    return ClassConditionalUNet(unet, num_classes, preset)


def count_parameters(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())
