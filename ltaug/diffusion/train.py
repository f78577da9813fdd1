"""The generator's training loop: `train_generator(recipe, run_dir)`, behind `ltaug train-generator`, `ltaug run` and
the Ray Tune trials alike.

One optimizer step: for each of `accum` micro-batches, take the step's images (`BatchOrder`: a function of (seed,
step)), evaluate the registered loss (its random draws from a generator seeded by (seed, rank, step)),
backpropagate under autocast; then clip the gradient norm, take an Adam step with a linearly warmed-up learning
rate, and update the EMA. Every random choice is a function of (seed, rank, step), so a resumed run continues
bit-exactly on the CPU.

Multi-GPU / multi-node: launch with `torchrun`; WORLD_SIZE > 1 starts DDP (nccl on GPU, gloo on CPU). The global batch
`batch_size` is split over ranks and micro-batches; rank 0 writes every file.

Writes, under `run_dir/generator/` (ltaug.rundir): checkpoints/ckpt-NNNNNNN.pt (last `keep_ckpts`), metrics.jsonl,
grids/ (grid-NNNNNNN.png, rows = classes from head to tail, labelled), diffusers/ (the final EMA weights as a
diffusers pipeline folder: ltaug.diffusion.pipeline_folder),
calibration.json when `diffrop.margin` is `auto`, and the curves of `logging.backends` (tb/: ltaug.curves).
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch

from ltaug import __version__
from ltaug.callbacks import ReportFn
from ltaug.config import Recipe, to_dict
from ltaug.curves import Curves, require_backends
from ltaug.device import amp_dtype, autocast, init_distributed, no_sync, resolve_device, wrap_ddp
from ltaug.diffusion.batches import BatchOrder, mix_seed
from ltaug.diffusion.checkpoint import (
    architecture,
    check_compatible,
    check_resume_recipe,
    clean_partial,
    export_diffusers,
    list_checkpoints,
    load_checkpoint,
    save_checkpoint,
)
from ltaug.diffusion.ema import EMA
from ltaug.diffusion.grid import class_grid, row_label, save_grid
from ltaug.diffusion.init_from import build_from_config, load_init
from ltaug.diffusion.losses import get_loss, loss_options
from ltaug.diffusion.margin import MarginCalibrator
from ltaug.diffusion.mlp import build_mlp
from ltaug.diffusion.schedule import NoiseSchedule
from ltaug.diffusion.trainset import training_set
from ltaug.diffusion.unet import build_unet, count_parameters
from ltaug.errors import LtaugError
from ltaug.files import atomic_write_json
from ltaug.locks import holds_lock
from ltaug.progress import progress_bar
from ltaug.rundir import RunDir
from ltaug.signals import StopRequest

# Active-only recompute of the negative branch costs 4 + 3a passes (a = share of pairs still penalized) against 6
# for the two-pass step: it pays while a < 2/3. The choice uses the previous step's a (same loss and gradient).
ACTIVE_ONLY_BELOW = 2 / 3
SHOWN = ("loss", "dm", "cbdm", "overlap", "D")  # terms on the progress bar


class NonFiniteLossError(LtaugError):
    """The loss became NaN or infinite; the weights were not updated and the last good checkpoint is kept."""


class TrainingInterrupted(KeyboardInterrupt):
    """SIGINT/SIGTERM arrived; a checkpoint was saved first. str() says where."""


@dataclass
class GeneratorResult:
    step: int  # optimizer steps done
    checkpoint: Optional[Path]  # the newest checkpoint
    diffusers: Optional[Path]  # the exported EMA UNet (rank 0)
    grid: Optional[Path]  # the newest class grid (rank 0)
    metrics: dict  # the last metrics.jsonl record
    margin: Optional[float]  # the DiffROP margin in force at the end (None: no overlap term)
    calibration: Optional[dict]  # margin auto: what was measured
    seconds: float
    num_params: int
    generator_dir: Path
    start_step: int = 0  # the step this call started from (a resume: the checkpoint's)


@holds_lock(lambda a: RunDir(a["run_dir"]).generator, "train-generator")  # one writer per run (ltaug.locks)
def train_generator(recipe: Recipe, run_dir: str | os.PathLike, *, resume: bool = False,
                    report: Optional[ReportFn] = None, progress: bool = True) -> GeneratorResult:
    """Train (or, with resume=True, continue) the class-conditional diffusion model of `recipe` in `run_dir`.

    recipe: a resolved Recipe (its `data`, `generator`, `seed` and `device` are used). run_dir: the run directory;
    the generator writes run_dir/generator/ (config.yaml and env.json are written if absent). report: see
    ltaug.callbacks (every `log_every` steps). Raises LtaugError on bad input before writing anything,
    NonFiniteLossError if the loss diverges (the last good checkpoint stays), TrainingInterrupted after saving a
    checkpoint on SIGINT/SIGTERM.
    """
    t_start = time.perf_counter()
    g = recipe.generator
    run = RunDir(run_dir)
    loss_fn = get_loss(g.loss)
    device = resolve_device(recipe.device)
    dist = init_distributed(device)
    if g.batch_size % (dist.world * g.accum):
        raise LtaugError(f"generator.batch_size {g.batch_size} must be divisible by ranks x generator.accum "
                         f"= {dist.world} x {g.accum}")
    micro = g.batch_size // (dist.world * g.accum)
    amp = amp_dtype(g.amp, device, "generator.amp")
    require_backends(recipe.logging)  # e.g. wandb chosen but not installed: before anything is written

    # Data and checks: nothing is written before these pass.
    ds = training_set(recipe, run.features, device)
    counts = ds.counts
    arch = architecture(g, ds.num_classes, ds.shape)
    existing = list_checkpoints(run.checkpoints)
    state = None
    if resume:
        if not existing:
            raise LtaugError(f"--resume {run.path}: no checkpoint in {run.checkpoints}; start the run without --resume")
        state = load_checkpoint(existing[-1])
        check_compatible(state.get("meta") or {}, arch, existing[-1])
        check_resume_recipe(state.get("config") or {}, to_dict(recipe), existing[-1])
    elif existing:
        raise LtaugError(f"{run.generator} already has checkpoints; continue it with --resume {run.path}, or pick a "
                         "new --out")

    if dist.is_main:
        clean_partial(run.generator)  # temporary files of a run killed mid-write (we hold the folder's lock)

    # Model, EMA, optimizer, and the state of a resumed run.
    torch.manual_seed(recipe.seed)
    init = (state.get("meta") or {}).get("init_from") if state is not None else None
    if init:  # a resumed init_from run: the recorded architecture (its weights come from the checkpoint)
        net = build_from_config(init["unet_config"], ds.num_classes)
    elif g.init_from:
        net, init = load_init(g.init_from, ds.num_classes, *ds.shape[:2], g.T, g.schedule)
    elif ds.space == "features":
        net = build_mlp(g.mlp, ds.num_classes, ds.shape[0])
    else:
        net = build_unet(g.preset, ds.num_classes, *ds.shape[:2])
    net = net.to(device)
    if g.channels_last:
        net = net.to(memory_format=torch.channels_last)
    ema = EMA(net, g.ema_decay)
    opt = torch.optim.Adam(net.parameters(), lr=g.lr, fused=True)  # one kernel for all tensors (4x faster on CPU)
    scaler = torch.amp.GradScaler(device.type, enabled=amp == torch.float16)
    schedule = NoiseSchedule.make(g.schedule, g.T)
    margin = MarginCalibrator(g)
    start, last_active = 0, 0.0
    if state is not None:
        net.load_state_dict(state["model"])
        ema.load_state_dict(state["ema"])
        opt.load_state_dict(state["optimizer"])
        if state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        start = int(state["step"])
        margin.load(state.get("meta") or {})
        last_active = float((state.get("meta") or {}).get("last_active", 0.0))
    train_net = wrap_ddp(net, dist)
    if g.compile:
        train_net = torch.compile(train_net)
    labels = torch.from_numpy(ds.labels).to(device)
    order = BatchOrder(ds.labels, recipe.seed, g.class_power)
    meta = {**arch, "classes": list(ds.classes), "counts": list(counts), "dataset": ds.name,
            "num_params": count_parameters(net), **ds.meta()}
    if init:
        meta["init_from"] = init
    if dist.is_main:
        run.generator.mkdir(parents=True, exist_ok=True)
        if not run.config.exists() or resume:
            run.init(recipe)
        what = f"from {init['ref']} (sha256 {init['sha256'][:12]})" if init else \
            (f"MLP {g.mlp.width}x{g.mlp.depth} on {ds.shape[0]}-d features" if ds.space == "features"
             else f"preset {g.preset}")
        run.log(f"generator: {'resume at step ' + str(start) if resume else 'start'}; loss {g.loss}, "
                f"{what} ({meta['num_params'] / 1e6:.2f}M params), {ds.num_classes} classes, {len(ds)} images, "
                f"{dist.world} rank(s), device {device}")

    def save(step: int) -> Optional[Path]:
        path = None
        if dist.is_main:
            rng = {"cpu": torch.get_rng_state()}
            if torch.cuda.is_available():
                rng["cuda"] = torch.cuda.get_rng_state_all()
            path = save_checkpoint({
                "model": net.state_dict(), "ema": ema.state_dict(), "optimizer": opt.state_dict(),
                "scaler": scaler.state_dict(), "step": step, "rng": rng, "config": to_dict(recipe),
                "meta": dict(meta, **margin.state(), last_active=last_active), "version": __version__,
            }, run.checkpoints, g.keep_ckpts)
        dist.barrier()
        return path

    def grid(step: int) -> Optional[Path]:
        if not dist.is_main or ds.space != "image":  # feature vectors have no picture
            return None
        rows, classes = class_grid(ema.net, schedule, counts, cols=g.grid_cols, steps=g.grid_steps, w=g.grid_w,
                                   device=device)
        return save_grid(rows, [row_label(ds.classes[c], counts[c]) for c in classes],
                         run.grids / f"grid-{step:07d}.png")

    last_record: dict = {}
    last_ckpt = existing[-1] if (resume and existing) else None
    last_grid: Optional[Path] = None
    sums: dict[str, float] = {}
    n_sums = 0
    t_log, step_log = time.perf_counter(), start
    step = start
    curves = Curves(recipe.logging, run.generator, jsonl=run.generator_metrics, name=f"{run.path.name}/generator",
                    config=to_dict(recipe), resume_step=start, main=dist.is_main)
    with curves, StopRequest() as stop, progress_bar(total=g.steps, desc="train-generator", unit="step",
                                             enabled=progress and dist.is_main, completed=start) as bar:
        while step < g.steps:
            # Learning rate: linear warmup, then constant.
            lr = g.lr * min(1.0, (step + 1) / g.warmup) if g.warmup > 0 else g.lr
            for group in opt.param_groups:
                group["lr"] = lr

            # Accumulate gradients over the micro-batches; the step's draws come from (seed, rank, step).
            torch.manual_seed(mix_seed(recipe.seed, dist.rank, step, 0))  # dropout inside the net
            gen = torch.Generator().manual_seed(mix_seed(recipe.seed, dist.rank, step, 1))
            active_only = (last_active < ACTIVE_ONLY_BELOW) if (g.uses_overlap and g.diffrop.active_only) else None
            kw = loss_options(g, counts, margin=margin.margin, measure_only=margin.measuring,
                              active_only=active_only)
            keys: list[str] = []
            acc: Optional[torch.Tensor] = None  # the step's means (loss first), summed over micro-batches on device
            for a in range(g.accum):
                first = (step * g.accum + a) * dist.world * micro + dist.rank * micro
                idx = order.indices(first, micro).to(device)
                x0 = ds.x0(idx, gen)
                if g.channels_last:
                    x0 = x0.contiguous(memory_format=torch.channels_last)
                last_micro = a == g.accum - 1
                with no_sync(train_net, enabled=not last_micro and not g.compile):
                    with autocast(device, amp):
                        out = loss_fn(train_net, schedule, x0, labels[idx], gen, **kw)
                    loss = out["loss"].mean()
                    scaler.scale(loss / g.accum).backward()
                keys = ["loss"] + [k for k in out if k != "loss"]
                means = torch.stack([loss.detach().float()] + [
                    torch.nan_to_num(out[k].detach().float().nanmean()) if k == "D" else out[k].detach().float().mean()
                    for k in keys[1:]]) / g.accum
                acc = means if acc is None else acc + means
                if "D" in out:
                    margin.observe(step, out["D"])

            # One host transfer per step (a device sync on a GPU) carries every logged mean and the stop flag, as
            # the mean over ranks (a stop on any rank stops all).
            flags = dist.mean(torch.cat([acc.double(), acc.new_tensor([float(stop.requested)],
                                                                      dtype=torch.float64)])).tolist()
            terms, stop_now = dict(zip(keys, flags[:-1])), flags[-1] > 0

            # Stop on a non-finite loss, before the weights see it.
            if not math.isfinite(terms["loss"]):
                opt.zero_grad(set_to_none=True)
                where = f"the last good checkpoint is {last_ckpt}" if last_ckpt else "no checkpoint was written yet"
                if dist.is_main:
                    run.log(f"generator: non-finite loss at step {step + 1}; stopped ({where})")
                raise NonFiniteLossError(
                    f"the generator loss became non-finite at step {step + 1} "
                    f"({', '.join(f'{k}={v:.4g}' for k, v in terms.items())}); stopped before updating the weights; "
                    f"{where}. Lower generator.lr, keep generator.grad_clip, or use generator.amp none, then "
                    f"--resume {run.path}")

            # Update the weights and the EMA.
            scaler.unscale_(opt)
            if g.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(net.parameters(), g.grad_clip)
            scaler.step(opt)
            scaler.update()
            opt.zero_grad(set_to_none=True)
            ema.update(net, step)
            step += 1

            # Maintenance: margin calibration, grids, checkpoints, metrics, progress, a requested stop.
            for k, v in terms.items():
                sums[k] = sums.get(k, 0.0) + v
            n_sums += 1
            last_active = terms.get("active", last_active)
            if margin.step_done(step, dist) and dist.is_main:
                atomic_write_json(run.calibration, margin.calibration)
                run.log(f"generator: margin auto = {margin.margin:.6g} (quantile {g.diffrop.auto_quantile} of "
                        f"{margin.calibration['num_values']} values of D, steps {margin.calibration['steps']})")
            if (g.grid_every > 0 and step % g.grid_every == 0) or step == g.steps:
                last_grid = grid(step) or last_grid
                curves.image("samples/class_grid", last_grid, step)  # None on the other ranks: nothing
            ckpt_path = save(step) if (step % g.ckpt_every == 0 or step == g.steps or stop_now) else None
            last_ckpt = ckpt_path or last_ckpt
            if step % g.log_every == 0 or step == g.steps or ckpt_path is not None:
                now = time.perf_counter()
                img_s = (step - step_log) * g.batch_size / max(now - t_log, 1e-9)
                t_log, step_log = now, step
                last_record = {"step": step, "epoch": step * g.batch_size / len(ds), "lr": lr,
                               **{k: v / max(n_sums, 1) for k, v in sums.items()},
                               "margin": margin.margin, "img_s": img_s, "seconds": now - t_start}
                sums, n_sums = {}, 0
                if dist.is_main:
                    curves.log(last_record, step_key="step", tags={k: f"loss/{k}" for k in keys})
                    if report is not None:
                        report(dict(last_record), str(run.checkpoints) if ckpt_path is not None else None)
            if dist.is_main:
                bar.advance(1, **{k: terms[k] for k in SHOWN if k in terms},
                            img_s=round(last_record.get("img_s", 0.0), 1))
            if stop_now:
                if dist.is_main:
                    run.log(f"generator: interrupted at step {step}; checkpoint {last_ckpt}")
                raise TrainingInterrupted(f"stopped at step {step}; checkpoint saved: {last_ckpt}; continue with "
                                          f"`ltaug train-generator --resume {run.path}`")

    diffusers_dir = None
    if dist.is_main:
        final_grid = run.grids / f"grid-{step:07d}.png"
        last_grid = final_grid if final_grid.is_file() else grid(step)  # a resume of a finished run draws it too
        if ds.space == "image":  # diffusers has no model class for a feature-vector MLP
            diffusers_dir = export_diffusers(ema.net, dict(meta, margin=margin.margin, step=step, ema=True),
                                            run.diffusers, variance=recipe.synth.variance)
        run.log(f"generator: done at step {step}; {last_ckpt}")
    dist.close()
    return GeneratorResult(step=step, checkpoint=last_ckpt, diffusers=diffusers_dir, grid=last_grid,
                           metrics=last_record, margin=margin.margin, calibration=margin.calibration,
                           seconds=time.perf_counter() - t_start, num_params=meta["num_params"],
                           generator_dir=run.generator, start_step=start)

