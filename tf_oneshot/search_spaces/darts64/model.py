"""The masked one-shot model of the darts64 space ("Deeper insights", §3.1, App. A.1).

Stem -> `num_cells` cells -> BN -> ReLU -> global average pooling -> dense
classifier. Each cell holds all four ops on each of its three edges; the
child enters only as masks, one row per ghost batch:

    model({"images": [N, H, W, C], "edge_01": [G, 4], "edge_02": [G, 4],
           "edge_12": [G, 4]}, training=...) -> logits [N, classes]

All cells read the same masks: §3.1 stacks cells "each of which has the same
chosen structure". An op off in every ghost batch is skipped (`choose`), so
§3.1's "each mini-batch trains one child model" runs one op per edge.

The model is flat: every layer is an attribute with a globally unique name
(`layer_names`), which the stand-alone model reuses, so weights copy by name.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from tf_oneshot.layers.choice import choose, per_example
from tf_oneshot.layers.common import (
    KERNEL_INITIALIZER,
    apply_layers,
    bn_relu_conv,
    build_layers,
    conv_kernels,
    normalization,
    track_layers,
)
from tf_oneshot.oneshot_model import OneShotModel, path_fraction, weighted_sum_of_squares
from tf_oneshot.search_spaces.darts64.space import (
    EDGE_KEYS,
    EDGES,
    MAX_POOL,
    OP_NAMES,
    OPS,
    SEPARABLE_KERNELS,
    SKIP_CONNECT,
    Darts64Space,
)


def op_prefix(cell: int, edge: tuple[int, int], op: int) -> str:
    """Name prefix of op digit `op` on `edge` of cell `cell` (shared by both models)."""
    return f"cell{cell}_edge{edge[0]}{edge[1]}_op{op}_{OP_NAMES[op - 1]}"


def op_layers(op: int, filters: int, ghost_batch_size: int | None, name: str,
              eval_mode: str = "batch") -> list[keras.layers.Layer]:
    """The layers of op digit `op` (1..4), applied in order; the skip connection has none.

    DARTS' ops (module docstring of `space`): a separable conv applied twice,
    each BN-ReLU-SepConv (Bender et al. 2018, §3.2), or a stride-1 3x3 max pool.
    """
    if op in SEPARABLE_KERNELS:
        k = SEPARABLE_KERNELS[op]
        return [layer for j in range(2)
                for layer in bn_relu_conv(filters, k, ghost_batch_size, f"{name}_{j}", separable=True,
                                          eval_mode=eval_mode)]
    if op == MAX_POOL:
        return [keras.layers.MaxPooling2D(3, strides=1, padding="same", name=f"{name}_maxpool")]
    if op == SKIP_CONNECT:
        return []
    raise ValueError(f"op must be one of {OPS}. Received: op={op!r}")


def stem_layers(space: Darts64Space, ghost_batch_size: int | None,
                eval_mode: str = "batch") -> list[keras.layers.Layer]:
    """The two stem convs of App. A.1: conv3x3 to `stem_filters`, then BN-ReLU-Conv3x3."""
    first = keras.layers.Conv2D(
        space.stem_filters, 3, strides=1 if space.stem_stride == 1 else 2, padding="same", use_bias=False,
        kernel_initializer=KERNEL_INITIALIZER, name="stem_conv",
    )
    return [first, *bn_relu_conv(space.stem_filters, 3, ghost_batch_size, "stem2",
                                 strides=2 if space.stem_stride == 4 else 1, eval_mode=eval_mode)]


def cell_input_layers(space: Darts64Space, cell: int, ghost_batch_size: int | None,
                      eval_mode: str = "batch") -> list[keras.layers.Layer]:
    """x0 of a cell: BN-ReLU-Conv1x1 of the previous cell's output to `filters` (§3.1)."""
    return bn_relu_conv(space.filters, 1, ghost_batch_size, f"cell{cell}_input", eval_mode=eval_mode)


