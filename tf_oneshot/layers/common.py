"""Building blocks every search space's networks share.

Bender et al. 2018, §3.2: every convolution is preceded by batch norm and
ReLU ("BN-ReLU-Conv"), convolutions have no bias (the next batch norm has
one). A unit is a list of plain Keras layers, defined once: a one-shot model
runs the list inside its own layers, and a stand-alone builder applies the
same list functionally, so both networks have the same layers and names, and
stand-alone weights are slices of one-shot weights.
"""

from __future__ import annotations

from collections.abc import Sequence

import keras

from tf_oneshot.layers.ghost_batch_norm import GhostBatchNormalization

KERNEL_INITIALIZER = "he_normal"  # suits ReLU nets; Keras' Glorot default does not


def normalization(ghost_batch_size: int | None, name: str, eval_mode: str = "batch") -> keras.layers.Layer:
    """Ghost batch norm, or plain Keras batch norm when `ghost_batch_size` is None."""
    if ghost_batch_size is None:
        return keras.layers.BatchNormalization(name=name)
    return GhostBatchNormalization(ghost_batch_size, eval_mode=eval_mode, name=name)


def conv(filters: int, kernel_size, name: str, strides: int = 1, separable: bool = False,
         depthwise: bool = False) -> keras.layers.Layer:
    """A bias-free convolution with "same" padding and the package's initializer."""
    if depthwise:
        return keras.layers.DepthwiseConv2D(
            kernel_size, strides=strides, padding="same", use_bias=False,
            depthwise_initializer=KERNEL_INITIALIZER, name=name,
        )
    if separable:
        return keras.layers.SeparableConv2D(
            filters, kernel_size, strides=strides, padding="same", use_bias=False,
            depthwise_initializer=KERNEL_INITIALIZER, pointwise_initializer=KERNEL_INITIALIZER, name=name,
        )
    return keras.layers.Conv2D(
        filters, kernel_size, strides=strides, padding="same", use_bias=False,
        kernel_initializer=KERNEL_INITIALIZER, name=name,
    )


def bn_relu_conv(
    filters: int,
    kernel_size: int | tuple[int, int],
    ghost_batch_size: int | None,
    name: str,
    strides: int = 1,
    separable: bool = False,
    eval_mode: str = "batch",
) -> list[keras.layers.Layer]:
    """BN -> ReLU -> convolution without bias (Bender et al. 2018, §3.2)."""
    suffix = "sepconv" if separable else "conv"
    return [
        normalization(ghost_batch_size, f"{name}_bn", eval_mode),
        keras.layers.ReLU(name=f"{name}_relu"),
        conv(filters, kernel_size, f"{name}_{suffix}", strides=strides, separable=separable),
    ]


def track_layers(owner, prefix: str, layers: Sequence) -> list:
    """Also sets each layer as an attribute `{prefix}{j}` of `owner` and returns `layers`.

    Keras tracks layers held in lists, but TensorFlow checkpoints
    (`tf.train.Checkpoint`, used by the trainer) only follow attributes; Keras
    counts each layer once either way.
    """
    for j, layer in enumerate(layers):
        setattr(owner, f"{prefix}{j}", layer)
    return list(layers)


def apply_layers(layers: Sequence[keras.layers.Layer], x, training=None):
    """Applies `layers` in order, passing `training` to the normalizations."""
    for layer in layers:
        if isinstance(layer, (GhostBatchNormalization, keras.layers.BatchNormalization)):
            x = layer(x, training=training)
        else:
            x = layer(x)
    return x


def build_layers(layers: Sequence[keras.layers.Layer], input_shape) -> tuple:
    """Builds `layers` in order for `input_shape`; returns the output shape."""
    shape = tuple(input_shape)
    for layer in layers:
        if not layer.built:
            layer.build(shape)
        shape = tuple(layer.compute_output_shape(shape))
    return shape


def conv_kernels(layers) -> list:
    """The kernels (not biases, not batch norm) of convolution and Dense layers.

    Bender et al. 2018, §3.2 / §4.1: L2 applies to these, not to batch-norm
    scales and offsets.
    """
    kernels = []
    for layer in layers:
        if isinstance(layer, keras.layers.SeparableConv2D):
            kernels += [layer.depthwise_kernel, layer.pointwise_kernel]
        elif isinstance(layer, keras.layers.DepthwiseConv2D):
            kernels.append(layer.kernel)
        elif isinstance(layer, (keras.layers.Conv2D, keras.layers.Dense)):
            kernels.append(layer.kernel)
    return kernels


def copy_weights_by_name(oneshot, standalone, what: str = "the architecture") -> None:
    """Gives every stand-alone layer with weights those of its one-shot namesake.

    Spaces whose stand-alone layers carry the one-shot model's layer names
    inherit shared weights this way (`SearchSpace.inherit_weights`).

    Raises:
        ValueError: if a stand-alone layer has no namesake in the one-shot model.
    """
    source = {layer.name: layer for layer in oneshot._flatten_layers(include_self=False, recursive=True)}
    for layer in standalone.layers:
        if not layer.weights:
            continue
        if layer.name not in source:
            raise ValueError(f"the one-shot model has no layer {layer.name!r}; is the stand-alone model of "
                             f"{what} built for the same space?")
        layer.set_weights(source[layer.name].get_weights())
