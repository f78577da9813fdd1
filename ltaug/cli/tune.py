"""`ltaug tune`."""

from __future__ import annotations

from ltaug.cli import app
from ltaug.cli.common import not_built


@app.command("tune", help="Sweep recipe keys (margin, tau schedule, synthetic ratio, ...) with Ray Tune.", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def tune_cmd() -> None:
    not_built("tune", "the pipeline issue")
