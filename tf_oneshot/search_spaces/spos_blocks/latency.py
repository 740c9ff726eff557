"""The pieces of a spos_blocks network that a latency lookup table times (SPOS §3.4).

SPOS searches under a latency constraint (§3.4, Eq. 5; Table 5 "same
latency") by looking an architecture's latency up rather than measuring it:
the supernet is a chain of choice blocks whose input shape does not depend
on the choices before them, so each candidate can be timed once in its
position and an architecture's latency is the sum of its candidates' times
plus those of the stem and head (`tf_oneshot.search_spaces.latency`).

A unit is the whole block as the stand-alone network runs it: for a stage's
first block, projection and main branch on the full input, concatenated;
for the others, the channel split, the main branch and the concatenation;
then the channel shuffle. Layers come from `model.candidate_layers`, so a
unit is exactly the stand-alone network's block (plain batch norm, as a
retrained network evaluates).

The space's base class finds `latency_units` here (`SearchSpace.latency_units`).
Spaces that share this folder but make other decisions per block get None.
"""

from __future__ import annotations

from typing import Any

from tf_oneshot.search_spaces.base import LatencyUnit
from tf_oneshot.search_spaces.spos_blocks.space import CHOICES, BlockLayout, SposBlocksSpace


def _block_model(block: BlockLayout, choice: str) -> Any:
    import keras

    from tf_oneshot.layers.common import apply_layers
    from tf_oneshot.search_spaces.spos_blocks.model import candidate_layers, channel_shuffle, split

    unit = candidate_layers(block, choice, None, "moving")
    x = keras.Input(shape=(*block.in_size, block.in_channels))
    if block.first:
        parts = [apply_layers(unit["proj"], x), apply_layers(unit["main"], x)]
    else:
        kept, rest = split(x)
        parts = [kept, apply_layers(unit["main"], rest)]
    y = channel_shuffle(keras.layers.Concatenate()(parts))
    return keras.Model(x, y, name=f"block{block.index}_{choice}")


def _stem_model(space: SposBlocksSpace) -> Any:
    import keras

    from tf_oneshot.layers.common import apply_layers
    from tf_oneshot.search_spaces.spos_blocks.model import stem_layers

    x = keras.Input(shape=space.image_shape)
    return keras.Model(x, apply_layers(stem_layers(space, None, "moving"), x), name="stem")


def _head_model(space: SposBlocksSpace) -> Any:
    import keras

    from tf_oneshot.layers.common import apply_layers
    from tf_oneshot.search_spaces.spos_blocks.model import head_layers

    last = space.layout()[-1]
    x = keras.Input(shape=(*last.out_size, last.out_channels))
    y = apply_layers(head_layers(space, None, "moving"), x)
    y = keras.layers.GlobalAveragePooling2D()(y)
    return keras.Model(x, keras.layers.Dense(space.num_classes)(y), name="head")


def latency_units(space: Any) -> list[LatencyUnit] | None:
    """Stem, every candidate of every block, head; None for a space of other decisions."""
    if type(space) is not SposBlocksSpace:
        return None
    last = space.layout()[-1]
    units = [LatencyUnit("", (), lambda: _stem_model(space), tuple(space.image_shape))]
    for block in space.layout():
        shape = (*block.in_size, block.in_channels)
        for choice in CHOICES:
            units.append(LatencyUnit(f"block{block.index}", (choice,),
                                     lambda block=block, choice=choice: _block_model(block, choice), shape))
    units.append(LatencyUnit("", (), lambda: _head_model(space), (*last.out_size, last.out_channels)))
    return units
