"""The base of every space's masked one-shot model.

A one-shot model holds every candidate path of its search space; the
architecture (and the paths a sampler keeps) enters only as mask tensors,
one architecture per ghost batch:

    model({"images": [N, H, W, C], **masks}, training=...) -> logits [N, classes]

where each mask has the static shape `space.mask_shapes()[key]` with a
leading ghost axis G = N / ghost_batch_size (a mask without it serves every
ghost batch). So one traced (and XLA-compiled) function serves every
architecture, and G ghost batches can score G architectures in one pass.

This base does what is the same for every space: checks the batch against
the ghost batch size, puts the ghost axis on the masks, finds every ghost
batch norm for the evaluation modes (Bender et al. 2018, §3.2 batch
statistics; SPOS recalibration), and guards against a function traced under
another mode. A space's model implements `forward` and `masked_l2`.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from tf_oneshot.layers.common import nested_layers
from tf_oneshot.layers.ghost_batch_norm import MODES, GhostBatchNormalization
from tf_oneshot.search_spaces import space_from_config


class _ModeCheck:
    """The batch-norm mode as a tf.Variable that is no Keras weight nor checkpointed."""

    def __init__(self) -> None:
        with tf.init_scope():
            # Replica-local: a scorer switches modes inside `strategy.run`,
            # each replica at its own pace.
            self.code = tf.Variable(
                0, trainable=False, dtype=tf.int32, name="bn_mode",
                synchronization=tf.VariableSynchronization.ON_READ,
                aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA,
            )

    def set(self, mode: str) -> None:
        self.code.assign(MODES.index(mode))

    def assert_current(self, mode: str) -> None:
        tf.debugging.assert_equal(
            self.code, MODES.index(mode),
            message=f"this function was traced with bn mode {mode!r}, but set_bn_mode() has changed "
            "it since; trace a new tf.function after set_bn_mode().",
        )


class OneShotModel(keras.Model):
    """A masked one-shot network for one search space.

    Args:
        space: the search space (its fields fix every layer size).
        ghost_batch_size: examples per ghost batch (Bender et al. 2018, §3.2).
        skip_inactive: skip with tf.cond the candidates that are off in every
            ghost batch of a call.
        **kwargs: base model arguments (`name`, ...).

    Subclasses create their layers in `__init__` (after calling this one) and
    implement `forward(images, masks, training, skip_inactive)` and
    `masked_l2(masks)`.
    """

    def __init__(self, space, ghost_batch_size: int, skip_inactive: bool = True, **kwargs) -> None:
        super().__init__(**kwargs)
        if isinstance(ghost_batch_size, bool) or not isinstance(ghost_batch_size, int) or ghost_batch_size < 1:
            raise ValueError(
                f"ghost_batch_size must be a positive integer. Received: ghost_batch_size={ghost_batch_size!r}"
            )
        self.space = space
        self.ghost_batch_size = ghost_batch_size
        self.skip_inactive = bool(skip_inactive)
        self.mask_shapes = dict(space.mask_shapes())
        # The batch-norm mode is read at trace time (no run-time switch per
        # layer); this hidden variable lets an evaluation traced under another
        # mode fail loudly instead of silently using the old mode.
        self._mode_check = _ModeCheck()

    @classmethod
    def create(cls, space, ghost_batch_size: int, skip_inactive: bool = True, **kwargs) -> OneShotModel:
        """The model of `space`, called once on all-on inputs so that every weight and state exists.

        A network module's `build_oneshot` uses it (`SearchSpace.network`):
        a checkpoint restores into the result, and its first traced step
        creates no variable.
        """
        model = cls(space, ghost_batch_size=ghost_batch_size, skip_inactive=skip_inactive, **kwargs)
        model(model.dummy_inputs(ghost_batch_size), training=False)
        return model

    # ----------------------------------------------------------------- masks
    def ghost_masks(self, masks, num_ghosts=None) -> dict[str, tf.Tensor]:
        """The space's masks as float32 [G, ...] (a mask without the ghost axis is tiled).

        `num_ghosts` None accepts any number of ghost batches (the L2 term
        weighs paths over every ghost batch of the step).
        """
        out = {}
        for key, shape in self.mask_shapes.items():
            if key not in masks:
                raise ValueError(f"the one-shot model of {self.space.name!r} needs mask {key!r}. "
                                 f"Received: keys={sorted(masks)}")
            mask = tf.cast(masks[key], tf.float32)
            if mask.shape.rank == len(shape):
                mask = tf.tile(mask[None], [num_ghosts or 1] + [1] * len(shape))
            elif mask.shape.rank != len(shape) + 1 or tuple(mask.shape[1:]) != tuple(shape):
                raise ValueError(f"mask {key!r} must have shape {shape} or [G, *{shape}]. "
                                 f"Received: shape={mask.shape}")
            elif isinstance(num_ghosts, int) and mask.shape[0] not in (None, num_ghosts):
                raise ValueError(
                    f"{key} holds {mask.shape[0]} ghost batches but the images make {num_ghosts} "
                    f"(batch / ghost_batch_size={self.ghost_batch_size}). Received: {key}.shape={mask.shape}"
                )
            out[key] = mask
        return out

    def dummy_inputs(self, batch: int) -> dict[str, tf.Tensor]:
        """All-on inputs of `batch` zero images (to create the weights)."""
        ghosts = max(1, batch // self.ghost_batch_size)
        masks = {k: tf.constant(np.repeat(v[None], ghosts, axis=0))
                 for k, v in self.space.all_on_masks().items()}
        return {"images": tf.zeros((ghosts * self.ghost_batch_size, *self.space.image_shape)), **masks}

    def call(self, inputs, training=None, skip_inactive=None):
        """Logits for `inputs` ({"images", **masks}).

        `skip_inactive` (a Python bool) overrides the constructor's choice for
        this call: with nothing dropped, the tf.cond around every candidate
        costs more than it saves (benchmarks/train_step.py).
        """
        images = inputs["images"]
        gbs = self.ghost_batch_size
        batch = images.shape[0]
        if batch is not None and batch % gbs:
            raise ValueError(
                f"batch size {batch} is not a multiple of ghost_batch_size={gbs}; every ghost batch "
                "carries one architecture (Bender et al. 2018, §3.2)."
            )
        num_ghosts = batch // gbs if batch is not None else tf.shape(images)[0] // gbs
        masks = self.ghost_masks(inputs, num_ghosts)
        if not training:
            self._mode_check.assert_current(self.bn_mode)
        skip = self.skip_inactive if skip_inactive is None else bool(skip_inactive)
        return self.forward(images, masks, training=training, skip_inactive=skip)

    def forward(self, images, masks: dict[str, tf.Tensor], training=None, skip_inactive: bool = True):
        """Logits from images and [G, ...] masks (a space's model implements this)."""
        raise NotImplementedError(f"{type(self).__name__} must implement forward().")

    def masked_l2(self, masks: dict[str, tf.Tensor]) -> tf.Tensor:
        """Sum of squared kernels, each weighted by the share of ghost batches using it.

        Bender et al. 2018, §3.2 ("Preventing Over-regularization"): L2 applies
        only to the paths the current architectures use, so the decay gradient
        of a path off in every ghost batch is exactly 0. `masks` are [G, ...],
        the masks of the whole step (every replica's ghost batches).
        """
        raise NotImplementedError(f"{type(self).__name__} must implement masked_l2().")

    # ------------------------------------------------------------ batch norm
    def ghost_bn_layers(self) -> list[GhostBatchNormalization]:
        """Every GhostBatchNormalization layer of the model.

        Found through `keras.Model.layers` and, inside a layer holding
        others, its `tf_oneshot.layers.LayerGroup.sublayers()`.
        """
        return [layer for layer in nested_layers(self) if isinstance(layer, GhostBatchNormalization)]

    def set_bn_mode(self, mode: str) -> None:
        """Sets how batch norm works at evaluation, in every ghost batch norm.

        Args:
            mode: "batch" (statistics on the fly, Bender et al. 2018, §3.2),
                "moving" (moving statistics), or "recalibrate" (each call with
                training=False folds its batch statistics into an exact
                average that replaces the moving statistics, SPOS; call
                `set_bn_mode("moving")` afterwards to use them).

        Raises:
            ValueError: for an unknown mode.
        """
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}. Received: mode={mode!r}")
        for layer in self.ghost_bn_layers():
            layer.set_mode(mode)
        self._bn_mode = mode
        self._mode_check.set(mode)

    @property
    def bn_mode(self) -> str:
        return getattr(self, "_bn_mode", "batch")

    # ---------------------------------------------------------------- config
    def get_config(self) -> dict:
        return {
            "name": self.name,
            "trainable": self.trainable,
            "space": self.space.to_config(),
            "ghost_batch_size": self.ghost_batch_size,
            "skip_inactive": self.skip_inactive,
        }

    @classmethod
    def from_config(cls, config: dict):
        config = dict(config)
        space = config.pop("space")
        if isinstance(space, dict):
            space = space_from_config(space)
        return cls(space=space, **config)


