"""Sampling rules: which paths each ghost batch trains at each step (`--sampler`).

One-shot training activates a sub-network per ghost batch (Bender et al.
2018, §3.2: one pattern per ghost batch, the same in every cell). Papers
differ only in the rule that picks it:

- "path_dropout" (Bender et al. 2018, §3.2): every path on, each node's
  paths dropped in the graph with a linearly ramped s * r^(1/k);
- "uniform" (SPOS, Guo et al. 2019, §3.2): one architecture drawn uniformly;
- "uniform_constraint" (SPOS §3.2): a cost range drawn uniformly, then an
  architecture that falls in it;
- "proportional" (NAO-V2, Luo et al. 2019, §4.2, Eq. 1): an architecture
  drawn with probability proportional to its parameter count.

How many architectures a step trains is `--path_per`: one per step, shared
by every replica and ghost batch (SPOS §3.2, Eq. 8: "in each step of
optimization, an architecture is randomly sampled"; "Deeper insights" App.
A.1: one child per mini-batch), one per replica, or one per ghost batch
(Bender et al. 2018, §3.2). `global_masks` spreads the draws over the ghost
batches of the global batch.

A sampler is stateless: the masks of a step depend only on (seed, step), so
every host and replica draws the same global masks and a restart from a
checkpoint replays them. Host draws use numpy; only path dropout runs in the
graph (it needs no host round trip per step), and TensorFlow is imported
only when a path-dropout sampler is built.
"""

from __future__ import annotations

import abc
from collections.abc import Hashable, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from tf_oneshot.errors import UserError
from tf_oneshot.search_spaces import SearchSpace
from tf_oneshot.training.config import PATH_PER

if TYPE_CHECKING:
    import tensorflow as tf

    from tf_oneshot.search_spaces.constraints import Constraints

# Architectures drawn (at a fixed seed) to estimate how often a path is on,
# where the space is too large to enumerate; ~1.5% standard error on a share.
CALIBRATION_DRAWS = 1024
CALIBRATION_SEED = 20_190_612
# Spaces up to this size get exact on-frequencies by enumeration.
EXACT_LIMIT = 4096
# Rejection draws before proportional sampling gives up (acceptance is at
# least min/max params, so this is never reached for a sane space).
MAX_REJECTIONS = 100_000


class Sampler(abc.ABC):
    """Decides which paths each ghost batch trains at a step; stateless from (seed, step).

    Args:
        space: the search space.
        seed: the run's seed (non-negative).
        total_steps: length of training (schedules ramp over it).
    """

    name: ClassVar[str] = ""

    def __init__(self, space: SearchSpace, *, seed: int = 0, total_steps: int = 1) -> None:
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise UserError(f"sampler seed must be a non-negative integer; got {seed!r}.")
        if isinstance(total_steps, bool) or not isinstance(total_steps, (int, np.integer)) or total_steps < 1:
            raise UserError(f"sampler total_steps must be a positive integer; got {total_steps!r}.")
        self.space = space
        self.seed = int(seed)
        self.total_steps = int(total_steps)
        self._shapes = space.mask_shapes()
        self._all_on = {k: np.asarray(v, np.float32) for k, v in space.all_on_masks().items()}

    @property
    def default_path_per(self) -> str:
        """Where the architectures of a step differ when --path_per is not given."""
        return "ghost_batch"

    def rng(self, step: int) -> np.random.Generator:
        """The host generator of `step`: the same on every host and after a restart."""
        return np.random.default_rng([self.seed, int(step)])

    @abc.abstractmethod
    def host_masks(self, step: int, num_ghosts: int) -> dict[str, np.ndarray]:
        """float32 masks [num_ghosts, *space.mask_shapes()[key]] for every key.

        The architectures the ghost batches of the GLOBAL batch train at
        `step`, drawn on the host and deterministic in (seed, step).
        """

    def in_graph(self, masks: dict[str, tf.Tensor], step: tf.Tensor,
                 seed: tf.Tensor | None = None) -> dict[str, tf.Tensor]:
        """In-graph transformation inside the compiled train step (identity here)."""
        return masks

    @abc.abstractmethod
    def skipped_share(self, step: int, ghosts: int) -> float:
        """Expected share of the skip-mask entries off in each of `ghosts` ghost batches.

        Only entries of `space.skip_masks()` that are on in `all_on_masks()`
        count. The trainer skips (tf.cond) inactive candidates once this share
        reaches its threshold: below it, the conds cost more than they save.
        """

    @abc.abstractmethod
    def describe(self, step: int) -> str:
        """A few words for the training log."""

    def summaries(self, step: int) -> dict[str, float]:
        """Scalars for the training summaries ("train/<name>"); none by default."""
        return {}

    def _skip_entries(self) -> dict[str, np.ndarray]:
        """Per skip mask, the boolean positions that are on in the all-on masks."""
        return {key: self._all_on[key] > 0.5 for key in self.space.skip_masks()}

    def _tile_all_on(self, num_ghosts: int) -> dict[str, np.ndarray]:
        return {k: np.repeat(v[None], num_ghosts, axis=0) for k, v in self._all_on.items()}


