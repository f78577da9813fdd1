"""Train a timm classifier on real (+ synthetic) long-tailed data and measure it on the balanced test set (and on
the validation split, which is what sweeps choose on: `eval_every` epochs and at the end).

`train_classifier(recipe, out_dir, synthetic=[...])` is what `ltaug train-classifier`, `ltaug run` and Ray Tune
trials all call. It writes into `out_dir` (the classifier folder itself, e.g. RUN/classifier-real/):
  config.yaml          the resolved recipe this classifier was trained with
  checkpoint.pt        after every epoch (atomic), so `resume=True` continues the same run exactly
  metrics.jsonl        one line per epoch: loss, train accuracy, lr (and validation accuracy when evaluated)
  results.json         top-1, many / medium / few, per-class accuracy, confusion matrix, what was trained on
  per_class_accuracy.png
  config.json, model.safetensors   the final weights as timm's save_for_hf writes them (ltaug.classify.timm_format):
                       `timm.create_model("local-dir:<this folder>", pretrained=True)` after `import ltaug`
  tb/, wandb-run.json  TensorBoard events and the wandb run id, when `logging.backends` asks (ltaug.curves)
Determinism: the initial weights come from `recipe.seed`; every draw of epoch e (order, crops, flips, mixup,
RandAugment) comes from generators seeded by (seed, e), so an epoch does not depend on how the run got there.
"""

from __future__ import annotations

import math
import os
import random
import time
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from ltaug import __version__
from ltaug.callbacks import ReportFn
from ltaug.classify.augment import RandAugment, crop_flip, mixup, to_input
from ltaug.classify.checkpoint import CHECKPOINT, predict_logits, read_checkpoint
from ltaug.classify.data import build_train_set
from ltaug.classify.init import init_from
from ltaug.classify.losses import make_loss
from ltaug.classify.metrics import confusion_matrix, group_accuracy
from ltaug.classify.models import build_model, check_model_name, count_parameters
from ltaug.classify.plots import plot_per_class_accuracy
from ltaug.classify.timm_format import CONFIG as TIMM_CONFIG
from ltaug.classify.timm_format import WEIGHTS as TIMM_WEIGHTS
from ltaug.classify.timm_format import save_timm
from ltaug.config import Recipe, to_dict
from ltaug.curves import Curves, require_backends
from ltaug.data import class_groups, load_from_config
from ltaug.data.longtail import GROUPS
from ltaug.device import resolve_device
from ltaug.errors import LtaugError
from ltaug.files import atomic_write, atomic_write_json, remove_temporaries
from ltaug.locks import holds_lock
from ltaug.progress import progress_bar
from ltaug.rundir import save_recipe

RESULTS = "results.json"
METRICS = "metrics.jsonl"
PLOT = "per_class_accuracy.png"
# metrics.jsonl keys -> curve names (TensorBoard / wandb); validation accuracy per group is val/many, val/few, ...
TAGS = {"loss": "train/loss", "train_acc": "train/acc", "lr": "train/lr", "time_s": "train/epoch_s",
        **{f"val_{k}": f"val/{k}" for k in GROUPS}}


def lr_at(cfg, epoch_pos: float) -> float:
    """Learning rate at a position measured in epochs (epoch e, step k of K -> e + (k + 1) / K).

    Linear warmup to cfg.lr over warmup_epochs, then either steps (x decay[i] from epoch milestones[i] * epochs on;
    method.md §6: x0.01 at 160 and x0.0001 at 180 of 200) or a cosine to 0 at the last epoch.
    """
    if cfg.warmup_epochs > 0 and epoch_pos <= cfg.warmup_epochs:
        return cfg.lr * epoch_pos / cfg.warmup_epochs
    if cfg.schedule == "cosine":
        span = max(cfg.epochs - cfg.warmup_epochs, 1e-8)
        frac = min(max((epoch_pos - cfg.warmup_epochs) / span, 0.0), 1.0)
        return cfg.lr * 0.5 * (1.0 + math.cos(math.pi * frac))
    epoch = math.ceil(epoch_pos) - 1  # the 0-based epoch this step belongs to
    factor = 1.0
    for m, d in zip(cfg.milestones, cfg.decay):
        if epoch >= round(m * cfg.epochs):
            factor = d
    return cfg.lr * factor


def _epoch_seed(seed: int, epoch: int) -> int:
    return (seed * 1_000_003 + epoch * 7919 + 17) % (2**63 - 1)


RESUMABLE = ("eval_every", "epochs")  # the classifier keys a resume may change


