"""Architecture constraints on params, multiply-adds, BitOps and latency, met by construction.

SPOS (Guo et al. 2019, §3.4, Eq. 5) searches under hard constraints such as
FLOPs <= 330M, BitOps (§4, Table 6) or latency (Table 5): "crossover and
mutation are repeated to generate enough new candidates that meet the given
architecture constraints". A candidate that breaks a constraint is therefore
never scored: samplers draw until one fits (rejection sampling, which keeps
the draw uniform over the feasible set) and, when fits are too rare for
that, search algorithms repair a draw by cost-directed mutations (never the
training prior, `ConstrainedSampler.uniform_constraint_sample`).

Each metric is a maximum, a minimum or a range. Params, multiply-adds and
BitOps come from arithmetic (`space.count`); latency from a lookup table
measured on the target device (`tf_oneshot.search_spaces.latency`, `tf-oneshot latency`).
A constraint no architecture can meet is found at once from the least and
greatest cost over the space (`cost_bounds`; for latency the sums of the
table's per-block minima and maxima), and any remaining joint infeasibility
ends after a bounded number of attempts with a UserError, never an endless
loop.

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
from tf_oneshot.search_spaces import SearchSpace

METRICS = ("params", "flops", "bitops", "latency_ms")
INTEGER_METRICS = ("params", "flops", "bitops")
# How each metric is said in messages and which flag sets it.
UNITS = {"params": "parameters", "flops": "multiply-adds", "bitops": "BitOps", "latency_ms": "ms"}
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
# Uniform-constraint sampling (SPOS §3.2) estimates the cost ranges feasible
# architectures occupy from this many uniform feasible draws at a fixed seed,
# within at most CALIBRATION_ATTEMPTS uniform draws; a range holding under
# MIN_OCCUPANCY of them is treated as empty (drawing into it would take over
# 1 / MIN_OCCUPANCY rejections per draw); a range gives up after
# SLICE_PATIENCE times its expected number of uniform draws.
CALIBRATION_FEASIBLE = 4000
CALIBRATION_ATTEMPTS = 400_000
CALIBRATION_SEED = 20_190_406
MIN_OCCUPANCY = 0.002
SLICE_PATIENCE = 50


@dataclasses.dataclass(frozen=True)
class Constraints:
    """Inclusive bounds on the stand-alone model's cost; None means unbounded.

    Args:
        min_params, max_params: range of the Keras parameter count.
        min_flops, max_flops: range of multiply-adds per image.
        min_bitops, max_bitops: range of BitOps per image (SPOS §3.3,
            mixed-precision spaces only).
        min_latency_ms, max_latency_ms: range of the latency the table sums.
        latency_table: the lookup table of `tf-oneshot latency` (a path);
            required with a latency bound.
    """

    min_params: int | None = None
    max_params: int | None = None
    min_flops: int | None = None
    max_flops: int | None = None
    min_bitops: int | None = None
    max_bitops: int | None = None
    min_latency_ms: float | None = None
    max_latency_ms: float | None = None
    latency_table: str | None = None

    def __post_init__(self) -> None:
        for metric in METRICS:
            for name in (f"min_{metric}", f"max_{metric}"):
                value = getattr(self, name)
                if value is None:
                    continue
                if metric in INTEGER_METRICS:
                    ok = not isinstance(value, bool) and isinstance(value, (int, np.integer)) and value >= 0
                    expected = "a non-negative integer"
                else:
                    ok = not isinstance(value, bool) and isinstance(value, (int, float)) and 0 <= value < math.inf
                    expected = "a non-negative number of milliseconds"
                if not ok:
                    raise UserError(f"--{name}={value!r} is invalid; expected {expected}.")
        for metric in METRICS:
            lo, hi = self.range(metric)
            if lo > hi:
                raise UserError(
                    f"--min_{metric}={lo} is above --max_{metric}={hi}; no architecture can meet both."
                )
        if self.bounded("latency_ms") and not self.latency_table:
            raise UserError("--min/max_latency_ms need --latency_table=FILE: measure one on the target device "
                            "with `tf-oneshot latency --space=... --output=FILE`.")

    @property
    def active(self) -> bool:
        """True if any bound is set."""
        return any(self.bounded(m) for m in METRICS)

    def bounded(self, metric: str) -> bool:
        """Whether `metric` has a lower or an upper bound."""
        return getattr(self, f"min_{metric}") is not None or getattr(self, f"max_{metric}") is not None

    @property
    def metrics(self) -> tuple[str, ...]:
        """The metrics with a bound, in `METRICS` order."""
        return tuple(m for m in METRICS if self.bounded(m))

    def range(self, metric: str) -> tuple[float, float]:
        """(low, high) of `metric`, with 0 and +inf for missing bounds."""
        lo, hi = getattr(self, f"min_{metric}"), getattr(self, f"max_{metric}")
        return (0 if lo is None else lo, math.inf if hi is None else hi)

    def satisfied(self, cost: Any) -> bool:
        """Whether `cost` (a `Cost`, or `Costs` with latency) lies inside every bound."""
        for metric in self.metrics:
            lo, hi = self.range(metric)
            value = getattr(cost, metric, None)
            if value is None or not lo <= value <= hi:
                return False
        return True

    def violation(self, cost: Any, scale: dict[str, float]) -> float:
        """Distance of `cost` outside the bounds, each metric divided by `scale`."""
        total = 0.0
        for metric in self.metrics:
            lo, hi = self.range(metric)
            value = getattr(cost, metric)
            total += (max(0.0, lo - value) + max(0.0, value - hi)) / scale[metric]
        return total

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

    def to_json(self) -> dict[str, Any]:
        """The bounds as JSON; the new fields only when set, so older records still compare equal."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        for name in ("min_bitops", "max_bitops", "min_latency_ms", "max_latency_ms", "latency_table"):
            if out[name] is None:
                del out[name]
        return out