# ---------------------------------------------------------------- path dropout
class PathDropoutSampler(Sampler):
    """Bender et al. 2018, §3.2: all paths on, scheduled path dropout in the graph.

    The host masks are the all-on masks; `in_graph` drops each path of a
    node with k paths with probability s * r^(1/k) (`layers.PathDropout`),
    on the masks of `space.dropout_masks()`, drawn from (seed, step).

    Args:
        rate: r, the chance that all paths of a node are dropped at the end of the ramp.
        schedule: "linear" (0 at step 0, full at `total_steps`) or "constant".
        all_dropped: "zero" or "keep_one" (`layers.path_dropout.ALL_DROPPED_RULES`).
    """

    name = "path_dropout"

    def __init__(self, space: SearchSpace, *, seed: int = 0, total_steps: int = 1,
                 rate: float = 0.1, schedule: str = "linear", all_dropped: str = "zero") -> None:
        super().__init__(space, seed=seed, total_steps=total_steps)
        from tf_oneshot.layers.path_dropout import PathDropout  # imports TensorFlow

        try:
            self.layer = PathDropout(rate, total_steps=self.total_steps, schedule=schedule,
                                     all_dropped=all_dropped, seed=self.seed, keys=space.dropout_masks())
        except ValueError as e:
            raise UserError(f"--sampler=path_dropout: {e}") from None
        self.rate, self.schedule, self.all_dropped = float(rate), schedule, all_dropped
        # k of every row of every dropout mask (its on paths in the all-on model).
        self._k = {key: self._all_on[key].sum(-1, keepdims=True) for key in space.dropout_masks()}

    def host_masks(self, step: int, num_ghosts: int) -> dict[str, np.ndarray]:
        return self._tile_all_on(num_ghosts)

    def in_graph(self, masks: dict[str, tf.Tensor], step: tf.Tensor,
                 seed: tf.Tensor | None = None) -> dict[str, tf.Tensor]:
        return self.layer(masks, step=step, seed=seed, training=True)

    def ramp(self, step: int) -> float:
        """The schedule factor s at `step` (as `PathDropout.ramp`)."""
        if self.schedule == "constant":
            return 1.0
        return min(max(step / self.total_steps, 0.0), 1.0)

    def drop_probability(self, step: int, k: float) -> float:
        """Per-path drop probability s * r^(1/k) of a node with k paths."""
        return self.ramp(step) * self.rate ** (1.0 / max(k, 1.0))

    def _off_probability(self, step: int, k: np.ndarray) -> np.ndarray:
        """P(a path of a node with k paths is off in one ghost batch)."""
        p = self.ramp(step) * self.rate ** (1.0 / np.maximum(k, 1.0))
        if self.all_dropped == "keep_one":
            # All k dropped (p^k), then one of them put back uniformly.
            p = p - p ** k / np.maximum(k, 1.0)
        return p

    def skipped_share(self, step: int, ghosts: int) -> float:
        shares = []
        for key, on in self._skip_entries().items():
            if key in self._k:
                off = np.broadcast_to(self._off_probability(step, self._k[key]), on.shape)[on]
            else:
                off = np.zeros(int(on.sum()))
            shares.append(off ** ghosts)
        shares = np.concatenate(shares) if shares else np.zeros(0)
        return float(shares.mean()) if shares.size else 0.0

    def _largest_fan_in(self) -> int | None:
        """k of the widest node among the skippable candidates (Bender: an op sum, k = 7)."""
        keys = [key for key in self.space.skip_masks() if key in self._k] or list(self._k)
        ks = [int(self._k[key].max()) for key in keys if self._k[key].size]
        return max(ks) if ks else None

    def summaries(self, step: int) -> dict[str, float]:
        k = self._largest_fan_in()
        return {} if k is None else {"drop_probability_ops": self.drop_probability(step, k)}

    def describe(self, step: int) -> str:
        k = self._largest_fan_in()
        if k is None:
            return "path dropout: no dropout masks"
        return f"drop p(k={k}) {self.drop_probability(step, k):.3f}"


