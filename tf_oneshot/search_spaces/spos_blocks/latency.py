"""The pieces of a spos_blocks network that a latency lookup table times (SPOS §3.4).

SPOS searches under a latency constraint (§3.4, Eq. 5; Table 5 "same
latency") by looking an architecture's latency up rather than measuring it:
the supernet is a chain of choice blocks whose input shape does not depend
on the choices before them, so each candidate can be timed once in its
position and an architecture's latency is the sum of its candidates' times
plus those of the stem and head (`tf_oneshot.search_spaces.latency`).

A unit is the whole block as the stand-alone network runs it
(`standalone.apply_block` on the layers of `model.candidate_layers`), so a
unit is exactly the stand-alone network's block (plain batch norm, as a
retrained network evaluates).

`SposBlocksSpace.latency` names this module, and `SearchSpace.latency_units`
calls `latency_units` here. Spaces built on these blocks but making other
decisions per block get None.
"""

from __future__ import annotations

from typing import Any

import keras

from tf_oneshot.layers.common import apply_layers
from tf_oneshot.search_spaces.base import LatencyUnit
from tf_oneshot.search_spaces.spos_blocks.model import candidate_layers, head_layers, stem_layers
from tf_oneshot.search_spaces.spos_blocks.space import CHOICES, BlockLayout, SposBlocksSpace
from tf_oneshot.search_spaces.spos_blocks.standalone import apply_block


def _block_model(block: BlockLayout, choice: str) -> keras.Model:
    x = keras.Input(shape=(*block.in_size, block.in_channels))
    y = apply_block(block, candidate_layers(block, choice, None, "moving"), x)
    return keras.Model(x, y, name=f"block{block.index}_{choice}")


def _stem_model(space: SposBlocksSpace) -> keras.Model:
    x = keras.Input(shape=space.image_shape)
    return keras.Model(x, apply_layers(stem_layers(space, None, "moving"), x), name="stem")


def _head_model(space: SposBlocksSpace) -> keras.Model:
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
