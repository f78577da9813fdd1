"""`ltaug train-classifier`."""

from __future__ import annotations

from ltaug.cli import app
from ltaug.cli.common import not_built


@app.command("train-classifier", help="Train a timm classifier on real plus synthetic data; accuracy on many/medium/few classes.", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def train_classifier_cmd() -> None:
    not_built("train-classifier", "the classifier issue")
