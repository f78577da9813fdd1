"""A classifier checkpoint, loading it back, and predicting with it.

`checkpoint.pt` (written atomically, read with `weights_only=True`) holds
  {"model": state_dict, "optimizer": state_dict, "epoch": epochs done, "meta": {...}, "recipe": resolved recipe dict,
   "synthetic": [paths], "ltaug": version}
where meta = {model, classes, in_chans, resolution, mean, std, counts (real training counts), train_counts (real +
synthetic), normed_head, logit_scale}: everything needed to rebuild the model and feed it images.

A folder may instead (or also) hold the timm-format files (config.json + model.safetensors, ltaug.classify.
timm_format): a classifier fetched from the Hub, or any timm model saved with `save_for_hf`. `load_classifier`
reads checkpoint.pt when there is one, else those.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from ltaug.classify.augment import to_input
from ltaug.classify.models import build_model
from ltaug.classify.timm_format import WEIGHTS, load_timm, read_timm_config, save_timm
from ltaug.data.sources import to_resolution
from ltaug.errors import LtaugError

CHECKPOINT = "checkpoint.pt"
HUB_FILES = [CHECKPOINT, "config.json", WEIGHTS]  # what is fetched of a classifier's Hub repository


def checkpoint_path(path: str | os.PathLike) -> Path:
    """The checkpoint file for a classifier dir or a file path."""
    path = Path(path).expanduser()
    return path / CHECKPOINT if path.is_dir() else path


def weights_file(path: str | os.PathLike) -> Path:
    """The file whose bytes identify a classifier: checkpoint.pt, or model.safetensors of a timm-only folder."""
    file = checkpoint_path(path)
    folder = Path(path).expanduser()
    if not file.is_file() and folder.is_dir() and read_timm_config(folder) is not None:
        return folder / WEIGHTS
    return file


def read_checkpoint(path: str | os.PathLike, device: str | torch.device = "cpu", flag: str = "") -> dict:
    """Load a checkpoint dict (weights_only). Raises LtaugError for a missing or unreadable file, or one that is not
    a classifier checkpoint (flag: the option that named it, for the message)."""
    file = checkpoint_path(path)
    shown = f"{flag} {file}" if flag else str(file)
    if not file.is_file():
        raise LtaugError(f"no classifier checkpoint at {file}; expected a classifier folder (with {CHECKPOINT}, "
                         f"written by `ltaug train-classifier`, or timm's config.json + {WEIGHTS}) or the "
                         f"checkpoint file itself")
    try:
        state = torch.load(file, map_location=device, weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch raises many types for a torn or foreign file
        raise LtaugError(f"{shown} is not a readable ltaug classifier checkpoint ({type(e).__name__}: {e}); give a "
                         "classifier written by `ltaug train-classifier` (or start it over elsewhere)") from None
    if not isinstance(state, dict) or not isinstance(state.get("meta"), dict) \
            or not isinstance(state.get("model"), dict):
        raise LtaugError(f"{shown} is not an ltaug classifier checkpoint (no 'model' weights and 'meta' in it); give "
                         "a classifier written by `ltaug train-classifier` (or start it over elsewhere)")
    return state


def load_classifier(path: str | os.PathLike, device: str | torch.device = "cpu",
                    flag: str = "") -> tuple[torch.nn.Module, dict]:
    """(model in eval mode on `device`, meta) from a classifier folder or its checkpoint file.

    meta: classes [C] names, in_chans, resolution, mean / std (per channel, [0, 1] units), counts (real training
    counts per class), model (timm name), logit_scale (multiply logits by it before a softmax).
    A folder without checkpoint.pt but with timm's config.json + model.safetensors is loaded through timm.
    """
    folder = Path(path).expanduser()
    if folder.is_dir() and not (folder / CHECKPOINT).is_file() and read_timm_config(folder) is not None:
        return load_timm(folder, device)
    ckpt = read_checkpoint(path, device, flag)
    where = f"{flag} {path}" if flag else str(checkpoint_path(path))
    meta = dict(ckpt["meta"])
    try:
        model, _ = build_model(meta["model"], len(meta["classes"]), meta["in_chans"],
                               normed_head=meta.get("normed_head", False))
        model.load_state_dict(ckpt["model"])
    except (KeyError, TypeError, ValueError, RuntimeError) as e:  # a meta or weights of another network
        detail = " ".join(str(e).split())[:200]
        raise LtaugError(f"{where}: its weights do not fit the network its meta describes "
                         f"({type(e).__name__}: {detail}); give a classifier written by `ltaug train-classifier`") \
            from None
    return model.to(device).eval(), meta


def write_timm_files(path: str | os.PathLike) -> tuple[Path, Path]:
    """(Re)write a classifier folder's timm files from its checkpoint.pt (a folder trained before they existed)."""
    model, meta = load_classifier(path)
    folder = checkpoint_path(path).parent
    return save_timm(model, meta, folder)


@torch.no_grad()
def predict_logits(model: torch.nn.Module, meta: dict, images: np.ndarray, device: str | torch.device = "cpu",
                   batch_size: int = 256, amp: bool = True, pre_logits: bool = False) -> np.ndarray:
    """Raw logits float32 [N, C] for uint8 images [N, H, W, C] (C = meta in_chans); images of another size are
    resized and center-cropped to the resolution the classifier was trained at, as its training data was.
    pre_logits: the pooled features the classifier head reads instead (timm's `forward_head(pre_logits=True)`)."""
    images = np.asarray(images)
    if images.ndim == 3:
        images = images[..., None]
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != meta["in_chans"]:
        raise LtaugError(f"classifier input must be uint8 [N, H, W, {meta['in_chans']}], got {images.dtype} "
                         f"{images.shape}")
    res = meta.get("resolution")
    if res and images.shape[1:3] != (res, res):
        images = to_resolution(images, int(res))
    device = torch.device(device)
    mean = torch.tensor(meta["mean"], dtype=torch.float32, device=device)
    std = torch.tensor(meta["std"], dtype=torch.float32, device=device)
    was_training = model.training
    model.eval()
    out = []
    use_amp = amp and device.type == "cuda"
    for i in range(0, len(images), batch_size):
        x = to_input(torch.from_numpy(images[i:i + batch_size]).to(device), mean, std)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
            y = model.forward_head(model.forward_features(x), pre_logits=True) if pre_logits else model(x)
            out.append(y.float().cpu())
    model.train(was_training)
    return torch.cat(out).numpy() if out else np.zeros((0, len(meta["classes"])), np.float32)


def predict_proba(model: torch.nn.Module, meta: dict, images: np.ndarray, device: str | torch.device = "cpu",
                  batch_size: int = 256) -> np.ndarray:
    """Class probabilities float32 [N, C] (rows sum to 1) for uint8 images [N, H, W, C]."""
    logits = torch.from_numpy(predict_logits(model, meta, images, device, batch_size))
    return torch.softmax(logits * float(meta.get("logit_scale", 1.0)), dim=1).numpy()
