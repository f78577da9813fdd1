"""Overlap (leakage) matrix and its per-group summary on hand-built cases."""

import numpy as np
import pytest

from ltaug.errors import LtaugError
from ltaug.metrics.overlap import leakage_summary, overlap_matrix, plot_overlap

# 4 classes; training counts make 0, 1 "many", 2 "medium", 3 "few".
COUNTS = [500, 200, 50, 5]


def _probs(pred, c=4, p=0.7):
    out = np.full((len(pred), c), (1 - p) / (c - 1))
    out[np.arange(len(pred)), pred] = p
    return out


def test_matrix_and_leakage_hand_built():
    labels = np.array([0] * 4 + [1] * 4 + [2] * 5 + [3] * 2)
    pred = np.array([0, 0, 0, 1,   1, 1, 1, 1,   2, 2, 0, 0, 3,   1, 2])
    m = overlap_matrix(_probs(pred), labels, 4)
    expected = np.array([[0.75, 0.25, 0, 0], [0, 1, 0, 0], [0.4, 0, 0.4, 0.2], [0, 0.5, 0.5, 0]])
    np.testing.assert_allclose(m, expected)
    np.testing.assert_allclose(m.sum(axis=1), 1.0)
    s = leakage_summary(m, COUNTS)
    # class 0 leaks 0.25 into class 1 (a head class other than itself)
    assert s["many"]["leakage_into_head"] == pytest.approx((0.25 + 0.0) / 2)
    assert s["many"]["agreement"] == pytest.approx((0.75 + 1.0) / 2)
    assert s["medium"] == {"classes": 1, "agreement": pytest.approx(0.4), "leakage_into_head": pytest.approx(0.4),
                           "leakage_other": pytest.approx(0.2)}
    assert s["few"]["leakage_into_head"] == pytest.approx(0.5) and s["few"]["agreement"] == 0.0
    assert s["per_class"][3]["top_confusion"] in (1, 2) and s["per_class"][3]["group"] == "few"


def test_soft_matrix_and_missing_class():
    labels = np.array([0, 0, 1])
    probs = np.array([[0.6, 0.4, 0, 0], [0.8, 0.2, 0, 0], [0.1, 0.9, 0, 0]])
    m = overlap_matrix(probs, labels, 4, soft=True)
    np.testing.assert_allclose(m[0], [0.7, 0.3, 0, 0])
    assert np.isnan(m[2]).all()  # no images of class 2: unknown, not zero
    s = leakage_summary(m, COUNTS)
    assert s["medium"]["classes"] == 0 and s["medium"]["agreement"] is None


def test_wrong_shapes_name_the_problem(tmp_path):
    with pytest.raises(LtaugError, match="generator's classes"):
        overlap_matrix(np.zeros((3, 5)), np.zeros(3, int), 4)
    m = overlap_matrix(_probs(np.array([0, 1, 2, 3])), np.arange(4), 4)
    plot_overlap(m, ["a", "b", "c", "d"], tmp_path / "overlap.png")
    assert (tmp_path / "overlap.png").stat().st_size > 1000
