"""The `synth` section of a recipe (torch-free). Owned by the synthesis stage."""

from __future__ import annotations

from dataclasses import dataclass

from ltaug.config_fields import opt


@dataclass
class SynthConfig:
    per_class: int = opt(0, "new images for every class (0 = use fill_to)", min=0)
    fill_to: int = opt(0, "top every class up to this many images, real ones included (0 = use per_class)", min=0)
    sampler: str = opt("ddim", "ddpm (all T steps, ancestral) or ddim", choices=("ddpm", "ddim"))
    steps: int = opt(50, "DDIM steps (ignored by ddpm)", min=1)
    w: float = opt(0.0, "guidance weight w: eps = (1+w) eps(x,c) - w eps(x,null); scale s = 1 + w", min=0.0)
