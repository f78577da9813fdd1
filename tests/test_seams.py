"""The seams between stages: each decision made in one place (values checked in the recipe section, one device
rule, one run-directory layout, one synthetic format, the sampler running the schedule's steps)."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from ltaug.cli import app
from ltaug.config import (
    DataConfig,
    DiffropConfig,
    EvaluateConfig,
    GeneratorConfig,
    SynthConfig,
    load_recipe,
    reference_for,
)
from ltaug.data.synthetic import class_dirs, load_synthetic
from ltaug.device import amp_dtype, resolve_device
from ltaug.diffusion.losses import LOSSES, loss_options
from ltaug.diffusion.sampler import ddim_timesteps, sample
from ltaug.diffusion.schedule import NoiseSchedule
from ltaug.diffusion.unet import build_unet
from ltaug.errors import LtaugError
from ltaug.rundir import RunDir

runner = CliRunner()


# ----------------------------------------------------------------------------------------------- values, once


@pytest.mark.parametrize("make,match", [
    (lambda: SynthConfig(w=-1.0), r"--w -1.0: the guidance weight must be >= 0"),
    (lambda: SynthConfig(sampler="eulr"), r"--sampler 'eulr'.*synth.sampler.*ddpm, ddim, dpm\+\+, unipc, euler.*UniPC"),
    (lambda: DiffropConfig(margin=-0.5), r"generator.diffrop.margin -0.5: must be >= 0"),
    (lambda: DiffropConfig(margin="big"), r"expected a number >= 0 or 'auto'"),
    (lambda: GeneratorConfig(lr=float("nan")), r"generator.lr.*nan"),
    (lambda: GeneratorConfig(class_power=1.5), r"generator.class_power 1.5: must be in \[0, 1\]"),
    (lambda: EvaluateConfig(metrics=["fid", "sharpness"]), r"unknown metric 'sharpness'"),
])
def test_a_section_checks_its_values_however_it_is_built(make, match):
    with pytest.raises(LtaugError, match=match):
        make()


def test_the_same_check_answers_yaml_set_and_python():
    with pytest.raises(LtaugError) as from_set:
        load_recipe(None, ["synth.w=-1"])
    with pytest.raises(LtaugError) as from_python:
        SynthConfig(w=-1.0)
    assert str(from_set.value) == str(from_python.value)


def test_losses_take_their_defaults_from_the_recipe_section():
    """No second default: a loss called without a section equals one called with the recipe's default section."""
    torch.manual_seed(0)
    net = build_unet("tiny", 3, 1, 8)
    sched = NoiseSchedule.linear()
    x0 = torch.rand(6, 1, 8, 8) * 2 - 1
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    bare = LOSSES["diffrop"](net, sched, x0, y, torch.Generator().manual_seed(1), num_classes=3, counts=[5, 3, 1])
    kw = loss_options(load_recipe(None).generator, [5, 3, 1])
    full = LOSSES["diffrop"](net, sched, x0, y, torch.Generator().manual_seed(1), **kw)
    assert kw["diffrop"].margin == DiffropConfig().margin == 0.02
    for k in bare:
        torch.testing.assert_close(bare[k], full[k], equal_nan=True, rtol=0, atol=0)
    with pytest.raises(LtaugError, match="margin auto is calibrated by the training loop"):
        LOSSES["diffrop"](net, sched, x0, y, torch.Generator().manual_seed(1), num_classes=3, counts=[5, 3, 1],
                          diffrop=DiffropConfig(margin="auto"))


def test_one_reference_rule():
    data = DataConfig(dataset="npz:/x/train.npz", test_dataset="npz:/x/test.npz")
    assert reference_for(EvaluateConfig(), data) == ("npz:/x/test.npz", "test")
    assert reference_for(EvaluateConfig(reference_split="train"), DataConfig()) == ("mnist-lt", "test")
    assert reference_for(EvaluateConfig(reference="cifar10-train", reference_split="train"), data) == \
        ("cifar10-train", "train")
    with pytest.raises(LtaugError, match="evaluate.reference"):
        reference_for(EvaluateConfig(), DataConfig(dataset="npz:/x/train.npz"))


