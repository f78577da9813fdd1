"""`ltaug run`: the whole pipeline in one run directory."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape

from ltaug.cli.app import app
from ltaug.cli.common import (
    OUTPUT,
    DeviceOpt,
    JsonOpt,
    OutOpt,
    RecipeOpt,
    SetOpt,
    console,
    emit_json,
    handle_errors,
    json_output,
    resolve_recipe,
    undo_on_usage_error,
)
from ltaug.errors import LtaugError
from ltaug.rundir import DEFAULT_ROOT, RunDir
from ltaug.space import require_writable


@app.command("run", help="The whole pipeline in one run directory: generator, synthesis, classifiers (real only and "
                         "real + synthetic), evaluation, and report.html.")
@handle_errors
def run_cmd(
    recipe: RecipeOpt = None,
    out: OutOpt = None,
    sets: SetOpt = None,
    device: DeviceOpt = None,
    resume: Annotated[Optional[Path], typer.Option("--resume", help="continue an interrupted run directory: finished "
                                                   "stages are skipped, the interrupted one resumes")] = None,
    json_: JsonOpt = False,
) -> None:
    json_output(json_)
    if resume is not None:
        if recipe or sets or out:
            raise LtaugError("--resume continues a run as it was: do not combine it with --recipe, --set or --out")
        run = RunDir(resume)
        if not run.exists():
            raise LtaugError(f"--resume {resume}: not a run directory (no config.yaml)")
        cfg = run.recipe()
    else:
        cfg = resolve_recipe(recipe, sets, device=device)
        if out is not None and RunDir(out).exists():
            raise LtaugError(f"--out {out} already holds a run; use --resume {out} to continue it, or a new --out")
        run = None

    from ltaug.curves import require_backends
    from ltaug.device import resolve_device
    from ltaug.pipeline import metrics_table, run_pipeline, summary_table

    resolve_device(cfg.device)  # a device that is not here: before any folder exists
    require_backends(cfg.logging)  # wandb chosen but not installed: likewise
    require_writable(run.path if run else (out if out is not None else DEFAULT_ROOT), "--resume" if run else "--out")
    existed = run is not None or (out is not None and out.exists())
    run = run or (RunDir(out) if out is not None else RunDir.create(None, cfg.name))
    console.print(f"run directory: [bold]{escape(str(run.path))}[/]")
    with undo_on_usage_error(run.path, existed):  # e.g. a dataset that is not there: nothing is left behind
        summary = run_pipeline(cfg, run.path, progress=OUTPUT.progress)
    console.print(summary_table(summary))
    if summary.get("generator_metrics"):
        console.print(metrics_table(summary))
    measured = list(cfg.evaluate.metrics)
    if not set(measured) & {"fid", "kid", "is", "pr"}:  # say what was not measured, and how to get it
        console.print(f"generator measured by evaluate.metrics = {measured or 'nothing'}; for FID / KID / "
                      "precision-recall add --set 'evaluate.metrics=[fid,kid,pr,overlap]' (offline with the Inception "
                      "weights: docs/usage.md, Evaluation)", markup=False, highlight=False)
    console.print(f"report: [bold]{escape(str(run.report))}[/]")
    emit_json({**summary, "report": str(run.report)})
