"""Stand-alone quantized ResNets of the spos_quant spaces, as Keras functional models.

SPOS §4 retrains the architecture found under a BitOps constraint (Table 6).
Its network holds each block at its own bottleneck width, with the same
quantizers as the supernet at fixed bits (`QuantizedConv2D`, `PACT`), so its
size is `space.count(arch)`. Its layers carry the supernet's names, and its
weights are the supernet's sliced to its widths (`copy_oneshot_weights`).
Only Keras layers and this package's registered layers are used, so a model
saves to and loads from a .keras file in safe mode.
"""

from __future__ import annotations

import keras

from tf_oneshot.layers.common import apply_layers, classifier_model, copy_weights_by_name
from tf_oneshot.search_spaces.base import Architecture
from tf_oneshot.search_spaces.spos_quant.model import block_layers, stem_layers
from tf_oneshot.search_spaces.spos_quant.space import CHANNEL_MULTIPLIERS, SposQuantSpace


def build_standalone_model(space: SposQuantSpace, arch: Architecture, ghost_batch_size: int | None = None,
                           name: str = "standalone") -> keras.Model:
    """Builds the quantized network of one architecture (images -> logits).

    Args:
        space: the search space (network size fields).
        arch: an architecture of `space` (e.g. `space.uniform((2, 2))`, Table 6's 2W2A).
        ghost_batch_size: ghost batch norms of this size evaluating with moving
            statistics; None uses plain `keras.layers.BatchNormalization`.
        name: the model's name.

    Returns:
        A functional keras.Model whose `count_params()` equals `space.count(arch).params`.

    Raises:
        UserError: if `arch` is not an architecture of `space`.
    """
    choices = space.block_choices(arch)
    gbs, mode = ghost_batch_size, "moving"  # a retrained network evaluates with its moving statistics
    images = keras.Input(shape=space.image_shape, name="images")
    x = apply_layers(stem_layers(space, gbs, mode), images)
    for block, (bits, multiplier) in zip(space.layout(), choices):
        mid = block.mids[CHANNEL_MULTIPLIERS.index(multiplier)]
        layers = block_layers(block, gbs, mode, mid=mid, bits=bits)
        q = layers["pact1"](x)
        y = apply_layers([layers["conv1"], layers["bn1"], layers["pact2"], layers["conv2"], layers["bn2"]], q)
        shortcut = apply_layers([layers["proj_conv"], layers["proj_bn"]], q) if block.projection else x
        x = keras.layers.Add(name=f"block{block.index}_add")([y, shortcut])
        x = keras.layers.ReLU(name=f"block{block.index}_relu")(x)
    return classifier_model(images, x, space.num_classes, name)


def copy_oneshot_weights(oneshot, standalone: keras.Model, arch: Architecture) -> None:
    """Gives every stand-alone layer its supernet namesake's weights, sliced to the layer's shapes.

    A bottleneck of m channels takes the first m of the 1.5x weights (SPOS
    §3.3: Weights[:c_out, :c_in]): conv1's output channels, bn1's channels,
    conv2's input channels. With batch statistics in both models the
    stand-alone network then computes what the supernet computes for `arch`.

    Raises:
        ValueError: if a stand-alone layer has no namesake in the supernet.
    """
    copy_weights_by_name(oneshot, standalone, str(arch), sliced=True)
