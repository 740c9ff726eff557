"""The seven operations of a Bender cell choice block.

Bender et al. 2018, §3.1: identity, pairs of depthwise-separable 3x3, 5x5 and
7x7 convolutions, a 1x7 then 7x1 convolution, 3x3 max pooling and 3x3 average
pooling. §3.2: every convolution is preceded by batch norm and ReLU
("BN-ReLU-Conv"). Convolutions have no bias (the next batch norm has one),
pooling has stride 1 and "same" padding, so every op keeps the shape
[N, H, W, filters] of its input.

Each op is a list of plain Keras layers, defined once here: the one-shot model
runs the list inside a `CellOp`, and the stand-alone builder applies the same
list functionally, so both networks have the same layers and the stand-alone
model's layers can be walked to count multiply-adds.
"""

from __future__ import annotations

import keras

from tf_oneshot.layers.common import LayerGroup, apply_layers, bn_relu_conv, build_layers, track_layers
from tf_oneshot.search_spaces.bender_cell.space import CONV_1X7_7X1, NUM_OPS, OP_NAMES, SEPARABLE_KERNELS

MAX_POOL = OP_NAMES.index("maxpool3x3")
AVG_POOL = OP_NAMES.index("avgpool3x3")


def op_layers(
    op: int, filters: int, ghost_batch_size: int | None, name: str, eval_mode: str = "batch"
) -> list[keras.layers.Layer]:
    """The layers of op number `op` (an index into OP_NAMES), applied in order.

    Args:
        op: 0..6, see `tf_oneshot.search_spaces.OP_NAMES`.
        filters: channels in and out.
        ghost_batch_size: for the op's batch norms (None: plain BN).
        name: prefix of the layer names.
        eval_mode: evaluation mode of the ghost batch norms.

    Returns:
        A list of layers; empty for the identity.
    """
    if op in SEPARABLE_KERNELS:
        k = SEPARABLE_KERNELS[op]
        return [
            layer
            for j in range(2)
            for layer in bn_relu_conv(filters, k, ghost_batch_size, f"{name}_{j}", separable=True,
                                      eval_mode=eval_mode)
        ]
    if op == CONV_1X7_7X1:
        return bn_relu_conv(filters, (1, 7), ghost_batch_size, f"{name}_1x7", eval_mode=eval_mode) + bn_relu_conv(
            filters, (7, 1), ghost_batch_size, f"{name}_7x1", eval_mode=eval_mode
        )
    if op == MAX_POOL:
        return [keras.layers.MaxPooling2D(3, strides=1, padding="same", name=f"{name}_maxpool")]
    if op == AVG_POOL:
        return [keras.layers.AveragePooling2D(3, strides=1, padding="same", name=f"{name}_avgpool")]
    if op == OP_NAMES.index("identity"):
        return []
    raise ValueError(f"op must be an index into {OP_NAMES}. Received: op={op!r}")


@keras.saving.register_keras_serializable(package="tf_oneshot")
class CellOp(LayerGroup):
    """One op of the menu as a layer (used inside the one-shot choice block).

    Args:
        op: 0..6, an index into `OP_NAMES`.
        filters: channels in and out.
        ghost_batch_size: for the op's ghost batch norms.
        **kwargs: base layer arguments.
    """

    def __init__(self, op: int, filters: int, ghost_batch_size: int, **kwargs) -> None:
        super().__init__(**kwargs)
        if isinstance(op, bool) or not isinstance(op, int) or not 0 <= op < NUM_OPS:
            raise ValueError(f"op must be an integer in [0, {NUM_OPS}). Received: op={op!r}")
        if isinstance(filters, bool) or not isinstance(filters, int) or filters < 1:
            raise ValueError(f"filters must be a positive integer. Received: filters={filters!r}")
        self.op = op
        self.filters = filters
        self.ghost_batch_size = ghost_batch_size
        self.op_layers = track_layers(self, "layer", op_layers(op, filters, ghost_batch_size, name=OP_NAMES[op]))

    def sublayers(self) -> list[keras.layers.Layer]:
        return list(self.op_layers)

    def build(self, input_shape) -> None:
        if input_shape[-1] != self.filters:
            raise ValueError(
                f"{OP_NAMES[self.op]} keeps {self.filters} channels. Received: input_shape={input_shape}"
            )
        build_layers(self.op_layers, input_shape)

    def call(self, inputs, training=None):
        return apply_layers(self.op_layers, inputs, training)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(op=self.op, filters=self.filters, ghost_batch_size=self.ghost_batch_size)
        return config
