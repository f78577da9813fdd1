"""CIFAR-style ResNets registered in timm's model registry, and `build_model` for any timm name.

timm's ResNets have an ImageNet stem (7x7 stride-2 conv + max-pool) that throws away most of a 32x32 image, so the
long-tail literature uses the CIFAR ResNet of He et al. 2016 (method.md §6): a 3x3 stem, three stages of `n` basic
blocks with 16 / 32 / 64 channels (stride 2 between stages), global average pooling, one linear layer. Depth is
6n + 2: ResNet-32 is n = 5, about 0.46M parameters. Shortcuts that change shape are "option A" (subsample and pad
the channels with zeros, no parameters), as in the paper and the LDAM-DRW reference code.

Importing this module registers, via `@register_model`, so that `timm.create_model(name, num_classes=C, in_chans=K)`
works: `cifar_resnet8/20/32/44/56/110` and `test_cifar_resnet` (a tiny one for tests, 1 block per stage, 4/8/16
channels). `normed_head=True` gives the cosine classifier that LDAM expects (logits in [-1, 1], scaled by the loss).
"""

from __future__ import annotations

import difflib

import timm
import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.models import build_model_with_cfg, checkpoint_seq, register_model

from ltaug.errors import LtaugError


# timm's pretrained_cfg of a fresh model. A trained classifier's folder overrides input_size, mean and std with what
# its training used (ltaug.classify.timm_format); crop_pct 1 and bicubic are what ltaug's own resizing does.
def _cfg(**kw) -> dict:
    return {"input_size": (3, 32, 32), "num_classes": 10, "pool_size": None, "crop_pct": 1.0,
            "interpolation": "bicubic", "first_conv": "stem.0", "classifier": "fc", **kw}


def _take_indices(n: int, indices) -> tuple[list[int], int]:
    """timm's feature_take_indices rule (not exported by every timm 1.0): the last `indices` taps if int, all if
    None, else those listed (negative from the end); returns (taps, the largest)."""
    if indices is None:
        indices = n
    taps = list(range(n - indices, n)) if isinstance(indices, int) else [i % n for i in indices]
    if not taps or not all(0 <= i < n for i in taps):
        raise ValueError(f"feature indices {indices} out of range for {n} taps")
    return taps, max(taps)


