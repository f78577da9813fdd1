"""`synthesize`: fill a folder with class-balanced samples of a trained generator, resumably; `generate_images`:
the same images in memory (for evaluation).

A run: load the generator (EMA weights) -> plan -> check the folder's identity (settings.json) -> scan what is done
-> draw the missing (label, seed) pairs in batches, locally or on Ray workers -> [filter] -> write PNG + manifest line
as each batch comes back -> repeat for filter rejections -> optional npz. Any interruption is resumed by running the
same call again.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from ltaug.errors import LtaugError
from ltaug.synth import folder as F
from ltaug.synth.plan import Plan, image_seed, make_plan


@dataclass
class SynthResult:
    out_dir: Path
    plan: Plan
    counts: dict[int, int]  # label -> synthetic images in the folder now
    generated: int  # images written by this call
    already_done: int  # images found finished at the start (resume)
    seconds: float
    images_per_s: float
    settings: dict
    npz: Optional[Path] = None
    rejection: dict[int, dict] = field(default_factory=dict)  # label -> {"tried", "rejected", "rate"} (filter)
    shortfall: dict[int, int] = field(default_factory=dict)  # label -> images still missing (filter gave up)
    repaired: dict = field(default_factory=dict)
    engine: str = ""

    @property
    def complete(self) -> bool:
        return not self.shortfall


def _load(run_or_ckpt: Any, device: str):
    if hasattr(run_or_ckpt, "net") and hasattr(run_or_ckpt, "schedule"):
        return run_or_ckpt  # already a LoadedGenerator
    path = Path(run_or_ckpt)
    if not path.exists():
        raise LtaugError(f"{path}: no such run directory or checkpoint file")
    from ltaug.diffusion.checkpoint import load_generator

    return load_generator(path, device=device, ema=True)


def default_out_dir(run_or_ckpt: str | Path) -> Path:
    """RUN/synth for a run directory (or its generator/ folder, or a checkpoint inside it)."""
    path = Path(run_or_ckpt).resolve()
    for p in [path, *path.parents][:4]:
        if (p / "generator").is_dir():
            return p / "synth"
        if p.name == "generator":
            return p.parent / "synth"
    raise LtaugError(f"{run_or_ckpt} is not inside a run directory; give --out for the synthetic folder")


def settings_of(gen, *, sampler: str, steps: int, eta: float, variance: str, w: float, seed: int, clip_x0: bool,
                filter_identity: Optional[dict], amp: str = "none") -> dict:
    """The identity of every image in the folder (what settings.json stores); irrelevant knobs are normalized
    (DDPM has T steps and no eta; DDIM has no step variance) so they never cause a false conflict."""
    T = len(gen.schedule.betas)
    ddpm = sampler == "ddpm"
    # amp is named only when on: folders sampled in fp32 keep the identity they had before the option existed
    return ({"amp": amp} if amp != "none" else {}) | {
        "checkpoint": str(gen.checkpoint_path), "checkpoint_sha256": gen.checkpoint_sha256, "step": gen.step,
        "sampler": sampler, "steps": T if ddpm else int(steps), "eta": None if ddpm else float(eta),
        "variance": variance if ddpm else None, "w": float(w), "s": 1.0 + float(w),
        "guidance": "eps = (1 + w) eps(x, c) - w eps(x, null); s = 1 + w",
        "seed": int(seed), "clip_x0": bool(clip_x0), "filter": filter_identity,
        "classes": list(gen.classes), "resolution": gen.resolution, "channels": gen.channels,
    }


def _check_args(sampler: str, steps: int, w: float, eta: float, variance: str, batch_size: int, workers: int,
                amp: str = "none") -> None:
    if amp not in ("none", "bf16", "fp16"):
        raise LtaugError(f"--amp '{amp}': expected none, bf16 or fp16")
    if sampler not in ("ddpm", "ddim"):
        raise LtaugError(f"--sampler '{sampler}': expected ddpm or ddim")
    if variance not in ("large", "small"):
        raise LtaugError(f"--variance '{variance}': expected large or small")
    if w < 0:
        raise LtaugError(f"--w {w}: the guidance weight must be >= 0 (w = 0 is plain conditional sampling; "
                         f"the scale of other libraries is s = 1 + w)")
    if steps < 1:
        raise LtaugError(f"--steps {steps}: must be >= 1")
    if eta < 0:
        raise LtaugError(f"--eta {eta}: must be >= 0")
    if batch_size < 1:
        raise LtaugError(f"--batch-size {batch_size}: must be >= 1")
    if workers < 1:
        raise LtaugError(f"--workers {workers}: must be >= 1")


def synthesize(run_or_ckpt: Any, out_dir: str | Path | None = None, plan: Optional[Plan] = None, *,
               per_class: int = 0, fill_to: int = 0, classes: Sequence[str] = (), seed: int = 0,
               sampler: str = "ddim", steps: int = 50, w: float = 0.0, eta: float = 0.0, variance: str = "large",
               clip_x0: bool = False, batch_size: int = 64, workers: int = 1, address: str = "",
               device: str = "auto", progress: bool = True, overwrite: bool = False, npz: bool = False,
               filter_classifier: str | Path | None = None, min_confidence: float = 0.5,
               filter_max_tries: float = 20.0, amp: str = "none") -> SynthResult:
    """Draw the plan's images into `out_dir` (default RUN/synth), resuming whatever is already there.

    run_or_ckpt: run dir, generator dir, checkpoint file, or a LoadedGenerator. plan: a Plan (see `make_plan`), or
    None to make one from per_class / fill_to / classes / seed. Raises LtaugError on bad input or when the folder
    holds images of another checkpoint or other settings (overwrite=True starts the folder over).
    """
    _check_args(sampler, steps, w, eta, variance, batch_size, workers, amp)
    from ltaug.synth.engine import LocalEngine, RayEngine, resolve_device

    device = resolve_device(device)
    if amp == "fp16" and device == "cpu" and workers == 1 and not address:
        raise LtaugError("--amp fp16 needs a GPU and this run samples on the CPU; use --amp bf16 or none")
    gen = _load(run_or_ckpt, device)
    if sampler == "ddim" and steps > len(gen.schedule.betas):
        raise LtaugError(f"--steps {steps}: DDIM cannot take more steps than the schedule's T = "
                         f"{len(gen.schedule.betas)}")
    if plan is None:
        plan = make_plan(gen.classes, gen.counts, per_class=per_class, fill_to=fill_to, only=list(classes) or None,
                         seed=seed)
    if plan.classes != list(gen.classes):
        raise LtaugError("the plan was made for another generator's classes")
    out = Path(out_dir) if out_dir is not None else default_out_dir(run_or_ckpt)
    filt = None
    if filter_classifier:
        from ltaug.synth.filter import ConfidenceFilter

        filt = ConfidenceFilter(filter_classifier, min_confidence, list(gen.classes), device)
    settings = settings_of(gen, sampler=sampler, steps=steps, eta=eta, variance=variance, w=w, seed=plan.seed,
                           clip_x0=clip_x0, filter_identity=filt.identity() if filt else None, amp=amp)
    F.prepare(out, settings, list(gen.classes), overwrite)
    from ltaug.rundir import atomic_write_json

    atomic_write_json(out / F.PLAN, plan.to_json())
    state = F.scan(out, list(gen.classes))
    dirs = F.class_dirs(list(gen.classes))
    for r in plan.rows:  # only classes that get images: `folder:OUT` refuses empty class folders
        if r.new > 0:
            (out / dirs[r.label]).mkdir(parents=True, exist_ok=True)

    want = plan.counts()
    done_k = {y: state.done_k(y) for y in want}
    tried_k = {y: done_k[y] | state.rejected_k(y) for y in want}
    for y, n in want.items():
        if len(done_k[y]) > n:
            raise LtaugError(f"{out} already holds {len(done_k[y])} images of class '{gen.classes[y]}' but the plan "
                             f"asks {n}; use a plan at least as large, --overwrite, or --out")
    already = sum(len(v) for v in done_k.values())
    sample_kw = dict(sampler=sampler, steps=steps, eta=eta, w=w, variance=variance, clip_x0=clip_x0, amp=amp)
    record_base = {"checkpoint": str(gen.checkpoint_path), "checkpoint_sha256": gen.checkpoint_sha256,
                   "sampler": sampler, "steps": settings["steps"], "eta": settings["eta"],
                   "variance": settings["variance"], "w": float(w), "s": 1.0 + float(w)} | (
                      {"amp": amp} if amp != "none" else {})
    rejected_n = {y: len(state.rejected_k(y)) for y in want}
    shortfall: dict[int, int] = {}
    generated = 0
    t0 = time.perf_counter()

    def pending() -> list[tuple[int, int]]:
        """(label, k) still to try: per class, the smallest untried k, as many as images are still missing."""
        work = []
        for y, n in want.items():
            need = n - len(done_k[y])
            if need <= 0 or y in shortfall:
                continue
            if filt is not None and len(tried_k[y]) >= filter_max_tries * n:
                shortfall[y] = need
                continue
            k = 0
            while need > 0:
                if k not in tried_k[y]:
                    work.append((y, k))
                    need -= 1
                k += 1
        return work

    from ltaug.progress import progress_bar

    engine = None
    try:
        with progress_bar(total=plan.total, desc="synthesize", unit="img", enabled=progress,
                          completed=min(already, plan.total)) as bar:
            while True:
                work = pending()
                if not work:
                    break
                if engine is None:
                    engine = (LocalEngine(gen, sample_kw, device) if workers == 1 and not address
                              else RayEngine(gen.checkpoint_path, sample_kw, device, workers, address))
                # seed order interleaves the classes, so a partial run is balanced
                items = sorted(((y, plan.seed_of(y, k)) for y, k in work), key=lambda p: p[1])
                batches = [([y for y, _ in items[i:i + batch_size]], [s for _, s in items[i:i + batch_size]])
                           for i in range(0, len(items), batch_size)]
                for labels, seeds, images in engine.run(batches):
                    conf = filt.confidence(images, labels) if filt is not None else None
                    records, rejects = [], []
                    for i, (y, s) in enumerate(zip(labels, seeds)):
                        _, k = _index(s, len(gen.classes), plan.seed)
                        tried_k[y].add(k)
                        if conf is not None and conf[i] < filt.min_confidence:
                            rejects.append({"label": y, "class": gen.classes[y], "seed": s, "k": k,
                                            "confidence": float(conf[i])})
                            rejected_n[y] += 1
                            continue
                        if len(done_k[y]) >= want[y]:
                            continue
                        rel = f"{dirs[y]}/{F.png_name(s)}"
                        F.write_png(out / rel, images[i])
                        rec = {"path": rel, "label": y, "class": gen.classes[y], "seed": s, "k": k, **record_base}
                        if conf is not None:
                            rec["confidence"] = float(conf[i])
                        records.append(rec)
                        done_k[y].add(k)
                    F.append_lines(out / F.REJECTED, rejects)
                    F.append_lines(out / F.MANIFEST, records)
                    generated += len(records)
                    fields = {}
                    if filt is not None:
                        tried = sum(len(v) for v in tried_k.values())
                        fields["rejected"] = f"{sum(rejected_n.values())}/{tried}"
                    bar.advance(len(records), **fields)
    finally:
        if engine is not None:
            engine.close()
    seconds = time.perf_counter() - t0
    npz_path = F.write_npz(out, list(gen.classes)) if npz else None
    rejection = {}
    if filt is not None:
        for y in want:
            tried = len(tried_k[y])
            rejection[y] = {"class": gen.classes[y], "tried": tried, "rejected": rejected_n[y],
                            "rate": rejected_n[y] / tried if tried else 0.0}
    return SynthResult(out_dir=out, plan=plan, counts={y: len(done_k[y]) for y in want}, generated=generated,
                       already_done=already, seconds=seconds, images_per_s=generated / seconds if seconds > 0 else 0.0,
                       settings=settings, npz=npz_path, rejection=rejection, shortfall=shortfall,
                       repaired={k: v for k, v in state.repaired.items() if v},
                       engine=engine.description if engine is not None else "nothing to draw")


def _index(seed: int, num_classes: int, base_seed: int) -> tuple[int, int]:
    from ltaug.synth.plan import seed_index

    return seed_index(seed, num_classes, base_seed)


def synthesize_from_config(run_or_ckpt: Any, cfg, *, seed: int = 0, out_dir: str | Path | None = None,
                           device: str = "auto", overwrite: bool = False, progress: bool = True) -> SynthResult:
    """`synthesize` with the knobs of a recipe's `synth` section (ltaug.synth.config.SynthConfig)."""
    return synthesize(run_or_ckpt, out_dir, per_class=cfg.per_class, fill_to=cfg.fill_to, classes=cfg.classes,
                      seed=seed, sampler=cfg.sampler, steps=cfg.steps, w=cfg.w, eta=cfg.eta, variance=cfg.variance,
                      batch_size=cfg.batch_size, workers=cfg.workers, address=cfg.address, device=device,
                      progress=progress, overwrite=overwrite, npz=cfg.npz,
                      filter_classifier=cfg.filter_classifier or None, min_confidence=cfg.min_confidence,
                      filter_max_tries=cfg.filter_max_tries, amp=cfg.amp)


