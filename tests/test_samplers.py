"""Sampling rules (`--sampler`): determinism and their distributions at fixed seeds.

Bender et al. 2018 §3.2 (path dropout), SPOS §3.2 (uniform, uniform
constraint), NAO-V2 §4.2 Eq. 1 (proportional). Statistical checks assert
chi-square p-values > 1e-3 or rates within 4-5 standard errors.
"""

import dataclasses
import itertools
import math
from typing import ClassVar

import numpy as np
import pytest
import tensorflow as tf
from scipy import stats

from tf_oneshot.errors import UserError
from tf_oneshot.search_spaces import Cost, OneOf, SearchSpace
from tf_oneshot.search_spaces.bender_cell import CellSpace
from tf_oneshot.search_spaces.constraints import Constraints
from tf_oneshot.training.samplers import (
    SAMPLERS,
    PathDropoutSampler,
    ProportionalSampler,
    UniformConstraintSampler,
    UniformSampler,
    global_masks,
    make_sampler,
    resolve_path_per,
)

P_MIN = 1e-3


@dataclasses.dataclass(frozen=True)
class TinySpace(SearchSpace):
    """36 architectures; params and FLOPs by a formula, no model."""

    image_shape: tuple = (4, 4, 1)
    num_classes: int = 2

    name: ClassVar[str] = "tiny_sampler_space"

    def decisions(self):
        return (OneOf("width", (1, 2, 3, 4)), OneOf("depth", (1, 2, 3)), OneOf("kernel", (1, 3, 5)))

    def count(self, arch) -> Cost:
        w, d, k = self.values_of(arch)
        return Cost(params=100 * w * k + 10 * d, flops=10 * w * w * d * k + 7 * k + d)

    def count_oneshot(self) -> Cost:
        return Cost(params=sum(self.count(a).params for a in self.enumerate()), flops=10**6)

    def build_oneshot(self, ghost_batch_size, skip_inactive=True):
        raise NotImplementedError

    def build_standalone(self, arch, ghost_batch_size=None, name="standalone"):
        raise NotImplementedError


TINY = TinySpace()
ARCHS = list(TINY.enumerate())
INDEX = {a: i for i, a in enumerate(ARCHS)}
BENDER = CellSpace(num_blocks=4)


def _decode(masks: dict) -> list:
    """Tiny-space architectures from one-hot host masks [G, n]."""
    idx = [np.argmax(masks[d.name], -1) for d in TINY.decisions()]
    assert all(np.all(masks[d.name].sum(-1) == 1) for d in TINY.decisions())
    return [TINY.from_values([d.options[i[g]] for d, i in zip(TINY.decisions(), idx)]) for g in range(len(idx[0]))]


def _draw(sampler, ghosts: int, steps: int) -> list:
    return [a for step in range(steps) for a in _decode(sampler.host_masks(step, ghosts))]


def _chisquare(counts, expected_share) -> float:
    counts = np.asarray(counts, np.float64)
    expected = np.asarray(expected_share, np.float64) / np.sum(expected_share) * counts.sum()
    return float(stats.chisquare(counts, expected).pvalue)


def _counts(archs, universe) -> np.ndarray:
    index = {a: i for i, a in enumerate(universe)}
    counts = np.zeros(len(universe))
    for a in archs:
        counts[index[a]] += 1
    return counts


def _dropout(sampler, step, ghosts):
    masks = {k: tf.constant(v) for k, v in sampler.host_masks(step, ghosts).items()}
    out = sampler.in_graph(masks, tf.constant(step, tf.int64), tf.constant([sampler.seed, 0], tf.int64))
    return {k: v.numpy() for k, v in out.items()}


