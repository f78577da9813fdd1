"""`ltaug train-generator`."""

from __future__ import annotations

from ltaug.cli import app
from ltaug.cli.common import not_built


@app.command("train-generator", help="Train the class-conditional diffusion model (DDPM, CBDM, DiffROP) on the long-tailed set.", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def train_generator_cmd() -> None:
    not_built("train-generator", "the generator issue")
