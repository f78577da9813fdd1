"""`ltaug synthesize RUN_DIR`: a thin shell over ltaug.synth.synthesize (plan table, settings line, summary)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape
from rich.table import Table

from ltaug.cli.app import app
from ltaug.cli.common import (
    FAULT_EXIT,
    OUTPUT,
    DeviceOpt,
    RecipeOpt,
    SetOpt,
    console,
    fail,
    handle_errors,
    local_or_hub,
    recipe_of,
    resolve_recipe,
)
from ltaug.cli.options import key_option
from ltaug.errors import LtaugError
from ltaug.rundir import RunDir

PLAN = "plan"
SAMPLING = "sampling"
SCALE = "scale and safety"
FILTER = "filter"

PerClass = key_option("synth.per_class", "--per-class", panel=PLAN, help="N new images for every class")
FillTo = key_option("synth.fill_to", "--fill-to", panel=PLAN, help="top every class up to N images, real ones included")
Classes = key_option("synth.classes", "--classes", panel=PLAN, help="comma-separated class names to restrict to")
Seed = key_option("seed", panel=PLAN, help="recipe seed; image k of class y gets seed 2^32*seed + k*C + y")
Sampler = key_option("synth.sampler", panel=SAMPLING)
Steps = key_option("synth.steps", panel=SAMPLING)
W = key_option("synth.w", panel=SAMPLING, help="guidance weight w >= 0: eps = (1+w) eps_c - w eps_null (scale s = 1+w)")
Eta = key_option("synth.eta", panel=SAMPLING)
Variance = key_option("synth.variance", panel=SAMPLING)
Amp = key_option("synth.amp", panel=SCALE)
Batch = key_option("synth.batch_size", panel=SCALE)
Workers = key_option("synth.workers", panel=SCALE)
Address = key_option("synth.address", panel=SCALE)
Npz = key_option("synth.npz", panel=SCALE)
Filter = key_option("synth.filter_classifier", "--filter-classifier", panel=FILTER, type_=str)  # a Hub id too
MinConf = key_option("synth.min_confidence", panel=FILTER)
Overwrite = Annotated[bool, typer.Option("--overwrite", rich_help_panel=SCALE,
                                         help="delete earlier synthetic images in the folder and start over")]
RunArg = Annotated[Path, typer.Argument(help="run directory (or its generator/ folder, a checkpoint file, a pipeline "
                                        "folder of `ltaug export`, or its Hub id OWNER/NAME)")]
Out = Annotated[Optional[Path], typer.Option("--out", "-o", help="synthetic folder (default RUN_DIR/synth)")]


@app.command("synthesize", help="Sample class-balanced synthetic images from a trained generator (resumable, "
             "Ray-sharded). Writes RUN_DIR/synth/: one folder per class of PNGs named by seed, manifest.jsonl, "
             "plan.json, grid.png. Re-run the same command to resume after any interruption.")
@handle_errors
def synthesize_cmd(run_dir: RunArg, out: Out = None, per_class: PerClass = None, fill_to: FillTo = None,
                   classes: Classes = None, seed: Seed = None, sampler: Sampler = None, steps: Steps = None,
                   w: W = None, eta: Eta = None, variance: Variance = None, amp: Amp = None, batch_size: Batch = None,
                   workers: Workers = None, address: Address = None, npz: Npz = None, overwrite: Overwrite = False,
                   filter_classifier: Filter = None, min_confidence: MinConf = None, device: DeviceOpt = None,
                   recipe: RecipeOpt = None, sets: SetOpt = None) -> None:
    # The flag given picks the plan's mode. 0 is the recipe's "off", so it is accepted beside the other flag given
    # positive (--per-class 5 --fill-to 0); alone it would ask for nothing.
    flags = {"--per-class": per_class, "--fill-to": fill_to}
    for flag, v in flags.items():
        other, ov = next((f, x) for f, x in flags.items() if f != flag)
        if v is not None and (v < 0 or (v == 0 and not ov)):
            raise LtaugError(f"{flag} {v}: must be a positive number (0 turns it off only beside {other} N)")
    if per_class and fill_to:
        raise LtaugError(f"--per-class {per_class} and --fill-to {fill_to}: choose one")
    run_dir = local_or_hub(run_dir, "RUN_DIR")  # a Hub id: its pipeline folder, downloaded (or cached)
    if not run_dir.exists():
        raise LtaugError(f"RUN_DIR {run_dir}: no such directory or file; give the run directory of "
                         "`ltaug train-generator`")
    direct = {"synth.per_class": per_class, "synth.fill_to": fill_to, "synth.sampler": sampler, "synth.steps": steps,
              "synth.w": w, "synth.eta": eta, "synth.variance": variance, "synth.batch_size": batch_size,
              "synth.amp": amp, "synth.workers": workers, "synth.address": address, "synth.npz": npz, "seed": seed,
              "synth.min_confidence": min_confidence, "device": device,
              "synth.filter_classifier": str(filter_classifier) if filter_classifier is not None else None,
              "synth.classes": [c.strip() for c in classes.split(",") if c.strip()] if classes else None}
    if per_class:
        direct["synth.fill_to"] = 0  # the flag picks the mode, whatever the recipe said
    if fill_to:
        direct["synth.per_class"] = 0
    r = resolve_recipe(recipe_of(run_dir, recipe), sets, **direct)
    cfg = r.synth

    from ltaug.device import resolve_device
    from ltaug.diffusion.checkpoint import load_generator
    from ltaug.raycluster import check_address
    from ltaug.space import space_note
    from ltaug.synth import default_out_dir, plan_for, plan_table, synthesize
    from ltaug.synth.run import space_needed

    quiet = OUTPUT.quiet
    dev = resolve_device(r.device)
    check_address(cfg.address)  # nothing listening there: fail in seconds, before loading anything
    gen = load_generator(run_dir, device=dev, ema=True)
    plan = plan_for(gen, cfg, r.seed)
    out_dir = out if out is not None else default_out_dir(gen)
    if not quiet:
        console.print(plan_table(plan))
        steps_txt = f"all {gen.schedule.T} steps, variance {cfg.variance}" if cfg.sampler == "ddpm" \
            else f"{cfg.steps} steps, eta {cfg.eta:g}" if cfg.sampler == "ddim" \
            else f"{cfg.steps} steps ({cfg.identity(gen.schedule.T)['sampler']})"
        console.print(f"checkpoint {gen.checkpoint_path} (step {gen.step}, sha256 {gen.checkpoint_sha256[:12]}), "
                      f"{cfg.sampler} {steps_txt}, guidance w = {cfg.w:g} (scale s = 1 + w = {1 + cfg.w:g}), "
                      f"-> {out_dir}", highlight=False, markup=False)
        console.print(space_note(out_dir, space_needed(gen, cfg, plan, out_dir)), highlight=False, markup=False)
    res = synthesize(gen, cfg, out_dir, seed=r.seed, device=dev, progress=not quiet, overwrite=overwrite, plan=plan)
    if res.rejection and not quiet:
        table = Table(title=f"filter: own-label probability >= {cfg.min_confidence:g}")
        for col in ("class", "tried", "rejected", "rejection rate"):
            table.add_column(col, justify="left" if col == "class" else "right")
        for y, d in res.rejection.items():
            table.add_row(escape(d["class"]), str(d["tried"]), str(d["rejected"]), f"{d['rate']:.1%}")
        console.print(table)
    if res.repaired:
        console.print(f"resumed: repaired {res.repaired}", highlight=False, markup=False)
    npz_txt = f"; npz {escape(str(res.npz))}" if res.npz else ""
    console.print(f"[green]done[/]: {sum(res.counts.values()):,} synthetic images in {escape(str(res.out_dir))} "
                  f"({res.generated:,} drawn now in {res.seconds:.1f} s, {res.images_per_s:.2f} img/s, "
                  f"{res.already_done:,} already there; {res.engine}){npz_txt}", highlight=False)
    run = RunDir.find(out_dir)
    if run is not None:
        run.log(f"synthesize: {res.generated} images drawn, {sum(res.counts.values())} in {res.out_dir} "
                f"({cfg.sampler}, w={cfg.w:g})")
    if res.shortfall:  # the plan is not met: a failure, with what is missing and how to go on
        short = ", ".join(f"{gen.classes[y]}: {n}" for y, n in res.shortfall.items())
        fail(f"the filter gave up after trying synth.filter_max_tries = {cfg.filter_max_tries:g} times the planned "
             f"count; still missing {short} (class: images). Lower --min-confidence (now {cfg.min_confidence:g}) or "
             f"raise --set synth.filter_max_tries=N, then run the same command again: it keeps what is written",
             FAULT_EXIT)
