"""The decisions an architecture is made of: one-of and subset choices.

A search space is described by a tuple of named decisions, as in TuNAS's
`OneOf(choices, tag)` and PyGlove's `oneof` / `manyof`: `OneOf` picks one
option, `SubsetOf` picks a subset of between `min_size` and `max_size`
options. Everything else the library needs (exact size, uniform sampling,
enumeration, mutation and crossover, KerasTuner hyperparameters, masks,
restriction to a sub-space) is derived from that one description, so a new
space declares its decisions and never re-implements those.

Decisions are independent: every combination of their values is an
architecture. `group` names the choice block a decision belongs to; SPOS
(Guo et al. 2019, §3.4) mutates and crosses over whole choice blocks, so
decisions of one group change together.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import re
from collections.abc import Hashable, Sequence
from typing import Any

from tf_oneshot.errors import UserError

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _check_common(kind: str, name: str, options: tuple) -> None:
    if not isinstance(name, str) or not _NAME.match(name):
        raise ValueError(f"{kind} name must be an identifier (letters, digits, '_'). Received: name={name!r}")
    if len(options) < 1:
        raise ValueError(f"{kind} {name!r} needs at least one option. Received: options={options!r}")
    if len(set(options)) != len(options):
        raise ValueError(f"{kind} {name!r} has repeated options. Received: options={options!r}")
    labels = [str(o) for o in options]
    if len(set(labels)) != len(labels) or any(not t or "/" in t or "+" in t for t in labels):
        raise ValueError(
            f"{kind} {name!r}: options must print as distinct non-empty strings without '/' or '+'. "
            f"Received: options={options!r}"
        )


@dataclasses.dataclass(frozen=True)
class OneOf:
    """Exactly one of `options` (PyGlove's `oneof`, TuNAS's `OneOf`).

    Args:
        name: identifier; the KerasTuner hyperparameter and mask key.
        options: hashable values (ints, strings, floats, bools).
        group: the choice block this decision belongs to (default: its name).
    """

    name: str
    options: tuple
    group: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "options", tuple(self.options))
        _check_common("OneOf", self.name, self.options)

    @property
    def block(self) -> str:
        return self.group or self.name

    def values(self) -> tuple:
        """Every value, in option order."""
        return self.options

    def size(self) -> int:
        return len(self.options)

    def format(self, value: Any) -> str:
        return str(value)

    def parse(self, text: str) -> Any:
        for option in self.options:
            if str(option) == text:
                return option
        raise UserError(f"{self.name}: {text!r} is not one of {', '.join(map(str, self.options))}.")

    def check(self, value: Any) -> Any:
        """Returns `value` if valid (UserError naming the decision otherwise)."""
        if isinstance(value, Hashable) and value in self.options:
            # True == 1: keep the option's own type.
            return self.options[self.options.index(value)]
        raise UserError(f"{self.name}: {value!r} is not one of {', '.join(map(str, self.options))}.")

    def to_json(self, value: Any) -> Any:
        return value

    def from_json(self, obj: Any) -> Any:
        return self.check(obj)

    def multi_hot(self, value: Any) -> list[float]:
        return [1.0 if o == value else 0.0 for o in self.options]


@dataclasses.dataclass(frozen=True)
class SubsetOf:
    """A subset of `options` of `min_size` to `max_size` members (PyGlove's `manyof`).

    A value is a tuple of options in option order. Bender et al. 2018, §3.1:
    a choice block's inputs (any non-empty subset) and its ops (one or two).

    Args:
        name: identifier; the KerasTuner hyperparameter and mask key.
        options: hashable values.
        min_size, max_size: bounds on the subset size (max None: all).
        group: the choice block this decision belongs to (default: its name).
    """

    name: str
    options: tuple
    min_size: int = 1
    max_size: int | None = None
    group: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "options", tuple(self.options))
        _check_common("SubsetOf", self.name, self.options)
        top = len(self.options) if self.max_size is None else self.max_size
        if not 0 <= self.min_size <= top <= len(self.options):
            raise ValueError(
                f"SubsetOf {self.name!r} needs 0 <= min_size <= max_size <= {len(self.options)}. "
                f"Received: min_size={self.min_size}, max_size={self.max_size}"
            )
        object.__setattr__(self, "max_size", top)

    @property
    def block(self) -> str:
        return self.group or self.name

    def values(self) -> tuple:
        """Every subset, smaller sizes first, each in option order."""
        return tuple(
            combo
            for k in range(self.min_size, self.max_size + 1)
            for combo in itertools.combinations(self.options, k)
        )

    def size(self) -> int:
        return sum(math.comb(len(self.options), k) for k in range(self.min_size, self.max_size + 1))

    @property
    def _separator(self) -> str:
        return "" if all(len(str(o)) == 1 for o in self.options) else "+"

    def format(self, value: tuple) -> str:
        return self._separator.join(str(o) for o in value) or "-"

    def parse(self, text: str) -> tuple:
        if text == "-":
            return self.check(())
        parts = list(text) if not self._separator else text.split("+")
        by_label = {str(o): o for o in self.options}
        bad = [p for p in parts if p not in by_label]
        if bad:
            raise UserError(f"{self.name}: {bad[0]!r} is not one of {', '.join(by_label)}.")
        return self.check(tuple(by_label[p] for p in parts))

    def check(self, value: Any) -> tuple:
        """Returns the canonical (option-ordered) tuple, or raises UserError."""
        if isinstance(value, (str, bytes)) or not isinstance(value, Sequence | set | frozenset):
            raise UserError(f"{self.name}: expected a list of options, got {value!r}.")
        items = list(value)
        if not all(isinstance(v, Hashable) and v in self.options for v in items):
            bad = next(v for v in items if not (isinstance(v, Hashable) and v in self.options))
            raise UserError(f"{self.name}: {bad!r} is not one of {', '.join(map(str, self.options))}.")
        if len(set(items)) != len(items):
            raise UserError(f"{self.name}: options must not repeat, got {value!r}.")
        if not self.min_size <= len(items) <= self.max_size:
            raise UserError(
                f"{self.name}: needs {self.min_size}..{self.max_size} options, got {len(items)}."
            )
        return tuple(o for o in self.options if o in items)

    def to_json(self, value: tuple) -> list:
        return list(value)

    def from_json(self, obj: Any) -> tuple:
        if not isinstance(obj, list):
            raise UserError(f"{self.name}: expected a JSON list, got {obj!r}.")
        return self.check(obj)

    def multi_hot(self, value: tuple) -> list[float]:
        return [1.0 if o in value else 0.0 for o in self.options]


Decision = OneOf | SubsetOf
