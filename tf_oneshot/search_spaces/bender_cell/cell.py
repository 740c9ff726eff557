"""The masked one-shot cell (Bender et al. 2018, §3.1 and Figure 3).

A cell takes the outputs of the two previous cells, runs `num_blocks` choice
blocks (block i sees the two cell inputs and blocks 0..i-1), concatenates the
outputs of all blocks and projects them back to `filters` channels with
BN-ReLU-Conv1x1. Every cell of the network shares one set of masks: the
architecture is the same in every cell, and so is the path-dropout pattern
(§3.2, "the same operations will be dropped out in each one").
"""

from __future__ import annotations

import keras
import tensorflow as tf

from tf_oneshot.layers.common import KERNEL_INITIALIZER, LayerGroup, track_layers
from tf_oneshot.layers.ghost_batch_norm import GhostBatchNormalization
from tf_oneshot.search_spaces.bender_cell.choice_block import ChoiceBlock


def cell_masks(
    input_mask: tf.Tensor, op_mask: tf.Tensor, alive: tf.Tensor, op_active: tf.Tensor, filters: int
) -> dict:
    """Shapes per-example masks for the cells of one stack (computed once, shared by its cells).

    Args:
        input_mask: [N, B, B+1] effective input masks (see `effective_masks`).
        op_mask: [N, B, O] effective op masks.
        alive: [N, B], 1 where a block outputs something.
        op_active: [B, O] bools, op (i, o) is on somewhere in the batch.
        filters: the stack's channels.

    Returns:
        The `masks` argument of `Cell.call`.
    """
    num_blocks, num_ops = op_mask.shape[1], op_mask.shape[2]

    def channels(mask):  # [N, K] -> [N, 1, 1, K * filters]
        return tf.repeat(mask, filters, axis=1)[:, None, None, :]

    return {
        "inputs": [channels(input_mask[:, i, : 2 + i]) for i in range(num_blocks)],
        # Unstacking makes all B * O masks [N, 1, 1, 1] with B + 1 ops.
        "ops": [tf.unstack(row, axis=3) for row in tf.unstack(op_mask[:, None, None, :, :, None], axis=3)],
        "active": _unstack_on(op_active.device, op_active, num_blocks, num_ops),
        "alive": channels(alive),
    }


def _unstack_on(device: str, active: tf.Tensor, num_blocks: int, num_ops: int) -> list:
    with tf.device(device or None):
        return [tf.unstack(row) for row in tf.unstack(active)]


@keras.saving.register_keras_serializable(package="tf_oneshot")
class Cell(LayerGroup):
    """A one-shot cell of `num_blocks` masked choice blocks.

    Args:
        filters: channels of each cell input, block and the output.
        num_blocks: choice blocks (N_choice = 4 in the paper).
        ghost_batch_size: for the ghost batch norms.
        skip_inactive: skip ops that are off in the whole batch.
        **kwargs: base layer arguments.

    Call arguments:
        inputs: the two previous cells' outputs concatenated (older first),
            [N, H, W, 2 * filters].
        masks: from `cell_masks`.
        training: Python bool.
        skip_inactive: Python bool overriding the constructor's choice for this call.

    Returns:
        [N, H, W, filters].
    """

    def __init__(
        self, filters: int, num_blocks: int, ghost_batch_size: int, skip_inactive: bool = True, **kwargs
    ) -> None:
        super().__init__(**kwargs)
        if isinstance(filters, bool) or not isinstance(filters, int) or filters < 1:
            raise ValueError(f"filters must be a positive integer. Received: filters={filters!r}")
        if isinstance(num_blocks, bool) or not isinstance(num_blocks, int) or num_blocks < 1:
            raise ValueError(f"num_blocks must be a positive integer. Received: num_blocks={num_blocks!r}")
        self.filters = filters
        self.num_blocks = num_blocks
        self.ghost_batch_size = ghost_batch_size
        self.skip_inactive = bool(skip_inactive)
        self.blocks = track_layers(
            self, "block",
            [ChoiceBlock(i, filters, ghost_batch_size, skip_inactive, name=f"block{i}") for i in range(num_blocks)],
        )
        self.output_bn = GhostBatchNormalization(ghost_batch_size, name="output_bn")
        self.output_conv = keras.layers.Conv2D(
            filters, 1, use_bias=False, kernel_initializer=KERNEL_INITIALIZER, name="output_conv"
        )

    def sublayers(self) -> list[keras.layers.Layer]:
        return [*self.blocks, self.output_bn, self.output_conv]

    def build(self, input_shape) -> None:
        if input_shape[-1] != 2 * self.filters:
            raise ValueError(
                f"a cell takes two inputs of {self.filters} channels concatenated. "
                f"Received: input_shape={input_shape}"
            )
        for i, block in enumerate(self.blocks):
            block.build((*input_shape[:-1], (2 + i) * self.filters))
        concat = (*input_shape[:-1], self.num_blocks * self.filters)
        self.output_bn.build(concat)
        self.output_conv.build(concat)

    def call(self, inputs, masks, training=None, skip_inactive=None):
        states = inputs
        outputs = []
        for i, block in enumerate(self.blocks):
            out = block(
                states, masks["inputs"][i], masks["ops"][i], masks["active"][i], training=training,
                skip_inactive=skip_inactive,
            )
            outputs.append(out)
            if i + 1 < self.num_blocks:
                states = tf.concat([states, out], -1)
        # Bender et al. 2018, §3.1: the cell output concatenates every block.
        # A block with nothing left (all its paths dropped) is removed, as its
        # input rows of the projection would otherwise see BN(0) = beta.
        x = tf.nn.relu(self.output_bn(tf.concat(outputs, -1), training=training))
        return self.output_conv(x * masks["alive"])

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.filters)

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(
            filters=self.filters,
            num_blocks=self.num_blocks,
            ghost_batch_size=self.ghost_batch_size,
            skip_inactive=self.skip_inactive,
        )
        return config
