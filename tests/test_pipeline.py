"""`ltaug run` end to end on a tiny recipe, its resume, the report, and the evaluation protocol it shares with
`ltaug evaluate`."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from ltaug.cli import app
from ltaug.config import load_recipe
from ltaug.pipeline import STAGES, run_pipeline
from ltaug.rundir import RunDir

# Every stage, at the smallest size that still exercises it: a 0.2M-parameter UNet for 12 steps, DDIM-4 samples
# (eta 0.5, so that the sampling noise setting must reach the evaluation) topping the tail classes up to 12, a
# 1-epoch test classifier, and the overlap diagnostics.
TINY = [
    "generator.preset=tiny", "generator.steps=12", "generator.batch_size=16", "generator.warmup=2",
    "generator.grid_every=0", "generator.grid_steps=4", "generator.grid_cols=2", "generator.ckpt_every=6",
    "synth.fill_to=12", "synth.steps=4", "synth.w=1.0", "synth.eta=0.5",
    "classifier.model=test_cifar_resnet", "classifier.epochs=1", "classifier.batch_size=64",
    "evaluate.metrics=[overlap]", "evaluate.num_samples=20",
]
PROTOCOL = ("reference", "reference_split", "num_generated", "sampler", "steps", "eta", "variance", "w", "amp",
            "clip_x0", "checkpoint", "checkpoint_sha256", "seed")


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("pipeline") / "run"
    recipe = load_recipe("mnist_lt", TINY)
    summary = run_pipeline(recipe, run, progress=False)
    return run, recipe, summary


def _json(path):
    return json.loads(path.read_text())


def test_every_stage_runs_and_leaves_its_outputs(tiny_run):
    run, _, summary = tiny_run
    rd = RunDir(run)
    for stage in ("generator", "synth", "classifier-real", "classifier-synth", "evaluate"):
        assert rd.stage_done(stage), stage
    assert (run / "config.yaml").is_file() and (run / "env.json").is_file()
    assert list((run / "generator" / "checkpoints").glob("*.pt"))
    manifest = [json.loads(line) for line in (run / "synth" / "manifest.jsonl").read_text().splitlines()]
    # fill_to 12 tops up only the classes with fewer than 12 real images (MNIST-LT: 11, 6, 4 -> 1 + 6 + 8)
    assert len(manifest) == 1 + 6 + 8
    # the checkpoint is recorded relative to the run, whatever the caller's working directory was
    assert {r["checkpoint"] for r in manifest} == {"generator/checkpoints/ckpt-0000012.pt"}
    for name in ("real", "synth"):
        res = _json(run / f"classifier-{name}" / "results.json")
        cm = np.array(res["confusion"])
        assert res["accuracy"]["overall"] == pytest.approx(np.trace(cm) / cm.sum())  # what the numbers mean
        assert res["per_class"] == pytest.approx((np.diag(cm) / cm.sum(1)).tolist())
        # and on the validation split (what sweeps choose on): the digits neither training nor test uses
        assert res["val_set"] == "mnist-val" and res["val_counts"] == [0] + [100] * 9
        assert summary[f"val_accuracy_{name}"] == res["val_accuracy"]
    ev = _json(run / "evaluate" / "results.json")
    assert "overlap" in ev
    # the summary has both accuracies and their difference
    for g in ("overall", "many", "medium", "few"):
        a, b, d = summary["accuracy_real"][g], summary["accuracy_synth"][g], summary["gain"][g]
        assert d == pytest.approx(b - a)
    assert set(summary["stages"]) >= {"generator", "synth", "classifier-real", "classifier-synth", "evaluate"}
    # the overlap diagnostics reach the summary: per group, the share read as the own class / as a head class,
    # the numbers of evaluate/results.json (judged by the run's own real-only classifier)
    assert ev["overlap"]["classifier"] == str(run / "classifier-real")
    leakage = ev["overlap"]["leakage"]
    assert summary["generator_metrics"]["agreement.few"] == leakage["few"]["agreement"]
    assert summary["generator_metrics"]["leakage_into_head.few"] == leakage["few"]["leakage_into_head"]
    m = np.array(ev["overlap"]["matrix"], dtype=float)
    few = [i for i, n in enumerate(summary["train_counts"]) if n < 20]
    assert leakage["few"]["agreement"] == pytest.approx(float(np.mean(np.diag(m)[few])))


def test_grids_are_labelled_and_the_final_step_is_drawn(tiny_run):
    run, _, _ = tiny_run
    grids = sorted(p.name for p in (run / "generator" / "grids").glob("*.png"))
    assert grids == ["grid-0000012.png"]  # grid_every 0: the final step's grid only
    grid = np.asarray(Image.open(run / "generator" / "grids" / grids[-1]))
    cols, side, scale = 2, 16, 2
    assert grid.shape[0] >= 10 * side * scale and grid.shape[1] > cols * (side * scale + 2) + 20  # a label column
    # synth/grid.png: one row per class that got images (the three tail classes), head to tail
    sgrid = np.asarray(Image.open(run / "synth" / "grid.png"))
    assert 3 * side * scale <= sgrid.shape[0] < 4 * side * scale + 20


def test_report_is_self_contained(tiny_run):
    run, _, _ = tiny_run
    page = (run / "report.html").read_text()
    assert "<table>" in page and "real + synthetic" in page
    assert page.count("data:image/png;base64,") >= 3  # histogram, per-class accuracy, curves / overlap
    assert "src=\"http" not in page and "src='http" not in page
    assert "Synthetic samples" in page  # synth/grid.png exists now, so its section appears
    assert "Generator metrics" in page and "leakage_into_head" in page


def test_resume_skips_finished_stages_and_refuses_another_recipe(tiny_run):
    run, recipe, summary = tiny_run
    rd = RunDir(run)
    before = {s: (run / "stages" / f"{s}.json").stat().st_mtime_ns for s in STAGES if rd.stage_done(s)}
    again = run_pipeline(recipe, run, progress=False)
    after = {s: (run / "stages" / f"{s}.json").stat().st_mtime_ns for s in before}
    assert before == after  # nothing re-ran
    assert again["stages"] == summary["stages"]  # the stage times come from the markers, not from a new run
    from ltaug.errors import LtaugError

    with pytest.raises(LtaugError, match="another recipe"):
        run_pipeline(load_recipe("mnist_lt", TINY + ["seed=5"]), run, progress=False)


def test_resume_after_an_interrupted_stage(tiny_run, tmp_path):
    """Delete the last stages' markers and outputs, as if killed mid-way: --resume redoes exactly those, and the
    redone classifier is the same classifier (every draw is seeded)."""
    import shutil

    run, _, _ = tiny_run
    copy = tmp_path / "copy"
    shutil.copytree(run, copy)
    for stage in ("classifier-synth", "evaluate"):
        (copy / "stages" / f"{stage}.json").unlink()
    shutil.rmtree(copy / "classifier-synth")
    gen_mtime = (copy / "stages" / "generator.json").stat().st_mtime_ns
    result = CliRunner().invoke(app, ["run", "--resume", str(copy)])
    assert result.exit_code == 0, result.output
    assert RunDir(copy).stage_done("classifier-synth") and RunDir(copy).stage_done("evaluate")
    assert (copy / "stages" / "generator.json").stat().st_mtime_ns == gen_mtime
    assert "gain" in result.output
    assert "evaluate.metrics = ['overlap']" in " ".join(result.output.split())  # what the run did not measure
    original = _json(run / "classifier-synth" / "results.json")
    redone = _json(copy / "classifier-synth" / "results.json")
    assert redone["confusion"] == original["confusion"] and redone["per_class"] == original["per_class"]
    # --json: the summary as one object on stdout (the finished run is only summarized again)
    again = CliRunner().invoke(app, ["run", "--resume", str(copy), "--json", "-q"])
    assert again.exit_code == 0, again.output
    summary = json.loads(again.stdout)
    assert summary["accuracy_synth"] == _json(copy / "summary.json")["accuracy_synth"]
    assert summary["report"].endswith("report.html")


def test_run_and_evaluate_record_the_same_protocol(tiny_run, tmp_path):
    """The same recipe gives the same evaluation protocol whichever command runs it."""
    run, _, _ = tiny_run
    r = CliRunner().invoke(app, ["evaluate", str(run), "--out", str(tmp_path / "ev")])
    assert r.exit_code == 0, r.output
    mine = _json(tmp_path / "ev" / "results.json")["protocol"]
    theirs = _json(run / "evaluate" / "results.json")["protocol"]
    assert {k: mine.get(k) for k in PROTOCOL} == {k: theirs.get(k) for k in PROTOCOL}
    assert theirs["reference"] == "mnist-lt" and theirs["reference_split"] == "test"
    assert (theirs["eta"], theirs["steps"], theirs["w"], theirs["variance"], theirs["amp"]) == (0.5, 4, 1.0, None,
                                                                                                   "none")
    assert _json(tmp_path / "ev" / "results.json")["overlap"]["classifier"] == str(run / "classifier-real")


def test_run_cli_bad_input(tmp_path):
    runner = CliRunner()
    r = runner.invoke(app, ["run", "--set", "generator.nope=1", "--out", str(tmp_path / "x")])
    assert r.exit_code == 2 and "generator.nope" in " ".join(r.output.split())
    assert not (tmp_path / "x").exists()
    r = runner.invoke(app, ["run", "--resume", str(tmp_path)])
    assert r.exit_code == 2 and "not a run directory" in " ".join(r.output.split())
