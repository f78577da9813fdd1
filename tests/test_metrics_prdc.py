"""Blocked precision / recall / density / coverage equal the dense computation."""

import numpy as np
import pytest

from ltaug.errors import LtaugError
from ltaug.metrics.prdc import knn_radii, prdc, prdc_dense


def _sets(seed=0, n=300, m=250, d=12):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, d)), rng.normal(size=(m, d)) * 1.3 + 0.4


def test_blocked_equals_dense_reference_package():
    prdc_pkg = pytest.importorskip("prdc")
    real, fake = _sets()
    ref = prdc_pkg.compute_prdc(real, fake, nearest_k=5)
    # max_bytes forces blocks of a few rows: the block bookkeeping is what is under test.
    got = prdc(real, fake, k=5, max_bytes=40_000, dtype="float64")
    for key in ("precision", "recall", "density", "coverage"):
        assert got[key] == pytest.approx(ref[key], abs=1e-12), key


def test_blocked_equals_own_dense_float32_and_any_block_size():
    real, fake = _sets(1, 200, 180, 8)
    dense = prdc_dense(real, fake, k=5)
    for max_bytes in (10_000, 300_000, 1 << 30):
        got = prdc(real, fake, k=5, max_bytes=max_bytes)
        for key in dense:
            assert got[key] == pytest.approx(dense[key], abs=0.011), (max_bytes, key)


def test_properties_identical_and_disjoint_sets():
    real, _ = _sets(2)
    same = prdc(real, real.copy(), k=5, dtype="float64")
    assert same["precision"] == 1.0 and same["recall"] == 1.0 and same["coverage"] == 1.0
    far = prdc(real, real + 100.0, k=5)
    assert far == {"precision": 0.0, "recall": 0.0, "density": 0.0, "coverage": 0.0}
    # Mode collapse: every fake near one real point -> precision 1, recall and coverage near 0.
    rng = np.random.default_rng(0)
    collapsed = prdc(real, real[0] + 1e-3 * rng.normal(size=(50, real.shape[1])), k=5, dtype="float64")
    assert collapsed["precision"] == 1.0 and collapsed["coverage"] < 0.05 and collapsed["recall"] < 0.05


def test_knn_radii_exclude_self():
    x = np.array([[0.0], [1.0], [3.0], [7.0]])
    assert knn_radii(x, k=1, dtype="float64").tolist() == [1.0, 1.0, 2.0, 4.0]
    assert knn_radii(x, k=2, dtype="float64").tolist() == [3.0, 2.0, 3.0, 6.0]
    with pytest.raises(LtaugError, match="more than k=5"):
        knn_radii(x, k=5)