# ------------------------------------------------------- architecture samplers
class ArchitectureSampler(Sampler):
    """A rule that draws one whole architecture per ghost batch on the host."""

    def __init__(self, space: SearchSpace, *, seed: int = 0, total_steps: int = 1) -> None:
        super().__init__(space, seed=seed, total_steps=total_steps)
        self._frequencies: dict[str, np.ndarray] | None = None

    @abc.abstractmethod
    def draw(self, rng: np.random.Generator) -> Hashable:
        """One architecture."""

    def host_masks(self, step: int, num_ghosts: int) -> dict[str, np.ndarray]:
        rng = self.rng(step)
        if num_ghosts < 1:
            return {k: np.zeros((0, *s), np.float32) for k, s in self._shapes.items()}
        archs = [self.draw(rng) for _ in range(num_ghosts)]
        return {k: np.asarray(v, np.float32) for k, v in self.space.encode_batch(archs).items()}

    def on_frequencies(self) -> dict[str, np.ndarray]:
        """Per mask entry, the probability that a drawn architecture has it on.

        Default: the share of CALIBRATION_DRAWS fixed-seed draws; subclasses
        with an exact answer override `_exact_frequencies`.
        """
        if self._frequencies is None:
            exact = self._exact_frequencies()
            if exact is None:
                rng = np.random.default_rng(CALIBRATION_SEED)
                archs = [self.draw(rng) for _ in range(CALIBRATION_DRAWS)]
                exact = _weighted_mean(self.space, archs, np.ones(len(archs)))
            self._frequencies = exact
        return self._frequencies

    def _exact_frequencies(self) -> dict[str, np.ndarray] | None:
        return None

    def skipped_share(self, step: int, ghosts: int) -> float:
        # Ghost batches draw independently: an entry on with frequency f is off
        # in all of them with probability (1 - f)^ghosts.
        frequencies = self.on_frequencies()
        shares = [(1.0 - frequencies[key][on]) ** ghosts for key, on in self._skip_entries().items()]
        shares = np.concatenate(shares) if shares else np.zeros(0)
        return float(np.clip(shares, 0.0, 1.0).mean()) if shares.size else 0.0


def _weighted_mean(space: SearchSpace, archs: Sequence[Hashable], weights: np.ndarray) -> dict[str, np.ndarray]:
    """Weighted mean of the architectures' masks (weights need not sum to 1)."""
    weights = np.asarray(weights, np.float64) / float(np.sum(weights))
    total = {k: np.zeros(s, np.float64) for k, s in space.mask_shapes().items()}
    for arch, w in zip(archs, weights):
        for k, v in space.encode(arch).items():
            total[k] += w * v
    return total


def _check_pool(space: SearchSpace, pool: Sequence[Hashable] | None) -> tuple[Hashable, ...] | None:
    if pool is None:
        return None
    pool = tuple(space.validate(a) for a in pool)
    if not pool:
        raise UserError("the candidate pool to sample from is empty.")
    return pool


