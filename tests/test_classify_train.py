"""Real training on the embedded MNIST-LT, on CPU: it learns, it reports, and a resumed run is the same run."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from ltaug.classify.checkpoint import load_classifier, predict_proba, read_checkpoint
from ltaug.classify.train import train_classifier
from ltaug.config import load_recipe
from ltaug.data import load_dataset
from ltaug.errors import LtaugError

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_short_cpu_run_on_mnist_lt_beats_chance_by_a_wide_margin(tmp_path):
    recipe = load_recipe(None, ["device=cpu", "classifier.model=cifar_resnet8", "classifier.epochs=4",
                                "classifier.loss=balanced_softmax", "classifier.flip=false",
                                "classifier.batch_size=64", "classifier.lr=0.05", "classifier.warmup_epochs=0.5"])
    reports = []
    res = train_classifier(recipe, tmp_path / "classifier-real", progress=False,
                           report=lambda m, d: reports.append((m["epoch"], d)))
    assert res["top1"] > 0.3, res["accuracy"]  # chance is 0.1 on the balanced 10-class test set
    assert [e for e, _ in reports] == [1, 2, 3, 4] and Path(reports[0][1]) == (tmp_path / "classifier-real").resolve()

    out = tmp_path / "classifier-real"
    saved = json.loads((out / "results.json").read_text())
    assert saved["top1"] == res["top1"] and saved["test_images"] == 1000
    assert saved["train_counts_real"] == [400, 239, 143, 86, 51, 30, 18, 11, 6, 4]
    assert saved["groups"] == {"many": [0, 1, 2], "medium": [3, 4, 5], "few": [6, 7, 8, 9]}
    cm = np.array(saved["confusion"])
    assert cm.shape == (10, 10) and cm.sum() == 1000 and cm.sum(axis=1).tolist() == [100] * 10
    assert np.trace(cm) / 1000 == pytest.approx(res["top1"])
    assert (out / "per_class_accuracy.png").stat().st_size > 1000
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 4

    # the public loader gives back the same classifier
    model, meta = load_classifier(out, "cpu")
    assert meta["classes"] == [str(d) for d in range(10)] and meta["in_chans"] == 1 and not model.training
    test = load_dataset("mnist-lt", "test")
    p = predict_proba(model, meta, test.images, "cpu", batch_size=300)
    assert p.shape == (1000, 10) and np.allclose(p.sum(axis=1), 1.0, atol=1e-5)
    assert (p.argmax(1) == test.labels).mean() == pytest.approx(res["top1"])


class _Crash(Exception):
    pass


def test_resume_continues_the_same_run_exactly(tmp_path):
    pool = load_dataset("mnist-lt", "test")
    np.savez(tmp_path / "synth.npz", images=pool.images, labels=pool.labels, classes=np.array(pool.classes))
    sets = ["device=cpu", "classifier.model=test_cifar_resnet", "classifier.epochs=2", "classifier.batch_size=128",
            "classifier.loss=ldam_drw", "classifier.drw_start=0.5", "classifier.sampler=class_balanced",
            "classifier.mixup_alpha=0.3", "classifier.randaugment=rand-m5-n1", "classifier.synthetic_mode=ratio",
            "classifier.synthetic_ratio=0.5",
            "classifier.synthetic_weight=0.5"]
    recipe = load_recipe(None, sets)
    synth = [tmp_path / "synth.npz"]
    straight = train_classifier(recipe, tmp_path / "a", synthetic=synth, progress=False)

    def crash(metrics, _dir):
        if metrics["epoch"] == 1:
            raise _Crash

    with pytest.raises(_Crash):
        train_classifier(recipe, tmp_path / "b", synthetic=synth, progress=False, report=crash)
    assert read_checkpoint(tmp_path / "b")["epoch"] == 1
    with pytest.raises(LtaugError, match="--resume"):  # never overwrite a run by accident
        train_classifier(recipe, tmp_path / "b", synthetic=synth, progress=False)
    other = load_recipe(None, sets[:-1] + ["classifier.synthetic_weight=1.0"])
    with pytest.raises(LtaugError, match="synthetic_weight"):
        train_classifier(other, tmp_path / "b", synthetic=synth, progress=False, resume=True)
    resumed = train_classifier(recipe, tmp_path / "b", synthetic=synth, progress=False, resume=True)

    a, b = read_checkpoint(tmp_path / "a"), read_checkpoint(tmp_path / "b")
    assert a["epoch"] == b["epoch"] == 2
    for key, value in a["model"].items():
        assert torch.equal(value, b["model"][key]), key
    assert resumed["confusion"] == straight["confusion"]
    assert straight["train_counts_synthetic"] == [100, 100, 72, 43, 26, 15, 9, 6, 3, 2]
    assert a["meta"]["normed_head"] and a["meta"]["logit_scale"] == 30.0
