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

from tf_oneshot.layers.common import apply_layers, classifier_model, copy_weights_by_name
from tf_oneshot.search_spaces.base import Architecture
from tf_oneshot.search_spaces.spos_blocks.model import (
    candidate_layers,
    channel_shuffle,
    head_layers,
    split,
    stem_layers,
)
from tf_oneshot.search_spaces.spos_blocks.space import BlockLayout, SposBlocksSpace


def apply_block(block: BlockLayout, unit: dict[str, list], x, concat_name: str | None = None):
    """One ShuffleNetV2 block on `x` as the stand-alone network runs it (SPOS §3.2, Figure 3).

    A stage's first block feeds the whole input to the projection and to
    the main branch; the others split the channels and feed one half to
    the main branch. Both concatenate and shuffle the channels.
    """
    if block.first:
        parts = [apply_layers(unit["proj"], x), apply_layers(unit["main"], x)]
    else:
        kept, rest = split(x)
        parts = [kept, apply_layers(unit["main"], rest)]
    return channel_shuffle(keras.layers.Concatenate(name=concat_name)(parts))


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
        x = apply_block(block, candidate_layers(block, choice, gbs, mode, mid=mid), x, f"block{block.index}_concat")
    x = apply_layers(head_layers(space, gbs, mode), x)
    return classifier_model(images, x, space.num_classes, name)


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
    copy_weights_by_name(oneshot, standalone, str(arch), sliced=True)
