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

With a dozen or two retrained architectures these statistics are noisy, so
`bootstrap_ci` gives each a percentile (or BCa) bootstrap confidence interval
over architectures (Efron & Tibshirani 1993, §13; `scipy.stats.bootstrap`):
the pairs (one-shot, stand-alone) are resampled with replacement, as a
different sample of architectures would have been drawn.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Callable, Sequence

import numpy as np
import scipy.stats

from tf_oneshot.errors import UserError


@dataclasses.dataclass(frozen=True)
class RankMetrics:
    """Rank agreement between two score lists over the same architectures.

    A statistic is NaN where it is undefined (fewer than two items, or a list
    whose values are all equal). The confidence intervals are (low, high) of
    `bootstrap_ci`, (NaN, NaN) where not computed or undefined.
    """

    num_architectures: int
    kendall_tau: float
    spearman_rho: float
    pairwise_accuracy: float
    kendall_tau_ci: tuple[float, float] = (math.nan, math.nan)
    spearman_rho_ci: tuple[float, float] = (math.nan, math.nan)

    def to_json(self) -> dict:
        """JSON-able dict; NaN becomes None (JSON has no NaN), an undefined interval None."""
        def clean(v):
            if isinstance(v, tuple):
                return None if any(math.isnan(x) for x in v) else list(v)
            return None if isinstance(v, float) and math.isnan(v) else v

        return {key: clean(v) for key, v in dataclasses.asdict(self).items()}


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


def _tau_b_along(x: np.ndarray, y: np.ndarray, axis: int = -1) -> np.ndarray:
    """Kendall tau-b of every row pair at once (the bootstrap's thousands of resamples).

    The same tau-b as `scipy.stats.kendalltau(variant="b")` (tests check it):
    (concordant - discordant) / sqrt((n0 - ties in x) (n0 - ties in y)), NaN
    where a row is constant.
    """
    x, y = np.moveaxis(x, axis, -1), np.moveaxis(y, axis, -1)
    n = x.shape[-1]
    dx = np.sign(x[..., :, None] - x[..., None, :])
    dy = np.sign(y[..., :, None] - y[..., None, :])
    pairs = n * (n - 1) / 2
    untied_x = pairs - ((dx == 0).sum((-2, -1)) - n) / 2
    untied_y = pairs - ((dy == 0).sum((-2, -1)) - n) / 2
    with np.errstate(invalid="ignore", divide="ignore"):
        return (dx * dy).sum((-2, -1)) / 2 / np.sqrt(untied_x * untied_y)


