"""The `evaluate` section of a recipe: generator metrics (method.md §5), and the one rule that picks the FID
reference set of a recipe."""

from __future__ import annotations

from dataclasses import dataclass

from ltaug.config.data import DataConfig
from ltaug.config.fields import MAX_BATCH, Section, opt
from ltaug.errors import LtaugError

METRICS = ("fid", "kid", "is", "pr", "overlap")
INCEPTION_METRICS = ("fid", "kid", "pr", "is")
FID_MODES = ("clean", "legacy_pytorch")


@dataclass
class EvaluateConfig(Section):
    KEY = "evaluate"

    metrics: list[str] = opt(["fid", "kid", "pr"], "metrics to compute: fid, kid, is, pr, overlap")
    num_samples: int = opt(50000, "generated images for FID / precision-recall (the published protocol: 50,000)", min=2,
                           max=1_000_000, flag="--num-samples")
    reference: str = opt("", "reference dataset for FID (empty = data.test_dataset, else the balanced test split of "
                         "data.dataset; the published protocol uses the balanced full training set)")
    reference_split: str = opt("test", "split of the reference dataset (used with evaluate.reference; the implied "
                               "test set is always its test split)", choices=("train", "val", "test"))
    inception_weights: str = opt("", "local Inception weights file for offline machines (empty = clean-fid's download)")
    fid_mode: str = opt("clean", "clean-fid resizing mode: clean, or legacy_pytorch (pytorch-fid's bilinear resize)",
                        choices=FID_MODES)
    min_samples: int = opt(2048, "fewest images (each side) for overall FID/KID/PR; below the feature size 2048 the "
                           "covariance is singular and FID is biased", min=2,
                           max=1_000_000, flag="--min-samples")
    per_class: bool = opt(False, "also report every metric per class (many/medium/few groups are always reported)")
    pr_k: int = opt(5, "k of the k-NN balls of improved precision/recall, density and coverage", min=1,
                    max=10_000)
    kid_subsets: int = opt(100, "KID: random subsets averaged", min=1, max=100_000)
    kid_subset_size: int = opt(1000, "KID: images per subset (capped by the smaller set)", min=2,
                               max=1_000_000)
    classifier: str = opt("", "reference classifier (classifier dir or checkpoint) for the overlap diagnostics")
    batch_size: int = opt(64, "Inception / sampling batch size", min=1, max=MAX_BATCH)
    judge_per_class: int = opt(32, "sweeps ranking generators (val_agreement / val_leakage_into_head): images per "
                                   "class the judge reads at each generator checkpoint, ASHA's signal; costs classes "
                                   "x this many samples per checkpoint (synth settings); a group of k classes reads "
                                   "k x this many, so its agreement's noise is about sqrt(p(1-p) / (k x this))",
                               min=1, max=100_000)

    def validate(self) -> None:
        bad = [m for m in self.metrics if m not in METRICS]
        if bad:
            raise LtaugError(f"recipe key 'evaluate.metrics': unknown metric '{bad[0]}'; choose from "
                             f"{', '.join(METRICS)}")
        self.metrics = list(dict.fromkeys(self.metrics))

    @property
    def inception_metrics(self) -> list[str]:
        return [m for m in self.metrics if m in INCEPTION_METRICS]


def parse_metrics(metrics: str | list[str]) -> list[str]:
    """The --metrics comma list (or a list), checked against the metric names, duplicates dropped."""
    items = [m.strip().lower() for m in (metrics.split(",") if isinstance(metrics, str) else metrics) if m.strip()]
    bad = [m for m in items if m not in METRICS]
    if bad or not items:
        raise LtaugError(f"--metrics: unknown metric '{bad[0] if bad else ''}'; choose from {','.join(METRICS)}")
    return list(dict.fromkeys(items))


def reference_for(evaluate: EvaluateConfig, data: DataConfig) -> tuple[str, str]:
    """The FID reference of a recipe as (dataset name, split): `evaluate.reference` with `evaluate.reference_split`;
    else the recipe's balanced test set (`data.test_dataset`, else the dataset's own test split), split "test"."""
    if evaluate.reference:
        return evaluate.reference, evaluate.reference_split
    implied = data.test_set()
    if not implied:
        raise LtaugError(f"no FID reference for data.dataset '{data.dataset}': set evaluate.reference (--reference "
                         "DATASET) or data.test_dataset")
    return implied, "test"
