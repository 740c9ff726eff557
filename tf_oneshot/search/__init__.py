"""Search with a trained one-shot model (Bender et al. 2018, §3.3-3.4, §4.1; SPOS §3.4).

Algorithms (`RandomSearch`, `Evolution`), constraints, selection rules, the
results file and the driver know no TensorFlow; `tf_oneshot.search.scorer`
(imported on its own) holds the compiled scoring of architectures. NAO (Luo et
al. 2018) trains a Keras network, so it lives in `tf_oneshot.search.nao` and
`ALGORITHMS["nao"]` imports it only when looked up.
"""

import importlib
from collections.abc import Iterator, Mapping
from typing import Any

from tf_oneshot.search.evolution import Evolution
from tf_oneshot.search.given import GivenArchitectures
from tf_oneshot.search.random_search import RandomSearch
from tf_oneshot.search.selection import oneshot_small, oneshot_top, stratified_sample
from tf_oneshot.search_spaces.constraints import ConstrainedSampler, Constraints, cost_bounds


class _Algorithms(Mapping):
    """Algorithm name -> class; classes that need TensorFlow are imported on lookup."""

    def __init__(self, eager: dict[str, type], lazy: dict[str, str]):
        self._eager, self._lazy = eager, lazy

    def __getitem__(self, name: str) -> type:
        if name in self._eager:
            return self._eager[name]
        module, attr = self._lazy[name].split(":")
        return getattr(importlib.import_module(module), attr)

    def __contains__(self, name: object) -> bool:  # Mapping's would import a lazy class
        return name in self._eager or name in self._lazy

    def __iter__(self) -> Iterator[str]:
        return iter([*self._eager, *self._lazy])

    def __len__(self) -> int:
        return len(self._eager) + len(self._lazy)


ALGORITHMS = _Algorithms({RandomSearch.name: RandomSearch, Evolution.name: Evolution},
                         {"nao": "tf_oneshot.search.nao:NAO"})


def __getattr__(name: str) -> Any:
    # The results file goes through io_utils (tf.io.gfile, for gs:// paths):
    # imported on first use so that the algorithms load without TensorFlow.
    if name == "ResultsFile":
        from tf_oneshot.search.results import ResultsFile

        return ResultsFile
    if name == "run_search":
        from tf_oneshot.search.driver import run_search

        return run_search
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

__all__ = [
    "ALGORITHMS",
    "ConstrainedSampler",
    "Constraints",
    "Evolution",
    "GivenArchitectures",
    "RandomSearch",
    "ResultsFile",
    "cost_bounds",
    "oneshot_small",
    "oneshot_top",
    "run_search",
    "stratified_sample",
]
