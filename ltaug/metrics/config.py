"""The `evaluate` section of a recipe (torch-free). Owned by the evaluation stage; see method.md §5."""

from __future__ import annotations

from dataclasses import dataclass

from ltaug.config_fields import opt


@dataclass
class EvalConfig:
    metrics: list[str] = opt(["fid", "kid", "pr"], "metrics to compute: fid, kid, is, pr, overlap")
    num_samples: int = opt(50000, "generated images for FID / precision-recall (the published protocol: 50,000)", min=2)
    inception_weights: str = opt("", "local Inception weights file for offline machines (empty = clean-fid's download)")
