"""The one way a search algorithm is built from its name: `make_algorithm`.

`tf-oneshot search`, the library's `tf_oneshot.search(...)`, the demo,
`OneShotOracle` and NAO-V2's iterated loop (`nas.make_algorithm`) all build
their algorithm here, from a name of `ALGORITHMS` and options in the words
of the command's flags: `population_size` and `num_parents` mean P and k of
SPOS's Algorithm 1 (§3.4) for evolution, and NAO's random initial pool, its
new architectures per generation and its top-k (Luo et al. 2018, §3) for
"nao". A bad name or option is one line naming the flag.

NAO trains a Keras network, so `ALGORITHMS["nao"]` imports it only when
looked up: this module, like the algorithms, loads without TensorFlow.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator, Mapping
from typing import Any

from tf_oneshot.errors import UserError
from tf_oneshot.search.base import OptionError, SearchAlgorithm
from tf_oneshot.search.evolution import Evolution
from tf_oneshot.search.random_search import RandomSearch
from tf_oneshot.search_spaces import SearchSpace
from tf_oneshot.search_spaces.constraints import Constraints


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

# Per algorithm: option (the flag's name) -> the constructor arguments it sets,
# each kept by the algorithm as an attribute of the same name.
OPTIONS: dict[str, dict[str, tuple[str, ...]]] = {
    "random": {},
    "evolution": {"population_size": ("population_size",), "num_parents": ("num_parents",),
                  "mutation_prob": ("mutation_prob",)},
    # `new_per_iteration` (`tf-oneshot nas`) comes after `population_size`, so it overrides new_size.
    "nao": {"population_size": ("initial_size", "new_size"), "new_per_iteration": ("new_size",),
            "num_parents": ("top_k",)},
}


def make_algorithm(
    name: str,
    space: SearchSpace,
    num_architectures: int,
    constraints: Constraints | None = None,
    seed: int = 0,
    **options: Any,
) -> SearchAlgorithm:
    """A fresh ask/tell algorithm `name` with a budget of `num_architectures`.

    Args:
        name: a name of `ALGORITHMS`.
        space: the search space.
        num_architectures: distinct architectures to propose in all.
        constraints: bounds every proposal meets.
        seed: seeds the algorithm.
        **options: `population_size`, `num_parents`, `mutation_prob` (the
            flags of `tf-oneshot search`). An option another algorithm takes
            is ignored (the command passes every flag), one of None too.

    Returns:
        The algorithm; its `options` hold the values of the constructor
        arguments the options set, defaults included, as results lines
        record them (a search resumes whether a default was spelled out or not).

    Raises:
        UserError: an unknown name or option, or an option out of range,
            naming the flag.
    """
    if name not in ALGORITHMS:
        raise UserError(f"--algorithm={name} is unknown; choose one of {', '.join(ALGORITHMS)}.")
    known = sorted({option for table in OPTIONS.values() for option in table})
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise UserError(f"--{unknown[0]} is not a search option; the options are "
                        f"{', '.join('--' + o for o in known)}.")
    table = OPTIONS[name]
    arguments = {arg: options[option] for option, args in table.items() if options.get(option) is not None
                 for arg in args}
    try:
        algorithm = ALGORITHMS[name](space, num_architectures, constraints, seed=seed, **arguments)
    except OptionError as e:
        flag = next((option for option, args in table.items() if e.name in args), e.name)
        raise UserError(f"--{flag}={e.value} is invalid for --algorithm={name}: {e.name} must be {e.expected}.") \
            from None
    algorithm.options = {arg: getattr(algorithm, arg) for args in table.values() for arg in args}
    return algorithm