# --------------------------------------------------------------- registry
def test_registry_and_make_sampler():
    assert set(SAMPLERS) == {"path_dropout", "uniform", "uniform_constraint", "proportional", "cyclic",
                             "shuffled"}
    assert isinstance(make_sampler(None, BENDER, total_steps=10), PathDropoutSampler)  # the cell default
    assert isinstance(make_sampler(None, TINY), UniformSampler)  # the base default
    with pytest.raises(UserError, match="path_dropout, uniform, uniform_constraint, proportional"):
        make_sampler("spos", TINY)
    with pytest.raises(UserError, match="needs a cost range"):
        make_sampler("uniform_constraint", TINY)
    with pytest.raises(UserError, match="needs a cost range"):
        UniformConstraintSampler(TINY, constraints=Constraints())
    with pytest.raises(UserError, match="takes no candidate pool"):
        make_sampler("path_dropout", BENDER, pool=[BENDER.sample(np.random.default_rng(0))])
    with pytest.raises(UserError, match="rate"):
        make_sampler("path_dropout", BENDER, dropout_rate=1.5)
    with pytest.raises(UserError, match="empty"):
        make_sampler("uniform", TINY, pool=[])
    sampler = make_sampler("path_dropout", BENDER, total_steps=100, dropout_rate=0.05)
    assert sampler.describe(50) == f"drop p(k=7) {0.5 * 0.05 ** (1 / 7):.3f}"
    assert sampler.summaries(50) == {"drop_probability_ops": pytest.approx(0.5 * 0.05 ** (1 / 7))}
    assert make_sampler("uniform", TINY).summaries(50) == {}
    assert make_sampler("proportional", TINY, pool=ARCHS[:3]).describe(0) == "proportional to params over 3 candidates"
    constrained = make_sampler("uniform_constraint", TINY, constraints=Constraints(max_flops=400))
    assert "flops <= 400" in constrained.describe(0)


def test_host_masks_shapes_and_dtype():
    for sampler in (UniformSampler(TINY), ProportionalSampler(TINY),
                    UniformConstraintSampler(TINY, constraints=Constraints(min_flops=20, max_flops=400))):
        masks = sampler.host_masks(3, 5)
        assert set(masks) == set(TINY.mask_shapes())
        for key, shape in TINY.mask_shapes().items():
            assert masks[key].shape == (5, *shape) and masks[key].dtype == np.float32
    masks = PathDropoutSampler(BENDER, total_steps=10).host_masks(0, 3)
    for key, value in BENDER.all_on_masks().items():
        np.testing.assert_array_equal(masks[key], np.repeat(value[None], 3, 0))
    out = _dropout(PathDropoutSampler(BENDER, total_steps=10), 10, 3)
    assert out["input_mask"].shape == (3, 4, 5) and out["op_mask"].shape == (3, 4, 7)
    assert out["op_mask"].dtype == np.float32


# ------------------------------------------------------------ determinism
@pytest.mark.parametrize("make", [
    lambda seed: UniformSampler(TINY, seed=seed),
    lambda seed: UniformSampler(BENDER, seed=seed),
    lambda seed: ProportionalSampler(BENDER, seed=seed),
    lambda seed: ProportionalSampler(TINY, seed=seed, pool=ARCHS[::3]),
    lambda seed: UniformConstraintSampler(TINY, seed=seed, constraints=Constraints(min_flops=20, max_flops=400)),
], ids=["uniform", "uniform_bender", "proportional_bender", "proportional_pool", "uniform_constraint"])
def test_host_masks_deterministic_in_seed_and_step(make):
    def flat(masks):
        return np.concatenate([masks[k].ravel() for k in sorted(masks)])

    first, replay = make(5), make(5)
    a = [flat(first.host_masks(step, 16)) for step in range(4)]
    b = [flat(replay.host_masks(step, 16)) for step in range(4)]  # a fresh object replays the sequence
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    np.testing.assert_array_equal(flat(first.host_masks(2, 16)), a[2])  # out of order too
    assert all(not np.array_equal(a[i], a[j]) for i, j in itertools.combinations(range(4), 2))
    assert not np.array_equal(flat(make(6).host_masks(0, 16)), a[0])


