"""The `features` section of a recipe: the feature-space mode (`generator.space: features`), where the diffusion
model is trained on a backbone's penultimate features instead of pixels and the classifier head is retrained on
real + generated features (LDMLR, Han et al. 2024; method.md).

The backbone is one of: `run` (the run's own real-only classifier, trained on the long-tailed images first: no
outside data), `inception` (the 2015 Inception-v3 whose weights ltaug already finds for FID), or any classifier
ltaug or timm can load (an ltaug classifier folder, a timm folder, `local-dir:PATH`, a Hub id).
"""

from __future__ import annotations

from dataclasses import dataclass

from ltaug.config.fields import Section, opt
from ltaug.errors import LtaugError


@dataclass
class FeaturesConfig(Section):
    KEY = "features"

    backbone: str = opt("run", "run (the run's real-only classifier, trained first), inception (the FID network's "
                        "2048-d pool features), or a classifier: an ltaug classifier folder, a timm folder, "
                        "local-dir:PATH or a Hub id", flag="--backbone")
    resolution: int = opt(0, "inception only: input side in pixels (0 = 299, the FID network's own; smaller is "
                          "faster: its last map is average-pooled whatever its size)", min=0)
    batch_size: int = opt(256, "images per forward pass of the backbone (does not change a feature)", min=1)
    head_epochs: int = opt(30, "epochs of the linear head on the features", min=1)
    head_lr: float = opt(0.05, "SGD learning rate of the head (cosine to 0)", min=0.0)
    head_batch_size: int = opt(256, "features per step of the head", min=1)
    head_weight_decay: float = opt(5e-4, "weight decay of the head", min=0.0)

    def validate(self) -> None:
        if not self.backbone.strip():
            raise LtaugError("--backbone '': name run, inception, a classifier folder, local-dir:PATH or a Hub id "
                             "(recipe key 'features.backbone')")
        if 0 < self.resolution < 75:
            raise LtaugError(f"recipe key 'features.resolution': {self.resolution} is too small for Inception-v3 "
                             "(its last map vanishes below 75 pixels); use 0 (= 299) or a side >= 75")