@dataclasses.dataclass(frozen=True)
class Costs:
    """Every metric of one architecture: arithmetic counts and, with a table, latency."""

    params: int
    flops: int
    bitops: int | None = None
    latency_ms: float | None = None


# --------------------------------------------------------------------- costs
class CostModel:
    """Cost of an architecture, and the least and greatest cost over the space.

    The bounds are exact where the space knows them (`space.cost_bounds()`:
    by arithmetic, or by enumeration for small spaces; latency: the sums of
    the table's per-block extremes), else estimated from samples and the
    all-on model; rejection attempts stay bounded either way, so an
    unmeetable constraint still ends quickly.

    Args:
        space: the search space.
        latency_table: path of a latency table measured for `space`, or None.
    """

    def __init__(self, space: SearchSpace, latency_table: str | None = None):
        self.space = space
        self.table = None
        if latency_table:
            from tf_oneshot.search_spaces.latency import LatencyTable

            self.table = LatencyTable.load(latency_table, space)
        exact = space.cost_bounds() or {}
        self._bounds: dict[str, tuple[float, float]] = dict(exact)
        self._exact = set(exact)
        missing = [m for m in INTEGER_METRICS if m not in self._bounds]
        if missing:
            self._bounds.update({m: b for m, b in self._estimate_bounds().items() if m in missing})
        if self.table is not None:
            self._bounds["latency_ms"] = self.table.bounds()
            self._exact.add("latency_ms")

    @property
    def exact_bounds(self) -> bool:
        """Whether the params and multiply-adds bounds are exact."""
        return {"params", "flops"} <= self._exact

    def is_exact(self, metric: str) -> bool:
        return metric in self._exact

    def count(self, arch: Hashable) -> Costs:
        """Params, multiply-adds, BitOps (`space.count`) and the table's latency of `arch`."""
        cost = self.space.count(arch)
        latency = None if self.table is None else self.table.latency_ms(self.space, arch)
        return Costs(cost.params, cost.flops, cost.bitops, latency)

    def _estimate_bounds(self) -> dict[str, tuple[int, int]]:
        rng = np.random.default_rng(0)
        costs = [self.space.count(self.space.sample(rng)) for _ in range(2000)]
        costs.append(self.space.count_oneshot())
        out = {metric: (min(getattr(c, metric) for c in costs), max(getattr(c, metric) for c in costs))
               for metric in ("params", "flops")}
        if all(c.bitops is not None for c in costs):
            out["bitops"] = (min(c.bitops for c in costs), max(c.bitops for c in costs))
        return out

    def has(self, metric: str) -> bool:
        """Whether this space (and table) gives `metric` at all."""
        return metric in self._bounds

    def bounds(self, metric: str) -> tuple[float, float]:
        """(least, greatest) `metric` over the space (estimated if not `is_exact(metric)`)."""
        return self._bounds[metric]


@functools.lru_cache(maxsize=8)
def cost_model(space: SearchSpace, latency_table: str | None = None) -> CostModel:
    """A cached `CostModel` per (hashable, frozen) space and latency table path."""
    return CostModel(space, latency_table)


