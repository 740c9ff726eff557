"""Stand-alone networks of the SPOS spaces (building blocks, channels, both), as Keras functional models.

SPOS §3.4 retrains the best architecture found from scratch (Table 3, 4); its
network holds only the chosen candidate of each block, at its chosen mid
width. Its layers and their names are those of the supernet (`model.py`
builds both), so its weights are leading slices of a subset of the
supernet's (`copy_oneshot_weights`) and its size is
`space.count(arch)`. Only Keras layers, keras.ops and `GhostBatchNormalization`
are used, so a model saves to and loads from a .keras file in safe mode.
"""

from __future__ import annotations

import keras

from tf_oneshot.layers.common import apply_layers
from tf_oneshot.search_spaces.base import Architecture
from tf_oneshot.search_spaces.spos_blocks.model import (
    candidate_layers,
    channel_shuffle,
    head_layers,
    split,
    stem_layers,
)
from tf_oneshot.search_spaces.spos_blocks.space import SposBlocksSpace


def build_standalone_model(space: SposBlocksSpace, arch: Architecture, ghost_batch_size: int | None = None,
                           name: str = "standalone") -> keras.Model:
    """Builds the network of one architecture (images -> logits).

    Args:
        space: the search space (network size fields).
        arch: an architecture of `space` (e.g. `space.uniform("3")`).
        ghost_batch_size: ghost batch norms of this size evaluating with moving
            statistics; None uses plain `keras.layers.BatchNormalization`.
        name: the model's name.

    Returns:
        A functional keras.Model whose `count_params()` equals `space.count(arch).params`.

    Raises:
        UserError: if `arch` is not an architecture of `space`.
    """
    parts = space.block_parts(arch)
    gbs, mode = ghost_batch_size, "moving"  # a retrained network evaluates with its moving statistics
    images = keras.Input(shape=space.image_shape, name="images")
    x = apply_layers(stem_layers(space, gbs, mode), images)
    for block, (choice, mid) in zip(space.layout(), parts):
        unit = candidate_layers(block, choice, gbs, mode, mid=mid)
        if block.first:
            parts = [apply_layers(unit["proj"], x), apply_layers(unit["main"], x)]
        else:
            kept, rest = split(x)
            parts = [kept, apply_layers(unit["main"], rest)]
        x = channel_shuffle(keras.layers.Concatenate(name=f"block{block.index}_concat")(parts))
    x = apply_layers(head_layers(space, gbs, mode), x)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    logits = keras.layers.Dense(space.num_classes, name="classifier")(x)
    return keras.Model(images, logits, name=name)


def copy_oneshot_weights(oneshot, standalone: keras.Model, arch: Architecture) -> None:
    """Copies the architecture's weights from a supernet into its stand-alone model.

    Both models name their layers alike, so every stand-alone layer with
    weights takes those of its namesake, sliced to its own shape: the
    leading sub-tensor, SPOS §3.3's Weights[:c_out, :c_in] (a no-op where no
    width is searched). With batch statistics in both, they then compute the
    same logits (the masks zero exactly what the architecture lacks).

    Args:
        oneshot: a `SposBlocksOneShotModel` of the same space.
        standalone: `build_standalone_model(space, arch, ...)`.
        arch: the architecture (the layer names encode it; used in messages).

    Raises:
        ValueError: if a stand-alone layer has no namesake in the supernet, or
            a weight of it is larger than its namesake's.
    """
    source = {layer.name: layer for layer in oneshot._flatten_layers(include_self=False, recursive=True)}
    for layer in standalone.layers:
        if not layer.weights:
            continue
        if layer.name not in source:
            raise ValueError(f"the one-shot model has no layer {layer.name!r}; is the stand-alone model of "
                             f"{arch} built for the same space?")
        values = []
        for target, value in zip(layer.weights, source[layer.name].get_weights(), strict=True):
            if any(t > v for t, v in zip(target.shape, value.shape)) or len(target.shape) != value.ndim:
                raise ValueError(f"{target.path} has shape {tuple(target.shape)}, not a slice of the one-shot "
                                 f"{value.shape}.")
            values.append(value[tuple(slice(0, n) for n in target.shape)])
        layer.set_weights(values)
