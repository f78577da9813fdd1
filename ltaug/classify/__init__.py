"""Classifiers on real plus synthetic long-tailed data (method.md §6): timm models, long-tail losses, metrics.

Importing this package registers ltaug's CIFAR ResNets (cifar_resnet8/20/32/44/56/110, test_cifar_resnet) in timm's
registry, so `timm.create_model("cifar_resnet32", num_classes=10)` works (`import ltaug` alone does it too, once
timm is imported: ltaug/_timm_hook.py). Every classifier folder also holds timm's config.json + model.safetensors
(timm_format.py): `timm.create_model("local-dir:DIR", pretrained=True)`.

  train_classifier(recipe, out_dir, *, synthetic=[...], report=None, progress=True, resume=False) -> results dict
  load_classifier(path, device="cpu") -> (model, meta)          (checkpoint.pt, or a timm-format folder)
  predict_proba(model, meta, images_uint8_NHWC, device="cpu", batch_size=256) -> np.ndarray [N, C]
  group_accuracy(confusion, train_counts) -> {"overall", "many", "medium", "few", "per_class"}
  build_model(name, num_classes, in_chans, pretrained=False) -> (model, normed_head)
"""

from ltaug.classify.checkpoint import load_classifier, predict_logits, predict_proba, read_checkpoint
from ltaug.classify.data import build_train_set, mix_counts
from ltaug.classify.metrics import confusion_matrix, group_accuracy
from ltaug.classify.models import LTAUG_MODELS, build_model, check_model_name
from ltaug.classify.train import train_classifier

__all__ = ["load_classifier", "predict_logits", "predict_proba", "read_checkpoint", "build_train_set", "mix_counts",
           "confusion_matrix", "group_accuracy", "LTAUG_MODELS", "build_model", "check_model_name",
           "train_classifier"]
