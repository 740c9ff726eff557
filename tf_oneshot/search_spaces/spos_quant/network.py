"""The quantized ResNet supernet and stand-alone networks of the spos_quant spaces (SPOS §3.3, §4).

`SposQuantSpace.network` names this module. Its supernet holds each block
at the widest bottleneck with every bit width (`model`); a stand-alone
network fixes the bits and slices the widths (`standalone`). `SearchSpace`
imports this module by name, checks the arguments, and calls
`build_oneshot`, `build_standalone_model` and `copy_oneshot_weights`; it
refuses a sharing plan (one copy of the weights).
"""

from __future__ import annotations

from tf_oneshot.search_spaces.sharing import SharingPlan
from tf_oneshot.search_spaces.spos_quant.model import SposQuantOneShotModel
from tf_oneshot.search_spaces.spos_quant.space import SposQuantSpace
from tf_oneshot.search_spaces.spos_quant.standalone import build_standalone_model, copy_oneshot_weights

__all__ = ["build_oneshot", "build_standalone_model", "copy_oneshot_weights"]


def build_oneshot(space: SposQuantSpace, ghost_batch_size: int, skip_inactive: bool = True,
                  sharing: SharingPlan | None = None) -> SposQuantOneShotModel:
    """The supernet (SPOS §3.3), weights created."""
    return SposQuantOneShotModel.create(space, ghost_batch_size, skip_inactive)
