"""Synthesis: class-balanced samples of a trained generator, written resumably to class folders + manifest.

`from ltaug.synth import synthesize, generate_images, make_plan` works, but importing this package (which
`ltaug.config` does, for the `synth` recipe section) stays torch-free: the heavy parts load on first use.
"""

from __future__ import annotations

from typing import Any

__all__ = ["synthesize", "synthesize_from_config", "generate_images", "SynthResult", "make_plan", "Plan",
           "plan_table", "image_seed"]

_WHERE = {"synthesize": "ltaug.synth.run", "synthesize_from_config": "ltaug.synth.run",
          "generate_images": "ltaug.synth.run", "SynthResult": "ltaug.synth.run", "make_plan": "ltaug.synth.plan",
          "Plan": "ltaug.synth.plan", "plan_table": "ltaug.synth.plan", "image_seed": "ltaug.synth.plan"}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        import importlib

        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module 'ltaug.synth' has no attribute {name!r}")
