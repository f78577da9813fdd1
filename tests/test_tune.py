"""`ltaug tune`: a real local Ray started by the test, a 2-trial sweep with one trial failing on purpose, the best
recipe, the plot, resuming an interrupted sweep, and bad sweep files."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from ltaug.errors import LtaugError
from ltaug.tune import load_sweep, stages_for

BASE_SET = [
    "generator.preset=tiny", "generator.steps=6", "generator.batch_size=16", "generator.warmup=2",
    "generator.grid_every=0", "generator.grid_steps=2", "generator.grid_cols=1",
    "synth.fill_to=8", "synth.steps=2",
    "classifier.epochs=1", "classifier.batch_size=64", "evaluate.metrics=[]",
]


def _write_sweep(path: Path, models: list[str], **extra) -> Path:
    spec = {"recipe": "mnist_lt", "set": BASE_SET, "metric": "val_accuracy.overall", "mode": "max",
            "scheduler": "fifo", "max_concurrent": 1, "resources": {"cpu": 1, "gpu": 0},
            "space": {"classifier.model": {"grid": models}}, **extra}
    path.write_text(yaml.safe_dump(spec))
    return path


def test_stages_follow_the_swept_keys():
    assert stages_for(["generator.diffrop.margin"]) == "generator"
    assert stages_for(["synth.w", "classifier.lr"]) == "synth"
    assert stages_for(["classifier.synthetic_ratio"]) == "classifier"


def test_builtin_sweeps_are_valid():
    for name in ("margin", "tau_schedule", "synthetic_ratio", "gamma", "guidance", "negatives"):
        spec = load_sweep(name)
        assert spec.space and spec.metric


def test_every_yaml_in_the_readme_runs_as_shown(tmp_path):
    """Each ```yaml block of README.md and docs/usage.md is a sweep file load_sweep accepts (or, without `space`,
    a recipe)."""
    import re

    from ltaug.config import load_recipe

    root = Path(__file__).resolve().parents[1]
    text = "\n".join((root / name).read_text() for name in ("README.md", "docs/usage.md"))
    blocks = re.findall(r"^```yaml\n(.*?)^```", text, re.S | re.M)
    assert blocks
    for i, block in enumerate(blocks):
        f = tmp_path / f"block{i}.yaml"
        f.write_text(block)
        if "space" in (yaml.safe_load(block) or {}):
            load_sweep(f)
        else:
            load_recipe(f)


def test_tune_set_and_print_shrink_a_builtin_sweep_without_copying_it(tmp_path):
    from typer.testing import CliRunner

    from ltaug.cli import app

    runner = CliRunner()
    args = ["tune", "synthetic_ratio", "--set", "classifier.epochs=2", "--set", "num_samples=2",
            "--set", "space.classifier.synthetic_ratio={grid: [0, 1]}", "--print"]
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    (tmp_path / "mine.yaml").write_text(r.stdout)
    spec = load_sweep(tmp_path / "mine.yaml")  # the printed text is a sweep file: the same sweep
    assert spec == load_sweep("synthetic_ratio", ["classifier.epochs=2", "num_samples=2",
                                                  "space.classifier.synthetic_ratio={grid: [0, 1]}"])
    assert spec.set[-1] == "classifier.epochs=2" and spec.num_samples == 2
    assert spec.space == {"classifier.synthetic_ratio": {"grid": [0, 1]}}
    assert not list(tmp_path.glob("runs*")) and not Path("runs").joinpath("tune-synthetic_ratio").exists()
    r = runner.invoke(app, ["tune", "synthetic_ratio", "--set", "classifier.epochz=2", "--print"])
    assert r.exit_code == 2 and "classifier.epochz" in r.output
    r = runner.invoke(app, ["tune", "margin", "--set", "generator.loss=ddpm", "--print"])
    assert r.exit_code == 2 and "generator.loss=diffrop" in r.output


def test_a_trial_runs_only_the_stages_its_metric_needs():
    from ltaug.tune import SweepSpec, trial_stages

    def spec(metric, key):
        return SweepSpec(metric=metric, space={key: {"grid": [0, 1]}})

    assert trial_stages(spec("val_agreement.few", "generator.diffrop.tau")) == {"generator"}
    assert trial_stages(spec("val_accuracy.few", "generator.diffrop.tau")) == {"generator", "synth",
                                                                               "classifier-synth"}
    assert trial_stages(spec("val_accuracy.few", "synth.w")) == {"synth", "classifier-synth"}
    assert trial_stages(spec("val_accuracy.few", "classifier.synthetic_ratio")) == {"classifier-synth"}
    # a feature-space sweep runs its own stages (features, heads), all of them
    assert trial_stages(spec("val_accuracy.few", "generator.diffrop.gamma"), "features") is None


def test_a_restored_trial_gets_its_last_checkpoint_back(tmp_path):
    """On another node the trial's folder is gone: tune.get_checkpoint() (a copy in the sweep's storage) puts the
    generator's checkpoints or the classifier folder back, so the stages resume instead of starting over."""
    from ray.tune import Checkpoint

    from ltaug.tune import restore_checkpoint

    gen = tmp_path / "stored-gen"
    gen.mkdir()
    (gen / "ckpt-0000004.pt").write_bytes(b"step 4")
    run = tmp_path / "trial" / "run"
    assert restore_checkpoint(Checkpoint.from_directory(str(gen)), run) == run / "generator" / "checkpoints"
    assert (run / "generator" / "checkpoints" / "ckpt-0000004.pt").read_bytes() == b"step 4"
    (gen / "ckpt-0000004.pt").write_bytes(b"older copy")
    assert restore_checkpoint(Checkpoint.from_directory(str(gen)), run) is None  # the local folder wins
    assert (run / "generator" / "checkpoints" / "ckpt-0000004.pt").read_bytes() == b"step 4"
    clf = tmp_path / "stored-clf"
    clf.mkdir()
    (clf / "checkpoint.pt").write_bytes(b"epoch 3")
    # a classifier trained on the trial's own samples records their path: restored only where the set is shared
    assert restore_checkpoint(Checkpoint.from_directory(str(clf)), run, classifier=False) is None
    assert restore_checkpoint(Checkpoint.from_directory(str(clf)), run) == run / "classifier-synth"
    assert restore_checkpoint(None, run) is None


def test_the_judges_sample_size_is_a_recipe_key(monkeypatch):
    """The generator sweep's signal reads evaluate.judge_per_class images per class (default 32, not 8)."""
    import ltaug.pipeline as P
    from ltaug.config import load_recipe

    seen = []
    monkeypatch.setattr(P, "load_classifier", lambda path, device=None: ("judge", {}))
    monkeypatch.setattr(P, "load_generator", lambda path, device=None: "generator")

    def agreement(gen, clf, sampling, *, per_class, device):
        seen.append(per_class)
        return {g: {"agreement": 0.5, "leakage_into_head": 0.1} for g in ("overall", "many", "medium", "few")}

    monkeypatch.setattr(P, "judge_agreement", agreement)
    reports = []
    for sets in ([], ["evaluate.judge_per_class=5"]):
        forward = P._generator_tune_report(lambda m, c: reports.append(m), Path("judge"), load_recipe(None, sets),
                                           "val_agreement.few")
        forward({"loss": 1.0}, "ckpt")
    assert seen == [32, 5] and reports[-1]["val_agreement.few"] == 0.5


def test_bad_sweep_files(tmp_path):
    bad = _write_sweep(tmp_path / "a.yaml", ["test_cifar_resnet"])
    spec = yaml.safe_load(bad.read_text())
    spec["space"] = {"generator.not_a_key": {"grid": [1, 2]}}
    bad.write_text(yaml.safe_dump(spec))
    with pytest.raises(LtaugError, match="generator.not_a_key"):
        load_sweep(bad)
    spec["space"] = {"classifier.lr": [0.1, 0.2]}
    bad.write_text(yaml.safe_dump(spec))
    with pytest.raises(LtaugError, match="grid"):
        load_sweep(bad)
    spec["space"] = {"classifier.lr": {"grid": [0.1]}}
    spec["metrc"] = "x"
    bad.write_text(yaml.safe_dump(spec))
    with pytest.raises(LtaugError, match="unknown key 'metrc'"):
        load_sweep(bad)
    with pytest.raises(LtaugError, match="built-in sweeps: .*margin"):
        load_sweep(tmp_path / "missing.yaml")
    # sweeps choose on validation data: a test-set metric is refused, with the validation one named
    spec = yaml.safe_load(_write_sweep(tmp_path / "b.yaml", ["test_cifar_resnet"]).read_text())
    spec["metric"] = "accuracy.few"
    bad.write_text(yaml.safe_dump(spec))
    with pytest.raises(LtaugError, match="test-set number.*val_accuracy.few"):
        load_sweep(bad)
    spec["metric"] = "val_agreement.few"  # measured while a generator trains: not for a classifier-only sweep
    bad.write_text(yaml.safe_dump(spec))
    with pytest.raises(LtaugError, match="generator keys"):
        load_sweep(bad)
    # a DiffROP option swept under a recipe that trains with ddpm: every trial would be the same generator
    spec["metric"] = "val_agreement.few"
    spec["space"] = {"generator.diffrop.margin": {"grid": [0.01, 0.1]}}
    spec["set"] = [*BASE_SET, "generator.loss=ddpm"]
    bad.write_text(yaml.safe_dump(spec))
    with pytest.raises(LtaugError, match="generator.loss=diffrop"):
        load_sweep(bad)
    spec["set"] = [*BASE_SET, "generator.loss=cbdm+diffrop"]
    bad.write_text(yaml.safe_dump(spec))
    assert load_sweep(bad).space


def test_storage_uris_pass_local_paths_are_made_absolute_and_checked(tmp_path, monkeypatch):
    from ltaug.tune import storage_path

    monkeypatch.chdir(tmp_path)
    assert storage_path(None) is None
    assert storage_path("s3://bucket/sweeps") == "s3://bucket/sweeps"
    assert storage_path("rel/dir") == str(tmp_path / "rel" / "dir")
    (tmp_path / "afile").write_text("x")
    with pytest.raises(LtaugError, match="--storage afile/sub: .*is a file"):
        storage_path("afile/sub")


def test_tune_with_a_bad_storage_exits_2_and_writes_nothing(tmp_path):
    (tmp_path / "afile").write_text("x")
    out = tmp_path / "out"
    result = subprocess.run([*_tune_cmd(Path("margin"), out), "--storage", str(tmp_path / "afile" / "sub")],
                            env=_env(), capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stdout[-2000:] + result.stderr[-2000:]
    assert "--storage" in result.stdout + result.stderr and "is a file" in result.stdout + result.stderr
    assert not out.exists()


def _tune_cmd(sweep: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "ltaug", "tune", str(sweep), "--out", str(out), "--num-cpus", "2", *extra]


def _env() -> dict:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "LTAUG_PLAIN_PROGRESS": "1", "RAY_DEDUP_LOGS": "0",
            "OMP_NUM_THREADS": "1"}


@pytest.mark.slow
def test_sweep_with_a_failing_trial_then_resume_after_kill(tmp_path):
    """Two trials share one generator and its samples; one names a model that does not exist and fails. The sweep
    is killed (SIGKILL) after its first trial finishes, then resumed: every trial ends, the finished one is not
    re-run, the failure is recorded, the best recipe is a valid recipe and the plot exists."""
    sweep = _write_sweep(tmp_path / "sweep.yaml", ["test_cifar_resnet", "no_such_model_xyz"])
    out = tmp_path / "out"
    proc = subprocess.Popen(_tune_cmd(sweep, out), env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    deadline = time.time() + 400
    first_done = None
    try:
        while time.time() < deadline and proc.poll() is None:
            done = list((out / "ray").glob("*/*/run/stages/classifier-synth.json"))
            if done:
                first_done = done[0]
                break
            time.sleep(1)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert first_done is not None, "no trial finished before the deadline"
    log = first_done.parent.parent / "log.txt"  # the run's stage log (Ray's storage sync rewrites files, so no mtime)
    assert log.read_text().count("stage classifier-synth started") == 1
    assert (out / "shared" / "stages" / "synth.json").is_file()  # one generator + samples for every trial
    # a trial trains the real + synthetic classifier it reports on, nothing after it and no real-only baseline
    assert not any((first_done.parent.parent / name).exists()
                   for name in ("classifier-real", "evaluate", "report.html"))

    result = subprocess.run(_tune_cmd(sweep, out, "--resume"), env=_env(), capture_output=True, text=True,
                            timeout=400)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert log.read_text().count("stage classifier-synth started") == 1  # the finished trial was not re-run
    res = json.loads((out / "sweep_results.json").read_text())
    status = {t["config"]["classifier.model"]: t["status"] for t in res["trials"]}
    assert status == {"test_cifar_resnet": "OK", "no_such_model_xyz": "ERROR"}
    assert res["best"]["config"]["classifier.model"] == "test_cifar_resnet"
    from ltaug.config import load_recipe

    best = load_recipe(out / "best_recipe.yaml")
    assert best.classifier.model == "test_cifar_resnet" and best.generator.preset == "tiny"
    assert (out / "sweep.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.slow
def test_generator_sweep_reports_the_judges_agreement_at_each_checkpoint(tmp_path):
    """A generator sweep ranks trials by the judge's agreement on fresh samples, reported at every checkpoint (what
    ASHA can stop bad generators on); no test-set number reaches Tune."""
    sets = [s for s in BASE_SET if not s.startswith("classifier.")] + [
        "generator.steps=4", "generator.ckpt_every=2", "generator.log_every=1", "classifier.epochs=1",
        "classifier.model=test_cifar_resnet", "classifier.batch_size=64", "synth.steps=2", "generator.loss=diffrop"]
    sweep = tmp_path / "g.yaml"
    sweep.write_text(yaml.safe_dump({"recipe": "mnist_lt", "set": sets, "metric": "val_agreement.few",
                                     "mode": "max", "scheduler": "asha", "max_concurrent": 1,
                                     "resources": {"cpu": 1, "gpu": 0},
                                     "space": {"generator.diffrop.margin": {"grid": [0.0, 0.5]}}}))
    out = tmp_path / "out"
    # --storage as a relative path (pyarrow refuses those: ltaug makes it absolute), resolved from the cwd
    result = subprocess.run(_tune_cmd(sweep, out, "--storage", "trials"), env=_env(), capture_output=True,
                            text=True, timeout=600, cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert (out / "shared" / "stages" / "classifier-judge.json").is_file()  # one judge for every trial
    res = json.loads((out / "sweep_results.json").read_text())
    assert [t["status"] for t in res["trials"]] == ["OK", "OK"]
    assert all(Path(t["path"]).is_relative_to(tmp_path / "trials") for t in res["trials"])
    assert not (out / "ray").exists()
    assert all(0.0 <= t["metric"] <= 1.0 for t in res["trials"])
    for t in res["trials"]:
        rows = [json.loads(line) for line in (Path(t["path"]) / "result.json").read_text().splitlines()]
        steps = [r["step"] for r in rows if "val_agreement.few" in r]
        assert steps == [2, 4], rows  # a report at each checkpoint, with the judge's numbers
        # the trial ends with its last report: no samples, classifiers, evaluation or report after it
        assert not any((Path(t["path"]) / "run" / name).exists()
                       for name in ("synth", "classifier-real", "classifier-synth", "evaluate", "report.html"))
        assert not any(k.startswith(("accuracy.", "test_")) for r in rows for k in r)
