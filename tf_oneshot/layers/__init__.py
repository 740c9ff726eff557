"""Keras layers of the one-shot model (Bender et al. 2018, §3.1-3.2)."""

from tf_oneshot.layers.cell import Cell, cell_masks
from tf_oneshot.layers.choice_block import ChoiceBlock, effective_masks
from tf_oneshot.layers.ghost_batch_norm import GhostBatchNormalization
from tf_oneshot.layers.ops import CellOp, op_layers
from tf_oneshot.layers.path_dropout import PathDropout

__all__ = [
    "Cell",
    "CellOp",
    "ChoiceBlock",
    "GhostBatchNormalization",
    "PathDropout",
    "cell_masks",
    "effective_masks",
    "op_layers",
]
