"""The `evaluate` section of a recipe (torch-free). Owned by the evaluation stage; see method.md §5."""

from __future__ import annotations

from dataclasses import dataclass

from ltaug.config_fields import opt
from ltaug.errors import LtaugError

METRICS = ("fid", "kid", "is", "pr", "overlap")


@dataclass
class EvalConfig:
    metrics: list[str] = opt(["fid", "kid", "pr"], "metrics to compute: fid, kid, is, pr, overlap")
    num_samples: int = opt(50000, "generated images for FID / precision-recall (the published protocol: 50,000)", min=2)
    reference: str = opt("", "reference dataset for FID (empty = the balanced test split of data.dataset; the "
                         "published protocol uses the balanced full training set)")
    reference_split: str = opt("test", "split of the reference dataset", choices=("train", "test"))
    inception_weights: str = opt("", "local Inception weights file for offline machines (empty = clean-fid's download)")
    fid_mode: str = opt("clean", "clean-fid resizing mode: clean, or legacy_pytorch (pytorch-fid's bilinear resize)",
                        choices=("clean", "legacy_pytorch"))
    min_samples: int = opt(2048, "fewest images (each side) for overall FID/KID/PR; below the feature size 2048 the "
                           "covariance is singular and FID is biased", min=2)
    per_class: bool = opt(False, "also report every metric per class (many/medium/few groups are always reported)")
    pr_k: int = opt(5, "k of the k-NN balls of improved precision/recall, density and coverage", min=1)
    kid_subsets: int = opt(100, "KID: random subsets averaged", min=1)
    kid_subset_size: int = opt(1000, "KID: images per subset (capped by the smaller set)", min=2)
    classifier: str = opt("", "reference classifier (classifier dir or checkpoint) for the overlap diagnostics")
    batch_size: int = opt(64, "Inception / sampling batch size", min=1)

    def validate(self) -> None:
        bad = [m for m in self.metrics if m not in METRICS]
        if bad:
            raise LtaugError(f"recipe key 'evaluate.metrics': unknown metric '{bad[0]}'; choose from {', '.join(METRICS)}")
