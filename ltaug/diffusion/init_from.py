"""`generator.init_from`: start the class-conditional generator from a pretrained diffusers `UNet2DModel`.

The source is a folder in the standard diffusers layout: the model folder itself (config.json +
diffusion_pytorch_model.safetensors, what `UNet2DModel.save_pretrained` writes) or a pipeline folder whose `unet/`
holds them (what `DDPMPipeline.save_pretrained` writes, and what ltaug exports), or a Hub id of either
(ltaug.hub.resolve). Typically an unconditional DDPM trained on a large balanced set: the practical start for a
long-tailed set too small to train a UNet from scratch.

The network takes the source's architecture (its config replaces generator.preset) and every source weight. ltaug
conditions by a class embedding added to the time embedding, with `num_classes + 1` rows (the last one is the null
class of classifier-free guidance; ltaug.diffusion.unet): an unconditional source gets a fresh one, initialized to
zero so that at step 0 the network is the source model for every label, the null class included, and fine-tuning
starts from its samples. A source that already has exactly `num_classes + 1` class rows (another ltaug run's
export) keeps them. Anything else that cannot fit (image size, channels, another class count, another kind of
class embedding, another number of diffusion steps) is refused, naming generator.init_from.

The source is recorded in the checkpoint's meta (`init_from`: the reference, the folder, the weights' sha256, the
UNet config), so a resumed run rebuilds the same network without reading the source again.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from diffusers import UNet2DModel

from ltaug.diffusion.pipeline import load_kwargs
from ltaug.diffusion.schedule import NoiseSchedule
from ltaug.diffusion.unet import ClassConditionalUNet
from ltaug.errors import LtaugError
from ltaug.files import sha256_file
from ltaug.hub import resolve

KEY = "generator.init_from"
WEIGHTS = "diffusion_pytorch_model.safetensors"
_HUB_FILES = ["config.json", WEIGHTS, "model_index.json", "unet/config.json", f"unet/{WEIGHTS}",
              "scheduler/scheduler_config.json"]
# diffusers' beta schedules that are ltaug's (ltaug.diffusion.schedule): linear 1e-4 to 0.02, and the cosine one
_SCHEDULES = {"squaredcos_cap_v2": "cosine"}


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise LtaugError(f"{KEY} {path}: not a readable JSON file ({e})") from None


def unet_folder(ref: str) -> Path:
    """The folder holding the UNet2DModel's config.json and weights: REF itself, or REF/unet for a pipeline."""
    path = resolve(ref, flag=KEY, allow_patterns=_HUB_FILES)
    for folder in (path, path / "unet"):
        cfg_file = folder / "config.json"
        if cfg_file.is_file():
            name = _read_json(cfg_file).get("_class_name")
            if name == "UNet2DModel":
                if not (folder / WEIGHTS).is_file():
                    raise LtaugError(f"{KEY} {ref}: {folder} has the UNet's config.json but no {WEIGHTS}; save the "
                                     "model with `save_pretrained` (safetensors, the diffusers default)")
                return folder
            if folder == path and (path / "unet").is_dir():
                continue  # a pipeline's own config is model_index.json; a config.json beside unet/ is not the UNet
            raise LtaugError(f"{KEY} {ref}: {cfg_file} describes a {name or 'model of unknown class'}, not a "
                             "diffusers UNet2DModel (only pixel-space UNet2DModels are supported)")
    raise LtaugError(f"{KEY} {ref}: no diffusers UNet2DModel in {path}; expected a model folder (config.json + "
                     f"{WEIGHTS}, as UNet2DModel.save_pretrained writes) or a pipeline folder with unet/")