def _rho_along(x: np.ndarray, y: np.ndarray, axis: int = -1) -> np.ndarray:
    """Spearman rho of every row pair at once: Pearson of average ranks; NaN where a row is constant."""
    rx = scipy.stats.rankdata(x, axis=axis)
    ry = scipy.stats.rankdata(y, axis=axis)
    rx = rx - rx.mean(axis=axis, keepdims=True)
    ry = ry - ry.mean(axis=axis, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (rx * ry).sum(axis) / np.sqrt((rx * rx).sum(axis) * (ry * ry).sum(axis))


# Vectorized over resamples, as `scipy.stats.bootstrap(vectorized=True)` calls them.
STATISTICS: dict[str, Callable[..., np.ndarray]] = {
    "kendall_tau": _tau_b_along,
    "spearman_rho": _rho_along,
}


def bootstrap_ci(
    a: Sequence[float],
    b: Sequence[float],
    statistic: str = "kendall_tau",
    confidence: float = 0.95,
    n_resamples: int = 2000,
    method: str = "percentile",
    seed: int = 0,
) -> tuple[float, float]:
    """Bootstrap confidence interval of a rank statistic over architectures.

    The (a_i, b_i) pairs are resampled with replacement (`scipy.stats.bootstrap`,
    paired). A resample can be degenerate: all its one-shot or all its
    stand-alone values equal (e.g. one architecture drawn n times), where
    the statistic is undefined; the interval is taken over the defined
    resamples only, i.e. conditioned on a defined statistic.

    Args:
        a, b: the two score lists, same architectures in the same order.
        statistic: "kendall_tau" (tau-b) or "spearman_rho".
        confidence: e.g. 0.95 for a 95% interval.
        n_resamples: bootstrap resamples.
        method: "percentile" or "BCa" (bias-corrected and accelerated; where
            it cannot be computed, e.g. every resample gives the same value,
            the percentile interval is returned).
        seed: seeds the resampling (the interval is reproducible).

    Returns:
        (low, high); (NaN, NaN) with fewer than 3 architectures or fewer than
        half the resamples defined. A statistic equal on every defined
        resample (perfect agreement) gives (value, value).

    Raises:
        UserError: unequal lengths, non-finite scores, an unknown statistic or
            method, or a confidence outside (0, 1).
    """
    a, b = _as_pair(a, b)
    if statistic not in STATISTICS:
        raise UserError(f"unknown rank statistic {statistic!r}; use one of {', '.join(STATISTICS)}.")
    if method.lower() not in ("percentile", "bca"):
        raise UserError(f"unknown bootstrap method {method!r}; use 'percentile' or 'BCa'.")
    if not 0 < confidence < 1:
        raise UserError(f"confidence must be in (0, 1), e.g. 0.95; got {confidence}.")
    if a.size < 3 or n_resamples < 1:
        return math.nan, math.nan
    stat = STATISTICS[statistic]  # NaN on a degenerate resample
    rng = np.random.default_rng(seed)
    with warnings.catch_warnings():  # degenerate resamples are handled below
        warnings.simplefilter("ignore")
        result = scipy.stats.bootstrap((a, b), stat, paired=True, vectorized=True, n_resamples=n_resamples,
                                       confidence_level=confidence, method="percentile", rng=rng)
        values = np.asarray(result.bootstrap_distribution, dtype=np.float64)
        defined = values[np.isfinite(values)]
        if defined.size < max(1, n_resamples // 2):
            return math.nan, math.nan
        if np.ptp(defined) < 1e-12:  # e.g. perfect agreement: every resample says 1 (up to rounding)
            return float(defined[0]), float(defined[0])
        kept = dataclasses.replace(result, bootstrap_distribution=defined)
        methods = ["bca", "percentile"] if method.lower() == "bca" else ["percentile"]
        for name in methods:
            interval = scipy.stats.bootstrap((a, b), stat, paired=True, vectorized=True, n_resamples=0,
                                             confidence_level=confidence, method=name,
                                             bootstrap_result=kept).confidence_interval
            if np.isfinite(interval.low) and np.isfinite(interval.high):
                return float(interval.low), float(interval.high)
    return math.nan, math.nan


def rank_metrics(
    oneshot: Sequence[float], standalone: Sequence[float], n_resamples: int = 0, seed: int = 0
) -> RankMetrics:
    """All three statistics between one-shot and stand-alone scores.

    With `n_resamples` > 0, Kendall tau and Spearman rho also get 95%
    percentile bootstrap intervals (`bootstrap_ci`).
    """
    a, b = _as_pair(oneshot, standalone)
    cis = {f"{name}_ci": bootstrap_ci(a, b, name, n_resamples=n_resamples, seed=seed)
           for name in STATISTICS} if n_resamples > 0 else {}
    return RankMetrics(
        num_architectures=int(a.size),
        kendall_tau=kendall_tau(a, b),
        spearman_rho=spearman_rho(a, b),
        pairwise_accuracy=pairwise_accuracy(a, b),
        **cis,
    )


def partial_kendall_tau(a: Sequence[float], b: Sequence[float], given: Sequence[float]) -> float:
    """Kendall's partial tau of `a` and `b` given `given` (Kendall 1942): the cost-controlled tau.

    NAS searches under a budget, where a ranking that merely follows parameter
    count tells the user nothing the budget did not. The partial tau removes
    the part of the agreement that both rankings share with `given` (the
    parameter count):

        tau_ab.c = (tau_ab - tau_ac * tau_bc) / sqrt((1 - tau_ac^2) (1 - tau_bc^2)),

    every tau a tau-b (`scipy.stats.kendalltau`). A ranking by parameters
    itself has tau_ac = 1 and no partial tau (NaN): it carries no information
    beyond the parameters. Chosen over taus inside bins of equal parameter
    count because it needs no bin width and uses every pair.

    Returns:
        The partial tau in [-1, 1]; NaN where a tau is undefined or `a` or `b`
        is a monotone function of `given` (|tau| = 1).
    """
    a, b = _as_pair(a, b)
    c, _ = _as_pair(given, a)
    ab, ac, bc = kendall_tau(a, b), kendall_tau(a, c), kendall_tau(b, c)
    if math.isnan(ab + ac + bc) or max(abs(ac), abs(bc)) > 1 - 1e-9:  # rounding: a tau of 1 may read 0.9999...
        return math.nan
    return float((ab - ac * bc) / math.sqrt((1 - ac * ac) * (1 - bc * bc)))


def mean_tau_ci(rankings: np.ndarray, truth: Sequence[float], confidence: float = 0.95, n_resamples: int = 2000,
                seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean Kendall tau-b of R rankings against `truth`.

    Children are resampled with replacement, the same draw for every ranking
    (a different sample of architectures, as in `bootstrap_ci`); a resample
    where a tau is undefined is left out. With one ranking this is
    `bootstrap_ci`'s percentile interval of its tau.

    Returns:
        (low, high); (NaN, NaN) with fewer than 3 children or half the resamples undefined.
    """
    rankings = np.atleast_2d(np.asarray(rankings, np.float64))
    truth = np.asarray(truth, np.float64).reshape(-1)
    if rankings.shape[1] != truth.size:
        raise UserError(f"rank metrics need two lists of equal length, got {rankings.shape[1]} and {truth.size}.")
    if truth.size < 3 or n_resamples < 1:
        return math.nan, math.nan
    index = np.random.default_rng(seed).integers(0, truth.size, (n_resamples, truth.size))
    taus = np.stack([_tau_b_along(r[index], truth[index]) for r in rankings])  # [R, resamples]
    values = taus.mean(0)
    defined = values[np.isfinite(values)]
    if defined.size < max(1, n_resamples // 2):
        return math.nan, math.nan
    tail = 100 * (1 - confidence) / 2
    low, high = np.percentile(defined, [tail, 100 - tail])
    return float(low), float(high)
