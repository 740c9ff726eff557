"""Stand-alone models: one architecture of the cell space, as a Keras functional model.

Bender et al. 2018, §3.4: the best architectures are retrained from scratch.
The stand-alone network holds only the architecture's layers, in the literal
form of §3.1: each block concatenates its chosen inputs, applies
BN -> ReLU -> Conv1x1, and sums its one or two ops; each cell concatenates
every block and applies BN -> ReLU -> Conv1x1. The stem, the reductions and
the head are those of the one-shot model (`tf_oneshot.search_spaces.supernet`), so a
stand-alone model's weights are a slice of the one-shot model's
(`copy_oneshot_weights`), and its size is `space.count(arch)`.

Only plain Keras layers and `GhostBatchNormalization` are used, so a model
saves to and loads from a .keras file in safe mode.
"""

from __future__ import annotations

import keras
import numpy as np

from tf_oneshot.layers.common import (
    KERNEL_INITIALIZER,
    apply_layers,
    bn_relu_conv,
    classifier_model,
    normalization,
)
from tf_oneshot.search_spaces.bender_cell.ops import op_layers
from tf_oneshot.search_spaces.bender_cell.space import NUM_OPS, OP_NAMES, CellArchitecture, CellSpace

# Each block: (active inputs, active ops), both sorted tuples of indices.
BlockSpec = tuple[tuple[int, ...], tuple[int, ...]]


def _layer(layers, x, training=None):
    return apply_layers(layers, x, training)


def _build(space: CellSpace, blocks: list[BlockSpec], ghost_batch_size: int | None, name: str) -> keras.Model:
    gbs = ghost_batch_size
    mode = "moving"  # a retrained network evaluates with its moving statistics
    images = keras.Input(shape=space.image_shape, name="images")
    x = keras.layers.Conv2D(
        space.filters, 3, strides=1 if space.stem_stride == 1 else 2, padding="same", use_bias=False,
        kernel_initializer=KERNEL_INITIALIZER, name="stem_conv",
    )(images)
    if space.stem_stride == 4:
        x = _layer(bn_relu_conv(space.filters, 3, gbs, "stem2", strides=2, eval_mode=mode), x)
    older = previous = x
    cell_index = 0
    for s, (c, n) in enumerate(zip(space.stack_filters(), space.cells_per_stack())):
        if s > 0:
            older = _layer(bn_relu_conv(c, 3, gbs, f"reduce{s}a", strides=2, eval_mode=mode), older)
            previous = _layer(bn_relu_conv(c, 3, gbs, f"reduce{s}b", strides=2, eval_mode=mode), previous)
        for _ in range(n):
            prefix = f"cell{cell_index}"
            states = [older, previous]
            for i, (inputs, ops) in enumerate(blocks):
                block = f"{prefix}_block{i}"
                chosen = [states[j] for j in inputs]
                h = chosen[0] if len(chosen) == 1 else keras.layers.Concatenate(name=f"{block}_concat")(chosen)
                h = _layer(bn_relu_conv(c, 1, gbs, f"{block}_input", eval_mode=mode), h)
                outs = [_layer(op_layers(o, c, gbs, f"{block}_op{o}_{OP_NAMES[o]}", mode), h) for o in ops]
                states.append(outs[0] if len(outs) == 1 else keras.layers.Add(name=f"{block}_sum")(outs))
            h = keras.layers.Concatenate(name=f"{prefix}_concat")(states[2:]) if len(blocks) > 1 else states[2]
            out = _layer(bn_relu_conv(c, 1, gbs, f"{prefix}_output", eval_mode=mode), h)
            older, previous = previous, out
            cell_index += 1
    x = normalization(gbs, "head_bn", mode)(previous)
    x = keras.layers.ReLU(name="head_relu")(x)
    return classifier_model(images, x, space.num_classes, name)


def build_standalone_model(
    space: CellSpace, arch: CellArchitecture, ghost_batch_size: int | None = None, name: str = "standalone"
) -> keras.Model:
    """Builds the stand-alone network of one architecture (Bender et al. 2018, §3.4).

    Args:
        space: the search space (network size fields).
        arch: an architecture of `space`.
        ghost_batch_size: ghost batch norm with this ghost batch size (§4.1
            retrains with ghost batches of 32), evaluating with moving
            statistics; None uses plain `keras.layers.BatchNormalization`.
        name: the model's name.

    Returns:
        A functional keras.Model mapping images to logits, whose
        `count_params()` equals `space.count(arch).params`.

    Raises:
        UserError: if `arch` is not an architecture of `space`.
    """
    space.validate(arch)
    return _build(space, [(b.inputs, b.ops) for b in arch.blocks], ghost_batch_size, name)


def build_all_on_model(space: CellSpace, ghost_batch_size: int | None = None, name: str = "all_on") -> keras.Model:
    """The one-shot network with every path on and no masks, as a plain functional model.

    Table 1's "All On" network, and the baseline the one-shot train step is
    timed against. Its `count_params()` equals `space.count_oneshot().params`.
    """
    blocks = [(tuple(range(space.num_inputs(i))), tuple(range(NUM_OPS))) for i in range(space.num_blocks)]
    return _build(space, blocks, ghost_batch_size, name)


def copy_oneshot_weights(oneshot, standalone: keras.Model, arch: CellArchitecture) -> None:
    """Copies the shared weights of `arch` from a one-shot model into its stand-alone model.

    The stand-alone block's input batch norm and 1x1 convolution take the
    channels (rows) of the architecture's inputs; everything else is copied
    whole. With batch statistics in both, the two models then compute the
    same function (the masks of the one-shot model remove exactly the paths
    the stand-alone model lacks).

    Args:
        oneshot: a `tf_oneshot.OneShotModel` of the same space.
        standalone: `build_standalone_model(space, arch, ...)`.
        arch: the architecture.
    """
    # Keras drops layers that cannot reach the output (e.g. every reduction of
    # the older cell input when no block reads it): those are skipped here.
    layers = {layer.name: layer for layer in standalone.layers}

    def put(name: str, weights: list) -> None:
        if name in layers:
            layers[name].set_weights(weights)

    # The stem and the reductions have the same layer names in both models.
    for layer in [*oneshot.stem, *(layer for unit in oneshot.reductions for layer in unit)]:
        put(layer.name, layer.get_weights())
    for k, cell in enumerate(oneshot.cells):
        c = cell.filters
        for i, (block, spec) in enumerate(zip(cell.blocks, arch.blocks)):
            name = f"cell{k}_block{i}"
            rows = np.concatenate([np.arange(j * c, (j + 1) * c) for j in spec.inputs])
            put(f"{name}_input_bn", [w[rows] for w in block.input_bn.get_weights()])
            put(f"{name}_input_conv", [block.input_conv.get_weights()[0][:, :, rows]])
            for o in spec.ops:
                for src in block.ops[o].op_layers:
                    put(f"{name}_op{o}_{src.name}", src.get_weights())
        put(f"cell{k}_output_bn", cell.output_bn.get_weights())
        put(f"cell{k}_output_conv", cell.output_conv.get_weights())
    put("head_bn", oneshot.head_bn.get_weights())
    put("classifier", oneshot.classifier.get_weights())