# ----------------------------------------------------------------------------------------------- one device rule


def test_one_device_rule():
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device("cpu") == torch.device("cpu")
    if not torch.cuda.is_available():
        with pytest.raises(LtaugError, match="--device cuda:1: no CUDA device"):
            resolve_device("cuda:1")
        with pytest.raises(LtaugError, match="synth.amp fp16 needs a GPU"):
            amp_dtype("fp16", torch.device("cpu"), "synth.amp")
    assert amp_dtype("auto", torch.device("cpu")) is None and amp_dtype("bf16", torch.device("cpu")) == torch.bfloat16
    with pytest.raises(LtaugError, match="recipe key 'device'.*'tpu' is not a device"):
        load_recipe(None, ["device=tpu"])


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the answer of a machine without a GPU")
@pytest.mark.parametrize("command", [["train-generator"], ["train-classifier"], ["run"]])
def test_every_command_refuses_a_missing_gpu_before_writing(tmp_path, command):
    out = tmp_path / "x"
    r = runner.invoke(app, [*command, "--device", "cuda:1", "--out", str(out)])
    assert r.exit_code == 2, r.output
    assert "no CUDA device" in " ".join(r.output.split()) and "Traceback" not in r.output
    assert not out.exists()


# ----------------------------------------------------------------------------------------------- one run layout


def test_rundir_finds_the_run_from_any_path_inside(tmp_path):
    run = RunDir(tmp_path / "runs" / "00001-x").init(load_recipe(None, ["seed=4"]))
    for inside in (run.checkpoints / "ckpt-0000001.pt", run.generator, run.synth / "7" / "00000001.png",
                   run.classifier("real") / "checkpoint.pt", run.evaluate):
        inside.parent.mkdir(parents=True, exist_ok=True)
        found = RunDir.find(inside)
        assert found is not None and found.path == run.path, inside
    # a classifier folder has its own config.yaml (its own recipe), yet belongs to the run above it
    (run.classifier("real") / "config.yaml").write_text("seed: 9\n")
    assert RunDir.find(run.classifier("real")).path == run.path
    assert RunDir.find(run.classifier("real")).recipe().seed == 4
    assert RunDir.find(tmp_path) is None
    assert run.relative(run.checkpoints / "ckpt-0000001.pt") == "generator/checkpoints/ckpt-0000001.pt"
    assert run.resolve("generator/checkpoints/ckpt-0000001.pt") == run.checkpoints / "ckpt-0000001.pt"
    again = RunDir.create(tmp_path / "runs", "x")
    assert again.path.name == "00002-x"


# ----------------------------------------------------------------------------------------------- one synthetic format


def test_load_synthetic_reads_a_synthesis_folder_in_the_generators_class_order(tmp_path):
    from ltaug.synth.folder import write_png

    classes = ["cat", "dog/wolf", "ant"]  # a path character in a class name: its folder name differs
    dirs = class_dirs(classes)
    assert dirs[1] == "dog_wolf"
    out = tmp_path / "synth"
    lines = []
    rng = np.random.default_rng(0)
    for k, (label, name) in enumerate([(1, "dog/wolf"), (2, "ant"), (1, "dog/wolf")]):
        (out / dirs[label]).mkdir(parents=True, exist_ok=True)
        rel = f"{dirs[label]}/{k:08d}.png"
        write_png(out / rel, rng.integers(0, 255, (8, 8, 1), dtype=np.uint8))
        lines.append(json.dumps({"path": rel, "label": label, "class": name, "seed": k, "k": k}))
    (out / "manifest.jsonl").write_text("\n".join(lines) + "\n")
    (out / "settings.json").write_text(json.dumps({"classes": classes}))
    ds = load_synthetic(out)
    assert ds.classes == classes and ds.labels.tolist() == [1, 2, 1] and ds.images.shape == (3, 8, 8, 1)
    mine = load_synthetic(out, ["ant", "dog/wolf", "cat"], resolution=16, channels=3)  # another dataset order
    assert mine.labels.tolist() == [1, 0, 1] and mine.images.shape == (3, 16, 16, 3)
    with pytest.raises(LtaugError, match="dog/wolf"):
        load_synthetic(out, ["cat", "ant"])


