"""The masked choice block of the one-shot model (Bender et al. 2018, §3.1).

Block i concatenates its 2+i candidate inputs (the two previous cells, then
blocks 0..i-1 of this cell), applies BN-ReLU-Conv1x1 to `filters` channels,
then sums the outputs of all seven ops. The architecture (and path dropout)
enters only as mask tensors, so one graph serves every architecture:

- an input path is removed by zeroing its channels after BN-ReLU, which is
  exactly removing those input rows of the 1x1 convolution (batch norm is
  per channel), i.e. the stand-alone model's smaller concatenation;
- an op is removed by multiplying its output by 0;
- an op with weights that is off in every example of the batch is not
  computed at all (`tf.cond`), as TuNAS does; pooling and the identity are
  cheaper masked than skipped (`tf_oneshot.layers.choice`).

Masks are per example (each ghost batch's mask repeated over its examples,
§3.2), shaped to broadcast against [N, H, W, C].
"""

from __future__ import annotations

import keras
import tensorflow as tf

from tf_oneshot.layers.choice import masked_sum, skip_which
from tf_oneshot.layers.common import KERNEL_INITIALIZER, LayerGroup, track_layers
from tf_oneshot.layers.ghost_batch_norm import GhostBatchNormalization
from tf_oneshot.search_spaces.bender_cell.ops import CellOp
from tf_oneshot.search_spaces.bender_cell.space import NUM_OPS


def effective_masks(input_mask: tf.Tensor, op_mask: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """Removes the paths that carry nothing once dropped nodes are gone.

    A block with no input or no op left (path dropout's "zero" rule) outputs
    nothing; the paths leaving it, and a block fed only by such blocks, carry
    nothing either. Zeroing them keeps the one-shot model equal to the
    network with those paths removed, and lets `masked_l2` skip them.

    Args:
        input_mask: [..., B, B+1]; entry (i, j) = input j of block i is on.
        op_mask: [..., B, O]; entry (i, o) = op o of block i is on.

    Returns:
        (input_mask, op_mask, alive): the masks with dead paths zeroed and
        alive [..., B], 1 where a block outputs something.
    """
    num_blocks = input_mask.shape[-2]
    ones = tf.ones_like(input_mask[..., 0, 0])
    sources = [ones, ones]  # the two cell inputs always carry something
    rows, ops, alive = [], [], []
    for i in range(num_blocks):
        row = input_mask[..., i, : 2 + i] * tf.stack(sources, -1)
        live = tf.reduce_max(row, -1) * tf.reduce_max(op_mask[..., i, :], -1)
        rows.append(tf.concat([row * live[..., None], tf.zeros_like(input_mask[..., i, 2 + i :])], -1))
        ops.append(op_mask[..., i, :] * live[..., None])
        alive.append(live)
        sources.append(live)
    return tf.stack(rows, -2), tf.stack(ops, -2), tf.stack(alive, -1)


@keras.saving.register_keras_serializable(package="tf_oneshot")
class ChoiceBlock(LayerGroup):
    """One masked choice block: concat -> BN -> ReLU -> mask -> Conv1x1 -> masked sum of ops.

    Args:
        index: i, the block's position in the cell (it has 2+i inputs).
        filters: channels of every input and of the output.
        ghost_batch_size: for the ghost batch norms.
        skip_inactive: skip ops that are off in the whole batch (tf.cond).
        **kwargs: base layer arguments.

    Call arguments:
        inputs: the concatenated inputs [N, H, W, (2+i) * filters].
        input_mask: [N, 1, 1, (2+i) * filters], 1 on the channels of active inputs.
        op_masks: list of O tensors [N, 1, 1, 1], one per op.
        op_active: list of O scalar bools, op o is on somewhere in the batch.
        training: Python bool.
        skip_inactive: Python bool overriding the constructor's choice for
            this call (the trainer skips only once path dropout makes it pay).

    Returns:
        [N, H, W, filters].
    """

    def __init__(
        self, index: int, filters: int, ghost_batch_size: int, skip_inactive: bool = True, **kwargs
    ) -> None:
        super().__init__(**kwargs)
        if isinstance(index, bool) or not isinstance(index, int) or index < 0:
            raise ValueError(f"index must be a non-negative integer. Received: index={index!r}")
        if isinstance(filters, bool) or not isinstance(filters, int) or filters < 1:
            raise ValueError(f"filters must be a positive integer. Received: filters={filters!r}")
        self.index = index
        self.filters = filters
        self.ghost_batch_size = ghost_batch_size
        self.skip_inactive = bool(skip_inactive)
        self.num_inputs = 2 + index
        self.input_bn = GhostBatchNormalization(ghost_batch_size, name="input_bn")
        self.input_conv = keras.layers.Conv2D(
            filters, 1, use_bias=False, kernel_initializer=KERNEL_INITIALIZER, name="input_conv"
        )
        self.ops = track_layers(
            self, "op", [CellOp(o, filters, ghost_batch_size, name=f"op{o}") for o in range(NUM_OPS)]
        )

    def sublayers(self) -> list[keras.layers.Layer]:
        return [self.input_bn, self.input_conv, *self.ops]

    def build(self, input_shape) -> None:
        expected = self.num_inputs * self.filters
        if input_shape[-1] != expected:
            raise ValueError(
                f"block {self.index} takes {self.num_inputs} inputs of {self.filters} channels "
                f"({expected} in all). Received: input_shape={input_shape}"
            )
        self.input_bn.build(input_shape)
        self.input_conv.build(input_shape)
        shape = (*input_shape[:-1], self.filters)
        for op in self.ops:
            op.build(shape)

    def call(self, inputs, input_mask, op_masks, op_active, training=None, skip_inactive=None):
        x = tf.nn.relu(self.input_bn(inputs, training=training))
        x = self.input_conv(x * input_mask)
        skip = self.skip_inactive if skip_inactive is None else skip_inactive
        # Weightless candidates run masked, max pooling skipped on CPUs without oneDNN (`tf_oneshot.layers.choice`).
        skips = skip_which(skip, self.ops)
        branches = [lambda op=op, mask=mask: op(x, training=training) * mask for op, mask in zip(self.ops, op_masks)]
        return masked_sum(branches, op_active, skips, lambda: tf.zeros_like(x))

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.filters)

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(
            index=self.index,
            filters=self.filters,
            ghost_batch_size=self.ghost_batch_size,
            skip_inactive=self.skip_inactive,
        )
        return config
