"""The training loop on the real embedded MNIST-LT with the tiny preset: exact resume, checkpoints, failure modes."""

from __future__ import annotations

import os
import signal

import pytest
import torch

from ltaug.config import load_recipe
from ltaug.errors import LtaugError

TINY = ["device=cpu", "generator.preset=tiny", "generator.batch_size=8", "generator.warmup=2", "generator.lr=0.001",
        "generator.ema_decay=0.9", "generator.grid_every=0", "generator.grid_cols=1", "generator.grid_steps=2",
        "generator.log_every=1", "generator.diffrop.margin=0.5"]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def recipe(*sets):
    return load_recipe("mnist_lt", TINY + list(sets))


def files(d):
    return sorted(str(p.relative_to(d)) for p in d.rglob("*"))


def test_resume_is_bit_exact(tmp_path):
    from ltaug.diffusion.checkpoint import load_checkpoint
    from ltaug.diffusion.train import train_generator

    a, b = tmp_path / "a", tmp_path / "b"
    train_generator(recipe("generator.steps=4", "generator.ckpt_every=4"), a, progress=False)
    train_generator(recipe("generator.steps=2", "generator.ckpt_every=2"), b, progress=False)
    res = train_generator(recipe("generator.steps=4", "generator.ckpt_every=2"), b, resume=True, progress=False)
    assert res.step == 4
    sa, sb = load_checkpoint(a), load_checkpoint(b)
    assert sa["step"] == sb["step"] == 4
    for key in ("model", "ema"):
        assert sa[key].keys() == sb[key].keys()
        for name in sa[key]:
            assert torch.equal(sa[key][name], sb[key][name]), (key, name)
    moments_a = sa["optimizer"]["state"]
    moments_b = sb["optimizer"]["state"]
    assert all(torch.equal(moments_a[k]["exp_avg_sq"], moments_b[k]["exp_avg_sq"]) for k in moments_a)
    assert not torch.equal(sa["model"]["unet.conv_in.weight"], sa["ema"]["unet.conv_in.weight"])
    # both runs logged the same losses at the same steps
    from ltaug.files import read_jsonl

    la = {r["step"]: r["loss"] for r in read_jsonl(a / "generator" / "metrics.jsonl")}
    lb = {r["step"]: r["loss"] for r in read_jsonl(b / "generator" / "metrics.jsonl")}
    assert la == lb and sorted(la) == [1, 2, 3, 4]
    # the run dir holds what the contract says
    names = files(b / "generator")
    assert "checkpoints/ckpt-0000004.pt" in names and "checkpoints/ckpt-0000002.pt" in names
    assert "grids/grid-0000004.png" in names and "diffusers/model_index.json" in names
    assert "diffusers/unet/config.json" in names and "diffusers/scheduler/scheduler_config.json" in names
    assert (b / "config.yaml").is_file() and (b / "log.txt").is_file()


def test_load_generator_and_diffusers_export(tmp_path):
    from diffusers import UNet2DModel

    from ltaug import ClassConditionalPipeline
    from ltaug.diffusion.checkpoint import load_generator
    from ltaug.diffusion.train import train_generator

    train_generator(recipe("generator.loss=diffrop", "generator.keep_ckpts=1", "generator.diffrop.margin=auto",
                           "generator.diffrop.auto_steps=2", "generator.steps=3"), tmp_path, progress=False)
    ckpts = sorted((tmp_path / "generator" / "checkpoints").glob("*.pt"))
    assert [p.name for p in ckpts] == ["ckpt-0000003.pt"]  # keep_ckpts=1
    cal = (tmp_path / "generator" / "calibration.json")
    assert cal.is_file()
    gen = load_generator(tmp_path, device="cpu")
    assert gen.num_classes == 10 and gen.classes == [str(i) for i in range(10)] and gen.step == 3
    assert gen.channels == 1 and gen.resolution == load_recipe().data.resolution and len(gen.checkpoint_sha256) == 64
    assert gen.counts[0] == 400 and gen.counts[-1] == 4 and not gen.net.training
    assert gen.meta["margin"] > 0 and gen.meta["calibration"]["quantile"] == 0.9
    assert gen.schedule.T == 1000 and gen.config["generator"]["preset"] == "tiny"
    # the diffusers export is the EMA network in a pipeline folder, its UNet loadable by plain diffusers
    export = tmp_path / "generator" / "diffusers"
    unet = UNet2DModel.from_pretrained(export / "unet")
    assert ClassConditionalPipeline.from_pretrained(export).config.class_names == gen.classes
    r = gen.resolution
    x, t, y = torch.randn(2, 1, r, r), torch.tensor([10, 500]), torch.tensor([3, 10])
    with torch.no_grad():
        torch.testing.assert_close(unet(x, t, class_labels=y).sample, gen.net(x, t, y))
    with pytest.raises(LtaugError, match="no generator checkpoint"):
        load_generator(tmp_path / "generator" / "grids")


def test_resume_with_other_architecture_or_classes_fails_and_writes_nothing(tmp_path):
    from ltaug.diffusion.train import train_generator

    train_generator(recipe("generator.steps=1"), tmp_path, progress=False)
    before = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*")}
    with pytest.raises(LtaugError, match="preset"):
        train_generator(recipe("generator.steps=2", "generator.preset=small"), tmp_path, resume=True, progress=False)
    with pytest.raises(LtaugError, match="num_classes"):
        train_generator(recipe("generator.steps=2", "data.dataset=npz:" + str(_three_class_npz(tmp_path.parent))),
                        tmp_path, resume=True, progress=False)
    with pytest.raises(LtaugError, match="already has checkpoints"):
        train_generator(recipe("generator.steps=2"), tmp_path, progress=False)
    assert {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*")} == before


def _three_class_npz(d):
    import numpy as np

    path = d / "three.npz"
    rng = np.random.default_rng(0)
    np.savez(path, images=rng.integers(0, 255, (12, 32, 32, 1), dtype=np.uint8), labels=np.arange(12) % 3,
             classes=np.array(["a", "b", "c"]))
    return path


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path):
    from ltaug.diffusion.train import NonFiniteLossError, train_generator

    # lr 1e30: the first Adam step throws the weights to ~1e30, so the second loss overflows.
    r = recipe("generator.steps=5", "generator.ckpt_every=1", "generator.lr=1.0e+30", "generator.warmup=0",
               "generator.grad_clip=0", "generator.loss=ddpm")
    with pytest.raises(NonFiniteLossError, match="non-finite at step 2.*ckpt-0000001.pt"):
        train_generator(r, tmp_path, progress=False)
    assert [p.name for p in (tmp_path / "generator" / "checkpoints").glob("*.pt")] == ["ckpt-0000001.pt"]


def test_sigterm_saves_a_checkpoint_then_stops(tmp_path):
    from ltaug.diffusion.train import TrainingInterrupted, train_generator

    def report(metrics, ckpt_dir):
        if metrics["step"] == 2:
            os.kill(os.getpid(), signal.SIGTERM)  # handled by the loop: finish the step, save, stop

    with pytest.raises(TrainingInterrupted, match="ckpt-0000003.pt"):
        train_generator(recipe("generator.steps=50", "generator.ckpt_every=100"), tmp_path, report=report,
                        progress=False)
    assert [p.name for p in (tmp_path / "generator" / "checkpoints").glob("*.pt")] == ["ckpt-0000003.pt"]
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # handlers restored