def cost_bounds(space: SearchSpace) -> dict[str, tuple[int, int]]:
    """Least and greatest params and multiply-adds (and BitOps if any) over the space, by arithmetic."""
    model = cost_model(space)
    return {metric: model.bounds(metric) for metric in INTEGER_METRICS if model.has(metric)}


def check_feasible(space: SearchSpace, constraints: Constraints) -> None:
    """Raises UserError at once if a bound lies outside the space's cost range.

    Raises:
        UserError: naming the bound and the range the space spans, or a
            metric the space does not have (BitOps of a full-precision space).
    """
    model = cost_model(space, constraints.latency_table)
    for metric in constraints.metrics:
        if not model.has(metric):
            raise UserError(
                f"search space {space.name!r} has no {UNITS[metric]} (a full-precision space counts no BitOps); "
                f"drop --min/max_{metric}."
            )
        lo, hi = constraints.range(metric)
        least, greatest = model.bounds(metric)
        if model.is_exact(metric) and (hi < least or lo > greatest):
            shown = (f"{least:.3f}..{greatest:.3f} ms by {model.table.path}" if metric == "latency_ms"
                     else f"{least}..{greatest}")
            raise UserError(
                f"no architecture of this search space meets {constraints.describe()}: "
                f"{metric} ranges over {shown}; choose bounds inside that range."
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
        self.costs = cost_model(space, self.constraints.latency_table)
        check_feasible(space, self.constraints)
        self._scale = {
            m: max(1e-9 if m == "latency_ms" else 1.0, float(self.costs.bounds(m)[1] - self.costs.bounds(m)[0]))
            for m in METRICS if self.costs.has(m)
        }
        self.repaired = 0  # draws that needed repair (not uniform); for reports
        self._bins: dict = {}

    def count(self, arch: Hashable) -> Costs:
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
            f"{m} {self.costs.bounds(m)[0]}..{self.costs.bounds(m)[1]}"
            for m in METRICS if self.costs.has(m) and (m in ("params", "flops") or target.bounded(m))
        )
        return (
            f"found no architecture meeting {target.describe()} after "
            f"{RESTARTS * REJECTION_ATTEMPTS} draws and {RESTARTS} repairs (the space spans {ranges}); "
            "the bounds may exclude every architecture, or all fitting ones are already taken: "
            "widen them."
        )

    def _metric_of(self, metric: str | None) -> str:
        if metric is not None:
            return metric
        bounded = [m for m in ("flops", "bitops", "latency_ms", "params") if self.constraints.bounded(m)]
        return bounded[0] if bounded else "flops"

    def occupied_ranges(self, metric: str, num_bins: int = 10) -> OccupiedRanges:
        """The cost ranges feasible architectures occupy, estimated once and cached (SPOS §3.2).

        `num_bins` equal slices of [least, greatest] `metric` among the
        feasible architectures: all of them for a space of at most ENUMERABLE,
        else CALIBRATION_FEASIBLE uniform feasible draws at a fixed seed (so
        every host gets the same ranges).

        Raises:
            UserError: no architecture, or too few uniform draws, meet the constraints.
        """
        key = (metric, num_bins)
        if key not in self._bins:
            exact = self.space.size() <= ENUMERABLE
            if exact:
                archs = [a for a in self.space.enumerate() if self.accepts(a)]
                rate = len(archs) / max(self.space.size(), 1)
            else:
                archs, rate = self._feasible_draws()
            if not archs:
                raise UserError(self._unmet_message(self.constraints))
            values = [getattr(self.count(a), metric) for a in archs]
            self._bins[key] = OccupiedRanges.of(metric, archs, values, num_bins, rate, exact)
        return self._bins[key]

    def _feasible_draws(self) -> tuple[list[Hashable], float]:
        """CALIBRATION_FEASIBLE uniform draws meeting the constraints (rejection, fixed seed), and their rate."""
        rng = np.random.default_rng(CALIBRATION_SEED)
        out = []
        attempts = 0
        while attempts < CALIBRATION_ATTEMPTS and len(out) < CALIBRATION_FEASIBLE:
            attempts += 1
            arch = self.space.sample(rng)
            if self.accepts(arch):
                out.append(arch)
        if len(out) < CALIBRATION_FEASIBLE // 10:
            raise UserError(
                f"uniform constraint sampling needs uniform draws to meet {self.constraints.describe()} at least "
                f"sometimes; {len(out)} of {attempts} did: widen the bounds, or train with --sampler=uniform and "
                "search under the constraint."
            )
        return out, len(out) / attempts

    def uniform_constraint_sample(
        self,
        rng: np.random.Generator,
        exclude: Any = (),
        num_bins: int = 10,
        metric: str | None = None,
    ) -> Hashable:
        """SPOS §3.2 "uniform constraint sampling": a random occupied cost range, then a fit.

        Picks one of the occupied slices of the feasible range of `metric`
        (`occupied_ranges`; SPOS's FLOPs if bounded, else the first bounded of
        BitOps, latency and params) uniformly, then draws architectures
        uniformly until one meets the constraints inside it. Within a slice
        the draw is thus distributed as rejection sampling distributes it, and
        small and large architectures train equally often rather than crowded
        at the typical size. No repair: cost-directed mutations would pile
        draws up at a slice's edge.

        Raises:
            UserError: no architecture outside `exclude` turned up in any slice.
        """
        ranges = self.occupied_ranges(self._metric_of(metric), num_bins)
        for b in rng.permutation(len(ranges.slices)):
            if ranges.members is not None:  # a small space: uniform over the slice's members
                members = [a for a in ranges.members[b] if a not in exclude]
                if members:
                    return members[int(rng.integers(len(members)))]
                continue
            for _ in range(ranges.attempts(b)):
                arch = self.space.sample(rng)
                if arch in exclude:
                    continue
                cost = self.count(arch)
                if self.constraints.satisfied(cost) and ranges.slice_of(getattr(cost, ranges.metric)) == b:
                    return arch
        raise UserError(self._unmet_message(self.constraints))


