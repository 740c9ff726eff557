"""Ranking metrics against a ground truth ("Deeper insights into weight sharing", §3.2, §4.1).

"Deeper insights" (Zhang et al. 2020) trains every child of a 64-child space
stand-alone over 10 seeds (the ground truth, §3.1) and judges a weight-sharing
*instance* (one trained super-net, or one snapshot of it) by the ranking of
children it produces:

- S-Tau (§3.2, Eq. 2): the stability of N instances, the mean Kendall tau
  over their N(N-1)/2 pairs (Table 1; its Max/Min Tau are the extremes of
  `pairwise_taus`);
- GT-Tau (§3.2): Kendall tau between an instance's ranking and the ground
  truth's;
- Top-n-Rank, TnR (§3.2): "choosing the top n child models from the
  generated rank of an instance and finding the best ground truth rank of
  these n child models" (T1R, T3R in Table 2);
- GT-Tau-Mean-k and GT-Tau-Std-k (§4.1): mean and standard deviation of the
  GT-Tau of the last k evaluations of one instance;
- the noise ceiling of the ground truth itself: how well two independent
  halves of its seeds agree (the "Ground truth" rows of Tables 1 and 2 play
  that role in the paper; `ground_truth_rows` computes those rows too).

Conventions. Scores are "higher is better" (accuracies); pass `-loss` for a
loss. Kendall tau is tau-b (ties corrected) via `scipy.stats.kendalltau`, as
in `rank_metrics`. A ground-truth rank is a *position*, 1 = the best child,
as the paper's T1R/T3R values (1.6 ± 0.92 for the ground truth in Table 2,
18.5 for weight sharing over 64 children) are positions; children tied in
the ground truth share the best position of their tie
(`scipy.stats.rankdata(method="min")`). Standard deviations are population
ones (ddof=0): Table 2's "standard variance of these 10 numbers" are, e.g.
T3R 0.9165 = sqrt(0.84) for 10 integer positions of mean 1.6, which ddof=1
cannot give.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import numpy as np
import scipy.stats

from tf_oneshot.analysis.rank_metrics import kendall_tau
from tf_oneshot.errors import UserError

# `noise_ceiling` averages over every balanced split of the seeds up to this
# many splits (10 seeds: 126), else over this many random ones.
MAX_SPLITS = 500

# How children are ranked (`scores_of`); the --rank_by flag spells the same choices.
RANK_BY = ("accuracy_then_loss", "accuracy", "loss")


def _matrix(rows: Sequence[Sequence[float]], what: str) -> np.ndarray:
    """A finite [rows, children] float array (UserError naming `what` otherwise)."""
    try:
        array = np.asarray(rows, dtype=np.float64)
    except ValueError:
        raise UserError(f"{what} must all score the same children (rows of equal length).") from None
    if array.ndim != 2:
        raise UserError(f"{what} must be a 2-D array (rows x children); got shape {array.shape}.")
    if not np.isfinite(array).all():
        raise UserError(f"{what} hold NaN or infinity; rank metrics need finite scores.")
    return array


def _vector(scores: Sequence[float], what: str) -> np.ndarray:
    array = np.asarray(scores, dtype=np.float64).reshape(-1)
    if not np.isfinite(array).all():
        raise UserError(f"{what} hold NaN or infinity; rank metrics need finite scores.")
    return array


def _pair(a: Sequence[float], b: Sequence[float], what_a: str, what_b: str) -> tuple[np.ndarray, np.ndarray]:
    a, b = _vector(a, what_a), _vector(b, what_b)
    if a.size != b.size:
        raise UserError(f"{what_a} score {a.size} children but {what_b} {b.size}; give both in the same "
                        "child order.")
    return a, b


def pairwise_taus(rankings: Sequence[Sequence[float]]) -> np.ndarray:
    """Kendall tau of every pair i < j of instances' scores, in (0,1), (0,2), ... order.

    Table 1 of "Deeper insights" reports their mean (S-Tau), maximum and minimum.

    Args:
        rankings: [N instances, M children] scores, one row per instance, the
            children in the same order in every row.

    Raises:
        UserError: fewer than 2 instances, rows of unequal length, or non-finite scores.
    """
    matrix = _matrix(rankings, "instance rankings")
    if matrix.shape[0] < 2:
        raise UserError(f"S-Tau compares instances pairwise and needs at least 2; got {matrix.shape[0]}.")
    return np.array([kendall_tau(matrix[i], matrix[j])
                     for i, j in itertools.combinations(range(matrix.shape[0]), 2)])


def s_tau(rankings: Sequence[Sequence[float]]) -> float:
    """S-Tau, "Deeper insights" §3.2 Eq. 2: 2 / (N(N-1)) * sum over i < j of tau(R_i, R_j).

    It measures how stable the ranking of the same children is across N
    instances (seeds, child orders, or the last epochs of one run). NaN if
    some instance scores every child alike (tau undefined).
    """
    return float(np.mean(pairwise_taus(rankings)))


def gt_tau(oneshot_scores: Sequence[float], ground_truth: Sequence[float]) -> float:
    """GT-Tau, "Deeper insights" §3.2: Kendall tau(R, R_gt) of an instance and the ground truth.

    Args:
        oneshot_scores: one instance's scores of the children (e.g. one-shot
            validation accuracies).
        ground_truth: the stand-alone scores of the same children, same order
            (e.g. mean validation accuracy over seeds).
    """
    a, b = _pair(oneshot_scores, ground_truth, "the one-shot scores", "the ground truth")
    return kendall_tau(a, b)


def ground_truth_positions(ground_truth: Sequence[float]) -> np.ndarray:
    """Each child's ground-truth position: 1 = best score; ties share the best position of their tie."""
    scores = _vector(ground_truth, "the ground truth")
    return scipy.stats.rankdata(-scores, method="min").astype(np.int64)


