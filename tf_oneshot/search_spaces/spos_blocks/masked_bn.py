"""Ghost batch norm over the first c channels of a preallocated width (SPOS §3.3, Figure 3b).

SPOS slices the widest weights to the sampled width; with static shapes the
supernet computes all channels and masks those past c instead. Batch norm is
per channel, so an active channel's batch statistics never see the masked
ones; what must not happen is that a masked channel's statistics enter the
moving statistics: with G ghost batches of different widths, channel j
moves only by the ghost batches where it is on (their mean statistic), and
a channel off in every ghost batch keeps its moving statistics. The output
is zero on the masked channels, as if they did not exist.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from tf_oneshot.layers.ghost_batch_norm import GhostBatchNormalization


class _HiddenChannelCounts:
    """Per-channel recalibration counts: a tf.Variable that is no Keras weight (as the base's counter)."""

    def __init__(self, channels: int) -> None:
        with tf.init_scope():
            self.counts = tf.Variable(
                tf.zeros([channels]), trainable=False, name="recalibration_counts",
                aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA,
            )


@keras.saving.register_keras_serializable(package="tf_oneshot")
class MaskedGhostBatchNormalization(GhostBatchNormalization):
    """`GhostBatchNormalization` whose call may take a per-ghost-batch channel mask.

    `layer(x, training=..., channel_mask=m)` with m of shape [G, C] (1 on
    the active channels of ghost batch g) normalizes as the base layer, zeroes
    the masked channels, and updates the moving statistics (training) or
    their exact average ("recalibrate") from the active channels only, each
    channel over the ghost batches where it is on. Without a mask it is the
    base layer, which is what the stand-alone network uses.
    """

    def build(self, input_shape) -> None:
        super().build(input_shape)
        self._channel_counts = _HiddenChannelCounts(int(input_shape[-1]))

    def set_mode(self, mode: str) -> None:
        super().set_mode(mode)
        if mode == "recalibrate":
            self._channel_counts.counts.assign(tf.zeros_like(self._channel_counts.counts))

    def call(self, inputs, training=None, channel_mask=None):
        if channel_mask is None:
            return super().call(inputs, training=training)
        x = tf.cast(inputs, "float32") if inputs.dtype != tf.float32 else inputs
        mode = "train" if training and self.trainable else self._mode
        grouped, mean, variance = self._ghost_moments(x)
        mask = tf.cast(channel_mask, tf.float32)  # [G, C]
        if mode == "moving":
            mean, variance = self.moving_mean, self.moving_variance
        elif mode == "train":
            self._masked_update(mean, variance, mask, 1.0 - self.momentum)
        elif mode == "recalibrate":
            counts = self._channel_counts.counts
            active = tf.reduce_max(mask, 0)
            # Exact running average per channel: its n-th active batch gets weight 1 / n.
            self._masked_update(mean, variance, mask, 1.0 / (counts + 1.0))
            counts.assign_add(active)
        on = tf.reshape(mask, [-1] + [1] * (len(x.shape) - 1) + [mask.shape[-1]])
        out = tf.reshape(self._normalize(grouped, mean, variance) * on, tf.shape(x))
        return tf.cast(out, inputs.dtype)

    def _masked_update(self, mean: tf.Tensor, variance: tf.Tensor, mask: tf.Tensor, weight) -> None:
        """moving += (mean over the ghost batches where a channel is on of its statistic - moving) * weight."""
        axes = list(range(1, len(mean.shape) - 1))
        on = tf.reduce_sum(mask, 0)  # [C] ghost batches using each channel
        for moving, stat in ((self.moving_mean, mean), (self.moving_variance, variance)):
            per_ghost = tf.reduce_sum(stat, axes)  # [G, C] (the reduced axes have size 1)
            average = tf.reduce_sum(tf.where(mask > 0, per_ghost, 0.0), 0) / tf.maximum(on, 1.0)
            moving.assign_sub(tf.where(on > 0, (moving - average) * weight, 0.0))
