"""Hostile input at the newer edges: sweeps, pipeline folders and Hub-looking references, the classifier filter,
logging backends, very large recipe values, the overlap judge (export: tests/test_export.py).

Every case answers with one line naming the flag, key or file and the fix (exit 2 for usage, 1 for runtime), creates
or changes nothing, and never hangs. Cases that could exhaust memory or wait forever on code without their bound run
in a real `python -m ltaug` process with a memory limit and a timeout, so the test fails instead of the machine.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from typer.testing import CliRunner

from ltaug.cli import app
from ltaug.errors import LtaugError

pytestmark = pytest.mark.usefixtures("one_torch_thread")

ROOT = Path(__file__).resolve().parents[1]
TINY = ["device=cpu", "generator.preset=tiny", "generator.batch_size=8", "generator.warmup=1", "generator.steps=1",
        "generator.grid_every=0", "generator.grid_cols=1", "generator.grid_steps=2", "generator.log_every=1"]
QUICK = [a for s in TINY if not s.startswith("device") for a in ("--set", s)] + ["--device", "cpu", "--no-progress"]
SYNTH = ["--steps", 2, "--device", "cpu", "--quiet"]
MEMORY = 8 << 30  # address space of a limited process: torch and Ray map about 5 GiB at import


def invoke(*args) -> tuple[int, str]:
    r = CliRunner().invoke(app, [str(a) for a in args])
    assert "Traceback" not in r.output, r.output
    if r.exception is not None and not isinstance(r.exception, SystemExit):
        raise r.exception
    return r.exit_code, " ".join(r.output.split())


def limited(*args, timeout: float = 120, env: dict | None = None, cwd: Path | None = None) -> tuple[int, str]:
    """`python -m ltaug ARGS` in a real process with a memory limit and a timeout (a hang or an unbounded
    allocation fails the test, never the machine)."""
    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (MEMORY, MEMORY))

    path = os.pathsep.join(p for p in [str(ROOT), (env or os.environ).get("PYTHONPATH", "")] if p)
    try:
        p = subprocess.run([sys.executable, "-m", "ltaug", *map(str, args)], capture_output=True, text=True,
                           timeout=timeout, preexec_fn=limit, cwd=cwd,
                           env={**(env or os.environ), "PYTHONPATH": path, "HF_HUB_OFFLINE": "1"})
    except subprocess.TimeoutExpired:
        pytest.fail(f"ltaug {' '.join(map(str, args))} still running after {timeout} s")
    text = p.stdout + p.stderr
    assert "Traceback" not in text, text
    return p.returncode, " ".join(text.split())


def snapshot(root: Path) -> dict:
    return {str(p.relative_to(root)): (p.read_bytes() if p.is_file() and not p.is_symlink() else None)
            for p in sorted(root.rglob("*"))}


@pytest.fixture(scope="module")
def gen_run(tmp_path_factory) -> Path:
    """A real generator run (the tiny preset, one step on MNIST-LT) with its pipeline folder."""
    from ltaug.config import load_recipe
    from ltaug.diffusion.train import train_generator

    run = tmp_path_factory.mktemp("edges") / "run"
    train_generator(load_recipe("mnist_lt", TINY), run, progress=False)
    return run


def alias_bomb(levels: int = 9) -> str:
    """YAML whose aliases expand to 10**levels values in a few hundred bytes."""
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    for i in range(1, levels):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]")
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------------------- sizes and YAML bounds


def test_yaml_alias_bombs_and_deep_nesting_are_refused_by_name(tmp_path):
    from ltaug.config import read_recipe_file
    from ltaug.tune import load_sweep

    bomb = alias_bomb()
    recipe = tmp_path / "bomb.yaml"  # a recipe whose synth.classes is a billion names once expanded
    recipe.write_text("anchors:\n" + textwrap.indent(bomb, "  ") + "synth:\n  classes: *a8\n")
    with pytest.raises(LtaugError, match=r"bomb.yaml: holds more than 100,000 values .*aliases"):
        read_recipe_file(recipe)
    out = tmp_path / "run"
    code, text = limited("train-generator", "--recipe", recipe, "--out", out, *QUICK)
    assert code == 2 and str(recipe) in text and "100,000" in text, text
    assert not out.exists()
    sweep = tmp_path / "sweep.yaml"  # a grid nested 40 deep, then a grid of a billion values once expanded
    head = yaml.safe_dump({"recipe": "mnist_lt", "metric": "val_accuracy.few"})
    sweep.write_text(head + "space:\n  classifier.lr: {grid: " + "[" * 40 + "]" * 40 + "}\n")
    with pytest.raises(LtaugError, match=r"sweep.yaml: nested more than 32 levels"):
        load_sweep(sweep)
    sweep.write_text("anchors:\n" + textwrap.indent(bomb, "  ") + head + "space:\n  classifier.lr: {grid: *a8}\n")
    code, text = limited("tune", sweep, "--out", tmp_path / "sweep-out")
    assert code == 2 and str(sweep) in text and "aliases" in text, text
    assert not (tmp_path / "sweep-out").exists()
    code, text = invoke("config", "--set", "synth.classes=" + "[" * 50 + "]" * 50)  # --set values: the same reader
    assert code == 2 and "--set" in text and "nested more than 32 levels" in text, text


def test_a_huge_synthesis_plan_is_refused_before_anything_is_written(gen_run, tmp_path):
    from ltaug.synth.plan import make_plan

    out = tmp_path / "s"
    code, text = limited("synthesize", gen_run, "--out", out, "--per-class", 1_000_000_000, *SYNTH)
    assert code == 2 and "--per-class 1000000000" in text and "1,000,000" in text, text
    assert not out.exists()
    code, text = invoke("synthesize", gen_run, "--out", out, "--fill-to", 10**12, *SYNTH)
    assert code == 2 and "--fill-to" in text and "1,000,000" in text and not out.exists(), text
    # the plan's total has its own bound (100 classes x 200,000 each), named with the flag that set it
    with pytest.raises(LtaugError, match=r"--per-class 200000: the plan would draw 20,000,000 images .*10,000,000"):
        make_plan([str(i) for i in range(100)], [5] * 100, per_class=200_000)


@pytest.mark.parametrize("key, value, bound", [("generator.batch_size", 10**8, "65,536"),
                                               ("classifier.batch_size", 10**8, "65,536"),
                                               ("data.resolution", 10**5, "1,024"),
                                               ("evaluate.kid_subsets", 10**9, "100,000")])
def test_very_large_recipe_values_are_refused_with_their_bound(tmp_path, key, value, bound):
    code, text = invoke("train-generator", "--out", tmp_path / "run", *QUICK, "--set", f"{key}={value}")
    assert code == 2 and f"'{key}'" in text and f"at most {bound}" in text, text
    assert not (tmp_path / "run").exists()


def test_evaluate_num_samples_names_its_flag_and_its_bounds(gen_run, tmp_path):
    for n, bound in ((1, ">= 2"), (10**9, "at most 1,000,000")):
        code, text = invoke("evaluate", gen_run, "--num-samples", n, "--metrics", "overlap", "--out", tmp_path / "e")
        assert code == 2 and f"--num-samples {n}" in text and "evaluate.num_samples" in text and bound in text, text
        assert not (tmp_path / "e").exists()


# ----------------------------------------------------------------------------------------- synthesis and its filter


def _classifier_checkpoint(path: Path, kind: str) -> Path:
    """A classifier checkpoint for the MNIST-LT generator that is wrong in one way (real networks, real files)."""
    from ltaug.classify.models import build_model

    meta = {"model": "cifar_resnet8", "classes": [str(i) for i in range(10)], "in_chans": 1, "resolution": 28,
            "mean": [0.5], "std": [0.25], "counts": [1] * 10, "normed_head": False, "logit_scale": 1.0}
    path.mkdir(parents=True)
    if kind == "no weights":
        state = {"meta": meta, "epoch": 1}
    elif kind == "other architecture":  # weights of a cifar_resnet8, meta says cifar_resnet20
        state = {"model": build_model("cifar_resnet8", 10, 1)[0].state_dict(), "meta": {**meta,
                                                                                         "model": "cifar_resnet20"}}
    else:  # an RGB classifier, consistent in itself, for a grayscale generator
        state = {"model": build_model("cifar_resnet8", 10, 3)[0].state_dict(), "meta": {**meta, "in_chans": 3,
                                                                                         "mean": [0.5] * 3,
                                                                                         "std": [0.25] * 3}}
    torch.save(state, path / "checkpoint.pt")
    return path


@pytest.mark.parametrize("kind, words", [("no weights", "no 'model' weights"),
                                         ("other architecture", "do not fit the network"),
                                         ("rgb for grayscale", "3-channel images but the generator makes 1")])
def test_a_filter_classifier_that_does_not_fit_is_refused_before_the_folder(gen_run, tmp_path, kind, words):
    clf = _classifier_checkpoint(tmp_path / "clf", kind)
    out = tmp_path / "s"
    code, text = invoke("synthesize", gen_run, "--out", out, "--per-class", 1, "--classes", "7",
                        "--filter-classifier", clf, *SYNTH)
    assert code == 2 and "--filter-classifier" in text and words in text, text
    assert not out.exists()  # no class folders, no settings, no plan


def test_a_synthesis_refused_for_a_smaller_plan_leaves_the_folder_as_it_was(gen_run, tmp_path):
    out = tmp_path / "s"
    assert invoke("synthesize", gen_run, "--out", out, "--per-class", 2, "--classes", "7", *SYNTH)[0] == 0
    before = snapshot(out)
    code, text = invoke("synthesize", gen_run, "--out", out, "--per-class", 1, "--classes", "7,8", *SYNTH)
    assert code == 2 and "already holds 2 images of class '7'" in text, text
    assert snapshot(out) == before  # plan.json unchanged, no folder for class 8


def test_a_pipeline_folder_with_betas_outside_0_1_is_named(gen_run, tmp_path):
    folder = shutil.copytree(gen_run / "generator" / "diffusers", tmp_path / "pipe")
    config = folder / "scheduler" / "scheduler_config.json"
    for bad in (1.5, 0.0, -0.1):
        sched = json.loads(config.read_text())
        sched["trained_betas"][3] = bad
        config.write_text(json.dumps(sched))
        code, text = invoke("synthesize", folder, "--out", tmp_path / "s", "--per-class", 1, *SYNTH)
        assert code == 2 and "scheduler_config.json" in text and "trained_betas" in text and "between 0 and 1" in text
        assert not (tmp_path / "s").exists()


def test_references_that_look_like_the_hub_or_a_mistyped_run_are_answered_as_local(gen_run, tmp_path, monkeypatch):
    runs = tmp_path / "runs"
    runs.mkdir()
    shutil.copytree(gen_run, runs / "00001-mnist", symlinks=True)
    monkeypatch.chdir(tmp_path)
    code, text = invoke("synthesize", "runs/00001-mnst", "--per-class", 1, *SYNTH)
    assert code == 2 and "RUN_DIR runs/00001-mnst does not exist (no such local file or folder)" in text, text
    assert "did you mean runs/00001-mnist" in text and "Hub" not in text.split("(or a Hub")[0], text
    code, text = invoke("evaluate", "runs/00001-mnst", "--metrics", "overlap", "--out", tmp_path / "e")
    assert code == 2 and "PATH runs/00001-mnst does not exist (no such local file or folder)" in text, text
    for ref in ("hf:/someone/model", "hf:someone/model"):
        code, text = invoke("synthesize", ref, "--per-class", 1, *SYNTH)
        assert code == 2 and f"{ref}: a Hub reference is hf://OWNER/NAME" in text, text
    assert sorted(p.name for p in tmp_path.iterdir()) == ["runs"]


# ----------------------------------------------------------------------------------------- data and logging


def test_a_hidden_class_folder_is_never_dropped_silently(tmp_path):
    from PIL import Image

    for cls in ("a", "b", "..b", "..."):
        (tmp_path / "data" / cls).mkdir(parents=True)
        Image.new("L", (8, 8), 255 if cls == "a" else 0).save(tmp_path / "data" / cls / "0.png")
    code, text = invoke("data", "info", f"folder:{tmp_path / 'data'}")
    assert code == 2 and "sub-folder '...'" in text and "leading dot" in text, text
    shutil.rmtree(tmp_path / "data" / "...")
    code, text = invoke("train-generator", "--out", tmp_path / "run", "--dataset", f"folder:{tmp_path / 'data'}",
                        *QUICK)
    assert code == 2 and "sub-folder '..b'" in text and not (tmp_path / "run").exists(), text


def test_tensorboard_chosen_but_not_installed_is_one_line(tmp_path):
    shadow = tmp_path / "shadow" / "tensorboardX"  # `import tensorboardX` fails as when it is not installed
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ModuleNotFoundError(\"No module named 'tensorboardX'\", "
                                        "name='tensorboardX')\n")
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "shadow")}
    out = tmp_path / "run"
    code, text = limited("train-generator", "--out", out, *QUICK, "--set", "logging.backends=[jsonl, tensorboard]",
                         env=env)
    assert code == 2 and "logging.backends" in text and "tensorboardX" in text and "pip install" in text, text
    assert not out.exists()
    code, text = limited("train-generator", "--out", out, *QUICK, env=env)  # not chosen: not needed
    assert code == 0, text


# ----------------------------------------------------------------------------------------- classifier resume


def test_a_refused_classifier_resume_changes_nothing(tmp_path):
    npz = tmp_path / "d.npz"
    rng = np.random.default_rng(1)
    np.savez(npz, images=rng.integers(0, 255, (24, 16, 16, 1), dtype=np.uint8), labels=np.arange(24) % 3,
             classes=np.array(["x", "y", "z"]))
    base = ["--out", tmp_path / "run", "--model", "test_cifar_resnet", "--epochs", 1, "--batch-size", 8, "--device",
            "cpu", "--no-progress", "--set", f"data.dataset=npz:{npz}", "--set", f"data.test_dataset=npz:{npz}",
            "--set", "data.resolution=16"]
    assert invoke("train-classifier", *base)[0] == 0
    ckpt = tmp_path / "run" / "classifier-real" / "checkpoint.pt"
    good = ckpt.read_bytes()
    cases = {"a changed recipe": (lambda: None, ["--lr", 0.5], "classifier.lr"),
             "a truncated checkpoint": (lambda: ckpt.write_bytes(good[:len(good) // 2]), [], "not a readable"),
             "a checkpoint without weights": (lambda: torch.save({"meta": {}, "epoch": 1}, ckpt), [],
                                              "not an ltaug classifier checkpoint"),
             "a checkpoint without its recipe": (lambda: torch.save({**torch.load(ckpt, weights_only=True),
                                                                     "recipe": None}, ckpt), [], "holds no recipe"),
             "not a checkpoint at all": (lambda: torch.save([1, 2, 3], ckpt), [],
                                         "not an ltaug classifier checkpoint")}
    for name, (plant, extra, words) in cases.items():
        ckpt.write_bytes(good)
        plant()
        before = snapshot(tmp_path / "run")
        code, text = invoke("train-classifier", *base, "--resume", *extra)
        assert code == 2 and words in text, (name, text)
        assert snapshot(tmp_path / "run") == before, name  # not even a line in log.txt


# ----------------------------------------------------------------------------------------- sweeps


def _sweep(path: Path, space: dict, **extra) -> Path:
    path.write_text(yaml.safe_dump({"recipe": "mnist_lt", "metric": "val_accuracy.few", "scheduler": "fifo",
                                    "set": ["generator.steps=1", "classifier.epochs=1"], "space": space, **extra}))
    return path


@pytest.mark.parametrize("space, words", [
    ({"generator.lr": {"grid": [1e-3, -1]}}, "space key 'generator.lr' (grid), value 2 (-1)"),
    ({"classifier.epochs": {"choice": [1, 2, 0]}}, "space key 'classifier.epochs' (choice), value 3 (0)"),
    ({"classifier.lr": {"uniform": [-0.5, 0.1]}}, "space key 'classifier.lr' (uniform), lower bound -0.5"),
])
def test_every_point_of_a_sweep_is_checked_before_any_trial(tmp_path, space, words):
    from ltaug.tune import load_sweep

    sweep = _sweep(tmp_path / "s.yaml", space)
    with pytest.raises(LtaugError) as e:
        load_sweep(sweep)
    assert words in str(e.value) and str(sweep) in str(e.value)
    code, text = invoke("tune", sweep, "--out", tmp_path / "out")
    assert code == 2 and words in text, text
    assert not (tmp_path / "out").exists()


def test_a_storage_uri_ray_cannot_write_is_refused_by_name(tmp_path):
    from ltaug.tune import storage_path

    with pytest.raises(LtaugError, match=r"--storage foo://bucket/sweeps: 'foo://' is not a storage"):
        storage_path("foo://bucket/sweeps")
    assert storage_path("s3://bucket/sweeps") == "s3://bucket/sweeps"
    sweep = _sweep(tmp_path / "s.yaml", {"classifier.lr": {"grid": [0.1]}})
    code, text = invoke("tune", sweep, "--out", tmp_path / "out", "--storage", "foo://bucket/sweeps")
    assert code == 2 and "--storage foo://bucket/sweeps" in text, text
    assert not (tmp_path / "out").exists()


def test_a_sweep_asking_for_resources_the_machine_lacks_is_refused_at_once(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    sweep = _sweep(tmp_path / "s.yaml", {"classifier.lr": {"grid": [0.1]}}, resources={"cpu": 1, "gpu": 1})
    code, text = limited("tune", sweep, "--out", tmp_path / "out", timeout=90)
    assert code == 2 and "resources.gpu 1" in text and "0 GPU(s)" in text, text
    assert not (tmp_path / "out").exists()
    sweep = _sweep(tmp_path / "s.yaml", {"classifier.lr": {"grid": [0.1]}}, resources={"cpu": 64, "gpu": 0})
    code, text = invoke("tune", sweep, "--out", tmp_path / "out", "--num-cpus", 2)
    assert code == 2 and "resources.cpu 64" in text and "2 CPU(s)" in text and "--num-cpus" in text, text


# ----------------------------------------------------------------------------------------- the overlap judge


def test_the_judge_accuracy_on_real_images_stands_beside_each_agreement(tmp_path):
    """A real (weak) judge trained on real images: each class's agreement is reported with the judge's own accuracy
    on real test images of that class, in evaluate's results, the summary and report.html."""
    from ltaug.metrics.evaluate import _overlap
    from ltaug.pipeline import summarize
    from ltaug.report import build_report
    from ltaug.rundir import RunDir

    npz = tmp_path / "d.npz"
    rng = np.random.default_rng(1)
    images = rng.integers(0, 255, (48, 16, 16, 1), dtype=np.uint8)
    labels = np.array([0] * 30 + [1] * 12 + [2] * 6)
    np.savez(npz, images=images, labels=labels, classes=np.array(["x", "y", "z"]))
    run = tmp_path / "run"
    assert invoke("train-classifier", "--out", run, "--model", "test_cifar_resnet", "--epochs", 1, "--batch-size",
                  8, "--device", "cpu", "--no-progress", "--set", f"data.dataset=npz:{npz}", "--set",
                  f"data.test_dataset=npz:{npz}", "--set", "data.resolution=16")[0] == 0
    judge = run / "classifier-real"
    own = json.loads((judge / "results.json").read_text())
    overlap = _overlap(str(judge), images, labels, ["x", "y", "z"], [30, 12, 6], "cpu", 64, tmp_path)
    rows = overlap["leakage"]["per_class"]
    assert [r["judge_accuracy_real"] for r in rows] == own["per_class"]
    few = [own["per_class"][r["class"]] for r in rows if r["group"] == "few"]
    assert few and overlap["leakage"]["few"]["judge_accuracy_real"] == pytest.approx(np.mean(few))
    (run / "evaluate").mkdir()
    (run / "evaluate" / "results.json").write_text(json.dumps({"classes": ["x", "y", "z"], "overlap": overlap}))
    summary = summarize(RunDir(run), {})
    assert summary["generator_metrics"]["judge_accuracy_real.few"] == pytest.approx(np.mean(few))
    html = build_report(run).read_text()
    assert "judge accuracy (real test images)" in html and "agreement (generated)" in html


def test_a_ray_worker_leaves_no_copy_of_the_checkpoint_it_received(gen_run, tmp_path, monkeypatch):
    """A worker on a joined cluster gets the checkpoint's bytes through the object store; the file it loads them
    from is deleted once loaded (the actor class itself, run in this process)."""
    import tempfile

    from ltaug.config import SynthConfig
    from ltaug.diffusion.checkpoint import resolve_checkpoint
    from ltaug.synth.engine import _Worker

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    worker = _Worker(resolve_checkpoint(gen_run).read_bytes(), SynthConfig(steps=2, per_class=1, fill_to=0), "cpu", 1)
    assert list(tmp_path.iterdir()) == []
    labels, seeds, images = worker.generate([7], [12345])
    assert images.shape[0] == 1 and labels == [7]
