"""`ltaug run`."""

from __future__ import annotations

from ltaug.cli import app
from ltaug.cli.common import not_built


@app.command("run", help="The whole pipeline in one run directory", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def run_cmd() -> None:
    not_built("run", " generator, synthesis, classifiers, evaluation, report.:the pipeline issue")
