"""The `classifier` section of a recipe (torch-free). Owned by the classifier stage; see method.md §6."""

from __future__ import annotations

from dataclasses import dataclass

from ltaug.config_fields import opt


@dataclass
class ClassifierConfig:
    model: str = opt("cifar_resnet32", "any timm model name; cifar_resnet32 is registered by ltaug")
    epochs: int = opt(200, "training epochs", min=1)
    batch_size: int = opt(128, "images per step", min=1)
    lr: float = opt(0.1, "SGD learning rate", min=0.0)
    synthetic_ratio: float = opt(0.0, "synthetic images per real image, per class (0 = real only)", min=0.0)
