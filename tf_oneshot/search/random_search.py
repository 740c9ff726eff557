"""Random search: uniform draws from the (constrained) space, each scored once.

Bender et al. 2018, §4.1: "we randomly sampled around 20,000 architectures
from the search space, and computed the accuracy of each one on the one-shot
model." Search algorithms speak ask/tell and know no TensorFlow: the CLI asks
for a ghost batch of architectures at a time, the KerasTuner oracle for one
per trial; both drive this same class.

The draws depend only on the seed: asking again from a fresh instance replays
the same sequence, so a run restarted over its results file (where every
architecture already there is a cache hit) continues exactly where an
uninterrupted run would, and a larger budget continues a smaller one.
"""

from __future__ import annotations

from collections.abc import Hashable

from tf_oneshot.search.base import SearchAlgorithm


class RandomSearch(SearchAlgorithm):
    """Uniform random search under constraints, without repeats.

    Each "generation" is one draw, made when asked for, never waiting for
    scores (`SearchAlgorithm` keeps the rest).

    Args:
        space: the search space.
        num_architectures: how many distinct architectures to propose in all.
        constraints: bounds on params and multiply-adds, met by every proposal.
        seed: seeds the draws.
    """

    name = "random"
    generational = False

    def propose(self) -> list[Hashable]:
        """One uniform draw among the architectures meeting the constraints, not proposed before."""
        return [self.draw()]

    def generation_size(self, generation: int) -> int:
        return 1
