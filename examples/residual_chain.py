"""A second search space of your own: a residual chain choosing each block's kernel and width.

    tf-oneshot space --space=examples/residual_chain.py:ResidualChainSpace --check --image_size=8 --channels=1
    tf-oneshot train --space=examples/residual_chain.py:ResidualChainSpace --dataset=digits --model_dir=runs/rc

Unlike examples/mobile_chain.py, each block of the one-shot model is one
Keras layer (a `layers.LayerGroup`) holding its candidates, the stand-alone
model inherits weights with `layers.copy_weights_by_name(sliced=True)`, and
the space is small enough (6^3 = 216 children) to train every child for a
ground truth. The network: a 3x3 stem to `width` channels, `num_blocks`
residual blocks x + Conv3x3(BN-ReLU(Conv_kxk(BN-ReLU(x)))) whose first
convolution has k in (3, 5) and m * width output channels, m in (1, 2, 3),
then BN-ReLU, global average pooling and a dense classifier.
docs/spaces.md walks through this file.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, ClassVar

import keras
import tensorflow as tf

from tf_oneshot import Cost, OneOf, OneShotModel, SearchSpace, UserError, layers
from tf_oneshot.search_spaces.supernet import path_fraction, weighted_sum_of_squares

KERNELS = (3, 5)
MULTIPLIERS = (1, 2, 3)  # a block's hidden channels are m * width


@dataclasses.dataclass(frozen=True)
class ResidualChainSpace(SearchSpace):
    """`num_blocks` residual blocks at `width` channels; each picks its kernel and hidden width."""

    image_shape: tuple[int, int, int] = (8, 8, 1)
    num_classes: int = 10
    num_blocks: int = 3
    width: int = 8

    name: ClassVar[str] = "residual_chain"

    def __post_init__(self) -> None:
        object.__setattr__(self, "image_shape", tuple(int(d) for d in self.image_shape))
        for field in ("num_blocks", "width"):
            if getattr(self, field) < 1:
                raise UserError(f"{field}={getattr(self, field)!r} is invalid; expected a positive integer.")

    # 1. Decisions: two per block; `group` makes a block mutate and cross over as one (SPOS §3.4).
    def decisions(self) -> tuple[OneOf, ...]:
        return tuple(OneOf(f"block{i}_{what}", options, group=f"block{i}") for i in range(self.num_blocks)
                     for what, options in (("kernel", KERNELS), ("width", MULTIPLIERS)))

    def blocks(self, arch: Any) -> list[tuple[tuple[int, ...], int]]:
        """(kernels, hidden channels) per block of `arch`."""
        v = self.values_of(self.validate(arch))
        return [((v[2 * i],), v[2 * i + 1] * self.width) for i in range(self.num_blocks)]

    # 2. Cost arithmetic, equal to Keras' count_params() (`tf-oneshot space --check` compares them).
    def _cost(self, blocks: list[tuple[tuple[int, ...], int]]) -> Cost:
        (h, w, c_in), c = self.image_shape, self.width
        params = macs = 9 * c_in * c  # stem, no bias
        for kernels, n in blocks:
            conv_macs = sum(k * k for k in kernels) * c * n + 9 * n * c
            params += 4 * c + 4 * n + conv_macs  # two batch norms: gamma, beta, moving mean and variance
            macs += conv_macs
        params += 4 * c + c * self.num_classes + self.num_classes  # head batch norm, classifier and bias
        return Cost(params, h * w * macs + c * self.num_classes)

    def count(self, arch: Any) -> Cost:
        return self._cost(self.blocks(arch))

    def count_oneshot(self) -> Cost:
        return self._cost([(KERNELS, max(MULTIPLIERS) * self.width)] * self.num_blocks)

    # 3. Networks: the one-shot model, one child's stand-alone model, the weight copy.
    def build_oneshot(self, ghost_batch_size: int, skip_inactive: bool = True) -> ResidualChainOneShot:
        return ResidualChainOneShot.create(self, ghost_batch_size, skip_inactive)

    def build_standalone(self, arch: Any, ghost_batch_size: int | None = None,
                         name: str = "standalone") -> keras.Model:
        images = keras.Input(self.image_shape, name="images")
        x = layers.conv(self.width, 3, "stem_conv")(images)
        for i, (kernels, n) in enumerate(self.blocks(arch)):
            unit = block_layers(i, kernels, n, self.width, ghost_batch_size, "moving")
            h = layers.apply_layers(unit["in"] + unit["convs"] + unit["out"], x)
            x = keras.layers.Add(name=f"block{i}_add")([x, h])
        x = layers.apply_layers(head_layers(ghost_batch_size, "moving"), x)
        x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
        return keras.Model(images, keras.layers.Dense(self.num_classes, name="classifier")(x), name=name)

    def inherit_weights(self, oneshot: Any, standalone: Any, arch: Any) -> None:
        layers.copy_weights_by_name(oneshot, standalone, str(arch), sliced=True)


def block_layers(i: int, kernels: tuple[int, ...], hidden: int, width: int, ghost_batch_size: int | None,
                 eval_mode: str = "batch") -> dict[str, list]:
    """Block i's layers, defined once for both networks (same names: weights copy by name)."""
    gbs = ghost_batch_size
    return {
        "in": [layers.normalization(gbs, f"block{i}_in_bn", eval_mode), keras.layers.ReLU(name=f"block{i}_in_relu")],
        "convs": [layers.conv(hidden, k, f"block{i}_in_conv{k}") for k in kernels],
        "out": layers.bn_relu_conv(width, 3, gbs, f"block{i}_out", eval_mode=eval_mode),
    }


