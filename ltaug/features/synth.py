"""Synthetic features: the plan of `ltaug synthesize` (ltaug.synth.plan: counts, and one seed per sample from
(recipe seed, label, k)), drawn by the same sampler loop with guidance, then mapped back from the generator's
standardized space to the backbone's. Written as `class-NNNN.npy` (float32 [n, D]) per class, atomically, so an
interrupted run resumes at the next unfinished class; `settings.json` records what decides the samples (checkpoint
sha256, sampling identity, seed, plan) and a folder made otherwise is refused. `load_synthetic_features` reads it.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from ltaug.config.synth import SynthConfig
from ltaug.diffusion.checkpoint import LoadedGenerator
from ltaug.diffusion.sampler import sample
from ltaug.errors import LtaugError
from ltaug.files import atomic_write, atomic_write_json, read_json
from ltaug.progress import progress_bar
from ltaug.synth.plan import Plan, plan_for

SETTINGS = "settings.json"


def class_file(out_dir: Path, label: int) -> Path:
    return out_dir / f"class-{label:04d}.npy"


def generate_features(gen: LoadedGenerator, labels: np.ndarray, seeds: list[int], cfg: SynthConfig,
                      device: torch.device, callback=None) -> np.ndarray:
    """Feature vectors float32 [N, D] in the backbone's space, one per (label, seed), in batches of cfg.batch_size."""
    if gen.space != "features":
        raise LtaugError(f"{gen.checkpoint_path}: an image generator; feature synthesis needs generator.space features")
    if cfg.clip_x0:
        raise LtaugError("synth.clip_x0 clamps to the image range [-1, 1]; feature vectors have none: set it false")
    mean = torch.tensor(gen.meta["feature_mean"], dtype=torch.float64)
    std = torch.tensor(gen.meta["feature_std"], dtype=torch.float64)
    out = []
    for s in range(0, len(labels), cfg.batch_size):
        y = torch.as_tensor(np.asarray(labels[s:s + cfg.batch_size]), dtype=torch.long)
        z = sample(gen.net, gen.schedule, y, seeds[s:s + cfg.batch_size], num_classes=gen.num_classes,
                   sampler=cfg.sampler, steps=cfg.steps, eta=cfg.eta, w=cfg.w, variance=cfg.variance, device=device,
                   shape=gen.shape, clamp=False)
        out.append((z.double().cpu() * std + mean).float().numpy())
        if callback is not None:
            callback(len(y))
    return np.concatenate(out) if out else np.zeros((0, gen.shape[0]), np.float32)


def synthesize_features(gen: LoadedGenerator, cfg: SynthConfig, out_dir: str | os.PathLike, *, seed: int,
                        device: torch.device, overwrite: bool = False, progress: bool = True) -> dict:
    """Fill out_dir with the plan's synthetic features (resuming a folder made with the same settings)."""
    if cfg.filter_classifier:
        raise LtaugError("synth.filter_classifier filters images; the features space has no image classifier to "
                         "filter with: leave it empty")
    if cfg.workers > 1:
        raise LtaugError(f"synth.workers {cfg.workers}: feature synthesis runs in this process (an MLP samples "
                         "thousands of vectors per second); set workers 1")
    out_dir = Path(out_dir)
    plan = plan_for(gen, cfg, seed)
    settings = {"checkpoint_sha256": gen.checkpoint_sha256, "sampling": cfg.identity(gen.schedule.T), "seed": seed,
                "plan": plan.to_json(), "space": "features", "dim": gen.shape[0]}
    have = read_json(out_dir / SETTINGS)
    if have is not None and have != settings:
        if not overwrite:
            diff = next(k for k in settings if have.get(k) != settings[k])
            raise LtaugError(f"{out_dir} holds synthetic features made with other settings ({diff} differs); use "
                             "another output folder or overwrite")
        for p in out_dir.glob("class-*.npy"):
            p.unlink()
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out_dir / SETTINGS, settings)
    t0 = time.perf_counter()
    todo = [r for r in plan.rows if r.new > 0 and not class_file(out_dir, r.label).is_file()]
    generated = 0
    with progress_bar(sum(r.new for r in todo), "synthesize features", "vec", enabled=progress) as bar:
        for r in todo:
            seeds = [plan.seed_of(r.label, k) for k in range(r.new)]
            x = generate_features(gen, np.full(r.new, r.label), seeds, cfg, device, callback=bar.advance)
            atomic_write(class_file(out_dir, r.label), lambda f, x=x: np.save(f, x))
            generated += r.new
    seconds = time.perf_counter() - t0
    return {"generated": generated, "counts": {str(r.label): r.new for r in plan.rows},
            "vectors_per_s": generated / seconds if seconds > 0 and generated else None, "seconds": seconds}


def load_synthetic_features(out_dir: str | os.PathLike) -> tuple[np.ndarray, np.ndarray, Optional[Plan]]:
    """(features float32 [N, D], labels int64 [N], plan) of a finished synthetic-features folder."""
    out_dir = Path(out_dir)
    settings = read_json(out_dir / SETTINGS)
    if settings is None or settings.get("space") != "features":
        raise LtaugError(f"{out_dir} is not a synthetic-features folder (no {SETTINGS} with space features)")
    plan = Plan.from_json(settings["plan"])
    xs, ys = [], []
    for r in plan.rows:
        if r.new == 0:
            continue
        f = class_file(out_dir, r.label)
        if not f.is_file():
            raise LtaugError(f"{out_dir}: class {r.name} is unfinished ({f.name} missing); run the synth stage again")
        x = np.load(f)
        xs.append(x)
        ys.append(np.full(len(x), r.label, dtype=np.int64))
    dim = int(settings["dim"])
    return (np.concatenate(xs) if xs else np.zeros((0, dim), np.float32),
            np.concatenate(ys) if ys else np.zeros(0, np.int64), plan)
