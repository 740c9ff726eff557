"""The mixed-precision supernet of the spos_quant spaces (SPOS §3.3, Figure 3c, §4).

Float stem -> basic blocks -> global average pooling -> float fc. Every
block holds one set of weights at its largest bottleneck (1.5x); the
architecture enters only as masks, one row per ghost batch:

    model({"images": [N, H, W, C], "block0_bits": [G, 6], "block0_channels": [G, 3], ...},
          training=...) -> logits [N, classes]

From a block's masks come its weight bits, activation bits (the largest
among the options on: a one-hot row gives its own pair, the all-on masks
4W4A) and a channel mask over the 1.5x bottleneck (the widest option on).
The bit widths reach the quantizers as tensors and the channels as a mask,
so one traced graph serves every architecture. Each ghost batch quantizes
the kernels with its own bits and channels (DoReFa's statistics cover the
active weights only), so a convolution runs once per ghost batch, each on
its own examples: every ghost batch computes exactly its stand-alone
network (tested), and a step costs the multiply-adds of one network. No
branch is ever skipped: every block runs in every architecture.

Layers are defined once (`block_layers`) for both models with the same
names, so a stand-alone network inherits the supernet's weights sliced to
its widths (`standalone.copy_oneshot_weights`).
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from tf_oneshot.layers.choice import per_example
from tf_oneshot.layers.common import (
    apply_layers,
    build_layers,
    conv,
    conv_kernels,
    normalization,
    track_layers,
)
from tf_oneshot.layers.quantize import PACT, QuantizedConv2D, dorefa_weights, pact
from tf_oneshot.search_spaces.spos_quant.channel_batch_norm import ChannelMaskedBatchNorm
from tf_oneshot.search_spaces.spos_quant.space import BIT_PAIRS, BlockLayout, SposQuantSpace
from tf_oneshot.search_spaces.supernet import OneShotModel, path_fraction, weighted_sum_of_squares

WEIGHT_BITS = np.array([w for w, _ in BIT_PAIRS], np.float32)
ACTIVATION_BITS = np.array([a for _, a in BIT_PAIRS], np.float32)


def block_layers(block: BlockLayout, ghost_batch_size: int | None, eval_mode: str = "batch",
                 mid: int | None = None, bits: tuple[int, int] | None = None) -> dict[str, keras.layers.Layer]:
    """The layers of one basic block, by role (module docstring of `space`).

    `bits` None gives the supernet's layers (1.5x wide, bits given per call,
    channel-masked first BN); a pair gives a stand-alone block's quantized
    layers at `mid` channels.
    """
    p, s = f"block{block.index}", block.stride
    oneshot = bits is None
    mid = block.max_mid if mid is None else mid

    def conv_layer(filters, kernel, name, strides=1):
        if oneshot:
            return conv(filters, kernel, name, strides=strides)
        return QuantizedConv2D(filters, kernel, strides=strides, padding="same", use_bias=False,
                               kernel_initializer="he_normal", weight_bits=bits[0], name=name)

    a = None if oneshot else bits[1]
    layers = {
        "pact1": PACT(a, name=f"{p}_pact1"),
        "conv1": conv_layer(mid, 3, f"{p}_conv1", s),
        "bn1": (ChannelMaskedBatchNorm(ghost_batch_size, eval_mode=eval_mode, name=f"{p}_bn1") if oneshot
                else normalization(ghost_batch_size, f"{p}_bn1", eval_mode)),
        "pact2": PACT(a, name=f"{p}_pact2"),
        "conv2": conv_layer(block.out_channels, 3, f"{p}_conv2"),
        "bn2": normalization(ghost_batch_size, f"{p}_bn2", eval_mode),
    }
    if block.projection:
        layers["proj_conv"] = conv_layer(block.out_channels, 1, f"{p}_proj_conv", s)
        layers["proj_bn"] = normalization(ghost_batch_size, f"{p}_proj_bn", eval_mode)
    return layers


def stem_layers(space: SposQuantSpace, ghost_batch_size: int | None,
                eval_mode: str = "batch") -> list[keras.layers.Layer]:
    """The float stem: conv (7x7 stride 2 on ImageNet, else 3x3), BN, ReLU, and ImageNet's max pool."""
    layers = [conv(space.stem_channels, space.stem_kernel, "stem_conv", strides=space.stem_conv_stride),
              normalization(ghost_batch_size, "stem_bn", eval_mode), keras.layers.ReLU(name="stem_relu")]
    if space.stem_pool:
        layers.append(keras.layers.MaxPooling2D(3, strides=2, padding="same", name="stem_pool"))
    return layers


