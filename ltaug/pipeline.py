"""The whole pipeline in one run directory: generator -> synthesis -> classifiers (real, real + synthetic) ->
evaluation -> report. `ltaug run` and every Ray Tune trial call `run_pipeline`.

Each finished stage leaves a marker in RUN/stages/<stage>.json (its wall time and what it returned), so
`ltaug run --resume RUN` skips finished stages and resumes the interrupted one (the generator from its last
checkpoint, synthesis from the images already written, a classifier from its last epoch).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Callable, Optional

from ltaug.errors import LtaugError
from ltaug.rundir import atomic_write_json, init_run_dir, log

STAGES = ("generator", "synth", "classifier-real", "classifier-synth", "evaluate", "report")

Report = Callable[[dict, Optional[str]], None]


def _marker(run: Path, stage: str) -> Path:
    return run / "stages" / f"{stage}.json"


def stage_done(run: Path, stage: str) -> bool:
    return _marker(run, stage).is_file()


def _finish(run: Path, stage: str, seconds: float, info: dict | None = None) -> None:
    atomic_write_json(_marker(run, stage), {"stage": stage, "seconds": seconds, **(info or {})})
    log(run, f"stage {stage} finished in {seconds:.1f}s")


def _device(recipe) -> str:
    if recipe.device != "auto":
        return recipe.device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def run_generator_stage(recipe, run: Path, *, progress: bool, report: Report | None = None) -> None:
    from ltaug.diffusion.train import train_generator

    resume = (run / "generator" / "checkpoints").is_dir() and any((run / "generator" / "checkpoints").glob("*.pt"))
    train_generator(recipe, run, resume=resume, report=report, progress=progress)


def run_synth_stage(recipe, generator_from: Path, out: Path, *, progress: bool) -> dict:
    from ltaug.synth.run import synthesize_from_config

    res = synthesize_from_config(generator_from, recipe.synth, seed=recipe.seed, out_dir=out, device=_device(recipe),
                                 progress=progress)
    return {"generated": res.generated, "counts": {str(k): v for k, v in res.counts.items()},
            "images_per_s": res.images_per_s}


def run_classifier_stage(recipe, run: Path, name: str, synthetic: list[Path], *, progress: bool,
                         report: Report | None = None) -> dict:
    from ltaug.classify.train import train_classifier

    out = run / f"classifier-{name}"
    resume = out.is_dir() and any(out.glob("*.pt"))
    return train_classifier(recipe, out, synthetic=[str(p) for p in synthetic], report=report, progress=progress,
                            resume=resume)


def run_evaluate_stage(recipe, generator_from: Path, run: Path, classifier: Path | None, *, progress: bool) -> dict:
    from ltaug.data.sources import test_name
    from ltaug.metrics.evaluate import evaluate

    ev = recipe.evaluate
    reference = ev.reference or recipe.data.test_dataset or test_name(recipe.data.dataset)
    if not reference:
        raise LtaugError(f"evaluate: no reference set for dataset '{recipe.data.dataset}'; set evaluate.reference")
    metrics = list(ev.metrics)
    if "overlap" in metrics and classifier is None:
        metrics.remove("overlap")
    return evaluate(generator_from, reference, metrics, ev.num_samples, out_dir=run / "evaluate",
                    reference_split=ev.reference_split, data_root=recipe.data.data_root or None,
                    inception_weights=ev.inception_weights or None, fid_mode=ev.fid_mode,
                    classifier=str(classifier) if classifier else None, device=_device(recipe),
                    per_class=ev.per_class, sampler=recipe.synth.sampler,
                    steps=recipe.synth.steps, w=recipe.synth.w, eta=recipe.synth.eta, seed=recipe.seed,
                    batch_size=ev.batch_size, pr_k=ev.pr_k, kid_subsets=ev.kid_subsets,
                    kid_subset_size=ev.kid_subset_size, min_samples=ev.min_samples, progress=progress)


def prepare_shared(recipe, shared_dir: Path, *, upto: str, progress: bool = True) -> dict:
    """For sweeps that do not change the generator: train it once (and, for classifier-only sweeps, sample once)."""
    shared_dir = Path(shared_dir)
    if not (shared_dir / "config.yaml").is_file():
        init_run_dir(shared_dir, recipe)
    t0 = time.perf_counter()
    if not stage_done(shared_dir, "generator"):
        run_generator_stage(recipe, shared_dir, progress=progress)
        _finish(shared_dir, "generator", time.perf_counter() - t0)
    out = {"generator": str(shared_dir)}
    if upto == "classifier":
        if not stage_done(shared_dir, "synth"):
            t0 = time.perf_counter()
            info = run_synth_stage(recipe, shared_dir, shared_dir / "synth", progress=progress)
            _finish(shared_dir, "synth", time.perf_counter() - t0, info)
        out["synth"] = str(shared_dir / "synth")
    return out


def _tune_report(report: Report | None, metric: str | None) -> Report | None:
    """Forward a classifier's per-epoch test accuracy to Ray Tune as accuracy.overall / .many / .medium / .few.

    Only epochs that carry the sweep's metric are forwarded (the classifier evaluates every `eval_every` epochs):
    Tune requires the metric in every report, and ASHA compares trials on it."""
    if report is None:
        return None

    def forward(metrics: dict, checkpoint_dir: str | None = None) -> None:
        out = {k: v for k, v in metrics.items() if isinstance(v, (int, float))}
        for g in ("overall", "many", "medium", "few"):
            v = metrics.get(f"test_{g}")
            if isinstance(v, (int, float)):
                out[f"accuracy.{g}"] = float(v)
        if metric is None or metric in out:
            report(out, str(checkpoint_dir) if checkpoint_dir else None)

    return forward


def run_pipeline(recipe, run_dir: str | Path, *, progress: bool = True, report: Report | None = None,
                 reuse_generator: str | None = None, reuse_synth: str | None = None,
                 tune_metric: str | None = None, resume: bool = True,
                 real_classifier: str | Path | None = None) -> dict:
    """Run every stage of `recipe` in run_dir (created if needed); returns the summary (also summary.json).

    reuse_generator / reuse_synth: a run directory whose generator (and synthetic folder) to use instead of
    training and sampling anew (sweeps over later stages). real_classifier: an existing real-only classifier folder
    (same data and classifier settings) used instead of training one: it gives the baseline accuracy and labels the
    overlap diagnostics, so methods compared on one seed share it. Under Ray Tune, `report` receives the synthetic-data
    classifier's per-epoch metrics, named accuracy.overall / .many / .medium / .few.
    """
    run = Path(run_dir).resolve()
    if (run / "config.yaml").is_file() and resume:
        from ltaug.config import load_recipe

        if load_recipe(run / "config.yaml") != recipe:
            raise LtaugError(f"{run} was started with another recipe (its config.yaml differs); use a new --out, or "
                             f"--resume {run} without --recipe/--set to continue it as it was")
    else:
        init_run_dir(run, recipe)
    timings: dict[str, float] = {}

    def stage(name: str, fn: Callable[[], Any]) -> Any:
        if stage_done(run, name):
            info = json.loads(_marker(run, name).read_text())
            timings[name] = info.get("seconds", 0.0)
            return info
        log(run, f"stage {name} started")
        t0 = time.perf_counter()
        result = fn()
        timings[name] = time.perf_counter() - t0
        _finish(run, name, timings[name], result if isinstance(result, dict) and _jsonable(result) else None)
        return result

    generator_from = Path(reuse_generator) if reuse_generator else run
    if not reuse_generator:
        stage("generator", lambda: run_generator_stage(recipe, run, progress=progress))
    synth_dir = Path(reuse_synth) if reuse_synth else run / "synth"
    if not reuse_synth:
        stage("synth", lambda: run_synth_stage(recipe, generator_from, synth_dir, progress=progress))
    real_dir = Path(real_classifier) if real_classifier else run / "classifier-real"
    if not real_classifier:
        stage("classifier-real", lambda: run_classifier_stage(recipe, run, "real", [], progress=progress))
    stage("classifier-synth",
                  lambda: run_classifier_stage(recipe, run, "synth", [synth_dir], progress=progress,
                                               report=_tune_report(report, tune_metric)))
    if recipe.evaluate.metrics:
        stage("evaluate", lambda: run_evaluate_stage(recipe, generator_from, run, real_dir, progress=progress))
    summary = summarize(run, timings, real_dir)
    from ltaug.report import build_report

    build_report(run)
    if report is not None:
        final = {f"accuracy.{g}": v for g, v in summary["accuracy_synth"].items() if v is not None}
        final.update({k: v for k, v in summary.get("generator_metrics", {}).items() if v is not None})
        report(final, None)
    return summary


def _jsonable(obj: Any) -> bool:
    try:
        json.dumps(obj)
        return True
    except (TypeError, ValueError):
        return False


def _read(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def summarize(run: Path, timings: dict[str, float], real_dir: Path | None = None) -> dict:
    """summary.json: accuracy with/without synthetic data, the gain, the generator's metrics, stage times."""
    from ltaug.report import accuracy_of

    real = _read((real_dir or run / "classifier-real") / "results.json")
    synth = _read(run / "classifier-synth" / "results.json")
    ev = _read(run / "evaluate" / "results.json") or {}
    groups = ("overall", "many", "medium", "few")
    acc_real = {g: accuracy_of(real, g) for g in groups}
    acc_synth = {g: accuracy_of(synth, g) for g in groups}
    gain = {g: (acc_synth[g] - acc_real[g]) if acc_real[g] is not None and acc_synth[g] is not None else None
            for g in groups}
    gen_metrics = {}
    for g in groups:
        entry = ev.get(g) or {}
        for k in ("fid", "kid", "precision", "recall", "is"):
            if isinstance(entry.get(k), (int, float)):
                gen_metrics[f"{k}.{g}" if g != "overall" else k] = entry[k]
    leakage = (ev.get("overlap") or {}).get("leakage") or {}
    for g in groups:
        for k in ("agreement", "leakage_into_head"):
            v = (leakage.get(g) or {}).get(k)
            if isinstance(v, (int, float)):
                gen_metrics[f"{k}.{g}"] = v
    summary = {"run_dir": str(run), "accuracy_real": acc_real, "accuracy_synth": acc_synth, "gain": gain,
               "generator_metrics": gen_metrics, "stages": timings,
               "train_counts": (real or {}).get("train_counts_real"), "classes": (real or {}).get("classes")}
    atomic_write_json(run / "summary.json", summary)
    return summary


def summary_table(summary: dict):
    """A rich table of the summary (what `ltaug run` prints)."""
    from rich.table import Table

    table = Table(title="ltaug run: balanced test accuracy (%)")
    for col in ("group", "real only", "real + synthetic", "gain (points)"):
        table.add_column(col, justify="right")
    for g in ("overall", "many", "medium", "few"):
        a, b, d = summary["accuracy_real"][g], summary["accuracy_synth"][g], summary["gain"][g]
        table.add_row(g, "–" if a is None else f"{100 * a:.1f}", "–" if b is None else f"{100 * b:.1f}",
                      "–" if d is None else (f"[green]{100 * d:+.1f}[/]" if d > 0 else f"[red]{100 * d:+.1f}[/]"))
    return table


def metrics_table(summary: dict):
    from rich.table import Table

    table = Table(title="generator metrics")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for k, v in summary.get("generator_metrics", {}).items():
        table.add_row(k, f"{v:.4g}")
    return table
