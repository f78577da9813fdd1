"""`ltaug train-generator`: a thin shell over `ltaug.diffusion.train.train_generator`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from ltaug.cli import app
from ltaug.cli.common import (DatasetOpt, DeviceOpt, OutOpt, RecipeOpt, SetOpt, console, err_console, handle_errors,
                              resolve_recipe)

LossOpt = Annotated[Optional[str], typer.Option("--loss", help="ddpm | cbdm | diffrop | cbdm+diffrop (default diffrop)")]
StepsOpt = Annotated[Optional[int], typer.Option("--steps", help="optimizer steps (generator.steps)")]
BatchOpt = Annotated[Optional[int], typer.Option("--batch-size", help="images per optimizer step, all ranks (generator.batch_size)")]
ResumeOpt = Annotated[Optional[Path], typer.Option("--resume", help="continue the run in this run directory from its latest checkpoint")]
QuietOpt = Annotated[bool, typer.Option("--no-progress", help="no progress bar")]


@app.command("train-generator",
             help="Train the class-conditional diffusion model (DDPM, CBDM, DiffROP) on the long-tailed set. With no "
                  "arguments: DiffROP on the embedded MNIST-LT, CPU recipe, a few minutes.")
@handle_errors
def train_generator_cmd(recipe: RecipeOpt = None, dataset: DatasetOpt = None, loss: LossOpt = None,
                        steps: StepsOpt = None, batch_size: BatchOpt = None, device: DeviceOpt = None,
                        out: OutOpt = None, sets: SetOpt = None, resume: ResumeOpt = None,
                        no_progress: QuietOpt = False) -> None:
    import shutil

    from ltaug.errors import LtaugError

    if resume is not None:
        if out is not None:
            raise LtaugError("--resume RUN_DIR continues that run in place; drop --out")
        if not resume.is_dir():
            raise LtaugError(f"--resume {resume}: not a directory (give the run directory of a generator run)")
        if recipe is None and (resume / "config.yaml").is_file():
            recipe = str(resume / "config.yaml")  # the run's own resolved recipe, then the flags on top
    direct = {"data.dataset": dataset, "generator.loss": loss, "generator.steps": steps,
              "generator.batch_size": batch_size, "device": device}
    r = resolve_recipe(recipe, sets, **direct)

    from ltaug.data import load_from_config
    from ltaug.diffusion.train import TrainingInterrupted, train_generator
    from ltaug.rundir import new_run_dir

    created = False
    if resume is not None:
        run_dir = resume
    else:
        load_from_config(r.data)  # fail on a bad dataset before any folder exists
        if out is None:
            run_dir, created = new_run_dir(desc=f"{r.name}-{r.generator.loss}"), True
        else:
            run_dir, created = out, not out.exists()
    try:
        result = train_generator(r, run_dir, resume=resume is not None, progress=not no_progress)
    except TrainingInterrupted as e:
        err_console.print(f"[yellow]interrupted:[/] {e}")
        raise typer.Exit(130)
    except LtaugError:
        if created and not (Path(run_dir) / "generator").exists():
            shutil.rmtree(run_dir, ignore_errors=True)  # bad input: leave nothing behind
        raise
    m = result["metrics"]
    console.print(f"[bold green]generator trained[/] {result['step']} steps in {result['seconds']:.0f} s "
                  f"({result['num_params'] / 1e6:.2f}M params), loss {m.get('loss', float('nan')):.4f}"
                  + (f", margin {result['margin']:.4g}" if result.get("margin") is not None else ""))
    console.print(f"  run dir     {run_dir}")
    console.print(f"  checkpoint  {result['checkpoint']}")
    console.print(f"  class grid  {result['grid']}")
    console.print(f"  diffusers   {result['diffusers']}")
