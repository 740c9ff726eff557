"""Random search: uniform draws from the (constrained) space, each scored once.

Bender et al. 2018, §4.1: "we randomly sampled around 20,000 architectures
from the search space, and computed the accuracy of each one on the one-shot
model." Search algorithms speak ask/tell and know no TensorFlow: the CLI asks
for a ghost batch of architectures at a time, the KerasTuner oracle for one
per trial; both drive this same class.

The draws depend only on the seed: asking again from a fresh instance replays
the same sequence, so a run restarted over its results file (where every
architecture already there is a cache hit) continues exactly where an
uninterrupted run would be.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np

from tf_oneshot.search_spaces import SearchSpace
from tf_oneshot.search_spaces.constraints import ConstrainedSampler, Constraints


class RandomSearch:
    """Uniform random search under constraints, without repeats.

    Args:
        space: the search space.
        num_architectures: how many distinct architectures to propose in all.
        constraints: bounds on params and multiply-adds, met by every proposal.
        seed: seeds the draws.
    """

    name = "random"

    def __init__(
        self,
        space: SearchSpace,
        num_architectures: int,
        constraints: Constraints | None = None,
        seed: int = 0,
    ):
        if num_architectures < 1:
            raise ValueError(f"num_architectures must be >= 1. Received: num_architectures={num_architectures}")
        self.space = space
        self.num_architectures = int(num_architectures)
        self.sampler = ConstrainedSampler(space, constraints)
        self.seed = int(seed)
        self._rng = np.random.default_rng(self.seed)
        self._proposed: list[Hashable] = []
        self._seen: set[Hashable] = set()
        self._scores: dict[Hashable, float | None] = {}

    # ------------------------------------------------------------- ask / tell
    def ask(self, n: int) -> list[Hashable]:
        """Up to `n` new architectures (fewer once the budget is used up)."""
        out = []
        while len(out) < n and len(self._proposed) < self.num_architectures:
            arch = self.sampler.sample(self._rng, exclude=self._seen)
            self._seen.add(arch)
            self._proposed.append(arch)
            out.append(arch)
        return out

    def tell(self, arch: Hashable, fitness: float | None) -> None:
        """Records the score of a proposed architecture (None: it failed)."""
        if arch not in self._seen:
            raise KeyError(f"architecture {arch} was not proposed by this search.")
        self._scores[arch] = fitness

    def generation_of(self, arch: Hashable) -> int | None:
        """Random search has no generations."""
        return None

    @property
    def done(self) -> bool:
        """True when every proposal of the budget has been told."""
        return len(self._proposed) >= self.num_architectures and len(self._scores) >= len(self._proposed)

    @property
    def exhausted(self) -> bool:
        """True when no more proposals will come."""
        return len(self._proposed) >= self.num_architectures

    def best(self, k: int = 1) -> list[tuple[Hashable, float]]:
        """The `k` best told architectures, best first."""
        scored = [(a, f) for a, f in self._scores.items() if f is not None]
        scored.sort(key=lambda af: (-af[1], str(af[0])))
        return scored[:k]

    # ------------------------------------------------------------------ state
    def get_state(self) -> dict[str, Any]:
        """JSON-able state of constant size: the generator and how many were proposed.

        The proposals and scores themselves come back through `set_state`
        (KerasTuner's oracles rebuild them from the trials).
        """
        return {
            "algorithm": self.name,
            "rng": self._rng.bit_generator.state,
            "proposed": len(self._proposed),
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
            proposals: every architecture proposed, in order.
            scores: the told ones (None: scoring failed).

        Raises:
            ValueError: if the number of proposals is not the state's.
        """
        if len(proposals) != int(state["proposed"]):
            raise ValueError(f"the state proposed {state['proposed']} architectures; {len(proposals)} given.")
        self._rng = np.random.default_rng()
        self._rng.bit_generator.state = state["rng"]
        self._proposed = list(proposals)
        self._seen = set(self._proposed)
        self._scores = {a: scores[a] for a in self._proposed if a in scores}
