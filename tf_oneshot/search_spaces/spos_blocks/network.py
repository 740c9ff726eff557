"""The ShuffleNetV2 supernet and stand-alone networks of the SPOS block and channel spaces (SPOS §3.2-3.3).

`SposBlocksSpace.network` names this module, and the channel spaces inherit
it: one supernet holds every candidate at the widest mid width, masked
(`model`), and a stand-alone network takes the leading slices of its weights
(`standalone`). `SearchSpace` imports this module by name, checks the
arguments, and calls `build_oneshot`, `build_standalone_model` and
`copy_oneshot_weights`; it refuses a sharing plan (one copy of the weights).
"""

from __future__ import annotations

from tf_oneshot.search_spaces.sharing import SharingPlan
from tf_oneshot.search_spaces.spos_blocks.model import SposBlocksOneShotModel
from tf_oneshot.search_spaces.spos_blocks.space import SposBlocksSpace
from tf_oneshot.search_spaces.spos_blocks.standalone import build_standalone_model, copy_oneshot_weights

__all__ = ["build_oneshot", "build_standalone_model", "copy_oneshot_weights"]


def build_oneshot(space: SposBlocksSpace, ghost_batch_size: int, skip_inactive: bool = True,
                  sharing: SharingPlan | None = None) -> SposBlocksOneShotModel:
    """The supernet (SPOS §3.2), weights created."""
    return SposBlocksOneShotModel.create(space, ghost_batch_size, skip_inactive)
