"""`ltaug train-classifier`: a thin shell over `ltaug.classify.train.train_classifier`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from ltaug.cli import app
from ltaug.cli.common import DatasetOpt, DeviceOpt, OutOpt, RecipeOpt, SetOpt, console, handle_errors

_MIX = "Real + synthetic"
_TRAIN = "Training"


def _pct(v) -> str:
    return "-" if v is None else f"{100 * v:.2f}"


def _compare(results: dict, other_path: Path, out_dir: Path) -> None:
    """Side-by-side table of this run and another results.json, and a per-class gain plot."""
    import json

    from rich.table import Table

    from ltaug.classify.plots import plot_gain
    from ltaug.errors import LtaugError

    try:
        other = json.loads(Path(other_path).read_text())
    except (OSError, ValueError) as e:
        raise LtaugError(f"--compare {other_path}: not a readable results.json ({e})") from None
    if other.get("classes") != results["classes"]:
        raise LtaugError(f"--compare {other_path}: its classes differ from this run's; compare runs on one dataset")
    name, other_name = results["name"], other.get("name", Path(other_path).parent.name)
    table = Table(title=f"{name} vs {other_name} (test accuracy, %)")
    for col in ("", name, other_name, "gain"):
        table.add_column(col, justify="right" if col else "left")
    for key in ("overall", "many", "medium", "few"):
        a, b = results["accuracy"].get(key), other["accuracy"].get(key)
        gain = "-" if a is None or b is None else f"{100 * (a - b):+.2f}"
        table.add_row(key, _pct(a), _pct(b), gain)
    console.print(table)
    plot = out_dir / f"gain_vs_{other_name}.png"
    plot_gain(results["per_class"], other["per_class"], results["classes"], results["train_counts_real"], plot,
              title=f"per-class gain of {name} over {other_name} (points)")
    console.print(f"per-class gain plot: {plot}")


@app.command("train-classifier", help="Train a timm classifier on real plus synthetic data; accuracy on "
             "many/medium/few classes of the balanced test set. With no arguments: the embedded MNIST-LT on CPU.")
@handle_errors
def train_classifier_cmd(
    recipe: RecipeOpt = None,
    set_: SetOpt = None,
    out: OutOpt = None,
    name: Annotated[Optional[str], typer.Option("--name", help="writes OUT/classifier-NAME/ (default real, or synth "
                                                "with --synthetic)")] = None,
    synthetic: Annotated[Optional[list[Path]], typer.Option(
        "--synthetic", help="a synthetic set: a folder from `ltaug synthesize` (class sub-folders) or an npz; "
        "repeatable", rich_help_panel=_MIX)] = None,
    synthetic_ratio: Annotated[Optional[float], typer.Option(
        "--synthetic-ratio", help="synthetic images per real image, per class, capped by what exists (0 = real only); implies "
        "--synthetic-mode ratio",
        rich_help_panel=_MIX)] = None,
    synthetic_mode: Annotated[Optional[str], typer.Option(
        "--synthetic-mode", help="fill (recipe default): top every class up to the head class's count; or ratio",
        rich_help_panel=_MIX)] = None,
    synthetic_weight: Annotated[Optional[float], typer.Option(
        "--synthetic-weight", help="loss weight of a synthetic image (real = 1)", rich_help_panel=_MIX)] = None,
    model: Annotated[Optional[str], typer.Option("--model", "-m", help="any timm model name (cifar_resnet32, ...)",
                                                 rich_help_panel=_TRAIN)] = None,
    pretrained: Annotated[Optional[bool], typer.Option("--pretrained/--scratch", help="timm pretrained weights "
                                                       "(needs network)", rich_help_panel=_TRAIN)] = None,
    loss: Annotated[Optional[str], typer.Option("--loss", help="ce, cb, balanced_softmax, logit_adjust, ldam, "
                                                "ldam_drw", rich_help_panel=_TRAIN)] = None,
    sampler: Annotated[Optional[str], typer.Option("--sampler", help="none, class_balanced or sqrt",
                                                   rich_help_panel=_TRAIN)] = None,
    epochs: Annotated[Optional[int], typer.Option("--epochs", help="training epochs", rich_help_panel=_TRAIN)] = None,
    batch_size: Annotated[Optional[int], typer.Option("--batch-size", help="images per step",
                                                      rich_help_panel=_TRAIN)] = None,
    lr: Annotated[Optional[float], typer.Option("--lr", help="SGD learning rate", rich_help_panel=_TRAIN)] = None,
    dataset: DatasetOpt = None,
    seed: Annotated[Optional[int], typer.Option("--seed", help="global seed")] = None,
    device: DeviceOpt = None,
    resume: Annotated[bool, typer.Option("--resume", help="continue OUT/classifier-NAME/checkpoint.pt (needs --out; "
                                         "the recipe defaults to the one it was trained with)")] = False,
    compare: Annotated[Optional[Path], typer.Option("--compare", help="another results.json: side-by-side table and "
                                                    "a per-class gain plot")] = None,
    progress: Annotated[bool, typer.Option("--progress/--no-progress", help="show a progress bar")] = True,
) -> None:
    from rich.table import Table

    from ltaug.cli.common import resolve_recipe
    from ltaug.errors import LtaugError
    from ltaug.rundir import init_run_dir, log, new_run_dir

    if synthetic_ratio is not None and synthetic_ratio < 0:
        raise LtaugError(f"--synthetic-ratio {synthetic_ratio}: must be >= 0 (0 = real only, 1 = one synthetic per "
                         f"real image)")
    if resume and out is None:
        raise LtaugError("--resume needs --out DIR: the run directory whose classifier should continue")
    if compare is not None and not Path(compare).is_file():
        raise LtaugError(f"--compare {compare}: no such file; give another run's classifier-NAME/results.json")
    if resume and recipe is None:  # continue with the recipe the classifier was trained with
        own = Path(out) / f"classifier-{name or ('synth' if synthetic else 'real')}" / "config.yaml"
        recipe = str(own) if own.is_file() else (str(Path(out) / "config.yaml")
                                                 if (Path(out) / "config.yaml").is_file() else None)
    if synthetic_ratio is not None and synthetic_mode is None:
        synthetic_mode = "ratio"  # a ratio given alone means ratio mode (the recipe default is fill)
    r = resolve_recipe(recipe, set_, **{
        "classifier.synthetic_ratio": synthetic_ratio, "classifier.synthetic_mode": synthetic_mode,
        "classifier.synthetic_weight": synthetic_weight, "classifier.model": model,
        "classifier.pretrained": pretrained, "classifier.loss": loss, "classifier.sampler": sampler,
        "classifier.epochs": epochs, "classifier.batch_size": batch_size, "classifier.lr": lr,
        "data.dataset": dataset, "seed": seed, "device": device,
    })
    from ltaug.classify.models import check_model_name

    check_model_name(r.classifier.model)  # before a run directory is made
    paths = [str(p) for p in synthetic or []]
    name = name or ("synth" if paths else "real")
    run_dir = Path(out) if out is not None else new_run_dir(desc=f"{r.name}-classifier-{name}")
    if not (run_dir / "config.yaml").is_file():
        init_run_dir(run_dir, r)
    cls_dir = run_dir / f"classifier-{name}"
    if resume and not paths and (cls_dir / "checkpoint.pt").is_file():
        from ltaug.classify.checkpoint import read_checkpoint

        paths = list(read_checkpoint(cls_dir).get("synthetic", []))  # the same sets as the run being continued
    if paths and r.classifier.synthetic_mode == "ratio" and r.classifier.synthetic_ratio == 0:
        console.print("[yellow]note:[/] --synthetic given but the synthetic ratio is 0: real images only "
                      "(set --synthetic-ratio or --synthetic-mode fill)")

    from ltaug.classify.train import train_classifier

    log(run_dir, f"train-classifier {name}: model {r.classifier.model}, loss {r.classifier.loss}, "
                 f"synthetic {paths or 'none'}{' (resume)' if resume else ''}")
    results = train_classifier(r, cls_dir, synthetic=paths, progress=progress, resume=resume)
    log(run_dir, f"train-classifier {name}: top-1 {results['top1']:.4f}")

    acc = results["accuracy"]
    table = Table(title=f"{name}: {results['model']} on {results['dataset']} (+{sum(results['train_counts_synthetic'])} "
                        f"synthetic), test {results['test_set']}")
    for col in ("overall", "many", "medium", "few"):
        table.add_column(f"{col} (%)", justify="right")
    table.add_row(*(_pct(acc[k]) for k in ("overall", "many", "medium", "few")))
    console.print(table)
    console.print(f"results: {cls_dir / 'results.json'}   plot: {cls_dir / results['plot']}")
    if compare is not None:
        _compare(results, compare, cls_dir)