def test_path_dropout_deterministic_in_seed_and_step():
    first = _dropout(PathDropoutSampler(BENDER, seed=2, total_steps=10), 7, 64)
    replay = _dropout(PathDropoutSampler(BENDER, seed=2, total_steps=10), 7, 64)
    for key in first:
        np.testing.assert_array_equal(first[key], replay[key])
    assert not np.array_equal(_dropout(PathDropoutSampler(BENDER, seed=2, total_steps=10), 8, 64)["op_mask"],
                              first["op_mask"])
    assert not np.array_equal(_dropout(PathDropoutSampler(BENDER, seed=3, total_steps=10), 7, 64)["op_mask"],
                              first["op_mask"])
    # Traced with the step as a variable: the same masks.
    sampler = PathDropoutSampler(BENDER, seed=2, total_steps=10)
    step = tf.Variable(7, dtype=tf.int64)
    host = {k: tf.constant(v) for k, v in sampler.host_masks(7, 64).items()}
    traced = tf.function(lambda: sampler.in_graph(host, step.read_value(), tf.constant([2, 0], tf.int64)))()
    np.testing.assert_array_equal(traced["op_mask"].numpy(), first["op_mask"])


# ----------------------------------------------------------- distributions
def test_uniform_covers_the_space_equally():
    archs = _draw(UniformSampler(TINY, seed=11), ghosts=60, steps=60)  # 3600 draws, 100 per architecture
    p = _chisquare(_counts(archs, ARCHS), np.ones(len(ARCHS)))
    print(f"uniform: chi-square p={p:.3g} over {len(ARCHS)} architectures, {len(archs)} draws")
    assert p > P_MIN


def test_uniform_over_a_pool():
    pool = ARCHS[::4]
    archs = _draw(UniformSampler(TINY, seed=12, pool=pool), ghosts=50, steps=20)
    assert set(archs) <= set(pool)
    p = _chisquare(_counts(archs, pool), np.ones(len(pool)))
    print(f"uniform pool: chi-square p={p:.3g} over {len(pool)} candidates")
    assert p > P_MIN


def test_proportional_over_the_space_follows_params():
    archs = _draw(ProportionalSampler(TINY, seed=13), ghosts=100, steps=60)  # 6000 draws
    params = [TINY.count(a).params for a in ARCHS]
    counts = _counts(archs, ARCHS)
    p = _chisquare(counts, params)
    p_uniform = _chisquare(counts, np.ones(len(ARCHS)))  # the test has power: uniform is rejected
    print(f"proportional: chi-square p={p:.3g} (vs uniform p={p_uniform:.3g}), params {min(params)}..{max(params)}")
    assert p > P_MIN and p_uniform < 1e-6


def test_proportional_over_a_pool_follows_params():
    pool = [ARCHS[0], ARCHS[7], ARCHS[20], ARCHS[35]]
    archs = _draw(ProportionalSampler(TINY, seed=14, pool=pool), ghosts=100, steps=30)
    params = [TINY.count(a).params for a in pool]
    p = _chisquare(_counts(archs, pool), params)
    print(f"proportional pool: chi-square p={p:.3g}, params {params}")
    assert set(archs) <= set(pool) and p > P_MIN


def test_uniform_constraint_meets_constraints_and_fills_flops_bins_equally():
    # SPOS §3.2: the ten ranges span the FLOPs feasible architectures occupy
    # (here all of them, enumerated), not the bounds of the constraint.
    constraints = Constraints(min_flops=20, max_flops=400)
    sampler = UniformConstraintSampler(TINY, seed=15, constraints=constraints)
    ranges = sampler.sampler.occupied_ranges("flops")
    feasible = [a for a in ARCHS if constraints.satisfied(TINY.count(a))]
    flops = [TINY.count(a).flops for a in feasible]
    assert ranges.edges[0] == min(flops) and ranges.edges[-1] == max(flops)
    per_bin = np.bincount([ranges.slice_of(f) for f in flops], minlength=len(ranges.slices))
    assert per_bin.min() >= 1 and per_bin.max() > per_bin.min()  # uniform draws would favour crowded bins
    archs = _draw(sampler, ghosts=50, steps=40)  # 2000 draws
    assert all(constraints.satisfied(TINY.count(a)) for a in archs)
    counts = np.bincount([ranges.slice_of(TINY.count(a).flops) for a in archs], minlength=len(ranges.slices))
    p = _chisquare(counts, np.ones(len(ranges.slices)))
    p_uniform = _chisquare(counts, per_bin)
    print(f"uniform_constraint: chi-square p={p:.3g} over {len(ranges.slices)} occupied FLOPs ranges (vs "
          f"feasible-uniform p={p_uniform:.3g}), architectures per range {per_bin.tolist()}")
    assert p > P_MIN and p_uniform < 1e-6


