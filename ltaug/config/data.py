"""The `data` section of a recipe: the long-tailed training set and its balanced test set (method.md §4)."""

from __future__ import annotations

from dataclasses import dataclass

from ltaug.config.fields import MAX_RESOLUTION, Section, opt

BUILTIN_DATASETS = ("mnist-lt", "cifar10-lt", "cifar100-lt", "cifar10-test", "cifar100-test", "cifar10-train",
                    "cifar100-train")
DATASET_PREFIXES = ("npz:", "folder:")
PROFILES = ("exp", "step")
# Reporting groups by number of training images (method.md §4): many > 100, medium 20..100, few < 20.
MANY_ABOVE = 100
FEW_BELOW = 20
GROUP_NAMES = ("many", "medium", "few")
GROUPS = ("overall",) + GROUP_NAMES  # the rows of every results table

# The balanced test split that goes with a built-in training set (mnist-lt's test split is its own "test" split).
_TEST_OF = {"mnist-lt": "mnist-lt", "cifar10-lt": "cifar10-test", "cifar100-lt": "cifar100-test",
            "cifar10-test": "cifar10-test", "cifar100-test": "cifar100-test", "cifar10-train": "cifar10-test",
            "cifar100-train": "cifar100-test"}


def test_name(dataset: str) -> str | None:
    """The balanced test set implied by a training set name, or None (npz:/folder: imply none)."""
    return _TEST_OF.get(dataset)


@dataclass
class DataConfig(Section):
    KEY = "data"

    dataset: str = opt("mnist-lt", "training set: mnist-lt, cifar10-lt, cifar100-lt, npz:PATH or folder:PATH")
    test_dataset: str = opt("", "balanced test set; empty = the dataset's own test split (required for npz:/folder:)")
    val_dataset: str = opt("", "validation set for choosing hyper-parameters (ltaug tune, compare_methods); empty = "
                           "the images the long-tailed subset leaves out (mnist-lt, cifar10-lt, cifar100-lt)")
    val_per_class: int = opt(100, "images per class in the built-in validation split (fewer where the long-tailed "
                             "subset leaves fewer: none for the head class)", min=1)
    val_from_test: int = opt(0, "images per class taken out of the balanced test set as the validation split (a "
                             "fixed, stratified draw, seed 0; the test set keeps the rest), for sources with no "
                             "balanced training pool (npz files); 0 = off", min=0)
    data_root: str = opt("", "where CIFAR is read (and downloaded with download: true); empty = ~/.cache/ltaug/data")
    download: bool = opt(False, "download CIFAR through torchvision if it is missing from data_root")
    imbalance_ratio: float = opt(100.0, "n_max / n_min of the long-tailed profile (CIFAR-LT, MNIST-LT)", min=1.0)
    profile: str = opt("exp", "long-tail profile: exp (LDAM-DRW) or step", choices=PROFILES)
    subset_seed: int = opt(0, "seed of the per-class shuffle that picks which images are kept")
    resolution: int = opt(32, "image side in pixels (folder: resized and center-cropped to it)", min=8,
                         max=MAX_RESOLUTION)
    channels: int = opt(0, "1 = grayscale, 3 = RGB, 0 = the dataset's own", choices=(0, 1, 3))

    def test_set(self) -> str | None:
        """The balanced test set of this data section: `test_dataset`, else the dataset's own test split."""
        return self.test_dataset or test_name(self.dataset)
