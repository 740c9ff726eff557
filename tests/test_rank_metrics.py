"""Rank metrics against values computed by hand (NAO-V2 §3.3; Bender et al. 2018, Figure 5)."""

import itertools
import math

import numpy as np
import pytest

from tf_oneshot.analysis import bootstrap_ci, kendall_tau, pairwise_accuracy, rank_metrics, spearman_rho
from tf_oneshot.analysis.rank_metrics import _rho_along, _tau_b_along
from tf_oneshot.errors import UserError


def test_identical_and_reversed_rankings():
    a = [0.1, 0.2, 0.3, 0.4]
    assert kendall_tau(a, [1, 2, 3, 4]) == pytest.approx(1.0)
    assert spearman_rho(a, [1, 2, 3, 4]) == pytest.approx(1.0)
    assert pairwise_accuracy(a, [1, 2, 3, 4]) == 1.0
    assert kendall_tau(a, [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert spearman_rho(a, [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert pairwise_accuracy(a, [4, 3, 2, 1]) == 0.0


def test_one_swapped_pair():
    # 6 pairs, 1 discordant: tau = (5 - 1) / 6; rho = 1 - 6 * 2 / (4 * 15); pa = 5/6.
    a, b = [1, 2, 3, 4], [1, 3, 2, 4]
    assert kendall_tau(a, b) == pytest.approx(2 / 3)
    assert spearman_rho(a, b) == pytest.approx(0.8)
    assert pairwise_accuracy(a, b) == pytest.approx(5 / 6)


def test_ties():
    # a ties items 0 and 1: tau-b = 5 / sqrt((6 - 1) * 6); rho = Pearson of
    # ranks [1.5, 1.5, 3, 4] and [1, 2, 3, 4] = 4.5 / sqrt(4.5 * 5); the tied
    # pair counts 1/2 in pairwise accuracy: (5 + 0.5) / 6.
    a, b = [1, 1, 2, 3], [1, 2, 3, 4]
    assert kendall_tau(a, b) == pytest.approx(5 / math.sqrt(30))
    assert spearman_rho(a, b) == pytest.approx(math.sqrt(0.9))
    assert pairwise_accuracy(a, b) == pytest.approx(11 / 12)
    # A pair tied in both lists agrees.
    assert pairwise_accuracy([1, 1, 2], [5, 5, 6]) == 1.0
    assert kendall_tau([1, 1, 2], [5, 5, 6]) == pytest.approx(1.0)
    # One-sided ties are symmetric: the same 1/2 whichever way b goes.
    assert pairwise_accuracy([1, 1], [1, 2]) == 0.5
    assert pairwise_accuracy([1, 1], [2, 1]) == 0.5


def test_pairwise_accuracy_matches_nao_definition_and_tau_without_ties():
    rng = np.random.default_rng(0)
    a, b = rng.random(12), rng.random(12)
    a[3] = a[5]  # include a tie
    # Luo et al.: count (a_i >= a_j and b_i >= b_j) or (a_i < a_j and b_i < b_j).
    pairs = list(itertools.permutations(range(12), 2))
    count = sum((a[i] >= a[j] and b[i] >= b[j]) or (a[i] < a[j] and b[i] < b[j]) for i, j in pairs)
    assert pairwise_accuracy(a, b) == pytest.approx(count / len(pairs))
    # Without ties, pairwise accuracy = (1 + tau) / 2.
    c, d = rng.random(15), rng.random(15)
    assert pairwise_accuracy(c, d) == pytest.approx((1 + kendall_tau(c, d)) / 2)


def test_undefined_cases_are_nan_and_bad_input_is_rejected():
    m = rank_metrics([0.5], [0.9])
    assert m.num_architectures == 1
    assert math.isnan(m.kendall_tau) and math.isnan(m.spearman_rho)
    assert math.isnan(m.pairwise_accuracy)
    assert m.to_json()["kendall_tau"] is None
    constant = rank_metrics([0.5, 0.5, 0.5], [0.1, 0.2, 0.3])
    assert math.isnan(constant.kendall_tau) and math.isnan(constant.spearman_rho)
    assert constant.pairwise_accuracy == pytest.approx(0.5)
    with pytest.raises(UserError, match="equal length"):
        rank_metrics([1, 2], [1, 2, 3])
    with pytest.raises(UserError, match="finite"):
        rank_metrics([1, float("nan")], [1, 2])


def test_rank_metrics_bundle():
    m = rank_metrics([1, 2, 3, 4], [1, 3, 2, 4])
    assert m.num_architectures == 4
    assert (m.kendall_tau, m.spearman_rho, m.pairwise_accuracy) == pytest.approx((2 / 3, 0.8, 5 / 6))


# ------------------------------------------------------------ bootstrap intervals
def test_vectorized_statistics_match_scipy_with_ties():
    # The bootstrap's vectorized tau-b and rho must equal the scipy ones they stand for.
    rng = np.random.default_rng(3)
    x = rng.integers(0, 4, (40, 10)).astype(float)  # many ties
    y = rng.integers(0, 5, (40, 10)).astype(float)
    x[0] = 1.0  # a constant row: undefined
    taus = _tau_b_along(x, y)
    rhos = _rho_along(x, y)
    assert math.isnan(taus[0]) and math.isnan(rhos[0])
    assert taus[1:] == pytest.approx([kendall_tau(a, b) for a, b in zip(x[1:], y[1:])])
    assert rhos[1:] == pytest.approx([spearman_rho(a, b) for a, b in zip(x[1:], y[1:])])


@pytest.mark.parametrize("method", ["percentile", "BCa"])
def test_bootstrap_ci_perfect_and_reversed_agreement(method):
    a = np.arange(12) / 12
    # Every resample (duplicates tie in both lists) agrees perfectly: the interval is the point.
    for stat in ("kendall_tau", "spearman_rho"):
        assert bootstrap_ci(a, 2 * a + 1, stat, method=method) == pytest.approx((1.0, 1.0))
        assert bootstrap_ci(a, -a, stat, method=method) == pytest.approx((-1.0, -1.0))


@pytest.mark.parametrize("method", ["percentile", "BCa"])
def test_bootstrap_ci_of_independent_scores_covers_zero(method):
    rng = np.random.default_rng(0)
    a, b = rng.random(30), rng.random(30)
    for stat, point in (("kendall_tau", kendall_tau(a, b)), ("spearman_rho", spearman_rho(a, b))):
        low, high = bootstrap_ci(a, b, stat, method=method)
        assert -1 <= low < 0 < high <= 1
        assert low <= point <= high
        assert high - low > 0.2  # 30 independent pairs cannot pin tau down


def test_bootstrap_ci_of_related_scores_excludes_zero_and_narrows_with_confidence():
    rng = np.random.default_rng(1)
    a = rng.random(24)
    b = a + 0.3 * rng.random(24)
    low, high = bootstrap_ci(a, b)
    assert 0 < low < kendall_tau(a, b) < high <= 1
    low90, high90 = bootstrap_ci(a, b, confidence=0.9)
    assert low <= low90 and high90 <= high
    assert bootstrap_ci(a, b, seed=5) == bootstrap_ci(a, b, seed=5)  # reproducible


def test_bootstrap_ci_degenerate_cases():
    # 3 items with a tie: many resamples are degenerate (tau undefined); the rest decide.
    low, high = bootstrap_ci([1, 2, 3], [1, 1, 2])
    assert -1 <= low <= high <= 1 and math.isfinite(low)
    # Fewer than 3 architectures, or a constant list (every resample undefined): no interval.
    assert all(math.isnan(x) for x in bootstrap_ci([1, 2], [1, 2]))
    assert all(math.isnan(x) for x in bootstrap_ci([1, 2, 3, 4], [5, 5, 5, 5]))
    with pytest.raises(UserError, match="unknown rank statistic"):
        bootstrap_ci([1, 2, 3], [1, 2, 3], "pearson")
    with pytest.raises(UserError, match="bootstrap method"):
        bootstrap_ci([1, 2, 3], [1, 2, 3], method="basic")
    with pytest.raises(UserError, match="confidence"):
        bootstrap_ci([1, 2, 3], [1, 2, 3], confidence=95)


def test_rank_metrics_with_intervals():
    rng = np.random.default_rng(2)
    a = rng.random(16)
    b = a + 0.5 * rng.random(16)
    m = rank_metrics(a, b, n_resamples=500, seed=1)
    assert m.kendall_tau_ci == bootstrap_ci(a, b, "kendall_tau", n_resamples=500, seed=1)
    assert m.spearman_rho_ci == bootstrap_ci(a, b, "spearman_rho", n_resamples=500, seed=1)
    assert m.to_json()["kendall_tau_ci"] == list(m.kendall_tau_ci)
    # Without resamples no interval is computed.
    assert rank_metrics(a, b).to_json()["kendall_tau_ci"] is None


def test_partial_kendall_tau_hand_computed():
    from tf_oneshot.analysis.rank_metrics import partial_kendall_tau

    a, b, c = [1, 2, 3, 4], [1, 3, 2, 4], [1, 2, 4, 3]
    # tau_ab = 4/6, tau_ac = 4/6, tau_bc = 2/6 (count the six pairs):
    # (2/3 - 2/3 * 1/3) / sqrt((1 - 4/9) (1 - 1/9)) = 4 / sqrt(40).
    assert math.isclose(partial_kendall_tau(a, b, c), 4 / math.sqrt(40), rel_tol=1e-12)
    # A ranking that is the cost itself carries nothing beyond it: undefined.
    assert math.isnan(partial_kendall_tau(c, b, c))
    # A cost unrelated to both rankings (tau 0 with each) leaves tau unchanged.
    a, b, c = [1, 2, 3, 4], [1, 3, 4, 2], [2, 4, 1, 3]
    assert kendall_tau(a, c) == 0 and kendall_tau(b, c) == 0
    assert math.isclose(partial_kendall_tau(a, b, c), kendall_tau(a, b), rel_tol=1e-12)


def test_mean_tau_ci():
    from tf_oneshot.analysis.rank_metrics import mean_tau_ci

    truth = np.arange(20.0)
    assert mean_tau_ci(truth[None], truth, n_resamples=200) == (1.0, 1.0)
    rng = np.random.default_rng(3)
    noisy = truth + rng.normal(scale=5.0, size=20)
    low, high = mean_tau_ci(noisy[None], truth, n_resamples=500)
    assert low < kendall_tau(noisy, truth) < high
    assert mean_tau_ci(np.stack([noisy, noisy]), truth, n_resamples=500) == (low, high)
    assert all(math.isnan(v) for v in mean_tau_ci(truth[None, :2], truth[:2]))
