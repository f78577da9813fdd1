"""The pipeline folder: what `generator/diffusers/` and `ltaug export` write, and how ltaug reads one back as a
generator (`synthesize`, `evaluate` accept it like a run).

    model_index.json        unet + scheduler, the class names (`class_names`), and `_class_name` ["pipeline",
                            "ClassConditionalPipeline"]: diffusers' name for a pipeline class in the folder's code
    unet/                   the EMA (or raw) UNet2DModel, `save_pretrained` format (config.json + safetensors)
    scheduler/              scheduler_config.json: a DDPMScheduler on the training schedule (exact trained_betas,
                            any T; variance_type from the recipe's synth.variance)
    pipeline.py             a copy of ltaug/diffusion/pipeline.py (save_pretrained writes both), so plain diffusers
                            loads the folder: DiffusionPipeline.from_pretrained(DIR, trust_remote_code=True)
    ltaug.json              what ltaug needs beyond diffusers: classes, real counts, the schedule's name, the null
                            label, the checkpoint it came from

The folder is built in a temporary sibling and renamed into place: it appears whole or not at all.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Callable, Optional

import torch
from diffusers import UNet2DModel

from ltaug.diffusion.pipeline import ClassConditionalPipeline, load_kwargs
from ltaug.diffusion.schedule import NoiseSchedule
from ltaug.diffusion.schedulers import make_scheduler
from ltaug.diffusion.unet import ClassConditionalUNet
from ltaug.errors import LtaugError
from ltaug.files import atomic_write_json, read_json, sha256_file
from ltaug.locks import FolderLock
from ltaug.space import as_fault

MODEL_INDEX = "model_index.json"
LTAUG_JSON = "ltaug.json"
WEIGHTS = "unet/diffusion_pytorch_model.safetensors"
USAGE = ("from ltaug import ClassConditionalPipeline; pipe = ClassConditionalPipeline.from_pretrained(DIR); "
         "pipe(class_labels=[...], w=1.0, num_inference_steps=T, generator=[torch.Generator().manual_seed(s) ...])")


def is_pipeline_folder(path: str | Path) -> bool:
    p = Path(path)
    return p.is_dir() and (p / MODEL_INDEX).is_file() and (p / "unet").is_dir()


def build_pipeline(net: ClassConditionalUNet, schedule: NoiseSchedule, classes: list[str],
                   variance: str = "large") -> ClassConditionalPipeline:
    """The diffusers pipeline of a trained network (shares its weights)."""
    return ClassConditionalPipeline(unet=net.unet, scheduler=make_scheduler(schedule, "ddpm", variance=variance),
                                    class_names=list(classes))


def write_pipeline(net: ClassConditionalUNet, meta: dict, out_dir: str | Path, *, variance: str = "large",
                   extras: Optional[Callable[[Path], None]] = None) -> Path:
    """Write the pipeline folder of `net` (meta: the checkpoint's meta, with classes, T, schedule) to out_dir;
    extras(tmp) adds files (model card, classifiers) before the rename. A previous folder at out_dir is replaced
    as a whole."""
    out = Path(out_dir)
    schedule = NoiseSchedule.make(meta.get("schedule", "linear"), int(meta.get("T", 1000)))
    classes = [str(c) for c in meta.get("classes") or range(int(meta["num_classes"]))]
    tmp, old = out.with_name(f".{out.name}.tmp"), out.with_name(f".{out.name}.old")
    repair(out)
    try:
        build_pipeline(net, schedule, classes, variance).save_pretrained(tmp)
        atomic_write_json(tmp / LTAUG_JSON, {**meta, "classes": classes, "null_class": len(classes),
                                              "variance": variance, "usage": USAGE})
        if extras is not None:
            extras(tmp)
    except BaseException as e:
        shutil.rmtree(tmp, ignore_errors=True)
        size = sum(p.numel() * p.element_size() for p in net.unet.parameters())
        fault = as_fault(e, out / WEIGHTS, size)
        if fault is None and isinstance(e, Exception) and "No space left" in str(e):  # safetensors' own error type
            fault = as_fault(OSError(28, "No space left on device"), out / WEIGHTS, size)
        if fault is not None:
            raise fault from None
        raise
    # The new folder is locked before it takes OUT's name: a second writer that opens OUT after the rename finds
    # it held, exactly like the folder it replaces (the caller holds that one).
    with FolderLock(tmp, "the pipeline folder being written", refuse_links=False):
        try:
            if out.exists():
                out.rename(old)
            tmp.rename(out)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        shutil.rmtree(old, ignore_errors=True)
    return out


def repair(out: str | Path) -> None:
    """Remove what an earlier writer of the pipeline folder `out` left when it was killed (call it holding `out`'s
    lock): its temporary sibling `.OUT.tmp`, and `.OUT.old`, the previous folder moved aside just before the new one
    took its name (put back when `out` itself is missing). A link or file planted under either name is removed,
    never followed."""
    out = Path(out)
    tmp, old = out.with_name(f".{out.name}.tmp"), out.with_name(f".{out.name}.old")
    for p in (tmp, old):
        if p.is_symlink() or (p.exists() and not p.is_dir()):
            p.unlink()
    shutil.rmtree(tmp, ignore_errors=True)
    if old.is_dir():
        if out.exists() or out.is_symlink():
            shutil.rmtree(old, ignore_errors=True)
        else:
            old.rename(out)


def read_pipeline(path: str | Path, device: str | torch.device = "cpu") -> dict:
    """A pipeline folder as the pieces of a LoadedGenerator: net (eval, on device), schedule, classes, counts,
    channels, resolution, step, meta, sha256 (of the UNet weights). A folder without ltaug.json (another tool's
    class-conditional pipeline) loads with the linear/cosine name unknown ('custom') and no counts."""
    p = Path(path)
    meta = read_json(p / LTAUG_JSON) or {}
    index = read_json(p / MODEL_INDEX) or {}
    sched = read_json(p / "scheduler" / "scheduler_config.json")
    if not sched or not sched.get("trained_betas"):
        raise LtaugError(f"{p}: scheduler/scheduler_config.json has no trained_betas; ltaug samples the exact "
                         "training schedule, so re-export the folder with `ltaug export RUN`")
    try:
        unet = UNet2DModel.from_pretrained(p / "unet", **load_kwargs())
    except Exception as e:  # noqa: BLE001 - diffusers raises many types for torn or foreign weights
        raise LtaugError(f"{p}/unet: diffusers could not load it ({type(e).__name__}: {str(e)[:300]})") from None
    rows = unet.config.num_class_embeds
    if not rows or rows < 2:
        raise LtaugError(f"{p}: its UNet has no class embedding; ltaug needs a class-conditional UNet with "
                         "num_classes + 1 rows (the last is the null class)")
    classes = [str(c) for c in (index.get("class_names") or meta.get("classes") or range(rows - 1))]
    if len(classes) != rows - 1:
        raise LtaugError(f"{p}: {len(classes)} class names for a UNet with {rows - 1} classes + the null class")
    betas = sched["trained_betas"]
    ok = isinstance(betas, list) and len(betas) >= 2 and all(
        isinstance(b, (int, float)) and not isinstance(b, bool) and 0 < b < 1 for b in betas)
    if not ok:  # checked here, so a foreign or edited file is named rather than failing inside the schedule
        raise LtaugError(f"{p}/scheduler/scheduler_config.json: trained_betas must be a list of at least 2 numbers "
                         "strictly between 0 and 1 (the training schedule); re-export the folder with `ltaug export "
                         "RUN`")
    schedule = NoiseSchedule(torch.tensor(betas, dtype=torch.float64), meta.get("schedule", "custom"))
    net = ClassConditionalUNet(unet, len(classes), str(meta.get("preset", "pipeline")))
    net = net.to(device).eval().requires_grad_(False)
    size = unet.config.sample_size
    return {"net": net, "schedule": schedule, "classes": classes, "counts": list(meta.get("counts") or []),
            "channels": int(unet.config.in_channels), "resolution": int(size if isinstance(size, int) else size[0]),
            "step": int(meta.get("step", 0)), "meta": meta, "sha256": sha256_file(p / WEIGHTS)}