class UniformSampler(ArchitectureSampler):
    """SPOS §3.2: one architecture drawn uniformly per ghost batch.

    Uniform sampling trains all architectures "fully and equally", keeping the
    shared weights from co-adapting to any one of them. With `pool`, uniform
    over those candidates (NAO-WS / NAO-V2's iterated loop trains its pool).
    """

    name = "uniform"

    def __init__(self, space: SearchSpace, *, seed: int = 0, total_steps: int = 1,
                 pool: Sequence[Hashable] | None = None) -> None:
        super().__init__(space, seed=seed, total_steps=total_steps)
        self.pool = _check_pool(space, pool)

    @property
    def default_path_per(self) -> str:
        """SPOS §3.2, Eq. 8: one architecture per step; over a pool (NAO's loop), one per ghost batch."""
        return "ghost_batch" if self.pool is not None else "step"

    def draw(self, rng: np.random.Generator) -> Hashable:
        if self.pool is not None:
            return self.pool[int(rng.integers(len(self.pool)))]
        return self.space.sample(rng)

    def _exact_frequencies(self) -> dict[str, np.ndarray] | None:
        if self.pool is not None:
            return _weighted_mean(self.space, self.pool, np.ones(len(self.pool)))
        by_decision = _decision_frequencies(self.space)
        if by_decision is not None:
            return by_decision
        if self.space.size() <= EXACT_LIMIT:
            archs = list(self.space.enumerate())
            return _weighted_mean(self.space, archs, np.ones(len(archs)))
        return None

    def describe(self, step: int) -> str:
        return f"uniform over {len(self.pool)} candidates" if self.pool is not None else "uniform"


def _decision_frequencies(space: SearchSpace) -> dict[str, np.ndarray] | None:
    """Exact on-frequencies under uniform sampling when each mask is one decision's multi-hot.

    That is the base `SearchSpace` layout (mask key = decision name); spaces
    with their own layout (the Bender cell masks) return None.
    """
    decisions = tuple(space.decisions())
    shapes = space.mask_shapes()
    if set(shapes) != {d.name for d in decisions} or any(shapes[d.name] != (len(d.options),) for d in decisions):
        return None
    out = {d.name: np.mean([d.multi_hot(v) for v in d.values()], axis=0) for d in decisions}
    # Trust the layout only if the space encodes a sample that way.
    arch = space.sample(np.random.default_rng(CALIBRATION_SEED))
    encoded = space.encode(arch)
    for d, v in zip(decisions, space.values_of(arch)):
        if not np.array_equal(encoded[d.name], np.asarray(d.multi_hot(v), np.float32)):
            return None
    return out


class UniformConstraintSampler(ArchitectureSampler):
    """SPOS §3.2 "uniform constraint sampling": a cost range drawn uniformly, then a fit.

    Draws one of ten equal slices of the constrained FLOPs range (or BitOps,
    table latency or params, when FLOPs are not bounded), then architectures
    until one falls in it, so small and large models of
    the range train equally often rather than crowding at the typical size
    (`ConstrainedSampler.uniform_constraint_sample`).

    Args:
        constraints: the range; at least one bound must be set.
    """

    name = "uniform_constraint"

    def __init__(self, space: SearchSpace, *, seed: int = 0, total_steps: int = 1,
                 constraints: Constraints | None = None) -> None:
        super().__init__(space, seed=seed, total_steps=total_steps)
        from tf_oneshot.search_spaces.constraints import ConstrainedSampler

        if constraints is None or not constraints.active:
            raise UserError(
                "--sampler=uniform_constraint needs a cost range: set --min_flops/--max_flops, "
                "--min_params/--max_params, --min_bitops/--max_bitops or --min/max_latency_ms with --latency_table."
            )
        self.constraints = constraints
        self.sampler = ConstrainedSampler(space, constraints)

    @property
    def default_path_per(self) -> str:
        """SPOS §3.2, Eq. 8: one architecture per step."""
        return "step"

    def draw(self, rng: np.random.Generator) -> Hashable:
        return self.sampler.uniform_constraint_sample(rng)

    def describe(self, step: int) -> str:
        return f"uniform constraint ({self.constraints.describe()})"


