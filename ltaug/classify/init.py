"""`classifier.init` (`train-classifier --init REF`): start training from another classifier's weights.

REF is a classifier folder (its checkpoint.pt), a timm-format folder (config.json + model.safetensors: what every
classifier folder also holds, and what a Hub repository of one holds) or a Hub id (ltaug.hub.resolve). The
architecture must be the recipe's `classifier.model`. When the source was trained on the same classes (by name, in
order) every weight is taken, the head included; otherwise the head is left fresh and the rest is taken (fine-tuning
on another label set).
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file

from ltaug.classify.checkpoint import CHECKPOINT, HUB_FILES, read_checkpoint
from ltaug.classify.timm_format import WEIGHTS, read_timm_config
from ltaug.errors import LtaugError
from ltaug.hub import resolve

FLAG = "--init"


def _source(ref: str) -> tuple[Path, dict, str, list[str]]:
    """(where, state_dict, architecture, classes) of the classifier REF names."""
    path = resolve(ref, flag=FLAG, allow_patterns=HUB_FILES)
    if path.is_file() or (path / CHECKPOINT).is_file():
        ckpt = read_checkpoint(path, flag=FLAG)
        meta = ckpt.get("meta") or {}
        return path, ckpt["model"], str(meta.get("model")), [str(c) for c in meta.get("classes", [])]
    cfg = read_timm_config(path)
    if cfg is None:
        raise LtaugError(f"{FLAG} {ref}: {path} holds neither {CHECKPOINT} nor timm's config.json + {WEIGHTS}; give "
                         f"a classifier folder written by `ltaug train-classifier`, or a timm-format folder or Hub id")
    names = cfg.get("label_names") or (cfg.get("pretrained_cfg") or {}).get("label_names") or []
    return path, load_file(str(path / WEIGHTS)), str(cfg["architecture"]), [str(c) for c in names]


def init_from(model: torch.nn.Module, ref: str, architecture: str, classes: list[str]) -> dict:
    """Load REF's weights into `model` (a fresh `build_model(architecture, len(classes), ...)`), in place.

    Returns what was done: {"init": ref, "path", "head": "kept" | "fresh"}. Raises LtaugError naming --init when the
    architecture differs or a weight does not fit (another channel count, another head type)."""
    path, state, arch, theirs = _source(ref)
    if arch != architecture:
        raise LtaugError(f"{FLAG} {ref}: it is a {arch}, but classifier.model is {architecture}; set --model {arch} "
                         "(or give a classifier of that model)")
    head = (getattr(model, "pretrained_cfg", {}) or {}).get("classifier") or "fc"
    heads = head if isinstance(head, (list, tuple)) else (head,)
    keep_head = theirs == [str(c) for c in classes]
    if not keep_head:
        state = {k: v for k, v in state.items() if not any(k == h or k.startswith(h + ".") for h in heads)}
    own = model.state_dict()
    wrong = [f"{k} {tuple(v.shape)} vs {tuple(own[k].shape)}" for k, v in state.items()
             if k in own and tuple(v.shape) != tuple(own[k].shape)]
    missing, unexpected = [k for k in own if k not in state], [k for k in state if k not in own]
    missing = [k for k in missing if keep_head or not any(k == h or k.startswith(h + ".") for h in heads)]
    if wrong or missing or unexpected:
        detail = "; ".join(filter(None, [
            f"shapes differ: {', '.join(wrong[:3])}" if wrong else "",
            f"missing: {', '.join(missing[:3])}" if missing else "",
            f"unexpected: {', '.join(unexpected[:3])}" if unexpected else ""]))
        raise LtaugError(f"{FLAG} {ref}: its weights do not fit this {architecture} ({detail}); it was trained on "
                         "other images (channels) or with another head (the LDAM loss uses a cosine head)")
    model.load_state_dict(state, strict=False)
    return {"init": str(ref), "path": str(path), "head": "kept" if keep_head else "fresh"}
