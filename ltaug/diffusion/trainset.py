"""What the generator trains on, in either space: images (uint8 pixels scaled to [-1, 1], optional flips) or
feature vectors (a run's cached backbone features, standardized per dimension so that the data has unit variance,
as the noise schedule assumes). The training loop asks only for `x0(idx, gen)`; everything else is the same."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from ltaug.config import Recipe
from ltaug.data import load_from_config
from ltaug.data.dataset import Labelled
from ltaug.features.store import load_split, standardization


@dataclass
class TrainingSet(Labelled):
    space: str  # "image" | "features"
    x: torch.Tensor  # uint8 [N, C, H, W] images, or float32 [N, D] standardized features, on the device
    labels: np.ndarray  # int64 [N]
    classes: list[str]
    name: str
    hflip: bool = False
    mean: Optional[np.ndarray] = None  # features: per-dimension mean and std of the training features
    std: Optional[np.ndarray] = None

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.x.shape[1:])

    def x0(self, idx: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """The clean batch for indices idx (on the device); image flips draw from gen."""
        if self.space == "features":
            return self.x[idx]
        x0 = self.x[idx].float().div(127.5).sub(1.0)  # [-1, 1]
        if self.hflip:
            flip = torch.rand(len(idx), generator=gen).to(x0.device) < 0.5
            x0 = torch.where(flip[:, None, None, None], x0.flip(3), x0)
        return x0

    def meta(self) -> dict:
        """What a checkpoint records to turn samples back into data (features: the standardization)."""
        if self.space != "features":
            return {}
        return {"feature_mean": self.mean.tolist(), "feature_std": self.std.tolist()}


def training_set(recipe: Recipe, features_dir: Path, device: torch.device) -> TrainingSet:
    """The generator's training data for `recipe` (features from `features_dir` when generator.space is features)."""
    g = recipe.generator
    if g.space == "features":
        fs = load_split(features_dir, "train")
        mean, std = standardization(fs.x)
        x = torch.from_numpy(((np.asarray(fs.x, dtype=np.float64) - mean) / std).astype(np.float32)).to(device)
        return TrainingSet("features", x, fs.labels, fs.classes, f"{fs.info.get('dataset', 'features')} features",
                           mean=mean, std=std)
    ds = load_from_config(recipe.data)
    x = torch.from_numpy(ds.images).permute(0, 3, 1, 2).contiguous().to(device)  # uint8 [N, C, H, W]
    return TrainingSet("image", x, ds.labels, list(ds.classes), ds.name, hflip=g.hflip)
