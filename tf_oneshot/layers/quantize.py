"""Quantizers for mixed-precision search: PACT activations, DoReFa weights, straight-through gradients.

Activations: PACT (Choi et al. 2018, "PACT: Parameterized Clipping
Activation", Eq. 1-3). A learnable clipping level alpha replaces the ReLU,
y = clip(x, 0, alpha), and y is quantized to k bits uniformly on [0, alpha]:
y_q = round(y * (2^k - 1) / alpha) * alpha / (2^k - 1). The rounding passes
gradients straight through (STE), so dy_q/dx = 1 on [0, alpha] and 0
elsewhere, and dy_q/dalpha = 1 where x >= alpha, 0 elsewhere (PACT Eq. 3).
PACT regularizes alpha with L2; a one-shot model adds alpha^2 to its L2 term.

Weights: DoReFa-Net (Zhou et al. 2016, §2.3), the usual weight quantizer
paired with PACT. For k >= 2 bits, w_q = 2 q_k(tanh(w) / (2 max|tanh(w)|) +
1/2) - 1, with q_k(u) = round(u (2^k - 1)) / (2^k - 1) and an STE through
the rounding; for k = 1, w_q = sign(w) * mean|w|, the gradient passed
straight through and the scale a constant (DoReFa's binary weights).

The bit widths are tensors, not Python ints, so one traced graph serves every
bit width (SPOS §3.3's choice block, TPU-shaped). `mask` restricts the
statistics (max, mean) to the active part of a weight preallocated at its
largest width, so a masked kernel quantizes exactly as the sliced kernel
would; masked entries come out 0.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from tf_oneshot.layers.common import conv_kernels

# The initial clipping level Choi et al. 2018 start from.
PACT_ALPHA_INIT = 10.0
_EPSILON = 1e-8


def round_ste(x: tf.Tensor) -> tf.Tensor:
    """Rounds to the nearest integer (half to even) with an identity gradient (STE)."""
    return x + tf.stop_gradient(tf.round(x) - x)


def levels(bits, dtype=tf.float32) -> tf.Tensor:
    """2^k - 1, the number of steps of a k-bit uniform quantizer, for a tensor `bits`."""
    return tf.pow(tf.constant(2.0, dtype), tf.cast(bits, dtype)) - 1.0


def pact(x: tf.Tensor, alpha: tf.Tensor, bits) -> tf.Tensor:
    """PACT: clip x to [0, alpha], quantize to `bits` uniform levels, STE (Choi et al. 2018, Eq. 1-3).

    Args:
        x: activations.
        alpha: the clipping level (a scalar weight).
        bits: activation bits, a scalar or a tensor that broadcasts against x
            (e.g. [N, 1, 1, 1] per example).

    Returns:
        The quantized activations, values in {0, alpha / n, ..., alpha}.
    """
    alpha = tf.maximum(tf.cast(alpha, x.dtype), tf.cast(_EPSILON, x.dtype))
    y = tf.minimum(tf.nn.relu(x), alpha)  # d/dalpha = 1 exactly where x > alpha
    n = levels(bits, x.dtype)
    quantized = tf.round(y * n / alpha) * alpha / n
    return y + tf.stop_gradient(quantized - y)


def dorefa_weights(kernel: tf.Tensor, bits, mask: tf.Tensor | None = None, axis=None) -> tf.Tensor:
    """DoReFa's k-bit weights (Zhou et al. 2016, §2.3), k a tensor, statistics over `mask` only.

    Args:
        kernel: the float weights.
        bits: weight bits (>= 1), a scalar or a tensor broadcasting against
            `kernel` (e.g. [G, 1, 1, 1, 1] for G stacked kernels).
        mask: 1 on the active weights (broadcasting against `kernel`), None for all.
        axis: the axes over which max|tanh w| and mean|w| are taken (None:
            all; (1, 2, 3, 4) for kernels stacked on a leading axis).

    Returns:
        The quantized kernel: k = 1, sign(w) mean|w|; k >= 2, levels in [-1, 1]; 0 where `mask` is 0.
    """
    kernel = tf.convert_to_tensor(kernel)
    mask = tf.ones_like(kernel) if mask is None else tf.cast(mask, kernel.dtype) * tf.ones_like(kernel)
    bits = tf.cast(bits, kernel.dtype)
    # k >= 2: tanh, scaled to [0, 1] by the largest active |tanh|, rounded (STE), mapped to [-1, 1].
    t = tf.tanh(kernel)
    largest = tf.maximum(tf.reduce_max(tf.abs(t) * mask, axis=axis, keepdims=True), tf.cast(_EPSILON, t.dtype))
    n = levels(bits, kernel.dtype)
    multibit = 2.0 * round_ste((t / (2.0 * largest) + 0.5) * n) / n - 1.0
    # k = 1: sign times the mean magnitude, the gradient passed straight through.
    count = tf.maximum(tf.reduce_sum(mask, axis=axis, keepdims=True), tf.cast(1.0, mask.dtype))
    scale = tf.stop_gradient(tf.reduce_sum(tf.abs(kernel) * mask, axis=axis, keepdims=True) / count)
    binary = kernel + tf.stop_gradient(tf.sign(kernel) * scale - kernel)
    return tf.where(bits <= tf.cast(1.0, bits.dtype), binary, multibit) * mask


@keras.saving.register_keras_serializable(package="tf_oneshot")
class PACT(keras.layers.Layer):
    """PACT activation quantization with a learnable clipping level (Choi et al. 2018).

    Args:
        bits: activation bits (>= 1); None if every call passes `bits`.
        alpha_initializer: initial alpha (PACT: 10).
        **kwargs: base layer arguments (`name`, ...).

    Raises:
        ValueError: for bits that are not a positive integer.
    """

    def __init__(self, bits: int | None = None, alpha_initializer: float = PACT_ALPHA_INIT, **kwargs) -> None:
        super().__init__(**kwargs)
        if bits is not None and (isinstance(bits, bool) or not isinstance(bits, int) or bits < 1):
            raise ValueError(f"bits must be a positive integer or None. Received: bits={bits!r}")
        self.bits = bits
        self.alpha_initializer = float(alpha_initializer)

    def build(self, input_shape) -> None:
        self.alpha = self.add_weight(shape=(), name="alpha",
                                     initializer=keras.initializers.Constant(self.alpha_initializer))

    def call(self, inputs, bits=None):
        bits = self.bits if bits is None else bits
        if bits is None:
            raise ValueError("PACT was built without bits; pass bits= to the call.")
        return pact(inputs, self.alpha, bits)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self) -> dict:
        return {**super().get_config(), "bits": self.bits, "alpha_initializer": self.alpha_initializer}


@keras.saving.register_keras_serializable(package="tf_oneshot")
class QuantizedConv2D(keras.layers.Conv2D):
    """A Conv2D whose kernel is quantized to `weight_bits` by DoReFa on every call (STE).

    Args:
        weight_bits: bits of the kernel (>= 1).
        *args, **kwargs: those of `keras.layers.Conv2D` (its activation is applied as usual).

    Raises:
        ValueError: for weight bits that are not a positive integer.
    """

    def __init__(self, *args, weight_bits: int = 4, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if isinstance(weight_bits, bool) or not isinstance(weight_bits, int) or weight_bits < 1:
            raise ValueError(f"weight_bits must be a positive integer. Received: weight_bits={weight_bits!r}")
        self.weight_bits = weight_bits

    def call(self, inputs):
        outputs = self.convolution_op(inputs, dorefa_weights(self.kernel, self.weight_bits))
        if self.use_bias:
            outputs = outputs + self.bias
        return outputs if self.activation is None else self.activation(outputs)

    def get_config(self) -> dict:
        return {**super().get_config(), "weight_bits": self.weight_bits}


def decayed_weights(layers) -> list:
    """The weights L2 applies to: conv and Dense kernels, and PACT's clip values (Choi et al. 2018, §2).

    One list for the one-shot model's path-weighted L2, the stand-alone child's
    plain L2 and the space check, so the three decay the same weights.
    """
    return conv_kernels(layers) + [layer.alpha for layer in layers if isinstance(layer, PACT)]
