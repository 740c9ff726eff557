"""The networks of the darts64 space, found by `SearchSpace` through `Darts64Space.network`.

The space is data and never imports this module; `SearchSpace` imports it by
name on the first network asked for, checks the arguments, and calls
`build_oneshot` and `build_fused` (here), `build_standalone_model` and `copy_oneshot_weights`
(from `standalone`).
"""

from __future__ import annotations

from tf_oneshot.search_spaces.darts64.fused import Darts64FusedModel
from tf_oneshot.search_spaces.darts64.model import Darts64OneShotModel
from tf_oneshot.search_spaces.darts64.space import Darts64Space
from tf_oneshot.search_spaces.darts64.standalone import build_standalone_model, copy_oneshot_weights
from tf_oneshot.search_spaces.sharing import SharingPlan

__all__ = ["build_fused", "build_oneshot", "build_standalone_model", "copy_oneshot_weights"]


def build_oneshot(space: Darts64Space, ghost_batch_size: int, skip_inactive: bool = True,
                  sharing: SharingPlan | None = None) -> Darts64OneShotModel:
    """The super-net, weights created; `sharing` gives it copies of its weights ("Deeper insights" §4.2-4.3)."""
    copies = {} if sharing is None else {"copies": sharing.copies, "shared_segments": sharing.shared_segments}
    return Darts64OneShotModel.create(space, ghost_batch_size, skip_inactive, **copies)


def build_fused(oneshot: Darts64OneShotModel, children: int) -> Darts64FusedModel:
    """K = `children` independent children in one network mirroring `oneshot` (HFTA; `fused`)."""
    return Darts64FusedModel(oneshot, children)
