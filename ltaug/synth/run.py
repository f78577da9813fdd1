"""`synthesize`: fill a folder with class-balanced samples of a trained generator, resumably; `generate_images`:
the same images in memory (for evaluation).

A run: load the generator (EMA weights) -> plan -> check the folder's identity (settings.json) -> scan what is done
-> draw the missing (label, seed) pairs in batches, locally or on Ray workers -> [filter] -> write PNG + manifest line
as each batch comes back -> repeat for filter rejections -> grid.png, optional npz. Any interruption is resumed by
running the same call again. The sampling settings are the recipe's `synth` section (`SynthConfig`), the same
object `ltaug evaluate` samples with.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np
import torch

from ltaug import space
from ltaug.config.synth import SynthConfig
from ltaug.data.synthetic import finished
from ltaug.device import resolve_device
from ltaug.diffusion.checkpoint import LoadedGenerator, load_generator
from ltaug.errors import LtaugError
from ltaug.files import atomic_write_json
from ltaug.locks import holds_lock
from ltaug.progress import progress_bar
from ltaug.raycluster import check_address
from ltaug.rundir import RunDir
from ltaug.synth import folder as F
from ltaug.synth.engine import LocalEngine, RayEngine, draw
from ltaug.synth.filter import ConfidenceFilter
from ltaug.synth.plan import Plan, image_seed, plan_for, seed_index

GeneratorLike = Union[str, Path, LoadedGenerator]


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
    grid: Optional[Path] = None
    rejection: dict[int, dict] = field(default_factory=dict)  # label -> {"tried", "rejected", "rate"} (filter)
    shortfall: dict[int, int] = field(default_factory=dict)  # label -> images still missing (filter gave up)
    repaired: dict = field(default_factory=dict)
    engine: str = ""

    @property
    def complete(self) -> bool:
        return not self.shortfall


def as_generator(generator: GeneratorLike, device: torch.device) -> LoadedGenerator:
    """A LoadedGenerator (EMA weights) from a run dir, generator dir, checkpoint file, or one already loaded."""
    if isinstance(generator, LoadedGenerator):
        return generator
    path = Path(generator)
    if not path.exists():
        raise LtaugError(f"{path}: no such run directory or checkpoint file")
    return load_generator(path, device=device, ema=True)


def default_out_dir(generator: GeneratorLike) -> Path:
    """RUN/synth of the run that holds the generator's checkpoint."""
    where = generator.checkpoint_path if isinstance(generator, LoadedGenerator) else Path(generator)
    run = RunDir.find(where)
    if run is None:
        raise LtaugError(f"{where} is not inside a run directory; give --out for the synthetic folder")
    return run.synth


def checkpoint_record(gen: LoadedGenerator) -> str:
    """The checkpoint's path as records store it: relative to its run directory (absolute outside a run)."""
    run = RunDir.find(gen.checkpoint_path)
    return run.relative(gen.checkpoint_path) if run else str(Path(gen.checkpoint_path).absolute())


def settings_of(gen: LoadedGenerator, cfg: SynthConfig, seed: int, filter_identity: Optional[dict]) -> dict:
    """What settings.json stores: the identity of every image in the folder (SynthConfig.identity) and where the
    images come from. amp is named only when on: fp32 folders keep the identity they had before the option."""
    sampling = {k: v for k, v in cfg.identity(gen.schedule.T).items() if not (k == "amp" and v == "none")}
    return {"checkpoint": checkpoint_record(gen), "checkpoint_sha256": gen.checkpoint_sha256, "step": gen.step,
            **sampling, "s": 1.0 + float(cfg.w),
            "guidance": "eps = (1 + w) eps(x, c) - w eps(x, null); s = 1 + w",
            "seed": int(seed), "filter": filter_identity,
            "classes": list(gen.classes), "resolution": gen.resolution, "channels": gen.channels}


