"""The metrics of "Deeper insights" §3.2 and §4.1 against numbers computed by hand."""

import math

import numpy as np
import pytest

from tf_oneshot.analysis.ground_truth import (
    _splits,
    accuracy_then_loss,
    ground_truth_positions,
    ground_truth_rows,
    gt_tau,
    gt_tau_over_snapshots,
    noise_ceiling,
    pairwise_taus,
    s_tau,
    top_n_rank,
)
from tf_oneshot.errors import UserError


def test_s_tau_is_the_mean_tau_over_pairs_of_instances():
    # R1 and R2 differ by one swapped pair of 6: tau = (5 - 1) / 6 = 2/3.
    # R3 reverses R1: tau = -1. R2 vs R3: 1 concordant, 5 discordant: -4/6.
    # S-Tau (Eq. 2) = (2/3 - 1 - 2/3) / 3 = -1/3.
    rankings = [[1, 2, 3, 4], [1, 2, 4, 3], [4, 3, 2, 1]]
    assert pairwise_taus(rankings) == pytest.approx([2 / 3, -1, -2 / 3])
    assert s_tau(rankings) == pytest.approx(-1 / 3)
    # Kendall tau depends on the order only: accuracies and their ranks agree.
    assert s_tau([[0.91, 0.92, 0.93, 0.94], [10, 20, 40, 30]]) == pytest.approx(2 / 3)
    with pytest.raises(UserError, match="at least 2"):
        s_tau([[1, 2, 3]])
    with pytest.raises(UserError, match="same children"):
        s_tau([[1, 2, 3], [1, 2]])


def test_gt_tau():
    # 10 pairs of 5 children; only children 3 and 4 are ordered differently:
    # tau = (9 - 1) / 10 = 0.8.
    assert gt_tau([0.9, 0.8, 0.7, 0.6, 0.5], [5, 4, 3, 1, 2]) == pytest.approx(0.8)
    # A tie in the ground truth (children 1, 2): tau-b = 2 / sqrt(3 * 2).
    assert gt_tau([3, 2, 1], [3, 1.5, 1.5]) == pytest.approx(2 / math.sqrt(6))
    with pytest.raises(UserError, match="score 3 children but the ground truth 2"):
        gt_tau([1, 2, 3], [1, 2])


def test_top_n_rank_is_the_best_ground_truth_position_among_the_top_n():
    # Ground-truth positions (1 = best): child 0 -> 4, 1 -> 1, 2 -> 2, 3 -> 3.
    truth = [0.1, 0.4, 0.3, 0.2]
    assert list(ground_truth_positions(truth)) == [4, 1, 2, 3]
    oneshot = [0.9, 0.8, 0.7, 0.6]
    assert top_n_rank(oneshot, truth, 1) == 4  # T1R: the one-shot best is the ground-truth worst
    assert top_n_rank(oneshot, truth, 2) == 1  # children 0, 1 -> positions 4, 1
    assert top_n_rank(oneshot, truth, 3) == 1  # T3R
    assert top_n_rank(truth, truth, 1) == 1  # the ground truth ranks its own best first
    # Children tied in the ground truth share the best position of the tie.
    assert list(ground_truth_positions([0.5, 0.5, 0.3])) == [1, 1, 3]
    assert top_n_rank([0.1, 0.9, 0.5], [0.5, 0.5, 0.3], 1) == 1


def test_top_n_rank_averages_over_one_shot_ties():
    # Children 0, 1, 2 tie in one-shot score; their positions are 4, 1, 2.
    # T1R draws one of them: (4 + 1 + 2) / 3 = 7/3. T2R draws two of three:
    # {0,1} -> 1, {0,2} -> 2, {1,2} -> 1, mean 4/3. T3R takes all three: 1.
    truth = [0.1, 0.4, 0.3, 0.2]
    tied = [0.9, 0.9, 0.9, 0.1]
    assert top_n_rank(tied, truth, 1) == pytest.approx(7 / 3)
    assert top_n_rank(tied, truth, 2) == pytest.approx(4 / 3)
    assert top_n_rank(tied, truth, 3) == 1
    # T2R with child 3 (position 3) above a tie of children 0 and 1 (positions
    # 4 and 1), one of which is drawn: min(3, 4) = 3 or min(3, 1) = 1, mean 2.
    assert top_n_rank([0.5, 0.5, 0.1, 0.9], truth, 2) == pytest.approx(2)
    with pytest.raises(UserError, match="n in 1..4"):
        top_n_rank(tied, truth, 5)
    with pytest.raises(UserError, match="n in 1..4"):
        top_n_rank(tied, truth, 0)