def ghost_conv(x, kernel, strides: int, bits, ghost_batch_size: int, in_mask=None, out_mask=None):
    """A DoReFa-quantized "same" convolution, each ghost batch with its own bits and channels.

    Args:
        x: [N, H, W, C_in] with N = G * ghost_batch_size.
        kernel: the float kernel [k, k, C_in, C_out] at the largest widths.
        strides: the convolution's stride.
        bits: [G] weight bits of the ghost batches.
        ghost_batch_size: examples per ghost batch.
        in_mask, out_mask: [G, C_in] / [G, C_out] channels in use, or None for all.

    Returns:
        [N, H', W', C_out].
    """
    num_ghosts = bits.shape[0]
    kernel = tf.cast(kernel, x.dtype)  # float16 under mixed precision
    mask = tf.ones([1, 1, 1, 1, 1], kernel.dtype)
    if in_mask is not None:
        mask = mask * tf.cast(in_mask, kernel.dtype)[:, None, None, :, None]
    if out_mask is not None:
        mask = mask * tf.cast(out_mask, kernel.dtype)[:, None, None, None, :]
    kernels = dorefa_weights(kernel[None], tf.reshape(tf.cast(bits, kernel.dtype), [-1, 1, 1, 1, 1]), mask,
                             axis=(1, 2, 3, 4))
    kernels = tf.broadcast_to(kernels, tf.concat([tf.shape(bits)[:1], tf.shape(kernel)], 0))
    strides = [1, strides, strides, 1]
    if num_ghosts == 1:
        return tf.nn.conv2d(x, kernels[0], strides, "SAME")
    if num_ghosts is not None:
        return tf.concat([tf.nn.conv2d(x[g * ghost_batch_size:(g + 1) * ghost_batch_size], kernels[g], strides,
                                       "SAME") for g in range(num_ghosts)], 0)
    grouped = tf.reshape(x, tf.concat([[-1, ghost_batch_size], tf.shape(x)[1:]], 0))
    out = tf.map_fn(lambda xk: tf.nn.conv2d(xk[0], xk[1], strides, "SAME"), (grouped, kernels),
                    fn_output_signature=x.dtype)
    return tf.reshape(out, tf.concat([[-1], tf.shape(out)[2:]], 0))


def decode_block(block: BlockLayout, bits_mask, channel_mask):
    """[G, 6] and [G, 3] masks -> weight bits [G], activation bits [G], channels in use [G, 1.5x mid].

    Several options on (the all-on masks) decode to the most precise pair and the widest bottleneck.
    """
    bits_mask = tf.cast(bits_mask, tf.float32)
    weight_bits = tf.maximum(tf.reduce_max(bits_mask * WEIGHT_BITS, -1), 1.0)
    activation_bits = tf.maximum(tf.reduce_max(bits_mask * ACTIVATION_BITS, -1), 1.0)
    prefixes = np.array([[1.0 if j < mid else 0.0 for j in range(block.max_mid)] for mid in block.mids], np.float32)
    channels = tf.reduce_max(tf.cast(channel_mask, tf.float32)[:, :, None] * prefixes, 1)
    return weight_bits, activation_bits, channels


