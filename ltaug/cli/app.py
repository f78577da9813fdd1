"""The typer application every command module registers on (kept apart from the package's __init__, which imports
the command modules, so that no module imports its importer): `--version`, shell completion
(`--install-completion`, `--show-completion`: typer's own), and the commands' help."""

from __future__ import annotations

from typing import Annotated

import typer

from ltaug import __version__

PROG = "ltaug"  # the name completion scripts and usage lines use, also under `python -m ltaug`

app = typer.Typer(
    name=PROG,
    help="Long-tailed augmentation with class-conditional diffusion: train a generator with the DiffROP overlap loss, "
    "synthesize class-balanced images, train and evaluate classifiers, sweep the knobs.",
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"{PROG} {__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: Annotated[bool, typer.Option("--version", callback=_print_version, is_eager=True,
                                                help="print the version and exit")] = False) -> None:
    pass  # the options before any command; no docstring, so that the app's help above stays its help
