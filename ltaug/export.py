"""`ltaug export RUN`: a run's generator as a self-contained diffusers pipeline folder, ready for the Hub.

    OUT/  the pipeline folder (ltaug.diffusion.pipeline_folder: model_index.json, unet/, scheduler/, pipeline.py,
          ltaug.json) of any checkpoint (default: the newest, EMA weights), plus
          classifier-NAME/config.json + model.safetensors   each classifier of the run, in timm's format, when present
          grid.png                                           the newest class grid of generator/grids
          README.md                                          the model card (huggingface_hub's ModelCard): Hub metadata
                                                             (pipeline tag, license, datasets, base model, model-index
                                                             results), dataset, class counts, loss, metrics with their
                                                             protocol, the recipe (config.yaml)

The whole folder is built in a temporary sibling and renamed into place (it appears whole or not at all), under OUT's
lock (a second export into OUT refuses); a re-run removes what a killed export left beside OUT. An existing OUT is
replaced only when it is a previous export (it holds ltaug.json and model_index.json); any other non-empty folder
is refused. Nothing is copied through a symbolic link in the run (check_sources). `push_to_hub(OUT, REPO_ID)`
uploads exactly that folder.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Optional

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from ltaug.diffusion.checkpoint import load_generator, resolve_checkpoint
from ltaug.diffusion.pipeline_folder import LTAUG_JSON, MODEL_INDEX, write_pipeline
from ltaug.errors import LtaugError
from ltaug.files import atomic_write_text, read_json
from ltaug.hub import hub_offline, parse_hub_id
from ltaug.locks import FolderLock
from ltaug.rundir import RunDir

TIMM_FILES = ("config.json", "model.safetensors")
CARD = "README.md"
GRID = "grid.png"
GROUP_ROWS = ("overall", "many", "medium", "few")
# The Hub has no class-conditional image task; its image-generation task without a text prompt is the closest.
PIPELINE_TAG = "unconditional-image-generation"
# The weights ship with pipeline.py, a copy of ltaug's (MIT) code; `ltaug export --license` names another.
LICENSE = "mit"
HUB_DATASETS = {"mnist-lt": "ylecun/mnist", "cifar10-lt": "uoft-cs/cifar10", "cifar100-lt": "uoft-cs/cifar100",
                "cifar10-test": "uoft-cs/cifar10", "cifar100-test": "uoft-cs/cifar100",
                "cifar10-train": "uoft-cs/cifar10", "cifar100-train": "uoft-cs/cifar100"}


def is_export(path: Path) -> bool:
    return (path / LTAUG_JSON).is_file() and (path / MODEL_INDEX).is_file()


def default_out(run: RunDir) -> Path:
    return run.path / "export"


def check_out(out: Path) -> None:
    """Refuse an --out that holds something other than a previous export (nothing is written then)."""
    if out.is_symlink():
        raise LtaugError(f"--out {out}: is a symbolic link; give a real folder")
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not is_export(out))):
        raise LtaugError(f"--out {out}: exists and is not a previous `ltaug export` folder; give a new or empty "
                         "folder (a previous export is replaced as a whole)")


def export_run(run_path: str | Path, *, checkpoint: Optional[str | Path] = None, ema: bool = True,
               out: Optional[str | Path] = None, license: str = LICENSE) -> Path:
    """Write the export folder of the run at run_path (see the module docstring); returns it. license: the model
    card's license (a Hub license id)."""
    run = RunDir.find(run_path)
    if run is None or not run.exists():
        raise LtaugError(f"RUN {run_path}: not a run directory (no config.yaml and env.json); give the run directory "
                         "of `ltaug train-generator` or `ltaug run`")
    ckpt = resolve_checkpoint(checkpoint if checkpoint is not None else run.path)
    out_dir = Path(out) if out is not None else default_out(run)
    check_out(out_dir)
    check_sources(run)
    with FolderLock(out_dir, "ltaug export"):  # one writer; what a killed export left is repaired under it
        return _export(run, ckpt, ema, out_dir, license)


