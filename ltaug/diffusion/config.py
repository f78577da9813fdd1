"""The `generator` section of a recipe (torch-free). Owned by the generator stage; see method.md §1-§3, §5."""

from __future__ import annotations

from dataclasses import dataclass

from ltaug.config_fields import opt


@dataclass
class GeneratorConfig:
    preset: str = opt("small", "UNet size: ddpm-cifar (35.75M), small (CPU), tiny (tests)",
                      choices=("ddpm-cifar", "small", "tiny"))
    loss: str = opt("diffrop", "training loss", choices=("ddpm", "cbdm", "diffrop", "cbdm+diffrop"))
    steps: int = opt(3000, "optimizer steps", min=1)
    batch_size: int = opt(64, "images per optimizer step (all ranks together)", min=1)
    lr: float = opt(2e-4, "Adam learning rate", min=0.0)
