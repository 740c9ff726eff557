"""Random search and SPOS evolution as ask/tell: budgets, constraints, no repeats, determinism."""

import json
import subprocess
import sys

import numpy as np
import pytest

from tf_oneshot.search import Constraints, Evolution, RandomSearch, cost_bounds
from tf_oneshot.search_spaces import CellSpace

SPACE = CellSpace(filters=16, num_cells=6, num_stacks=3)


def fake_accuracy(arch) -> float:
    """A smooth, deterministic stand-in for one-shot accuracy: favours some ops and wide blocks."""
    weights = np.array([0.1, 0.9, 0.7, 0.5, 0.3, 0.0, 0.2])
    value = sum(weights[list(b.ops)].sum() + 0.15 * len(b.inputs) for b in arch.blocks)
    return float(value / 12.0)


def drive(algorithm, batch=7, order=None):
    """Runs ask/tell to the end; returns the architectures in proposal order."""
    out = []
    while True:
        archs = algorithm.ask(batch)
        if not archs:
            break
        out += archs
        told = archs if order is None else order(archs)
        for arch in told:
            algorithm.tell(arch, fake_accuracy(arch))
    assert algorithm.done
    return out


def test_algorithms_import_without_tensorflow():
    code = (
        "import sys; import tf_oneshot.search as s; "
        "assert s.Evolution and s.RandomSearch and s.oneshot_small; "
        "print('tensorflow' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_random_search_budget_unique_constrained_and_seeded():
    median = 400_000
    cons = Constraints(max_params=median)
    archs = drive(RandomSearch(SPACE, 300, cons, seed=5), batch=16)
    assert len(archs) == len(set(archs)) == 300
    assert all(SPACE.count(a).params <= median for a in archs)
    again = drive(RandomSearch(SPACE, 300, cons, seed=5), batch=1)
    assert archs == again  # the batch size does not change the draws
    other = drive(RandomSearch(SPACE, 300, cons, seed=6))
    assert len(set(archs) & set(other)) == 0


def test_random_search_state_round_trips_through_json():
    a = RandomSearch(SPACE, 40, seed=1)
    first = a.ask(15)
    for arch in first[:10]:
        a.tell(arch, fake_accuracy(arch))
    b = RandomSearch(SPACE, 40, seed=999)
    b.set_state(json.loads(json.dumps(a.get_state())))
    assert b.ask(25) == a.ask(25)
    assert b.best(3) == a.best(3)


def test_evolution_follows_algorithm_1():
    evo = Evolution(SPACE, num_architectures=200, seed=0, population_size=20, num_parents=5)
    archs = drive(evo, batch=8)
    assert len(archs) == len(set(archs)) == 200  # no architecture proposed twice
    generations = [evo.generation_of(a) for a in archs]
    assert generations == sorted(generations)
    assert np.bincount(generations).tolist() == [20] * 10
    # Children come from crossover and mutation of the top-k; only when those
    # keep producing architectures already proposed does a fresh draw step in.
    assert evo.fresh_fills == 0
    assert len(evo.topk) == 5
    assert evo.topk[0][1] == max(fake_accuracy(a) for a in archs)


def test_evolution_beats_random_search_on_a_fake_objective():
    # SPOS §3.4 / Fig. 2: the evolution finds better architectures than random
    # search with the same number of evaluations.
    def top10(algorithm):
        return np.mean([f for _, f in algorithm.best(10)])

    evo_scores, random_scores = [], []
    for seed in range(3):
        evo = Evolution(SPACE, 500, seed=seed, population_size=50, num_parents=10)
        drive(evo, batch=25)
        rnd = RandomSearch(SPACE, 500, seed=seed)
        drive(rnd, batch=25)
        assert evo.fresh_fills == 0
        evo_scores.append(top10(evo))
        random_scores.append(top10(rnd))
    assert min(evo_scores) > max(random_scores), (evo_scores, random_scores)


def test_evolution_children_meet_constraints():
    b = cost_bounds(SPACE)["flops"]
    cons = Constraints(min_flops=int(b[0] + 0.2 * (b[1] - b[0])), max_flops=int(b[0] + 0.5 * (b[1] - b[0])))
    evo = Evolution(SPACE, 150, cons, seed=3, population_size=30, num_parents=6)
    archs = drive(evo)
    assert all(cons.satisfied(SPACE.count(a)) for a in archs)
    assert len(set(archs)) == 150


def test_evolution_is_deterministic_whatever_the_batch_and_tell_order():
    ref = drive(Evolution(SPACE, 120, seed=11, population_size=20, num_parents=4), batch=20)
    reverse = drive(
        Evolution(SPACE, 120, seed=11, population_size=20, num_parents=4), batch=3, order=lambda a: a[::-1]
    )
    assert ref == reverse


def test_evolution_waits_for_its_generation_and_resumes_from_state():
    evo = Evolution(SPACE, 60, seed=2, population_size=10, num_parents=3)
    first = evo.ask(100)
    assert len(first) == 10  # the rest waits for generation 0's scores
    assert evo.ask(1) == []
    for arch in first[:9]:
        evo.tell(arch, fake_accuracy(arch))
    assert evo.ask(1) == []  # one member still out
    # Save, restore into a fresh instance and finish both: same proposals.
    clone = Evolution(SPACE, 60, seed=123, population_size=10, num_parents=3)
    clone.set_state(json.loads(json.dumps(evo.get_state())))
    evo.tell(first[9], fake_accuracy(first[9]))
    clone.tell(first[9], fake_accuracy(first[9]))
    assert drive(evo) == drive(clone)


def test_evolution_failed_scores_are_not_parents():
    evo = Evolution(SPACE, 20, seed=4, population_size=10, num_parents=3)
    gen0 = evo.ask(10)
    for i, arch in enumerate(gen0):
        evo.tell(arch, None if i % 2 else fake_accuracy(arch))
    evo.ask(1)
    assert {a for a, _ in evo.topk} <= set(gen0[::2])


def test_bad_arguments_are_value_errors():
    with pytest.raises(ValueError, match="population_size"):
        Evolution(SPACE, 10, population_size=1)
    with pytest.raises(ValueError, match="num_architectures"):
        RandomSearch(SPACE, 0)
