"""Given architectures: score exactly these, in order, each once.

The way to check a candidate (from a paper, a colleague or an earlier search)
against a trained one-shot model is to score it as the search does (Bender et
al. 2018, §3.3): `tf-oneshot search --architectures=A,B` drives this
"algorithm" through the same driver, results file and scorer as random search
and evolution, so its lines (algorithm "given") read like theirs.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence

from tf_oneshot.search.base import SearchAlgorithm
from tf_oneshot.search_spaces import SearchSpace


class GivenArchitectures(SearchAlgorithm):
    """Proposes a fixed list of architectures (duplicates dropped) as one generation, then stops.

    Args:
        space: the search space they belong to.
        architectures: parsed architectures of `space`.
    """

    name = "given"
    generational = False

    def __init__(self, space: SearchSpace, architectures: Sequence[Hashable]):
        self.architectures = list(dict.fromkeys(architectures))
        if not self.architectures:
            raise ValueError("GivenArchitectures needs at least one architecture.")
        super().__init__(space, len(self.architectures))

    def propose(self) -> list[Hashable]:
        """The whole list, in order."""
        return list(self.architectures)

    def generation_size(self, generation: int) -> int:
        return len(self.architectures)
