"""ltaug: long-tailed augmentation with class-conditional diffusion (DDPM, CBDM, DiffROP)."""

__version__ = "0.1.0"

from ltaug import _timm_hook  # noqa: E402  (after __version__, which the modules it registers read)

_timm_hook.install()  # ltaug's CIFAR ResNets join timm's registry once timm is imported (torch-free here)
