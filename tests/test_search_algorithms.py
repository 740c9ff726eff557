"""Random search and SPOS evolution as ask/tell: budgets, constraints, no repeats, determinism."""

import functools
import json
import subprocess
import sys

import numpy as np
import pytest
from scipy import stats

from tf_oneshot.errors import UserError
from tf_oneshot.search import (
    ConstrainedSampler,
    Constraints,
    Evolution,
    GivenArchitectures,
    RandomSearch,
    SearchAlgorithm,
    cost_bounds,
    make_algorithm,
)
from tf_oneshot.search_spaces import CellSpace

SPACE = CellSpace(filters=16, num_cells=6, num_stacks=3)
# 3 blocks, 6,914,880 architectures, 763 distinct FLOPs counts: cheap to count by the ten thousand.
SMALL = CellSpace(filters=8, num_cells=2, num_stacks=2, num_blocks=3, image_shape=(8, 8, 1))
P_MIN = 1e-3  # statistical tests run at fixed seeds; a correct sampler fails one with p < P_MIN


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
        "import sys; import tf_oneshot, tf_oneshot.search as s; "
        "assert s.Evolution and s.RandomSearch and s.oneshot_small and s.make_algorithm; "
        "assert callable(tf_oneshot.search) and tf_oneshot.search is s; "
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
    told = {arch: fake_accuracy(arch) for arch in first[:10]}
    for arch, score in told.items():
        a.tell(arch, score)
    b = RandomSearch(SPACE, 40, seed=999)
    b.set_state(json.loads(json.dumps(a.get_state())), first, told)
    assert b.ask(25) == a.ask(25)
    assert b.best(3) == a.best(3)
    with pytest.raises(ValueError, match="proposed 40 architectures; 14 given"):
        b.set_state(a.get_state(), first[:14], told)


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
    clone.set_state(json.loads(json.dumps(evo.get_state())), first, {a: fake_accuracy(a) for a in first[:9]})
    evo.tell(first[9], fake_accuracy(first[9]))
    clone.tell(first[9], fake_accuracy(first[9]))
    assert drive(evo) == drive(clone)


def test_evolution_state_is_o1_and_the_rest_is_rebuilt():
    # The saved state holds the generator and the current population, never
    # the history: as large after 30 generations as after 1. Scores, Topk,
    # generations and the proposed set come back from proposals and scores.
    def score(i, arch):
        return None if i % 7 == 6 else fake_accuracy(arch)  # some fail

    def run(evo, proposals, told, snapshot_at=()):
        sizes, snaps = [], []
        while not evo.done:
            archs = evo.ask(4)
            assert archs, "every member handed out was told: ask must give more"
            proposals += archs
            if len(proposals) in snapshot_at:  # asked, not yet told
                snaps.append((json.loads(json.dumps(evo.get_state())), list(proposals), dict(told), list(evo.topk)))
            for k, arch in enumerate(archs):
                told[arch] = score(len(proposals) - len(archs) + k, arch)
                evo.tell(arch, told[arch])
            sizes.append(len(json.dumps(evo.get_state())))
        return sizes, snaps

    def new():
        return Evolution(SPACE, 300, seed=5, population_size=10, num_parents=3)

    proposals, told = [], {}
    evo = new()
    sizes, snaps = run(evo, proposals, told, snapshot_at=(54, 174, 300))
    assert max(sizes) < 1.1 * min(sizes), (min(sizes), max(sizes))
    assert [s[0]["generation"] for s in snaps] == [5, 17, 29]
    for state, done_before, told_before, topk in snaps:
        clone = Evolution(SPACE, 300, seed=0, population_size=10, num_parents=3)
        clone.set_state(state, done_before, told_before)
        assert clone.topk == topk
        assert [clone.generation_of(a) for a in done_before] == [evo.generation_of(a) for a in done_before]
        for i, arch in enumerate(done_before):  # the members asked but not yet told
            if arch not in told_before:
                told_before[arch] = score(i, arch)
                clone.tell(arch, told_before[arch])
        run(clone, done_before, told_before)
        assert done_before == proposals and clone.best(5) == evo.best(5) and clone.topk == evo.topk