def generate_images(path: Any, labels: Sequence[int], seeds: Optional[Sequence[int]] = None, *,
                    sampler: str = "ddim", steps: int = 50, w: float = 0.0, eta: float = 0.0,
                    variance: str = "large", device: str = "auto", batch_size: int = 64,
                    seed: int = 0, amp: str = "none") -> np.ndarray:
    """Images of a generator in memory: uint8 [N, H, W, C], image i of label labels[i] drawn from seeds[i].

    path: run dir, generator dir, checkpoint file or LoadedGenerator. seeds default to the synthesis plan's rule
    (the k-th image of each label gets `image_seed(label, k, C, seed)`), so they match `ltaug synthesize`'s PNGs.
    """
    _check_args(sampler, steps, w, eta, variance, batch_size, 1, amp)
    from ltaug.synth.engine import draw, resolve_device

    device = resolve_device(device)
    gen = _load(path, device)
    labels = [int(y) for y in labels]
    if any(not 0 <= y < gen.num_classes for y in labels):
        raise LtaugError(f"labels must be in [0, {gen.num_classes})")
    if seeds is None:
        seen: dict[int, int] = {}
        seeds = []
        for y in labels:
            seeds.append(image_seed(y, seen.get(y, 0), gen.num_classes, seed))
            seen[y] = seen.get(y, 0) + 1
    if len(seeds) != len(labels):
        raise LtaugError(f"{len(labels)} labels but {len(seeds)} seeds")
    kw = dict(sampler=sampler, steps=steps, eta=eta, w=w, variance=variance, amp=amp)
    return draw(gen, labels, list(seeds), kw, device, batch_size)