class ProportionalSampler(ArchitectureSampler):
    """NAO-V2 §4.2, Eq. 1: an architecture drawn with probability ∝ its parameter count.

    Uniform sampling gives large architectures as many updates as small ones,
    though they need more to converge; sampling in proportion to model size
    balances them. Over the space: rejection (draw uniformly, accept with
    params / upper bound, the bound from `space.cost_bounds()` or the all-on
    model). Over a `pool`: exact.
    """

    name = "proportional"

    def __init__(self, space: SearchSpace, *, seed: int = 0, total_steps: int = 1,
                 pool: Sequence[Hashable] | None = None) -> None:
        super().__init__(space, seed=seed, total_steps=total_steps)
        self.pool = _check_pool(space, pool)
        if self.pool is not None:
            params = np.array([space.count(a).params for a in self.pool], np.float64)
            if params.sum() <= 0:
                raise UserError("--sampler=proportional: every candidate of the pool has 0 parameters.")
            self.probabilities = params / params.sum()
            self.upper = None
        else:
            bounds = space.cost_bounds()
            self.upper = int(bounds["params"][1]) if bounds else int(space.count_oneshot().params)
            if self.upper <= 0:
                raise UserError("--sampler=proportional: the space's architectures have no parameters.")

    def draw(self, rng: np.random.Generator) -> Hashable:
        if self.pool is not None:
            return self.pool[int(rng.choice(len(self.pool), p=self.probabilities))]
        for _ in range(MAX_REJECTIONS):
            arch = self.space.sample(rng)
            if rng.random() * self.upper < self.space.count(arch).params:
                return arch
        raise UserError(f"--sampler=proportional accepted no architecture in {MAX_REJECTIONS} draws; "
                        "the space's parameter counts are far below its upper bound.")

    def _exact_frequencies(self) -> dict[str, np.ndarray] | None:
        if self.pool is not None:
            return _weighted_mean(self.space, self.pool, self.probabilities)
        if self.space.size() <= EXACT_LIMIT:
            archs = list(self.space.enumerate())
            return _weighted_mean(self.space, archs, [self.space.count(a).params for a in archs])
        # Importance weights on uniform draws: no rejection needed.
        rng = np.random.default_rng(CALIBRATION_SEED)
        archs = [self.space.sample(rng) for _ in range(CALIBRATION_DRAWS)]
        return _weighted_mean(self.space, archs, [self.space.count(a).params for a in archs])

    def describe(self, step: int) -> str:
        where = f" over {len(self.pool)} candidates" if self.pool is not None else ""
        return f"proportional to params{where}"


class ChildOrderSampler(ArchitectureSampler):
    """"Deeper insights" §3.2 (Table 1): the children in a random order, one per ghost batch, repeated.

    The order is a permutation of every child (or of `pool`) drawn from the
    seed; the i-th ghost batch of the run (step * ghost batches + g) trains
    child order[i mod n]. "cyclic" repeats one order for the whole run
    ("Different orders"); "shuffled" draws a new order for every pass over
    the n children ("Diff. orders (shuffle)"). Stateless: (seed, step) fix it.
    Instances that differ only in weight seed keep --order_seed fixed.
    """

    name = "cyclic"
    reshuffle = False

    def __init__(self, space: SearchSpace, *, seed: int = 0, total_steps: int = 1,
                 pool: Sequence[Hashable] | None = None) -> None:
        super().__init__(space, seed=seed, total_steps=total_steps)
        self.children = _check_pool(space, pool) or tuple(space.enumerate())
        self._orders: dict[int, np.ndarray] = {}

    def order(self, epoch: int) -> np.ndarray:
        """The permutation of the children used in pass `epoch` over them."""
        key = epoch if self.reshuffle else 0
        if key not in self._orders:
            if len(self._orders) > 64:
                self._orders.clear()
            self._orders[key] = np.random.default_rng([self.seed, 7, key]).permutation(len(self.children))
        return self._orders[key]

    def child(self, index: int) -> Hashable:
        """The child of the run's `index`-th ghost batch."""
        epoch, position = divmod(int(index), len(self.children))
        return self.children[int(self.order(epoch)[position])]

    def draw(self, rng: np.random.Generator) -> Hashable:
        return self.children[int(rng.integers(len(self.children)))]  # only for calibration; uniform over children

    def host_masks(self, step: int, num_ghosts: int) -> dict[str, np.ndarray]:
        if num_ghosts < 1:
            return super().host_masks(step, num_ghosts)
        archs = [self.child(step * num_ghosts + g) for g in range(num_ghosts)]
        return {k: np.asarray(v, np.float32) for k, v in self.space.encode_batch(archs).items()}

    def _exact_frequencies(self) -> dict[str, np.ndarray] | None:
        return _weighted_mean(self.space, self.children, np.ones(len(self.children)))

    def describe(self, step: int) -> str:
        return f"{self.name} order of {len(self.children)} children"


