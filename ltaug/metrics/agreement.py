"""Judge agreement: how often a reference classifier (the judge) reads a generator's samples of class y as y,
per class group: a cheap validation signal for the generator (no Inception), used by sweeps so that ASHA can stop
bad generators early, and by compare_methods.

The judge is a classifier trained on balanced data that is not the test set (ltaug.pipeline.train_judge): the
long-tailed dataset's own balanced pool (mnist-lt at imbalance ratio 1, or cifar10-train).
"""

from __future__ import annotations

import numpy as np
import torch

from ltaug.classify.checkpoint import predict_proba
from ltaug.config import SynthConfig
from ltaug.diffusion.checkpoint import LoadedGenerator
from ltaug.metrics.overlap import leakage_summary, overlap_matrix
from ltaug.synth.plan import image_seed
from ltaug.synth.run import generate_images

VAL_SEED = 7_000_001  # the samples' recipe-seed offset: never the seeds of the synthesis folder


def judge_agreement(gen: LoadedGenerator, judge: tuple, sampling: SynthConfig, *, per_class: int = 8,
                    device: str | torch.device = "cpu") -> dict:
    """Sample `per_class` images of every class and let the judge (model, meta) read them.

    Returns {group: {"agreement", "leakage_into_head"}} for overall / many / medium / few, with the groups from the
    generator's training counts; images from seeds that differ from any synthesis folder's."""
    model, meta = judge
    c = gen.num_classes
    labels = [y for y in range(c) for _ in range(per_class)]
    seeds = [image_seed(y, k, c, VAL_SEED) for y in range(c) for k in range(per_class)]
    images = generate_images(gen, labels, sampling, seeds, device=device)
    order = [meta["classes"].index(name) for name in gen.classes]
    probs = predict_proba(model, meta, images, device)[:, order]
    summary = leakage_summary(overlap_matrix(probs, np.asarray(labels), c), list(gen.counts))
    return {g: {k: summary[g][k] for k in ("agreement", "leakage_into_head")} for g in ("overall", "many", "medium",
                                                                                         "few")}
