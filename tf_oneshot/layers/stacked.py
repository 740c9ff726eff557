"""K copies of a layer in one layer, each with its own weights (HFTA, Wang et al. MLSys 2021, §3).

HFTA fuses the same operator of many small models horizontally: one
convolution over all models' channels instead of one per model, so K models
cost about the operators of one (on a CPU, the per-operator dispatch that
dominates tiny networks; on an accelerator, its idle units). Here K children
lie side by side on the channel axis, child-major: channels
`[k * C, (k + 1) * C)` of a tensor belong to child k. Per-channel layers
(batch norm, ReLU, pooling, depthwise convolutions) then serve all K at once;
the mixing layers below keep each child's channels apart.

`stacked(layer, children)` gives the twin of a layer. Every twin's weight
holds the K children's values of the layer's weight of the same index, so
`np.reshape(weight, [children, *child_shape])[k]` is child k's (`split`,
`join`).
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
import numpy as np
import tensorflow as tf

from tf_oneshot.layers.ghost_batch_norm import GhostBatchNormalization


def _strides(layer: keras.layers.Layer) -> list[int]:
    return [1, *layer.strides, 1]


def _pointwise(x: tf.Tensor, kernel: tf.Tensor, children: int) -> tf.Tensor:
    """Child k's [C, D] matrix on child k's channels: one batched matmul for all K.

    Written as transpose, matmul, transpose: `tf.einsum` with the child axis
    between the pixels and the channels measured 15x slower on CPU.
    """
    cin, cout = kernel.shape[-2], kernel.shape[-1]
    shape = tf.shape(x)
    grouped = tf.transpose(tf.reshape(x, [-1, children, cin]), [1, 0, 2])  # [K, pixels, C]
    out = tf.matmul(grouped, tf.reshape(kernel, [children, cin, cout]))
    return tf.reshape(tf.transpose(out, [1, 0, 2]), tf.concat([shape[:-1], [children * cout]], 0))


def _depthwise(x: tf.Tensor, kernel: tf.Tensor, strides: list[int]) -> tf.Tensor:
    """[K, kh, kw, C, M] kernels on [..., K * C] channels: one depthwise convolution."""
    k, kh, kw, cin, multiplier = kernel.shape
    filters = tf.reshape(tf.transpose(kernel, [1, 2, 0, 3, 4]), [kh, kw, k * cin, multiplier])
    return tf.nn.depthwise_conv2d(x, filters, strides, "SAME")


class StackedConv2D(keras.layers.Layer):
    """K bias-free "same" convolutions, child k's on child k's channels.

    1x1: one batched matmul; one input channel: one depthwise convolution
    (its multiplier is the output width); otherwise one convolution per child
    (a grouped `tf.nn.conv2d` is slower on CPU than K separate ones).
    """

    def __init__(self, template: keras.layers.Conv2D, children: int, **kwargs) -> None:
        super().__init__(name=template.name, **kwargs)
        self.count, self.strides = children, _strides(template)
        self.kernel = self.add_weight(shape=(children, *template.kernel.shape), initializer="zeros", name="kernel")

    def kernels(self) -> list[keras.Variable]:
        return [self.kernel]

    def call(self, x):
        kh, kw, cin, _ = self.kernel.shape[1:]
        if kh == kw == 1 and self.strides == [1, 1, 1, 1]:
            return _pointwise(x, self.kernel, self.count)
        if cin == 1:
            return _depthwise(x, self.kernel, self.strides)
        return tf.concat([tf.nn.conv2d(part, self.kernel[k], self.strides, "SAME")
                          for k, part in enumerate(tf.split(x, self.count, -1))], -1)


class StackedSeparableConv2D(keras.layers.Layer):
    """K bias-free separable convolutions: one depthwise convolution, one batched pointwise matmul."""

    def __init__(self, template: keras.layers.SeparableConv2D, children: int, **kwargs) -> None:
        super().__init__(name=template.name, **kwargs)
        self.count, self.strides = children, _strides(template)
        self.depthwise_kernel = self.add_weight(shape=(children, *template.depthwise_kernel.shape),
                                                initializer="zeros", name="depthwise_kernel")
        self.pointwise_kernel = self.add_weight(shape=(children, *template.pointwise_kernel.shape),
                                                initializer="zeros", name="pointwise_kernel")

    def kernels(self) -> list[keras.Variable]:
        return [self.depthwise_kernel, self.pointwise_kernel]

    def call(self, x):
        return _pointwise(_depthwise(x, self.depthwise_kernel, self.strides), self.pointwise_kernel, self.count)


class StackedDense(keras.layers.Layer):
    """K dense layers: [N, K * C] -> [K, N, D], child k's logits first."""

    def __init__(self, template: keras.layers.Dense, children: int, **kwargs) -> None:
        super().__init__(name=template.name, **kwargs)
        self.count = children
        self.kernel = self.add_weight(shape=(children, *template.kernel.shape), initializer="zeros", name="kernel")
        self.bias = self.add_weight(shape=(children, *template.bias.shape), initializer="zeros", name="bias")

    def kernels(self) -> list[keras.Variable]:
        return [self.kernel]

    def call(self, x):
        grouped = tf.transpose(tf.reshape(x, [-1, self.count, self.kernel.shape[1]]), [1, 0, 2])
        return tf.matmul(grouped, self.kernel) + self.bias[:, None]


def stacked(layer: keras.layers.Layer, children: int) -> keras.layers.Layer:
    """The twin of `layer` for K = `children` children on the channel axis.

    Raises:
        ValueError: a layer kind with no twin.
    """
    if isinstance(layer, GhostBatchNormalization):
        twin = GhostBatchNormalization(layer.ghost_batch_size, momentum=layer.momentum, epsilon=layer.epsilon,
                                       eval_mode=layer.eval_mode, name=layer.name)
        twin.build((None, children * layer.gamma.shape[0]))
        return twin
    if isinstance(layer, keras.layers.SeparableConv2D):
        return StackedSeparableConv2D(layer, children)
    if isinstance(layer, keras.layers.Conv2D) and not layer.use_bias and layer.padding == "same":
        return StackedConv2D(layer, children)
    if isinstance(layer, keras.layers.Dense) and layer.activation is keras.activations.linear:
        return StackedDense(layer, children)
    if isinstance(layer, (keras.layers.ReLU, keras.layers.MaxPooling2D)):
        return type(layer).from_config(layer.get_config())  # per channel: one serves every child
    raise ValueError(f"layer {layer.name!r} ({type(layer).__name__}) has no stacked twin. "
                     f"Received: layer={layer!r}")


def stacked_layers(layers: Sequence[keras.layers.Layer], children: int) -> list[keras.layers.Layer]:
    """`stacked` of each layer of a unit (`tf_oneshot.layers.common.bn_relu_conv` and the like)."""
    return [stacked(layer, children) for layer in layers]


def stacked_kernels(layers: Sequence[keras.layers.Layer]) -> list[keras.Variable]:
    """The kernels of twins (no bias, no batch norm): what L2 decays (Bender et al. 2018, §3.2)."""
    return [kernel for layer in layers if hasattr(layer, "kernels") for kernel in layer.kernels()]


def join(twin: keras.Variable, values: Sequence[np.ndarray]) -> None:
    """Sets a twin's weight from its K children's values of the template's weight."""
    twin.assign(np.reshape(np.stack(values), twin.shape))


def split(value: np.ndarray, child_shape: Sequence[int]) -> np.ndarray:
    """[K, *child_shape]: the K children's values in a twin's weight `value`."""
    return np.reshape(value, (-1, *child_shape))
