"""diffusers schedulers built from ltaug's training schedule: the one place that maps a `NoiseSchedule` (and the
sampling settings) onto a diffusers scheduler, for the exported pipeline's `scheduler/scheduler_config.json` and for
the samplers beyond ltaug's own DDPM / DDIM loops.

The betas are passed as `trained_betas`, so any T and either beta schedule (linear, cosine) come through exactly;
the prediction type is epsilon and no x0 clipping (the published samplers do not clip). Known equivalences, checked
in the tests: `DDPMScheduler(variance_type="fixed_large")` is ltaug's DDPM with sigma_t^2 = beta_t ("fixed_small"
its beta~_t), `DDIMScheduler(timestep_spacing="trailing")` its DDIM (ltaug visits T-1 first: trailing spacing).
"""

from __future__ import annotations

import functools
import inspect
from dataclasses import dataclass
from typing import Any

# Short names accepted by `synth.sampler` besides any diffusers scheduler class name.
ALIASES = {
    "ddpm": "DDPMScheduler",
    "ddim": "DDIMScheduler",
    "dpm++": "DPMSolverMultistepScheduler",
    "unipc": "UniPCMultistepScheduler",
    "euler": "EulerDiscreteScheduler",
}
VARIANCE_TYPES = {"large": "fixed_large", "small": "fixed_small"}
# `synth.sampler` names that run ltaug's own loops (sampler.py), bit for bit what they always were; every other name
# (the other aliases, any class name, "DDIMScheduler" too) runs the diffusers scheduler.
NATIVE = ("ddpm", "ddim")


@functools.lru_cache(maxsize=None)
def class_names() -> tuple[str, ...]:
    """The diffusers scheduler classes that can sample an eps-prediction DDPM model on its exact schedule: those
    diffusers lists as compatible with `DDPMScheduler` (KarrasDiffusionSchedulers) that take `trained_betas` and
    whose optional dependency is installed (DPMSolverSDEScheduler needs torchsde)."""
    import diffusers  # noqa: PLC0415  (diffusers is heavy; only the samplers and the export need it)
    from diffusers.schedulers.scheduling_utils import KarrasDiffusionSchedulers  # noqa: PLC0415

    names = []
    for member in KarrasDiffusionSchedulers:
        try:
            cls = getattr(diffusers, member.name)
        except (ImportError, AttributeError):
            continue
        if "trained_betas" in _init_keys(cls):
            names.append(member.name)
    return tuple(sorted(names))


def valid_names_text() -> str:
    return f"{', '.join(ALIASES)} or a diffusers scheduler class name ({', '.join(class_names())})"


def scheduler_class(name: str) -> type:
    """The diffusers scheduler class for a short name (ALIASES) or a diffusers class name; ValueError otherwise."""
    import diffusers  # noqa: PLC0415

    cls_name = ALIASES.get(name, name)
    if cls_name not in class_names():
        raise ValueError(f"unknown sampler '{name}': use one of {valid_names_text()}")
    return getattr(diffusers, cls_name)


@dataclass(frozen=True)
class Traits:
    """What of the sampling settings a scheduler class uses (so that `synth.identity` names only those)."""

    name: str        # the class name (the alias resolved)
    eta: bool        # step() takes eta (the DDIM family)
    variance: bool   # a fixed step variance (large / small) decides the noise (the DDPM family)
    clip: bool       # has clip_sample (x0 clamped to [-1, 1])
    generator: bool  # step() may draw noise: it gets the per-image generators


@functools.lru_cache(maxsize=None)
def traits(name: str) -> Traits:
    cls = scheduler_class(name)
    init = inspect.signature(cls.__init__).parameters
    step = inspect.signature(cls.step).parameters
    variance = "variance_type" in init and init["variance_type"].default in VARIANCE_TYPES.values()
    return Traits(cls.__name__, "eta" in step, variance, "clip_sample" in init, "generator" in step)


def scheduler_config(schedule, *, variance: str = "large") -> dict[str, Any]:
    """The training schedule as diffusers scheduler config keys (shared by every scheduler class)."""
    return {
        "num_train_timesteps": int(schedule.T),
        "trained_betas": [float(b) for b in schedule.betas.tolist()],
        "beta_schedule": "linear",  # ignored when trained_betas is given; kept for readers of the config
        "prediction_type": "epsilon",
        "variance_type": VARIANCE_TYPES[variance],
        "clip_sample": False,
        "timestep_spacing": "trailing",
        "set_alpha_to_one": True,  # the last DDIM step lands on the clean image (alpha_bar_{-1} = 1)
        "steps_offset": 0,
    }


def make_scheduler(schedule, name: str = "ddpm", *, variance: str = "large", **overrides: Any):
    """A diffusers scheduler of class `name` (alias or class name) on the training schedule. Keys a class does not
    know are dropped (so every class can be built from one config)."""
    cls = scheduler_class(name)
    cfg = {**scheduler_config(schedule, variance=variance), **overrides}
    known = set(_init_keys(cls))
    return cls.from_config({k: v for k, v in cfg.items() if k in known})


def _init_keys(cls: type) -> list[str]:
    return [p for p in inspect.signature(cls.__init__).parameters if p != "self"]
