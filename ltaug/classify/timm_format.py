"""A trained classifier in the files timm's `save_for_hf` writes: `config.json` + `model.safetensors`.

Every classifier folder holds them beside `checkpoint.pt`, so a timm user needs nothing of ltaug but the import
that registers its CIFAR ResNets:

    import ltaug, timm
    model = timm.create_model("local-dir:RUN/classifier-synth", pretrained=True)
    cfg = timm.data.resolve_data_config(model=model)
    transform = timm.data.create_transform(**cfg)      # PIL image -> the tensor the model was trained on

The files are timm's own (`save_for_hf`, safetensors), with the data settings of the training run: input_size =
(channels, resolution, resolution), mean / std = the per-channel normalization ltaug computed on the real training
images, crop_pct 1 and bicubic resizing (what `predict_logits` does to images of another size), and the class names as
`label_names`. ltaug's extras (the LDAM logit scale, the training counts) sit under the top-level "ltaug" key, which
timm ignores. timm writes them into a temporary folder; they are then moved in through ltaug.files' atomic writes,
the weights first, so a config.json always describes the weights beside it.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import timm
import torch
from timm.models import save_for_hf

import ltaug.classify.models  # noqa: F401  (registers the CIFAR ResNets that a config.json may name)
from ltaug.errors import LtaugError
from ltaug.files import atomic_write_bytes, atomic_write_text

CONFIG = "config.json"
WEIGHTS = "model.safetensors"


def data_config(meta: dict) -> dict:
    """timm's data settings for the preprocessing a classifier was trained with (see the module docstring)."""
    res, c = int(meta["resolution"]), int(meta["in_chans"])
    return {"input_size": (c, res, res), "mean": tuple(meta["mean"]), "std": tuple(meta["std"]), "crop_pct": 1.0,
            "crop_mode": "center", "interpolation": "bicubic"}


def save_timm(model: torch.nn.Module, meta: dict, out_dir: str | os.PathLike) -> tuple[Path, Path]:
    """Write out_dir/config.json and out_dir/model.safetensors for `model` (built by `build_model`) and its meta
    (ltaug.classify.checkpoint). Returns (config path, weights path)."""
    out = Path(out_dir)
    extras = {"logit_scale": float(meta.get("logit_scale", 1.0)), "counts": list(meta.get("counts", [])),
              "dataset": meta.get("dataset")}
    with tempfile.TemporaryDirectory() as tmp:
        save_for_hf(model, tmp, safe_serialization=True, data_config=data_config(meta),
                    model_config={"label_names": [str(c) for c in meta["classes"]], "ltaug": extras})
        weights, config = (Path(tmp) / WEIGHTS).read_bytes(), (Path(tmp) / CONFIG).read_text()
    atomic_write_bytes(out / WEIGHTS, weights)
    atomic_write_text(out / CONFIG, config)
    return out / CONFIG, out / WEIGHTS


def read_timm_config(folder: str | os.PathLike) -> dict | None:
    """The parsed config.json when `folder` is a timm-format classifier (config.json naming an architecture, and
    model.safetensors), else None."""
    folder = Path(folder)
    if not ((folder / CONFIG).is_file() and (folder / WEIGHTS).is_file()):
        return None
    try:
        cfg = json.loads((folder / CONFIG).read_text())
    except (OSError, ValueError) as e:
        raise LtaugError(f"{folder / CONFIG}: not a readable timm config ({e})") from None
    return cfg if isinstance(cfg, dict) and "architecture" in cfg else None


def meta_from_config(cfg: dict) -> dict:
    """ltaug's classifier meta (classes, in_chans, resolution, mean, std, ...) from a timm config.json."""
    pcfg = cfg.get("pretrained_cfg") or cfg
    c, h, _ = pcfg.get("input_size", (3, 224, 224))
    n = int(cfg.get("num_classes", pcfg.get("num_classes", 0)))
    names = cfg.get("label_names") or pcfg.get("label_names") or [str(i) for i in range(n)]
    mean, std = list(pcfg.get("mean", (0.485, 0.456, 0.406))), list(pcfg.get("std", (0.229, 0.224, 0.225)))
    extras = cfg.get("ltaug") or {}
    per_channel = lambda v: v * int(c) if len(v) == 1 else v  # noqa: E731
    return {"model": cfg["architecture"], "classes": [str(x) for x in names], "in_chans": int(c),
            "resolution": int(h), "mean": per_channel(mean), "std": per_channel(std),
            "counts": list(extras.get("counts", [])),
            "normed_head": bool((cfg.get("model_args") or {}).get("normed_head", False)),
            "logit_scale": float(extras.get("logit_scale", 1.0)), "dataset": extras.get("dataset")}


def load_timm(folder: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[torch.nn.Module, dict]:
    """(model in eval mode, meta) from a timm-format folder, through `timm.create_model("local-dir:...")`."""
    folder = Path(folder)
    cfg = read_timm_config(folder)
    if cfg is None:
        raise LtaugError(f"{folder}: not a timm-format classifier (expected {CONFIG} naming an architecture and "
                         f"{WEIGHTS})")
    try:
        model = timm.create_model(f"local-dir:{folder}", pretrained=True)
    except LtaugError:
        raise
    except Exception as e:  # noqa: BLE001 - timm raises many types for an unknown architecture or foreign weights
        raise LtaugError(f"{folder}: timm could not load it ({type(e).__name__}: {str(e)[:300]})") from None
    return model.to(device).eval(), meta_from_config(cfg)
