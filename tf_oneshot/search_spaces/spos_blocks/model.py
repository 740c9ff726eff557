"""The single-path supernet of the SPOS spaces (SPOS §3.2-3.3, Table 2, Figure 3a-b).

Stem -> 20 choice blocks -> last 1x1 conv -> global average pooling -> fc.
Every block holds its candidates (four in spos_blocks); the architecture
enters only as masks, one row per ghost batch:

    model({"images": [N, H, W, C], "block0": [G, 4], ..., "block19": [G, 4]},
          training=...) -> logits [N, classes]

The channel-number spaces (`channels.py`) add "channels{i}" [G, 8] (and
spos_channels drops "block{i}"): the candidates hold the widest mid width,
and the batch norms of the mid width (`masked_bn.py`) zero the channels past
the chosen one and keep them out of the statistics, so a ghost batch
computes exactly the sliced network of Figure 3b with static shapes.

A block's candidates are combined with `choose`: a candidate off in every
ghost batch of the call is not computed (`tf.cond`), so when the ghost
batches of a replica share a path (SPOS §3.2's single path, e.g. one
ghost batch per replica under the uniform sampler) only that path runs,
forward and backward. With several paths in one call, each candidate runs on
the whole batch and its output is zeroed where it is off, so every ghost
batch still sees only its own path (and its own batch statistics).

The layers of a candidate are defined once (`candidate_layers`) for both
models, with globally unique names, so the stand-alone network's weights copy
from the supernet by name (`standalone.copy_oneshot_weights`).
"""

from __future__ import annotations

import functools

import keras
import numpy as np
import tensorflow as tf

from tf_oneshot.layers.choice import choose, per_example
from tf_oneshot.layers.common import (
    apply_layers,
    build_layers,
    conv,
    conv_kernels,
    normalization,
    track_layers,
)
from tf_oneshot.layers.ghost_batch_norm import GhostBatchNormalization
from tf_oneshot.search_spaces.spos_blocks.masked_bn import MaskedGhostBatchNormalization
from tf_oneshot.search_spaces.spos_blocks.space import (
    CHOICES,
    KERNELS,
    OP_NAMES,
    XCEPTION,
    BlockLayout,
    SposBlocksSpace,
)
from tf_oneshot.search_spaces.supernet import OneShotModel, path_fraction, weighted_sum_of_squares


def candidate_prefix(index: int, choice: str) -> str:
    """Name prefix of candidate `choice` of block `index` (shared by both models)."""
    return f"block{index}_{OP_NAMES[CHOICES.index(choice)]}"


def _conv_bn(filters: int, kernel: int, ghost_batch_size: int | None, name: str, eval_mode: str,
             strides: int = 1, depthwise: bool = False, relu: bool = False,
             masked: bool = False) -> list[keras.layers.Layer]:
    """Conv (no bias) then BN, and ReLU after the 1x1 convs only (ShuffleNetV2's placement).

    `masked`: the BN of a searched mid width in the supernet, which takes a channel mask.
    """
    bn = (MaskedGhostBatchNormalization(ghost_batch_size, eval_mode=eval_mode, name=f"{name}_bn") if masked
          else normalization(ghost_batch_size, f"{name}_bn", eval_mode))
    layers = [conv(filters, kernel, f"{name}_{'dwconv' if depthwise else 'conv'}", strides=strides,
                   depthwise=depthwise), bn]
    if relu:
        layers.append(keras.layers.ReLU(name=f"{name}_relu"))
    return layers


