"""Classifier pieces with exact answers: metrics, mixer counts, losses, the ResNet-32, augmentation, lr schedule."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from ltaug.classify.data import build_train_set, load_synthetic, mix_counts, select_per_class
from ltaug.classify.metrics import confusion_matrix, group_accuracy
from ltaug.config import load_recipe
from ltaug.data import LTDataset, load_dataset
from ltaug.errors import LtaugError


def test_group_accuracy_on_a_fixed_confusion_matrix():
    # 4 classes; training counts put class 0 in many (>100), 1 and 2 in medium (20..100), 3 in few (<20).
    cm = np.array([[9, 1, 0, 0],
                   [2, 6, 2, 0],
                   [0, 5, 5, 0],
                   [4, 0, 0, 6]])
    acc = group_accuracy(cm, [500, 100, 20, 19])
    assert acc["per_class"] == pytest.approx([0.9, 0.6, 0.5, 0.6])
    assert acc["overall"] == pytest.approx(26 / 40)
    assert acc["many"] == pytest.approx(0.9)
    assert acc["medium"] == pytest.approx(0.55)
    assert acc["few"] == pytest.approx(0.6)
    # an empty group is None, not a number; a class with no test images has no accuracy
    acc2 = group_accuracy(np.array([[3, 1], [0, 0]]), [200, 150])
    assert acc2["medium"] is None and acc2["few"] is None and acc2["per_class"] == [0.75, None]
    assert acc2["overall"] == pytest.approx(0.75)


def test_confusion_matrix_rows_are_true_classes():
    cm = confusion_matrix(np.array([0, 0, 1, 2, 2, 2]), np.array([0, 1, 1, 2, 0, 2]), 3)
    assert cm.tolist() == [[1, 1, 0], [0, 1, 0], [1, 0, 2]]


def test_mixer_counts_ratio_and_fill():
    real = [400, 239, 143, 86, 51, 30, 18, 11, 6, 4]
    avail = [50, 50, 50, 50, 500, 500, 500, 500, 500, 3]
    assert mix_counts(real, avail, "ratio", 0.0) == [0] * 10
    assert mix_counts(real, avail, "ratio", 0.5) == [50, 50, 50, 43, 26, 15, 9, 6, 3, 2]
    assert mix_counts(real, avail, "ratio", 2.0) == [50, 50, 50, 50, 102, 60, 36, 22, 12, 3]
    assert mix_counts(real, avail, "fill", 0.0) == [0, 50, 50, 50, 349, 370, 382, 389, 394, 3]
    with pytest.raises(LtaugError, match="--synthetic-ratio"):
        mix_counts(real, avail, "ratio", -0.1)


def test_select_per_class_is_seeded_and_exact():
    labels = np.repeat(np.arange(3), [5, 4, 6])
    a = select_per_class(labels, [2, 4, 0], seed=3)
    assert np.bincount(labels[a], minlength=3).tolist() == [2, 4, 0]
    assert np.array_equal(a, select_per_class(labels, [2, 4, 0], seed=3))
    assert not np.array_equal(select_per_class(labels, [2, 0, 3], 0), select_per_class(labels, [2, 0, 3], 1))


def _write_synth_folder(root: Path, ds: LTDataset, per_class: int) -> None:
    """A synthesis-style folder made of real digits: CLASS/<seed>.png plus manifest.jsonl."""
    from PIL import Image

    root.mkdir(parents=True)
    lines = []
    for c, name in enumerate(ds.classes):
        (root / name).mkdir()
        for k, i in enumerate(np.flatnonzero(ds.labels == c)[:per_class]):
            rel = f"{name}/{k:08d}.png"
            Image.fromarray(ds.images[i, :, :, 0], "L").save(root / rel)
            lines.append(json.dumps({"path": rel, "label": c, "class": name, "seed": k}))
    Image.fromarray(ds.images[0, :, :, 0], "L").save(root / ds.classes[0] / "99999999.png")  # orphan: no manifest line
    (root / "manifest.jsonl").write_text("\n".join(lines) + "\n")


def test_synthetic_folder_and_npz_are_mixed_per_class(tmp_path):
    real = load_dataset("mnist-lt")
    pool = load_dataset("mnist-lt", "test")  # 100 real digits per class stand in for generated ones
    _write_synth_folder(tmp_path / "synth", pool, per_class=30)
    folder = load_synthetic(tmp_path / "synth", real.classes, 32, 1)
    assert folder.counts == [30] * 10  # the orphan PNG without a manifest line is not used
    np.savez(tmp_path / "s.npz", images=pool.images, labels=pool.labels, classes=np.array(pool.classes))

    ts = build_train_set(real, [tmp_path / "synth", tmp_path / "s.npz"], "fill", 0.0, seed=0)
    assert ts.real_counts == real.counts
    assert ts.available_counts == [130] * 10
    assert ts.synthetic_counts == [0, 130, 130, 130, 130, 130, 130, 130, 130, 130]  # capped by what exists
    assert ts.counts == [400, 369, 273, 216, 181, 160, 148, 141, 136, 134]
    assert len(ts.images) == len(ts.labels) == len(real) + 1170 and ts.synthetic.sum() == 1170
    assert np.array_equal(ts.images[:len(real)], real.images)

    ts2 = build_train_set(real, [tmp_path / "s.npz"], "ratio", 1.0, seed=0)
    assert ts2.synthetic_counts == [100, 100, 100, 86, 51, 30, 18, 11, 6, 4]


def test_synthetic_set_with_other_classes_is_refused(tmp_path):
    real = load_dataset("mnist-lt")
    imgs = real.images[:20]
    np.savez(tmp_path / "other.npz", images=imgs, labels=np.arange(20) % 10,
             classes=np.array([f"c{i}" for i in range(10)]))
    with pytest.raises(LtaugError, match="differ from the dataset"):
        load_synthetic(tmp_path / "other.npz", real.classes, 32, 1)
    (tmp_path / "f" / "airplane").mkdir(parents=True)
    with pytest.raises(LtaugError, match="airplane"):
        load_synthetic(tmp_path / "f", real.classes, 32, 1)


def test_balanced_softmax_with_uniform_priors_equals_cross_entropy():
    from ltaug.classify.losses import cross_entropy, logit_adjusted_ce, make_loss

    g = torch.Generator().manual_seed(0)
    logits = torch.randn(16, 7, generator=g) * 3
    y = torch.randint(0, 7, (16,), generator=g)
    target = torch.nn.functional.one_hot(y, 7).float()
    ce = torch.nn.functional.cross_entropy(logits, y, reduction="none")
    assert torch.allclose(cross_entropy(logits, target), ce, atol=1e-6)
    cfg = load_recipe(None, ["classifier.loss=balanced_softmax"]).classifier
    uniform = make_loss(cfg, [50] * 7, 10, "cpu")
    assert torch.allclose(uniform(logits, target, 0), ce, atol=1e-5)
    # with a long-tailed prior it is CE on z + log pi, which differs
    lt = make_loss(cfg, [400, 200, 100, 50, 20, 10, 5], 10, "cpu")
    prior = torch.tensor([400, 200, 100, 50, 20, 10, 5.0])
    expected = torch.nn.functional.cross_entropy(logits + torch.log(prior / prior.sum()), y, reduction="none")
    assert torch.allclose(lt(logits, target, 0), expected, atol=1e-5)
    assert not torch.allclose(lt(logits, target, 0), ce, atol=1e-2)
    assert torch.allclose(logit_adjusted_ce(logits, target, torch.log(prior / prior.sum()), 0.0), ce, atol=1e-5)


def test_ldam_margins_drw_and_class_balanced_weights():
    from ltaug.classify.losses import effective_number_weights, ldam_margins, make_loss

    counts = [5000, 500, 50]
    m = ldam_margins(counts, 0.5)
    assert m[2] == pytest.approx(0.5) and m[0] == pytest.approx(0.5 * (50 / 5000) ** 0.25)
    w = effective_number_weights(counts, 0.999)
    expected = np.array([(1 - 0.999) / (1 - 0.999 ** n) for n in counts])
    assert np.allclose(w, expected * 3 / expected.sum()) and w.sum() == pytest.approx(3)
    cfg = load_recipe(None, ["classifier.loss=ldam_drw", "classifier.cb_beta=0.999"]).classifier
    loss = make_loss(cfg, counts, epochs=10, device="cpu", logit_scale=30.0)
    assert loss.weights_from_epoch == 8
    logits = torch.tensor([[0.2, 0.1, -0.3], [0.0, 0.4, 0.1]])
    target = torch.eye(3)[[2, 1]]
    before = loss(logits, target, 7)
    z = 30 * (logits - target * torch.as_tensor(m, dtype=torch.float32))
    assert torch.allclose(before, torch.nn.functional.cross_entropy(z, torch.tensor([2, 1]), reduction="none"))
    after = loss(logits, target, 8)
    assert torch.allclose(after, before * torch.tensor([w[2], w[1]], dtype=torch.float32))


def test_cifar_resnet32_is_registered_in_timm_with_the_published_size():
    import timm

    import ltaug.classify.models  # noqa: F401  (registers)

    model = timm.create_model("cifar_resnet32", num_classes=10, in_chans=3)
    # stem 3*16*9 + BN 32; stage 1: 5 x (2 * 16*16*9 + 64); stage 2: 16*32*9 + 32*32*9 + 128 + 4 x (2*32*32*9 + 128);
    # stage 3: 32*64*9 + 64*64*9 + 256 + 4 x (2*64*64*9 + 256); fc 64*10 + 10
    assert sum(p.numel() for p in model.parameters()) == 464_154
    assert sum(p.numel() for p in timm.create_model("cifar_resnet32", num_classes=100).parameters()) == 470_004
    out = timm.create_model("test_cifar_resnet", num_classes=5, in_chans=1)(torch.zeros(2, 1, 32, 32))
    assert out.shape == (2, 5)
    with pytest.raises(LtaugError, match="no pretrained weights"):
        timm.create_model("cifar_resnet32", pretrained=True)


def test_unknown_model_lists_close_matches():
    from ltaug.classify.models import check_model_name

    with pytest.raises(LtaugError, match="cifar_resnet32"):
        check_model_name("cifar_resnet33")


def test_pretrained_weights_offline_are_a_clear_error(monkeypatch):
    from ltaug.classify.models import build_model

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # the machine has no hub access either way; this makes it fail fast
    with pytest.raises(LtaugError, match="--pretrained: could not fetch"):
        build_model("resnet18", 10, 3, pretrained=True)


def test_crop_flip_is_a_shifted_window_of_the_padded_image():
    from ltaug.classify.augment import crop_flip

    x = torch.arange(3 * 8 * 8 * 2, dtype=torch.int64).reshape(3, 8, 8, 2).to(torch.uint8)
    g = torch.Generator().manual_seed(1)
    out = crop_flip(x, 2, True, g)
    assert out.shape == x.shape and out.dtype == torch.uint8
    xp = torch.nn.functional.pad(x, (0, 0, 2, 2, 2, 2))
    for i in range(3):  # every output is some window of the padded image, possibly mirrored
        windows = [xp[i, a:a + 8, b:b + 8] for a in range(5) for b in range(5)]
        assert any(torch.equal(out[i], w) or torch.equal(out[i], w.flip(1)) for w in windows)
    assert torch.equal(crop_flip(x, 2, True, torch.Generator().manual_seed(1)), out)  # seeded
    assert torch.equal(crop_flip(x, 0, False, g), x)


def test_lr_schedule_is_the_published_one_at_200_epochs():
    from ltaug.classify.train import lr_at

    cfg = load_recipe(None, ["classifier.epochs=200", "classifier.warmup_epochs=5", "classifier.lr=0.1"]).classifier
    assert lr_at(cfg, 1.0) == pytest.approx(0.02)  # warmup: epoch 1 of 5
    assert lr_at(cfg, 5.0) == pytest.approx(0.1)
    assert lr_at(cfg, 160.0) == pytest.approx(0.1)  # epoch 160 (1-based) still at lr
    assert lr_at(cfg, 160.5) == pytest.approx(0.001)  # 0-based epoch 160: x0.01
    assert lr_at(cfg, 181.0) == pytest.approx(1e-5)  # 0-based epoch 180: x0.0001
    cos = load_recipe(None, ["classifier.schedule=cosine", "classifier.warmup_epochs=0",
                             "classifier.epochs=10"]).classifier
    assert lr_at(cos, 5.0) == pytest.approx(cos.lr / 2) and lr_at(cos, 10.0) == pytest.approx(0.0)


def test_lt_losses_as_modules_match_train_classifier_and_golden_numbers():
    """ltaug.losses' nn.Modules give train-classifier's numbers (make_loss) for integer labels and soft targets,
    and hand-computed ones."""
    import math

    from ltaug.classify.losses import make_loss
    from ltaug.losses import (
        BalancedSoftmaxLoss,
        ClassBalancedLoss,
        CrossEntropy,
        LDAMLoss,
        LogitAdjustedLoss,
        ldam_margins,
    )

    # golden numbers: counts 3:1 and zero logits; balanced softmax is CE on log pi = log(3/4), log(1/4)
    counts2 = [3, 1]
    z0, y0 = torch.zeros(2, 2), torch.tensor([0, 1])
    assert BalancedSoftmaxLoss(counts2, reduction="none")(z0, y0).tolist() == pytest.approx([-math.log(0.75),
                                                                                            -math.log(0.25)])
    assert LogitAdjustedLoss(counts2, tau=0.0)(z0, y0).item() == pytest.approx(math.log(2))
    # LDAM with one margin 0.5 on the rare class (and m_0 = 0.5 * 3^(-1/4)), s = 1: CE on z - m_y
    m0 = 0.5 * 3 ** -0.25
    expected = [math.log(1 + math.exp(m0)), math.log(1 + math.exp(0.5))]
    assert LDAMLoss(counts2, max_m=0.5, reduction="none")(z0, y0).tolist() == pytest.approx(expected, rel=1e-6)

    g = torch.Generator().manual_seed(0)
    counts = [400, 200, 100, 50, 20, 10, 5]
    logits = torch.randn(16, 7, generator=g) * 3
    y = torch.randint(0, 7, (16,), generator=g)
    onehot = torch.nn.functional.one_hot(y, 7).float()
    soft = 0.8 * onehot + 0.2 * torch.softmax(torch.randn(16, 7, generator=g), 1)  # mixup-like targets
    epochs = 10
    cases = [("ce", {}, CrossEntropy(counts), 1.0),
             ("balanced_softmax", {}, BalancedSoftmaxLoss(counts), 1.0),
             ("logit_adjust", {"la_tau": 1.5}, LogitAdjustedLoss(counts, tau=1.5), 1.0),
             ("cb", {"cb_beta": 0.999}, ClassBalancedLoss(counts, beta=0.999), 1.0),
             ("ldam", {"ldam_max_m": 0.4}, LDAMLoss(counts, max_m=0.4, s=30.0), 30.0),
             ("ldam_drw", {"cb_beta": 0.999}, LDAMLoss(counts, s=30.0, beta=0.999, drw_start_epoch=8), 30.0)]
    for name, extra, module, s in cases:
        cfg = load_recipe(None, [f"classifier.loss={name}", *[f"classifier.{k}={v}" for k, v in extra.items()]])
        ref = make_loss(cfg.classifier, counts, epochs, "cpu", logit_scale=s)
        for epoch in (0, 9):
            module.set_epoch(epoch)
            for target in (onehot, soft):
                want = ref(logits, target, epoch)
                module.reduction = "none"
                got = module(logits, y if target is onehot else target)
                torch.testing.assert_close(got, want, rtol=0, atol=0, msg=f"{name} epoch {epoch}")
                module.reduction = "mean"
                torch.testing.assert_close(module(logits, target), want.mean())
    assert ldam_margins(counts, 0.5)[-1] == pytest.approx(0.5)
    with pytest.raises(ValueError, match="counts"):
        BalancedSoftmaxLoss([5])
    # usable without ltaug's training loop or timm
    code = ("import sys; from ltaug.losses import BalancedSoftmaxLoss; "
            "bad = [m for m in ('ltaug.classify', 'timm', 'diffusers', 'ray') if m in sys.modules]; "
            "assert not bad, bad")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
