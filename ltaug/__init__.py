"""ltaug: long-tailed augmentation with class-conditional diffusion (DDPM, CBDM, DiffROP)."""

__version__ = "0.1.0"

from ltaug import _timm_hook  # noqa: E402  (after __version__, which the modules it registers read)

_timm_hook.install()  # ltaug's CIFAR ResNets join timm's registry once timm is imported (torch-free here)


def __getattr__(name: str):
    """`from ltaug import ClassConditionalPipeline` (the diffusers pipeline of an exported generator) imports torch
    and diffusers only when that name is asked for, so `import ltaug` (and `ltaug --help`) stays torch-free."""
    if name == "ClassConditionalPipeline":
        from ltaug.diffusion.pipeline import ClassConditionalPipeline  # noqa: PLC0415  (lazy: see above)

        return ClassConditionalPipeline
    raise AttributeError(f"module 'ltaug' has no attribute {name!r}")
