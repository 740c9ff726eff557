"""Keras layers and building blocks every search space's one-shot model shares.

Importing this package registers every custom layer an export can hold
(`keras.saving.register_keras_serializable`, package "tf_oneshot"), so a
`.keras` file loads in a process that imports only Keras and this package;
`import tf_oneshot` imports it as soon as Keras is loaded.
"""

from tf_oneshot.layers.choice import choose, per_example
from tf_oneshot.layers.common import (
    KERNEL_INITIALIZER,
    LayerGroup,
    apply_layers,
    bn_relu_conv,
    build_layers,
    conv,
    conv_kernels,
    copy_weights_by_name,
    nested_layers,
    normalization,
    track_layers,
)
from tf_oneshot.layers.ghost_batch_norm import GhostBatchNormalization
from tf_oneshot.layers.path_dropout import PathDropout
from tf_oneshot.layers.quantize import PACT, QuantizedConv2D, decayed_weights

__all__ = [
    "KERNEL_INITIALIZER",
    "GhostBatchNormalization",
    "LayerGroup",
    "PACT",
    "PathDropout",
    "QuantizedConv2D",
    "apply_layers",
    "bn_relu_conv",
    "build_layers",
    "choose",
    "conv",
    "conv_kernels",
    "copy_weights_by_name",
    "decayed_weights",
    "nested_layers",
    "normalization",
    "per_example",
    "track_layers",
]
