"""Search spaces behind one small interface (see `base.SearchSpace`)."""

from __future__ import annotations

from typing import Any

from tf_oneshot.errors import UserError
from tf_oneshot.search_spaces.base import Cost, SearchSpace
from tf_oneshot.search_spaces.bender_cell import (
    NUM_OPS,
    OP_NAMES,
    Block,
    CellArchitecture,
    CellSpace,
)

SPACES = {CellSpace.name: CellSpace}


def get_space(name: str, **kwargs: Any) -> SearchSpace:
    """Builds the search space called `name` with its keyword arguments."""
    if name not in SPACES:
        raise UserError(f"unknown search space {name!r}; known: {', '.join(sorted(SPACES))}.")
    return SPACES[name](**kwargs)


def space_from_config(config: dict) -> SearchSpace:
    """Inverse of `space.to_config()`."""
    name = config.get("space")
    if name not in SPACES:
        raise UserError(f"unknown search space {name!r}; known: {', '.join(sorted(SPACES))}.")
    return SPACES[name].from_config(config)


__all__ = [
    "NUM_OPS",
    "OP_NAMES",
    "Block",
    "CellArchitecture",
    "CellSpace",
    "Cost",
    "SearchSpace",
    "get_space",
    "space_from_config",
]
