"""Keras layers and building blocks every search space's one-shot model shares."""

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

__all__ = [
    "KERNEL_INITIALIZER",
    "GhostBatchNormalization",
    "LayerGroup",
    "PathDropout",
    "apply_layers",
    "bn_relu_conv",
    "build_layers",
    "choose",
    "conv",
    "conv_kernels",
    "copy_weights_by_name",
    "nested_layers",
    "normalization",
    "per_example",
    "track_layers",
]
