"""The `ltaug` command line: thin shells over library functions. Heavy imports live inside the commands."""

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

from ltaug.cli import classifier as _classifier  # noqa: E402,F401
from ltaug.cli import data as _data  # noqa: E402,F401  (each module registers its commands on `app`)
from ltaug.cli import evaluate as _evaluate  # noqa: E402,F401
from ltaug.cli import generator as _generator  # noqa: E402,F401
from ltaug.cli import run as _run  # noqa: E402,F401
from ltaug.cli import synthesize as _synthesize  # noqa: E402,F401
from ltaug.cli import tune as _tune  # noqa: E402,F401


def main() -> None:
    app()
