"""The optional confidence filter: keep an image only if a reference classifier gives its own label probability
>= p. The rejection rate per class measures tail-to-head leakage (a "tail" sample that looks like a head class)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ltaug.classify.checkpoint import HUB_FILES, load_classifier, predict_proba, weights_file
from ltaug.errors import LtaugError
from ltaug.files import sha256_file
from ltaug.hub import resolve


class ConfidenceFilter:
    """Loads the classifier once (ltaug.classify.load_classifier) and scores images of known labels."""

    def __init__(self, path: str | Path, min_confidence: float, classes: list[str], device: str = "cpu",
                 channels: int | None = None):
        path = resolve(path, flag="--filter-classifier", allow_patterns=HUB_FILES)  # local, or a Hub id
        self.model, self.meta = load_classifier(path, device=device, flag="--filter-classifier")
        theirs = [str(c) for c in self.meta.get("classes", [])]
        if theirs and theirs != [str(c) for c in classes]:
            raise LtaugError(f"--filter-classifier {path}: its classes ({', '.join(theirs[:5])}...) are not the "
                             f"generator's ({', '.join(classes[:5])}...); use a classifier trained on the same dataset")
        # checked here, before the synthesis folder is touched, rather than on the first batch of images
        if channels is not None and int(self.meta.get("in_chans", channels)) != int(channels):
            raise LtaugError(f"--filter-classifier {path}: it reads {self.meta['in_chans']}-channel images but the "
                             f"generator makes {channels}-channel ones; use a classifier trained on the same dataset")
        self.path, self.min_confidence, self.device = path.resolve(), float(min_confidence), device
        self.sha256 = sha256_file(weights_file(path))

    def identity(self) -> dict:
        return {"classifier_sha256": self.sha256, "min_confidence": self.min_confidence}

    def confidence(self, images: np.ndarray, labels: np.ndarray | list[int]) -> np.ndarray:
        """Probability of each image's own label: float [N] in [0, 1]. images uint8 [N, H, W, C]."""
        probs = predict_proba(self.model, self.meta, images, self.device)
        return probs[np.arange(len(images)), np.asarray(labels, dtype=np.int64)]
