"""The cell search space of Bender et al. 2018 (§3.1), its one-shot and stand-alone models.

Importing this package loads only the TensorFlow-free space; the networks
(`network`, with `model`, `standalone`, `cell`, `choice_block`, `ops`) load
when first built, by name (`SearchSpace.network`).
"""

from tf_oneshot.search_spaces.bender_cell.space import (
    MAX_OPS_PER_BLOCK,
    NUM_OPS,
    OP_COMBINATIONS,
    OP_NAMES,
    Block,
    CellArchitecture,
    CellSpace,
)

__all__ = ["MAX_OPS_PER_BLOCK", "NUM_OPS", "OP_COMBINATIONS", "OP_NAMES", "Block", "CellArchitecture", "CellSpace"]