def _check(ref: str, folder: Path, cfg: dict, num_classes: int, channels: int, resolution: int, T: int,
           schedule: str) -> bool:
    """Refuse a source that cannot become this run's generator; True when its class embedding is kept."""
    size = cfg.get("sample_size")
    size = tuple(size) if isinstance(size, (list, tuple)) else (size, size)
    if size != (resolution, resolution):
        raise LtaugError(f"{KEY} {ref}: the model was made for {size[0]}x{size[1]} images, but data.resolution is "
                         f"{resolution}; set --set data.resolution={size[0]} (or pick a model of this size)")
    for key in ("in_channels", "out_channels"):
        if cfg.get(key) != channels:
            raise LtaugError(f"{KEY} {ref}: the model's {key} is {cfg.get(key)}, but the images have {channels} "
                             "channel(s) (data.channels); pick a model trained on images like these")
    if cfg.get("class_embed_type") is not None:
        raise LtaugError(f"{KEY} {ref}: its class embedding is of type '{cfg['class_embed_type']}'; ltaug needs the "
                         "plain embedding table (class_embed_type null) or none")
    rows = cfg.get("num_class_embeds")
    if rows is not None and rows != num_classes + 1:
        raise LtaugError(f"{KEY} {ref}: a class-conditional model with {rows} class embeddings, but this dataset "
                         f"needs {num_classes} + 1 (its classes and the null class); start from an unconditional "
                         "model, or from one trained on these classes")
    sched_file = folder.parent / "scheduler" / "scheduler_config.json"
    if folder.name == "unet" and sched_file.is_file():  # a pipeline says how its UNet was trained
        sched = _read_json(sched_file)
        theirs_T = sched.get("num_train_timesteps")
        if theirs_T is not None and int(theirs_T) != T:
            raise LtaugError(f"{KEY} {ref}: the model was trained with {theirs_T} diffusion steps, but generator.T "
                             f"is {T}; set --set generator.T={theirs_T}")
        beta = sched.get("beta_schedule")
        linear = beta == "linear" and (sched.get("beta_start"), sched.get("beta_end")) == (1e-4, 0.02)
        theirs = "linear" if linear else _SCHEDULES.get(beta)
        if sched.get("trained_betas") and theirs_T is not None:  # exact betas (an ltaug export): which schedule
            betas = torch.tensor(sched["trained_betas"], dtype=torch.float64)
            theirs = next((k for k in ("linear", "cosine") if len(betas) == int(theirs_T) and
                           torch.allclose(NoiseSchedule.make(k, int(theirs_T)).betas, betas, rtol=1e-9, atol=0)),
                          None)
        if theirs is not None and theirs != schedule:
            raise LtaugError(f"{KEY} {ref}: the model was trained with the {theirs} beta schedule, but "
                             f"generator.schedule is {schedule}; set --set generator.schedule={theirs}")
    return rows is not None


def load_init(ref: str, num_classes: int, channels: int, resolution: int, T: int,
              schedule: str) -> tuple[ClassConditionalUNet, dict]:
    """(the network, its source record) for `generator.init_from: REF` (see the module docstring)."""
    folder = unet_folder(ref)
    cfg = dict(UNet2DModel.load_config(folder))
    keep = _check(ref, folder, cfg, num_classes, channels, resolution, T, schedule)
    try:
        source = UNet2DModel.from_pretrained(folder, **load_kwargs())
    except Exception as e:  # noqa: BLE001 - diffusers raises many types for torn or foreign weights
        raise LtaugError(f"{KEY} {ref}: diffusers could not load {folder} ({type(e).__name__}: {str(e)[:300]})") \
            from None
    net = build_from_config({**dict(source.config), "num_class_embeds": num_classes + 1}, num_classes)
    state = source.state_dict()
    missing, unexpected = net.unet.load_state_dict(state, strict=False)
    if unexpected or set(missing) - {"class_embedding.weight"}:
        raise LtaugError(f"{KEY} {ref}: its weights do not match its own config.json (missing {missing[:3]}, "
                         f"unexpected {unexpected[:3]})")
    if not keep:
        torch.nn.init.zeros_(net.unet.class_embedding.weight)
    record = {"ref": str(ref), "path": str(folder.resolve()), "sha256": sha256_file(folder / WEIGHTS),
              "class_embedding": "kept" if keep else "new (zeros)", "unet_config": unet_config(net)}
    return net, record


def unet_config(net: ClassConditionalUNet) -> dict:
    """The UNet2DModel's config as plain JSON data (what build_from_config takes back)."""
    return json.loads(json.dumps({k: v for k, v in dict(net.unet.config).items() if not k.startswith("_")}))


def build_from_config(config: dict, num_classes: int) -> ClassConditionalUNet:
    """A ClassConditionalUNet from a UNet2DModel config (a resumed or loaded init_from run)."""
    unet = UNet2DModel.from_config({k: v for k, v in config.items() if not k.startswith("_")})
    return ClassConditionalUNet(unet, num_classes, "init_from")
