"""The `data` section of a recipe (torch-free)."""

from __future__ import annotations

from dataclasses import dataclass

from ltaug.config_fields import opt


@dataclass
class DataConfig:
    dataset: str = opt("mnist-lt", "training set: mnist-lt, cifar10-lt, cifar100-lt, npz:PATH or folder:PATH")
    test_dataset: str = opt("", "balanced test set; empty = the dataset's own test split (required for npz:/folder:)")
    data_root: str = opt("", "where CIFAR is read (and downloaded with download: true); empty = ~/.cache/ltaug/data")
    download: bool = opt(False, "download CIFAR through torchvision if it is missing from data_root")
    imbalance_ratio: float = opt(100.0, "n_max / n_min of the long-tailed profile (CIFAR-LT, MNIST-LT)", min=1.0)
    profile: str = opt("exp", "long-tail profile: exp (LDAM-DRW) or step", choices=("exp", "step"))
    subset_seed: int = opt(0, "seed of the per-class shuffle that picks which images are kept")
    resolution: int = opt(32, "image side in pixels (folder: resized and center-cropped to it)", min=8)
    channels: int = opt(0, "1 = grayscale, 3 = RGB, 0 = the dataset's own", choices=(0, 1, 3))
