"""The stages of a feature-space run (`generator.space: features`), in one run directory:

    classifier-real  the run's real-only image classifier (when features.backbone is `run`: the backbone)
    features         train / validation / test features of the backbone (RUN/features/, cached, resumable)
    generator        the diffusion model on the standardized training features (the image loop, an MLP)
    synth            the plan's synthetic features (RUN/synth/class-NNNN.npy)
    head-real        a linear head retrained on the real features (cRT): the baseline and the judge
    head-synth       the same head on real + synthetic features (LDMLR)
    evaluate         the generator in the feature space against the held-out features (ltaug.features.evaluate)

`run_pipeline` calls `feature_stages` with its own stage runner, so markers, resume and timings are the image
pipeline's.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import torch

from ltaug.callbacks import ReportFn
from ltaug.classify.data import mix_counts, select_per_class
from ltaug.classify.models import NormedLinear
from ltaug.classify.train import train_classifier
from ltaug.config import Recipe
from ltaug.data import load_from_config
from ltaug.data.longtail import GROUPS
from ltaug.device import resolve_device
from ltaug.diffusion.checkpoint import list_checkpoints, load_generator
from ltaug.diffusion.train import train_generator
from ltaug.errors import LtaugError
from ltaug.features.backbone import load_backbone
from ltaug.features.evaluate import evaluate_features
from ltaug.features.head import Head, fit_and_score
from ltaug.features.store import extract_split, is_done, load_split, standardization
from ltaug.features.synth import load_synthetic_features, synthesize_features
from ltaug.files import atomic_write, atomic_write_json, read_json
from ltaug.metrics.inception import images_digest
from ltaug.rundir import RunDir

HEAD_FILE = "head.pt"
RESULTS = "results.json"


def has_validation(recipe: Recipe) -> bool:
    d = recipe.data
    return bool(d.val_dataset or d.val_from_test or d.dataset in ("mnist-lt", "cifar10-lt", "cifar100-lt"))


def extract_features(recipe: Recipe, run: RunDir, *, progress: bool, overwrite: bool = False) -> dict:
    """Encode the train / validation / test images with the recipe's backbone into RUN/features/."""
    f = recipe.features
    device = resolve_device(recipe.device)
    backbone = load_backbone(f.backbone, device, run_classifier=run.classifier("real"), resolution=f.resolution)
    out: dict = {"backbone": backbone.identity}
    splits = ("train", "val", "test") if has_validation(recipe) else ("train", "test")
    for split in splits:
        ds = load_from_config(recipe.data, split)
        if backbone.classes and backbone.classes != list(ds.classes) and f.backbone == "run":
            raise LtaugError(f"the run's classifier has other classes than {ds.name}")
        ident = {**backbone.identity, "dataset": ds.name, "split": split,
                 "images_sha256": images_digest(ds.images, ds.labels)}
        fs = extract_split(run.features, split, ds.images, ds.labels, list(ds.classes), ident, backbone.encode,
                           batch_size=f.batch_size, overwrite=overwrite, progress=progress)
        out[split] = {"n": len(fs), "dim": fs.dim}
    if backbone.head is not None:  # the backbone's own head: the end-to-end baseline, read on the same features
        atomic_write(run.features / "backbone_head.npz", lambda fh: np.savez(fh, **backbone.head))
    return out


def _real(run: RunDir) -> tuple:
    return load_split(run.features, "train"), (load_split(run.features, "val") if is_done(run.features, "val")
                                               else None), load_split(run.features, "test")


def train_head_stage(recipe: Recipe, run: RunDir, name: str, synthetic: Optional[Path]) -> dict:
    """Fit the head on real (+ synthetic, mixed by classifier.synthetic_mode / ratio) features; write
    RUN/head-NAME/{head.pt, results.json}."""
    train, val, test = _real(run)
    real_counts = train.counts
    x, y, syn = np.asarray(train.x), train.labels, np.zeros(len(train), bool)
    if synthetic is not None:
        sx, sy, _ = load_synthetic_features(synthetic)
        cfg = recipe.classifier  # the image classifier's mixing rule: the same choice of synthetic samples
        take = mix_counts(real_counts, np.bincount(sy, minlength=train.num_classes).tolist(), cfg.synthetic_mode,
                          cfg.synthetic_ratio)
        idx = select_per_class(sy, take, recipe.seed)
        x, y = np.concatenate([x, sx[idx]]), np.concatenate([y, sy[idx]])
        syn = np.concatenate([syn, np.ones(len(idx), bool)])
    mean, std = standardization(train.x)
    head, results = fit_and_score((x, y, syn), (np.asarray(val.x), val.labels) if val is not None else None,
                                  (np.asarray(test.x), test.labels), real_counts, recipe.classifier, recipe.features,
                                  recipe.seed, mean=mean, std=std)
    out = run.head(name)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(out / HEAD_FILE, lambda fh: torch.save(head.state(), fh))
    results.update({"name": f"head-{name}", "classes": train.classes, "dataset": recipe.data.dataset,
                    "backbone": train.info.get("backbone"), "val_set": val.info.get("dataset") if val else None,
                    "test_set": test.info.get("dataset")})
    atomic_write_json(out / RESULTS, results)
    return {"top1": results["top1"]}


def load_head(folder: Path) -> Head:
    state = torch.load(folder / HEAD_FILE, map_location="cpu", weights_only=True)
    w = state["linear"]["weight"]
    if "bias" in state["linear"]:
        linear = torch.nn.Linear(w.shape[1], w.shape[0])
    else:  # LDAM's cosine head
        linear = NormedLinear(w.shape[1], w.shape[0])
    linear.load_state_dict(state["linear"])
    return Head(linear.eval(), state["mean"], state["std"], float(state["logit_scale"]))


