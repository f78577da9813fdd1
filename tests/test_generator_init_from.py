"""`generator.init_from`: fine-tuning starts from a pretrained diffusers UNet2DModel (a model folder or a pipeline
folder), with a fresh class embedding; the source is recorded so that resume works without it; misfits exit 2."""

from __future__ import annotations

import shutil

import pytest
import torch
from diffusers import DDPMPipeline, DDPMScheduler, UNet2DModel
from typer.testing import CliRunner

from ltaug.cli import app
from ltaug.diffusion.checkpoint import list_checkpoints, load_checkpoint, load_generator
from ltaug.diffusion.init_from import load_init
from ltaug.errors import LtaugError
from ltaug.files import sha256_file

pytestmark = pytest.mark.usefixtures("one_torch_thread")

QUICK = ["--set", "generator.grid_every=0", "--set", "generator.grid_cols=1", "--set", "generator.grid_steps=2",
         "--set", "generator.log_every=1", "--batch-size", "4", "--no-progress", "--device", "cpu"]


def _unconditional(**kw) -> UNet2DModel:
    """A tiny unconditional DDPM UNet for the mnist_lt recipe's 16x16 grey digits (not one of ltaug's presets)."""
    torch.manual_seed(0)
    cfg = dict(sample_size=16, in_channels=1, out_channels=1, block_out_channels=(8, 16), layers_per_block=1,
               down_block_types=("DownBlock2D", "AttnDownBlock2D"), up_block_types=("AttnUpBlock2D", "UpBlock2D"),
               norm_num_groups=4)
    return UNet2DModel(**{**cfg, **kw})


@pytest.fixture
def pipeline_dir(tmp_path):
    unet = _unconditional()
    with torch.no_grad():  # weights that are not a fresh init, so "equal to the source" means something
        for p in unet.parameters():
            p.add_(0.01 * torch.randn_like(p))
    DDPMPipeline(unet=unet, scheduler=DDPMScheduler(num_train_timesteps=1000)).save_pretrained(tmp_path / "ddpm")
    return tmp_path / "ddpm"


def test_the_loaded_network_is_the_source_at_step_0_for_every_label(pipeline_dir):
    for ref in (pipeline_dir, pipeline_dir / "unet"):  # a pipeline folder and a bare model folder
        net, record = load_init(str(ref), 10, 1, 16, 1000, "linear")
        source = UNet2DModel.from_pretrained(pipeline_dir / "unet")
        theirs, ours = source.state_dict(), net.unet.state_dict()
        assert set(ours) - set(theirs) == {"class_embedding.weight"}
        assert all(torch.equal(ours[k], v) for k, v in theirs.items())
        assert ours["class_embedding.weight"].shape[0] == 11 and not ours["class_embedding.weight"].any()
        assert record["class_embedding"] == "new (zeros)"
        assert record["sha256"] == sha256_file(pipeline_dir / "unet" / "diffusion_pytorch_model.safetensors")
        x, t = torch.randn(3, 1, 16, 16), torch.tensor([5, 400, 999])
        with torch.no_grad():
            want = source(x, t).sample
            for y in (0, 9, 10):  # a head class, the tail class, the null class
                torch.testing.assert_close(net(x, t, torch.full((3,), y)), want)


def test_train_generator_from_a_pipeline_then_resume_without_it_then_init_from_the_export(pipeline_dir, tmp_path):
    out = tmp_path / "run"
    r = CliRunner().invoke(app, ["train-generator", "--out", str(out), "--steps", "2", "--loss", "cbdm+diffrop",
                                 "--set", f"generator.init_from={pipeline_dir}", "--set", "generator.lr=1.0e-9",
                                 "--set", "generator.warmup=0", *QUICK])
    assert r.exit_code == 0, r.output
    state = load_checkpoint(out)
    source = UNet2DModel.from_pretrained(pipeline_dir / "unet").state_dict()
    model = {k.removeprefix("unet."): v for k, v in state["model"].items()}
    for k, v in source.items():  # two Adam steps of 1e-9 move a weight by at most ~2e-9
        torch.testing.assert_close(model[k], v, atol=1e-7, rtol=0)
    assert model["class_embedding.weight"].shape == (11, source["time_embedding.linear_1.weight"].shape[0])
    init = state["meta"]["init_from"]
    assert init["ref"] == str(pipeline_dir) and init["unet_config"]["block_out_channels"] == [8, 16]
    assert state["config"]["generator"]["init_from"] == str(pipeline_dir)
    assert f"init_from: {pipeline_dir}" in (out / "config.yaml").read_text()
    assert "from " + str(pipeline_dir) in (out / "log.txt").read_text()

    shutil.rmtree(pipeline_dir)  # the checkpoint holds everything a resume needs
    r = CliRunner().invoke(app, ["train-generator", "--resume", str(out), "--steps", "3", "--no-progress"])
    assert r.exit_code == 0, r.output
    assert [p.name for p in list_checkpoints(out / "generator" / "checkpoints")][-1] == "ckpt-0000003.pt"
    gen = load_generator(out)  # what synthesize loads
    assert tuple(gen.net.unet.config.block_out_channels) == (8, 16) and gen.step == 3

    export = out / "generator" / "diffusers"  # an ltaug export: class-conditional with 10 + 1 rows, kept
    net, record = load_init(str(export), 10, 1, 16, 1000, "linear")
    assert record["class_embedding"] == "kept"
    torch.testing.assert_close(net.unet.class_embedding.weight, gen.net.unet.class_embedding.weight)


@pytest.mark.parametrize("make, match", [
    (lambda d: d.mkdir(), "no diffusers UNet2DModel"),
    (lambda d: _unconditional(sample_size=32).save_pretrained(d), "data.resolution=32"),
    (lambda d: _unconditional(in_channels=3, out_channels=3).save_pretrained(d), "channel"),
    (lambda d: _unconditional(num_class_embeds=6).save_pretrained(d), "6 class embeddings"),
    (lambda d: DDPMPipeline(unet=_unconditional(), scheduler=DDPMScheduler(num_train_timesteps=500))
     .save_pretrained(d), "generator.T=500"),
])
def test_a_source_that_does_not_fit_exits_2_naming_the_key_and_writes_nothing(tmp_path, make, match):
    src = tmp_path / "src"
    make(src)
    out = tmp_path / "run"
    r = CliRunner().invoke(app, ["train-generator", "--out", str(out), "--steps", "1", "--init-from", str(src),
                                 *QUICK])
    assert r.exit_code == 2, r.output
    text = " ".join(r.output.split())
    assert "generator.init_from" in text and match in text and "Traceback" not in text
    assert not out.exists()


def test_a_hub_id_offline_names_the_key(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(LtaugError, match="generator.init_from nobody-here/no-ddpm: the Hub is offline"):
        load_init("nobody-here/no-ddpm", 10, 1, 16, 1000, "linear")
