"""The feature-space mode: the validation split of a balanced test set, the vector eps-network with every loss, the
features cache (identity, resume), feature synthesis (one seed per sample), the heads, and `ltaug run` end to end on
real CIFAR-10-LT images at a tiny size."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from ltaug.config import DataConfig, GeneratorConfig, SynthConfig, load_recipe
from ltaug.data.sources import load_from_config
from ltaug.diffusion.losses import LOSSES, get_loss, loss_options
from ltaug.diffusion.mlp import ClassConditionalMLP
from ltaug.diffusion.schedule import NoiseSchedule
from ltaug.errors import LtaugError
from ltaug.features.store import extract_split, load_split, save_split

COUNTS = [60, 40, 25, 15, 10, 8, 6, 5, 5, 5]


@pytest.fixture(scope="module")
def tiny_npz(shared_data, tmp_path_factory) -> tuple[Path, Path]:
    """A tiny long-tailed subset of the real CIFAR-10-LT file (60 down to 5 per class) and 30 test images a class."""
    d = tmp_path_factory.mktemp("tiny")
    z, t = np.load(shared_data / "cifar10_lt_r100_train.npz"), np.load(shared_data / "cifar10_test.npz")
    idx = np.concatenate([np.flatnonzero(z["labels"] == c)[:n] for c, n in enumerate(COUNTS)])
    tidx = np.concatenate([np.flatnonzero(t["labels"] == c)[:30] for c in range(10)])
    np.savez(d / "lt.npz", images=z["images"][idx], labels=z["labels"][idx], classes=z["classes"])
    np.savez(d / "test.npz", images=t["images"][tidx], labels=t["labels"][tidx], classes=t["classes"])
    return d / "lt.npz", d / "test.npz"


def test_val_from_test_is_a_fixed_stratified_disjoint_split(tiny_npz):
    lt, test = tiny_npz
    cfg = DataConfig(dataset=f"npz:{lt}", test_dataset=f"npz:{test}", val_from_test=10)
    full = load_from_config(DataConfig(dataset=f"npz:{lt}", test_dataset=f"npz:{test}"), "test")
    val, rest = load_from_config(cfg, "val"), load_from_config(cfg, "test")
    assert val.counts == [10] * 10 and rest.counts == [20] * 10
    key = lambda ds: {(int(y), ds.images[i].tobytes()) for i, y in enumerate(ds.labels)}  # noqa: E731
    assert not key(val) & key(rest) and key(val) | key(rest) == key(full)
    assert key(load_from_config(cfg, "val")) == key(val)  # fixed: the same images every time
    with pytest.raises(LtaugError, match="val_from_test 30: class .* has only 30 test images"):
        load_from_config(DataConfig(dataset=f"npz:{lt}", test_dataset=f"npz:{test}", val_from_test=30), "val")


@pytest.mark.parametrize("loss", sorted(LOSSES))
def test_every_loss_trains_the_vector_network(loss):
    """DDPM, CBDM and DiffROP on [N, D] vectors: finite per-sample terms, and a gradient reaches every layer."""
    torch.manual_seed(0)
    g = GeneratorConfig(space="features", loss=loss)
    net = ClassConditionalMLP(16, 4, width=32, depth=2)
    counts = [40, 20, 6, 2]
    x0, y = torch.randn(12, 16), torch.tensor([0, 1, 2, 3] * 3)
    out = get_loss(loss)(net, NoiseSchedule.make("linear", 1000), x0, y, torch.Generator().manual_seed(1),
                         **loss_options(g, counts, margin=0.02, measure_only=False, active_only=False))
    assert out["loss"].shape == (12,) and torch.isfinite(out["loss"]).all()
    out["loss"].mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in net.parameters() if p.requires_grad)


def test_mlp_blocks_start_as_identity_and_the_null_class_is_a_row():
    net = ClassConditionalMLP(8, 3, width=16, depth=3)
    assert net.label.num_embeddings == 4  # 3 classes + the null class
    x, t = torch.randn(5, 8), torch.tensor([0, 10, 500, 999, 3])
    h = net.inp(x)
    emb = torch.nn.functional.silu(net.time(torch.zeros(5, 16)) + net.label(torch.zeros(5, dtype=torch.long)))
    assert torch.equal(net.blocks[0](h, emb), h)  # zero-initialised output layer: the block passes h through
    assert net(x, t, torch.tensor([0, 1, 2, 3, 3])).shape == (5, 8)


def test_image_only_keys_are_refused_in_the_features_space():
    with pytest.raises(LtaugError, match="generator.preset 'cpu' is an image-space option"):
        GeneratorConfig(space="features", preset="cpu")
    with pytest.raises(LtaugError, match="generator.hflip True is an image-space option"):
        GeneratorConfig(space="features", hflip=True)


def _encode_mean(images: np.ndarray) -> np.ndarray:
    return images.reshape(len(images), -1, images.shape[-1]).mean(1).astype(np.float32)


def test_the_cache_is_reused_refused_for_another_backbone_and_rebuilt_with_overwrite(tiny_npz, tmp_path):
    lt, _ = tiny_npz
    z = np.load(lt)
    ident = {"backbone": "mean", "dataset": "tiny"}
    a = extract_split(tmp_path, "train", z["images"], z["labels"], list(z["classes"]), ident, _encode_mean,
                      batch_size=50, progress=False)
    calls = []
    again = extract_split(tmp_path, "train", z["images"], z["labels"], list(z["classes"]), ident,
                          lambda im: calls.append(1) or _encode_mean(im), progress=False)
    assert not calls and np.array_equal(a.x, again.x)  # cached: the backbone is not run again
    other = dict(ident, backbone="other")
    with pytest.raises(LtaugError, match=r"train.json: the cached train features were made otherwise \(backbone: "
                                         r"cached 'mean', now 'other'\); delete .* to rebuild"):
        extract_split(tmp_path, "train", z["images"], z["labels"], list(z["classes"]), other, _encode_mean,
                      progress=False)
    b = extract_split(tmp_path, "train", z["images"], z["labels"], list(z["classes"]), other,
                      lambda im: 2 * _encode_mean(im), overwrite=True, progress=False)
    assert np.allclose(b.x, 2 * np.asarray(a.x)) and b.info["backbone"] == "other"


def test_extraction_resumes_where_a_killed_run_stopped(tiny_npz, tmp_path):
    lt, _ = tiny_npz
    z = np.load(lt)
    seen: list[int] = []

    def dies_after_two(images):
        if len(seen) == 2:
            raise KeyboardInterrupt
        seen.append(len(images))
        return _encode_mean(images)

    args = (z["images"], z["labels"], list(z["classes"]), {"backbone": "mean"})
    with pytest.raises(KeyboardInterrupt):
        extract_split(tmp_path / "a", "train", *args, dies_after_two, batch_size=50, progress=False)
    seen_before = list(seen)
    resumed = extract_split(tmp_path / "a", "train", *args,
                            lambda im: seen.append(len(im)) or _encode_mean(im), batch_size=50, progress=False)
    whole = extract_split(tmp_path / "b", "train", *args, _encode_mean, batch_size=50, progress=False)
    assert seen_before == [1, 50] and seen[2:] == [50, 50, 29]  # (the 1 is the probe of the feature size)
    assert np.array_equal(resumed.x, whole.x) and np.array_equal(resumed.labels, whole.labels)


def _gaussian_run(tmp_path: Path, steps: int, sets: tuple = ()) -> tuple[Path, np.ndarray]:
    """A run folder whose 'features' are 4 long-tailed Gaussian classes in 16-d (known means)."""
    rng = np.random.default_rng(0)
    means = rng.normal(0, 3, (4, 16))
    counts = [200, 60, 15, 4]
    x = np.concatenate([means[c] + 0.5 * rng.normal(size=(n, 16)) for c, n in enumerate(counts)])
    save_split(tmp_path / "features", "train", x, np.repeat(np.arange(4), counts), list("abcd"), {"backbone": "toy"})
    return tmp_path, means


def test_feature_generator_learns_class_means_and_synthesis_is_one_seed_per_sample(tmp_path, one_torch_thread):
    from ltaug.diffusion.checkpoint import load_generator
    from ltaug.diffusion.train import train_generator
    from ltaug.features.synth import generate_features, load_synthetic_features, synthesize_features

    run, means = _gaussian_run(tmp_path, 600)
    recipe = load_recipe("cifar10_lt_features", sets=["generator.steps=600", "generator.lr=0.002",
                                                      "generator.mlp.width=128", "generator.mlp.depth=2",
                                                      "generator.batch_size=128", "features.backbone=inception"])
    train_generator(recipe, run, progress=False)
    gen = load_generator(run)
    assert gen.space == "features" and gen.shape == (16,)
    cfg = SynthConfig(sampler="ddim", steps=20, w=0.0, fill_to=0, per_class=50, batch_size=64)
    labels = np.repeat(np.arange(4), 50)
    f = generate_features(gen, labels, list(range(200)), cfg, torch.device("cpu"))
    for c in range(4):  # every class, the 4-sample one too, lands at its own mean (class means are ~4 sd apart)
        dist = np.linalg.norm(f[labels == c].mean(0)[None] - means, axis=1)
        assert dist.argmin() == c, (c, dist)
    alone = generate_features(gen, labels[7:8], [7], cfg, torch.device("cpu"))
    assert np.allclose(alone[0], f[7], atol=1e-4)  # a sample depends on its (label, seed) only
    out = synthesize_features(gen, SynthConfig(sampler="ddim", steps=5, fill_to=200, batch_size=64), run / "synth",
                              seed=0, device=torch.device("cpu"), progress=False)
    x, y, plan = load_synthetic_features(run / "synth")
    assert np.bincount(y, minlength=4).tolist() == [0, 140, 185, 196] == [r.new for r in plan.rows]
    assert out["generated"] == 521
    again = synthesize_features(gen, SynthConfig(sampler="ddim", steps=5, fill_to=200, batch_size=64), run / "synth",
                                seed=0, device=torch.device("cpu"), progress=False)
    assert again["generated"] == 0  # finished classes are not drawn again
    with pytest.raises(LtaugError, match="other settings \\(sampling differs\\)"):
        synthesize_features(gen, SynthConfig(sampler="ddim", steps=6, fill_to=200), run / "synth", seed=0,
                            device=torch.device("cpu"), progress=False)


def _env() -> dict:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "LTAUG_PLAIN_PROGRESS": "1", "OMP_WAIT_POLICY": "PASSIVE"}


TINY = ["--set", "classifier.model=cifar_resnet8", "--set", "classifier.epochs=1", "--set", "generator.steps=60",
        "--set", "generator.mlp.width=64", "--set", "generator.mlp.depth=2", "--set", "synth.fill_to=60",
        "--set", "synth.steps=5", "--set", "evaluate.num_samples=100", "--set", "features.head_epochs=3",
        "--set", "data.val_from_test=10"]


@pytest.mark.slow
def test_run_in_the_features_space_end_to_end(tiny_npz, tmp_path):
    lt, test = tiny_npz
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "ltaug", "run", "-r", "cifar10_lt_features", "--out", str(out),
           "--set", f"data.dataset=npz:{lt}", "--set", f"data.test_dataset=npz:{test}", *TINY]
    res = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["space"] == "features"
    for key in ("accuracy_real", "accuracy_synth", "accuracy_backbone"):
        assert 0.0 <= summary[key]["overall"] <= 1.0
    assert summary["accuracy_real"]["many"] is None  # 60 images: no class has more than 100
    ev = json.loads((out / "evaluate" / "results.json").read_text())
    for split in ("val", "test"):
        few = ev[split]["few"]
        assert few["fd"] > 0 and 0 <= few["agreement"] <= 1 and 0 <= few["real_agreement"] <= 1
    train = load_split(out / "features", "train")
    assert train.dim == 64 and train.counts == COUNTS  # cifar_resnet8's pooled features
    assert len(np.load(out / "synth" / "class-0009.npy")) == 55  # filled to 60: 5 real + 55 synthetic
    assert not (out / "synth" / "class-0000.npy").exists()  # the head class needs none
    assert (out / "report.html").is_file()
    started = (out / "log.txt").read_text().count("started")
    res = subprocess.run([sys.executable, "-m", "ltaug", "run", "--resume", str(out)], env=_env(),
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    assert (out / "log.txt").read_text().count("started") == started  # every stage finished: none runs again


def test_a_backbone_that_is_not_there_exits_2_and_leaves_nothing(tiny_npz, tmp_path):
    lt, test = tiny_npz
    out = tmp_path / "run"
    res = subprocess.run([sys.executable, "-m", "ltaug", "run", "-r", "cifar10_lt_features", "--out", str(out),
                          "--set", f"data.dataset=npz:{lt}", "--set", f"data.test_dataset=npz:{test}",
                          "--set", f"features.backbone={tmp_path / 'nope'}", *TINY],
                         env=_env(), capture_output=True, text=True, timeout=300)
    assert res.returncode == 2, res.stdout[-2000:] + res.stderr[-2000:]
    assert "--backbone" in res.stdout + res.stderr and "no such file or folder" in res.stdout + res.stderr
    assert not out.exists()


@pytest.mark.slow
def test_a_sweep_in_the_features_space_shares_one_extraction(tiny_npz, tmp_path):
    import yaml

    lt, test = tiny_npz
    sets = [s for s in TINY if s != "--set"] + [f"data.dataset=npz:{lt}", f"data.test_dataset=npz:{test}",
                                               "generator.loss=diffrop", "generator.diffrop.margin=auto",
                                               "generator.diffrop.auto_steps=20"]
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text(yaml.safe_dump({"recipe": "cifar10_lt_features", "set": sets, "metric": "val_accuracy.few",
                                     "mode": "max", "scheduler": "fifo", "max_concurrent": 1,
                                     "resources": {"cpu": 1, "gpu": 0},
                                     "space": {"generator.diffrop.gamma": {"grid": [0.0, 0.1]}}}))
    out = tmp_path / "out"
    res = subprocess.run([sys.executable, "-m", "ltaug", "tune", str(sweep), "--out", str(out), "--num-cpus", "2"],
                         env=_env(), capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    results = json.loads((out / "sweep_results.json").read_text())
    assert [t["status"] for t in results["trials"]] == ["OK", "OK"]
    assert all(0.0 <= t["metric"] <= 1.0 for t in results["trials"])
    assert (out / "shared" / "stages" / "features.json").is_file()  # extracted once, before the trials
    for t in results["trials"]:
        run = Path(t["path"]) / "run"
        assert not (run / "classifier-real").exists()  # no trial trained the backbone again
        assert json.loads((run / "stages" / "features.json").read_text())["shared"] == str(out / "shared")
