"""The networks of the bender_cell space, found by `SearchSpace` through `CellSpace.network`.

The space is data and never imports this module; `SearchSpace` imports it by
name on the first network asked for, checks the arguments, and calls
`build_oneshot` (here), `build_standalone_model` and `copy_oneshot_weights`
(from `standalone`). The one-shot model holds one copy of its weights, so
`SearchSpace` refuses a sharing plan before `build_oneshot` sees it.
"""

from __future__ import annotations

from tf_oneshot.search_spaces.bender_cell.model import CellOneShotModel
from tf_oneshot.search_spaces.bender_cell.space import CellSpace
from tf_oneshot.search_spaces.bender_cell.standalone import (
    build_all_on_model,
    build_standalone_model,
    copy_oneshot_weights,
)
from tf_oneshot.search_spaces.sharing import SharingPlan

__all__ = ["build_oneshot", "build_standalone_model", "copy_oneshot_weights", "build_all_on_model"]


def build_oneshot(space: CellSpace, ghost_batch_size: int, skip_inactive: bool = True,
                  sharing: SharingPlan | None = None) -> CellOneShotModel:
    """The masked one-shot model (Bender et al. 2018, §3.1-3.2); it creates its weights itself."""
    return CellOneShotModel(space, ghost_batch_size=ghost_batch_size, skip_inactive=skip_inactive)
