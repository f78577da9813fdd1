"""`ltaug synthesize`."""

from __future__ import annotations

from ltaug.cli import app
from ltaug.cli.common import not_built


@app.command("synthesize", help="Sample class-balanced synthetic images from a trained generator (resumable, Ray-sharded).", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def synthesize_cmd() -> None:
    not_built("synthesize", "the synthesis issue")
