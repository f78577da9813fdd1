"""The whole pipeline in one run directory: generator -> synthesis -> classifiers (real, real + synthetic) ->
evaluation -> report. `ltaug run` and every Ray Tune trial call `run_pipeline`.

Each finished stage leaves a marker in RUN/stages/<stage>.json (its wall time and what it returned), so
`ltaug run --resume RUN` skips finished stages and resumes the interrupted one (the generator from its last
checkpoint, synthesis from the images already written, a classifier from its last epoch). Every stage takes its
own section of the recipe, so `ltaug run` and the single-stage commands make the same decisions.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any, Callable, Collection, Optional

from rich.table import Table

from ltaug.callbacks import ReportFn
from ltaug.classify.checkpoint import load_classifier
from ltaug.classify.train import train_classifier
from ltaug.config import EvaluateConfig, Recipe, load_recipe, to_dict
from ltaug.data.longtail import GROUPS
from ltaug.device import resolve_device
from ltaug.diffusion.checkpoint import list_checkpoints, load_generator
from ltaug.diffusion.train import train_generator
from ltaug.errors import LtaugError
from ltaug.features.pipeline import feature_stages, feature_summary
from ltaug.files import atomic_write_json, read_json
from ltaug.locks import holds_lock
from ltaug.metrics.agreement import judge_agreement
from ltaug.metrics.evaluate import evaluate
from ltaug.report import accuracy_of, build_report
from ltaug.rundir import RunDir
from ltaug.synth.run import synthesize

STAGES = ("generator", "synth", "classifier-real", "classifier-synth", "evaluate", "report")


def run_generator_stage(recipe: Recipe, run: RunDir, *, progress: bool, report: Optional[ReportFn] = None) -> None:
    train_generator(recipe, run.path, resume=bool(list_checkpoints(run.checkpoints)), report=report,
                    progress=progress)


def run_synth_stage(recipe: Recipe, generator_from: RunDir, out: Path, *, progress: bool) -> dict:
    res = synthesize(generator_from.path, recipe.synth, out, seed=recipe.seed, device=recipe.device,
                     progress=progress)
    return {"generated": res.generated, "counts": {str(k): v for k, v in res.counts.items()},
            "images_per_s": res.images_per_s}


def run_classifier_stage(recipe: Recipe, run: RunDir, name: str, synthetic: list[Path], *, progress: bool,
                         report: Optional[ReportFn] = None) -> dict:
    out = run.classifier(name)
    resume = out.is_dir() and any(out.glob("*.pt"))
    return train_classifier(recipe, out, synthetic=[str(p) for p in synthetic], report=report, progress=progress,
                            resume=resume)


def evaluation_config(recipe: Recipe, judge: Optional[Path]) -> EvaluateConfig:
    """The run's `evaluate` section with the judge of the overlap diagnostics: the recipe's
    `evaluate.classifier` when set, else `judge` (the run's real-only classifier); the rule `ltaug run` and
    `ltaug evaluate RUN` share."""
    ev = recipe.evaluate
    return dataclasses.replace(ev, classifier=ev.classifier or (str(judge) if judge else ""))


def run_evaluate_stage(recipe: Recipe, generator_from: RunDir, run: RunDir, classifier: Optional[Path], *,
                       progress: bool) -> dict:
    return evaluate(generator_from.path, evaluation_config(recipe, classifier), recipe.synth, recipe.data,
                    seed=recipe.seed, device=recipe.device, out_dir=run.evaluate, progress=progress)


def judge_recipe(recipe: Recipe) -> Recipe:
    """The recipe of the judge: the same classifier on balanced data that is not the test set (the long-tailed
    source's own balanced pool: mnist-lt at imbalance ratio 1 (400 digits per class), cifar*-lt's full training
    set; or data.val_dataset for npz:/folder: datasets)."""
    d = recipe.data
    balanced = {"mnist-lt": {"data.imbalance_ratio": 1.0}, "cifar10-lt": {"data.dataset": "cifar10-train"},
                "cifar100-lt": {"data.dataset": "cifar100-train"}}.get(d.dataset)
    if balanced is None:
        if not d.val_dataset:
            raise LtaugError(f"a judge needs balanced data that is not the test set; data.dataset '{d.dataset}' has no "
                             "balanced pool: set data.val_dataset")
        balanced = {"data.dataset": d.val_dataset}
    return load_recipe(to_dict(recipe), values=balanced)


def train_judge(recipe: Recipe, run: RunDir, *, progress: bool = False) -> Path:
    """Train (once; finished runs are reused) the judge classifier in run/classifier-judge."""
    if not run.exists():
        run.init(recipe)
    if not run.stage_done("classifier-judge"):
        t0 = time.perf_counter()
        run_classifier_stage(judge_recipe(recipe), run, "judge", [], progress=progress)
        run.finish_stage("classifier-judge", time.perf_counter() - t0)
    return run.classifier("judge")


def _generator_tune_report(report: Optional[ReportFn], judge: Optional[Path], recipe: Recipe,
                           metric: Optional[str]) -> Optional[ReportFn]:
    """Forward the generator's records to Ray Tune, with the judge's agreement on fresh samples of every class at
    each checkpoint (val_agreement.<group>, val_leakage_into_head.<group>): the cheap signal ASHA can stop bad
    generators on. Records without the sweep's metric are not forwarded (Tune requires it in every report)."""
    if report is None:
        return None
    clf = load_classifier(judge, device=resolve_device(recipe.device)) if judge else None

    def forward(metrics: dict, checkpoint_dir: Optional[str] = None) -> None:
        out = {k: v for k, v in metrics.items() if isinstance(v, (int, float))}
        if clf is not None and checkpoint_dir is not None:
            gen = load_generator(checkpoint_dir, device=resolve_device(recipe.device))
            for g, v in judge_agreement(gen, clf, recipe.synth, per_class=recipe.evaluate.judge_per_class,
                                        device=resolve_device(recipe.device)).items():
                out.update({f"val_agreement.{g}": v["agreement"], f"val_leakage_into_head.{g}": v["leakage_into_head"]})
        if metric is None or metric in out:
            report(out, checkpoint_dir)

    return forward


def prepare_shared(recipe: Recipe, shared_dir: Path, *, upto: str, progress: bool = True) -> dict:
    """For sweeps that do not change the generator: train it once (and, for classifier-only sweeps, sample once)."""
    shared = RunDir(shared_dir)
    if not shared.exists():
        shared.init(recipe)
    t0 = time.perf_counter()
    if not shared.stage_done("generator"):
        run_generator_stage(recipe, shared, progress=progress)
        shared.finish_stage("generator", time.perf_counter() - t0)
    out = {"generator": str(shared.path)}
    if upto == "classifier":
        if not shared.stage_done("synth"):
            t0 = time.perf_counter()
            info = run_synth_stage(recipe, shared, shared.synth, progress=progress)
            shared.finish_stage("synth", time.perf_counter() - t0, info)
        out["synth"] = str(shared.synth)
    return out


def _tune_report(report: Optional[ReportFn], metric: Optional[str]) -> Optional[ReportFn]:
    """Forward a classifier's per-epoch validation accuracy to Ray Tune as val_accuracy.overall / .many / ...

    Only epochs that carry the sweep's metric are forwarded (the classifier evaluates every `eval_every` epochs):
    Tune requires the metric in every report, and ASHA compares trials on it."""
    if report is None:
        return None

    def forward(metrics: dict, checkpoint_dir: Optional[str] = None) -> None:
        out = {k: v for k, v in metrics.items() if isinstance(v, (int, float))}
        for g in GROUPS:
            v = metrics.get(f"val_{g}")
            if isinstance(v, (int, float)):
                out[f"val_accuracy.{g}"] = float(v)
        if metric is None or metric in out:
            report(out, str(checkpoint_dir) if checkpoint_dir else None)

    return forward


@holds_lock(lambda a: RunDir(a["run_dir"]).path, "ltaug run")  # one pipeline per run directory (ltaug.locks)
def run_pipeline(recipe: Recipe, run_dir: str | Path, *, progress: bool = True, report: Optional[ReportFn] = None,
                 reuse_generator: Optional[str] = None, reuse_synth: Optional[str] = None,
                 tune_metric: Optional[str] = None, resume: bool = True,
                 real_classifier: Optional[str | Path] = None, judge: Optional[str | Path] = None,
                 shared_features: Optional[str | Path] = None,
                 stages: Optional[Collection[str]] = None) -> dict:
    """Run every stage of `recipe` in run_dir (created if needed); returns the summary (also summary.json).

    reuse_generator / reuse_synth: a run directory whose generator (and synthetic folder) to use instead of
    training and sampling anew (sweeps over later stages). real_classifier: an existing real-only classifier folder
    (same data and classifier settings) used instead of training one: it gives the baseline accuracy and labels the
    overlap diagnostics, so methods compared on one seed share it. Under Ray Tune, `report` receives the generator's
    records with the `judge`'s agreement at each checkpoint (val_agreement.<group>) and the synthetic-data
    classifier's per-epoch validation accuracy (val_accuracy.<group>); never a test-set number. stages: run only
    these of STAGES (a sweep trial: up to the last report its metric needs); None runs them all.
    shared_features: (generator.space features) a run folder whose backbone features this run links instead of
    computing them (sweeps: `ltaug.features.pipeline.prepare_features`).
    """
    run = RunDir(run_dir)
    if run.exists() and resume:
        if run.recipe() != recipe:
            raise LtaugError(f"{run.path} was started with another recipe (its config.yaml differs); use a new --out, "
                             f"or --resume {run.path} without --recipe/--set to continue it as it was")
    else:
        run.init(recipe)
    timings: dict[str, float] = {}

    def stage(name: str, fn: Callable[[], Any]) -> Any:
        if stages is not None and name not in stages:
            return None
        if run.stage_done(name):
            info = run.stage_info(name)
            timings[name] = info.get("seconds", 0.0)
            return info
        run.log(f"stage {name} started")
        t0 = time.perf_counter()
        result = fn()
        timings[name] = time.perf_counter() - t0
        run.finish_stage(name, timings[name], result if isinstance(result, dict) and _jsonable(result) else None)
        return result

    if recipe.generator.space == "features":
        feature_stages(recipe, run, stage, progress=progress, report=_only_with(report, tune_metric),
                       shared_features=str(shared_features) if shared_features else None)
        summary = feature_summary(run, timings)
        build_report(run.path)
        _final_report(report, summary, tune_metric)
        return summary
    generator_from = RunDir(reuse_generator) if reuse_generator else run
    if not reuse_generator:
        gen_report = _generator_tune_report(report, Path(judge) if judge else None, recipe, tune_metric)
        stage("generator", lambda: run_generator_stage(recipe, run, progress=progress, report=gen_report))
    synth_dir = Path(reuse_synth) if reuse_synth else run.synth
    if not reuse_synth:
        stage("synth", lambda: run_synth_stage(recipe, generator_from, synth_dir, progress=progress))
    real_dir = Path(real_classifier) if real_classifier else run.classifier("real")
    if not real_classifier:
        stage("classifier-real", lambda: run_classifier_stage(recipe, run, "real", [], progress=progress))
    stage("classifier-synth", lambda: run_classifier_stage(recipe, run, "synth", [synth_dir], progress=progress,
                                                           report=_tune_report(report, tune_metric)))
    if recipe.evaluate.metrics:
        stage("evaluate", lambda: run_evaluate_stage(recipe, generator_from, run, real_dir, progress=progress))
    summary = summarize(run, timings, real_dir)
    if stages is None or "report" in stages:
        build_report(run.path)
    _final_report(report, summary, tune_metric)
    return summary


def _final_report(report: Optional[ReportFn], summary: dict, tune_metric: Optional[str]) -> None:
    """The trial's final report: validation numbers only (sweeps never choose on test)."""
    if report is None:
        return
    final = {f"val_accuracy.{g}": v for g, v in (summary["val_accuracy_synth"] or {}).items() if v is not None}
    if tune_metric is None or tune_metric in final:  # else the generator's last report holds the metric
        report(final, None)


def _only_with(report: Optional[ReportFn], metric: Optional[str]) -> Optional[ReportFn]:
    """Forward only the records that carry the sweep's metric (Tune requires it in every report)."""
    if report is None:
        return None

    def forward(metrics: dict, checkpoint_dir: Optional[str] = None) -> None:
        if metric is None or metric in metrics:
            report(metrics, checkpoint_dir)

    return forward


def _jsonable(obj: Any) -> bool:
    try:
        json.dumps(obj)
        return True
    except (TypeError, ValueError):
        return False


def summarize(run: RunDir, timings: dict[str, float], real_dir: Optional[Path] = None) -> dict:
    """summary.json: accuracy with/without synthetic data, the gain, the generator's metrics, stage times."""
    real = read_json((real_dir or run.classifier("real")) / "results.json")
    synth = read_json(run.classifier("synth") / "results.json")
    ev = read_json(run.evaluate / "results.json") or {}
    acc_real = {g: accuracy_of(real, g) for g in GROUPS}
    acc_synth = {g: accuracy_of(synth, g) for g in GROUPS}
    val_real, val_synth = ((r or {}).get("val_accuracy") for r in (real, synth))
    gain = {g: (acc_synth[g] - acc_real[g]) if acc_real[g] is not None and acc_synth[g] is not None else None
            for g in GROUPS}
    gen_metrics = {}
    for g in GROUPS:
        entry = ev.get(g) or {}
        for k in ("fid", "kid", "precision", "recall", "is"):
            if isinstance(entry.get(k), (int, float)):
                gen_metrics[f"{k}.{g}" if g != "overall" else k] = entry[k]
    leakage = (ev.get("overlap") or {}).get("leakage") or {}
    for g in GROUPS:
        for k in ("agreement", "judge_accuracy_real", "leakage_into_head"):
            v = (leakage.get(g) or {}).get(k)
            if isinstance(v, (int, float)):
                gen_metrics[f"{k}.{g}"] = v
    summary = {"run_dir": str(run.path), "accuracy_real": acc_real, "accuracy_synth": acc_synth, "gain": gain,
               "val_accuracy_real": val_real, "val_accuracy_synth": val_synth,
               "generator_metrics": gen_metrics, "stages": timings,
               "train_counts": (real or {}).get("train_counts_real"), "classes": (real or {}).get("classes")}
    atomic_write_json(run.summary, summary)
    return summary


def summary_table(summary: dict) -> Table:
    """A rich table of the summary (what `ltaug run` prints)."""
    table = Table(title="ltaug run: balanced test accuracy (%)")
    for col in ("group", "real only", "real + synthetic", "gain (points)"):
        table.add_column(col, justify="right")
    for g in GROUPS:
        a, b, d = summary["accuracy_real"][g], summary["accuracy_synth"][g], summary["gain"][g]
        table.add_row(g, "–" if a is None else f"{100 * a:.1f}", "–" if b is None else f"{100 * b:.1f}",
                      "–" if d is None else (f"[green]{100 * d:+.1f}[/]" if d > 0 else f"[red]{100 * d:+.1f}[/]"))
    return table


def metrics_table(summary: dict) -> Table:
    table = Table(title="generator metrics")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for k, v in summary.get("generator_metrics", {}).items():
        table.add_row(k, f"{v:.4g}")
    return table
