"""The search-algorithm base: ask/tell, the hand-out of populations, scores and replay, written once.

PyGlove's `DNAGenerator` keeps the bookkeeping and the replay in its base so
that an algorithm only proposes and takes feedback; so does `SearchAlgorithm`.
A subclass writes `propose` (the next generation, from `self.rng`, the
constraints and the scores told so far) and `generation_size`; the base hands
the architectures out through `ask`, records the scores of `tell`, answers
`best`, `done`, `exhausted` and `generation_of`, and saves and restores
itself through `get_state` / `set_state`.

Every algorithm proposes generation by generation. A generational one
(evolution, SPOS §3.4 Algorithm 1; NAO, Luo et al. 2018 §3) draws generation
i+1 only once generation i has been told in full; random search (Bender et
al. 2018, §4.1) and a given list draw without waiting, one architecture (or
the list) at a time. All randomness comes from one seeded generator, so the
proposals depend only on the seed and the scores: not on how many
architectures a caller asks for at a time nor on the order of the tells. A
run restarted over its results file (every architecture already there told
its recorded score at once) therefore proposes what an uninterrupted run
would.

The saved state is what the proposals and their scores cannot give back: the
generator as it stands after drawing the current generation, that generation
and how far it was handed out. That is O(population) whatever the number of
generations; the proposals and the scores come back through `set_state`, as
KerasTuner's oracles rebuild theirs from the trials.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any, ClassVar

import numpy as np

from tf_oneshot.search_spaces import SearchSpace
from tf_oneshot.search_spaces.constraints import ConstrainedSampler, Constraints


class OptionError(ValueError):
    """An algorithm option out of range, in the Keras format ("... Received: name=value").

    `make_algorithm` turns it into a one-line UserError naming the flag.
    """

    def __init__(self, name: str, value: Any, expected: str):
        super().__init__(f"{name} must be {expected}. Received: {name}={value}")
        self.name, self.value, self.expected = name, value, expected


def check_options(*checks: tuple[bool, str, Any, str]) -> None:
    """Raises `OptionError` for the first (ok, name, value, expected) that is not ok."""
    for ok, name, value, expected in checks:
        if not ok:
            raise OptionError(name, value, expected)


class SearchAlgorithm:
    """Ask/tell search over a space, generation by generation; subclasses only propose.

    Args:
        space: the search space.
        num_architectures: distinct architectures to propose in all.
        constraints: bounds every proposal meets (`ConstrainedSampler`).
        seed: seeds every random choice.

    Attributes:
        name: the algorithm's name (results lines' `algorithm`).
        generational: whether a generation waits for the scores of the one
            before it (evolution, NAO) or is drawn at once (random, given).
        options: the constructor options `make_algorithm` built it with, as
            results lines record them.
        rng: the seeded generator every random choice draws from.
        generation: index of the current generation (-1 before the first).
        fresh_fills: places a generation's own operators left empty, filled
            by a fresh constrained draw.
    """

    name: ClassVar[str]
    generational: ClassVar[bool] = True

    def __init__(
        self,
        space: SearchSpace,
        num_architectures: int,
        constraints: Constraints | None = None,
        seed: int = 0,
    ):
        check_options((num_architectures >= 1, "num_architectures", num_architectures, ">= 1"))
        self.space = space
        self.num_architectures = int(num_architectures)
        self.sampler = ConstrainedSampler(space, constraints)
        self.seed = int(seed)
        self.rng = np.random.default_rng(self.seed)
        self.options: dict[str, Any] = {}
        self.generation = -1
        self.fresh_fills = 0
        self._population: list[Hashable] = []
        self._handed = 0  # members of the current generation handed out
        self._proposed = 0  # handed out over all generations
        self._handed_out: set[Hashable] = set()
        self._seen: set[Hashable] = set()  # handed out, or drawn into the current generation
        self._generation_of: dict[Hashable, int] = {}
        self._scores: dict[Hashable, float | None] = {}

    # ------------------------------------------------------ for subclasses
    def propose(self) -> list[Hashable]:
        """The next generation (`self.generation` is its index), distinct from every earlier proposal."""
        raise NotImplementedError

    def generation_size(self, generation: int) -> int:
        """How many architectures generation `generation` holds when the budget does not cut it short."""
        raise NotImplementedError

    def draw(self) -> Hashable:
        """A fresh architecture, uniform over those meeting the constraints and not proposed yet."""
        arch = self.sampler.sample(self.rng, exclude=self._seen)
        self._seen.add(arch)
        return arch

    def is_new(self, arch: Hashable) -> bool:
        """Whether `arch` was neither proposed nor drawn into the current generation."""
        return arch not in self._seen

    def take(self, arch: Hashable) -> bool:
        """Claims `arch` for the generation being proposed: True if it is new and meets the constraints."""
        if arch in self._seen or not self.sampler.accepts(arch):
            return False
        self._seen.add(arch)
        return True

    # ------------------------------------------------------------- ask / tell
    def ask(self, n: int) -> list[Hashable]:
        """Up to `n` architectures not yet handed out.

        Returns fewer (possibly none) while a generational algorithm's current
        generation awaits scores, or once the budget is spent.
        """
        out = []
        while len(out) < n and self._proposed < self.num_architectures:
            if self._handed == len(self._population):
                if self.generational and not all(a in self._scores for a in self._population):
                    break
                self._next_generation()
                continue
            arch = self._population[self._handed]
            self._handed += 1
            self._proposed += 1
            self._handed_out.add(arch)
            out.append(arch)
        return out

    def tell(self, arch: Hashable, fitness: float | None) -> None:
        """Records `arch`'s score (None: scoring failed); a later tell replaces an earlier one.

        NAO-V2 re-evaluates its pool each iteration (§4.3): the latest score counts.
        """
        if arch not in self._handed_out:
            raise KeyError(f"architecture {arch} was not proposed by this search.")
        self._scores[arch] = None if fitness is None else float(fitness)

    def generation_of(self, arch: Hashable) -> int | None:
        """The generation that proposed `arch` (0: the first); None for algorithms without generations."""
        return self._generation_of.get(arch) if self.generational else None

    @property
    def proposed(self) -> int:
        """Architectures handed out so far."""
        return self._proposed

    @property
    def exhausted(self) -> bool:
        """True when no more proposals will come."""
        return self._proposed >= self.num_architectures

    @property
    def done(self) -> bool:
        """True when every proposal of the budget has been told."""
        return self.exhausted and len(self._scores) >= self._proposed

    def best(self, k: int | None = 1) -> list[tuple[Hashable, float]]:
        """The `k` best told architectures (None: all of them), best first; ties by the string form."""
        scored = [(a, f) for a, f in self._scores.items() if f is not None]
        return sorted(scored, key=_rank)[:k]

    def _next_generation(self) -> None:
        self.generation += 1
        self._handed = 0
        population = self.propose()
        if not population:
            raise RuntimeError(f"{self.name} proposed an empty generation {self.generation}.")
        for arch in population:
            self._seen.add(arch)
            self._generation_of[arch] = self.generation
        self._population = population

    # ------------------------------------------------------------------ state
    def get_state(self) -> dict[str, Any]:
        """JSON-able state, O(population) whatever the number of generations.

        The generator (as it stands after drawing the current generation), the
        current generation and how far it was handed out; the proposals and
        scores come back through `set_state`.
        """
        return {
            "algorithm": self.name,
            "seed": self.seed,
            "rng": self.rng.bit_generator.state,
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
            ValueError: if the state is another algorithm's, or `proposals`
                are not the ones it handed out.
        """
        if state["algorithm"] != self.name:
            raise ValueError(f"the state is of algorithm {state['algorithm']}, not {self.name}.")
        generation, handed, proposed = int(state["generation"]), int(state["handed"]), int(state["proposed"])
        population = [self.space.parse(a) for a in state["population"]]
        proposals = list(proposals)
        start = proposed - handed  # every earlier generation was handed out whole
        if len(proposals) != proposed or proposals[start:] != population[:handed]:
            raise ValueError(f"the state proposed {proposed} architectures; {len(proposals)} given do not match "
                             f"them (the last {handed} from generation {generation}).")
        self.seed = int(state["seed"])
        self.rng = np.random.default_rng()
        self.rng.bit_generator.state = state["rng"]
        self.generation, self._handed, self._proposed = generation, handed, proposed
        self._population = population
        self.fresh_fills = int(state["fresh_fills"])
        self._generation_of = dict(zip(proposals[:start], self._generations(start)))
        self._generation_of.update((a, generation) for a in population)
        self._handed_out = set(proposals)
        self._seen = self._handed_out | set(population)
        self._scores = {a: None if scores[a] is None else float(scores[a]) for a in proposals if a in scores}

    def _generations(self, count: int) -> list[int]:
        """The generation of each of the first `count` proposals (whole generations)."""
        out: list[int] = []
        generation = 0
        while len(out) < count:
            out += [generation] * self.generation_size(generation)
            generation += 1
        return out[:count]


def _rank(item: tuple[Hashable, float]) -> tuple[float, str]:
    return (-item[1], str(item[0]))
