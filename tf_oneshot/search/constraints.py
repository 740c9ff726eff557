"""Architecture constraints on parameters and multiply-adds, met by construction.

SPOS (Guo et al. 2019, §3.4, Eq. 5) searches under hard constraints such as
FLOPs <= 330M: "crossover and mutation are repeated to generate enough new
candidates that meet the given architecture constraints". A candidate that
breaks a constraint is therefore never scored: samplers draw until one fits
(rejection sampling, which keeps the draw uniform over the feasible set) and,
when fits are too rare for that, repair a draw by cost-directed mutations.

A constraint no architecture can meet is found at once from the least and
greatest cost over the space, computed by arithmetic (`cost_bounds`), and any
remaining joint infeasibility ends after a bounded number of attempts with a
UserError, never an endless loop.

Nothing here imports TensorFlow: search algorithms see only a `SearchSpace`.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Hashable
from typing import Any

import numpy as np

from tf_oneshot.errors import UserError
from tf_oneshot.search_spaces import Cost, SearchSpace

METRICS = ("params", "flops")
# A draw is repaired after this many rejected uniform draws (the acceptance
# rate is then below ~1/64: uniformity is traded for speed, and said so).
REJECTION_ATTEMPTS = 64
# Repair: rounds of cost-directed mutation, candidates tried per round.
REPAIR_ROUNDS = 200
REPAIR_CANDIDATES = 32
# How many fresh starts a sampler tries before declaring the constraint unmet.
RESTARTS = 4
# Spaces up to this size draw SPOS's uniform-constraint prior exactly, by enumeration.
ENUMERABLE = 4096


@dataclasses.dataclass(frozen=True)
class Constraints:
    """Inclusive bounds on the stand-alone model's cost; None means unbounded.

    Args:
        min_params, max_params: range of the Keras parameter count.
        min_flops, max_flops: range of multiply-adds per image.
    """

    min_params: int | None = None
    max_params: int | None = None
    min_flops: int | None = None
    max_flops: int | None = None

    def __post_init__(self) -> None:
        for name in ("min_params", "max_params", "min_flops", "max_flops"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0):
                raise UserError(f"--{name}={value!r} is invalid; expected a non-negative integer.")
        for metric in METRICS:
            lo, hi = self.range(metric)
            if lo > hi:
                raise UserError(
                    f"--min_{metric}={lo} is above --max_{metric}={hi}; no architecture can meet both."
                )

    @property
    def active(self) -> bool:
        """True if any bound is set."""
        return any(getattr(self, f.name) is not None for f in dataclasses.fields(self))

    def range(self, metric: str) -> tuple[float, float]:
        """(low, high) of `metric`, with 0 and +inf for missing bounds."""
        lo, hi = getattr(self, f"min_{metric}"), getattr(self, f"max_{metric}")
        return (0 if lo is None else lo, math.inf if hi is None else hi)

    def satisfied(self, cost: Cost) -> bool:
        """Whether `cost` lies inside every bound."""
        for metric in METRICS:
            lo, hi = self.range(metric)
            if not lo <= getattr(cost, metric) <= hi:
                return False
        return True

    def violation(self, cost: Cost, scale: dict[str, float]) -> float:
        """Distance of `cost` outside the bounds, each metric divided by `scale`."""
        total = 0.0
        for metric in METRICS:
            lo, hi = self.range(metric)
            value = getattr(cost, metric)
            total += (max(0.0, lo - value) + max(0.0, value - hi)) / scale[metric]
        return total

    def narrowed(self, metric: str, lo: float, hi: float) -> Constraints:
        """These constraints with `metric` further limited to [lo, hi]."""
        old_lo, old_hi = self.range(metric)
        new_lo, new_hi = max(old_lo, math.ceil(lo)), min(old_hi, math.floor(hi))
        return dataclasses.replace(
            self,
            **{f"min_{metric}": int(new_lo), f"max_{metric}": None if math.isinf(new_hi) else int(new_hi)},
        )

    def describe(self) -> str:
        """Human form, e.g. 'params <= 400000, 10000000 <= flops'."""
        parts = []
        for metric in METRICS:
            lo, hi = getattr(self, f"min_{metric}"), getattr(self, f"max_{metric}")
            if lo is not None and hi is not None:
                parts.append(f"{lo} <= {metric} <= {hi}")
            elif lo is not None:
                parts.append(f"{metric} >= {lo}")
            elif hi is not None:
                parts.append(f"{metric} <= {hi}")
        return ", ".join(parts) or "none"

    def to_json(self) -> dict[str, int | None]:
        return dataclasses.asdict(self)


# --------------------------------------------------------------------- costs
class CostModel:
    """Cost of an architecture, and the least and greatest cost over the space.

    The bounds are exact where the space knows them (`space.cost_bounds()`:
    by arithmetic, or by enumeration for small spaces), else estimated from
    samples and the all-on model; rejection attempts stay bounded either way,
    so an unmeetable constraint still ends quickly.
    """

    def __init__(self, space: SearchSpace):
        self.space = space
        exact = space.cost_bounds()
        self.exact_bounds = exact is not None
        self._bounds = exact if exact is not None else self._estimate_bounds()

    def count(self, arch: Hashable) -> Cost:
        """Parameters and multiply-adds of `arch` (`space.count`)."""
        return self.space.count(arch)

    def _estimate_bounds(self) -> dict[str, tuple[int, int]]:
        rng = np.random.default_rng(0)
        costs = [self.space.count(self.space.sample(rng)) for _ in range(2000)]
        costs.append(self.space.count_oneshot())
        return {
            metric: (min(getattr(c, metric) for c in costs), max(getattr(c, metric) for c in costs))
            for metric in METRICS
        }

    def bounds(self, metric: str) -> tuple[int, int]:
        """(least, greatest) `metric` over the space (estimated if not `exact_bounds`)."""
        return self._bounds[metric]


@functools.lru_cache(maxsize=8)
def cost_model(space: SearchSpace) -> CostModel:
    """A cached `CostModel` per (hashable, frozen) space."""
    return CostModel(space)


def cost_bounds(space: SearchSpace) -> dict[str, tuple[int, int]]:
    """Least and greatest params and multiply-adds over the space, by arithmetic."""
    model = cost_model(space)
    return {metric: model.bounds(metric) for metric in METRICS}


def check_feasible(space: SearchSpace, constraints: Constraints) -> None:
    """Raises UserError at once if a bound lies outside the space's cost range.

    Raises:
        UserError: naming the bound and the range the space spans.
    """
    model = cost_model(space)
    for metric in METRICS:
        lo, hi = constraints.range(metric)
        least, greatest = model.bounds(metric)
        if model.exact_bounds and (hi < least or lo > greatest):
            raise UserError(
                f"no architecture of this search space meets {constraints.describe()}: "
                f"{metric} ranges over {least}..{greatest}; choose bounds inside that range."
            )


# ------------------------------------------------------------------ sampling
class ConstrainedSampler:
    """Draws architectures that meet `constraints`, without scoring any.

    Args:
        space: the search space.
        constraints: the bounds to meet.

    Raises:
        UserError: (at construction) for a bound outside the space's range.
    """

    def __init__(self, space: SearchSpace, constraints: Constraints | None = None):
        self.space = space
        self.constraints = constraints or Constraints()
        self.costs = cost_model(space)
        check_feasible(space, self.constraints)
        self._scale = {
            m: max(1.0, float(self.costs.bounds(m)[1] - self.costs.bounds(m)[0])) for m in METRICS
        }
        self.repaired = 0  # draws that needed repair (not uniform); for reports
        self._bins: dict = {}

    def count(self, arch: Hashable) -> Cost:
        return self.costs.count(arch)

    def accepts(self, arch: Hashable, constraints: Constraints | None = None) -> bool:
        """Whether `arch` meets the constraints (or the narrower ones given)."""
        return (constraints or self.constraints).satisfied(self.costs.count(arch))

    def sample(
        self,
        rng: np.random.Generator,
        exclude: Any = (),
        constraints: Constraints | None = None,
    ) -> Hashable:
        """Draws one architecture meeting the constraints and not in `exclude`.

        Uniform over the feasible set while uniform draws fit often enough
        (rejection sampling); otherwise repairs a draw by cost-directed
        mutations (SPOS §3.4 "repeated to generate ... candidates that meet
        the constraints").

        Raises:
            UserError: if no fitting architecture turns up within the bounded
                number of attempts.
        """
        target = constraints or self.constraints
        for _ in range(RESTARTS):
            for _ in range(REJECTION_ATTEMPTS):
                arch = self.space.sample(rng)
                if arch not in exclude and self.accepts(arch, target):
                    return arch
            arch = self.repair(self.space.sample(rng), rng, target, exclude)
            if arch is not None:
                self.repaired += 1
                return arch
        raise UserError(self._unmet_message(target))

    def repair(
        self,
        arch: Hashable,
        rng: np.random.Generator,
        constraints: Constraints | None = None,
        exclude: Any = (),
    ) -> Hashable | None:
        """Moves `arch` into the constraints by cost-directed mutation; None if it fails.

        Each round tries a few light mutations and keeps the one closest to the
        bounds, also stepping sideways on a plateau (so an excluded but
        fitting architecture moves on to a fresh one). Bounded: REPAIR_ROUNDS.
        """
        target = constraints or self.constraints
        current = arch
        current_v = target.violation(self.costs.count(current), self._scale)
        for _ in range(REPAIR_ROUNDS):
            if current_v == 0.0 and current not in exclude:
                return current
            best, best_v = None, current_v
            for _ in range(REPAIR_CANDIDATES):
                candidate = self.space.mutate(current, rng, float(rng.uniform(0.02, 0.2)))
                v = target.violation(self.costs.count(candidate), self._scale)
                if v < best_v or (v == best_v and best is None and candidate != current):
                    best, best_v = candidate, v
            if best is not None:
                current, current_v = best, best_v
        return current if current_v == 0.0 and current not in exclude else None

    def _unmet_message(self, target: Constraints) -> str:
        ranges = ", ".join(
            f"{m} {self.costs.bounds(m)[0]}..{self.costs.bounds(m)[1]}" for m in METRICS
        )
        return (
            f"found no architecture meeting {target.describe()} after "
            f"{RESTARTS * REJECTION_ATTEMPTS} draws and {RESTARTS} repairs (the space spans {ranges}); "
            "the bounds may exclude every architecture, or all fitting ones are already taken: "
            "widen them."
        )

    def _enumerated_bins(self, metric: str, edges: np.ndarray) -> list[list[Hashable]] | None:
        """The feasible architectures of an enumerable space in each cost slice (cached)."""
        if self.space.size() > ENUMERABLE:
            return None
        key = (metric, tuple(edges))
        if key not in self._bins:
            bins = [[] for _ in range(len(edges) - 1)]
            for arch in self.space.enumerate():
                cost = self.costs.count(arch)
                if self.constraints.satisfied(cost):
                    value = getattr(cost, metric)
                    b = min(int(np.searchsorted(edges, value, side="right")) - 1, len(bins) - 1)
                    bins[max(b, 0)].append(arch)
            self._bins[key] = bins
        return self._bins[key]

    def uniform_constraint_sample(
        self,
        rng: np.random.Generator,
        exclude: Any = (),
        num_bins: int = 10,
        metric: str | None = None,
    ) -> Hashable:
        """SPOS §3.2 "uniform constraint sampling": a random cost range, then a fit.

        Picks one of `num_bins` equal slices of the feasible range of `metric`
        (multiply-adds unless only parameters are constrained) and draws until
        an architecture falls in it, so small and large architectures are
        equally represented rather than crowded at the typical size.
        """
        if metric is None:
            flops_bounded = self.constraints.min_flops is not None or self.constraints.max_flops is not None
            params_bounded = self.constraints.min_params is not None or self.constraints.max_params is not None
            metric = "params" if params_bounded and not flops_bounded else "flops"
        least, greatest = self.costs.bounds(metric)
        lo, hi = self.constraints.range(metric)
        lo, hi = max(lo, least), min(hi, greatest)
        edges = np.linspace(lo, hi, num_bins + 1)
        bins = self._enumerated_bins(metric, edges)
        if bins is not None:  # a small space: exact, a bin among the non-empty ones, then uniform in it
            fitting = [[a for a in members if a not in exclude] for members in bins]
            fitting = [members for members in fitting if members]
            if not fitting:
                raise UserError(self._unmet_message(self.constraints))
            members = fitting[int(rng.integers(len(fitting)))]
            return members[int(rng.integers(len(members)))]
        for b in rng.permutation(num_bins):
            if math.ceil(edges[b]) > math.floor(edges[b + 1]):
                continue  # a slice narrower than one unit holds no integer cost
            narrowed = self.constraints.narrowed(metric, edges[b], edges[b + 1])
            for _ in range(REJECTION_ATTEMPTS):
                arch = self.space.sample(rng)
                if arch not in exclude and self.accepts(arch, narrowed):
                    return arch
            arch = self.repair(self.space.sample(rng), rng, narrowed, exclude)
            if arch is not None:
                self.repaired += 1
                return arch
        return self.sample(rng, exclude)
