"""`ltaug synthesize RUN_DIR`: a thin shell over ltaug.synth.synthesize (plan table, settings line, summary)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from ltaug.cli import app
from ltaug.cli.common import DeviceOpt, RecipeOpt, SetOpt, console, handle_errors

PLAN = "plan"
SAMPLING = "sampling"
SCALE = "scale and safety"
FILTER = "filter"


@app.command("synthesize", help="Sample class-balanced synthetic images from a trained generator (resumable, Ray-sharded). "
             "Writes RUN_DIR/synth/: one folder per class of PNGs named by seed, manifest.jsonl, plan.json. "
             "Re-run the same command to resume after any interruption.")
@handle_errors
def synthesize_cmd(
    run_dir: Annotated[Path, typer.Argument(help="run directory (or its generator/ folder, or a checkpoint file)")],
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="synthetic folder (default RUN_DIR/synth)")] = None,
    per_class: Annotated[Optional[int], typer.Option("--per-class", help="N new images for every class", rich_help_panel=PLAN)] = None,
    fill_to: Annotated[Optional[int], typer.Option("--fill-to", help="top every class up to N images, real ones included", rich_help_panel=PLAN)] = None,
    classes: Annotated[Optional[str], typer.Option("--classes", help="comma-separated class names to restrict the plan to", rich_help_panel=PLAN)] = None,
    seed: Annotated[Optional[int], typer.Option("--seed", help="recipe seed; image k of class y gets seed 2^32*seed + k*C + y", rich_help_panel=PLAN)] = None,
    sampler: Annotated[Optional[str], typer.Option("--sampler", help="ddim or ddpm (ancestral, all T steps)", rich_help_panel=SAMPLING)] = None,
    steps: Annotated[Optional[int], typer.Option("--steps", help="DDIM steps", rich_help_panel=SAMPLING)] = None,
    w: Annotated[Optional[float], typer.Option("--w", help="guidance weight w >= 0: eps = (1+w) eps_c - w eps_null (scale s = 1 + w)", rich_help_panel=SAMPLING)] = None,
    eta: Annotated[Optional[float], typer.Option("--eta", help="DDIM noise (0 = deterministic)", rich_help_panel=SAMPLING)] = None,
    variance: Annotated[Optional[str], typer.Option("--variance", help="DDPM step variance: large (beta_t) or small (beta~_t)", rich_help_panel=SAMPLING)] = None,
    amp: Annotated[Optional[str], typer.Option("--amp", help="autocast the network: none (fp32, default), bf16 or fp16 (GPU; faster, images differ slightly)", rich_help_panel=SCALE)] = None,
    batch_size: Annotated[Optional[int], typer.Option("--batch-size", help="images per forward (never changes an image)", rich_help_panel=SCALE)] = None,
    workers: Annotated[Optional[int], typer.Option("--workers", help="Ray workers (one GPU each where there are GPUs)", rich_help_panel=SCALE)] = None,
    address: Annotated[Optional[str], typer.Option("--address", help="join this Ray cluster (auto or HOST:PORT)", rich_help_panel=SCALE)] = None,
    npz: Annotated[Optional[bool], typer.Option("--npz/--no-npz", help="also write synthetic.npz", rich_help_panel=SCALE)] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="delete earlier synthetic images in the folder and start over", rich_help_panel=SCALE)] = False,
    filter_classifier: Annotated[Optional[Path], typer.Option("--filter-classifier", help="keep only images this classifier (dir or checkpoint) assigns to their own label", rich_help_panel=FILTER)] = None,
    min_confidence: Annotated[Optional[float], typer.Option("--min-confidence", help="the filter's threshold p on the own-label probability", rich_help_panel=FILTER)] = None,
    device: DeviceOpt = None,
    recipe: RecipeOpt = None,
    sets: SetOpt = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="no plan table, no progress bar")] = False,
) -> None:
    from ltaug.cli.common import resolve_recipe
    from ltaug.errors import LtaugError

    for flag, v in (("--per-class", per_class), ("--fill-to", fill_to), ("--steps", steps),
                    ("--batch-size", batch_size), ("--workers", workers)):
        if v is not None and v <= 0:
            raise LtaugError(f"{flag} {v}: must be a positive number")
    if per_class is not None and fill_to is not None:
        raise LtaugError(f"--per-class {per_class} and --fill-to {fill_to}: choose one")
    if w is not None and w < 0:
        raise LtaugError(f"--w {w}: the guidance weight must be >= 0 (w = 0 is plain conditional sampling; "
                         "other libraries' scale is s = 1 + w)")
    if not run_dir.exists():
        raise LtaugError(f"RUN_DIR {run_dir}: no such directory or file; give the run directory of "
                         "`ltaug train-generator`")
    if recipe is None and run_dir.is_dir() and (run_dir / "config.yaml").is_file():
        recipe = str(run_dir / "config.yaml")  # the run's own recipe is the base; flags override it
    direct = {"synth.per_class": per_class, "synth.fill_to": fill_to, "synth.sampler": sampler, "synth.steps": steps,
              "synth.w": w, "synth.eta": eta, "synth.variance": variance, "synth.batch_size": batch_size, "synth.amp": amp,
              "synth.workers": workers, "synth.address": address, "synth.npz": npz, "seed": seed,
              "synth.min_confidence": min_confidence, "device": device,
              "synth.filter_classifier": str(filter_classifier) if filter_classifier is not None else None,
              "synth.classes": [c.strip() for c in classes.split(",") if c.strip()] if classes else None}
    if per_class is not None:
        direct["synth.fill_to"] = 0  # the flag picks the mode, whatever the recipe said
    if fill_to is not None:
        direct["synth.per_class"] = 0
    r = resolve_recipe(recipe, sets, **direct)
    cfg = r.synth

    from ltaug.diffusion.checkpoint import load_generator
    from ltaug.synth.engine import resolve_device
    from ltaug.synth.plan import make_plan, plan_table
    from ltaug.synth.run import default_out_dir, synthesize

    dev = resolve_device(r.device)
    gen = load_generator(run_dir, device=dev, ema=True)
    plan = make_plan(gen.classes, gen.counts, per_class=cfg.per_class, fill_to=cfg.fill_to,
                     only=cfg.classes or None, seed=r.seed)
    out_dir = out if out is not None else default_out_dir(run_dir)
    if not quiet:
        console.print(plan_table(plan))
        steps_txt = f"all {len(gen.schedule.betas)} steps, variance {cfg.variance}" if cfg.sampler == "ddpm" \
            else f"{cfg.steps} steps, eta {cfg.eta:g}"
        console.print(f"checkpoint {gen.checkpoint_path} (step {gen.step}, sha256 {gen.checkpoint_sha256[:12]}), "
                      f"{cfg.sampler} {steps_txt}, guidance w = {cfg.w:g} (scale s = 1 + w = {1 + cfg.w:g}), "
                      f"-> {out_dir}", highlight=False)
    res = synthesize(gen, out_dir, plan, sampler=cfg.sampler, steps=cfg.steps, w=cfg.w, eta=cfg.eta,
                     variance=cfg.variance, batch_size=cfg.batch_size, workers=cfg.workers, address=cfg.address,
                     device=dev, progress=not quiet, overwrite=overwrite, npz=cfg.npz,
                     filter_classifier=cfg.filter_classifier or None, min_confidence=cfg.min_confidence,
                     filter_max_tries=cfg.filter_max_tries, amp=cfg.amp)
    if res.rejection and not quiet:
        from rich.table import Table

        table = Table(title=f"filter: own-label probability >= {cfg.min_confidence:g}")
        for col in ("class", "tried", "rejected", "rejection rate"):
            table.add_column(col, justify="left" if col == "class" else "right")
        for y, d in res.rejection.items():
            table.add_row(d["class"], str(d["tried"]), str(d["rejected"]), f"{d['rate']:.1%}")
        console.print(table)
    if res.repaired:
        console.print(f"resumed: repaired {res.repaired}", highlight=False)
    console.print(f"[green]done[/]: {sum(res.counts.values()):,} synthetic images in {res.out_dir} "
                  f"({res.generated:,} drawn now in {res.seconds:.1f} s, {res.images_per_s:.2f} img/s, "
                  f"{res.already_done:,} already there; {res.engine})" + (f"; npz {res.npz}" if res.npz else ""),
                  highlight=False)
    if res.shortfall:
        short = ", ".join(f"{gen.classes[y]}: {n}" for y, n in res.shortfall.items())
        console.print(f"[yellow]warning[/]: the filter rejected too many images; still missing {short}. "
                      "Lower --min-confidence or raise synth.filter_max_tries, then re-run to resume.")
    if (Path(out_dir).parent / "config.yaml").is_file():
        from ltaug.rundir import log

        log(Path(out_dir).parent, f"synthesize: {res.generated} images drawn, {sum(res.counts.values())} in "
                                  f"{res.out_dir} ({cfg.sampler}, w={cfg.w:g})")
