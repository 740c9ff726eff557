"""The Bender et al. 2018 cell space as data: size, sampling, forms, validation, counts."""

import json

import numpy as np
import pytest

from tf_oneshot.errors import UserError
from tf_oneshot.search_spaces import CellArchitecture, CellSpace, get_space


def test_size_matches_paper_formula():
    # Bender et al. 2018, §3.1: (2^2-1)(2^3-1)(2^4-1)(2^5-1) * 28^4.
    assert CellSpace().size() == 3 * 7 * 15 * 31 * 28**4 == 6_002_115_840
    assert CellSpace(num_blocks=2).size() == 3 * 7 * 28**2


def test_all_on_counts_near_table_1():
    paper = {16: 1.3e6, 32: 4.8e6, 64: 18.5e6, 128: 72.7e6}
    for filters, expected in paper.items():
        params = CellSpace(filters=filters).count_oneshot().params
        assert abs(params - expected) / expected < 0.03, (filters, params)


def test_string_and_json_round_trip_exactly():
    space = CellSpace()
    rng = np.random.default_rng(0)
    for _ in range(200):
        arch = space.sample(rng)
        assert space.parse(str(arch)) == arch
        text = json.dumps(space.to_json(arch))
        assert space.from_json(json.loads(text)) == arch
        assert hash(space.parse(str(arch))) == hash(arch)


def test_sampling_is_seeded_and_covers_choices():
    space = CellSpace()
    a = [str(space.sample(np.random.default_rng(3))) for _ in range(2)]
    assert a[0] == a[1]
    rng = np.random.default_rng(4)
    archs = [space.sample(rng) for _ in range(3000)]
    ops = np.zeros(7)
    n_ops = np.zeros(3)
    for arch in archs:
        for block in arch.blocks:
            ops[list(block.ops)] += 1
            n_ops[len(block.ops)] += 1
    # 7 of the 28 op combinations have one op: P = 0.25.
    assert abs(n_ops[1] / n_ops.sum() - 0.25) < 0.02
    assert ops.min() / ops.max() > 0.9
    # Block 0 has 3 non-empty input subsets, uniformly drawn.
    subsets = {arch.blocks[0].inputs for arch in archs}
    assert subsets == {(0,), (1,), (0, 1)}


@pytest.mark.parametrize(
    "text, message",
    [
        ("01:7/2:0/013:46/04:3", "block 0: op 7 out of range"),
        (":1/2:0/013:46/04:3", "block 0: needs at least one input"),
        ("01:123/2:0/013:46/04:3", "block 0: needs 1 or 2 distinct ops, got 3"),
        ("01:1/2:0/013:46", "has 3 blocks; this space needs 4"),
        ("01:1/5:0/013:46/04:3", "block 1: input 5 out of range; block 1 takes inputs 0..2"),
        ("01-1/2:0/013:46/04:3", "block 0: '01-1' is malformed"),
        ("", "architecture string is empty"),
        ("00:1/2:0/013:46/04:3", "block 0: inputs and ops must not repeat"),
    ],
)
def test_invalid_strings_name_block_and_rule(text, message):
    with pytest.raises(UserError, match=message.replace("(", r"\(")):
        CellSpace().parse(text)


def test_invalid_json_names_the_problem():
    space = CellSpace()
    good = space.to_json(space.sample(np.random.default_rng(0)))
    bad = json.loads(json.dumps(good))
    bad["blocks"][2]["ops"] = []
    with pytest.raises(UserError, match="block 2: needs 1 or 2 distinct ops, got 0"):
        space.from_json(bad)
    with pytest.raises(UserError, match="search space 'spos'"):
        space.from_json({**good, "space": "spos"})


def test_encode_decode_and_all_on_masks():
    space = CellSpace()
    arch = space.parse("01:25/2:0/013:46/04:3")
    masks = space.encode(arch)
    assert masks["input_mask"].shape == (4, 5) and masks["op_mask"].shape == (4, 7)
    assert masks["input_mask"][2].tolist() == [1, 1, 0, 1, 0]
    assert masks["op_mask"][0].tolist() == [0, 0, 1, 0, 0, 1, 0]
    assert space.decode(masks) == arch
    on = space.all_on_masks()
    assert on["input_mask"].sum(axis=1).tolist() == [2, 3, 4, 5]
    assert on["op_mask"].sum() == 28


def test_mutation_and_crossover_stay_in_space():
    space = CellSpace()
    rng = np.random.default_rng(5)
    a, b = space.sample(rng), space.sample(rng)
    assert space.mutate(a, rng, 0.0) == a
    changed = sum(space.mutate(a, rng, 0.1) != a for _ in range(200))
    assert 50 < changed < 200  # 8 choices at p=0.1: P(change) ~ 0.57
    for _ in range(50):
        child = space.crossover(a, b, rng)
        space.validate(child)
        for i, block in enumerate(child.blocks):
            assert block.inputs in (a.blocks[i].inputs, b.blocks[i].inputs)
            assert block.ops in (a.blocks[i].ops, b.blocks[i].ops)


def test_fewer_ops_cost_less():
    space = CellSpace()
    small = space.parse("0:0/0:0/0:0/0:0")
    big = space.parse("01:12/012:34/0123:23/01234:13")
    assert space.count(small).params < space.count(big).params < space.count_oneshot().params
    assert space.count(small).flops < space.count(big).flops < space.count_oneshot().flops


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"filters": 0}, "filters=0 is invalid"),
        ({"num_cells": -1}, "num_cells=-1 is invalid"),
        ({"num_cells": 2, "num_stacks": 3}, "fewer than num_stacks"),
        ({"stem_stride": 3}, "stem_stride=3 is invalid"),
    ],
)
def test_bad_network_settings(kwargs, message):
    with pytest.raises(UserError, match=message):
        CellSpace(**kwargs)


def test_config_round_trip_and_registry():
    space = CellSpace(filters=8, num_cells=4, image_shape=(8, 8, 1))
    assert CellSpace.from_config(json.loads(json.dumps(space.to_config()))) == space
    assert get_space("bender_cell", filters=8) == CellSpace(filters=8)
    with pytest.raises(UserError, match="unknown search space"):
        get_space("nope")
    assert isinstance(space.parse(space.example()), CellArchitecture)