def test_evolution_failed_scores_are_not_parents():
    evo = Evolution(SPACE, 20, seed=4, population_size=10, num_parents=3)
    gen0 = evo.ask(10)
    for i, arch in enumerate(gen0):
        evo.tell(arch, None if i % 2 else fake_accuracy(arch))
    evo.ask(1)
    assert {a for a, _ in evo.topk} <= set(gen0[::2])


def test_every_algorithm_is_the_base_with_its_own_proposals_only():
    # PyGlove's DNAGenerator: the bookkeeping and the replay are the base's;
    # an algorithm writes `propose` and `generation_size`, nothing of ask/tell/state.
    own = {"propose", "generation_size"}
    for cls in (RandomSearch, Evolution, GivenArchitectures):
        assert issubclass(cls, SearchAlgorithm)
        for method in ("ask", "tell", "best", "generation_of", "get_state", "set_state", "done", "exhausted"):
            assert method not in vars(cls), (cls.__name__, method)
        assert own <= set(vars(cls))


def test_given_architectures_are_handed_out_in_order_and_their_state_round_trips():
    rng = np.random.default_rng(0)
    archs = [SPACE.sample(rng) for _ in range(5)]
    given = GivenArchitectures(SPACE, [*archs, archs[1]])  # a repeat is dropped
    assert given.num_architectures == 5 and given.ask(3) == archs[:3]
    given.tell(archs[0], 0.5)
    with pytest.raises(KeyError, match="was not proposed"):
        given.tell(archs[4], 0.1)  # not handed out yet
    clone = GivenArchitectures(SPACE, archs)
    clone.set_state(json.loads(json.dumps(given.get_state())), archs[:3], {archs[0]: 0.5})
    assert clone.ask(10) == given.ask(10) == archs[3:]
    assert given.generation_of(archs[0]) is None and clone.best() == [(archs[0], 0.5)]
    with pytest.raises(ValueError, match="the state is of algorithm given, not random"):
        RandomSearch(SPACE, 5).set_state(given.get_state(), archs, {})


def test_make_algorithm_builds_every_algorithm_from_its_name_and_the_flags():
    evo = make_algorithm("evolution", SPACE, 40, seed=3, population_size=8, num_parents=2, mutation_prob=0.2)
    assert isinstance(evo, Evolution) and (evo.population_size, evo.num_parents, evo.mutation_prob) == (8, 2, 0.2)
    assert evo.options == {"population_size": 8, "num_parents": 2, "mutation_prob": 0.2}  # results lines' options
    assert drive(evo) == drive(Evolution(SPACE, 40, seed=3, population_size=8, num_parents=2, mutation_prob=0.2))
    # Options of other algorithms are ignored (the command passes every flag), None too.
    rnd = make_algorithm("random", SPACE, 10, Constraints(max_params=400_000), seed=1, population_size=8,
                         num_parents=None)
    assert isinstance(rnd, RandomSearch) and rnd.options == {} and rnd.seed == 1
    # The options recorded are the values in effect, defaults included.
    assert make_algorithm("evolution", SPACE, 10).options == {"population_size": 50, "num_parents": 10,
                                                              "mutation_prob": 0.1}
    assert all(SPACE.count(a).params <= 400_000 for a in drive(rnd))


@pytest.mark.parametrize("call, message", [
    (dict(name="annealing"), "--algorithm=annealing is unknown; choose one of random, evolution, nao."),
    (dict(name="evolution", population_size=1),
     "--population_size=1 is invalid for --algorithm=evolution: population_size must be >= 2."),
    (dict(name="evolution", mutation_prob=1.5),
     "--mutation_prob=1.5 is invalid for --algorithm=evolution: mutation_prob must be in (0, 1]."),
    (dict(name="random", num_architectures=0),
     "--num_architectures=0 is invalid for --algorithm=random: num_architectures must be >= 1."),
    (dict(name="evolution", populaton_size=5),
     "--populaton_size is not a search option; the options are --mutation_prob, --new_per_iteration, --num_parents, --population_size."),
])
def test_make_algorithm_errors_are_one_line_naming_the_flag(call, message):
    call = {"num_architectures": 10, **call}
    with pytest.raises(UserError) as info:
        make_algorithm(call.pop("name"), SPACE, call.pop("num_architectures"), **call)
    assert str(info.value) == message


