"""The backbone that turns images into feature vectors, and what identifies it (a features cache records it).

- `inception`: the 2015 Inception-v3 of the FID protocol (ltaug.metrics.inception: offline weights, sha256-checked),
  2048-d: its last map average-pooled, at `features.resolution` (299 = exactly the FID pool features).
- a classifier: the run's own real-only classifier (`run`), an ltaug classifier folder, a timm folder,
  `local-dir:PATH` or a Hub id: timm's `forward_head(forward_features(x), pre_logits=True)` on the classifier's own
  normalization and resolution. Its linear head is kept too (the end-to-end baseline beside the retrained head).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch

from ltaug.classify.checkpoint import HUB_FILES, load_classifier, predict_logits, weights_file
from ltaug.errors import LtaugError
from ltaug.files import sha256_file
from ltaug.hub import resolve

LOCAL_DIR = "local-dir:"


@dataclass
class Backbone:
    encode: Callable[[np.ndarray], np.ndarray]  # uint8 [N, H, W, C] -> float32 [N, D]
    identity: dict  # what decides the features: kind, weights sha256, input resolution
    head: Optional[dict] = field(default=None)  # {"weight": [C, D], "bias": [C]} of a classifier backbone
    classes: Optional[list[str]] = None


def _inception(resolution: int, device: torch.device) -> Backbone:
    from ltaug.metrics.inception import _resize_batch, load_feature_net  # noqa: PLC0415 (clean-fid import)

    net = load_feature_net(None, device=str(device))
    module = torch.jit.load(net.weights, map_location=str(device)).eval()
    layers = list((module.layers if hasattr(module, "layers") else module.net.layers).children())[:-1]
    side = resolution or 299

    @torch.inference_mode()
    def encode(images: np.ndarray) -> np.ndarray:
        if side == 299:  # exactly the FID protocol's input: clean-fid's resizer
            x = torch.from_numpy(_resize_batch(images, net.mode))
        else:  # one bicubic resize straight to the side asked for
            if images.shape[-1] == 1:
                images = np.repeat(images, 3, axis=-1)
            x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float()
            x = torch.nn.functional.interpolate(x, size=(side, side), mode="bicubic", align_corners=False)
            x = x.clamp(0, 255)
        h = (x.to(device) - 128) / 128
        for layer in layers:  # all but the fixed 8x8 pool, so any side >= 75 works
            h = layer(h)
        return h.mean(dim=(2, 3)).float().cpu().numpy()

    return Backbone(encode, {"backbone": "inception", "weights_sha256": net.weights_sha256, "resolution": side})


def _classifier(ref: str, device: torch.device, flag: str) -> Backbone:
    path = resolve(ref[len(LOCAL_DIR):] if ref.startswith(LOCAL_DIR) else ref, flag=flag, allow_patterns=HUB_FILES)
    try:
        model, meta = load_classifier(path, device=device)
    except (KeyError, RuntimeError) as e:
        raise LtaugError(f"{flag} {ref}: not a loadable classifier ({type(e).__name__}: {e})") from None
    if not (hasattr(model, "forward_features") and hasattr(model, "forward_head")):
        raise LtaugError(f"{flag} {ref}: {type(model).__name__} has no timm forward_features / forward_head, so its "
                         "features cannot be read; use a timm model")
    fc = model.get_classifier() if hasattr(model, "get_classifier") else None
    head = None
    if isinstance(fc, torch.nn.Linear):
        head = {"weight": fc.weight.detach().cpu().numpy(), "bias": fc.bias.detach().cpu().numpy()}

    def encode(images: np.ndarray) -> np.ndarray:
        if images.shape[-1] != meta["in_chans"]:
            raise LtaugError(f"{flag} {ref}: the classifier takes {meta['in_chans']}-channel images, the data has "
                             f"{images.shape[-1]}; use a backbone trained on such images")
        return predict_logits(model, meta, images, device, batch_size=len(images), pre_logits=True)

    ident = {"backbone": "classifier", "model": meta.get("model"), "weights_sha256": sha256_file(weights_file(path)),
             "resolution": meta.get("resolution")}
    return Backbone(encode, ident, head, [str(c) for c in meta.get("classes", [])])


def load_backbone(ref: str, device: torch.device, *, run_classifier: Optional[Path] = None,
                  resolution: int = 0) -> Backbone:
    """The backbone named by `features.backbone`: 'run' (then `run_classifier` is the run's real-only classifier
    folder), 'inception', or a classifier reference."""
    flag = "--backbone"
    if ref == "inception":
        return _inception(resolution, device)
    if ref == "run":
        if run_classifier is None:
            raise LtaugError("features.backbone run: the run's real-only classifier is not trained yet")
        return _classifier(str(run_classifier), device, flag)
    return _classifier(os.fspath(ref), device, flag)
