"""The generator's training loop: `train_generator(recipe, run_dir)`, behind `ltaug train-generator`, `ltaug run` and
the Ray Tune trials alike.

One optimizer step: for each of `accum` micro-batches, draw a batch from a per-epoch permutation of the training set,
evaluate the registered loss (its random draws from a generator seeded by (seed, rank, step)), backpropagate under
autocast; then clip the gradient norm, take an Adam step with a linearly warmed-up learning rate, and update the EMA.
Every random choice is a function of (seed, rank, step), so a resumed run continues bit-exactly on the CPU.

Multi-GPU / multi-node: launch with `torchrun`; WORLD_SIZE > 1 starts DDP (nccl on GPU, gloo on CPU). The global batch
`batch_size` is split over ranks and micro-batches; rank 0 writes every file.

Writes, under `run_dir/generator/`: checkpoints/ckpt-NNNNNNN.pt (last `keep_ckpts`), metrics.jsonl, grids/
(grid-NNNNNNN.png, rows = classes from head to tail), diffusers/ (final EMA weights, `save_pretrained`), and
calibration.json when `diffrop.margin` is `auto`.
"""

from __future__ import annotations

import math
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import torch

from ltaug.errors import LtaugError

ReportFn = Callable[[dict, Optional[str]], None]


class NonFiniteLossError(LtaugError):
    """The loss became NaN or infinite; the weights were not updated and the last good checkpoint is kept."""


class TrainingInterrupted(KeyboardInterrupt):
    """SIGINT/SIGTERM arrived; a checkpoint was saved first. str() says where."""


# ----------------------------------------------------------------------------------------------- small pieces


def _mix(*ints: int) -> int:
    """A 63-bit seed from a few integers (seed, rank, step, stream)."""
    h = 1469598103934665603
    for v in ints:
        h = ((h ^ (int(v) & 0xFFFFFFFFFFFFFFFF)) * 1099511628211) & 0xFFFFFFFFFFFFFFFF
    return h & 0x7FFFFFFFFFFFFFFF


class _BatchOrder:
    """Global sample order: epoch e is a permutation seeded by (seed, e). Position p of the stream is sample
    perm_{p // N}[p % N], so the batch of a step depends only on (seed, step), not on ranks or resumes."""

    def __init__(self, n: int, seed: int):
        self.n, self.seed = n, seed
        self._cache: dict[int, torch.Tensor] = {}

    def _perm(self, epoch: int) -> torch.Tensor:
        if epoch not in self._cache:
            self._cache = {k: v for k, v in self._cache.items() if k >= epoch - 1}
            self._cache[epoch] = torch.randperm(self.n, generator=torch.Generator().manual_seed(_mix(self.seed, epoch)))
        return self._cache[epoch]

    def indices(self, start: int, count: int) -> torch.Tensor:
        pos = torch.arange(start, start + count)
        epochs = pos // self.n
        out = torch.empty(count, dtype=torch.long)
        for e in epochs.unique().tolist():
            sel = epochs == e
            out[sel] = self._perm(e)[pos[sel] % self.n]
        return out


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise LtaugError("--device cuda: no CUDA device is available here; use --device cpu or auto")
    if name.startswith("cuda") and name == "cuda" and "LOCAL_RANK" in os.environ:
        name = f"cuda:{int(os.environ['LOCAL_RANK'])}"
    return torch.device(name)


def _amp_dtype(amp: str, device: torch.device) -> Optional[torch.dtype]:
    if amp == "none":
        return None
    if amp == "auto":
        if device.type != "cuda":
            return None
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if amp == "fp16":
        if device.type != "cuda":
            raise LtaugError("generator.amp fp16 needs a GPU; on the CPU use bf16 or none")
        return torch.float16
    return torch.bfloat16


def architecture(gcfg, num_classes: int, channels: int, resolution: int) -> dict:
    """What must match between a checkpoint and the run that resumes or loads it."""
    return {"preset": gcfg.preset, "num_classes": num_classes, "channels": channels, "resolution": resolution,
            "T": gcfg.T, "schedule": gcfg.schedule}