def test_path_dropout_row_rates_on_bender_masks():
    # §3.2: a node with k paths drops each with s * r^(1/k); rows k = 2..5
    # (block inputs) and k = 7 (ops). 0 at step 0 of the linear ramp.
    rate, ghosts = 0.05, 20_000
    sampler = PathDropoutSampler(BENDER, seed=4, total_steps=1000, rate=rate)
    start = _dropout(sampler, 0, 1000)
    assert all(np.array_equal(start[k], np.repeat(v[None], 1000, 0)) for k, v in BENDER.all_on_masks().items())
    for step, s in ((1000, 1.0), (500, 0.5)):
        out = _dropout(sampler, step, ghosts)
        z = []
        for key in ("input_mask", "op_mask"):
            on = BENDER.all_on_masks()[key]
            for row in range(on.shape[0]):
                k = int(on[row].sum())
                expected = s * rate ** (1 / k)
                observed = 1.0 - out[key][:, row, :k].mean()
                se = math.sqrt(expected * (1 - expected) / (ghosts * k))
                z.append((observed - expected) / se)
                if step == 1000:
                    print(f"{key} row {row} k={k}: drop rate {observed:.4f} vs s*r^(1/k) {expected:.4f}")
                assert abs(observed - expected) < 4 * se
            assert np.all(out[key][:, on == 0] == 0)  # paths outside the all-on model stay off
        p = float(stats.chi2.sf(np.sum(np.square(z)), len(z)))
        print(f"path dropout step {step}: max |z| {np.max(np.abs(z)):.2f}, combined chi-square p={p:.3g}")
        assert p > P_MIN


# ----------------------------------------------------------- skipped share
def _empirical_share(masks, sampler, ghosts, groups):
    """Share of on-in-all-on skip entries off in all `ghosts` ghost batches of a group."""
    offs = []
    for key in sampler.space.skip_masks():
        on = sampler.space.all_on_masks()[key] > 0.5
        m = masks[key].reshape(groups, ghosts, *on.shape)
        offs.append((m == 0).all(axis=1)[:, on])
    off = np.concatenate(offs, axis=1)
    return off.mean(), off.shape[1]


@pytest.mark.parametrize("all_dropped", ["zero", "keep_one"])
def test_skipped_share_path_dropout_matches_empirical(all_dropped):
    sampler = PathDropoutSampler(BENDER, seed=6, total_steps=1000, rate=0.1, all_dropped=all_dropped)
    assert sampler.skipped_share(0, 1) == 0.0
    groups = 4000
    for step, ghosts in ((1000, 1), (1000, 2), (600, 2), (1000, 4)):
        expected = sampler.skipped_share(step, ghosts)
        observed, entries = _empirical_share(_dropout(sampler, step, ghosts * groups), sampler, ghosts, groups)
        se = math.sqrt(expected * (1 - expected) / (groups * entries))
        print(f"path dropout {all_dropped} step {step} ghosts {ghosts}: skipped share {observed:.4f} "
              f"vs {expected:.4f} (se {se:.4f})")
        assert abs(observed - expected) < 5 * se


