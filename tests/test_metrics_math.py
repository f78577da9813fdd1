"""FID / KID / IS math on synthetic features and probabilities (no network involved)."""

import numpy as np
import pytest

from ltaug.errors import LtaugError
from ltaug.metrics.fid import feature_stats, fid_from_feats, frechet_distance, inception_score, kid


def _feats(n, d, seed, shift=0.0, scale=1.0):
    rng = np.random.default_rng(seed)
    mix = rng.normal(size=(d, d)) / np.sqrt(d)  # correlated features, like real pool features
    return (rng.normal(size=(n, d)) @ mix) * scale + shift


def test_frechet_matches_clean_fid_sqrtm():
    from cleanfid.fid import frechet_distance as cf_frechet

    a, b = _feats(400, 32, 0), _feats(300, 32, 1, shift=0.3, scale=1.2)
    mine = frechet_distance(*feature_stats(a), *feature_stats(b))
    ref = cf_frechet(*feature_stats(a), *feature_stats(b))
    assert mine == pytest.approx(ref, rel=1e-8, abs=1e-9)


def test_fid_self_is_zero_and_grows_with_shift():
    a = _feats(500, 24, 2)
    mu, sigma = feature_stats(a)
    assert abs(frechet_distance(mu, sigma, mu, sigma)) < 1e-8
    fids = [frechet_distance(*feature_stats(a + s), mu, sigma) for s in (0.0, 0.1, 0.5, 1.0)]
    assert fids[0] == pytest.approx(0.0, abs=1e-8)
    # A pure mean shift adds exactly ||delta||^2 = D s^2.
    assert fids[2] == pytest.approx(24 * 0.25, rel=1e-6)
    assert fids == sorted(fids) and fids[-1] > fids[1] > 0


def test_low_rank_form_equals_full_form():
    ref = _feats(600, 40, 3)
    mu2, s2 = feature_stats(ref)
    few = _feats(25, 40, 4, shift=0.2)  # n < D: the n x n path
    full = frechet_distance(*feature_stats(few), mu2, s2)
    # (the D x D form clips ~1e-15 negative eigenvalues of a rank-24 product: agreement to ~1e-7)
    assert fid_from_feats(few, mu2, s2) == pytest.approx(full, rel=1e-6)
    many = _feats(100, 40, 5)  # n > D: the D x D path
    assert fid_from_feats(many, mu2, s2) == pytest.approx(frechet_distance(*feature_stats(many), mu2, s2), rel=1e-12)


def test_fid_needs_two_images():
    with pytest.raises(LtaugError, match="at least 2"):
        feature_stats(np.zeros((1, 8)))


def test_kid_equals_clean_fid_on_one_full_subset_and_is_seeded():
    from cleanfid.fid import kernel_distance

    a, b = _feats(60, 16, 6), _feats(60, 16, 7, shift=0.5)
    mine, _ = kid(a, b, num_subsets=1, max_subset_size=60)  # a full subset is a permutation: no randomness left
    assert mine == pytest.approx(kernel_distance(a, b, num_subsets=1, max_subset_size=60), rel=1e-10)
    assert kid(a, b, num_subsets=5, max_subset_size=30, seed=3) == kid(a, b, num_subsets=5, max_subset_size=30, seed=3)
    same, _ = kid(a, a[::-1], num_subsets=1, max_subset_size=60)
    assert abs(same) < mine


def test_inception_score_of_known_distributions():
    k = 10
    confident_uniform = np.eye(k)[np.arange(200) % k]  # sharp p(y|x), uniform p(y): IS = K
    mean, std = inception_score(confident_uniform, splits=10)
    assert mean == pytest.approx(k, rel=1e-6) and std == pytest.approx(0.0, abs=1e-6)
    uninformative = np.full((200, k), 1.0 / k)  # p(y|x) = p(y): IS = 1
    assert inception_score(uninformative)[0] == pytest.approx(1.0, abs=1e-9)
    collapsed = np.eye(k)[np.zeros(200, int)]  # one class only: IS = 1
    assert inception_score(collapsed)[0] == pytest.approx(1.0, abs=1e-6)
    with pytest.raises(LtaugError, match="10 splits"):
        inception_score(confident_uniform[:5])


def test_paired_difference_interval_and_wins_golden():
    """The paired 95% t-interval equals scipy's one-sample t interval of the differences; wins count per seed."""
    from scipy import stats as st

    from ltaug.stats import paired

    a, b = [0.5, 0.4, 0.7, 0.6, 0.9], [0.4, 0.4, 0.5, 0.4, 0.6]
    p = paired(a, b)
    ref = st.ttest_1samp([x - y for x, y in zip(a, b)], 0).confidence_interval(0.95)
    assert p.n == 5 and p.wins == 4 and abs(p.mean - 0.16) < 1e-12
    assert abs(p.lo - ref.low) < 1e-12 and abs(p.hi - ref.high) < 1e-12
    assert paired(b, a, lower_is_better=True).wins == 4  # lower b is better: the same 4 seeds
    assert paired([1.0, None, 2.0], [0.0, 5.0, 1.0]).n == 2  # seeds where either is missing are left out
    assert p.text(scale=100) == "+16.0 [+1.8, +30.2], 4/5"