def _compatible(saved: dict, recipe_dict: dict, synthetic: list[str], saved_synthetic: list[str]) -> None:
    """A resumed run must be the same run: same data, classifier section and seed; only eval_every and the number
    of epochs may change (more epochs extend it: the learning-rate schedule and DRW follow the new total, as
    `train-generator --resume --steps N` extends a generator)."""
    for section in ("data", "classifier"):
        a, b = dict(saved.get(section, {})), dict(recipe_dict[section])
        for key in RESUMABLE:
            a.pop(key, None)
            b.pop(key, None)
        for key in sorted(set(a) & set(b)):  # a key the checkpoint predates keeps its default: not a change
            if a[key] != b[key]:
                raise LtaugError(f"--resume: recipe key '{section}.{key}' is {b.get(key)!r} but the checkpoint was "
                                 f"trained with {a.get(key)!r}; resume with the same recipe or use a new --out")
    if saved.get("seed") != recipe_dict["seed"]:
        raise LtaugError(f"--resume: seed {recipe_dict['seed']} differs from the checkpoint's {saved.get('seed')}")
    if list(saved_synthetic) != list(synthetic):
        raise LtaugError(f"--resume: synthetic sets {synthetic} differ from the checkpoint's {saved_synthetic}; "
                         f"pass the same --synthetic paths")


def _validation_set(data, real):
    """The recipe's validation split (data.val_dataset, else the images the long-tailed subset leaves out), or None
    when the dataset has none (npz:/folder: sources without data.val_dataset)."""
    if not (data.val_dataset or data.val_from_test or data.dataset in ("mnist-lt", "cifar10-lt", "cifar100-lt")):
        return None
    val = load_from_config(data, "val")
    if list(val.classes) != list(real.classes):
        raise LtaugError(f"validation set {val.name} has other classes than the training set {real.name}; check "
                         "data.val_dataset")
    return val


def _evaluate(model, meta, test, device, batch_size: int, amp: bool) -> tuple[np.ndarray, dict]:
    logits = predict_logits(model, meta, test.images, device, batch_size, amp=amp)
    cm = confusion_matrix(test.labels, logits.argmax(axis=1), len(meta["classes"]))
    return cm, group_accuracy(cm, meta["counts"])