@pytest.mark.parametrize("make,exact", [
    (lambda: UniformSampler(TINY, seed=7), True),
    (lambda: ProportionalSampler(TINY, seed=7), True),
    (lambda: UniformConstraintSampler(TINY, seed=7, constraints=Constraints(min_flops=20, max_flops=400)), False),
], ids=["uniform", "proportional", "uniform_constraint"])
def test_skipped_share_architecture_samplers_match_empirical(make, exact):
    sampler = make()
    groups = 3000 if exact else 600  # constrained draws repair often in a space this small: ~1.5 ms each
    for ghosts in (1, 2, 3):
        expected = sampler.skipped_share(0, ghosts)
        assert expected == sampler.skipped_share(1234, ghosts)  # no schedule
        observed, entries = _empirical_share(sampler.host_masks(ghosts, ghosts * groups), sampler, ghosts, groups)
        se = math.sqrt(expected * (1 - expected) / (groups * entries))
        if not exact:  # on-frequencies estimated from CALIBRATION_DRAWS draws
            se = math.sqrt(2) * math.sqrt(expected * (1 - expected) / (groups * entries)) + 0.01
        print(f"{sampler.name} ghosts {ghosts}: skipped share {observed:.4f} vs {expected:.4f} (se {se:.4f})")
        assert abs(observed - expected) < 5 * se
    if sampler.name == "uniform":  # (1 - 1/4)^g and (1 - 1/3)^g over 4 + 3 + 3 entries
        assert sampler.skipped_share(0, 2) == pytest.approx((4 * 0.75**2 + 6 * (2 / 3) ** 2) / 10)


def test_skipped_share_uniform_on_bender_is_estimated():
    # The cell masks are not one decision each: on-frequencies come from draws.
    # An op is in 1 of the 7 one-op and 6 of the 21 two-op combinations: f = 7/28.
    f = 7 / 28
    share = UniformSampler(BENDER).skipped_share(0, 2)
    assert abs(share - (1 - f) ** 2) < 0.02


def test_spos_trains_one_path_per_step_shared_by_every_replica_and_ghost_batch():
    # SPOS §3.2, Eq. 8: "in each step of optimization, an architecture is
    # randomly sampled". 2 replicas x 4 ghost batches: one architecture for all
    # 8 (the default of uniform sampling), one per replica, or one per ghost batch.
    sampler = make_sampler("uniform", TINY, seed=3)
    path_per = resolve_path_per(sampler, None)
    assert path_per == "step"

    def rows(masks):
        count = len(next(iter(masks.values())))
        return [tuple(np.concatenate([masks[k][g].ravel() for k in sorted(masks)])) for g in range(count)]

    distinct = {len(set(rows(global_masks(sampler, s, "step", 2, 4)))) for s in range(20)}
    assert distinct == {1}
    per_replica = [rows(global_masks(sampler, s, "replica", 2, 4)) for s in range(20)]
    assert all(len(set(r[:4])) == 1 and len(set(r[4:])) == 1 for r in per_replica)
    assert any(r[0] != r[4] for r in per_replica)
    assert max(len(set(rows(global_masks(sampler, s, "ghost_batch", 2, 4)))) for s in range(20)) > 4
    assert [rows(global_masks(sampler, s, "step", 2, 4))[0] for s in range(20)] == \
        [rows(global_masks(sampler, s, "step", 1, 1))[0] for s in range(20)]  # the same path on 1 or 8 ghosts
    # Constrained SPOS sampling too; over a pool (NAO's loop) and path dropout, one per ghost batch as before.
    constrained = make_sampler("uniform_constraint", TINY, constraints=Constraints(max_flops=400))
    assert resolve_path_per(constrained, None) == "step"
    assert resolve_path_per(make_sampler("uniform", TINY, pool=ARCHS[:4]), None) == "ghost_batch"
    dropout = make_sampler("path_dropout", CellSpace(filters=4, num_cells=2, num_stacks=1, image_shape=(8, 8, 1)))
    assert resolve_path_per(dropout, None) == "ghost_batch"
    with pytest.raises(UserError, match="--path_per=step needs a sampler that draws whole architectures"):
        resolve_path_per(dropout, "step")
