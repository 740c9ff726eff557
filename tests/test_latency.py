"""Latency lookup tables (SPOS §3.4): measured per block in position, summed, refused when foreign."""

import json
import os
import time

import numpy as np
import pytest

from tf_oneshot.commands import cli
from tf_oneshot.errors import UserError
from tf_oneshot.search import ConstrainedSampler, Constraints, Evolution
from tf_oneshot.search_spaces import get_space, latency

# One stage of 2 blocks at 8x8: a stage's first block (both branches) and a split block.
TINY = get_space("spos_blocks", image_shape=(8, 8, 1), num_classes=3, stem_stride=1, stage_blocks=(2,),
                 channels=(4, 8, 16))


@pytest.fixture(scope="module")
def table_path(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("latency") / "table.json")
    latency.write_table(path, latency.measure_table(TINY, batch_size=1, warmup=1, repeats=3, log=None))
    return path


def test_the_table_holds_every_candidate_of_every_block_and_its_metadata(table_path):
    obj = json.load(open(table_path))
    assert obj["kind"] == latency.KIND and obj["space"] == TINY.to_config()
    assert obj["image_shape"] == [8, 8, 1] and obj["batch_size"] == 1 and obj["device"]
    assert obj["statistic"] == "median" and obj["repeats"] == 3
    assert sorted(obj["blocks"]) == ["block0", "block1"]
    for entries in obj["blocks"].values():
        assert sorted(entries) == ["3", "5", "7", "x"]
        assert all(v >= 0.0 for v in entries.values())
    assert obj["fixed_ms"] >= obj["call_overhead_ms"] > 0.0
    assert not [p for p in os.listdir(os.path.dirname(table_path)) if ".tmp-" in p]  # atomic: no temp file left


def test_an_architectures_latency_is_the_sum_of_its_blocks(table_path):
    table = latency.LatencyTable.load(table_path, TINY)
    obj = json.load(open(table_path))
    rng = np.random.default_rng(0)
    for _ in range(20):
        arch = TINY.sample(rng)
        choices = TINY.values_of(arch)
        expected = obj["fixed_ms"] + sum(obj["blocks"][f"block{i}"][c] for i, c in enumerate(choices))
        assert table.latency_ms(TINY, arch) == pytest.approx(expected)
    low, high = table.bounds()
    assert low == pytest.approx(obj["fixed_ms"] + sum(min(e.values()) for e in obj["blocks"].values()))
    assert high == pytest.approx(obj["fixed_ms"] + sum(max(e.values()) for e in obj["blocks"].values()))


def test_the_units_are_the_stand_alone_networks_pieces():
    # Parameters of the timed pieces of an architecture add up to its stand-alone model's.
    units = TINY.latency_units()
    arch = TINY.parse("x/7")
    by_key = {(u.block, u.values): u for u in units}
    chosen = [by_key[(f"block{i}", (c,))] for i, c in enumerate(TINY.values_of(arch))]
    fixed = [u for u in units if not u.block]
    assert len(fixed) == 2 and len(units) == 2 + 2 * 4
    params = sum(u.build().count_params() for u in chosen + fixed)
    assert params == TINY.count(arch).params


def test_a_table_of_another_input_size_or_space_is_refused_in_one_line(table_path):
    bigger = get_space("spos_blocks", image_shape=(16, 16, 1), num_classes=3, stem_stride=1, stage_blocks=(2,),
                       channels=(4, 8, 16))
    with pytest.raises(UserError, match=r"measured for another network: image_shape=\[8, 8, 1\]") as e:
        latency.LatencyTable.load(table_path, bigger)
    assert "\n" not in str(e.value) and "tf-oneshot latency" in str(e.value)
    cell = get_space("bender_cell", image_shape=(8, 8, 1), num_classes=3)
    with pytest.raises(UserError, match="measured for another network"):
        ConstrainedSampler(cell, Constraints(max_latency_ms=1.0, latency_table=table_path))
    with pytest.raises(UserError, match="exposes no latency units"):
        latency.measure_table(cell, repeats=1, log=None)


def test_latency_bounds_fail_fast_and_evolution_meets_a_latency_limit(table_path):
    table = latency.LatencyTable.load(table_path, TINY)
    low, high = table.bounds()
    with pytest.raises(UserError, match="latency_ms ranges over"):
        Evolution(TINY, 10, Constraints(max_latency_ms=low * 0.99, latency_table=table_path))
    # A limit 10 of the 16 architectures meet; evolution proposes 6 of them.
    limit = sorted(table.latency_ms(TINY, a) for a in TINY.enumerate())[9]
    search = Evolution(TINY, 6, Constraints(max_latency_ms=limit, latency_table=table_path), seed=0,
                       population_size=3, num_parents=2)
    while archs := search.ask(4):
        for arch in archs:
            assert table.latency_ms(TINY, arch) <= limit
            search.tell(arch, 0.5)


def test_the_command_writes_a_table_and_keeps_an_existing_one(tmp_path, capsys):
    out = tmp_path / "t.json"
    args = ["tf-oneshot", "latency", "--space=spos_blocks", "--space_args=stage_blocks=1,channels=4:8:16",
            "--image_size=8", "--channels=1", "--num_classes=3", f"--output={out}", "--warmup=0", "--repeats=1"]
    assert cli.main(args) == 0
    before = out.read_text()
    assert json.loads(before)["blocks"].keys() == {"block0"}
    assert cli.main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith(f"tf-oneshot: error: --output={out} exists")
    assert out.read_text() == before
    assert cli.main(["tf-oneshot", "latency", "--space=bender_cell", f"--output={tmp_path / 'c.json'}"]) == 2
    assert "exposes no latency units" in capsys.readouterr().err


def test_search_refuses_a_foreign_table_and_an_unmeetable_bound_in_one_line(tmp_path, capsys, table_path,
                                                                              oneshot_model_dir):
    model_dir = oneshot_model_dir
    results = tmp_path / "r.jsonl"
    base = ["tf-oneshot", "search", f"--model_dir={model_dir}", f"--results={results}", "--num_architectures=4"]
    cases = [
        (["--max_latency_ms=5"], "--min/max_latency_ms need --latency_table=FILE"),
        ([f"--latency_table={table_path}", "--max_latency_ms=5"], "was measured for another network"),
        (["--max_flops=1"], "no architecture of this search space meets flops <= 1"),
        (["--max_bitops=10"], "has no BitOps"),
    ]
    for extra, message in cases:
        tic = time.perf_counter()
        assert cli.main([*base, *extra]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0], err
        assert time.perf_counter() - tic < 20.0  # before any model loads
    assert not results.exists()