def test_gt_tau_mean_and_std_over_the_last_k_snapshots():
    truth = [1, 2, 3, 4]
    snapshots = [[4, 3, 2, 1], [1, 2, 3, 4], [1, 2, 4, 3], [2, 1, 3, 4]]
    # GT-Taus: -1, 1, 2/3, 2/3. The last 3: mean (1 + 4/3) / 3 = 7/9; deviations
    # 2/9, -1/9, -1/9, so the population variance is 6/81/3 = 2/81, std sqrt(2)/9.
    mean, std = gt_tau_over_snapshots(snapshots, truth, 3)
    assert mean == pytest.approx(7 / 9) and std == pytest.approx(math.sqrt(2) / 9)
    # All 4: mean (-1 + 1 + 4/3) / 4 = 1/3.
    assert gt_tau_over_snapshots(snapshots, truth, 4)[0] == pytest.approx(1 / 3)
    assert gt_tau_over_snapshots(snapshots, truth, 1) == (pytest.approx(2 / 3), 0.0)
    with pytest.raises(UserError, match="last 5 evaluations; only 4"):
        gt_tau_over_snapshots(snapshots, truth, 5)
    with pytest.raises(UserError, match="k >= 1"):
        gt_tau_over_snapshots(snapshots, truth, 0)


def test_noise_ceiling_averages_tau_over_balanced_splits_of_the_seeds():
    per_seed = [[3, 2, 1], [3, 1, 2], [2, 3, 1], [3, 2, 0]]
    # The three splits of 4 seeds (means are sums / 2, same order):
    #   {0,1} [6,3,3] vs {2,3} [5,5,1]: one concordant pair, one tie each side:
    #       tau-b = 1 / sqrt(2 * 2) = 1/2;
    #   {0,2} [5,5,2] vs {1,3} [6,3,2]: two concordant, a tie in the first:
    #       tau-b = 2 / sqrt(2 * 3);
    #   {0,3} [6,4,1] vs {1,2} [5,4,3]: the same order, tau = 1.
    expected = (0.5 + 2 / math.sqrt(6) + 1.0) / 3  # 0.7722
    assert noise_ceiling(per_seed) == pytest.approx(expected)
    splits = _splits(4, 100, 0)
    assert [(list(a), list(b)) for a, b in splits] == [([0, 1], [2, 3]), ([0, 2], [1, 3]), ([0, 3], [1, 2])]
    # 5 seeds: C(5, 2) = 10 splits into halves of 2 and 3; identical seeds agree perfectly.
    assert len(_splits(5, 100, 0)) == 10 and all(len(a) == 2 and len(b) == 3 for a, b in _splits(5, 100, 0))
    assert noise_ceiling([[0.1, 0.2, 0.3]] * 5) == pytest.approx(1.0)
    # 10 seeds have C(9, 4) = 126 splits; past max_splits, random ones.
    assert len(_splits(10, 500, 0)) == 126 and len(_splits(10, 7, 0)) == 7
    assert noise_ceiling([[0.1, 0.3, 0.2]] * 10, max_splits=3) == pytest.approx(1.0)
    with pytest.raises(UserError, match="needs at least 2 seeds per half \\(4 seeds\\), got 3"):
        noise_ceiling(per_seed[:3])


def test_accuracy_then_loss_breaks_accuracy_ties_by_the_lower_loss():
    # Best first: child 1 (0.9, 0.2); children 0 and 3 tie at (0.9, 0.3); then child 2.
    scores = accuracy_then_loss([0.9, 0.9, 0.8, 0.9], [0.3, 0.2, 0.1, 0.3])
    assert list(scores) == [-1, 0, -3, -1]


def test_ground_truth_rows_of_tables_1_and_2():
    # Two seeds of three children: tau([3,2,1], [3,1,2]) = (2 - 1) / 3 = 1/3.
    # The ground truth (mean) [3, 1.5, 1.5] ties children 1 and 2, so each
    # seed's GT-Tau is 2 / sqrt(3 * 2); both rank child 0 (position 1) first.
    rows = ground_truth_rows([[3, 2, 1], [3, 1, 2]])
    assert rows["s_tau"] == rows["max_tau"] == rows["min_tau"] == pytest.approx(1 / 3)
    assert rows["gt_tau_mean"] == pytest.approx(2 / math.sqrt(6)) and rows["gt_tau_std"] == pytest.approx(0)
    assert (rows["t1r_mean"], rows["t1r_std"], rows["t3r_mean"]) == (1.0, 0.0, 1.0)
    assert np.isfinite(list(rows.values())).all()
