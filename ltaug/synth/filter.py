"""The optional confidence filter: keep an image only if a reference classifier gives its own label probability
>= p. The rejection rate per class measures tail-to-head leakage (a "tail" sample that looks like a head class)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from ltaug.errors import LtaugError


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


class ConfidenceFilter:
    """Loads the classifier once (ltaug.classify.load_classifier) and scores images of known labels."""

    def __init__(self, path: str | Path, min_confidence: float, classes: list[str], device: str = "cpu"):
        if not 0.0 <= min_confidence <= 1.0:
            raise LtaugError(f"--min-confidence {min_confidence}: a probability, must be in [0, 1]")
        path = Path(path)
        if not path.exists():
            raise LtaugError(f"--filter-classifier {path}: no such file or directory")
        try:
            from ltaug.classify import load_classifier
        except ImportError:
            raise LtaugError("--filter-classifier needs the classifier stage (ltaug.classify.load_classifier), "
                             "which is not installed in this build") from None
        self.model, self.meta = load_classifier(path, device=device)
        theirs = [str(c) for c in self.meta.get("classes", [])]
        if theirs and theirs != [str(c) for c in classes]:
            raise LtaugError(f"--filter-classifier {path}: its classes ({', '.join(theirs[:5])}...) are not the "
                             f"generator's ({', '.join(classes[:5])}...); use a classifier trained on the same dataset")
        self.path, self.min_confidence, self.device = path.resolve(), float(min_confidence), device
        files = [path] if path.is_file() else sorted(p for p in path.glob("*.pt"))
        self.sha256 = _sha256(files[0]) if files else None

    def identity(self) -> dict:
        return {"classifier_sha256": self.sha256, "min_confidence": self.min_confidence}

    def confidence(self, images: np.ndarray, labels: np.ndarray | list[int]) -> np.ndarray:
        """Probability of each image's own label: float [N] in [0, 1]. images uint8 [N, H, W, C]."""
        from ltaug.classify import predict_proba

        probs = predict_proba(self.model, self.meta, images, self.device)
        return probs[np.arange(len(images)), np.asarray(labels, dtype=np.int64)]