class _BasicBlock(nn.Module):
    """3x3 conv - BN - ReLU - 3x3 conv - BN, plus the shortcut, then ReLU."""

    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.stride = stride
        self.pad = c_out - c_in  # option A: zero channels, no parameters

    def shortcut(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride != 1:
            x = x[:, :, :: self.stride, :: self.stride]
        if self.pad:
            x = F.pad(x, (0, 0, 0, 0, self.pad // 2, self.pad - self.pad // 2))
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class NormedLinear(nn.Module):
    """Cosine classifier: logits = <x / |x|, w_c / |w_c|> in [-1, 1] (LDAM's head; its loss multiplies by s)."""

    def __init__(self, in_features: int, out_features: int):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.weight = nn.Parameter(torch.empty(out_features, in_features).uniform_(-1, 1).renorm_(2, 0, 1e-5).mul_(1e5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(x, dim=1) @ F.normalize(self.weight, dim=1).t()


class CifarResNet(nn.Module):
    """CIFAR ResNet-(6n+2). Input [N, in_chans, H, W] float (normalized), output logits [N, num_classes]."""

    def __init__(self, blocks_per_stage: int = 5, widths: tuple[int, ...] = (16, 32, 64), num_classes: int = 10,
                 in_chans: int = 3, normed_head: bool = False, drop_rate: float = 0.0):
        super().__init__()
        self.num_classes, self.in_chans, self.normed_head = num_classes, in_chans, normed_head
        self.num_features = self.head_hidden_size = widths[-1]
        self.drop_rate = drop_rate
        self.grad_checkpointing = False
        self.stem = nn.Sequential(nn.Conv2d(in_chans, widths[0], 3, 1, 1, bias=False), nn.BatchNorm2d(widths[0]),
                                  nn.ReLU(inplace=True))
        stages, c_in = [], widths[0]
        for i, w in enumerate(widths):
            layers = []
            for j in range(blocks_per_stage):
                layers.append(_BasicBlock(c_in, w, 2 if (i > 0 and j == 0) else 1))
                c_in = w
            stages.append(nn.Sequential(*layers))
        self.stages = nn.Sequential(*stages)
        self.fc = self._head(num_classes)
        # what timm's features_only wrapper reads (module names as seen after flattening the Sequentials)
        self.feature_info = [dict(num_chs=widths[0], reduction=1, module="stem.2")] + [
            dict(num_chs=w, reduction=2 ** i, module=f"stages.{i}") for i, w in enumerate(widths)]
        for m in self.modules():  # He init for convs, as the reference implementations
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight)

    def _head(self, num_classes: int) -> nn.Module:
        if num_classes <= 0:
            return nn.Identity()
        return NormedLinear(self.num_features, num_classes) if self.normed_head else nn.Linear(self.num_features,
                                                                                                  num_classes)

    # timm's model interface (as timm.models.resnet), so that timm's train.py (--grad-checkpointing, layer-wise
    # decay), its feature tools and users can treat it like any timm model
    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict:
        """Parameter groups for layer-wise decay: the stem, then one group per stage (coarse) or per block."""
        return dict(stem=r"^stem", blocks=r"^stages\.(\d+)" if coarse else r"^stages\.(\d+)\.(\d+)")

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute each block's activations in the backward pass instead of storing them."""
        self.grad_checkpointing = enable

    @torch.jit.ignore
    def get_classifier(self, name_only: bool = False):
        return "fc" if name_only else self.fc

    def reset_classifier(self, num_classes: int, global_pool: str = "avg") -> None:
        self.num_classes = num_classes
        self.fc = self._head(num_classes)

    def _stage(self, i: int, x: torch.Tensor) -> torch.Tensor:
        stage = self.stages[i]
        if self.grad_checkpointing and not torch.jit.is_scripting():
            return checkpoint_seq(stage, x)  # per block
        return stage(x)

    def forward_intermediates(self, x: torch.Tensor, indices=None, norm: bool = False, stop_early: bool = False,
                              output_fmt: str = "NCHW", intermediates_only: bool = False):
        """timm's feature API: (final features, [the taps asked for]) or the taps alone. The taps are those of
        feature_info: 0 the stem, 1..S the stages; indices: the last n if int, all if None, else those listed."""
        if output_fmt != "NCHW":
            raise ValueError("output_fmt must be 'NCHW'")
        taps, max_index = _take_indices(len(self.stages) + 1, indices)
        intermediates = []
        x = self.stem(x)
        if 0 in taps:
            intermediates.append(x)
        last = max_index if stop_early else len(self.stages)
        for i in range(last):
            x = self._stage(i, x)
            if i + 1 in taps:
                intermediates.append(x)
        if intermediates_only:
            return intermediates
        return x, intermediates

    def prune_intermediate_layers(self, indices=1, prune_norm: bool = False, prune_head: bool = True) -> list:
        """Drop the stages after the last tap asked for (and the head); returns the taps kept."""
        taps, max_index = _take_indices(len(self.stages) + 1, indices)
        for i in range(max_index, len(self.stages)):
            self.stages[i] = nn.Sequential()
        if max_index < len(self.stages):
            self.num_features = self.head_hidden_size = self.feature_info[max_index]["num_chs"]
        if prune_head or max_index < len(self.stages):
            self.reset_classifier(0)
        return taps

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for i in range(len(self.stages)):
            x = self._stage(i, x)
        return x

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = x.mean(dim=(2, 3))
        if self.drop_rate > 0:
            x = F.dropout(x, self.drop_rate, self.training)
        return x if pre_logits else self.fc(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


# The keyword arguments ltaug's CIFAR ResNets take (plus timm's features_only / out_indices); any other timm option
# (drop_path_rate, global_pool, img_size, ...) is refused rather than dropped, so a model never silently differs
# from what was asked.
SUPPORTED_KWARGS = ("num_classes", "in_chans", "normed_head", "drop_rate", "features_only", "out_indices")
_TIMM_PLUMBING = ("pretrained_cfg", "pretrained_cfg_overlay", "cache_dir", "pretrained_model_args")
_WEIGHT_SOURCES = ("file", "url", "hf_hub_id", "state_dict")


def _create(n: int, widths: tuple[int, ...], pretrained: bool, name: str, **kwargs) -> CifarResNet:
    unknown = sorted(k for k in kwargs if k not in SUPPORTED_KWARGS + _TIMM_PLUMBING)
    if unknown:
        raise LtaugError(f"{name}: timm option(s) {', '.join(unknown)} not supported by ltaug's CIFAR ResNets "
                         f"(supported: {', '.join(SUPPORTED_KWARGS)})")
    if kwargs.get("features_only") and kwargs.get("normed_head"):
        kwargs.pop("normed_head")  # a feature extractor has no head
    sources = {**(kwargs.get("pretrained_cfg") or {}), **(kwargs.get("pretrained_cfg_overlay") or {})}
    if pretrained and not any(sources.get(k) for k in _WEIGHT_SOURCES):
        raise LtaugError(f"--pretrained: {name} has no pretrained weights (it is trained from scratch on 32x32 "
                         f"images); drop --pretrained, pick a timm model that has weights, or load a trained "
                         f"classifier folder with timm.create_model('local-dir:RUN/classifier-NAME', pretrained=True)")
    cfg = kwargs.pop("pretrained_cfg", None) or _cfg(input_size=(kwargs.get("in_chans", 3), 32, 32))
    return build_model_with_cfg(CifarResNet, name, pretrained, pretrained_cfg=cfg,
                                feature_cfg=dict(flatten_sequential=True, out_indices=(0, 1, 2, 3)),
                                blocks_per_stage=n, widths=widths, **kwargs)


@register_model
def cifar_resnet8(pretrained: bool = False, **kwargs) -> CifarResNet:
    """CIFAR ResNet-8 (1 block per stage, 16/32/64 channels, ~78k parameters): fast CPU default."""
    return _create(1, (16, 32, 64), pretrained, "cifar_resnet8", **kwargs)


@register_model
def cifar_resnet20(pretrained: bool = False, **kwargs) -> CifarResNet:
    """CIFAR ResNet-20 (3 blocks per stage, ~0.27M parameters)."""
    return _create(3, (16, 32, 64), pretrained, "cifar_resnet20", **kwargs)


@register_model
def cifar_resnet32(pretrained: bool = False, **kwargs) -> CifarResNet:
    """CIFAR ResNet-32 (5 blocks per stage, 16/32/64 channels, ~0.46M parameters): the long-tail standard."""
    return _create(5, (16, 32, 64), pretrained, "cifar_resnet32", **kwargs)


@register_model
def cifar_resnet44(pretrained: bool = False, **kwargs) -> CifarResNet:
    """CIFAR ResNet-44 (7 blocks per stage)."""
    return _create(7, (16, 32, 64), pretrained, "cifar_resnet44", **kwargs)


@register_model
def cifar_resnet56(pretrained: bool = False, **kwargs) -> CifarResNet:
    """CIFAR ResNet-56 (9 blocks per stage)."""
    return _create(9, (16, 32, 64), pretrained, "cifar_resnet56", **kwargs)


@register_model
def cifar_resnet110(pretrained: bool = False, **kwargs) -> CifarResNet:
    """CIFAR ResNet-110 (18 blocks per stage)."""
    return _create(18, (16, 32, 64), pretrained, "cifar_resnet110", **kwargs)


@register_model
def test_cifar_resnet(pretrained: bool = False, **kwargs) -> CifarResNet:
    """A tiny CIFAR ResNet for tests (1 block per stage, 4/8/16 channels)."""
    return _create(1, (4, 8, 16), pretrained, "test_cifar_resnet", **kwargs)


LTAUG_MODELS = ("cifar_resnet8", "cifar_resnet20", "cifar_resnet32", "cifar_resnet44", "cifar_resnet56",
                "cifar_resnet110", "test_cifar_resnet")


def check_model_name(name: str) -> None:
    """Raise LtaugError naming close matches when `name` is not a timm model."""
    if timm.is_model(name):
        return
    close = difflib.get_close_matches(name, timm.list_models(), n=6, cutoff=0.6)
    hint = (f"close matches: {', '.join(close)}" if close
            else "see `timm.list_models()` or `timm.list_models('*resnet*')`")
    raise LtaugError(f"--model '{name}': not a timm model; {hint} (ltaug registers "
                     f"{', '.join(LTAUG_MODELS[:3])}, ...)")


def build_model(name: str, num_classes: int, in_chans: int, *, pretrained: bool = False,
                normed_head: bool = False) -> tuple[nn.Module, bool]:
    """`timm.create_model(name, num_classes, in_chans)`; returns (model, whether its head is the cosine one).

    `normed_head` is honoured by ltaug's CIFAR ResNets only (other timm models keep their linear head, and LDAM then
    works on raw logits). Pretrained weights are fetched only when asked; offline that is a clear LtaugError.
    """
    check_model_name(name)
    kwargs = {"num_classes": num_classes, "in_chans": in_chans}
    ours = name in LTAUG_MODELS
    if ours:
        kwargs["normed_head"] = normed_head
    try:
        model = timm.create_model(name, pretrained=pretrained, **kwargs)
    except LtaugError:
        raise
    except Exception as e:  # noqa: BLE001 - hub/network errors come in many types
        if not pretrained:
            raise
        raise LtaugError(f"--pretrained: could not fetch pretrained weights for '{name}' ({type(e).__name__}: "
                         f"{str(e)[:200]}); this needs network access to the Hugging Face hub (unset HF_HUB_OFFLINE) "
                         f"or a warm cache; or train from scratch without --pretrained") from None
    return model, ours and normed_head


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
