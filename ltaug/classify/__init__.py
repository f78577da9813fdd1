"""Classifiers on real plus synthetic long-tailed data (method.md §6): timm models, long-tail losses, metrics.

Public API (imported lazily, so that reading a recipe, which imports `ltaug.classify.config`, stays torch-free):
  train_classifier(recipe, out_dir, *, synthetic=[...], report=None, progress=True, resume=False) -> results dict
  load_classifier(path, device="cpu") -> (model, meta)
  predict_proba(model, meta, images_uint8_NHWC, device="cpu", batch_size=256) -> np.ndarray [N, C]
  group_accuracy(confusion, train_counts) -> {"overall", "many", "medium", "few", "per_class"}
  build_model(name, num_classes, in_chans, pretrained=False) -> (model, normed_head)

ltaug's CIFAR ResNets (cifar_resnet32, ...) are registered in timm's registry when `ltaug.classify.models` is
imported: by any of the functions above, by `ltaug.classify.register_models()`, and at once when this package is
imported after timm already is.
"""

from __future__ import annotations

import importlib
import sys

_API = {
    "train_classifier": "ltaug.classify.train",
    "load_classifier": "ltaug.classify.checkpoint",
    "predict_proba": "ltaug.classify.checkpoint",
    "predict_logits": "ltaug.classify.checkpoint",
    "group_accuracy": "ltaug.classify.metrics",
    "confusion_matrix": "ltaug.classify.metrics",
    "build_model": "ltaug.classify.models",
    "build_train_set": "ltaug.classify.data",
    "mix_counts": "ltaug.classify.data",
}

__all__ = sorted(_API) + ["register_models"]


def register_models() -> None:
    """Register cifar_resnet8/20/32/44/56/110 and test_cifar_resnet in timm (idempotent)."""
    importlib.import_module("ltaug.classify.models")


def __getattr__(name: str):
    if name in _API:
        return getattr(importlib.import_module(_API[name]), name)
    raise AttributeError(f"module 'ltaug.classify' has no attribute '{name}'")


if "timm" in sys.modules:  # timm is loaded already: registering costs nothing, so make timm.create_model work now
    register_models()
