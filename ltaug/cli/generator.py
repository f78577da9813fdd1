"""`ltaug train-generator`: a thin shell over `ltaug.diffusion.train.train_generator`."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape

from ltaug.cli.app import app
from ltaug.cli.common import (
    OUTPUT,
    DatasetOpt,
    DeviceOpt,
    OutOpt,
    RecipeOpt,
    SetOpt,
    console,
    err_console,
    handle_errors,
    recipe_of,
    resolve_recipe,
)
from ltaug.cli.options import key_option
from ltaug.errors import LtaugError
from ltaug.rundir import DEFAULT_ROOT, RunDir
from ltaug.space import require_writable

LossOpt = key_option("generator.loss", "--loss")
StepsOpt = key_option("generator.steps", "--steps")
BatchOpt = key_option("generator.batch_size", "--batch-size")
InitOpt = key_option("generator.init_from", "--init-from")
ResumeOpt = Annotated[Optional[Path], typer.Option(
    "--resume", help="continue the run in this run directory from its latest checkpoint")]
NoProgressOpt = Annotated[bool, typer.Option("--no-progress", hidden=True, help="the same as --quiet")]


@app.command("train-generator",
             help="Train the class-conditional diffusion model (DDPM, CBDM, DiffROP) on the long-tailed set. With no "
                  "arguments: the embedded MNIST-LT with the default recipe (mnist_lt), on the CPU.")
@handle_errors
def train_generator_cmd(recipe: RecipeOpt = None, dataset: DatasetOpt = None, loss: LossOpt = None,
                        steps: StepsOpt = None, batch_size: BatchOpt = None, device: DeviceOpt = None,
                        init_from: InitOpt = None, out: OutOpt = None, sets: SetOpt = None,
                        resume: ResumeOpt = None,
                        no_progress: NoProgressOpt = False) -> None:
    if resume is not None:
        if out is not None:
            raise LtaugError("--resume RUN_DIR continues that run in place; drop --out")
        if not resume.is_dir():
            raise LtaugError(f"--resume {resume}: not a directory (give the run directory of a generator run)")
        recipe = recipe_of(resume, recipe)  # the run's own resolved recipe, then the flags on top
    r = resolve_recipe(recipe, sets, **{"data.dataset": dataset, "generator.loss": loss, "generator.steps": steps,
                                        "generator.batch_size": batch_size, "generator.init_from": init_from,
                                        "device": device})

    from ltaug.curves import require_backends
    from ltaug.data import load_from_config
    from ltaug.device import is_main_process, resolve_device
    from ltaug.diffusion.train import TrainingInterrupted, train_generator

    created = False
    if resume is not None:
        require_writable(resume, "--resume")
        run_dir = resume
    else:
        resolve_device(r.device)  # fail on a bad device, logging backend or dataset before any folder exists
        require_backends(r.logging)
        load_from_config(r.data)
        require_writable(out if out is not None else DEFAULT_ROOT, "--out")
        if out is None:
            run_dir, created = RunDir.create(desc=f"{r.name}-{r.generator.loss}").path, True
        else:
            run_dir, created = out, not out.exists()
    try:
        result = train_generator(r, run_dir, resume=resume is not None, progress=OUTPUT.progress and not no_progress)
    except TrainingInterrupted as e:
        err_console.print(f"[yellow]interrupted:[/] {escape(str(e))}", markup=True, highlight=False)
        raise typer.Exit(130)
    except LtaugError:
        if created and not RunDir(run_dir).generator.exists():
            shutil.rmtree(run_dir, ignore_errors=True)  # bad input: leave nothing behind
        raise
    if not is_main_process():  # under torchrun, rank 0 speaks for all
        return
    m = result.metrics
    ran = result.step - result.start_step
    since = f" (resumed at step {result.start_step})" if result.start_step else ""
    console.print(f"[bold green]generator trained[/] to step {result.step}: {ran} steps in {result.seconds:.0f} s"
                  f"{since}, {result.num_params / 1e6:.2f}M params")
    if m:
        console.print(f"  loss        {m.get('loss', float('nan')):.4f} (mean over the last logging interval, up to "
                      f"step {m.get('step')}; generator.log_every = {r.generator.log_every})"
                      + (f"; margin {result.margin:.4g}" if result.margin is not None else ""), highlight=False)
    console.print(f"  run dir     {run_dir}", markup=False, highlight=False)
    console.print(f"  checkpoint  {result.checkpoint}", markup=False, highlight=False)
    console.print(f"  class grid  {result.grid}", markup=False, highlight=False)
    console.print(f"  diffusers   {result.diffusers}", markup=False, highlight=False)
