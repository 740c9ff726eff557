"""Ghost batch normalization with the evaluation modes one-shot search needs.

Bender et al. 2018, §3.2: each training batch is split into ghost batches
(Hoffer et al. 2017) that get their own path-dropout pattern, so each ghost
batch also gets its own batch statistics. At evaluation the paper computes
batch statistics on the fly ("batch" mode), because the statistics of a
candidate architecture are unknown in advance. Guo et al. (SPOS, §3.3) instead
recalibrate the moving statistics on training images for each candidate and
then use them ("recalibrate", then "moving").

Keras 3 has no `virtual_batch_size`, hence this layer (DESIGN.md, pitfalls).
"""

from __future__ import annotations

import keras
import tensorflow as tf

MODES = ("batch", "moving", "recalibrate")
FUSED_MIN_EPSILON = 1.001e-5  # the fused kernel raises a smaller epsilon to this
EVAL_MODES = MODES[:2]


class _HiddenCounter:
    """Holds the recalibration counter, a tf.Variable that is no Keras weight.

    It is run-time bookkeeping, not model state: keeping it out of
    `layer.weights` keeps `count_params` equal to the search space's
    arithmetic, and out of checkpoints keeps checkpoints independent of how a
    model was last evaluated.
    """

    def __init__(self) -> None:
        with tf.init_scope():
            # ONLY_FIRST_REPLICA: one increment per batch under any strategy.
            self.count = tf.Variable(
                0.0, trainable=False, name="recalibration_count",
                aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA,
            )


