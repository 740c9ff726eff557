"""Constraints on params and multiply-adds: exact bounds, met by construction, fail fast."""

import time

import numpy as np
import pytest

from tf_oneshot.errors import UserError
from tf_oneshot.search import constraints as C
from tf_oneshot.search_spaces import CellSpace
from tf_oneshot.search_spaces.bender_cell import OP_COMBINATIONS

SPACE = CellSpace(filters=16, num_cells=6, num_stacks=3)


def test_cost_model_equals_space_count():
    model = C.CostModel(SPACE)
    rng = np.random.default_rng(0)
    for _ in range(300):
        arch = SPACE.sample(rng)
        assert model.count(arch) == SPACE.count(arch)


def test_bounds_are_exact_over_a_whole_small_space():
    # 1 block: 3 input sets x 28 op sets, enumerated. Input {0} alone or {1} alone
    # leaves every other cell unread, so the cost is not one sum over blocks.
    space = CellSpace(num_blocks=1, filters=4, num_cells=4, num_stacks=2, image_shape=(8, 8, 1))
    model = C.CostModel(space)
    costs = [space.count(space.parse(f"{inputs}:{''.join(map(str, ops))}"))
             for inputs in ("0", "1", "01") for ops in OP_COMBINATIONS]
    assert len({c.params for c in costs}) > 28  # the read pattern matters
    for metric in C.METRICS:
        values = [getattr(c, metric) for c in costs]
        assert model.bounds(metric) == (min(values), max(values))


def test_bounds_are_attained_and_exact():
    bounds = C.cost_bounds(SPACE)
    # Least: one input and a weightless op per block; greatest: all inputs, the two
    # costliest ops (conv 1x7+7x1, separable 7x7 pair). Both are real architectures.
    small = SPACE.parse("0:0/0:0/0:0/0:0")
    large = SPACE.parse("01:34/012:34/0123:34/01234:34")
    assert bounds["params"] == (SPACE.count(small).params, SPACE.count(large).params)
    assert bounds["flops"] == (SPACE.count(small).flops, SPACE.count(large).flops)
    rng = np.random.default_rng(1)
    for _ in range(500):
        cost = SPACE.count(SPACE.sample(rng))
        assert bounds["params"][0] <= cost.params <= bounds["params"][1]
        assert bounds["flops"][0] <= cost.flops <= bounds["flops"][1]


def test_bad_bounds_are_user_errors():
    with pytest.raises(UserError, match="--max_params=-1 is invalid"):
        C.Constraints(max_params=-1)
    with pytest.raises(UserError, match="--min_flops=10 is above --max_flops=5"):
        C.Constraints(min_flops=10, max_flops=5)


def test_impossible_constraint_fails_at_once_by_arithmetic():
    least = C.cost_bounds(SPACE)["params"][0]
    tic = time.perf_counter()
    with pytest.raises(UserError, match=f"params ranges over {least}"):
        C.ConstrainedSampler(SPACE, C.Constraints(max_params=least - 1))
    assert time.perf_counter() - tic < 2.0


def test_jointly_impossible_constraint_ends_after_bounded_attempts():
    # Each bound alone is feasible; together (tiny params, huge flops) they are not.
    b = C.cost_bounds(SPACE)
    cons = C.Constraints(max_params=b["params"][0] + 1000, min_flops=b["flops"][1] - 1000)
    sampler = C.ConstrainedSampler(SPACE, cons)
    tic = time.perf_counter()
    with pytest.raises(UserError, match="found no architecture meeting"):
        sampler.sample(np.random.default_rng(0))
    assert time.perf_counter() - tic < 20.0


def test_samples_meet_constraints_and_are_uniform_when_common():
    b = C.cost_bounds(SPACE)
    median = int(np.median([SPACE.count(SPACE.sample(np.random.default_rng(i))).params for i in range(400)]))
    sampler = C.ConstrainedSampler(SPACE, C.Constraints(max_params=median))
    rng = np.random.default_rng(2)
    archs = [sampler.sample(rng) for _ in range(300)]
    assert all(SPACE.count(a).params <= median for a in archs)
    assert sampler.repaired == 0  # half the space fits: plain rejection sampling
    assert len(set(archs)) == 300
    assert b["params"][0] <= min(SPACE.count(a).params for a in archs)


def test_narrow_range_is_met_by_repair():
    b = C.cost_bounds(SPACE)["flops"]
    lo = int(b[0] + 0.9 * (b[1] - b[0]))  # the top 10% of the range: rare by uniform draws
    cons = C.Constraints(min_flops=lo, max_flops=lo + (b[1] - b[0]) // 50)
    sampler = C.ConstrainedSampler(SPACE, cons)
    rng = np.random.default_rng(3)
    archs = [sampler.sample(rng) for _ in range(20)]
    assert all(cons.satisfied(SPACE.count(a)) for a in archs)
    assert sampler.repaired > 0


def test_uniform_constraint_sampling_spreads_over_the_range():
    # SPOS §3.2: a random range first, so extreme sizes are as common as typical ones.
    b = C.cost_bounds(SPACE)["flops"]
    sampler = C.ConstrainedSampler(SPACE)
    rng = np.random.default_rng(4)
    seen: set = set()
    flops = []
    for _ in range(200):
        arch = sampler.uniform_constraint_sample(rng, exclude=seen)
        seen.add(arch)
        flops.append(SPACE.count(arch).flops)
    bins = np.histogram(flops, bins=10, range=b)[0]
    assert bins.min() >= 8, bins  # 20 expected per bin
    plain = [SPACE.count(SPACE.sample(rng)).flops for _ in range(200)]
    assert np.histogram(plain, bins=10, range=b)[0].min() < 8  # uniform draws crowd the middle
    assert len(seen) == 200
