"""`ltaug evaluate`."""

from __future__ import annotations

from ltaug.cli import app
from ltaug.cli.common import not_built


@app.command("evaluate", help="FID, KID, IS, precision/recall per class group, and overlap diagnostics.", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def evaluate_cmd() -> None:
    not_built("evaluate", "the evaluation issue")
