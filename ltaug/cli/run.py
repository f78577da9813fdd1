"""`ltaug run`: the whole pipeline in one run directory."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from ltaug.cli import app
from ltaug.cli.common import DeviceOpt, OutOpt, RecipeOpt, SetOpt, console, handle_errors, resolve_recipe


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
) -> None:
    from ltaug.errors import LtaugError
    from ltaug.pipeline import metrics_table, run_pipeline, summary_table
    from ltaug.rundir import new_run_dir

    if resume is not None:
        if recipe or sets or out:
            raise LtaugError("--resume continues a run as it was: do not combine it with --recipe, --set or --out")
        if not (resume / "config.yaml").is_file():
            raise LtaugError(f"--resume {resume}: not a run directory (no config.yaml)")
        from ltaug.config import load_recipe

        cfg = load_recipe(resume / "config.yaml")
        run_dir = resume
    else:
        cfg = resolve_recipe(recipe, sets, device=device)
        if out is not None and (out / "config.yaml").exists():
            raise LtaugError(f"--out {out} already holds a run; use --resume {out} to continue it, or a new --out")
        run_dir = out if out is not None else new_run_dir(None, cfg.name)
    console.print(f"run directory: [bold]{run_dir}[/]")
    summary = run_pipeline(cfg, run_dir, progress=True)
    console.print(summary_table(summary))
    if summary.get("generator_metrics"):
        console.print(metrics_table(summary))
    console.print(f"report: [bold]{Path(run_dir) / 'report.html'}[/]")