@holds_lock(lambda a: Path(a["out_dir"]).expanduser(), "train-classifier")  # one writer per folder (ltaug.locks)
def train_classifier(recipe: Recipe, out_dir: str | os.PathLike, *, synthetic: list[str | os.PathLike] | tuple = (),
                     report: Optional[ReportFn] = None, progress: bool = True,
                     resume: bool = False, device: Optional[str] = None) -> dict:
    """Train `recipe.classifier` on `recipe.data` (+ synthetic sets), evaluate, write out_dir; return results.json.

    synthetic: folders written by `ltaug synthesize` or npz files; mixed per class by classifier.synthetic_mode /
    synthetic_ratio. report(metrics, out_dir) is called after every epoch (Ray Tune passes tune.report).
    resume: continue from out_dir/checkpoint.pt (an error if it was trained with another recipe); without it an
    existing checkpoint is an error, so a finished run is never overwritten by accident.
    """
    cfg = recipe.classifier
    out_dir = Path(out_dir).expanduser().resolve()  # absolute: Ray Tune changes the working directory
    check_model_name(cfg.model)
    require_backends(recipe.logging)  # e.g. wandb chosen but not installed: before anything is written
    dev = resolve_device(device or recipe.device)
    synthetic = [str(Path(p).expanduser().resolve()) for p in synthetic]
    recipe_dict = to_dict(recipe)

    # ------------------------------------------------------------------ data
    real = load_from_config(recipe.data)
    test = load_from_config(recipe.data, "test")
    if list(test.classes) != list(real.classes) or test.images.shape[1:] != real.images.shape[1:]:
        raise LtaugError(f"test set {test.name} ({test.num_classes} classes, {test.images.shape[1:]}) does not match "
                         f"the training set {real.name} ({real.num_classes} classes, {real.images.shape[1:]}); "
                         f"check data.test_dataset")
    val = _validation_set(recipe.data, real)
    ts = build_train_set(real, synthetic, cfg.synthetic_mode, cfg.synthetic_ratio, recipe.seed)
    num_classes, n = len(ts.classes), len(ts.labels)
    mean = (real.images.reshape(-1, real.channels).mean(axis=0) / 255.0).tolist()
    std = np.maximum(real.images.reshape(-1, real.channels).std(axis=0) / 255.0, 1e-3).tolist()

    # ------------------------------------------------------------------ model, optimizer, resume
    ckpt_file = out_dir / CHECKPOINT
    remove_temporaries(out_dir)  # a checkpoint half-written by a killed run (we hold the folder's lock)
    state = None
    if ckpt_file.exists():
        if not resume:
            raise LtaugError(f"{out_dir} already holds a classifier checkpoint; pass --resume to continue it, or "
                             f"choose another --out / --name")
        state = read_checkpoint(ckpt_file)
        if not isinstance(state.get("recipe"), dict) or not isinstance(state.get("optimizer"), dict):
            raise LtaugError(f"--resume: {ckpt_file} holds no recipe or optimizer state, so it cannot be continued; "
                             "start over with another --out / --name")
        _compatible(state["recipe"], recipe_dict, synthetic, list(state.get("synthetic") or []))
    torch.manual_seed(recipe.seed)
    ldam = cfg.loss in ("ldam", "ldam_drw")
    model, normed = build_model(cfg.model, num_classes, real.channels, pretrained=cfg.pretrained and state is None,
                                normed_head=ldam)
    model.to(dev)
    logit_scale = cfg.ldam_s if normed else 1.0
    meta = {"model": cfg.model, "classes": list(ts.classes), "in_chans": real.channels,
            "resolution": real.resolution, "mean": mean, "std": std, "counts": list(ts.real_counts),
            "train_counts": list(ts.counts), "normed_head": normed, "logit_scale": logit_scale,
            "dataset": recipe.data.dataset}
    if cfg.init:  # recorded in meta (and in the recipe), so a resumed run knows where it started
        meta["init"] = (state["meta"].get("init") if state is not None
                        else init_from(model, cfg.init, cfg.model, list(ts.classes)))
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    start_epoch, train_time = 0, 0.0
    if state is not None:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        start_epoch, train_time = int(state["epoch"]), float(state.get("train_time_s", 0.0))
        if cfg.epochs < start_epoch:
            raise LtaugError(f"--resume: the checkpoint has trained {start_epoch} epochs already; classifier.epochs "
                             f"{cfg.epochs} would be fewer: ask for {start_epoch} or more (--epochs N)")
    loss_fn = make_loss(cfg, ts.counts, cfg.epochs, dev, logit_scale)
    amp = cfg.amp and dev.type == "cuda"

    # ------------------------------------------------------------------ the data on the device, as uint8
    images = torch.from_numpy(ts.images).to(dev)
    labels = torch.from_numpy(ts.labels).to(dev)
    sample_w = torch.where(torch.from_numpy(ts.synthetic), cfg.synthetic_weight, 1.0).float().to(dev)
    mean_t = torch.tensor(mean, device=dev)
    std_t = torch.tensor(std, device=dev)
    counts = torch.tensor(np.maximum(ts.counts, 1), dtype=torch.float64)
    draw_p = None
    if cfg.sampler != "none":
        power = 1.0 if cfg.sampler == "class_balanced" else 0.5
        draw_p = (counts ** -power)[torch.from_numpy(ts.labels)]
    randaug = RandAugment(cfg.randaugment, mean, real.resolution) if cfg.randaugment else None
    batch = cfg.batch_size
    steps = max(1, n // batch if n % batch == 1 else math.ceil(n / batch))  # never a batch of 1 (BatchNorm)

    out_dir.mkdir(parents=True, exist_ok=True)
    save_recipe(recipe, out_dir / "config.yaml")  # this classifier's own recipe (the run dir's may differ)
    curves = Curves(recipe.logging, out_dir, jsonl=out_dir / METRICS, name=f"{out_dir.parent.name}/{out_dir.name}",
                    config=recipe_dict, resume_step=start_epoch)
    with curves, progress_bar(total=cfg.epochs * steps, desc=f"classifier {out_dir.name}", unit="step",
                      enabled=progress, completed=start_epoch * steps) as bar:
        for epoch in range(start_epoch, cfg.epochs):
            t0 = time.perf_counter()
            seed_e = _epoch_seed(recipe.seed, epoch)
            g = torch.Generator().manual_seed(seed_e)
            rng = np.random.default_rng(seed_e)
            if randaug is not None:  # timm's RandAugment draws from the global generators
                random.seed(seed_e)
                np.random.seed(seed_e % 2**32)
            order = (torch.multinomial(draw_p, n, replacement=True, generator=g) if draw_p is not None
                     else torch.randperm(n, generator=g))
            model.train()
            loss_sum = torch.zeros((), device=dev)
            correct = torch.zeros((), device=dev)
            seen = pending = 0
            for k in range(steps):
                idx = order[k * batch:(k + 1) * batch]
                for group in opt.param_groups:
                    group["lr"] = lr_at(cfg, epoch + (k + 1) / steps)
                if randaug is not None:
                    xb = torch.from_numpy(randaug(ts.images[idx.numpy()])).to(dev)
                else:
                    xb = images[idx.to(dev)]
                idx_d = idx.to(dev)
                x = to_input(crop_flip(xb, cfg.crop_padding, cfg.flip, g), mean_t, std_t)
                y = labels[idx_d]
                target = torch.nn.functional.one_hot(y, num_classes).float()
                w = sample_w[idx_d]
                if cfg.mixup_alpha > 0:
                    x, target, w = mixup(x, target, w, cfg.mixup_alpha, rng)
                with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=amp):
                    logits = model(x)
                loss = (loss_fn(logits.float(), target, epoch) * w).mean()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                loss_sum += loss.detach() * len(idx)
                correct += (logits.detach().argmax(1) == target.argmax(1)).sum()
                seen += len(idx)
                pending += 1
                if pending == 8 or k == steps - 1:  # reading the sums syncs a GPU: not every step
                    bar.advance(pending, epoch=epoch + 1, loss=float(loss_sum) / seen, acc=float(correct) / seen)
                    pending = 0
            train_time += time.perf_counter() - t0
            record = {"epoch": epoch + 1, "loss": float(loss_sum) / seen, "train_acc": float(correct) / seen,
                      "lr": opt.param_groups[0]["lr"], "time_s": time.perf_counter() - t0, "images": seen}
            if val is not None and cfg.eval_every and (epoch + 1) % cfg.eval_every == 0:
                _, acc = _evaluate(model, meta, val, dev, 512, amp)  # validation only: sweeps choose on it
                record.update({f"val_{k}": v for k, v in acc.items() if k != "per_class"})
                bar.advance(0, val=acc["overall"])
            state = {"model": model.state_dict(), "optimizer": opt.state_dict(), "epoch": epoch + 1, "meta": meta,
                     "recipe": recipe_dict, "synthetic": synthetic, "train_time_s": train_time, "ltaug": __version__}
            atomic_write(ckpt_file, lambda f: torch.save(state, f))
            curves.log(record, step_key="epoch", tags=TAGS)
            if report is not None:
                report(record, str(out_dir))

    # ------------------------------------------------------------------ results
    cm, acc = _evaluate(model, meta, test, dev, 512, amp)
    val_acc = _evaluate(model, meta, val, dev, 512, amp)[1] if val is not None else None
    groups = class_groups(ts.real_counts)
    results = {
        "name": out_dir.name,
        "top1": acc["overall"],
        "accuracy": {k: acc[k] for k in GROUPS},
        "per_class": acc["per_class"],
        "val_accuracy": {k: val_acc[k] for k in GROUPS} if val_acc else None,
        "val_set": val.name if val is not None else None,
        "val_counts": val.counts if val is not None else None,
        "classes": list(ts.classes),
        "groups": groups,
        "train_counts_real": list(ts.real_counts),
        "train_counts_synthetic": list(ts.synthetic_counts),
        "synthetic": {"mode": cfg.synthetic_mode, "ratio": cfg.synthetic_ratio, "weight": cfg.synthetic_weight,
                      "sources": ts.sources, "available": list(ts.available_counts)},
        "confusion": cm.tolist(),
        "dataset": recipe.data.dataset,
        "test_set": test.name,
        "test_images": len(test),
        "model": cfg.model,
        "parameters": count_parameters(model),
        "loss": cfg.loss,
        "sampler": cfg.sampler,
        "epochs": cfg.epochs,
        "seed": recipe.seed,
        "device": str(dev),
        "train_time_s": train_time,
        "train_images_per_s": (cfg.epochs * n) / train_time if train_time > 0 else None,
        "checkpoint": CHECKPOINT,
        "timm": {"config": TIMM_CONFIG, "weights": TIMM_WEIGHTS},
        "init": meta.get("init"),
        "plot": PLOT,
    }
    plot_per_class_accuracy(acc["per_class"], ts.classes, ts.real_counts, out_dir / PLOT,
                            title=f"{out_dir.name}: {cfg.model}, {cfg.loss}, top-1 {100 * acc['overall']:.1f}%")
    save_timm(model, meta, out_dir)  # before results.json, which marks the folder finished
    atomic_write_json(out_dir / RESULTS, results)
    return results