@keras.saving.register_keras_serializable(package="tf_oneshot")
class GhostBatchNormalization(keras.layers.Layer):
    """Batch normalization over ghost batches (last axis = channels).

    In training, a batch of N examples is reshaped to [N / ghost_batch_size,
    ghost_batch_size, ...] and every ghost batch is normalized with its own
    mean and (biased) variance. The moving statistics are updated with the
    mean over ghost batches of those statistics, with `momentum` as in
    `keras.layers.BatchNormalization`; with a single ghost batch the layer is
    exactly that layer.

    At evaluation (`training=False`) the layer follows its mode (`set_mode`):
    "batch" normalizes each ghost batch with its own statistics on the fly
    (Bender et al. 2018, §3.2), "moving" uses the moving statistics, and
    "recalibrate" normalizes like "batch" while replacing the moving
    statistics by the exact average, over every batch seen since
    `set_mode("recalibrate")`, of the ghost-averaged batch statistics
    (Guo et al. 2019, SPOS, BN recalibration).

    The mode is read when a call is traced: it costs nothing at run time (a
    run-time switch per layer, `tf.cond`, made evaluation 5x slower), but a
    `tf.function` traced before `set_mode` keeps the mode it was traced with.
    Trace a new function after switching (`OneShotModel` checks this).

    Args:
        ghost_batch_size: examples per ghost batch; every batch the layer
            normalizes with batch statistics must be a multiple of it.
        momentum: momentum of the moving statistics.
        epsilon: added to the variance.
        eval_mode: "batch" or "moving", the mode at evaluation until
            `set_mode` changes it.
        **kwargs: base layer arguments (`name`, `dtype`, ...).

    Raises:
        ValueError: for a bad argument, or (at call time) a batch that is not
            a multiple of `ghost_batch_size` where batch statistics are needed.
    """

    def __init__(
        self,
        ghost_batch_size: int,
        momentum: float = 0.99,
        epsilon: float = 1e-3,
        eval_mode: str = "batch",
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        if isinstance(ghost_batch_size, bool) or not isinstance(ghost_batch_size, int) or ghost_batch_size < 1:
            raise ValueError(
                f"ghost_batch_size must be a positive integer. Received: ghost_batch_size={ghost_batch_size!r}"
            )
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum must lie in [0, 1). Received: momentum={momentum!r}")
        if not epsilon > 0.0:
            raise ValueError(f"epsilon must be positive. Received: epsilon={epsilon!r}")
        if eval_mode not in EVAL_MODES:
            raise ValueError(f"eval_mode must be one of {EVAL_MODES}. Received: eval_mode={eval_mode!r}")
        self.ghost_batch_size = ghost_batch_size
        self.momentum = float(momentum)
        self.epsilon = float(epsilon)
        self.eval_mode = eval_mode
        self._mode = eval_mode
        self._counter = _HiddenCounter()
        self.supports_masking = True

    def build(self, input_shape) -> None:
        channels = input_shape[-1]
        if channels is None:
            raise ValueError(f"the channel axis must be known. Received: input_shape={input_shape}")
        shape = (channels,)
        self.gamma = self.add_weight(shape=shape, name="gamma", initializer="ones", autocast=False)
        self.beta = self.add_weight(shape=shape, name="beta", initializer="zeros", autocast=False)
        self.moving_mean = self.add_weight(
            shape=shape, name="moving_mean", initializer="zeros", trainable=False, autocast=False
        )
        self.moving_variance = self.add_weight(
            shape=shape, name="moving_variance", initializer="ones", trainable=False, autocast=False
        )

    # ------------------------------------------------------------------ modes
    @property
    def mode(self) -> str:
        """The current evaluation mode: "batch", "moving" or "recalibrate"."""
        return self._mode

    def set_mode(self, mode: str) -> None:
        """Switches the evaluation mode; "recalibrate" also restarts the average.

        Args:
            mode: "batch", "moving" or "recalibrate".

        Raises:
            ValueError: for an unknown mode.
        """
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}. Received: mode={mode!r}")
        self._mode = mode
        if mode == "recalibrate":
            self._counter.count.assign(0.0)

    # ------------------------------------------------------------------- call
    def _ghost_moments(self, x: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        """Returns x as [G, gbs, ...] and its per-ghost mean and variance."""
        batch, gbs = x.shape[0], self.ghost_batch_size
        if batch is not None and batch % gbs:
            raise ValueError(
                f"batch size {batch} is not a multiple of ghost_batch_size={gbs}; use a batch of "
                f"{max(gbs, batch // gbs * gbs)} (drop the remainder) or a ghost batch size that divides "
                f"{batch}."
            )
        if batch is None:
            check = tf.debugging.assert_equal(
                tf.shape(x)[0] % gbs, 0, message=f"batch size is not a multiple of ghost_batch_size={gbs}"
            )
            with tf.control_dependencies([check]):
                grouped = tf.reshape(x, tf.concat([[-1, gbs], tf.shape(x)[1:]], 0))
        else:
            grouped = tf.reshape(x, [batch // gbs, gbs, *x.shape[1:]])
        axes = list(range(1, len(x.shape)))  # all but the ghost and channel axes
        mean = tf.reduce_mean(grouped, axes, keepdims=True)
        # Biased variance, like keras.layers.BatchNormalization.
        variance = tf.reduce_mean(tf.math.squared_difference(grouped, tf.stop_gradient(mean)), axes, keepdims=True)
        return grouped, mean, variance

    def _one_ghost_batch(self, x: tf.Tensor) -> bool:
        """True where the batch is one ghost batch, of known size: one fused kernel normalizes it.

        Not for a subclass that redefines the statistics or the normalization,
        which the fused kernel would bypass.
        """
        own = all(getattr(type(self), name) is getattr(GhostBatchNormalization, name)
                  for name in ("_ghost_moments", "_normalize"))
        return (own and x.shape.is_fully_defined() and x.shape[0] == self.ghost_batch_size
                and len(x.shape) in (2, 4) and self.epsilon >= FUSED_MIN_EPSILON
                and x.shape.num_elements() > x.shape[-1])

    def _fused(self, x: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        """(normalized x, mean, biased variance) of a batch that is one ghost batch, by TF's fused kernel.

        One kernel forward and one back instead of the ~20 and ~30 of
        `_ghost_moments` and `_normalize`: SPOS trains one path per step with
        the whole batch as its ghost batch (§3.2), where the composite ops
        took ~5 of the ~19 s that tracing the demo supernet's step took
        (`benchmarks/first_step.py`). The kernel reports the variance with
        Bessel's correction; the layer's statistics are biased, as Keras'
        BatchNormalization keeps them. The statistics come as [C] where the
        base `_update` reads them (no reshape, no mean over one ghost batch:
        fewer ops to trace), else in `_ghost_moments`' layout [1, ..., 1, C].
        """
        channels = x.shape[-1]
        images = x if len(x.shape) == 4 else tf.reshape(x, [-1, 1, 1, channels])
        out, mean, variance = tf.compat.v1.nn.fused_batch_norm(
            images, self.gamma, self.beta, epsilon=self.epsilon, is_training=True)
        count = x.shape.num_elements() // channels
        variance = variance * ((count - 1) / count)
        if len(x.shape) != 4:
            out = tf.reshape(out, x.shape)
        if type(self)._update is GhostBatchNormalization._update:
            return out, mean, variance
        moments = [1] * len(x.shape) + [channels]  # `_ghost_moments`' layout, [G=1, 1, ..., C], which subclasses read
        return out, tf.reshape(mean, moments), tf.reshape(variance, moments)

    def _normalize(self, x, mean, variance):
        inv = tf.math.rsqrt(variance + self.epsilon) * self.gamma
        return x * inv + (self.beta - mean * inv)

    def _update(self, mean: tf.Tensor, variance: tf.Tensor, weight) -> None:
        """moving += (mean over ghost batches of the batch statistic - moving) * weight."""
        axes = list(range(len(mean.shape) - 1))  # none for the [C] statistics of `_fused`
        for moving, stat in ((self.moving_mean, mean), (self.moving_variance, variance)):
            # Keras' assign_sub, which a stateless scope (`stateless_call`) records instead of applying.
            moving.assign_sub((moving - (tf.reduce_mean(stat, axes) if axes else stat)) * weight)

    def call(self, inputs, training=None):
        x = tf.cast(inputs, "float32") if inputs.dtype != tf.float32 else inputs
        # As keras.layers.BatchNormalization: a frozen layer (trainable=False)
        # runs as at evaluation, so fine-tuning a child from frozen shared
        # weights never moves their statistics. An explicit recalibration
        # (set_mode("recalibrate")) still recalibrates.
        mode = "train" if training and self.trainable else self._mode
        if mode == "moving":
            out = self._normalize(x, self.moving_mean, self.moving_variance)
        else:
            if self._one_ghost_batch(x):
                out, mean, variance = self._fused(x)
            else:
                grouped, mean, variance = self._ghost_moments(x)
                out = tf.reshape(self._normalize(grouped, mean, variance), tf.shape(x))
            if mode == "train":
                self._update(mean, variance, 1.0 - self.momentum)
            elif mode == "recalibrate":
                # Exact running average: the n-th batch gets weight 1 / n.
                count = self._counter.count
                self._update(mean, variance, 1.0 / (count + 1.0))
                count.assign_add(1.0)
        return tf.cast(out, inputs.dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(
            ghost_batch_size=self.ghost_batch_size,
            momentum=self.momentum,
            epsilon=self.epsilon,
            eval_mode=self.eval_mode,
        )
        return config