def check_sources(run: RunDir) -> None:
    """Refuse a run whose files that an export copies (the generator folder, classifier folders, the recipe and the
    metrics) are or pass through symbolic links: an export (and --push-to-hub) holds only what the run holds."""
    def refuse(p: Path) -> None:
        raise LtaugError(f"{p} is a symbolic link (to {os.readlink(p)}) in run {run.path}; ltaug export copies only "
                         "files that are inside the run and never follows links there (what it copies may be "
                         "uploaded with --push-to-hub): replace the link with the file itself, or remove it")

    for top in [run.generator, run.evaluate, *sorted(run.path.glob("classifier-*"))]:
        if top.is_symlink():
            refuse(top)
        for root, dirs, files in os.walk(top):  # os.walk never descends into a linked folder: each is listed
            for name in dirs + files:
                if (Path(root) / name).is_symlink():
                    refuse(Path(root) / name)
    for p in (run.config, run.summary):
        if p.is_symlink():
            refuse(p)


def _export(run: RunDir, ckpt: Path, ema: bool, out_dir: Path, license: str) -> Path:
    check_out(out_dir)
    gen = load_generator(ckpt, ema=ema)
    recipe = run.recipe()
    meta = {**gen.meta, "step": gen.step, "ema": ema, "checkpoint": run.relative(ckpt),
            "checkpoint_sha256": gen.checkpoint_sha256, "counts": gen.counts, "classes": gen.classes}
    if "num_classes" not in meta:
        meta["num_classes"] = gen.num_classes
    grids = sorted(run.grids.glob("grid-*.png")) if run.grids.is_dir() else []

    def extras(tmp: Path) -> None:
        for cdir in sorted(run.path.glob("classifier-*")):
            if all((cdir / f).is_file() for f in TIMM_FILES):
                (tmp / cdir.name).mkdir()
                for f in TIMM_FILES:
                    shutil.copyfile(cdir / f, tmp / cdir.name / f)
        if grids:
            shutil.copyfile(grids[-1], tmp / GRID)
        atomic_write_text(tmp / CARD, model_card(run, meta, has_grid=bool(grids),
                                                 classifiers=sorted(p.name for p in tmp.glob("classifier-*")),
                                                 license=license))

    # the lock made OUT (empty) if it was missing: an empty folder is not a previous export
    exported = write_pipeline(gen.net, meta, out_dir, variance=recipe.synth.variance, extras=extras)
    run.log(f"export: {run.relative(ckpt)} ({'EMA' if ema else 'raw'} weights) -> {exported}")
    return exported


def _table(rows: dict[str, dict]) -> list[str]:
    cols = sorted({k for r in rows.values() for k, v in r.items() if isinstance(v, (int, float))})
    if not cols:
        return []
    lines = ["| | " + " | ".join(cols) + " |", "|---|" + "---|" * len(cols)]
    for name, r in rows.items():
        lines.append(f"| {name} | " + " | ".join(f"{r[c]:.4g}" if isinstance(r.get(c), (int, float)) else "-"
                                                 for c in cols) + " |")
    return lines