# ----------------------------------------------------------------------------------------------- the sampler


@pytest.mark.parametrize("kw", [dict(sampler="ddpm", variance="large"), dict(sampler="ddpm", variance="small"),
                                dict(sampler="ddpm", clip_x0=True), dict(sampler="ddim", steps=7, eta=0.6),
                                dict(sampler="ddim", steps=7, clip_x0=True)])
def test_the_sampler_runs_the_schedules_steps(kw):
    """A hand-written loop over NoiseSchedule.ddpm_step / ddim_step (the math the golden tests pin) gives the
    sampler's images bit for bit."""
    sched = NoiseSchedule.linear(30)
    torch.manual_seed(0)
    net = build_unet("tiny", 2, 1, 8).eval()
    y, seeds = torch.tensor([0, 1]), [3, 4]
    got = sample(net, sched, y, seeds, num_classes=2, shape=(1, 8, 8), w=0.5, **kw)
    gens = [torch.Generator().manual_seed(s) for s in seeds]
    draw = lambda: torch.stack([torch.randn((1, 8, 8), generator=g) for g in gens])  # noqa: E731
    x = draw()
    ts = list(range(29, -1, -1)) if kw["sampler"] == "ddpm" else ddim_timesteps(30, kw["steps"])
    with torch.no_grad():
        for i, t in enumerate(ts):
            tt = torch.full((2,), t)
            c, u = net(torch.cat([x, x]), torch.cat([tt, tt]), torch.cat([y, torch.full_like(y, 2)])).chunk(2)
            eps = 1.5 * c - 0.5 * u
            if kw["sampler"] == "ddpm":
                x = sched.ddpm_step(eps, t, x, draw, variance=kw.get("variance", "large"),
                                    clip_x0=kw.get("clip_x0", False))
            else:
                x = sched.ddim_step(eps, t, ts[i + 1] if i + 1 < len(ts) else -1, x, draw, eta=kw.get("eta", 0.0),
                                    clip_x0=kw.get("clip_x0", False))
    assert torch.equal(got, x.clamp(-1, 1))


def test_the_steps_are_the_papers_formulas():
    s = NoiseSchedule.linear()
    g = torch.Generator().manual_seed(0)
    x0 = (torch.rand(3, 1, 4, 4, generator=g) * 2 - 1).double()
    eps = torch.randn(3, 1, 4, 4, generator=g, dtype=torch.float64)
    z = torch.randn(3, 1, 4, 4, generator=g, dtype=torch.float64)
    t = 400
    xt = s.q_sample(x0, torch.full((3,), t), eps)
    # DDPM with the true eps: the posterior mean of the true x0 (Ho et al. eq. 7 = eq. 11) plus sigma_t z
    mean, var = s.posterior(x0, xt, torch.full((3,), t))
    torch.testing.assert_close(s.ddpm_step(eps, t, xt, lambda: z, variance="small"), mean + var.sqrt() * z)
    torch.testing.assert_close(s.ddpm_step(eps, t, xt, lambda: z), mean + s.betas[t].sqrt() * z)
    # DDIM, eta 0, to the clean image with the true eps recovers x0 exactly; to t_prev it is eq. 12
    torch.testing.assert_close(s.ddim_step(eps, t, -1, xt), x0)
    ab_prev = float(s.alpha_bar[99])
    torch.testing.assert_close(s.ddim_step(eps, t, 99, xt), ab_prev ** 0.5 * x0 + (1 - ab_prev) ** 0.5 * eps)
    assert s.ddim_sigma(t, 99, 0.0) == 0.0
    assert s.ddim_sigma(t, t - 1, 1.0) == pytest.approx(float(s.sigma2(t, "small")) ** 0.5)  # eta 1: DDPM's beta~