def check_compatible(meta: dict, arch: dict, ckpt: Path) -> None:
    for key, want in arch.items():
        have = meta.get(key)
        if have != want:
            where = {"num_classes": "the dataset (data.dataset)", "channels": "data.channels",
                     "resolution": "data.resolution"}.get(key, f"generator.{key}")
            raise LtaugError(f"--resume: checkpoint {ckpt} was trained with {key}={have!r}, but {where} gives "
                             f"{want!r}; resume with the recipe of that run, or start a new run with --out")


class _Stop:
    """Turns SIGINT/SIGTERM into a flag the loop checks after each step (main thread only, restored on exit)."""

    def __init__(self) -> None:
        self.signum: Optional[int] = None
        self._old: dict[int, Any] = {}

    def __enter__(self) -> "_Stop":
        if threading.current_thread() is threading.main_thread():
            for s in (signal.SIGINT, signal.SIGTERM):
                self._old[s] = signal.signal(s, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        self.signum = signum

    def __exit__(self, *exc) -> None:
        for s, h in self._old.items():
            signal.signal(s, h)


# ----------------------------------------------------------------------------------------------- the loop


def train_generator(recipe, run_dir: str | os.PathLike, *, resume: bool = False, report: Optional[ReportFn] = None,
                    progress: bool = True) -> dict:
    """Train (or, with resume=True, continue) the class-conditional diffusion model of `recipe` in `run_dir`.

    recipe: a resolved `ltaug.config.Recipe` (its `data`, `generator`, `seed` and `device` are used).
    run_dir: the run directory; the generator writes run_dir/generator/ (config.yaml/env.json are written if absent).
    report(metrics, checkpoint_dir): called on rank 0 every `log_every` steps with the metrics record (also appended
        to generator/metrics.jsonl); checkpoint_dir is the checkpoints folder when a checkpoint was just written,
        else None. Ray Tune passes its own.
    Returns {"step", "checkpoint", "diffusers", "grid", "metrics" (last record), "margin", "seconds", "num_params",
    "generator_dir"}. Raises LtaugError on bad input before writing anything, NonFiniteLossError if the loss
    diverges (the last good checkpoint stays), TrainingInterrupted after saving a checkpoint on SIGINT/SIGTERM.
    """
    import torch.distributed as dist

    from ltaug.config import to_dict
    from ltaug.data import load_from_config
    from ltaug.diffusion.checkpoint import list_checkpoints, load_checkpoint, save_checkpoint
    from ltaug.diffusion.ema import EMA
    from ltaug.diffusion.losses import get_loss, loss_kwargs
    from ltaug.diffusion.schedule import NoiseSchedule
    from ltaug.diffusion.unet import build_unet, count_parameters
    from ltaug.rundir import atomic_write_json, append_jsonl, init_run_dir, log

    t_start = time.perf_counter()
    g = recipe.generator
    g.validate()
    loss_fn = get_loss(g.loss)
    run_dir = Path(run_dir).absolute()  # Ray Tune changes the working directory
    gen_dir = run_dir / "generator"
    ckpt_dir = gen_dir / "checkpoints"

    # --- distributed setup
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    device = resolve_device(recipe.device)
    own_pg = False
    if world > 1 and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        own_pg = True
    if g.batch_size % (world * g.accum):
        raise LtaugError(f"generator.batch_size {g.batch_size} must be divisible by ranks x generator.accum "
                         f"= {world} x {g.accum}")
    micro = g.batch_size // (world * g.accum)
    amp_dtype = _amp_dtype(g.amp, device)
    is_main = rank == 0

    # --- data and checks (nothing is written before these pass)
    ds = load_from_config(recipe.data)
    C, counts = ds.num_classes, ds.counts
    arch = architecture(g, C, ds.channels, ds.resolution)
    margin_auto = g.diffrop.margin == "auto" and "diffrop" in g.loss
    state = None
    existing = list_checkpoints(ckpt_dir)
    if resume:
        if not existing:
            raise LtaugError(f"--resume {run_dir}: no checkpoint in {ckpt_dir}; start the run without --resume")
        state = load_checkpoint(existing[-1])
        check_compatible(state.get("meta") or {}, arch, existing[-1])
    elif existing:
        raise LtaugError(f"{gen_dir} already has checkpoints; continue it with --resume {run_dir}, or pick a new --out")

    # --- model, EMA, optimizer
    torch.manual_seed(recipe.seed)
    net = build_unet(g.preset, C, ds.channels, ds.resolution).to(device)
    if g.channels_last:
        net = net.to(memory_format=torch.channels_last)
    ema = EMA(net, g.ema_decay)
    opt = torch.optim.Adam(net.parameters(), lr=g.lr, fused=True)  # one kernel for all tensors (4x faster on CPU)
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
    schedule = NoiseSchedule.make(g.schedule, g.T)
    start = 0
    margin: Optional[float] = None if margin_auto else (float(g.diffrop.margin) if "diffrop" in g.loss else None)
    calibration: Optional[dict] = None
    d_values: list[float] = []
    # Active-only recompute costs 4 + 3a passes (a = fraction of pairs still penalized) against 6 for the two-pass
    # step: it pays while a < 2/3. The choice uses the previous step's a (same loss and gradient either way).
    last_active = 0.0
    if state is not None:
        net.load_state_dict(state["model"])
        ema.load_state_dict(state["ema"])
        opt.load_state_dict(state["optimizer"])
        if state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        start = int(state["step"])
        meta = state.get("meta") or {}
        calibration = meta.get("calibration")
        if margin_auto and calibration is not None:
            margin = float(calibration["margin"])
        d_values = list(meta.get("calibration_values", []))
        last_active = float(meta.get("last_active", 0.0))

    train_net: torch.nn.Module = net
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel as DDP

        train_net = DDP(net, device_ids=[device.index] if device.type == "cuda" else None)
    if g.compile:
        train_net = torch.compile(train_net)

    images = torch.from_numpy(ds.images).permute(0, 3, 1, 2).contiguous().to(device)  # uint8 [N, C, H, W]
    labels = torch.from_numpy(ds.labels).to(device)
    order = _BatchOrder(len(ds), recipe.seed)
    kw_base = loss_kwargs(g, C, counts, margin)
    meta = {**arch, "classes": list(ds.classes), "counts": list(counts), "dataset": ds.name,
            "num_params": count_parameters(net)}

    if is_main:
        gen_dir.mkdir(parents=True, exist_ok=True)
        if not (run_dir / "config.yaml").exists() or resume:
            init_run_dir(run_dir, recipe)
        log(run_dir, f"generator: {'resume at step ' + str(start) if resume else 'start'}; loss {g.loss}, preset "
                     f"{g.preset} ({meta['num_params'] / 1e6:.2f}M params), {C} classes, {len(ds)} images, "
                     f"{world} rank(s), device {device}")

    def checkpoint_state(step: int) -> dict:
        from ltaug import __version__

        rng = {"cpu": torch.get_rng_state()}
        if torch.cuda.is_available():
            rng["cuda"] = torch.cuda.get_rng_state_all()
        m = dict(meta, margin=margin, calibration=calibration, calibration_values=list(d_values),
                 last_active=last_active)
        return {"model": net.state_dict(), "ema": ema.state_dict(), "optimizer": opt.state_dict(),
                "scaler": scaler.state_dict(), "step": step, "rng": rng, "config": to_dict(recipe), "meta": m,
                "version": __version__}

    def save(step: int) -> Optional[Path]:
        path = save_checkpoint(checkpoint_state(step), ckpt_dir, g.keep_ckpts) if is_main else None
        if world > 1:
            dist.barrier()
        return path

    def make_grid(step: int) -> Optional[Path]:
        if not is_main:
            return None
        from ltaug.diffusion.grid import class_grid, save_png

        path = gen_dir / "grids" / f"grid-{step:07d}.png"
        save_png(class_grid(ema.net, schedule, counts, cols=g.grid_cols, steps=g.grid_steps, w=g.grid_w,
                            device=device), path)
        return path

    from ltaug.progress import progress_bar

    last_record: dict = {}
    last_ckpt: Optional[Path] = existing[-1] if (resume and existing) else None
    last_grid: Optional[Path] = None
    sums: dict[str, float] = {}
    n_sums = 0
    t_log, step_log = time.perf_counter(), start
    step = start
    with _Stop() as stop, progress_bar(total=g.steps, desc="train-generator", unit="step",
                                       enabled=progress and is_main, completed=start) as bar:
        while step < g.steps:
            lr = g.lr * min(1.0, (step + 1) / g.warmup) if g.warmup > 0 else g.lr
            for group in opt.param_groups:
                group["lr"] = lr
            torch.manual_seed(_mix(recipe.seed, rank, step, 0))  # dropout inside the net
            gen = torch.Generator().manual_seed(_mix(recipe.seed, rank, step, 1))
            calibrating = margin_auto and margin is None
            kw = dict(kw_base, margin=None if calibrating else margin)
            if g.diffrop.active_only and "diffrop" in g.loss:
                kw["diffrop"] = dict(kw["diffrop"], active_only=last_active < 2 / 3)
            keys: list[str] = []
            acc: Optional[torch.Tensor] = None  # the step's means (loss first), summed over micro-batches on device
            for a in range(g.accum):
                first = (step * g.accum + a) * world * micro + rank * micro
                idx = order.indices(first, micro).to(device)
                x0 = images[idx].float().div(127.5).sub(1.0)  # [-1, 1]
                if g.hflip:
                    flip = torch.rand(micro, generator=gen).to(device) < 0.5
                    x0 = torch.where(flip[:, None, None, None], x0.flip(3), x0)
                if g.channels_last:
                    x0 = x0.contiguous(memory_format=torch.channels_last)
                sync = world == 1 or a == g.accum - 1 or g.compile
                ctx = train_net.no_sync() if not sync and hasattr(train_net, "no_sync") else _nullcontext()
                with ctx:
                    with torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
                        out = loss_fn(train_net, schedule, x0, labels[idx], gen, **kw)
                    loss = out["loss"].mean()
                    scaler.scale(loss / g.accum).backward()
                keys = ["loss"] + [k for k in out if k != "loss"]
                means = torch.stack([loss.detach().float()] + [
                    torch.nan_to_num(out[k].detach().float().nanmean()) if k == "D" else out[k].detach().float().mean()
                    for k in keys[1:]]) / g.accum
                acc = means if acc is None else acc + means
                if calibrating and step >= g.diffrop.auto_steps // 2 and "D" in out:
                    d = out["D"].detach().float()
                    d_values.extend(d[~torch.isnan(d)].cpu().tolist())
            # One host transfer per step (a device sync on a GPU) carries every logged mean and the stop flag; one
            # all-reduce makes them the mean over ranks.
            flags = torch.cat([acc.double(), acc.new_tensor([1.0 if stop.signum is not None else 0.0],
                                                            dtype=torch.float64)])
            if world > 1:
                flags = flags.to(device) if device.type == "cuda" else flags.cpu()
                dist.all_reduce(flags)
                flags[:-1] /= world
            flags = flags.cpu().tolist()
            terms = dict(zip(keys, flags[:-1]))
            loss_total = terms["loss"]
            stop_flag = flags[-1]
            if not math.isfinite(loss_total):
                opt.zero_grad(set_to_none=True)
                where = f"the last good checkpoint is {last_ckpt}" if last_ckpt else "no checkpoint was written yet"
                if is_main:
                    log(run_dir, f"generator: non-finite loss at step {step + 1}; stopped ({where})")
                raise NonFiniteLossError(
                    f"the generator loss became non-finite at step {step + 1} ({', '.join(f'{k}={v:.4g}' for k, v in terms.items())}); "
                    f"stopped before updating the weights; {where}. Lower generator.lr, keep generator.grad_clip, "
                    f"or use generator.amp none, then --resume {run_dir}")
            scaler.unscale_(opt)
            if g.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(net.parameters(), g.grad_clip)
            scaler.step(opt)
            scaler.update()
            opt.zero_grad(set_to_none=True)
            ema.update(net, step)
            step += 1

            for k, v in terms.items():
                sums[k] = sums.get(k, 0.0) + v
            last_active = terms.get("active", last_active)
            n_sums += 1
            if calibrating and step >= g.diffrop.auto_steps:
                margin, calibration = _calibrate(d_values, g, world, dist, step)
                kw_base = dict(kw_base, margin=margin)
                if is_main:
                    atomic_write_json(gen_dir / "calibration.json", calibration)
                    log(run_dir, f"generator: margin auto = {margin:.6g} (quantile {g.diffrop.auto_quantile} of "
                                 f"{calibration['num_values']} values of D, steps {calibration['steps']})")

            grid_now = g.grid_every > 0 and step % g.grid_every == 0
            ckpt_now = step % g.ckpt_every == 0 or step == g.steps or stop_flag > 0
            if grid_now or step == g.steps:
                last_grid = make_grid(step) or last_grid
            ckpt_path = save(step) if ckpt_now else None
            last_ckpt = ckpt_path or last_ckpt
            if step % g.log_every == 0 or step == g.steps or ckpt_path is not None:
                now = time.perf_counter()
                img_s = (step - step_log) * g.batch_size / max(now - t_log, 1e-9)
                t_log, step_log = now, step
                last_record = {"step": step, "epoch": step * g.batch_size / len(ds), "lr": lr,
                               **{k: v / max(n_sums, 1) for k, v in sums.items()},
                               "margin": margin, "img_s": img_s, "seconds": now - t_start}
                sums, n_sums = {}, 0
                if is_main:
                    append_jsonl(gen_dir / "metrics.jsonl", last_record)
                    if report is not None:
                        report(dict(last_record), str(ckpt_dir) if ckpt_path is not None else None)
            if is_main:
                shown = {k: terms[k] for k in ("loss", "dm", "cbdm", "overlap", "D") if k in terms}
                bar.advance(1, **shown, img_s=round(last_record.get("img_s", 0.0), 1))
            if stop_flag > 0:
                if is_main:
                    log(run_dir, f"generator: interrupted at step {step}; checkpoint {last_ckpt}")
                raise TrainingInterrupted(f"stopped at step {step}; checkpoint saved: {last_ckpt}; continue with "
                                          f"`ltaug train-generator --resume {run_dir}`")

    diffusers_dir = None
    if is_main:
        from ltaug.diffusion.checkpoint import export_diffusers

        diffusers_dir = export_diffusers(ema.net, dict(meta, margin=margin), gen_dir / "diffusers")
        log(run_dir, f"generator: done at step {step}; {last_ckpt}")
    if world > 1:
        dist.barrier()
        if own_pg:
            dist.destroy_process_group()
    return {"step": step, "checkpoint": last_ckpt, "diffusers": diffusers_dir, "grid": last_grid,
            "metrics": last_record, "margin": margin, "calibration": calibration,
            "seconds": time.perf_counter() - t_start, "num_params": meta["num_params"], "generator_dir": gen_dir}


class _nullcontext:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


def _calibrate(d_values: list[float], g, world: int, dist, step: int) -> tuple[float, dict]:
    """margin auto: the auto_quantile of D over the second half of the first auto_steps steps (all ranks pooled)."""
    values = list(d_values)
    if world > 1:
        gathered: list = [None] * world
        dist.all_gather_object(gathered, values)
        values = [v for part in gathered for v in part]
    if not values:
        raise LtaugError("generator.diffrop.margin auto: no value of D was measured (every label was dropped?); "
                         "raise generator.diffrop.auto_steps or give the margin as a number")
    arr = np.asarray(values, dtype=np.float64)
    margin = float(np.quantile(arr, g.diffrop.auto_quantile))
    cal = {"margin": margin, "quantile": g.diffrop.auto_quantile, "distance": g.diffrop.distance,
           "steps": [g.diffrop.auto_steps // 2, g.diffrop.auto_steps], "num_values": int(arr.size),
           "D_quantiles": {str(q): float(np.quantile(arr, q)) for q in (0.1, 0.5, 0.9, 0.99)},
           "calibrated_at_step": step}
    return margin, cal