def space_needed(gen: LoadedGenerator, cfg: SynthConfig, plan: Plan, out_dir: str | Path) -> int:
    """Bytes this plan still writes into out_dir (its PNGs and manifest lines not there yet, the npz, the grid):
    the estimate printed with the plan and named when the disk fills up."""
    out = Path(out_dir)
    done: dict[int, int] = {}
    for r in finished(out) if out.is_dir() and not (out / F.MANIFEST).is_symlink() else []:  # never read a link
        done[int(r["label"])] = done.get(int(r["label"]), 0) + 1
    missing = sum(max(0, row.new - done.get(row.label, 0)) for row in plan.rows)
    npz = sum(max(row.new, done.get(row.label, 0)) for row in plan.rows) if cfg.npz else 0
    return F.space_needed(out, (gen.resolution, gen.resolution, gen.channels), missing, npz, len(plan.rows))


def _out_of(args: dict) -> Optional[Path]:
    """The folder synthesize locks (None when the generator path does not exist: the call then fails by name)."""
    if args["out_dir"] is not None:
        return Path(args["out_dir"])
    gen = args["generator"]
    return default_out_dir(gen) if isinstance(gen, LoadedGenerator) or Path(gen).exists() else None


@holds_lock(_out_of, "synthesize")
def synthesize(generator: GeneratorLike, cfg: SynthConfig, out_dir: str | Path | None = None, *, seed: int = 0,
               device: str | torch.device = "auto", progress: bool = True, overwrite: bool = False,
               plan: Optional[Plan] = None) -> SynthResult:
    """Draw the plan's images into `out_dir` (default RUN/synth), resuming whatever is already there.

    generator: run dir, generator dir, checkpoint file, or a LoadedGenerator. cfg: the recipe's `synth` section
    (plan, sampling, batch size, workers, filter). seed: the recipe seed (image seeds, ltaug.synth.plan). plan: a
    Plan made beforehand (e.g. to print it), else `plan_for(gen, cfg, seed)`. Raises LtaugError on bad input or
    when the folder holds images of another checkpoint or other settings (overwrite=True starts the folder over).
    The folder is locked while this runs (a second synthesize on it refuses: ltaug.locks); a full disk raises
    ltaug.space.WriteFault with nothing torn, and the same call later resumes.
    """
    check_address(cfg.address)  # a cluster that does not answer: in seconds, before anything is written
    device = resolve_device(str(device))
    if cfg.amp == "fp16" and device.type == "cpu" and cfg.workers == 1 and not cfg.address:
        raise LtaugError("--amp fp16 needs a GPU and this run samples on the CPU; use --amp bf16 or none")
    gen = as_generator(generator, device)
    check_steps(gen, cfg)
    plan = plan or plan_for(gen, cfg, seed)
    if plan.classes != list(gen.classes):
        raise LtaugError("the plan was made for another generator's classes")
    out = Path(out_dir) if out_dir is not None else default_out_dir(generator)
    filt = (ConfidenceFilter(cfg.filter_classifier, cfg.min_confidence, list(gen.classes), str(device),
                             channels=gen.channels) if cfg.filter_classifier else None)
    settings = settings_of(gen, cfg, plan.seed, filt.identity() if filt else None)
    F.prepare(out, settings, list(gen.classes), overwrite)
    state = F.scan(out, list(gen.classes), (gen.resolution, gen.resolution, gen.channels))
    want = plan.counts()
    done_k = {y: state.done_k(y) for y in want}
    tried_k = {y: done_k[y] | state.rejected_k(y) for y in want}
    for y, n in want.items():  # refused before the plan or a class folder is written
        if len(done_k[y]) > n:
            raise LtaugError(f"{out} already holds {len(done_k[y])} images of class '{gen.classes[y]}' but the plan "
                             f"asks {n}; use a plan at least as large, --overwrite, or --out")
    atomic_write_json(out / F.PLAN, plan.to_json())
    space.expect(out, space_needed(gen, cfg, plan, out))
    dirs = F.class_dirs(list(gen.classes))
    for r in plan.rows:  # only classes that get images: `folder:OUT` refuses empty class folders
        if r.new > 0:
            (out / dirs[r.label]).mkdir(parents=True, exist_ok=True)
    already = sum(len(v) for v in done_k.values())
    record_base = {k: settings[k] for k in ("checkpoint", "checkpoint_sha256", "sampler", "steps", "eta", "variance",
                                            "w", "s", "amp") if k in settings}
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
            if filt is not None and len(tried_k[y]) >= cfg.filter_max_tries * n:
                shortfall[y] = need
                continue
            k = 0
            while need > 0:
                if k not in tried_k[y]:
                    work.append((y, k))
                    need -= 1
                k += 1
        return work

    engine = None
    try:
        with progress_bar(total=plan.total, desc="synthesize", unit="img", enabled=progress,
                          completed=min(already, plan.total)) as bar:
            while True:
                work = pending()
                if not work:
                    break
                if engine is None:
                    engine = (LocalEngine(gen, cfg, device) if cfg.workers == 1 and not cfg.address
                              else RayEngine(gen.checkpoint_path, cfg, device))
                # seed order interleaves the classes, so a partial run is balanced
                items = sorted(((y, plan.seed_of(y, k)) for y, k in work), key=lambda p: p[1])
                b = cfg.batch_size
                batches = [([y for y, _ in items[i:i + b]], [s for _, s in items[i:i + b]])
                           for i in range(0, len(items), b)]
                for labels, seeds, images in engine.run(batches):
                    conf = filt.confidence(images, labels) if filt is not None else None
                    records, rejects = [], []
                    for i, (y, s) in enumerate(zip(labels, seeds)):
                        _, k = seed_index(s, len(gen.classes), plan.seed)
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
    npz_path = F.write_npz(out, list(gen.classes)) if cfg.npz else None
    grid = F.write_grid(out, list(gen.classes), list(gen.counts) or [0] * gen.num_classes)
    rejection = {}
    if filt is not None:
        for y in want:
            tried = len(tried_k[y])
            rejection[y] = {"class": gen.classes[y], "tried": tried, "rejected": rejected_n[y],
                            "rate": rejected_n[y] / tried if tried else 0.0}
    return SynthResult(out_dir=out, plan=plan, counts={y: len(done_k[y]) for y in want}, generated=generated,
                       already_done=already, seconds=seconds, images_per_s=generated / seconds if seconds > 0 else 0.0,
                       settings=settings, npz=npz_path, grid=grid, rejection=rejection, shortfall=shortfall,
                       repaired={k: v for k, v in state.repaired.items() if v},
                       engine=engine.description if engine is not None else "nothing to draw")


def check_steps(gen: LoadedGenerator, cfg: SynthConfig) -> None:
    """Every sampler but ddpm takes `steps` of the T training timesteps."""
    if cfg.sampler != "ddpm" and cfg.steps > gen.schedule.T:
        raise LtaugError(f"--steps {cfg.steps}: {cfg.sampler} cannot take more steps than the schedule's "
                         f"T = {gen.schedule.T} (recipe key 'synth.steps')")


def generate_images(generator: GeneratorLike, labels: Sequence[int], cfg: SynthConfig,
                    seeds: Optional[Sequence[int]] = None, *, seed: int = 0,
                    device: str | torch.device = "auto") -> np.ndarray:
    """Images of a generator in memory: uint8 [N, H, W, C], image i of label labels[i] drawn from seeds[i], with the
    sampling settings of `cfg` (the recipe's `synth` section; its batch_size sets the forward size).

    seeds default to the synthesis plan's rule (the k-th image of each label gets `image_seed(label, k, C, seed)`),
    so they match `ltaug synthesize`'s PNGs.
    """
    device = resolve_device(str(device))
    gen = as_generator(generator, device)
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
    check_steps(gen, cfg)
    return draw(gen, labels, list(seeds), cfg, device, cfg.batch_size)