@keras.saving.register_keras_serializable(package="tf_oneshot")
class SposQuantOneShotModel(OneShotModel):
    """The mixed-precision supernet of a `SposQuantSpace`: quantized basic blocks at 1.5x width.

    Args:
        space: the search space (its fields fix every layer size).
        ghost_batch_size: examples per ghost batch; each carries one architecture.
        skip_inactive: accepted for the common interface; nothing is skipped here.
        **kwargs: base model arguments (`name`, ...).

    Raises:
        ValueError: for a space that is not a SposQuantSpace or a bad ghost batch size.
    """

    def __init__(self, space: SposQuantSpace, ghost_batch_size: int, skip_inactive: bool = True, **kwargs) -> None:
        if not isinstance(space, SposQuantSpace):
            raise ValueError(f"space must be a SposQuantSpace. Received: space={space!r}")
        super().__init__(space, ghost_batch_size, skip_inactive, **kwargs)
        gbs = ghost_batch_size
        self.stem = track_layers(self, "stem", stem_layers(space, gbs))
        self.blocks = []
        for block in space.layout():
            layers = block_layers(block, gbs)
            track_layers(self, f"block{block.index}_", list(layers.values()))  # for tf.train.Checkpoint
            self.blocks.append(layers)
        self.classifier = keras.layers.Dense(space.num_classes, name="classifier")
        self.build()

    def build(self, input_shape=None) -> None:
        """Creates every weight; sizes come from the space, not from the input."""
        shape = build_layers(self.stem, (None, *self.space.image_shape))
        for block, layers in zip(self.space.layout(), self.blocks):
            inner = build_layers([layers["pact1"], layers["conv1"], layers["bn1"], layers["pact2"], layers["conv2"],
                                  layers["bn2"]], shape)
            if block.projection:
                build_layers([layers["proj_conv"], layers["proj_bn"]], shape)
            shape = inner
        self.classifier.build((None, shape[-1]))
        self.built = True

    def forward(self, images, masks, training=None, skip_inactive=True):
        """Logits from images and the [G, 6] bits and [G, 3] channel masks of every block."""
        x = apply_layers(self.stem, images, training)
        for block, layers in zip(self.space.layout(), self.blocks):
            x = self._block(block, layers, x, masks[f"block{block.index}_bits"],
                            masks[f"block{block.index}_channels"], training)
        return self.classifier(tf.reduce_mean(x, axis=[1, 2]))

    def _block(self, block: BlockLayout, layers: dict, x, bits_mask, channel_mask, training):
        """One basic block (module docstring of `space`), every ghost batch at its own bits and width."""
        gbs = self.ghost_batch_size
        weight_bits, activation_bits, channels = decode_block(block, bits_mask, channel_mask)
        act_bits = tf.cast(tf.reshape(per_example(activation_bits[:, None], gbs), [-1, 1, 1, 1]), x.dtype)
        active = tf.cast(per_example(channels, gbs)[:, None, None, :], x.dtype)
        q = pact(x, layers["pact1"].alpha, act_bits)
        h = ghost_conv(q, layers["conv1"].kernel, block.stride, weight_bits, gbs, out_mask=channels)
        h = layers["bn1"](h, training=training, channel_mask=channels) * active
        h = pact(h, layers["pact2"].alpha, act_bits)
        y = layers["bn2"](ghost_conv(h, layers["conv2"].kernel, 1, weight_bits, gbs, in_mask=channels),
                          training=training)
        if block.projection:
            shortcut = ghost_conv(q, layers["proj_conv"].kernel, block.stride, weight_bits, gbs)
            x = layers["proj_bn"](shortcut, training=training)
        return tf.nn.relu(y + x)

    # -------------------------------------------------------------------- L2
    def masked_l2(self, masks) -> tf.Tensor:
        """Sum of squared kernels and PACT alphas; a bottleneck channel weighted by its share of ghost batches.

        SPOS trains only the sampled architecture's weights, so weight decay
        must not shrink the bottleneck channels no ghost batch of the step
        uses (Bender et al. 2018, §3.2): their decay gradient is exactly 0.
        Every other weight is in every architecture. PACT's alphas get the
        same L2 (Choi et al. 2018).

        Args:
            masks: "block{i}_bits" [G, 6] and "block{i}_channels" [G, 3] (or without G), the step's masks.

        Returns:
            A scalar; multiply by the weight-decay coefficient.
        """
        terms = [(kernel, 1.0) for kernel in conv_kernels(self.stem + [self.classifier])]
        for block, layers in zip(self.space.layout(), self.blocks):
            mask = tf.cast(masks[f"block{block.index}_channels"], tf.float32)
            mask = mask[None] if mask.shape.rank == 1 else mask
            _, _, channels = decode_block(block, tf.ones([1, len(BIT_PAIRS)]), mask)
            share = path_fraction(channels)  # [1.5x mid]
            terms += [(layers["conv1"].kernel, share[None, None, None, :]),
                      (layers["conv2"].kernel, share[None, None, :, None]),
                      (layers["pact1"].alpha, 1.0), (layers["pact2"].alpha, 1.0)]
            if block.projection:
                terms.append((layers["proj_conv"].kernel, 1.0))
        return weighted_sum_of_squares(terms)