def test_bad_arguments_are_value_errors():
    with pytest.raises(ValueError, match="population_size"):
        Evolution(SPACE, 10, population_size=1)
    with pytest.raises(ValueError, match="num_architectures"):
        RandomSearch(SPACE, 0)


# --------------------------------------- SPOS §3.4, Algorithm 1: statistically
@functools.lru_cache(maxsize=1)
def uniform_flops() -> np.ndarray:
    """FLOPs of 50,000 uniform draws from SMALL: the reference distribution."""
    rng = np.random.default_rng(1000)
    return np.array([SMALL.count(SMALL.sample(rng)).flops for _ in range(50_000)])


def flops_chisquare(archs, reference: np.ndarray, num_bins: int = 10):
    """Chi-square of `archs`' FLOPs over the `num_bins`-quantiles of `reference`.

    FLOPs take few distinct values, so the expected share of each bin is
    the reference's own share of it, not exactly 1 / num_bins.
    """
    edges = np.unique(np.quantile(reference, np.linspace(0, 1, num_bins + 1)[1:-1]))
    assert len(edges) == num_bins - 1, "quantiles fall on the same FLOPs value"
    shares = np.bincount(np.searchsorted(edges, reference, side="right"), minlength=num_bins) / len(reference)
    flops = [SMALL.count(a).flops for a in archs]
    counts = np.bincount(np.searchsorted(edges, flops, side="right"), minlength=num_bins)
    return stats.chisquare(counts, shares * len(flops)), counts


def test_initial_population_is_uniform_over_architectures():
    # Initialize_population(P, C) with no constraint: uniform sampling, so the
    # FLOPs deciles of generation 0 are those of uniform draws.
    evo = Evolution(SMALL, 500, seed=0, population_size=500)
    gen0 = evo.ask(500)
    assert len(set(gen0)) == 500 and {evo.generation_of(a) for a in gen0} == {0}
    result, counts = flops_chisquare(gen0, uniform_flops())
    # Uniform-constraint sampling (SPOS §3.2, the training prior) is not: it
    # gives each tenth of the FLOPs range the same share, crowding the rare
    # large architectures.
    sampler, rng, seen = ConstrainedSampler(SMALL), np.random.default_rng(0), set()
    for _ in range(500):
        seen.add(sampler.uniform_constraint_sample(rng, exclude=seen))
    old, old_counts = flops_chisquare(seen, uniform_flops())
    print(f"generation 0: chi2={result.statistic:.2f} p={result.pvalue:.3g} per decile {counts.tolist()}; "
          f"uniform-constraint: chi2={old.statistic:.1f} p={old.pvalue:.3g} per decile {old_counts.tolist()}")
    assert result.pvalue > P_MIN
    assert old.pvalue < P_MIN


def test_initial_population_under_a_constraint_is_rejection_sampling():
    # With C, generation 0 is uniform over the architectures meeting C: the
    # uniform distribution cut at the bound, as rejection sampling gives.
    limit = int(np.quantile(uniform_flops(), 0.3))
    cons = Constraints(max_flops=limit)
    evo = Evolution(SMALL, 500, cons, seed=1, population_size=500)
    gen0 = evo.ask(500)
    assert all(SMALL.count(a).flops <= limit for a in gen0)
    assert evo.sampler.repaired == 0  # 30% fit: every draw by rejection
    reference = uniform_flops()[uniform_flops() <= limit]
    result, counts = flops_chisquare(gen0, reference, num_bins=5)
    ks = stats.ks_2samp([SMALL.count(a).flops for a in gen0], reference)
    sampler, rng, seen = ConstrainedSampler(SMALL, cons), np.random.default_rng(1), set()
    for _ in range(500):
        seen.add(sampler.uniform_constraint_sample(rng, exclude=seen))
    old, old_counts = flops_chisquare(seen, reference, num_bins=5)
    print(f"generation 0, flops <= {limit}: chi2={result.statistic:.2f} p={result.pvalue:.3g} per quintile "
          f"{counts.tolist()}, KS p={ks.pvalue:.3g}; uniform-constraint: chi2={old.statistic:.1f} "
          f"p={old.pvalue:.3g} per quintile {old_counts.tolist()}")
    assert result.pvalue > P_MIN and ks.pvalue > P_MIN
    assert old.pvalue < P_MIN