def _numbers(row) -> dict:
    return {k: v for k, v in (row or {}).items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def card_data(run: RunDir, meta: dict, *, license: str = LICENSE) -> ModelCardData:
    """The model card's Hub metadata: library, pipeline tag, license, datasets, base model (generator.init_from on
    the Hub) and every number of evaluate/results.json and summary.json as model-index results."""
    recipe = run.recipe()
    data, loss = recipe.data, recipe.generator.loss
    dataset = HUB_DATASETS.get(data.dataset)
    base = parse_hub_id(recipe.generator.init_from) if recipe.generator.init_from else None
    name = f"ltaug-{data.dataset}-{loss}"
    results: list[EvalResult] = []
    ev = read_json(run.evaluate / "results.json") or {}
    protocol = ev.get("protocol") or {}
    ref = protocol.get("reference") or data.dataset
    for g in GROUP_ROWS:
        for metric, value in _numbers(ev.get(g)).items():
            if metric == "classes":
                continue
            results.append(EvalResult(
                task_type=PIPELINE_TAG, task_name="class-conditional image generation",
                dataset_type=HUB_DATASETS.get(ref, ref), dataset_name=f"{ref} (FID reference)",
                dataset_split=protocol.get("reference_split"), metric_type=metric, metric_name=f"{metric} ({g})",
                metric_value=value, metric_config=g,
                metric_args={"num_generated": protocol.get("num_generated"), "sampler": protocol.get("sampler"),
                             "steps": protocol.get("steps"), "w": protocol.get("w")}))
    summary = read_json(run.summary) or {}
    test = data.test_set()
    for key, label in (("accuracy_real", "real only"), ("accuracy_synth", "real + synthetic")):
        for g, value in _numbers(summary.get(key)).items():
            results.append(EvalResult(
                task_type="image-classification", dataset_type=HUB_DATASETS.get(data.dataset, data.dataset),
                dataset_name=str(test or data.dataset), dataset_split="test", metric_type="accuracy",
                metric_name=f"balanced accuracy ({g}, classifier trained on {label})", metric_value=value,
                metric_config=f"{g}, {label}"))
    return ModelCardData(library_name="diffusers", pipeline_tag=PIPELINE_TAG, license=license,
                         datasets=[dataset] if dataset else None, base_model=base[0] if base else None,
                         tags=["ltaug", "class-conditional", "long-tailed", "diffusion", f"loss-{loss}"],
                         model_name=name, eval_results=results or None)


def model_card(run: RunDir, meta: dict, *, has_grid: bool, classifiers: list[str], license: str = LICENSE) -> str:
    """The README.md of an export: Hub metadata (card_data), dataset and counts, the loss, metrics with their
    protocol, the sample grid, how to load it, and the run's recipe."""
    recipe = run.recipe()
    dataset, loss = recipe.data.dataset, recipe.generator.loss
    classes, counts = list(meta.get("classes") or []), list(meta.get("counts") or [])
    lines = [f"# ltaug class-conditional diffusion model: {dataset}, loss {loss}", "",
             f"A class-conditional DDPM trained by ltaug on the long-tailed dataset "
             f"`{dataset}` with the `{loss}` loss, {meta.get('step')} optimizer steps; "
             f"{'EMA' if meta.get('ema', True) else 'raw (non-EMA)'} weights of `{meta.get('checkpoint')}` "
             f"(sha256 {str(meta.get('checkpoint_sha256', ''))[:12]}). Schedule: {meta.get('schedule')}, "
             f"T = {meta.get('T')}; images {meta.get('resolution')}x{meta.get('resolution')}, "
             f"{meta.get('channels')} channel(s).", ""]
    if recipe.generator.init_from:
        lines += [f"Fine-tuned from `{recipe.generator.init_from}` (generator.init_from).", ""]
    if has_grid:
        lines += ["![class grid: one row per class, head to tail](grid.png)", ""]
    lines += ["## Use", "", "```python", "import torch", "from ltaug import ClassConditionalPipeline", "",
              'pipe = ClassConditionalPipeline.from_pretrained("THIS_FOLDER_OR_HUB_ID")',
              "seeds = [0, 1, 2]",
              f"images = pipe(class_labels={classes[:3]!r}, w=1.0, num_inference_steps={meta.get('T')},",
              "              generator=[torch.Generator().manual_seed(s) for s in seeds]).images", "```", "",
              "Guidance: eps = (1 + w) eps(x, c) - w eps(x, null), the null label is "
              f"{len(classes)}; diffusers' guidance_scale is 1 + w. Without ltaug: "
              '`DiffusionPipeline.from_pretrained("THIS_FOLDER_OR_HUB_ID", trust_remote_code=True)`.',
              ""]
    if classifiers:
        lines += ["Classifiers (timm format): " + ", ".join(f"`{c}/`" for c in classifiers) +
                  ' — `timm.create_model("local-dir:DIR/classifier-NAME", pretrained=True)` after `import ltaug`; '
                  "for `hf-hub:` loading, `ltaug export RUN --classifier NAME` writes one as a repository of its own.",
                  ""]
    if counts:
        lines += ["## Training data: images per class", "", "| class | images |", "|---|---|"]
        lines += [f"| {c} | {n} |" for c, n in zip(classes, counts)]
        lines.append("")
    results = read_json(run.evaluate / "results.json") or {}
    summary = read_json(run.summary) or {}
    sections: list[str] = []
    rows = {g: _numbers(results.get(g)) for g in GROUP_ROWS if _numbers(results.get(g))}
    if rows:
        sections += ["`ltaug evaluate` (evaluate/results.json):", "", *_table(rows), ""]
    leakage = {g: _numbers(v) for g, v in ((results.get("overlap") or {}).get("leakage") or {}).items()
               if _numbers(v)}
    if leakage:
        sections += ["Overlap diagnostics (a reference classifier on the generated images, per group):", "",
                     *_table(leakage), ""]
    if sections and results.get("protocol"):
        sections += ["Protocol:", "", "```json", json.dumps(results["protocol"], indent=1), "```", ""]
    rows = {k: _numbers(v) for k, v in summary.items() if isinstance(v, dict) and k != "stages" and _numbers(v)}
    if rows:
        sections += ["`ltaug run` (summary.json): classifier accuracy per group, real only vs real + synthetic:", "",
                     *_table(rows), ""]
    if sections:
        lines += ["## Metrics", "", *sections]
    lines += ["## Recipe (config.yaml of the run)", "", "```yaml", run.config.read_text().rstrip(), "```", ""]
    data = card_data(run, meta, license=license)
    return str(ModelCard(f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(lines)))


def upload_files(folder: str | Path) -> list[str]:
    """The files `push_to_hub` uploads from `folder`: every file in it, relative, sorted (what upload_folder sends;
    the folder holds no hidden files or links)."""
    root = Path(folder)
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def push_to_hub(folder: str | Path, repo_id: str, *, private: bool = False) -> str:
    """Create the model repository (exist_ok) and upload exactly `folder`; returns the repository's URL. Offline or
    without a token: LtaugError naming --push-to-hub (the folder stays as written)."""
    folder = Path(folder)
    if hub_offline():
        raise LtaugError(f"--push-to-hub {repo_id}: the Hub is offline (HF_HUB_OFFLINE=1); the export is written "
                         f"at {folder}; push it later with network: unset HF_HUB_OFFLINE and run "
                         f"`hf upload {repo_id} {folder}` (or this command again)")
    from huggingface_hub import HfApi, get_token  # noqa: PLC0415  (only when pushing)
    from huggingface_hub.errors import HfHubHTTPError  # noqa: PLC0415

    if get_token() is None:
        raise LtaugError(f"--push-to-hub {repo_id}: no Hugging Face token; log in with `hf auth login` (or set "
                         f"HF_TOKEN), then push the export written at {folder} again")
    api = HfApi()
    try:
        url = api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        api.upload_folder(folder_path=str(folder), repo_id=repo_id, repo_type="model",
                          commit_message=f"ltaug export ({len(upload_files(folder))} files)")
    except HfHubHTTPError as e:
        raise LtaugError(f"--push-to-hub {repo_id}: the Hub refused the upload ({e}); check the id and that your "
                         f"token may write to it; the export is at {folder}") from e
    return str(url)


CLASSIFIER_FILES = (*TIMM_FILES, CARD)


def classifier_folder(path: str | Path, name: Optional[str] = None) -> Path:
    """The classifier a classifier-only export takes: `path` itself (a classifier folder) or, with name, the run's
    classifier-NAME/ (NAME alone or the folder's name)."""
    p = Path(path)
    if name:
        run = RunDir.find(p)
        base = run.path if run is not None else p
        p = base / name if name.startswith("classifier-") else base / f"classifier-{name}"
    if not all((p / f).is_file() for f in TIMM_FILES):
        raise LtaugError(f"{p}: not a trained classifier folder (no {' + '.join(TIMM_FILES)}); give "
                         "RUN/classifier-NAME or RUN --classifier NAME (real, synth, ...)")
    return p


def export_classifier(path: str | Path, *, name: Optional[str] = None, out: Optional[str | Path] = None,
                      license: str = LICENSE) -> Path:
    """A classifier alone as a timm model repository: OUT holds config.json + model.safetensors at its root (what
    `timm.create_model("hf-hub:OWNER/NAME", pretrained=True)` reads) and a model card. Default OUT: export-NAME/
    beside the classifier folder. Whole or absent, as export_run; an existing OUT is replaced only when it is a
    previous classifier export."""
    src = classifier_folder(path, name)
    out_dir = Path(out) if out is not None else src.parent / f"export-{src.name}"
    if out_dir.is_symlink():
        raise LtaugError(f"--out {out_dir}: is a symbolic link; give a real folder")
    if out_dir.exists() and (not out_dir.is_dir() or not {p.name for p in out_dir.iterdir()} <= set(CLASSIFIER_FILES)):
        raise LtaugError(f"--out {out_dir}: exists and is not a previous classifier export; give a new or empty folder")
    card = classifier_card(src, license=license)
    tmp = out_dir.with_name(f".{out_dir.name}.tmp")
    if tmp.is_symlink():
        tmp.unlink()  # never write through a link
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir(parents=True)
        for f in TIMM_FILES:
            shutil.copyfile(src / f, tmp / f)
        atomic_write_text(tmp / CARD, card)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = out_dir.with_name(f".{out_dir.name}.old") if out_dir.exists() else None
    if old is not None:  # the previous export is moved aside, then removed: OUT is always whole
        shutil.rmtree(old, ignore_errors=True)
        out_dir.rename(old)
    tmp.rename(out_dir)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return out_dir


def classifier_card(folder: Path, *, license: str = LICENSE) -> str:
    """The README.md of a classifier export: timm metadata, balanced test accuracy per group as model-index
    results, and how to load it with timm."""
    results = read_json(folder / "results.json") or {}
    config = read_json(folder / "config.json") or {}
    arch = config.get("architecture", "?")
    dataset = results.get("dataset")
    hub_dataset = HUB_DATASETS.get(dataset or "")
    test = results.get("test_set") or dataset
    evals = [EvalResult(task_type="image-classification", dataset_type=HUB_DATASETS.get(str(test), str(test)),
                        dataset_name=f"{test} (balanced test set)", dataset_split="test", metric_type="accuracy",
                        metric_name=f"balanced accuracy ({g})", metric_value=v, metric_config=g)
             for g, v in _numbers(results.get("accuracy")).items()]
    data = ModelCardData(library_name="timm", pipeline_tag="image-classification", license=license,
                         datasets=[hub_dataset] if hub_dataset else None,
                         tags=["ltaug", "long-tailed", f"loss-{results.get('loss', '?')}"],
                         model_name=f"ltaug-{arch}-{dataset or 'classifier'}", eval_results=evals or None)
    synthetic = (results.get("synthetic") or {}).get("sources")
    lines = [f"# ltaug long-tail classifier: {arch} on {dataset or 'its dataset'}", "",
             f"`{arch}` trained by ltaug with the `{results.get('loss', '?')}` loss for {results.get('epochs', '?')} "
             f"epochs on `{dataset}`" + (" plus synthetic images" if synthetic else "") + ".", "",
             "## Use", "", "```python", "import ltaug  # registers ltaug's CIFAR ResNets with timm (no torch import)",
             "import timm", "",
             'model = timm.create_model("hf-hub:OWNER/NAME", pretrained=True).eval()   # or "local-dir:THIS_FOLDER"',
             "transform = timm.data.create_transform(**timm.data.resolve_data_config(model=model))",
             "```", "", "The transform is the training's own normalization and resolution; `model.pretrained_cfg"
             "[\"label_names\"]` holds the class names.", ""]
    rows = {"balanced test accuracy": _numbers(results.get("accuracy"))}
    if rows["balanced test accuracy"]:
        lines += ["## Metrics", "", *_table(rows), ""]
    return str(ModelCard(f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(lines)))