def head_layers(ghost_batch_size: int | None, eval_mode: str = "batch") -> list:
    return [layers.normalization(ghost_batch_size, "head_bn", eval_mode), keras.layers.ReLU(name="head_relu")]


class ResidualBlock(layers.LayerGroup):
    """Block i with both kernels at the largest width; masks [N, ...] pick one kernel and width per example."""

    def __init__(self, i: int, width: int, ghost_batch_size: int, **kwargs) -> None:
        super().__init__(name=f"block{i}", **kwargs)
        self.width = width
        unit = block_layers(i, KERNELS, max(MULTIPLIERS) * width, width, ghost_batch_size)
        # Lists of layers reach tf.train.Checkpoint only through attributes (the check says so).
        self.inputs_ = layers.track_layers(self, "in_", unit["in"])
        self.convs = layers.track_layers(self, "conv_", unit["convs"])
        self.out = layers.track_layers(self, "out_", unit["out"])

    def sublayers(self) -> list[keras.layers.Layer]:
        return [*self.inputs_, *self.convs, *self.out]

    def build(self, input_shape) -> None:
        shape = layers.build_layers(self.inputs_, input_shape)
        for conv in self.convs:
            hidden = layers.build_layers([conv], shape)
        layers.build_layers(self.out, hidden)

    def call(self, x, kernel, channels, training=None, skip_inactive=True):
        """x [N, H, W, width]; kernel [N, len(KERNELS)] and channels [N, hidden] per-example masks."""
        h = layers.apply_layers(self.inputs_, x, training)
        h = layers.choose([functools.partial(conv, h) for conv in self.convs], kernel, skip_inactive,
                          lambda: tf.zeros(tf.concat([tf.shape(h)[:-1], [self.convs[0].filters]], 0)))
        # Zero the unused hidden channels after their batch norm (which maps zeros to beta) and
        # before the 3x3 convolution mixes them: the one-shot block is then the child's sliced block.
        h = layers.apply_layers(self.out[:2], h, training) * channels[:, None, None, :]
        return x + self.out[2](h)


def hidden_mask(width_mask: tf.Tensor, width: int) -> tf.Tensor:
    """[G, len(MULTIPLIERS)] width masks -> [G, max hidden], 1 on the first m * width channels."""
    channel = tf.range(max(MULTIPLIERS) * width)
    keeps = tf.stack([tf.cast(channel < m * width, tf.float32) for m in MULTIPLIERS])
    return tf.reduce_max(width_mask[:, :, None] * keeps[None], axis=1)


@keras.saving.register_keras_serializable(package="examples")
class ResidualChainOneShot(OneShotModel):
    """Every block at its largest width with both kernels; the masks pick one child per ghost batch."""

    def __init__(self, space: ResidualChainSpace, ghost_batch_size: int, skip_inactive: bool = True,
                 **kwargs) -> None:
        super().__init__(space, ghost_batch_size, skip_inactive, **kwargs)
        self.stem = layers.conv(space.width, 3, "stem_conv")
        self.blocks = layers.track_layers(self, "block", [ResidualBlock(i, space.width, ghost_batch_size)
                                                          for i in range(space.num_blocks)])
        self.head = layers.track_layers(self, "head", head_layers(ghost_batch_size))
        self.classifier = keras.layers.Dense(space.num_classes, name="classifier")

    def forward(self, images, masks, training=None, skip_inactive=True):
        gbs, width, x = self.ghost_batch_size, self.space.width, self.stem(images)
        for i, block in enumerate(self.blocks):
            kernel = layers.per_example(masks[f"block{i}_kernel"], gbs)  # [G, 2] -> [N, 2]
            channels = layers.per_example(hidden_mask(masks[f"block{i}_width"], width), gbs)
            x = block(x, kernel, channels, training=training, skip_inactive=skip_inactive)
        x = layers.apply_layers(self.head, x, training)
        return self.classifier(tf.reduce_mean(x, axis=[1, 2]))

    def masked_l2(self, masks) -> tf.Tensor:
        """Each kernel entry weighted by the share of ghost batches using it (Bender et al. 2018, §3.2)."""
        # [G, ...] masks (a mask without the ghost axis gets one).
        masks = {k: tf.reshape(tf.cast(masks[k], tf.float32), (-1, *s)) for k, s in self.mask_shapes.items()}
        terms = [(self.stem.kernel, 1.0), (self.classifier.kernel, 1.0)]
        for i, block in enumerate(self.blocks):
            used = hidden_mask(masks[f"block{i}_width"], self.space.width)  # [G, C]
            kernel = masks[f"block{i}_kernel"]
            per_kernel = path_fraction(kernel[:, :, None] * used[:, None, :])  # [K, C]
            terms += [(conv.kernel, per_kernel[k]) for k, conv in enumerate(block.convs)]
            terms.append((block.out[2].kernel, path_fraction(used)[:, None]))
        return weighted_sum_of_squares(terms)