def top_n_rank(oneshot_scores: Sequence[float], ground_truth: Sequence[float], n: int) -> float:
    """TnR, "Deeper insights" §3.2: the best ground-truth position among the instance's top n.

    "TnR is obtained by choosing the top n child models from the generated
    rank of an instance and finding the best ground truth rank of these n
    child models": T1R is the ground-truth position (1 = best, see the module
    docstring) of the instance's best child, T3R the best position among its
    best three. Lower is better; the ground truth's own T1R is 1.

    Where one-shot scores tie across the n-th place the top n is not
    unique; the result is then the expectation over choosing uniformly among
    the tied children (so it may be fractional), never a lucky or unlucky
    pick. Without ties it is the plain definition.

    Raises:
        UserError: lists of unequal length, non-finite scores, or n outside 1..children.
    """
    a, b = _pair(oneshot_scores, ground_truth, "the one-shot scores", "the ground truth")
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or not 1 <= n <= a.size:
        raise UserError(f"Top-n-Rank needs n in 1..{a.size} (the number of children); got n={n!r}.")
    positions = ground_truth_positions(b)
    threshold = np.sort(a)[::-1][n - 1]
    above = positions[a > threshold]
    tied = np.sort(positions[a == threshold])
    k = n - above.size  # children to draw from the tie, 1 <= k <= tied.size
    best_above = above.min() if above.size else math.inf
    t = tied.size
    total = math.comb(t, k)
    # P(the smallest position drawn is the i-th smallest tied one) = C(t-1-i, k-1) / C(t, k).
    expected = sum(math.comb(t - 1 - i, k - 1) / total * min(best_above, float(tied[i]))
                   for i in range(t - k + 1))
    return float(expected)


def gt_tau_over_snapshots(
    list_of_scores: Sequence[Sequence[float]], ground_truth: Sequence[float], k: int
) -> tuple[float, float]:
    """(GT-Tau-Mean-k, GT-Tau-Std-k), "Deeper insights" §4.1, over the last k evaluations.

    GT-Tau of one instance moves a lot from one mini-batch (or epoch) to the
    next (§3.2, Observation 3), so §4.1 reports the mean and the standard
    deviation (ddof=0) of the GT-Tau of the last k evaluations (k = 64
    mini-batches in Table 3; the last 10 epochs in Table 2's "Different
    epochs" row).

    Args:
        list_of_scores: the instance's scores of the children at each
            evaluation, oldest first.
        ground_truth: the ground-truth scores, same child order.
        k: how many of the latest evaluations to use.

    Raises:
        UserError: fewer than k evaluations, k < 1, or mismatched lists.
    """
    matrix = _matrix(list_of_scores, "snapshot scores")
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise UserError(f"GT-Tau-Mean-k needs k >= 1; got k={k!r}.")
    if matrix.shape[0] < k:
        raise UserError(f"GT-Tau-Mean-{k} needs the last {k} evaluations; only {matrix.shape[0]} were given.")
    taus = np.array([gt_tau(row, ground_truth) for row in matrix[-k:]])
    return float(np.mean(taus)), float(np.std(taus))


