"""`ltaug train-generator` through typer's CliRunner, and a 2-process torchrun run (DDP over gloo) on the CPU."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from ltaug.cli import app

QUICK = ["--set", "generator.preset=tiny", "--set", "generator.grid_every=0", "--set", "generator.grid_cols=1",
         "--set", "generator.grid_steps=2", "--set", "generator.log_every=1", "--no-progress", "--device", "cpu"]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_cli_short_run_then_resume(tmp_path):
    out = tmp_path / "run"
    r = CliRunner().invoke(app, ["train-generator", "--steps", "2", "--batch-size", "8", "--loss", "cbdm+diffrop",
                                 "--out", str(out), *QUICK])
    assert r.exit_code == 0, r.output
    assert "generator trained" in r.output
    g = out / "generator"
    assert (out / "config.yaml").is_file() and (out / "env.json").is_file()
    assert (g / "checkpoints" / "ckpt-0000002.pt").is_file() and (g / "grids" / "grid-0000002.png").is_file()
    assert (g / "diffusers" / "unet" / "diffusion_pytorch_model.safetensors").is_file()
    assert (g / "diffusers" / "model_index.json").is_file()
    from ltaug.files import read_jsonl

    rec = read_jsonl(g / "metrics.jsonl")
    assert [x["step"] for x in rec] == [1, 2] and {"loss", "dm", "cbdm", "overlap", "D", "img_s"} <= set(rec[-1])
    # --resume reads the run's config.yaml; --steps extends it
    r = CliRunner().invoke(app, ["train-generator", "--resume", str(out), "--steps", "3", "--no-progress"])
    assert r.exit_code == 0, r.output
    assert (g / "checkpoints" / "ckpt-0000003.pt").is_file()
    assert "generator: resume at step 2" in (out / "log.txt").read_text()


@pytest.mark.parametrize("args,match", [
    (["--set", "generator.diffrop.margin=-1"], "margin"),
    (["--set", "generator.diffrop.gamma=-0.5"], "gamma"),
    (["--loss", "gan"], "generator.loss"),
    (["--set", "generator.diffrop.variant=cosine"], "variant"),
    (["--dataset", "npz:/nonexistent.npz"], "nonexistent"),
])
def test_cli_bad_input_exits_2_and_writes_nothing(tmp_path, args, match):
    out = tmp_path / "run"
    r = CliRunner().invoke(app, ["train-generator", "--out", str(out), "--steps", "1", *args, *QUICK])
    assert r.exit_code == 2, r.output
    assert match in r.output and "Traceback" not in r.output
    assert not out.exists()


def test_cli_resume_with_other_preset_exits_2(tmp_path):
    out = tmp_path / "run"
    assert CliRunner().invoke(app, ["train-generator", "--out", str(out), "--steps", "1", "--batch-size", "4",
                                    *QUICK]).exit_code == 0
    before = sorted((p, p.stat().st_mtime_ns) for p in out.rglob("*"))
    r = CliRunner().invoke(app, ["train-generator", "--resume", str(out), "--steps", "2", "--set",
                                 "generator.preset=small", "--no-progress"])
    assert r.exit_code == 2 and "preset" in r.output, r.output
    assert sorted((p, p.stat().st_mtime_ns) for p in out.rglob("*")) == before


def test_torchrun_two_processes_gloo(tmp_path):
    """Two CPU ranks (gloo), DDP with the default DiffROP loss (two forwards per step): rank 0 writes once."""
    out = tmp_path / "ddp"
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", LTAUG_PLAIN_PROGRESS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29517",
           "-m", "ltaug", "train-generator", "--out", str(out), "--steps", "2", "--batch-size", "8", *QUICK,
           "--set", "logging.backends=[jsonl, tensorboard]"]
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    from ltaug.diffusion.checkpoint import load_checkpoint
    from ltaug.files import read_jsonl

    state = load_checkpoint(out)
    assert state["step"] == 2
    assert [x["step"] for x in read_jsonl(out / "generator" / "metrics.jsonl")] == [1, 2]  # one writer
    assert "2 rank(s)" in (out / "log.txt").read_text()
    assert len(list((out / "generator" / "tb").glob("events.out.tfevents.*"))) == 1  # rank 0's event file only
    assert p.stdout.count("generator trained") == 1, p.stdout  # rank 0 speaks for all (rank 1 used to print too)
