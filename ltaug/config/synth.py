"""The `synth` section of a recipe: how synthetic images are sampled (the sampling protocol, shared by `ltaug
synthesize` and by the generator metrics of `ltaug evaluate` and `ltaug run`) and how many are planned."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from ltaug.config.fields import MAX_BATCH, Section, opt
from ltaug.errors import LtaugError

# The aliases (shown and completed); any diffusers scheduler class name is also accepted (ltaug.diffusion.schedulers).
SAMPLERS = ("ddpm", "ddim", "dpm++", "unipc", "euler")
NATIVE_SAMPLERS = ("ddpm", "ddim")  # ltaug's own loops; the others run a diffusers scheduler
VARIANCES = ("large", "small")
AMP_MODES = ("none", "bf16", "fp16")
# Bounds on what a plan allocates (one seed, one manifest line and one PNG per image): far beyond any real use
# (CIFAR-100-LT filled to its head is 50,000 images), refused by name before anything is written.
MAX_PER_CLASS = 1_000_000
MAX_PLAN_IMAGES = 10_000_000


@dataclass
class SynthConfig(Section):
    KEY = "synth"

    # CPU defaults for the embedded MNIST-LT (400 -> 4 per class): fill_to 100 draws 494 tail images; DDIM-10 with
    # guidance on the `small` UNet is ~10k forward-image pairs, about 2 minutes on 2 CPU cores. Published CIFAR-LT
    # settings: sampler ddpm (all 1000 steps), w 0.8 (DDPM) or 1.6 (CBDM), fill_to = the head count.
    per_class: int = opt(0, "new images for every class (0 = use fill_to)", min=0, max=MAX_PER_CLASS,
                         flag="--per-class")
    fill_to: int = opt(100, "top every class up to this many images, real ones included, so the head may get none "
                            "(0 = use per_class)", min=0, max=MAX_PER_CLASS, flag="--fill-to")
    classes: list[str] = opt([], "restrict the plan to these class names (empty = all classes)")
    sampler: str = opt("ddim", "ddpm (ancestral, all T steps), ddim, dpm++ (DPM-Solver++ multistep), unipc, euler, "
                               "or any diffusers scheduler class name (run on the training schedule)",
                       choices=SAMPLERS, open_choices=True, flag="--sampler")
    steps: int = opt(10, "inference steps of every sampler but ddpm (which always takes all T)", min=1,
                     flag="--steps")
    eta: float = opt(0.0, "DDIM noise: 0 deterministic, 1 = ancestral (used by ddim and DDIMScheduler only)",
                     min=0.0, flag="--eta")
    variance: str = opt("large", "DDPM step variance: large (sigma^2 = beta_t, the CIFAR default) or small "
                                 "(the posterior's beta~_t)", choices=VARIANCES, flag="--variance")
    w: float = opt(1.0, "guidance weight w: eps = (1+w) eps(x,c) - w eps(x,null); other libraries' scale s = 1 + w",
                   min=0.0, flag="--w", why="the guidance weight must be >= 0 (w = 0 is plain conditional sampling; "
                                          "other libraries' scale is s = 1 + w)")
    clip_x0: bool = opt(False, "clamp the predicted x0 to [-1, 1] at every step (the published samplers do not)")
    amp: str = opt("none", "autocast of the sampling network: none (fp32, the published protocols), bf16 or fp16 "
                   "(GPU; faster, images differ slightly)", choices=AMP_MODES, flag="--amp")
    batch_size: int = opt(64, "images per forward pass (does not change any image)", min=1, max=MAX_BATCH,
                          flag="--batch-size", why="must be a positive number")
    workers: int = opt(1, "Ray workers (one GPU each where there are GPUs); 1 = sample in this process", min=1,
                       flag="--workers", why="must be a positive number")
    address: str = opt("", "join this Ray cluster (e.g. auto or HOST:6379); empty = local")
    npz: bool = opt(False, "also write synthetic.npz (images, labels, classes, seeds, files)")
    filter_classifier: str = opt("", "keep only images this classifier (a classifier dir, its checkpoint, a "
                                     "timm-format folder or a Hub id) assigns to their own label with probability "
                                     ">= min_confidence; empty = no filter")
    min_confidence: float = opt(0.5, "filter threshold on the classifier's probability of the image's own label",
                                min=0.0, flag="--min-confidence", why="a probability, must be in [0, 1]")
    filter_max_tries: float = opt(20.0, "give up a class after trying this many times its planned count", min=1.0)

    def validate(self) -> None:
        if self.sampler not in NATIVE_SAMPLERS:
            info = self.scheduler_traits()
            if self.clip_x0 and not info.clip:
                raise LtaugError(f"synth.clip_x0: {info.name} has no x0 clipping; set clip_x0 false or use "
                                 "ddpm / ddim")
        if self.per_class > 0 and self.fill_to > 0:
            raise LtaugError(f"synth.per_class ({self.per_class}) and synth.fill_to ({self.fill_to}) are both set; "
                             "set one of them to 0 (on the command line, --per-class / --fill-to pick one)")
        if self.min_confidence > 1:
            raise LtaugError(f"--min-confidence {self.min_confidence}: a probability, must be in [0, 1] (recipe key "
                             "'synth.min_confidence')")

    def scheduler_traits(self):
        """The diffusers scheduler behind a non-native sampler (what settings it uses); LtaugError naming --sampler
        and the valid names when there is none."""
        from ltaug.diffusion.schedulers import traits  # noqa: PLC0415  (imports diffusers: only for these names)

        try:
            return traits(self.sampler)
        except ValueError:
            from ltaug.diffusion.schedulers import valid_names_text  # noqa: PLC0415

            f = next(f for f in dataclasses.fields(self) if f.name == "sampler")
            raise LtaugError(f"{self._where(f, self.sampler)} is not one of {valid_names_text()}") from None

    def identity(self, T: int) -> dict:
        """The sampling settings that decide an image (beside checkpoint, label and seed), with the knobs a sampler
        ignores normalized (DDPM takes all T steps and has no eta; DDIM has no step variance; a diffusers scheduler
        is named by its class, so an alias and its class name compare equal, and has eta / variance only where its
        step uses them), so that two settings that draw the same images compare equal."""
        if self.sampler not in NATIVE_SAMPLERS:
            info = self.scheduler_traits()
            return {"sampler": info.name, "steps": int(self.steps), "eta": float(self.eta) if info.eta else None,
                    "variance": self.variance if info.variance else None, "w": float(self.w),
                    "clip_x0": bool(self.clip_x0), "amp": self.amp}
        ddpm = self.sampler == "ddpm"
        return {"sampler": self.sampler, "steps": T if ddpm else int(self.steps),
                "eta": None if ddpm else float(self.eta), "variance": self.variance if ddpm else None,
                "w": float(self.w), "clip_x0": bool(self.clip_x0), "amp": self.amp}