@dataclasses.dataclass(frozen=True)
class OccupiedRanges:
    """The cost slices that feasible architectures occupy (SPOS §3.2's ranges), from an estimate.

    Args:
        metric: the cost the slices divide.
        edges: num_bins + 1 equal-width edges from the least to the greatest feasible cost.
        slices: the indices of the occupied slices: those holding at least
            MIN_OCCUPANCY of the feasible architectures (a rarer slice would
            cost over 1 / MIN_OCCUPANCY rejected draws per training draw).
        shares: the share of feasible architectures in each occupied slice.
        feasible_rate: the share of uniform draws that meet the constraints.
        members: per occupied slice, its architectures, when the space was enumerated.
    """

    metric: str
    edges: tuple[float, ...]
    slices: tuple[int, ...]
    shares: tuple[float, ...]
    feasible_rate: float
    members: tuple[tuple[Hashable, ...], ...] | None = None

    @classmethod
    def of(cls, metric: str, archs: list[Hashable], values: list[float], num_bins: int, feasible_rate: float,
           exact: bool) -> OccupiedRanges:
        """The ranges of feasible `archs` whose `metric` costs are `values` (all of them if `exact`)."""
        edges = tuple(float(e) for e in np.linspace(min(values), max(values), num_bins + 1))
        index = [_slice_of(edges, v) for v in values]
        counts = np.bincount(index, minlength=num_bins)
        floor = 1 if exact else MIN_OCCUPANCY * len(values)
        slices = tuple(int(b) for b in np.flatnonzero(counts >= floor))
        members = (tuple(tuple(a for a, i in zip(archs, index) if i == b) for b in slices) if exact else None)
        return cls(metric, edges, slices, tuple(float(counts[b] / len(values)) for b in slices), feasible_rate,
                   members)

    def slice_of(self, value: float) -> int | None:
        """The position in `slices` of the occupied slice holding `value`; None outside them."""
        if not self.edges[0] <= value <= self.edges[-1]:
            return None
        b = _slice_of(self.edges, value)
        return self.slices.index(b) if b in self.slices else None

    def bounds(self, position: int) -> tuple[float, float]:
        """(low, high) cost of the occupied slice at `position`."""
        b = self.slices[position]
        return self.edges[b], self.edges[b + 1]

    def attempts(self, position: int) -> int:
        """Uniform draws allowed for the slice at `position`: SLICE_PATIENCE times the expected number."""
        expected = 1.0 / max(self.shares[position] * self.feasible_rate, 1e-12)
        return int(min(max(SLICE_PATIENCE * expected, 1000), CALIBRATION_ATTEMPTS))


def _slice_of(edges: tuple[float, ...], value: float) -> int:
    """The equal-width slice of `edges` holding `value` (the last slice holds its upper edge)."""
    b = int(np.searchsorted(edges, value, side="right")) - 1
    return min(max(b, 0), len(edges) - 2)
