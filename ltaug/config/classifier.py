"""The `classifier` section of a recipe: a timm classifier on real plus synthetic data (method.md §6).

The defaults are the CPU default (the embedded MNIST-LT in a minute or two per run). The published CIFAR-LT recipe
(method.md §6) is: model cifar_resnet32, epochs 200, batch_size 128, lr 0.1, warmup_epochs 5, weight_decay 2e-4,
milestones [0.8, 0.9] with decay [0.01, 0.0001] (epochs 160 and 180), random crop (padding 4) and flip.
"""

from __future__ import annotations

from dataclasses import dataclass

from ltaug.config.fields import MAX_BATCH, Section, opt
from ltaug.errors import LtaugError

LOSSES = ("ce", "cb", "balanced_softmax", "logit_adjust", "ldam", "ldam_drw")
SAMPLERS = ("none", "class_balanced", "sqrt")


@dataclass
class ClassifierConfig(Section):
    KEY = "classifier"

    model: str = opt("cifar_resnet8", "any timm model name; ltaug registers cifar_resnet8/20/32/44/56/110 "
                                      "(cifar_resnet32 is the published CIFAR-LT backbone)")
    pretrained: bool = opt(False, "load timm's pretrained weights (needs the Hugging Face hub)")
    init: str = opt("", "start from a trained classifier: a classifier folder (checkpoint.pt or timm's config.json + "
                        "model.safetensors) or a Hub id; same model, a fresh head when its classes differ",
                    flag="--init")
    epochs: int = opt(10, "training epochs (the published CIFAR-LT recipe: 200)", min=1)
    batch_size: int = opt(64, "images per step (the published CIFAR-LT recipe: 128)", min=1,
                         max=MAX_BATCH)
    lr: float = opt(0.1, "SGD learning rate after warmup", min=0.0)
    momentum: float = opt(0.9, "SGD momentum", min=0.0)
    weight_decay: float = opt(2e-4, "SGD weight decay", min=0.0)
    schedule: str = opt("step", "step: warmup then x decay[i] at milestones[i]; cosine: warmup then cosine to 0",
                        choices=("step", "cosine"))
    warmup_epochs: float = opt(1.0, "linear warmup from 0 to lr over this many epochs (published: 5)", min=0.0)
    milestones: list[float] = opt([0.8, 0.9], "step schedule: fractions of the epochs where lr becomes lr x decay[i] "
                                              "(0.8, 0.9 = epochs 160 and 180 of 200)")
    decay: list[float] = opt([0.01, 0.0001], "step schedule: lr factor from each milestone on")
    loss: str = opt("ce", "ce, cb (class-balanced re-weighting), balanced_softmax, logit_adjust, ldam, ldam_drw",
                    choices=LOSSES)
    cb_beta: float = opt(0.9999, "class-balanced weights 1 / effective number (1 - beta^n) / (1 - beta)", min=0.0)
    la_tau: float = opt(1.0, "logit_adjust: logits + tau * log prior while training (1 = balanced softmax)", min=0.0)
    ldam_max_m: float = opt(0.5, "LDAM: largest margin (class c gets max_m * (n_min / n_c)^(1/4))", min=0.0)
    ldam_s: float = opt(30.0, "LDAM: logit scale of the cosine head (ltaug's CIFAR ResNets)", min=0.0)
    drw: bool = opt(False, "deferred re-weighting: class-balanced weights from drw_start on (ldam_drw sets it)")
    drw_start: float = opt(0.8, "fraction of the epochs after which DRW weights apply (160 of 200)", min=0.0)
    sampler: str = opt("none", "none (shuffle), class_balanced (p ~ 1/n_c) or sqrt (p ~ 1/sqrt(n_c))",
                       choices=SAMPLERS)
    synthetic_ratio: float = opt(0.0, "synthetic_mode ratio: synthetic images per real image, per class, capped by "
                                      "what exists (0 = real only)", min=0.0)
    synthetic_mode: str = opt("fill", "fill: top every class up to the head class's count; ratio: synthetic_ratio "
                                      "x real per class (only used when synthetic sets are given)",
                              choices=("ratio", "fill"))
    synthetic_weight: float = opt(1.0, "loss weight of a synthetic image (a real one has 1)", min=0.0)
    crop_padding: int = opt(4, "random crop after zero padding by this many pixels (0 = no crop)", min=0)
    flip: bool = opt(True, "random horizontal flip (turn off for digits)")
    randaugment: str = opt("", "timm RandAugment config, e.g. rand-m9-n2-mstd0.5 (empty = off)")
    mixup_alpha: float = opt(0.0, "mixup Beta(alpha, alpha) (0 = off)", min=0.0)
    amp: bool = opt(True, "bf16 autocast on GPU (ignored on CPU)")
    eval_every: int = opt(0, "evaluate on the validation split every N epochs (what sweeps and ASHA compare; 0 = "
                          "at the end only); the test set is read once, at the end", min=0)

    def validate(self) -> None:
        if self.init and self.pretrained:
            raise LtaugError(f"--init {self.init} and --pretrained: choose one (--init loads all the weights, "
                             "--pretrained timm's)")
        if len(self.milestones) != len(self.decay):
            raise LtaugError(f"recipe keys 'classifier.milestones' ({self.milestones}) and 'classifier.decay' "
                             f"({self.decay}) must have the same length")
        if any(not 0.0 <= m <= 1.0 for m in self.milestones) or list(self.milestones) != sorted(self.milestones):
            raise LtaugError(f"recipe key 'classifier.milestones': {self.milestones} must be increasing fractions "
                             f"of the epochs in [0, 1], e.g. [0.8, 0.9]")
        if self.cb_beta >= 1.0:
            raise LtaugError(f"recipe key 'classifier.cb_beta': {self.cb_beta} must be < 1 (e.g. 0.9999)")
        if self.drw_start > 1.0:
            raise LtaugError(f"recipe key 'classifier.drw_start': {self.drw_start} must be a fraction in [0, 1]")
