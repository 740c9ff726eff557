"""Given architectures: score exactly these, in order, each once.

The way to check a candidate (from a paper, a colleague or an earlier search)
against a trained one-shot model is to score it as the search does (Bender et
al. 2018, §3.3): `tf-oneshot search --architectures=A,B` drives this
"algorithm" through the same driver, results file and scorer as random search
and evolution, so its lines (algorithm "given") read like theirs.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence


class GivenArchitectures:
    """Proposes a fixed list of architectures (duplicates dropped), then stops.

    Args:
        architectures: parsed architectures of one search space.
    """

    name = "given"

    def __init__(self, architectures: Sequence[Hashable]):
        self._archs = list(dict.fromkeys(architectures))
        if not self._archs:
            raise ValueError("GivenArchitectures needs at least one architecture.")
        self.num_architectures = len(self._archs)
        self._next = 0
        self._scores: dict[Hashable, float | None] = {}

    def ask(self, n: int) -> list[Hashable]:
        """The next `n` architectures of the list (fewer at its end)."""
        out = self._archs[self._next : self._next + n]
        self._next += len(out)
        return out

    def tell(self, arch: Hashable, fitness: float | None) -> None:
        """Records the score of a proposed architecture (None: it failed)."""
        if arch not in self._archs[: self._next]:
            raise KeyError(f"architecture {arch} was not proposed by this search.")
        self._scores[arch] = fitness

    def generation_of(self, arch: Hashable) -> int | None:
        """Given architectures have no generations."""
        return None

    @property
    def done(self) -> bool:
        """True when every architecture has been told."""
        return len(self._scores) >= self.num_architectures

    @property
    def exhausted(self) -> bool:
        """True when every architecture has been proposed."""
        return self._next >= self.num_architectures

    def best(self, k: int = 1) -> list[tuple[Hashable, float]]:
        """The `k` best told architectures, best first."""
        scored = [(a, f) for a, f in self._scores.items() if f is not None]
        scored.sort(key=lambda af: (-af[1], str(af[0])))
        return scored[:k]