@keras.saving.register_keras_serializable(package="tf_oneshot")
class Darts64OneShotModel(OneShotModel):
    """The masked one-shot network (super-net) of a `Darts64Space`.

    Args:
        space: the search space (its fields fix every layer size).
        ghost_batch_size: examples per ghost batch; each carries one child.
        skip_inactive: skip with tf.cond the ops off in every ghost batch.
        **kwargs: base model arguments (`name`, ...).

    Raises:
        ValueError: for a space that is not a Darts64Space or a bad ghost batch size.
    """

    def __init__(self, space: Darts64Space, ghost_batch_size: int, skip_inactive: bool = True, **kwargs) -> None:
        if not isinstance(space, Darts64Space):
            raise ValueError(f"space must be a Darts64Space. Received: space={space!r}")
        super().__init__(space, ghost_batch_size, skip_inactive, **kwargs)
        gbs = ghost_batch_size
        self.stem = track_layers(self, "stem", stem_layers(space, gbs))
        self.cell_inputs = []
        # self.edge_ops[k][e][o]: the layers of op OPS[o] on edge EDGES[e] of cell k.
        self.edge_ops = []
        for k in range(space.num_cells):
            self.cell_inputs.append(track_layers(self, f"cell{k}_input", cell_input_layers(space, k, gbs)))
            edges = []
            for edge in EDGES:
                ops = []
                for op in OPS:
                    prefix = op_prefix(k, edge, op)
                    ops.append(track_layers(self, prefix + "_", op_layers(op, space.filters, gbs, prefix)))
                edges.append(ops)
            self.edge_ops.append(edges)
        self.head_bn = normalization(gbs, "head_bn")
        self.classifier = keras.layers.Dense(space.num_classes, name="classifier")
        self.build()

    # ---------------------------------------------------------------- build
    def build(self, input_shape=None) -> None:
        """Creates every weight; sizes come from the space, not from the input."""
        space = self.space
        shape = build_layers(self.stem, (None, *space.image_shape))
        for k in range(space.num_cells):
            x0 = build_layers(self.cell_inputs[k], shape)
            for ops in self.edge_ops[k]:
                for layers in ops:
                    build_layers(layers, x0)
            shape = (*x0[:-1], 2 * space.filters)
        self.head_bn.build(shape)
        self.classifier.build((None, shape[-1]))
        self.built = True

    def forward(self, images, masks, training=None, skip_inactive=True):
        """Logits from images and the [G, 4] masks of the three edges."""
        gbs = self.ghost_batch_size
        rows = [per_example(masks[key], gbs) for key in EDGE_KEYS]  # [N, 4] each

        def edge(k: int, e: int, x):
            branches = [lambda layers=layers: apply_layers(layers, x, training) for layers in self.edge_ops[k][e]]
            return choose(branches, rows[e], skip_inactive, lambda: tf.zeros_like(x))

        x = apply_layers(self.stem, images, training)
        for k in range(self.space.num_cells):
            x0 = apply_layers(self.cell_inputs[k], x, training)
            x1 = edge(k, 0, x0)
            x2 = edge(k, 1, x0) + edge(k, 2, x1)
            x = tf.concat([x1, x2], -1)  # App. A.1: the cell output concatenates its nodes
        x = tf.nn.relu(self.head_bn(x, training=training))
        return self.classifier(tf.reduce_mean(x, axis=[1, 2]))

    # -------------------------------------------------------------------- L2
    def masked_l2(self, masks) -> tf.Tensor:
        """Sum of squared kernels, each op's weighted by the share of ghost batches using it.

        "Deeper insights", §3.1: each mini-batch updates only the weights of its
        child, so weight decay must not shrink the others; as in Bender et al.
        2018, §3.2, the decay gradient of an op off in every ghost batch is
        exactly 0. The stem, the cells' 1x1 convs and the classifier are in
        every child and count fully; biases and batch norm are not decayed.

        Args:
            masks: "edge_01", "edge_02", "edge_12", each [G, 4] (or [4]), the masks of the step.

        Returns:
            A scalar; multiply by the weight-decay coefficient.
        """
        always = list(self.stem) + [layer for unit in self.cell_inputs for layer in unit] + [self.classifier]
        terms = [(kernel, 1.0) for kernel in conv_kernels(always)]
        for e, key in enumerate(EDGE_KEYS):
            mask = tf.cast(masks[key], tf.float32)
            if mask.shape.rank == 1:
                mask = mask[None]
            fraction = path_fraction(mask)  # [4]
            for edges in self.edge_ops:
                for o, layers in enumerate(edges[e]):
                    terms += [(kernel, fraction[o]) for kernel in conv_kernels(layers)]
        return weighted_sum_of_squares(terms)
