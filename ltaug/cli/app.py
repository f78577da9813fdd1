"""The typer application every command module registers on (kept apart from the package's __init__, which imports
the command modules, so that no module imports its importer)."""

from __future__ import annotations

import typer

app = typer.Typer(
    name="ltaug",
    help="Long-tailed augmentation with class-conditional diffusion: train a generator with the DiffROP overlap loss, "
    "synthesize class-balanced images, train and evaluate classifiers, sweep the knobs.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)
