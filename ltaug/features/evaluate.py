"""The generator measured in the feature space: fresh samples of every class (their own seeds, never the synthetic
set's) against held-out real features of the same classes, per group (overall / many / medium / few):

- `fd`: the Frechet distance of the two Gaussians (FID's formula, in the backbone's space; compare methods at the
  same sample sizes only: it is biased upward for few samples);
- `precision`, `recall`, `density`, `coverage` (k = 5 nearest neighbours, ltaug.metrics.prdc);
- the judge (the real-only head): `agreement` (share read as their own class) and `leakage_into_head` (share of a
  medium / few class read as a many class), for the generated features and, beside them, for the real held-out
  features of the same classes (`real_agreement`, `real_leakage_into_head`): what the judge does to real data, so
  no number blames the generator for the judge. The tail's leakage into the head is the overlap DiffROP targets.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ltaug.config.synth import SynthConfig
from ltaug.data.longtail import GROUPS, class_groups
from ltaug.diffusion.checkpoint import LoadedGenerator
from ltaug.features.head import Head
from ltaug.features.store import FeatureSet
from ltaug.features.synth import generate_features
from ltaug.metrics.fid import feature_stats, frechet_distance
from ltaug.metrics.prdc import prdc
from ltaug.synth.plan import image_seed

EVAL_K0 = 10_000_000  # evaluation samples take k >= this: seeds no synthetic set of up to 10M per class uses


def fresh_samples(gen: LoadedGenerator, per_class: int, sampling: SynthConfig, seed: int,
                  device: torch.device) -> tuple[np.ndarray, np.ndarray]:
    labels = np.repeat(np.arange(gen.num_classes), per_class)
    k = np.tile(np.arange(per_class), gen.num_classes)
    seeds = [image_seed(int(y), EVAL_K0 + int(i), gen.num_classes, seed) for y, i in zip(labels, k)]
    return generate_features(gen, labels, seeds, sampling, device), labels


def _reading(head: Head, x: np.ndarray, y: np.ndarray, many: set[int], num_classes: int) -> dict:
    """Per class: share read as its own class, share read as a many-group class (None for a many class)."""
    pred = head.predict(x)
    own, into_head = [], []
    for c in range(num_classes):
        m = y == c
        own.append(float((pred[m] == c).mean()) if m.any() else None)
        into_head.append(float(np.isin(pred[m], list(many)).mean()) if m.any() and c not in many else None)
    return {"agreement": own, "leakage_into_head": into_head}


def _mean(values: list, classes: list[int]):
    v = [values[c] for c in classes if values[c] is not None]
    return float(np.mean(v)) if v else None


def evaluate_features(gen: LoadedGenerator, judge: Head, heldout: FeatureSet, train_counts: list[int],
                      sampling: SynthConfig, *, num_samples: int, seed: int, device: torch.device,
                      prdc_k: int = 5) -> dict:
    """Per-group feature-space metrics of `gen` against `heldout` (the validation or test features)."""
    C = gen.num_classes
    per_class = max(2, math.ceil(num_samples / C))
    fake, fake_y = fresh_samples(gen, per_class, sampling, seed, device)
    real, real_y = np.asarray(heldout.x), heldout.labels
    groups = {"overall": list(range(C)), **class_groups(train_counts)}
    many = set(groups["many"])
    judged_fake = _reading(judge, fake, fake_y, many, C)
    judged_real = _reading(judge, real, real_y, many, C)
    out: dict = {"samples_per_class": per_class, "heldout": heldout.info.get("split", ""),
                 "heldout_per_class": heldout.counts, "sampling": sampling.identity(gen.schedule.T)}
    for g in GROUPS:
        cls = groups.get(g) or []
        fm, rm = np.isin(fake_y, cls), np.isin(real_y, cls)
        if not cls or fm.sum() < 2 or rm.sum() < 2:
            out[g] = None
            continue
        entry = {"classes": len(cls),
                 "fd": frechet_distance(*feature_stats(fake[fm]), *feature_stats(real[rm])),
                 **prdc(real[rm], fake[fm], k=min(prdc_k, int(min(fm.sum(), rm.sum())) - 1)),
                 "agreement": _mean(judged_fake["agreement"], cls),
                 "real_agreement": _mean(judged_real["agreement"], cls),
                 "leakage_into_head": _mean(judged_fake["leakage_into_head"], cls),
                 "real_leakage_into_head": _mean(judged_real["leakage_into_head"], cls)}
        out[g] = entry
    out["per_class"] = [{"class": gen.classes[c], "train": int(train_counts[c]),
                         "agreement": judged_fake["agreement"][c], "real_agreement": judged_real["agreement"][c],
                         "leakage_into_head": judged_fake["leakage_into_head"][c],
                         "real_leakage_into_head": judged_real["leakage_into_head"][c]} for c in range(C)]
    return out