class ShuffledOrderSampler(ChildOrderSampler):
    """"Deeper insights" §3.2: a new random child order after every n mini-batches ("shuffle")."""

    name = "shuffled"
    reshuffle = True


def resolve_path_per(sampler: Sampler, path_per: str | None) -> str:
    """`path_per`, else the sampler's default; one per ghost batch is all path dropout can do.

    Raises:
        UserError: an unknown value, or path dropout with another than ghost_batch.
    """
    path_per = sampler.default_path_per if path_per is None else path_per
    if path_per not in PATH_PER:
        raise UserError(f"--path_per={path_per} is unknown; choose one of {', '.join(PATH_PER)}.")
    if path_per != "ghost_batch" and not isinstance(sampler, ArchitectureSampler):
        raise UserError(f"--path_per={path_per} needs a sampler that draws whole architectures; --sampler="
                        f"{sampler.name} drops paths per ghost batch in the graph: use --path_per=ghost_batch.")
    return path_per


def draws_per_step(path_per: str, replicas: int, local_ghosts: int) -> int:
    """How many architectures one step trains: 1, one per replica, or one per ghost batch."""
    return {"step": 1, "replica": replicas, "ghost_batch": replicas * local_ghosts}[path_per]


def global_masks(sampler: Sampler, step: int, path_per: str, replicas: int,
                 local_ghosts: int) -> dict[str, np.ndarray]:
    """float32 masks [replicas * local_ghosts, ...] of one step, replica-major, drawn `path_per`.

    The sampler draws `draws_per_step` architectures from (seed, step); each
    fills its consecutive share of the global ghost batches (replica r holds
    rows r * local_ghosts ...), so "step" gives every ghost batch of every
    replica the same architecture (SPOS §3.2, Eq. 8).
    """
    draws = draws_per_step(path_per, replicas, local_ghosts)
    masks = sampler.host_masks(step, draws)
    return {k: np.repeat(v, replicas * local_ghosts // draws, axis=0) for k, v in masks.items()}


SAMPLERS: dict[str, type[Sampler]] = {
    cls.name: cls for cls in (PathDropoutSampler, UniformSampler, UniformConstraintSampler, ProportionalSampler,
                              ChildOrderSampler, ShuffledOrderSampler)
}


def make_sampler(
    name: str | None,
    space: SearchSpace,
    *,
    seed: int = 0,
    total_steps: int = 1,
    dropout_rate: float = 0.1,
    dropout_schedule: str = "linear",
    all_dropped: str = "zero",
    constraints: Constraints | None = None,
    pool: Sequence[Hashable] | None = None,
) -> Sampler:
    """The sampler `name` (None: the space's `default_sampler`) with its options.

    Options a rule does not use are ignored, except `pool`, which only
    "uniform" and "proportional" take.

    Raises:
        UserError: an unknown name (naming the known ones) or a bad option.
    """
    name = space.default_sampler if name is None else name
    if name not in SAMPLERS:
        raise UserError(f"--sampler={name} is unknown; choose one of {', '.join(SAMPLERS)}.")
    common: dict[str, Any] = {"seed": seed, "total_steps": total_steps}
    if name == PathDropoutSampler.name:
        options = {"rate": dropout_rate, "schedule": dropout_schedule, "all_dropped": all_dropped}
    elif name == UniformConstraintSampler.name:
        options = {"constraints": constraints}
    else:
        options = {"pool": pool}
    if pool is not None and "pool" not in options:
        raise UserError(f"--sampler={name} takes no candidate pool; use uniform or proportional.")
    return SAMPLERS[name](space, **common, **options)


__all__ = [
    "PATH_PER",
    "SAMPLERS",
    "ArchitectureSampler",
    "ChildOrderSampler",
    "PathDropoutSampler",
    "ProportionalSampler",
    "Sampler",
    "ShuffledOrderSampler",
    "UniformConstraintSampler",
    "UniformSampler",
    "draws_per_step",
    "global_masks",
    "make_sampler",
    "resolve_path_per",
]
