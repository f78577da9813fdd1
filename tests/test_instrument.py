"""The tail gate: on a small setting of the 2-D instrument (the `inside` layout, 1500 steps, seeds 0-2),
the shipped DiffROP default (with margin auto) leaves no few-shot class worse than DDPM beyond seed noise, with and
without guidance.

A pair = DDPM and DiffROP trained with the same seed (data, init, batches, draws). "Worse beyond seed noise" = the
95% t-interval of the paired difference in a few-shot class's energy distance lies above zero (by more than 10% of
DDPM's distance: eight class x w checks on three seeds), or on one seed the class's distance is several times
DDPM's (`harms`). The old
default (hinge, tau increasing, uniform negatives, stop_grad positive, margin auto) fails this gate:
`LTAUG_GATE_FORM=old python -m pytest tests/test_instrument.py` shows it.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from ltaug.instrument import FEW, TrainSpec, evaluate, generator_config, make_layout, train
from ltaug.stats import paired

SEEDS = (0, 1, 2)
SPEC = TrainSpec()  # 1500 steps at batch 1024: DDPM has converged (docs/results.md, The instrument)
OLD = dict(variant="hinge", tau="increasing", negatives="uniform", stop_grad="positive", pair_weight="none",
           t_min=0.0, t_max=1.0, margin="auto")


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _per_class_ed(loss: str, options: dict, layout, seed: int) -> dict:
    net, _ = train(layout, generator_config(loss, **options), seed, SPEC)
    return {w: evaluate(net, layout, w, seed, n=300)["ed"] for w in (0.0, 1.0)}


def harms(ddpm: list, other: list, counts: list) -> list[str]:
    """The few-shot (class, w) cells where `other` is worse than DDPM beyond seed noise. Each list holds one
    {w: per-class ED} per seed, paired by position. Two kinds of harm: systematic (the 95% interval of the paired
    difference above zero, by more than 10% of DDPM's mean) and a blow-up on one seed (more than 3x DDPM's distance
    plus 0.02, the estimator's floor at 300 samples). Thresholds from the instrument: the shipped default's worst
    pair is 2.3x DDPM's, the original form's 6.5x (class 9, seed 1, w = 1)."""
    worse = []
    for w in (0.0, 1.0):
        for c in (c for c, n in enumerate(counts) if n < FEW):
            a, b = [r[w][c] for r in other], [r[w][c] for r in ddpm]
            p = paired(a, b, lower_is_better=True)
            if p.lo > 0 and p.mean > 0.1 * float(np.mean(b)):
                worse.append(f"class {c} ({counts[c]} points), w = {w:g}: systematic, {p.text(digits=4)}")
            blown = [(s, x, y) for s, (x, y) in zip(SEEDS, zip(a, b)) if x > 3 * y + 0.02]
            if blown:
                worse.append(f"class {c} ({counts[c]} points), w = {w:g}: blow-up on seed {blown[0][0]}, "
                             f"{blown[0][1]:.3f} vs DDPM {blown[0][2]:.3f}")
    return worse


def test_the_default_diffrop_harms_no_tail_class():
    layout = make_layout("inside")
    # margin auto (as the CIFAR recipes set it): the fixed default 0.02 is in MNIST's units, and a margin the
    # model never reaches would make the gate pass for want of a term
    options = OLD if os.environ.get("LTAUG_GATE_FORM") == "old" else {"margin": "auto"}
    ddpm = [_per_class_ed("ddpm", {}, layout, s) for s in SEEDS]
    diffrop = [_per_class_ed("diffrop", options, layout, s) for s in SEEDS]
    worse = harms(ddpm, diffrop, layout.counts)
    assert not worse, f"DiffROP worse than DDPM beyond seed noise: {worse}"
