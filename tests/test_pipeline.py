"""`ltaug run` end to end on a tiny recipe, its resume, and the report."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from ltaug.cli import app
from ltaug.config import load_recipe
from ltaug.pipeline import STAGES, run_pipeline, stage_done

# Every stage, at the smallest size that still exercises it: a 0.2M-parameter UNet for 12 steps, DDIM-4 samples
# topping the tail classes up to 12, a 1-epoch test classifier, and the overlap diagnostics.
TINY = [
    "generator.preset=tiny", "generator.steps=12", "generator.batch_size=16", "generator.warmup=2",
    "generator.grid_every=0", "generator.grid_steps=4", "generator.grid_cols=2", "generator.ckpt_every=6",
    "synth.fill_to=12", "synth.steps=4", "synth.w=1.0",
    "classifier.model=test_cifar_resnet", "classifier.epochs=1", "classifier.batch_size=64",
    "evaluate.metrics=[overlap]", "evaluate.num_samples=20",
]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("pipeline") / "run"
    recipe = load_recipe("mnist_lt", TINY)
    summary = run_pipeline(recipe, run, progress=False)
    return run, recipe, summary


def test_every_stage_runs_and_leaves_its_outputs(tiny_run):
    run, _, summary = tiny_run
    for stage in ("generator", "synth", "classifier-real", "classifier-synth", "evaluate"):
        assert stage_done(run, stage), stage
    assert (run / "config.yaml").is_file() and (run / "env.json").is_file()
    assert list((run / "generator" / "checkpoints").glob("*.pt"))
    manifest = [json.loads(line) for line in (run / "synth" / "manifest.jsonl").read_text().splitlines()]
    # fill_to 12 tops up only the classes with fewer than 12 real images (MNIST-LT: 11, 6, 4 -> 1 + 6 + 8)
    assert len(manifest) == 1 + 6 + 8
    for name in ("real", "synth"):
        res = json.loads((run / f"classifier-{name}" / "results.json").read_text())
        assert 0.0 <= res["accuracy"]["overall"] <= 1.0
    ev = json.loads((run / "evaluate" / "results.json").read_text())
    assert "overlap" in ev
    # the summary has both accuracies and their difference
    for g in ("overall", "many", "medium", "few"):
        a, b, d = summary["accuracy_real"][g], summary["accuracy_synth"][g], summary["gain"][g]
        assert d == pytest.approx(b - a)
    assert set(summary["stages"]) >= {"generator", "synth", "classifier-real", "classifier-synth", "evaluate"}
    # the overlap diagnostics reach the summary: per group, the share read as the own class / as a head class
    assert 0.0 <= summary["generator_metrics"]["agreement.few"] <= 1.0
    assert 0.0 <= summary["generator_metrics"]["leakage_into_head.few"] <= 1.0


def test_report_is_self_contained(tiny_run):
    run, _, _ = tiny_run
    page = (run / "report.html").read_text()
    assert "<table>" in page and "real + synthetic" in page
    assert page.count("data:image/png;base64,") >= 3  # histogram, per-class accuracy, curves / overlap
    assert "src=\"http" not in page and "src='http" not in page


def test_resume_skips_finished_stages_and_refuses_another_recipe(tiny_run):
    run, recipe, summary = tiny_run
    before = {s: (run / "stages" / f"{s}.json").stat().st_mtime_ns for s in STAGES if stage_done(run, s)}
    again = run_pipeline(recipe, run, progress=False)
    after = {s: (run / "stages" / f"{s}.json").stat().st_mtime_ns for s in before}
    assert before == after  # nothing re-ran
    assert again["accuracy_synth"] == summary["accuracy_synth"]
    from ltaug.errors import LtaugError

    with pytest.raises(LtaugError, match="another recipe"):
        run_pipeline(load_recipe("mnist_lt", TINY + ["seed=5"]), run, progress=False)


def test_resume_after_an_interrupted_stage(tiny_run, tmp_path):
    """Delete the last stages' markers and outputs, as if killed mid-way: --resume redoes exactly those."""
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
    assert stage_done(copy, "classifier-synth") and stage_done(copy, "evaluate")
    assert (copy / "stages" / "generator.json").stat().st_mtime_ns == gen_mtime
    assert "gain" in result.output


def test_run_cli_bad_input(tmp_path):
    runner = CliRunner()
    r = runner.invoke(app, ["run", "--set", "generator.nope=1", "--out", str(tmp_path / "x")])
    assert r.exit_code == 2 and "generator.nope" in " ".join(r.output.split())
    assert not (tmp_path / "x").exists()
    r = runner.invoke(app, ["run", "--resume", str(tmp_path)])
    assert r.exit_code == 2 and "not a run directory" in " ".join(r.output.split())
