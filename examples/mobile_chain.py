"""A search space of your own, in one file: a MobileNet-like chain of inverted-residual blocks.

Every command takes it without an edit to the package:

    tf-oneshot train --space=examples/mobile_chain.py:MobileChainSpace ...

The network is a stem convolution, `num_blocks` inverted-residual blocks
at a fixed `width` (x + 1x1 expand -> kxk depthwise -> 1x1 project, each
BN-ReLU-Conv), then BN-ReLU, global average pooling and a dense classifier.

A space provides three things; the library derives the rest (exact size,
uniform sampling, enumeration, mutation and crossover of whole blocks, the
string, JSON and KerasTuner forms, the masks, sub-spaces) from the first:

1. Decisions, `decisions()`: named `OneOf` / `SubsetOf` choices, as plain
   data. Each block picks its depthwise kernel (3, 5, 7), its expansion
   (3, 6) and whether it is skipped: 12 per block, 12^N in all. A skipped
   block still carries a kernel and an expansion: its 6 skipped values are
   one network but distinct architectures (12^N architectures, 7^N
   networks), and a uniform sampler skips each block 1 time in 2.
2. Cost arithmetic, `count(arch)` and `count_oneshot()`: parameters and
   multiply-adds, equal to the Keras models' `count_params()` (a batch norm
   holds 4 weights per channel; batch norm, ReLU, pooling and additions cost
   no multiply-adds), so search constraints never build a model.
3. Models. `build_oneshot` returns a `tf_oneshot.OneShotModel` holding every
   choice at its largest width; the architecture enters as masks, one row per
   decision and ghost batch, so one traced graph (static shapes, XLA/TPU
   friendly) serves every architecture. `build_standalone` is the plain Keras
   model of one architecture, with the same layer names, so `inherit_weights`
   copies slices of the shared weights into it.

Architecture strings list the values block by block: "3/6/no/5/3/yes/7/6/no/3/3/no".
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, ClassVar

import keras
import tensorflow as tf

from tf_oneshot import Cost, OneOf, OneShotModel, SearchSpace, UserError, layers
from tf_oneshot.search_spaces.supernet import path_fraction

KERNELS = (3, 5, 7)
EXPANSIONS = (3, 6)
SKIP = ("no", "yes")  # column 0 of a skip mask is 1 where the block runs


@dataclasses.dataclass(frozen=True)
class MobileChainSpace(SearchSpace):
    """A chain of inverted-residual blocks; each block picks kernel, expansion, skip.

    Args:
        image_shape: (height, width, channels) of the inputs.
        num_classes: classifier outputs.
        num_blocks: inverted-residual blocks.
        width: channels between blocks; a block expands to 3 or 6 times it.
        stem_stride: 1, 2, or 4 (a 4x4 "patchify" stem). Commands pass every
            space with this field the dataset's suggestion (4 for ImageNet).
    """

    image_shape: tuple[int, int, int] = (8, 8, 1)
    num_classes: int = 10
    num_blocks: int = 4
    width: int = 16
    stem_stride: int = 1

    name: ClassVar[str] = "mobile_chain"
    default_sampler: ClassVar[str] = "uniform"

    def __post_init__(self) -> None:
        object.__setattr__(self, "image_shape", tuple(int(d) for d in self.image_shape))
        if len(self.image_shape) != 3 or min(self.image_shape) < 1:
            raise UserError(f"image_shape={self.image_shape!r} is invalid; expected (height, width, channels).")
        for field, lowest in (("num_classes", 2), ("num_blocks", 1), ("width", 1)):
            if getattr(self, field) < lowest:
                raise UserError(f"{field}={getattr(self, field)!r} is invalid; expected at least {lowest}.")
        if self.stem_stride not in (1, 2, 4):
            raise UserError(f"stem_stride={self.stem_stride!r} is invalid; expected 1, 2 or 4.")

    @property
    def stem_kernel(self) -> int:
        return max(3, self.stem_stride)

    # ------------------------------------------------------- 1. decisions
    def decisions(self) -> tuple[OneOf, ...]:
        """Kernel, expansion and skip of every block; `group` makes a block mutate as one."""
        return tuple(
            OneOf(f"block{i}_{what}", options, group=f"block{i}")
            for i in range(self.num_blocks)
            for what, options in (("kernel", KERNELS), ("expansion", EXPANSIONS), ("skip", SKIP))
        )

    def blocks(self, arch: Any) -> list[tuple[int, int, bool]]:
        """(kernel, expansion, skipped) per block of `arch`."""
        v = self.values_of(self.validate(arch))
        return [(v[3 * i], v[3 * i + 1], v[3 * i + 2] == "yes") for i in range(self.num_blocks)]

    # ------------------------------------------------- 2. cost arithmetic
    def _cost(self, blocks: list[tuple[tuple[int, ...], int]]) -> Cost:
        """Cost of the network with, per block present, its kernels and hidden channels."""
        h, w, c_in = self.image_shape
        h, w = -(-h // self.stem_stride), -(-w // self.stem_stride)  # "same" padding
        c, k2 = self.width, self.stem_kernel**2
        params, flops = k2 * c_in * c, h * w * k2 * c_in * c  # stem
        for kernels, hidden in blocks:
            macs = 2 * c * hidden + sum(k * k for k in kernels) * hidden  # expand, depthwise, project
            params += 4 * c + 2 * 4 * hidden + macs  # + three batch norms
            flops += h * w * macs
        params += 4 * c + c * self.num_classes + self.num_classes  # head BN, dense with bias
        return Cost(params, flops + c * self.num_classes)

    def count(self, arch: Any) -> Cost:
        return self._cost([((k,), e * self.width) for k, e, skipped in self.blocks(arch) if not skipped])

    def count_oneshot(self) -> Cost:
        return self._cost([(KERNELS, max(EXPANSIONS) * self.width)] * self.num_blocks)

    def cost_bounds(self) -> dict[str, tuple[int, int]]:
        """Exact, with no enumeration: every block adds cost, the more the larger its choices."""
        least = self.count(self.from_values([KERNELS[0], EXPANSIONS[0], "yes"] * self.num_blocks))
        most = self.count(self.from_values([KERNELS[-1], EXPANSIONS[-1], "no"] * self.num_blocks))
        return {m: (getattr(least, m), getattr(most, m)) for m in ("params", "flops")}

    # ------------------------------------------------------------ 3. models
    def build_oneshot(self, ghost_batch_size: int, skip_inactive: bool = True) -> MobileChainOneShot:
        return MobileChainOneShot(self, ghost_batch_size, skip_inactive)

    def build_standalone(self, arch: Any, ghost_batch_size: int | None = None,
                         name: str = "standalone") -> keras.Model:
        """Only the chosen kernel, exactly e * width hidden channels, no layer for a skipped block.

        With `ghost_batch_size`, ghost batch norm evaluating with moving statistics.
        """
        gbs, mode = ghost_batch_size, "moving"
        images = keras.Input(self.image_shape, name="images")
        x = layers.conv(self.width, self.stem_kernel, "stem_conv", strides=self.stem_stride)(images)
        for i, (k, e, skipped) in enumerate(self.blocks(arch)):
            if not skipped:
                unit = block_layers(i, (k,), e * self.width, self.width, gbs, mode)
                h = layers.apply_layers(unit["expand"] + unit["dw_bn"] + unit["dw"] + unit["project"], x)
                x = keras.layers.Add(name=f"block{i}_add")([x, h])
        x = layers.apply_layers(head_layers(gbs, mode), x)
        x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
        logits = keras.layers.Dense(self.num_classes, name="classifier")(x)
        return keras.Model(images, logits, name=name)

    def inherit_weights(self, oneshot: Any, standalone: Any, arch: Any) -> None:
        """Each stand-alone weight is the leading slice of the one-shot weight of the same layer name."""
        shared = {layer.name: layer for layer in oneshot.layers}
        for layer in standalone.layers:
            if layer.weights:
                source = shared[layer.name].get_weights()
                layer.set_weights([w[tuple(slice(n) for n in v.shape)] for w, v in zip(source, layer.weights)])


# ------------------------------------------------------------------- layers
def block_layers(i: int, kernels: tuple[int, ...], hidden: int, width: int, ghost_batch_size: int | None,
                 eval_mode: str = "batch") -> dict[str, list]:
    """The layers of block i, defined once for both models (same names, so weights copy by name)."""
    gbs = ghost_batch_size
    return {
        "expand": layers.bn_relu_conv(hidden, 1, gbs, f"block{i}_expand", eval_mode=eval_mode),
        "dw_bn": [layers.normalization(gbs, f"block{i}_dw_bn", eval_mode),
                  keras.layers.ReLU(name=f"block{i}_dw_relu")],
        "dw": [layers.conv(hidden, k, f"block{i}_dw{k}", depthwise=True) for k in kernels],
        "project": layers.bn_relu_conv(width, 1, gbs, f"block{i}_project", eval_mode=eval_mode),
    }


def head_layers(ghost_batch_size: int | None, eval_mode: str = "batch") -> list:
    return [layers.normalization(ghost_batch_size, "head_bn", eval_mode), keras.layers.ReLU(name="head_relu")]


def channel_mask(expansion: tf.Tensor, width: int) -> tf.Tensor:
    """[G, len(EXPANSIONS)] expansion masks -> [G, 6 * width], 1 on the first e * width channels.

    A maximum, not a sum, so that the all-on mask keeps every channel once.
    """
    channel = tf.range(max(EXPANSIONS) * width)
    keeps = tf.stack([tf.cast(channel < e * width, tf.float32) for e in EXPANSIONS])  # [E, C]
    return tf.reduce_max(expansion[:, :, None] * keeps[None], axis=1)


@keras.saving.register_keras_serializable(package="examples")
class MobileChainOneShot(OneShotModel):
    """Every block at 6x expansion with all three depthwise kernels; masks pick one architecture."""

    def __init__(self, space: MobileChainSpace, ghost_batch_size: int, skip_inactive: bool = True,
                 **kwargs) -> None:
        super().__init__(space, ghost_batch_size, skip_inactive, **kwargs)
        gbs, width = ghost_batch_size, space.width
        self.stem = layers.conv(width, space.stem_kernel, "stem_conv", strides=space.stem_stride)
        self.units = [block_layers(i, KERNELS, max(EXPANSIONS) * width, width, gbs) for i in range(space.num_blocks)]
        for i, unit in enumerate(self.units):
            for part, unit_layers in unit.items():
                layers.track_layers(self, f"block{i}_{part}", unit_layers)  # for tf.train.Checkpoint
        self.head = layers.track_layers(self, "head", head_layers(gbs))
        self.classifier = keras.layers.Dense(space.num_classes, name="classifier")
        self.build()

    def build(self, input_shape=None) -> None:
        """Creates every weight from the space's sizes (so `from_config` gives a built model)."""
        shape = layers.build_layers([self.stem], (None, *self.space.image_shape))
        for unit in self.units:
            hidden = layers.build_layers(unit["expand"] + unit["dw_bn"], shape)
            for layer in unit["dw"]:
                layers.build_layers([layer], hidden)
            layers.build_layers(unit["project"], hidden)
        layers.build_layers(self.head, shape)
        self.classifier.build((None, shape[-1]))
        self.built = True

    def forward(self, images, masks, training=None, skip_inactive=True):
        gbs, x = self.ghost_batch_size, self.stem(images)
        for i in range(len(self.units)):
            # Per-example masks are made outside the tf.cond branches: XLA fails to
            # differentiate `per_example` (tf.repeat) inside one.
            runs = layers.per_example(masks[f"block{i}_skip"][:, :1], gbs)  # [N, 1]: the block runs
            kernel = layers.per_example(masks[f"block{i}_kernel"], gbs)  # [N, K]
            channels = layers.per_example(channel_mask(masks[f"block{i}_expansion"], self.space.width), gbs)
            body = functools.partial(self._block, self.units[i], x, kernel, channels[:, None, None, :],
                                     training, skip_inactive)
            x = x + layers.choose([body], runs, skip_inactive, lambda x=x: tf.zeros_like(x))
        x = layers.apply_layers(self.head, x, training)
        return self.classifier(tf.reduce_mean(x, axis=[1, 2]))

    def _block(self, unit: dict[str, list], x, kernel, channels, training, skip_inactive: bool):
        h = layers.apply_layers(unit["expand"] + unit["dw_bn"], x, training)
        h = layers.choose([functools.partial(layer, h) for layer in unit["dw"]], kernel, skip_inactive,
                          lambda: tf.zeros_like(h))
        # Each expanded channel is computed on its own up to here; only the projection mixes
        # them. So zeroing the unused ones at its input (after its BN-ReLU: a batch norm maps
        # zeros to beta) makes it the stand-alone's sliced conv and sends them no gradient.
        h = layers.apply_layers(unit["project"][:2], h, training) * channels
        return unit["project"][2](h)

    def masked_l2(self, masks) -> tf.Tensor:
        """Sum of squared kernels, each entry weighted by the share of ghost batches using it.

        A block's expanded channel uses the block (not skipped) and an expansion
        that keeps it; a depthwise kernel also its kernel size. So the decay
        gradient of anything off in every ghost batch is exactly 0.
        """
        # [G, ...] masks (a mask without the ghost axis gets one).
        masks = {k: tf.reshape(tf.cast(masks[k], tf.float32), (-1, *s)) for k, s in self.mask_shapes.items()}
        terms = [(self.stem.kernel, 1.0), (self.classifier.kernel, 1.0)]
        for i, unit in enumerate(self.units):
            used = masks[f"block{i}_skip"][:, :1] * channel_mask(masks[f"block{i}_expansion"], self.space.width)
            rows = path_fraction(used)  # [C]
            terms += [(unit["expand"][2].kernel, rows), (unit["project"][2].kernel, rows[:, None])]
            per_kernel = path_fraction(masks[f"block{i}_kernel"][:, :, None] * used[:, None, :])  # [K, C]
            terms += [(layer.kernel, per_kernel[k][:, None]) for k, layer in enumerate(unit["dw"])]
        return tf.add_n([tf.reduce_sum(w * tf.square(kernel)) for kernel, w in terms])
