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
The saved state (`get_state`) is only what the proposals and scores cannot
give back: O(P), whatever the number of generations.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np

from tf_oneshot.search_spaces import SearchSpace
from tf_oneshot.search_spaces.constraints import ConstrainedSampler, Constraints

# Attempts at a new, fitting child before a fresh draw replaces it.
CHILD_ATTEMPTS = 200
# T, Algorithm 1's max iterations (SPOS §3.4): a budget of P * T architectures.
GENERATIONS = 20


class Evolution:
    """SPOS Algorithm 1 as ask/tell.

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
        checks = [
            (num_architectures >= 1, "num_architectures", num_architectures, ">= 1"),
            (population_size >= 2, "population_size", population_size, ">= 2"),
            (1 <= num_parents, "num_parents", num_parents, ">= 1"),
            (0.0 < mutation_prob <= 1.0, "mutation_prob", mutation_prob, "in (0, 1]"),
            (0.0 <= crossover_fraction <= 1.0, "crossover_fraction", crossover_fraction, "in [0, 1]"),
        ]
        for ok, name, value, expected in checks:
            if not ok:
                raise ValueError(f"{name} must be {expected}. Received: {name}={value}")
        self.space = space
        self.num_architectures = int(num_architectures)
        self.population_size = int(population_size)
        self.num_parents = int(num_parents)
        self.mutation_prob = float(mutation_prob)
        self.crossover_fraction = float(crossover_fraction)
        self.sampler = ConstrainedSampler(space, constraints)
        self.seed = int(seed)
        self._rng = np.random.default_rng(self.seed)
        self.generation = -1  # index of the current population
        self._population: list[Hashable] = []
        self._handed = 0  # members of the current population handed out
        self._proposed = 0  # handed out over all generations
        self._seen: set[Hashable] = set()
        self._generation_of: dict[Hashable, int] = {}
        self._scores: dict[Hashable, float | None] = {}
        self.topk: list[tuple[Hashable, float]] = []
        self.fresh_fills = 0
        self._next_generation()

    # ------------------------------------------------------------- ask / tell
    def ask(self, n: int) -> list[Hashable]:
        """Up to `n` architectures of the current generation not yet handed out.

        Returns fewer (possibly none) while members of the current generation
        await their scores, or once the budget is spent.
        """
        out = []
        while len(out) < n and self._proposed < self.num_architectures:
            if self._handed == len(self._population):
                if not self._generation_told():
                    break
                self._advance()
                continue
            arch = self._population[self._handed]
            self._handed += 1
            self._proposed += 1
            out.append(arch)
        return out

    def tell(self, arch: Hashable, fitness: float | None) -> None:
        """Records `arch`'s one-shot accuracy (None if scoring failed)."""
        if arch not in self._generation_of:
            raise KeyError(f"architecture {arch} was not proposed by this search.")
        self._scores[arch] = None if fitness is None else float(fitness)
        if self.done:  # the last generation joins Topk too: it is the search's answer
            self._update_topk()

    def generation_of(self, arch: Hashable) -> int | None:
        """The generation that proposed `arch` (0: the initial population)."""
        return self._generation_of.get(arch)

    @property
    def exhausted(self) -> bool:
        return self._proposed >= self.num_architectures

    @property
    def done(self) -> bool:
        return self.exhausted and all(a in self._scores for a in self._handed_out())

    def best(self, k: int = 1) -> list[tuple[Hashable, float]]:
        """The `k` best architectures told so far, best first."""
        scored = [(a, f) for a, f in self._scores.items() if f is not None]
        return sorted(scored, key=_rank)[:k]

    # -------------------------------------------------------------- internals
    def _handed_out(self) -> list[Hashable]:
        return self._population[: self._handed]

    def _generation_told(self) -> bool:
        return all(a in self._scores for a in self._population)

    def _update_topk(self) -> None:
        # Update_Topk(Topk, P_{i-1}, ACC_{i-1}); ties broken by the string form
        # so the order never depends on the order of the tells.
        pool = dict(self.topk)
        for arch in self._handed_out():
            if self._scores.get(arch) is not None:
                pool[arch] = self._scores[arch]
        self.topk = sorted(pool.items(), key=_rank)[: self.num_parents]

    def _advance(self) -> None:
        self._update_topk()
        self._next_generation()

    def _next_generation(self) -> None:
        self.generation += 1
        self._handed = 0
        size = self.population_size
        if self.generation == 0 or not self.topk:
            # Initialize_population(P, C), SPOS §3.4, Algorithm 1: uniform over
            # the architectures meeting C (and again if no member scored).
            population = []
            for _ in range(size):
                arch = self.sampler.sample(self._rng, exclude=self._seen)
                self._seen.add(arch)
                population.append(arch)
        else:
            n_cross = int(round(size * self.crossover_fraction)) if len(self.topk) >= 2 else 0
            population = [self._child(crossover=i < n_cross) for i in range(size)]
        for arch in population:
            self._generation_of[arch] = self.generation
        self._population = population

    def _child(self, crossover: bool) -> Hashable:
        parents = [a for a, _ in self.topk]
        # Crossover of near-identical parents soon runs out of new children:
        # mutation takes over, and only then a fresh constrained draw.
        for use_crossover in ((True, False) if crossover else (False,)):
            for _ in range(CHILD_ATTEMPTS):
                if use_crossover:
                    i, j = self._rng.choice(len(parents), size=2, replace=False)
                    child = self.space.crossover(parents[i], parents[j], self._rng)
                else:
                    # Each choice block of the parent mutates with mutation_prob.
                    parent = parents[int(self._rng.integers(len(parents)))]
                    child = self.space.mutate(parent, self._rng, self.mutation_prob)
                if child not in self._seen and self.sampler.accepts(child):
                    self._seen.add(child)
                    return child
        self.fresh_fills += 1
        child = self.sampler.sample(self._rng, exclude=self._seen)
        self._seen.add(child)
        return child

    # ------------------------------------------------------------------ state
    def get_state(self) -> dict[str, Any]:
        """JSON-able state, O(P) whatever the number of generations.

        Only what the proposals and their scores cannot give back: the
        generator (as it stands after drawing the current population), the
        current population and how far it was handed out. Scores, Topk and
        the proposed set are rebuilt by `set_state`, as KerasTuner's oracles
        rebuild theirs from the trials.
        """
        return {
            "algorithm": self.name,
            "rng": self._rng.bit_generator.state,
            "generation": self.generation,
            "population": [str(a) for a in self._population],
            "handed": self._handed,
            "proposed": self._proposed,
            "fresh_fills": self.fresh_fills,
        }

    def set_state(
        self,
        state: dict[str, Any],
        proposals: Sequence[Hashable],
        scores: Mapping[Hashable, float | None],
    ) -> None:
        """Inverse of `get_state`, given what the search proposed and was told.

        Args:
            state: from `get_state`.
            proposals: every architecture handed out, in the order of `ask`.
            scores: the told ones (None: scoring failed); others are untold.

        Raises:
            ValueError: if `proposals` are not the ones `state` handed out.
        """
        parse = self.space.parse
        generation, handed = int(state["generation"]), int(state["handed"])
        population = [parse(a) for a in state["population"]]
        start = generation * self.population_size  # every earlier generation was handed out whole
        proposals = list(proposals)
        if len(proposals) != int(state["proposed"]) or proposals[start:] != population[:handed]:
            raise ValueError(
                f"the state handed out {state['proposed']} architectures, the last {handed} of generation "
                f"{generation}; the {len(proposals)} proposals given do not match."
            )
        self._rng = np.random.default_rng()
        self._rng.bit_generator.state = state["rng"]
        self.generation, self._handed, self._proposed = generation, handed, len(proposals)
        self._population = population
        self.fresh_fills = int(state["fresh_fills"])
        self._generation_of = {a: i // self.population_size for i, a in enumerate(proposals)}
        self._generation_of.update((a, generation) for a in population)
        self._seen = set(proposals) | set(population)
        self._scores = {a: None if scores[a] is None else float(scores[a]) for a in proposals if a in scores}
        # Topk as Update_Topk left it: the best of every earlier generation
        # (top-k of top-k and more is top-k of all), the last one too once done.
        told = [(a, self._scores[a]) for a in proposals[:start] if self._scores.get(a) is not None]
        self.topk = sorted(told, key=_rank)[: self.num_parents]
        if self.done:
            self._update_topk()


def _rank(item: tuple[Hashable, float]) -> tuple[float, str]:
    return (-item[1], str(item[0]))
