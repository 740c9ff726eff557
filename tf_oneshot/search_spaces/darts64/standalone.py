"""Stand-alone children of the darts64 space, as Keras functional models.

"Deeper insights", §3.1: the ground truth trains each of the 64 children from
scratch; §3.3 fine-tunes children from the super-net's weights. A child's
network holds only its three chosen ops per cell. Its layers and their names
are those of the one-shot model (`model.py` builds both), so its weights are
a subset of the one-shot model's (`copy_oneshot_weights`) and its size is
`space.count(arch)`. Only plain Keras layers and `GhostBatchNormalization`
are used, so a model saves to and loads from a .keras file in safe mode.
"""

from __future__ import annotations

import keras

from tf_oneshot.layers.common import apply_layers, classifier_model, copy_weights_by_name, normalization
from tf_oneshot.search_spaces.base import Architecture
from tf_oneshot.search_spaces.darts64.model import (
    cell_input_layers,
    copy_prefix,
    op_layers,
    op_prefix,
    stem_layers,
)
from tf_oneshot.search_spaces.darts64.space import EDGES, Darts64Space


def build_standalone_model(space: Darts64Space, arch: Architecture, ghost_batch_size: int | None = None,
                           name: str = "standalone") -> keras.Model:
    """Builds the network of one child (images -> logits).

    Args:
        space: the search space (network size fields).
        arch: a child of `space` (e.g. `space.parse("124")`).
        ghost_batch_size: ghost batch norms of this size evaluating with moving
            statistics; None uses plain `keras.layers.BatchNormalization`.
        name: the model's name.

    Returns:
        A functional keras.Model whose `count_params()` equals `space.count(arch).params`.

    Raises:
        UserError: if `arch` is not a child of `space`.
    """
    ops = dict(zip(EDGES, space.values_of(space.validate(arch))))
    gbs, mode = ghost_batch_size, "moving"  # a retrained network evaluates with its moving statistics
    images = keras.Input(shape=space.image_shape, name="images")
    x = apply_layers(stem_layers(space, gbs, mode), images)
    for k in range(space.num_cells):
        nodes = [apply_layers(cell_input_layers(space, k, gbs, mode), x)]
        for j in (1, 2):
            inputs = []
            for i in range(j):
                op = ops[(i, j)]
                inputs.append(apply_layers(op_layers(op, space.filters, gbs, op_prefix(k, (i, j), op), mode),
                                           nodes[i]))
            nodes.append(inputs[0] if len(inputs) == 1 else keras.layers.Add(name=f"cell{k}_node{j}_sum")(inputs))
        x = keras.layers.Concatenate(name=f"cell{k}_concat")(nodes[1:])  # App. A.1
    x = normalization(gbs, "head_bn", mode)(x)
    x = keras.layers.ReLU(name="head_relu")(x)
    return classifier_model(images, x, space.num_classes, name)


def copy_oneshot_weights(oneshot, standalone: keras.Model, arch: Architecture, copy: int = 0) -> None:
    """Copies the child's weights from a one-shot model into its stand-alone model.

    Both models name their layers alike, so every stand-alone layer with
    weights takes those of its namesake. With batch statistics in both, they
    then compute the same logits (the one-shot masks zero exactly the ops the
    child lacks). Under partial sharing ("Deeper insights", §4.2-4.3) a
    layer of copy `copy` is named with `copy_prefix(copy)`; a shared one keeps
    the plain name.

    Args:
        oneshot: a `Darts64OneShotModel` of the same space.
        standalone: `build_standalone_model(space, arch, ...)`.
        arch: the child (used in messages: the layer names encode it).
        copy: the child's copy of the weights (0 under full sharing).

    Raises:
        ValueError: if a stand-alone layer has no namesake in the one-shot model.
    """
    copy_weights_by_name(oneshot, standalone, f"{arch} (copy {copy})" if copy else str(arch), copy_prefix(copy))