def blocks_of(space, arch) -> dict[str, tuple]:
    """The values of `arch` grouped by choice block (`Decision.block`)."""
    out: dict[str, tuple] = {}
    for d, v in zip(space.decisions(), space.values_of(arch)):
        out[d.block] = out.get(d.block, ()) + (v,)
    return out


def test_mutation_changes_each_choice_block_with_probability_0_1():
    # "mutates its every choice block with probability 0.1" (SPOS §3.4): the
    # block, not each of its decisions, and a mutated block always changes.
    rng = np.random.default_rng(7)
    n = 5000
    changed = np.zeros(3, int)
    for _ in range(n):
        parent = SMALL.sample(rng)
        before, after = blocks_of(SMALL, parent), blocks_of(SMALL, SMALL.mutate(parent, rng, 0.1))
        changed += [before[b] != after[b] for b in before]
    tests = [stats.binomtest(int(c), n, 0.1) for c in changed]
    total = stats.binomtest(int(changed.sum()), 3 * n, 0.1)
    print(f"per-block change rate at p=0.1: {(changed / n).round(4).tolist()} (all blocks "
          f"{changed.sum() / (3 * n):.4f}, binomial p={total.pvalue:.3g})")
    assert total.pvalue > P_MIN and min(t.pvalue for t in tests) > P_MIN
    # With probability 1 every block mutates, and none stays the same; the new
    # value is uniform over the block's other values (3 x 28 for block 0).
    parent = SMALL.parse("01:0/012:12/0123:3")
    new_values = []
    for _ in range(3000):
        before, after = blocks_of(SMALL, parent), blocks_of(SMALL, SMALL.mutate(parent, rng, 1.0))
        assert all(before[b] != after[b] for b in before)
        new_values.append(after["block0"])
    counts = np.unique([str(v) for v in new_values], return_counts=True)[1]
    assert len(counts) == 3 * 28 - 1
    assert stats.chisquare(counts).pvalue > P_MIN


def test_crossover_takes_each_block_whole_from_one_parent():
    a, b = SMALL.parse("0:0/0:1/0:2"), SMALL.parse("1:34/12:56/123:56")  # differ in every decision
    ba, bb = blocks_of(SMALL, a), blocks_of(SMALL, b)
    rng = np.random.default_rng(8)
    n = 2000
    from_b = np.zeros(3, int)
    for _ in range(n):
        child = blocks_of(SMALL, SMALL.crossover(a, b, rng))
        assert all(child[k] in (ba[k], bb[k]) for k in child)  # never inputs of one, ops of the other
        from_b += [child[k] == bb[k] for k in child]
    assert min(stats.binomtest(int(c), n, 0.5).pvalue for c in from_b) > P_MIN


def test_evolution_mutates_and_crosses_over_whole_blocks():
    # Mutation children of the single parent: each differs in k >= 1 blocks,
    # k ~ Binomial(4, mutation_prob) given k >= 1 (an unchanged child is the
    # parent, already proposed). With mutation_prob per decision instead,
    # more blocks would change.
    evo = Evolution(SPACE, 200, seed=9, population_size=100, num_parents=1, crossover_fraction=0.0)
    for arch in evo.ask(100):
        evo.tell(arch, fake_accuracy(arch))
    children = evo.ask(100)
    parent = blocks_of(SPACE, evo.topk[0][0])
    k = np.array([sum(parent[b] != v for b, v in blocks_of(SPACE, c).items()) for c in children])
    p1 = 4 * 0.1 * 0.9**3 / (1 - 0.9**4)
    observed = [int((k == 1).sum()), int((k >= 2).sum())]
    assert k.min() >= 1 and stats.chisquare(observed, [100 * p1, 100 * (1 - p1)]).pvalue > P_MIN
    # Crossover children: every block whole from one of two top-k members.
    evo = Evolution(SPACE, 200, seed=10, population_size=100, num_parents=5, crossover_fraction=1.0)
    for arch in evo.ask(100):
        evo.tell(arch, fake_accuracy(arch))
    children = evo.ask(100)
    parents = [blocks_of(SPACE, a) for a, _ in evo.topk]
    assert evo.fresh_fills == 0
    for child in map(lambda c: blocks_of(SPACE, c), children):
        assert any(all(child[b] in (p[b], q[b]) for b in child)
                   for i, p in enumerate(parents) for q in parents[i + 1:])