def path_fraction(mask: tf.Tensor) -> tf.Tensor:
    """[G, ...] masks -> [...] the share of ghost batches in which each path is on."""
    return tf.reduce_mean(tf.cast(mask, tf.float32), 0)


def weighted_sum_of_squares(terms: list[tuple[tf.Tensor, tf.Tensor]]) -> tf.Tensor:
    """sum_i sum(weight_i * kernel_i^2) over (kernel, weight) pairs.

    A weight is a scalar (a whole kernel on one path) or broadcasts against its
    kernel (per channel or per row, e.g. the share of ghost batches using an
    input channel of a 1x1 convolution). Kernels that share one scalar weight
    (the same tensor, or the same number) are summed first and weighted once:
    every kernel of a candidate path, the fixed stem and head. The traced step
    then holds one product per path, not one broadcast product (and its
    gradient) per kernel: ~1.7 s of the ~17 s that tracing the SPOS demo
    supernet's step took (`benchmarks/first_step.py`). Pass a path's weight
    as one tensor to all its kernels to share it.
    """
    if not terms:
        return tf.constant(0.0)
    groups: dict = {}  # key -> (weight, [half the sum of squares of each kernel])
    parts = []
    for kernel, weight in terms:
        kernel = tf.cast(kernel, tf.float32)
        key = _scalar_key(weight)
        if key is None:
            parts.append(tf.reduce_sum(tf.cast(weight, tf.float32) * tf.square(kernel)))
        else:
            groups.setdefault(key, (weight, []))[1].append(tf.nn.l2_loss(kernel))
    for (kind, value), (weight, halves) in groups.items():  # l2_loss: one op and one op back
        total = 2.0 * (tf.add_n(halves) if len(halves) > 1 else halves[0])
        if kind == "number":
            parts.append(total if value == 1.0 else value * total)
        else:
            parts.append(tf.reshape(tf.cast(weight, tf.float32), []) * total)
    return tf.add_n(parts) if len(parts) > 1 else parts[0]


def _scalar_key(weight) -> tuple | None:
    """How `weighted_sum_of_squares` groups a weight of one element: by value (a number), by identity (a tensor).

    None for a weight that broadcasts over its kernel.
    """
    shape = getattr(weight, "shape", None)
    if isinstance(shape, tf.TensorShape) and shape.rank is None:
        return None  # unknown rank: it broadcasts, as any weight may
    dims = np.shape(weight) if shape is None else tuple(shape)
    if any(d is None for d in dims) or int(np.prod(dims)) != 1:
        return None
    if isinstance(weight, (int, float, np.number, np.ndarray)):
        return ("number", float(np.asarray(weight).reshape(())))
    return ("tensor", id(weight))
