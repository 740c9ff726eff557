"""How well one-shot accuracy ranks architectures like stand-alone accuracy does.

Bender et al. 2018, §4.1 and Figure 5 judge a one-shot model by the (near
monotonic) agreement between one-shot and stand-alone accuracies of a
stratified sample. We report three rank statistics over the same pairs:

- Kendall tau (tau-b, which corrects for ties), as in SPOS §4 and "Deeper
  Insights";
- Spearman rho, the Pearson correlation of (average) ranks, NAO-V2 §3.3;
- pairwise accuracy, NAO-V2 §3.3 (as defined in Luo et al. 2018): the share of
  ordered pairs (i, j), i != j, with `a_i >= a_j and b_i >= b_j` or
  `a_i < a_j and b_i < b_j`. Counting ordered pairs makes it symmetric: an
  agreeing pair counts 1, a disagreeing pair 0, a pair tied in one list only
  1/2, a pair tied in both 1.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import numpy as np
import scipy.stats

from tf_oneshot.errors import UserError


@dataclasses.dataclass(frozen=True)
class RankMetrics:
    """Rank agreement between two score lists over the same architectures.

    A statistic is NaN where it is undefined (fewer than two items, or a list
    whose values are all equal).
    """

    num_architectures: int
    kendall_tau: float
    spearman_rho: float
    pairwise_accuracy: float

    def to_json(self) -> dict:
        """JSON-able dict; NaN becomes None (JSON has no NaN)."""
        return {
            key: (None if isinstance(v, float) and math.isnan(v) else v)
            for key, v in dataclasses.asdict(self).items()
        }


def _as_pair(a: Sequence[float], b: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    a = np.asarray(a, dtype=np.float64).reshape(-1)
    b = np.asarray(b, dtype=np.float64).reshape(-1)
    if a.shape != b.shape:
        raise UserError(f"rank metrics need two lists of equal length, got {a.size} and {b.size}.")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise UserError("rank metrics need finite scores; found NaN or infinity.")
    return a, b


def _defined(a: np.ndarray, b: np.ndarray) -> bool:
    return a.size >= 2 and np.ptp(a) > 0 and np.ptp(b) > 0


def kendall_tau(a: Sequence[float], b: Sequence[float]) -> float:
    """Kendall's tau-b between `a` and `b` (ties corrected); NaN if undefined."""
    a, b = _as_pair(a, b)
    if not _defined(a, b):
        return math.nan
    return float(scipy.stats.kendalltau(a, b, variant="b").statistic)


def spearman_rho(a: Sequence[float], b: Sequence[float]) -> float:
    """Spearman's rho (Pearson correlation of average ranks); NaN if undefined."""
    a, b = _as_pair(a, b)
    if not _defined(a, b):
        return math.nan
    return float(scipy.stats.spearmanr(a, b).statistic)


def pairwise_accuracy(a: Sequence[float], b: Sequence[float]) -> float:
    """Share of ordered pairs that `a` and `b` order alike (NAO-V2 §3.3).

    Args:
        a: scores of one ranking (e.g. one-shot accuracies).
        b: scores of the other, same order of architectures.

    Returns:
        A number in [0, 1]: 1 when the rankings agree on every pair, 0 when
        one reverses the other; NaN with fewer than two items.
    """
    a, b = _as_pair(a, b)
    n = a.size
    if n < 2:
        return math.nan
    a_ge = a[:, None] >= a[None, :]
    b_ge = b[:, None] >= b[None, :]
    agree = (a_ge & b_ge) | (~a_ge & ~b_ge)
    np.fill_diagonal(agree, False)
    return float(agree.sum() / (n * (n - 1)))


def rank_metrics(oneshot: Sequence[float], standalone: Sequence[float]) -> RankMetrics:
    """All three statistics between one-shot and stand-alone accuracies."""
    a, b = _as_pair(oneshot, standalone)
    return RankMetrics(
        num_architectures=int(a.size),
        kendall_tau=kendall_tau(a, b),
        spearman_rho=spearman_rho(a, b),
        pairwise_accuracy=pairwise_accuracy(a, b),
    )
