"""The one-shot model of Bender et al. 2018 (§3.1-3.2, Figure 3), masked.

Stem -> stacks of cells (each later stack starts with a stride-2 BN-ReLU-Conv3x3
on both cell inputs, doubling the filters) -> BN -> ReLU -> global average
pooling -> dense classifier. Every choice block holds all of its inputs and
all seven ops; the architecture and the path-dropout pattern enter only as
mask tensors, one architecture per ghost batch:

    model({"images": [N, H, W, C],
           "input_mask": [G, B, B+1] or [B, B+1],
           "op_mask": [G, B, O] or [B, O]}, training=...) -> logits [N, classes]

with N = G * ghost_batch_size (masks without a ghost axis serve every ghost
batch). So one traced (and XLA-compiled) function serves every architecture,
and G ghost batches can score G architectures in one pass. Input index 0 of a
block is the older of the two previous cells, 1 the previous cell, 2 + j block j.

The layer sizes mirror `CellSpace.count_oneshot()` exactly.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from tf_oneshot.layers.common import (
    KERNEL_INITIALIZER,
    apply_layers,
    bn_relu_conv,
    build_layers,
    conv_kernels,
    track_layers,
)
from tf_oneshot.layers.ghost_batch_norm import GhostBatchNormalization
from tf_oneshot.search_spaces.bender_cell.cell import Cell, cell_masks
from tf_oneshot.search_spaces.bender_cell.choice_block import effective_masks
from tf_oneshot.search_spaces.bender_cell.space import CellSpace
from tf_oneshot.search_spaces.supernet import OneShotModel


def _host_device() -> str | None:
    """The host CPU for tiny control tensors, except on TPUs, where all must stay on the TPU.

    Under jit_compile=True the placement is ignored (XLA keeps everything on
    the compiling device).
    """
    if "TPU" in type(tf.distribute.get_strategy()).__name__:
        return None
    return "/cpu:0"


def _row_sum_squares(kernel, groups: int) -> tf.Tensor:
    """Sum of squares of a 1x1 kernel [1, 1, groups * c, c] per group of input rows -> [groups]."""
    return tf.reduce_sum(tf.reshape(tf.square(kernel), [groups, -1]), 1)


@keras.saving.register_keras_serializable(package="tf_oneshot")
class CellOneShotModel(OneShotModel):
    """The masked one-shot network for a `CellSpace`.

    Args:
        space: the search space (its network fields fix every layer size).
        ghost_batch_size: examples per ghost batch (§3.2; 32 in §4.1).
        skip_inactive: skip with tf.cond the ops that are off in every ghost
            batch of a call (always worth it at evaluation).
        **kwargs: base model arguments (`name`, ...).

    Raises:
        ValueError: for a space that is not a CellSpace or a bad ghost batch size.
    """

    def __init__(self, space: CellSpace, ghost_batch_size: int, skip_inactive: bool = True, **kwargs) -> None:
        if not isinstance(space, CellSpace):
            raise ValueError(f"space must be a CellSpace. Received: space={space!r}")
        super().__init__(space, ghost_batch_size, skip_inactive, **kwargs)
        gbs, filters = ghost_batch_size, space.filters
        self.stem = [
            keras.layers.Conv2D(
                filters, 3, strides=1 if space.stem_stride == 1 else 2, padding="same", use_bias=False,
                kernel_initializer=KERNEL_INITIALIZER, name="stem_conv",
            )
        ]
        if space.stem_stride == 4:
            self.stem += bn_relu_conv(filters, 3, gbs, "stem2", strides=2)
        # One flat list per kind (Keras tracks flat lists of layers).
        self.reductions = []  # two units per later stack: older input, previous cell
        self.cells = []
        for s, (c, n) in enumerate(zip(space.stack_filters(), space.cells_per_stack())):
            if s > 0:
                for side in ("a", "b"):
                    self.reductions.append(bn_relu_conv(c, 3, gbs, f"reduce{s}{side}", strides=2))
            self.cells += [
                Cell(c, space.num_blocks, gbs, skip_inactive, name=f"cell{len(self.cells) + k}") for k in range(n)
            ]
        # Attributes too, for tf.train.Checkpoint (see `track_layers`).
        track_layers(self, "stem", self.stem)
        for j, unit in enumerate(self.reductions):
            track_layers(self, f"reduction{j}_", unit)
        track_layers(self, "cell", self.cells)
        self.head_bn = GhostBatchNormalization(gbs, name="head_bn")
        self.classifier = keras.layers.Dense(space.num_classes, name="classifier")
        self.build()

    # ---------------------------------------------------------------- build
    def build(self, input_shape=None) -> None:
        """Creates every weight; sizes come from the space, not from the input."""
        space = self.space
        shape = build_layers(self.stem, (None, *space.image_shape))
        units = iter(self.reductions)
        cells = iter(self.cells)
        for s, n in enumerate(space.cells_per_stack()):
            if s > 0:
                reduced = build_layers(next(units), shape)
                build_layers(next(units), shape)
                shape = reduced
            for _ in range(n):
                cell = next(cells)
                cell.build((*shape[:-1], 2 * shape[-1]))
                shape = cell.compute_output_shape((*shape[:-1], 2 * shape[-1]))
        self.head_bn.build(shape)
        self.classifier.build((None, shape[-1]))
        self.built = True

    def forward(self, images, masks, training=None, skip_inactive=True):
        """Logits from images and [G, B, B+1] input / [G, B, O] op masks."""
        gbs = self.ghost_batch_size
        input_mask, op_mask, alive = effective_masks(masks["input_mask"], masks["op_mask"])
        with tf.device(_host_device()):
            # Ops off in every ghost batch are skipped (tf.cond); on GPUs their
            # predicates live on the host so no branch waits for a device copy.
            op_active = tf.reduce_max(op_mask, 0) > 0.0  # [B, O]
        # One mask row per example: each ghost batch's mask repeated over it.
        per_example = [tf.repeat(m, gbs, axis=0) for m in (input_mask, op_mask, alive)]

        x = apply_layers(self.stem, images, training)
        older = previous = x
        units = iter(self.reductions)
        cells = iter(self.cells)
        for s, (c, n) in enumerate(zip(self.space.stack_filters(), self.space.cells_per_stack())):
            if s > 0:
                older = apply_layers(next(units), older, training)
                previous = apply_layers(next(units), previous, training)
            masks = cell_masks(*per_example, op_active, c)
            for _ in range(n):
                out = next(cells)(
                    tf.concat([older, previous], -1), masks, training=training, skip_inactive=skip_inactive
                )
                older, previous = previous, out
        x = tf.nn.relu(self.head_bn(previous, training=training))
        return self.classifier(tf.reduce_mean(x, axis=[1, 2]))

    # -------------------------------------------------------------------- L2
    def masked_l2(self, masks) -> tf.Tensor:
        """Sum of squared kernels, each weighted by how often its path is on and reaches the logits.

        Bender et al. 2018, §3.1-3.2 ("Preventing Over-regularization"): L2
        applies only to the parts of the model the current architecture uses.
        An op's kernels, a block's 1x1 input rows for one input, and the cell
        projection's rows for one block count with the fraction of ghost
        batches in which that path is on and its cell reaches the classifier
        (`_reach`): a cell whose output no later block reads, and the
        reduction of a cell input no block reads, are not part of that
        architecture (its stand-alone model drops them), so the decay
        gradient is 2 * w * fraction and exactly 0 for a path off in every
        ghost batch. Biases and batch-norm parameters are not decayed.

        Args:
            masks: "input_mask" [G, B, B+1] and "op_mask" [G, B, O], the masks of the step.

        Returns:
            A scalar; multiply by the weight-decay coefficient.
        """
        masks = self.ghost_masks(masks)
        input_mask, op_mask, alive = effective_masks(masks["input_mask"], masks["op_mask"])
        num_blocks, num_inputs, num_ops = op_mask.shape[1], input_mask.shape[2], op_mask.shape[2]
        # Per ghost batch one row of path indicators; each unit (stem, reduction,
        # cell, head) weighs the row by whether it reaches the logits there. Each
        # kernel (or row group) picks its unit's entry by index, so the whole
        # sum is a handful of ops plus one per kernel.
        on = tf.concat([tf.ones_like(alive[:, :1])] + [tf.reshape(m, [m.shape[0], -1])
                                                       for m in (input_mask, op_mask, alive)], 1)  # [G, L]
        reach, unit_of = self._reach(input_mask)
        fractions = tf.reshape(tf.reduce_mean(reach[:, :, None] * on[:, None, :], 0), [-1])  # [U * L]
        width = on.shape[1]
        op_base = 1 + num_blocks * num_inputs
        alive_base = op_base + num_blocks * num_ops
        scalars, scalar_index, rows, row_index = [], [], [], []

        def add_kernels(layers, index):
            for kernel in conv_kernels(layers):
                scalars.append(tf.nn.l2_loss(kernel))  # sum(w^2) / 2
                scalar_index.append(index)

        add_kernels(self.stem, unit_of["stem"] * width)
        for j, unit in enumerate(self.reductions):
            add_kernels(unit, unit_of[f"reduction{j}"] * width)
        add_kernels([self.classifier], unit_of["head"] * width)
        for k, cell in enumerate(self.cells):
            base = unit_of[f"cell{k}"] * width
            for i, block in enumerate(cell.blocks):
                rows.append(_row_sum_squares(block.input_conv.kernel, 2 + i))
                row_index += [base + 1 + i * num_inputs + j for j in range(2 + i)]
                for o, op in enumerate(block.ops):
                    add_kernels(op.op_layers, base + op_base + i * num_ops + o)
            rows.append(_row_sum_squares(cell.output_conv.kernel, cell.num_blocks))
            row_index += [base + alive_base + i for i in range(cell.num_blocks)]
        squares = tf.concat([2.0 * tf.stack(scalars), *rows], 0)
        return tf.reduce_sum(squares * tf.gather(fractions, scalar_index + row_index))

    def _reach(self, input_mask) -> tuple[tf.Tensor, dict[str, int]]:
        """([G, U] 1 where unit u reaches the classifier in ghost batch g, {unit name: u}).

        Every cell reads its older input if some block reads input 0 and its
        previous input if some block reads input 1 (the same in every cell,
        §3.2), so what reaches the classifier follows from these two per ghost
        batch, walking the network's fixed wiring back from the head.
        """
        reads_older, reads_previous = (tf.reduce_max(input_mask[:, :, j], 1) for j in (0, 1))
        always = tf.ones_like(reads_older)
        edges: list[list] = []  # per unit, in forward order: [(source unit, condition)]
        names: dict[str, int] = {}

        def add(name: str, sources: list) -> int:
            names[name] = len(edges)
            edges.append(sources)
            return names[name]

        older = previous = add("stem", [])
        reductions, cells = iter(range(len(self.reductions))), iter(range(len(self.cells)))
        for s, n in enumerate(self.space.cells_per_stack()):
            if s > 0:
                older = add(f"reduction{next(reductions)}", [(older, always)])
                previous = add(f"reduction{next(reductions)}", [(previous, always)])
            for _ in range(n):
                cell = add(f"cell{next(cells)}", [(older, reads_older), (previous, reads_previous)])
                older, previous = previous, cell
        add("head", [(previous, always)])
        reach = [tf.zeros_like(always) for _ in edges]
        reach[-1] = always
        for unit in reversed(range(len(edges))):
            for source, condition in edges[unit]:
                reach[source] = tf.maximum(reach[source], reach[unit] * condition)
        return tf.stack(reach, 1), names
