"""The UNet presets: the DDPM-CIFAR reference size, grayscale and RGB, the null class, and bad shapes."""

from __future__ import annotations

import pytest
import torch

from ltaug.diffusion.unet import build_unet, count_parameters
from ltaug.errors import LtaugError


def test_ddpm_cifar_has_the_reference_size():
    with torch.device("meta"):  # shapes only: no memory, no init time
        net = build_unet("ddpm-cifar", 10, 3, 32)
    assert count_parameters(net) == 35_751_939  # 35.75M with 11 class embeddings (10 + null)
    assert net.unet.class_embedding.num_embeddings == 11


@pytest.mark.parametrize("channels", [1, 3])
def test_tiny_and_small_forward_with_null_class(channels):
    torch.manual_seed(0)
    for preset in ("tiny", "small"):
        net = build_unet(preset, 5, channels, 32)
        x = torch.randn(3, channels, 32, 32)
        with torch.no_grad():
            eps = net(x, torch.tensor([0, 500, 999]), torch.tensor([0, 4, 5]))  # 5 = null
        assert eps.shape == x.shape
    assert 1e6 < count_parameters(build_unet("small", 10, 1, 32)) < 4e6


def test_class_changes_the_prediction():
    torch.manual_seed(0)
    net = build_unet("tiny", 3, 1, 16)
    torch.nn.init.normal_(net.unet.class_embedding.weight)
    x, t = torch.randn(2, 1, 16, 16), torch.tensor([10, 10])
    with torch.no_grad():
        assert not torch.allclose(net(x, t, torch.tensor([0, 0])), net(x, t, torch.tensor([1, 3])))


def test_bad_preset_and_resolution():
    with pytest.raises(LtaugError, match="preset 'huge'"):
        build_unet("huge", 10, 1, 32)
    with pytest.raises(LtaugError, match="divisible"):
        build_unet("ddpm-cifar", 10, 3, 36)