def candidate_layers(block: BlockLayout, choice: str, ghost_batch_size: int | None, eval_mode: str = "batch",
                     mid: int | None = None, masked: bool = False) -> dict[str, list[keras.layers.Layer]]:
    """The layers of one candidate of one block: {"main": [...], "proj": [...]} (SPOS Figure 3a).

    choice_k: 1x1-BN-ReLU, kxk depthwise (stride)-BN, 1x1-BN-ReLU. choice_x:
    three (3x3 depthwise-BN, 1x1-BN-ReLU), the first with the stride. A
    stage's first block also has the projection branch, kxk depthwise
    (stride)-BN, 1x1-BN-ReLU (3x3 for choice_x); the other blocks have none.
    `mid` overrides the middle width (default: half the block's output).
    `masked`: the batch norms of the middle width take a channel mask (the
    supernet of a channel-number space, SPOS §3.3).
    """
    gbs, p, s, m = ghost_batch_size, candidate_prefix(block.index, choice), block.stride, masked
    mid = block.mid if mid is None else mid
    if choice == XCEPTION:
        main = []
        for j, (c_in, c_out) in enumerate([(block.main_in, mid), (mid, mid), (mid, block.main_out)]):
            main += _conv_bn(c_in, 3, gbs, f"{p}_dw{j}", eval_mode, strides=s if j == 0 else 1, depthwise=True,
                             masked=m and j > 0)
            main += _conv_bn(c_out, 1, gbs, f"{p}_pw{j}", eval_mode, relu=True, masked=m and j < 2)
    elif choice in KERNELS:
        main = (_conv_bn(mid, 1, gbs, f"{p}_pw0", eval_mode, relu=True, masked=m)
                + _conv_bn(mid, KERNELS[choice], gbs, f"{p}_dw", eval_mode, strides=s, depthwise=True, masked=m)
                + _conv_bn(block.main_out, 1, gbs, f"{p}_pw1", eval_mode, relu=True))
    else:
        raise ValueError(f"choice must be one of {CHOICES}. Received: choice={choice!r}")
    proj = []
    if block.first:
        proj = (_conv_bn(block.in_channels, KERNELS[choice], gbs, f"{p}_proj_dw", eval_mode, strides=s,
                         depthwise=True)
                + _conv_bn(block.in_channels, 1, gbs, f"{p}_proj_pw", eval_mode, relu=True))
    return {"main": main, "proj": proj}


def stem_layers(space: SposBlocksSpace, ghost_batch_size: int | None,
                eval_mode: str = "batch") -> list[keras.layers.Layer]:
    """Table 2's 3x3 conv to 16 channels (stride 2 at 224 pixels), BN, ReLU."""
    return _conv_bn(space.channels[0], 3, ghost_batch_size, "stem", eval_mode, strides=space.stem_conv_stride,
                    relu=True)


def head_layers(space: SposBlocksSpace, ghost_batch_size: int | None,
                eval_mode: str = "batch") -> list[keras.layers.Layer]:
    """Table 2's last 1x1 conv to 1024 channels, BN, ReLU (pooling and fc follow)."""
    return _conv_bn(space.channels[-1], 1, ghost_batch_size, "last", eval_mode, relu=True)


def split(x):
    """ShuffleNetV2's channel split: the half passed through, the half the main branch takes."""
    half = x.shape[-1] // 2
    return x[..., :half], x[..., half:]