def test_synth_settings_identity_normalizes_what_a_sampler_ignores():
    a, b = SynthConfig(sampler="ddpm", steps=5, eta=0.3), SynthConfig(sampler="ddpm", steps=50, eta=0.0)
    assert a.identity(1000) == b.identity(1000) and a.identity(1000)["steps"] == 1000
    c = dataclasses.replace(a, sampler="ddim")
    assert c.identity(1000)["variance"] is None and c.identity(1000)["eta"] == 0.3


def test_plots_show_class_names_with_dollar_signs_literally(tmp_path):
    """`$` starts mathtext in matplotlib; a class named '$5 bill' (or an unbalanced '$') must not break a plot."""
    from ltaug.classify.plots import plot_per_class_accuracy
    from ltaug.data.plot import plot_class_histogram
    from ltaug.metrics.overlap import plot_overlap

    names = ["$5 bill", "a$b", r"\frac"]
    plot_class_histogram([50, 10, 2], names, tmp_path / "h.png")
    plot_per_class_accuracy([0.5, 0.2, None], names, [50, 10, 2], tmp_path / "p.png", title="top-1 $")
    plot_overlap(np.eye(3), names, tmp_path / "o.png")
    assert all((tmp_path / f).read_bytes()[:4] == b"\x89PNG" for f in ("h.png", "p.png", "o.png"))


# ----------------------------------------------------------------------------------------------- the map of the code


def _tree_entries(text: str) -> dict[str, str]:
    """The `ltaug/` tree of docs/architecture.md as {top-level name: its text}: an entry starts at a line indented
    by two spaces (`  data/ ...`, `  files.py ...`) and runs until the next one."""
    block = re.search(r"^```\nltaug/\n(.*?)^```", text, re.S | re.M)
    assert block, "docs/architecture.md has no ```ltaug/ tree block"
    entries: dict[str, str] = {}
    name = None
    for line in block.group(1).splitlines():
        m = re.match(r"^  (\S+)", line)
        if m:
            name = m.group(1)
            entries[name] = ""
        elif re.match(r"^\S", line):  # recipes/, tests/, ...: outside ltaug/
            name = None
        if name is not None:
            entries[name] += line + "\n"
    return entries


def _unlisted_modules(text: str, root) -> list[str]:
    """Modules under ltaug/ that docs/architecture.md does not name in the tree: a top-level module by its file name
    anywhere in the tree, a package's module by its file name inside that package's entry; also a file name listed
    twice in one package's entry."""
    entries = _tree_entries(text)
    tree = "".join(entries.values())
    problems = []
    for path in sorted((root / "ltaug").rglob("*.py")):
        if path.name in ("__init__.py", "__main__.py"):
            continue
        rel = path.relative_to(root / "ltaug")
        word = re.compile(r"(?<![\w./])" + re.escape(path.name) + r"(?!\w)")
        if len(rel.parts) == 1:
            if not word.search(tree):
                problems.append(f"ltaug/{rel} is not in the tree")
            continue
        entry = entries.get(rel.parts[0] + "/", "")
        found = len(word.findall(entry))
        if found == 0:
            problems.append(f"ltaug/{rel} is not in the {rel.parts[0]}/ entry")
        elif found > 1:
            problems.append(f"ltaug/{rel} is listed {found} times in the {rel.parts[0]}/ entry")
    return problems


def test_docs_architecture_names_every_module():
    root = Path(__file__).resolve().parents[1]
    text = (root / "docs" / "architecture.md").read_text()
    assert _unlisted_modules(text, root) == []
    # the check can fail: a module taken out of the text (or listed twice) is reported
    assert _unlisted_modules(text.replace("stats.py", "stats"), root) == ["ltaug/stats.py is not in the tree"]
    assert _unlisted_modules(text.replace("agreement.py", "agreemnt.py"), root) == [
        "ltaug/metrics/agreement.py is not in the metrics/ entry"]
    twice = text.replace("prdc.py (blocked", "prdc.py prdc.py (blocked")
    assert _unlisted_modules(twice, root) == ["ltaug/metrics/prdc.py is listed 2 times in the metrics/ entry"]
