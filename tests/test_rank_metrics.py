"""Rank metrics against values computed by hand (NAO-V2 §3.3; Bender et al. 2018, Figure 5)."""

import itertools
import math

import numpy as np
import pytest

from tf_oneshot.analysis import kendall_tau, pairwise_accuracy, rank_metrics, spearman_rho
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