def channel_shuffle(x):
    """ShuffleNetV2's channel shuffle with 2 groups: channel j of group g moves to 2j + g.

    Written with keras.ops so that it serves the traced supernet and the
    functional stand-alone model alike (which then saves in safe mode).
    """
    h, w, c = x.shape[1:]
    x = keras.ops.reshape(x, (-1, h, w, 2, c // 2))
    x = keras.ops.transpose(x, (0, 1, 2, 4, 3))
    return keras.ops.reshape(x, (-1, h, w, c))


def width_table(widths) -> np.ndarray:
    """[W, widest] 0/1: row w switches on the first `widths[w]` channels (SPOS §3.3's slice as a mask)."""
    return (np.arange(widths[-1])[None, :] < np.asarray(widths)[:, None]).astype(np.float32)


def apply_masked(layers: list[keras.layers.Layer], x, training=None, channel_mask=None):
    """`apply_layers`, passing `channel_mask` ([G, widest] or None) to the masked batch norms."""
    for layer in layers:
        if isinstance(layer, MaskedGhostBatchNormalization):
            x = layer(x, training=training, channel_mask=channel_mask)
        else:
            x = apply_layers([layer], x, training)
    return x


def mid_axes(layers: list[keras.layers.Layer]) -> list[tuple[tf.Variable, tuple[int, ...]]]:
    """(kernel, its axes of the searched mid width) for each conv of a main branch.

    Read from where the masked batch norms sit: a conv outputs the mid width
    if the BN after it is masked, and reads it if the last BN before it was.
    """
    out, inside = [], False
    for j, layer in enumerate(layers):
        if isinstance(layer, (keras.layers.Conv2D, keras.layers.DepthwiseConv2D)):
            after = next(n for n in layers[j + 1:] if isinstance(n, GhostBatchNormalization | keras.layers.BatchNormalization))
            produces = isinstance(after, MaskedGhostBatchNormalization)
            if isinstance(layer, keras.layers.DepthwiseConv2D):
                axes = (2,) if produces else ()
            else:
                axes = ((2,) if inside else ()) + ((3,) if produces else ())
            out.append((layer.kernel, axes))
        elif isinstance(layer, GhostBatchNormalization | keras.layers.BatchNormalization):
            inside = isinstance(layer, MaskedGhostBatchNormalization)
    return out


def _ghost_rows(mask) -> tf.Tensor:
    mask = tf.cast(mask, tf.float32)
    return mask[None] if mask.shape.rank == 1 else mask


@keras.saving.register_keras_serializable(package="tf_oneshot")
class SposBlocksOneShotModel(OneShotModel):
    """The single-path supernet of a `SposBlocksSpace` or of a channel-number space built on it.

    Choice block i holds `space.block_candidates(i)` (all four in spos_blocks, the
    fixed one in spos_channels), each at its widest mid width. Masks
    "block{i}" [G, 4] pick the candidate where the space searches blocks;
    masks "channels{i}" [G, 8] pick the mid width where it searches channels
    (SPOS §3.3): the channels past the chosen width are masked in the batch
    norms of the mid width, which is the sliced network of Figure 3b.

    Args:
        space: the search space (its fields fix every layer size).
        ghost_batch_size: examples per ghost batch; each carries one architecture.
        skip_inactive: skip with tf.cond the candidates off in every ghost batch.
        **kwargs: base model arguments (`name`, ...).

    Raises:
        ValueError: for a space that is not a SposBlocksSpace or a bad ghost batch size.
    """

    def __init__(self, space: SposBlocksSpace, ghost_batch_size: int, skip_inactive: bool = True,
                 **kwargs) -> None:
        if not isinstance(space, SposBlocksSpace):
            raise ValueError(f"space must be a SposBlocksSpace. Received: space={space!r}")
        super().__init__(space, ghost_batch_size, skip_inactive, **kwargs)
        gbs = ghost_batch_size
        self.stem = track_layers(self, "stem", stem_layers(space, gbs))
        # self.candidates[i][k]: the layers of candidate space.block_candidates(i)[k] of block i.
        self.candidates = []
        for block in space.layout():
            units = []
            for choice in space.block_candidates(block.index):
                unit = candidate_layers(block, choice, gbs, mid=space.mid_widths(block)[-1],
                                        masked=space.searches_channels)
                prefix = candidate_prefix(block.index, choice)
                for part, layers in unit.items():
                    track_layers(self, f"{prefix}_{part}", layers)  # for tf.train.Checkpoint
                units.append(unit)
            self.candidates.append(units)
        self.head = track_layers(self, "head", head_layers(space, gbs))
        self.classifier = keras.layers.Dense(space.num_classes, name="classifier")
        self.build()

    def build(self, input_shape=None) -> None:
        """Creates every weight; sizes come from the space, not from the input."""
        shape = build_layers(self.stem, (None, *self.space.image_shape))
        for block, units in zip(self.space.layout(), self.candidates):
            main_shape = (*shape[:-1], block.main_in)
            for unit in units:
                build_layers(unit["main"], main_shape)
                build_layers(unit["proj"], shape)
            shape = (None, *block.out_size, block.out_channels)
        shape = build_layers(self.head, shape)
        self.classifier.build((None, shape[-1]))
        self.built = True

    def channel_mask(self, masks, block: BlockLayout) -> tf.Tensor | None:
        """[G, widest]: 1 on the first c channels of the mid width each ghost batch chose (None: not searched).

        With several widths on in a row (the all-on masks), their union: the widest.
        """
        if not self.space.searches_channels:
            return None
        table = tf.constant(width_table(self.space.mid_widths(block)))
        return tf.minimum(tf.matmul(_ghost_rows(masks[f"channels{block.index}"]), table), 1.0)

    def forward(self, images, masks, training=None, skip_inactive=True):
        """Logits from images and the [G, ...] masks of every block."""
        gbs = self.ghost_batch_size
        x = apply_layers(self.stem, images, training)
        for block, units in zip(self.space.layout(), self.candidates):
            channels = self.channel_mask(masks, block)
            if block.first:
                branches = [functools.partial(self._both_branches, unit, x, training, channels) for unit in units]
                zeros = functools.partial(self._zeros, x, block)
            else:
                kept, rest = split(x)
                branches = [functools.partial(apply_masked, unit["main"], rest, training, channels) for unit in units]
                zeros = functools.partial(tf.zeros_like, rest)
            if self.space.searches_blocks:
                # Per-example masks outside the tf.cond branches (XLA differentiates them there).
                rows = per_example(masks[f"block{block.index}"], gbs)  # [N, 4]
                out = choose(branches, rows, skip_inactive, zeros)
            else:
                out = branches[0]()  # the one candidate of every architecture
            x = channel_shuffle(out if block.first else tf.concat([kept, out], -1))
        x = apply_layers(self.head, x, training)
        return self.classifier(tf.reduce_mean(x, axis=[1, 2]))

    @staticmethod
    def _both_branches(unit: dict[str, list], x, training, channels):
        return tf.concat([apply_layers(unit["proj"], x, training), apply_masked(unit["main"], x, training, channels)],
                         -1)

    @staticmethod
    def _zeros(x, block: BlockLayout):
        return tf.zeros(tf.stack([tf.shape(x)[0], *block.out_size, block.out_channels]), x.dtype)

    # -------------------------------------------------------------------- L2
    def masked_l2(self, masks) -> tf.Tensor:
        """Sum of squared kernels, each entry weighted by the share of ghost batches using it.

        SPOS §3.2 trains only the sampled path's weights, so weight decay must
        not shrink the others: as in Bender et al. 2018, §3.2, the decay
        gradient of a candidate off in every ghost batch is exactly 0, and so
        is that of the kernel rows and columns of masked mid channels (the
        slices SPOS §3.3 leaves out). The stem, the last conv and the
        classifier are in every architecture.

        Args:
            masks: the space's masks of the step, each [G, ...] (or without G).

        Returns:
            A scalar; multiply by the weight-decay coefficient.
        """
        terms = [(kernel, 1.0) for kernel in conv_kernels(self.stem + self.head + [self.classifier])]
        for block, units in zip(self.space.layout(), self.candidates):
            channels = self.channel_mask(masks, block)  # [G, widest] or None
            if self.space.searches_blocks:
                candidates = _ghost_rows(masks[f"block{block.index}"])  # [G, 4]
            else:
                candidates = tf.ones([1 if channels is None else tf.shape(channels)[0], 1])
            for k, unit in enumerate(units):
                on = tf.reshape(candidates[:, k], [-1, 1, 1, 1, 1])  # [G, kernel axes]
                whole = path_fraction(on)  # one weight for the candidate's kernels without searched axes
                terms += [(kernel, whole) for kernel in conv_kernels(unit["proj"])]
                for kernel, axes in mid_axes(unit["main"]):
                    share = on
                    for axis in axes:
                        shape = [-1, 1, 1, 1, 1]
                        shape[axis + 1] = channels.shape[-1]
                        share = share * tf.reshape(channels, shape)
                    terms.append((kernel, path_fraction(share) if axes else whole))
        return weighted_sum_of_squares(terms)
