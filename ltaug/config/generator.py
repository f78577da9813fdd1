"""The `generator` section of a recipe: the class-conditional diffusion model, its loss and its training
(method.md §1-§3, §5).

The defaults are the CPU recipe of the embedded MNIST-LT (mnist_lt is the default recipe); the CIFAR recipes set
the published DDPM-CIFAR protocol (preset ddpm-cifar, lr 2e-4, warmup 5000, EMA 0.9999, 300k steps).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Union

from ltaug.config.fields import MAX_BATCH, Section, opt, section
from ltaug.errors import LtaugError

LOSSES = ("ddpm", "cbdm", "diffrop", "cbdm+diffrop")
PRESETS = ("ddpm-cifar", "small", "cpu", "tiny")
VARIANTS = ("hinge", "squared_hinge", "triplet", "plain")
DISTANCES = ("mse", "kl")
TAUS = ("constant", "increasing", "decreasing", "kl")
NEGATIVES = ("uniform", "frequency", "head", "all", "more_frequent")
PAIR_WEIGHTS = ("none", "rarity", "count")
STOP_GRADS = ("positive", "negative", "none", "both_sided")
Y_PRIMES = ("frequency", "uniform")
AMP_MODES = ("auto", "none", "bf16", "fp16")
SPACES = ("image", "features")
# Keys that only mean something for pixels, with their defaults: set under space features, they are refused.
IMAGE_ONLY = {"preset": "small", "init_from": "", "hflip": False, "channels_last": False}


@dataclass
class DiffropConfig(Section):
    KEY = "generator.diffrop"

    variant: str = opt("hinge", "per-sample overlap term (method.md §3)", choices=VARIANTS)
    distance: str = opt("mse", "D: mean squared difference of the two eps predictions, or the exact kernel KL",
                        choices=DISTANCES)
    tau: str = opt("constant", "time weighting tau(t)", choices=TAUS)
    tau0: float = opt(1.0, "scale of tau(t)", min=0.0)
    negatives: str = opt("more_frequent", "how the negative label y_neg != y is drawn (more_frequent: uniform over the "
                         "classes with more training images than y; the most frequent class gets no term)",
                         choices=NEGATIVES)
    pair_weight: str = opt("rarity", "weight of each pair: none; rarity = 1 - n_y / n_max (the positive's rarity: "
                           "the most frequent class gets no term); count = min(1, p_j / q_j), so a class j is a "
                           "negative at most as often as it is denoised (p_j its data share, q_j how often it is "
                           "drawn as a negative)", choices=PAIR_WEIGHTS)
    t_min: float = opt(0.0, "the term acts only for t/T in [t_min, t_max)", min=0.0)
    t_max: float = opt(0.7, "the term acts only for t/T in [t_min, t_max)", min=0.0)
    stop_grad: str = opt("negative", "which prediction gets no gradient from the overlap term (negative: only the "
                         "positive moves, so a rare class is never pushed by head images drawn against it)",
                         choices=STOP_GRADS)
    gamma: float = opt(0.1, "weight of the overlap term: L = L_DM + gamma * L_overlap", min=0.0)
    margin: Union[float, str] = opt(0.02, "margin m in the units of D, or 'auto' (calibrated on the model)")
    auto_quantile: float = opt(0.9, "margin auto: the quantile of D taken as m", min=0.0)
    auto_steps: int = opt(200, "margin auto: D is measured (no overlap loss) over the second half of the first "
                          "auto_steps steps", min=2)
    active_only: bool = opt(True, "while fewer than 2/3 of the pairs are still penalized, recompute the negative "
                            "branch with gradient only for those (same loss, fewer passes); false = always the plain "
                            "two-pass step")

    def validate(self) -> None:
        if isinstance(self.margin, str):
            if self.margin != "auto":
                raise LtaugError(f"generator.diffrop.margin '{self.margin}': expected a number >= 0 or 'auto'")
        elif not self.margin >= 0:  # also refuses NaN
            raise LtaugError(f"generator.diffrop.margin {self.margin}: must be >= 0 (or 'auto')")
        if not 0.0 <= self.t_min < self.t_max <= 1.0:
            raise LtaugError(f"generator.diffrop.t_min {self.t_min} / t_max {self.t_max}: need 0 <= t_min < t_max "
                             "<= 1 (fractions of T)")
        if not 0.0 <= self.auto_quantile <= 1.0:
            raise LtaugError(f"generator.diffrop.auto_quantile {self.auto_quantile}: must be in [0, 1]")


@dataclass
class CbdmConfig(Section):
    KEY = "generator.cbdm"

    tau: float = opt(1.0, "weight of the CBDM regularizer (its 1/4 commitment weight is fixed)", min=0.0)
    y_prime: str = opt("frequency", "how y' is drawn: frequency (training from scratch) or uniform (fine-tuning)",
                       choices=Y_PRIMES)


@dataclass
class MlpConfig(Section):
    KEY = "generator.mlp"

    width: int = opt(256, "hidden width of the eps-network for feature vectors (keep it >= the feature size: a "
                     "narrower one is a bottleneck for eps)", min=8)
    depth: int = opt(3, "residual blocks (each: norm, SiLU, linear, + time and class embedding, norm, SiLU, linear)",
                     min=1)
    dropout: float = opt(0.0, "dropout inside each block", min=0.0)


@dataclass
class GeneratorConfig(Section):
    KEY = "generator"

    space: str = opt("image", "what the diffusion model generates: image (pixels, a UNet) or features (a backbone's "
                     "feature vectors, an MLP: the `features` section)", choices=SPACES)
    preset: str = opt("small", "UNet size: ddpm-cifar (35.75M), small (CPU, 2.7M), cpu (1.1M, 0.6x small's step), "
                      "tiny (tests)", choices=PRESETS)
    init_from: str = opt("", "start from a pretrained diffusers UNet2DModel: a folder (config.json + "
                             "diffusion_pytorch_model.safetensors, or a pipeline folder with unet/) or a Hub id; its "
                             "architecture replaces the preset, a zero class embedding (classes + null) is added; "
                             "empty = train from scratch", flag="--init-from")
    loss: str = opt("ddpm", "training loss (ddpm: the evidence so far, docs/results.md)", choices=LOSSES)
    steps: int = opt(600, "optimizer steps", min=1)
    batch_size: int = opt(32, "images per optimizer step (all ranks together)", min=1,
                         max=MAX_BATCH)
    lr: float = opt(1e-3, "Adam learning rate (2e-4 for ddpm-cifar)", min=0.0)
    T: int = opt(1000, "diffusion steps", min=2)
    schedule: str = opt("linear", "beta schedule: linear (1e-4 to 0.02) or cosine", choices=("linear", "cosine"))
    p_uncond: float = opt(0.1, "probability of dropping the label (null class) for classifier-free guidance", min=0.0)
    label_dropout: str = opt("sample", "drop labels per sample, or for the whole batch at once (CBDM's code)",
                             choices=("sample", "batch"))
    class_power: float = opt(1.0, "batches draw class c with probability proportional to n_c^class_power: 1 = the "
                             "data's own frequencies (plain shuffling), 0.5 = square root, 0 = class-balanced",
                             min=0.0)
    hflip: bool = opt(False, "random horizontal flips (true for CIFAR; wrong for digits)")
    ema_decay: float = opt(0.999, "EMA decay; the effective decay ramps up as min(decay, (1+s)/(10+s))", min=0.0)
    warmup: int = opt(50, "linear learning-rate warmup steps", min=0)
    grad_clip: float = opt(1.0, "clip the gradient norm to this (0 = off)", min=0.0)
    amp: str = opt("auto", "autocast: auto (bf16 on GPU, none on CPU), none, bf16, fp16 (GPU)", choices=AMP_MODES)
    channels_last: bool = opt(False, "channels_last memory format (faster on GPU)")
    compile: bool = opt(False, "torch.compile the network (slower on CPU)")
    accum: int = opt(1, "gradient accumulation: micro-batches per optimizer step", min=1)
    log_every: int = opt(10, "steps between metrics.jsonl records", min=1)
    grid_every: int = opt(200, "steps between class grid PNGs (0 = only at the end)", min=0)
    grid_cols: int = opt(8, "samples per class in the grid", min=1, max=256)
    grid_steps: int = opt(25, "DDIM steps for the grid", min=1)
    grid_w: float = opt(1.0, "guidance w for the grid ((1+w) eps_c - w eps_null)", min=0.0)
    ckpt_every: int = opt(200, "steps between checkpoints (a checkpoint is always written at the end)", min=1)
    keep_ckpts: int = opt(2, "checkpoints kept (the newest)", min=1)
    diffrop: DiffropConfig = section(DiffropConfig, "the DiffROP overlap loss (loss: diffrop or cbdm+diffrop)")
    cbdm: CbdmConfig = section(CbdmConfig, "the CBDM regularizer (loss: cbdm or cbdm+diffrop)")
    mlp: MlpConfig = section(MlpConfig, "the eps-network of the features space (space: features)")

    def validate(self) -> None:
        if not self.lr > 0 or self.lr == float("inf"):
            raise LtaugError(f"generator.lr {self.lr}: must be a positive finite number")
        if not 0.0 <= self.p_uncond < 1.0:
            raise LtaugError(f"generator.p_uncond {self.p_uncond}: must be in [0, 1)")
        if self.ema_decay >= 1.0:
            raise LtaugError(f"generator.ema_decay {self.ema_decay}: must be < 1")
        if self.class_power > 1.0:
            raise LtaugError(f"generator.class_power {self.class_power}: must be in [0, 1] (1 = the data's own "
                             "class frequencies, 0 = class-balanced batches)")
        if self.space == "features":
            for key, default in IMAGE_ONLY.items():
                if getattr(self, key) != default:
                    raise LtaugError(f"generator.{key} {getattr(self, key)!r} is an image-space option, but "
                                     "generator.space is features (an MLP on feature vectors: generator.mlp); "
                                     f"remove generator.{key} or set generator.space image")
        if self.batch_size % self.accum:
            raise LtaugError(f"generator.batch_size {self.batch_size} must be divisible by generator.accum "
                             f"{self.accum}")

    @property
    def uses_overlap(self) -> bool:
        return "diffrop" in self.loss

    @property
    def margin_auto(self) -> bool:
        return self.uses_overlap and self.diffrop.margin == "auto"
