"""Evolutionary search of SPOS (Guo et al. 2019, §3.4, Algorithm 1).

    P_0 := Initialize_population(P, C)          # uniform over the architectures meeting C
    for i = 1..T:
        ACC_{i-1} := Inference(W_A, D_val, P_{i-1})
        Topk := Update_Topk(Topk, P_{i-1}, ACC_{i-1})
        P_i := Crossover(Topk, P/2, C) U Mutation(Topk, P/2, prob=0.1, C)

with P=50, T=20, k=10, so P * T architectures are scored. The initial
population is drawn uniformly from the architectures that meet the
constraints C (rejection sampling, `ConstrainedSampler.sample`): SPOS's
uniform-constraint sampling (§3.2) is the prior the supernet is *trained*
with (`tf_oneshot.training.samplers.UniformConstraintSampler`), not how the search
starts; it would crowd generation 0 into the rare large and small sizes.

Both operators act on choice blocks (a space groups its decisions by
`Decision.block`; `SearchSpace.mutate` / `crossover`): crossover takes every
block whole from one of two random top-k members, and mutation "mutates its
every choice block with probability 0.1" of one random top-k member, a
mutated block always taking a different value. Both repeat until a child
meets the constraints C: a child that breaks them is never scored. A child
already proposed is rejected too, so no architecture is scored twice. Once
the top-k has converged so far that crossover finds no new child within a
bounded number of attempts, mutation makes it instead, and if that fails too
a fresh constrained draw takes its place (`fresh_fills`).

Generation i+1 is drawn as a whole the moment every member of generation i has
been told, from a seeded generator: the proposals depend only on the seed and
the scores, not on how many architectures a caller asks for at a time nor on
the order of the tells. A run restarted over its results file therefore
rebuilds the same populations (cached scores are told at once) and carries on.
The saved state (`SearchAlgorithm.get_state`) is only what the proposals and
scores cannot give back: O(P), whatever the number of generations; Topk is
rebuilt from the scores (the top-k of every earlier generation's top-k and
members is the top-k of all of them).
"""

from __future__ import annotations

from collections.abc import Hashable

from tf_oneshot.search.base import SearchAlgorithm, check_options
from tf_oneshot.search_spaces import SearchSpace
from tf_oneshot.search_spaces.constraints import Constraints

# Attempts at a new, fitting child before a fresh draw replaces it.
CHILD_ATTEMPTS = 200
# T, Algorithm 1's max iterations (SPOS §3.4): a budget of P * T architectures.
GENERATIONS = 20


class Evolution(SearchAlgorithm):
    """SPOS Algorithm 1: proposes each generation from the Topk of the ones before it.

    Args:
        space: the search space.
        num_architectures: total distinct architectures to score (P * T;
            T = `GENERATIONS` = 20 in SPOS).
        constraints: bounds every proposal meets.
        seed: seeds every random choice.
        population_size: P (50 in SPOS).
        num_parents: k, the size of Topk (10 in SPOS).
        mutation_prob: probability that mutation changes a choice block (0.1
            in SPOS), for each block of the parent.
        crossover_fraction: share of each generation made by crossover (1/2).
    """

    name = "evolution"

    def __init__(
        self,
        space: SearchSpace,
        num_architectures: int,
        constraints: Constraints | None = None,
        seed: int = 0,
        population_size: int = 50,
        num_parents: int = 10,
        mutation_prob: float = 0.1,
        crossover_fraction: float = 0.5,
    ):
        check_options(
            (population_size >= 2, "population_size", population_size, ">= 2"),
            (1 <= num_parents, "num_parents", num_parents, ">= 1"),
            (0.0 < mutation_prob <= 1.0, "mutation_prob", mutation_prob, "in (0, 1]"),
            (0.0 <= crossover_fraction <= 1.0, "crossover_fraction", crossover_fraction, "in [0, 1]"),
        )
        super().__init__(space, num_architectures, constraints, seed)
        self.population_size = int(population_size)
        self.num_parents = int(num_parents)
        self.mutation_prob = float(mutation_prob)
        self.crossover_fraction = float(crossover_fraction)

    @property
    def topk(self) -> list[tuple[Hashable, float]]:
        """Topk as Update_Topk leaves it: the best told of every earlier generation, the last one too once done.

        Ties are broken by the string form, so the order never depends on the
        order of the tells; failed architectures (None) are never parents.
        """
        told = self.best(None)
        if not self.done:
            told = [(a, f) for a, f in told if self.generation_of(a) < self.generation]
        return told[: self.num_parents]

    def generation_size(self, generation: int) -> int:
        return self.population_size

    def propose(self) -> list[Hashable]:
        """P_i := Crossover(Topk, P/2, C) U Mutation(Topk, P/2, prob, C); P_0 uniform under C."""
        parents = [a for a, _ in self.topk]
        size = self.population_size
        if self.generation == 0 or not parents:
            # Initialize_population(P, C), SPOS §3.4, Algorithm 1: uniform over
            # the architectures meeting C (and again if no member scored).
            return [self.draw() for _ in range(size)]
        n_cross = int(round(size * self.crossover_fraction)) if len(parents) >= 2 else 0
        return [self._child(parents, crossover=i < n_cross) for i in range(size)]

    def _child(self, parents: list[Hashable], crossover: bool) -> Hashable:
        # Crossover of near-identical parents soon runs out of new children:
        # mutation takes over, and only then a fresh constrained draw.
        for use_crossover in ((True, False) if crossover else (False,)):
            for _ in range(CHILD_ATTEMPTS):
                if use_crossover:
                    i, j = self.rng.choice(len(parents), size=2, replace=False)
                    child = self.space.crossover(parents[i], parents[j], self.rng)
                else:
                    # Each choice block of the parent mutates with mutation_prob.
                    parent = parents[int(self.rng.integers(len(parents)))]
                    child = self.space.mutate(parent, self.rng, self.mutation_prob)
                if self.take(child):
                    return child
        self.fresh_fills += 1
        return self.draw()