def _splits(num_seeds: int, max_splits: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Balanced splits of range(num_seeds) into two disjoint halves (floor and ceil of s/2)."""
    half = num_seeds // 2
    seeds = np.arange(num_seeds)
    if num_seeds % 2 == 0:  # fix seed 0 in the first half: each unordered split once
        count = math.comb(num_seeds - 1, half - 1)
        combos = ((0, *c) for c in itertools.combinations(range(1, num_seeds), half - 1))
    else:
        count = math.comb(num_seeds, half)
        combos = itertools.combinations(range(num_seeds), half)
    if count <= max_splits:
        firsts = [np.array(c) for c in combos]
    else:
        rng = np.random.default_rng(seed)
        firsts = [np.sort(rng.permutation(num_seeds)[:half]) for _ in range(max_splits)]
    return [(first, np.setdiff1d(seeds, first)) for first in firsts]


def noise_ceiling(per_seed_accuracies: Sequence[Sequence[float]], max_splits: int = MAX_SPLITS,
                  seed: int = 0) -> float:
    """How well the ground truth agrees with itself: Kendall tau between the means of two halves of its seeds.

    Stand-alone accuracies vary with the seed, so no ranking can match a
    ground truth of finitely many seeds perfectly. The seeds are split into
    two disjoint halves (sizes floor(s/2) and ceil(s/2)), each half's mean
    ranks the children, and the tau between the two rankings is averaged
    over every such split (or over `max_splits` random ones when there are
    more). It is the agreement of two half-size ground truths: a
    conservative ceiling (the full ground truth, twice the seeds, is less
    noisy than either half), the role of the "Ground truth" rows of Tables
    1 and 2 of "Deeper insights".

    Args:
        per_seed_accuracies: [seeds, children]: row i holds every child's
            score with seed i (higher is better; pass -loss for losses).
        max_splits: average over all balanced splits up to this many.
        seed: seeds the random splits beyond `max_splits`.

    Raises:
        UserError: fewer than 4 seeds (2 per half) or fewer than 2 children.
    """
    matrix = _matrix(per_seed_accuracies, "per-seed accuracies")
    num_seeds, num_children = matrix.shape
    if num_seeds < 4:
        raise UserError(
            f"the noise ceiling needs at least 2 seeds per half (4 seeds), got {num_seeds}; "
            "train the ground truth with more --seeds."
        )
    if num_children < 2:
        raise UserError(f"the noise ceiling ranks children and needs at least 2; got {num_children}.")
    taus = [kendall_tau(matrix[a].mean(0), matrix[b].mean(0)) for a, b in _splits(num_seeds, max_splits, seed)]
    return float(np.mean(taus))


def accuracy_then_loss(accuracy: Sequence[float], loss: Sequence[float]) -> np.ndarray:
    """Scores (higher is better) ordering children by accuracy, ties broken by the lower loss.

    On a small validation set stand-alone accuracies take few distinct
    values (300 digits: steps of 1/300), so many children tie; the
    cross-entropy separates them. Children equal in both stay tied.
    """
    acc, los = _pair(accuracy, loss, "the accuracies", "the losses")
    order = np.lexsort((los, -acc))  # best first
    scores = np.empty(acc.size)
    position = 0
    for i, child in enumerate(order):
        if i and (acc[child], los[child]) != (acc[order[i - 1]], los[order[i - 1]]):
            position = i
        scores[child] = -position
    return scores


def ground_truth_rows(per_seed_accuracies: Sequence[Sequence[float]]) -> dict[str, float]:
    """The "Ground truth" rows of Tables 1 and 2 of "Deeper insights", from the per-seed runs.

    Each seed is an instance: Table 1's S-Tau, Max Tau and Min Tau over
    seeds; Table 2's GT-Tau, T1R and T3R of each seed against the mean over
    all seeds (the paper's ground truth, which includes that seed), as
    mean and population std over seeds.

    Args:
        per_seed_accuracies: [seeds, children] scores, at least 2 seeds.
    """
    matrix = _matrix(per_seed_accuracies, "per-seed accuracies")
    taus = pairwise_taus(matrix)
    truth = matrix.mean(0)
    gt = np.array([gt_tau(row, truth) for row in matrix])
    out = {"s_tau": float(np.mean(taus)), "max_tau": float(np.max(taus)), "min_tau": float(np.min(taus)),
           "gt_tau_mean": float(np.mean(gt)), "gt_tau_std": float(np.std(gt))}
    for n in (1, 3):
        if n <= matrix.shape[1]:
            values = np.array([top_n_rank(row, truth, n) for row in matrix])
            out[f"t{n}r_mean"], out[f"t{n}r_std"] = float(np.mean(values)), float(np.std(values))
    return out


def check_rank_by(rank_by: str) -> None:
    """Raises UserError (one line, the choices) unless `rank_by` is one of `RANK_BY`."""
    if rank_by not in RANK_BY:
        raise UserError(f"--rank_by={rank_by} is unknown; choose one of {', '.join(RANK_BY)}.")


def scores_of(accuracy: Sequence[float], loss: Sequence[float], rank_by: str) -> np.ndarray:
    """Scores (higher is better) of children by `rank_by` (one of `RANK_BY`).

    "accuracy" is the papers' measure (Bender et al. 2018, §4.1); "loss"
    (-loss) and "accuracy_then_loss" (ties broken by the lower loss) rank
    with less noise on a small validation set.
    """
    check_rank_by(rank_by)
    if rank_by == "accuracy":
        return np.asarray(accuracy, np.float64)
    if rank_by == "loss":
        return -np.asarray(loss, np.float64)
    return accuracy_then_loss(accuracy, loss)
