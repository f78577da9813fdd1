"""`ltaug export RUN`: a thin shell over ltaug.export (the pipeline folder, classifiers, model card; the Hub)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Optional

import typer

from ltaug.cli.app import app
from ltaug.cli.common import console, handle_errors
from ltaug.errors import LtaugError

REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*$")
RunArg = Annotated[Path, typer.Argument(help="run directory (of `ltaug train-generator` or `ltaug run`)")]
EmaOpt = Annotated[bool, typer.Option("--ema/--raw", help="export the EMA weights (default) or the raw ones")]
CkptOpt = Annotated[Optional[Path], typer.Option("--checkpoint", help="the checkpoint to export (default: the run's "
                                                 "newest generator/checkpoints/ckpt-*.pt)")]
OutOpt = Annotated[Optional[Path], typer.Option("--out", "-o", help="export folder (default RUN/export); an existing "
                                                "one is replaced only when it is a previous export")]
PushOpt = Annotated[Optional[str], typer.Option("--push-to-hub", metavar="REPO_ID",
                                                help="then upload the folder to this Hugging Face model repository "
                                                     "(created if missing; needs a token: `hf auth login`)")]
PrivateOpt = Annotated[bool, typer.Option("--private", help="with --push-to-hub: create the repository private")]
LicenseOpt = Annotated[str, typer.Option("--license", metavar="ID", help="the model card's license, a Hub license id "
                                         "(default mit: the folder carries a copy of ltaug's MIT pipeline code)")]
ClassifierOpt = Annotated[Optional[str], typer.Option(
    "--classifier", metavar="NAME", help="export this classifier of the run alone (real, synth, ... or "
    "classifier-NAME) as a timm repository: config.json + model.safetensors at its root, for "
    "timm.create_model('hf-hub:OWNER/NAME'); RUN may also be the classifier folder itself")]
LICENSE_ID = re.compile(r"^[a-z0-9][a-z0-9.+-]*$")


@app.command("export", help="Write a run's generator as a complete diffusers pipeline folder (ClassConditionalPipeline:"
             " model_index.json, unet/, scheduler/, class names), its classifiers in timm's format, a sample grid and "
             "a model card (README.md); optionally push it to the Hugging Face Hub. With --classifier NAME (or RUN a "
             "classifier folder): that classifier alone as a timm repository (hf-hub: loads its root).")
@handle_errors
def export_cmd(run_dir: RunArg, ema: EmaOpt = True, checkpoint: CkptOpt = None, out: OutOpt = None,
               repo_id: PushOpt = None, private: PrivateOpt = False, license: LicenseOpt = "mit",
               classifier: ClassifierOpt = None) -> None:
    if private and repo_id is None:
        raise LtaugError("--private applies to --push-to-hub REPO_ID only; add --push-to-hub or drop --private")
    if not run_dir.exists():
        raise LtaugError(f"RUN {run_dir}: no such directory; give the run directory of `ltaug train-generator`")
    if repo_id is not None and not REPO_ID.match(repo_id):
        raise LtaugError(f"--push-to-hub {repo_id}: a Hub repository id is OWNER/NAME")
    if not LICENSE_ID.match(license):
        raise LtaugError(f"--license {license}: a Hub license id is lower case, as mit, apache-2.0, cc-by-4.0 or other")

    from ltaug.classify.timm_format import read_timm_config
    from ltaug.export import export_classifier, export_run, push_to_hub, upload_files

    if classifier is not None or read_timm_config(run_dir) is not None:
        if checkpoint is not None or not ema:
            raise LtaugError("--checkpoint and --raw choose generator weights; a classifier export takes the "
                             "classifier's trained weights: drop them")
        folder = export_classifier(run_dir, name=classifier, out=out, license=license)
        load = f'timm.create_model("local-dir:{folder}", pretrained=True) after `import ltaug`'
        if repo_id is not None:
            load += f'; from the Hub: timm.create_model("hf-hub:{repo_id}", pretrained=True)'
    else:
        folder = export_run(run_dir, checkpoint=checkpoint, ema=ema, out=out, license=license)
        load = f'ClassConditionalPipeline.from_pretrained("{folder}")'
    console.print(f"[green]exported[/] {len(upload_files(folder))} files to {folder}", highlight=False)
    console.print(f"  load: {load}", markup=False, highlight=False)
    if repo_id is not None:
        url = push_to_hub(folder, repo_id, private=private)
        console.print(f"[green]pushed[/] to {url}", highlight=False)
