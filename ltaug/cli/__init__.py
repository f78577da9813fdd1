"""The `ltaug` command line: thin shells over library functions, one module per command. Importing it imports no
torch (each command imports the library it shells over when it runs), so `ltaug --help` is fast."""

from __future__ import annotations

# The commands register in pipeline order, which is the order `ltaug --help` lists them in.
# isort: off
from ltaug.cli import data, generator, synthesize, classifier, evaluate, export, tune, run, config  # noqa: F401
# isort: on
from ltaug.cli.app import PROG, app


def main() -> None:
    app(prog_name=PROG)


__all__ = ["app", "main"]
