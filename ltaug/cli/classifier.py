"""`ltaug train-classifier`: a thin shell over `ltaug.classify.train.train_classifier`."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape
from rich.table import Table

from ltaug.cli.app import app
from ltaug.cli.common import (
    OUTPUT,
    DatasetOpt,
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
from ltaug.cli.options import key_option
from ltaug.config.data import GROUPS
from ltaug.errors import LtaugError
from ltaug.rundir import DEFAULT_ROOT, RunDir
from ltaug.space import require_writable

_MIX = "Real + synthetic"
_TRAIN = "Training"


def _pct(v) -> str:
    return "-" if v is None else f"{100 * v:.2f}"


def _compare(results: dict, other_path: Path, out_dir: Path) -> None:
    """Side-by-side table of this run and another results.json, and a per-class gain plot."""
    from ltaug.classify.plots import plot_gain

    try:
        other = json.loads(Path(other_path).read_text())
    except (OSError, ValueError) as e:
        raise LtaugError(f"--compare {other_path}: not a readable results.json ({e})") from None
    if other.get("classes") != results["classes"]:
        raise LtaugError(f"--compare {other_path}: its classes differ from this run's; compare runs on one dataset")
    name, other_name = results["name"], other.get("name", Path(other_path).parent.name)
    table = Table(title=escape(f"{name} vs {other_name} (test accuracy, %)"))
    for col in ("", escape(name), escape(other_name), "gain"):
        table.add_column(col, justify="right" if col else "left")
    for key in GROUPS:
        a, b = results["accuracy"].get(key), other["accuracy"].get(key)
        gain = "-" if a is None or b is None else f"{100 * (a - b):+.2f}"
        table.add_row(key, _pct(a), _pct(b), gain)
    console.print(table)
    slug = re.sub(r"[^A-Za-z0-9_.+-]+", "_", str(other_name)).strip("._")[:80] or "other"
    plot = out_dir / f"gain_vs_{slug}.png"  # a file name from another run's text: never a path
    plot_gain(results["per_class"], other["per_class"], results["classes"], results["train_counts_real"], plot,
              title=f"per-class gain of {name} over {other_name} (points)")
    console.print(f"per-class gain plot: {plot}", markup=False, highlight=False)


Name = Annotated[Optional[str], typer.Option("--name", help="writes OUT/classifier-NAME/ (default real, or synth "
                                                          "with --synthetic)")]
Synthetic = Annotated[Optional[list[Path]], typer.Option(
    "--synthetic", rich_help_panel=_MIX,
    help="a synthetic set: a folder from `ltaug synthesize` (class sub-folders) or an npz; repeatable")]
Ratio = key_option("classifier.synthetic_ratio", "--synthetic-ratio", panel=_MIX,
                   help="synthetic images per real image, per class, capped by what exists (0 = real only); "
                        "implies --synthetic-mode ratio")
Mode = key_option("classifier.synthetic_mode", "--synthetic-mode", panel=_MIX)
Weight = key_option("classifier.synthetic_weight", "--synthetic-weight", panel=_MIX)
Model = key_option("classifier.model", "--model", "-m", panel=_TRAIN)
Pretrained = key_option("classifier.pretrained", "--pretrained/--scratch", panel=_TRAIN)
Init = key_option("classifier.init", "--init", panel=_TRAIN)
Loss = key_option("classifier.loss", "--loss", panel=_TRAIN)
Sampler = key_option("classifier.sampler", "--sampler", panel=_TRAIN)
Epochs = key_option("classifier.epochs", "--epochs", panel=_TRAIN)
Batch = key_option("classifier.batch_size", "--batch-size", panel=_TRAIN)
Lr = key_option("classifier.lr", "--lr", panel=_TRAIN)
Seed = key_option("seed")
Resume = Annotated[bool, typer.Option("--resume", help="continue OUT/classifier-NAME/checkpoint.pt (needs --out; the "
                                                       "recipe defaults to the one it was trained with)")]
Compare = Annotated[Optional[Path], typer.Option("--compare", help="another results.json: side-by-side table and a "
                                                                   "per-class gain plot")]
Progress = Annotated[bool, typer.Option("--progress/--no-progress", hidden=True, help="--no-progress: as --quiet")]


@app.command("train-classifier", help="Train a timm classifier on real plus synthetic data; accuracy on "
             "many/medium/few classes of the balanced test set. With no arguments: the embedded MNIST-LT on CPU.")
@handle_errors
def train_classifier_cmd(recipe: RecipeOpt = None, set_: SetOpt = None, out: OutOpt = None, name: Name = None,
                         synthetic: Synthetic = None, synthetic_ratio: Ratio = None, synthetic_mode: Mode = None,
                         synthetic_weight: Weight = None, model: Model = None, pretrained: Pretrained = None,
                         init: Init = None,
                         loss: Loss = None, sampler: Sampler = None, epochs: Epochs = None, batch_size: Batch = None,
                         lr: Lr = None, dataset: DatasetOpt = None, seed: Seed = None, device: DeviceOpt = None,
                         resume: Resume = False, compare: Compare = None, progress: Progress = True,
                         json_: JsonOpt = False) -> None:
    json_output(json_)
    if synthetic_ratio is not None and synthetic_ratio < 0:
        raise LtaugError(f"--synthetic-ratio {synthetic_ratio}: must be >= 0 (0 = real only, 1 = one synthetic per "
                         f"real image)")
    if resume and out is None:
        raise LtaugError("--resume needs --out DIR: the run directory whose classifier should continue")
    if compare is not None and not Path(compare).is_file():
        raise LtaugError(f"--compare {compare}: no such file; give another run's classifier-NAME/results.json")
    if resume and recipe is None:  # continue with the recipe the classifier was trained with
        own = RunDir(out).classifier(name or ("synth" if synthetic else "real")) / "config.yaml"
        recipe = str(own) if own.is_file() else (str(RunDir(out).config) if RunDir(out).exists() else None)
    if synthetic_ratio is not None and synthetic_mode is None:
        synthetic_mode = "ratio"  # a ratio given alone means ratio mode (the recipe default is fill)
    r = resolve_recipe(recipe, set_, **{
        "classifier.synthetic_ratio": synthetic_ratio, "classifier.synthetic_mode": synthetic_mode,
        "classifier.synthetic_weight": synthetic_weight, "classifier.model": model,
        "classifier.pretrained": pretrained, "classifier.init": init, "classifier.loss": loss,
        "classifier.sampler": sampler,
        "classifier.epochs": epochs, "classifier.batch_size": batch_size, "classifier.lr": lr,
        "data.dataset": dataset, "seed": seed, "device": device,
    })
    from ltaug.classify.models import check_model_name

    check_model_name(r.classifier.model)  # before a run directory is made
    paths = [str(p) for p in synthetic or []]
    name = name or ("synth" if paths else "real")
    if not re.fullmatch(r"[A-Za-z0-9_.+-]{1,80}", name) or name.strip(".") == "":
        raise LtaugError(f"--name {name!r}: use letters, digits and _ . + - (it names the folder classifier-NAME "
                         "inside the run)")
    from ltaug.curves import require_backends
    from ltaug.device import resolve_device

    resolve_device(r.device)  # a device that is not here: before any folder exists
    require_backends(r.logging)  # wandb chosen but not installed: likewise
    for p in paths:  # a missing set: before any folder exists (the rest of the checks run under undo below)
        if not Path(p).expanduser().exists():
            raise LtaugError(f"--synthetic {p}: no such folder or file; give a folder written by `ltaug synthesize` "
                             "or an npz file")
    require_writable(out if out is not None else DEFAULT_ROOT, "--out")
    existed = out is not None and out.exists()
    run = RunDir(out) if out is not None else RunDir.create(desc=f"{r.name}-classifier-{name}")
    with undo_on_usage_error(run.path, existed):  # a usage error found later leaves nothing behind
        if not run.exists():
            run.init(r)
        cls_dir = run.classifier(name)
        if resume and not paths and (cls_dir / "checkpoint.pt").is_file():
            from ltaug.classify.checkpoint import read_checkpoint

            paths = list(read_checkpoint(cls_dir).get("synthetic") or [])  # the same sets as the run being continued
        if paths and r.classifier.synthetic_mode == "ratio" and r.classifier.synthetic_ratio == 0:
            console.print("[yellow]note:[/] --synthetic given but the synthetic ratio is 0: real images only "
                          "(set --synthetic-ratio or --synthetic-mode fill)")

        from ltaug.classify.train import train_classifier

        run.log(f"train-classifier {name}: model {r.classifier.model}, loss {r.classifier.loss}, "
                f"synthetic {paths or 'none'}{' (resume)' if resume else ''}")
        results = train_classifier(r, cls_dir, synthetic=paths, progress=progress and OUTPUT.progress,
                                   resume=resume)
    run.log(f"train-classifier {name}: top-1 {results['top1']:.4f}")

    acc = results["accuracy"]
    table = Table(title=escape(f"{name}: {results['model']} on {results['dataset']} "
                               f"(+{sum(results['train_counts_synthetic'])} synthetic), test {results['test_set']}"))
    for col in GROUPS:
        table.add_column(f"{col} (%)", justify="right")
    table.add_row(*(_pct(acc[k]) for k in GROUPS))
    console.print(table)
    console.print(f"results: {cls_dir / 'results.json'}   plot: {cls_dir / results['plot']}", markup=False,
                  highlight=False)
    if compare is not None:
        _compare(results, compare, cls_dir)
    emit_json({**results, "out_dir": str(cls_dir)})