def evaluate_stage(recipe: Recipe, run: RunDir) -> dict:
    device = resolve_device(recipe.device)
    gen = load_generator(run.path, device=device)
    judge = load_head(run.head("real"))
    train, val, test = _real(run)
    n = min(recipe.evaluate.num_samples, 500 * train.num_classes)
    res = {"protocol": {"space": "features", "backbone": train.info.get("backbone"), "judge": "head-real",
                        "num_samples": n}}
    res["test"] = evaluate_features(gen, judge, test, train.counts, recipe.synth, num_samples=n, seed=recipe.seed,
                                    device=device)
    if val is not None:
        res["val"] = evaluate_features(gen, judge, val, train.counts, recipe.synth, num_samples=n, seed=recipe.seed,
                                       device=device)
    for g in GROUPS:  # the test-set reading at the top level, as the image evaluation's groups
        res[g] = res["test"].get(g)
    run.evaluate.mkdir(parents=True, exist_ok=True)
    atomic_write_json(run.evaluate / RESULTS, res)
    return {"fd.few": (res["few"] or {}).get("fd")}


def link_features(src: RunDir, dst: RunDir) -> dict:
    """Give `dst` the finished features of `src` (hard links where the file system allows, else copies): a sweep's
    trials and a comparison's runs share one extraction."""
    dst.features.mkdir(parents=True, exist_ok=True)
    for f in sorted(src.features.iterdir()):
        target = dst.features / f.name
        if f.is_file() and not f.name.endswith((".partial", ".progress")) and not target.exists():
            try:
                os.link(f, target)
            except OSError:
                shutil.copy2(f, target)
    return {"shared": str(src.path)}


def prepare_features(recipe: Recipe, shared: RunDir, *, progress: bool) -> Path:
    """The backbone (the run's classifier, when features.backbone is run) and the features, once, in `shared`."""
    if not shared.exists():
        shared.init(recipe)
    out = shared.classifier("real")
    if recipe.features.backbone == "run" and not shared.stage_done("classifier-real"):
        t0 = time.perf_counter()
        train_classifier(recipe, out, progress=progress, resume=out.is_dir() and any(out.glob("*.pt")))
        shared.finish_stage("classifier-real", time.perf_counter() - t0)
    if not shared.stage_done("features"):
        t0 = time.perf_counter()
        info = extract_features(recipe, shared, progress=progress)
        shared.finish_stage("features", time.perf_counter() - t0, info)
    return shared.path


def feature_stages(recipe: Recipe, run: RunDir, stage: Callable[[str, Callable[[], Any]], Any], *, progress: bool,
                   report: Optional[ReportFn] = None, shared_features: Optional[str] = None) -> None:
    """Run (or resume) every stage of a feature-space run through `stage(name, fn)`. shared_features: a run folder
    whose backbone features to use (`prepare_features`) instead of computing them here."""
    device = resolve_device(recipe.device)
    if shared_features:
        stage("features", lambda: link_features(RunDir(shared_features), run))
    else:
        if recipe.features.backbone == "run":
            out = run.classifier("real")
            stage("classifier-real", lambda: train_classifier(recipe, out, progress=progress,
                                                              resume=out.is_dir() and any(out.glob("*.pt"))))
        stage("features", lambda: extract_features(recipe, run, progress=progress))
    stage("generator", lambda: train_generator(recipe, run.path, resume=bool(list_checkpoints(run.checkpoints)),
                                               report=report, progress=progress) and None)
    stage("synth", lambda: synthesize_features(load_generator(run.path, device=device), recipe.synth, run.synth,
                                               seed=recipe.seed, device=device, progress=progress))
    stage("head-real", lambda: train_head_stage(recipe, run, "real", None))
    stage("head-synth", lambda: train_head_stage(recipe, run, "synth", run.synth))
    stage("evaluate", lambda: evaluate_stage(recipe, run))


def feature_summary(run: RunDir, timings: dict) -> dict:
    """summary.json of a feature-space run: the heads' accuracy (real only / real + synthetic), the backbone's own
    end-to-end accuracy when it is the run's classifier, and the generator's feature-space metrics."""
    real = read_json(run.head("real") / RESULTS) or {}
    synth = read_json(run.head("synth") / RESULTS) or {}
    e2e = read_json(run.classifier("real") / RESULTS)
    ev = read_json(run.evaluate / RESULTS) or {}

    def acc(r: dict) -> dict:
        return {g: (r.get("accuracy") or {}).get(g) for g in GROUPS}

    a_real, a_synth = acc(real), acc(synth)
    gain = {g: a_synth[g] - a_real[g] if a_real[g] is not None and a_synth[g] is not None else None for g in GROUPS}
    gen_metrics = {}
    for g in GROUPS:
        for k, v in (ev.get(g) or {}).items():
            if isinstance(v, (int, float)) and k != "classes":
                gen_metrics[f"{k}.{g}"] = v
    summary = {"run_dir": str(run.path), "space": "features", "accuracy_real": a_real, "accuracy_synth": a_synth,
               "gain": gain, "val_accuracy_real": real.get("val_accuracy"),
               "val_accuracy_synth": synth.get("val_accuracy"),
               "accuracy_backbone": acc(e2e) if e2e else None, "generator_metrics": gen_metrics, "stages": timings,
               "train_counts": real.get("train_counts_real"), "classes": real.get("classes")}
    atomic_write_json(run.summary, summary)
    return summary
