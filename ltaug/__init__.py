"""ltaug: long-tailed augmentation with class-conditional diffusion (DDPM, CBDM, DiffROP)."""

__version__ = "0.1.0"
