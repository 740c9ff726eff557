"""Ghost batch norm whose moving statistics follow only the active channels (SPOS §3.3).

The one-shot model preallocates the bottleneck at 1.5x and zeroes the
channels an architecture does not use. Batch norm is per channel, so the
normalized active channels are exactly those of the narrower network; but a
plain layer would also pull the moving mean and variance of the zeroed
channels towards 0. This layer updates a channel's moving statistics with
the average of its batch statistics over the ghost batches that use it, and
leaves a channel no ghost batch uses untouched, so recalibration (SPOS) and
a stand-alone network inheriting the statistics see only real data.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from tf_oneshot.layers.ghost_batch_norm import GhostBatchNormalization


@keras.saving.register_keras_serializable(package="tf_oneshot")
class ChannelMaskedBatchNorm(GhostBatchNormalization):
    """`GhostBatchNormalization` taking a [G, C] channel mask per call (1: the channel is in use).

    Without a mask it is the base layer. The mask only steers the moving
    statistics; the caller zeroes the inactive channels of the output.
    """

    def call(self, inputs, training=None, channel_mask=None):
        # The base layer's call reaches `_update`, which reads the mask of this call.
        self._channel_mask = channel_mask
        try:
            return super().call(inputs, training=training)
        finally:
            self._channel_mask = None

    def _update(self, mean: tf.Tensor, variance: tf.Tensor, weight) -> None:
        mask = getattr(self, "_channel_mask", None)
        if mask is None:
            return super()._update(mean, variance, weight)
        # mean, variance: [G, 1, ..., 1, C]; mask: [G, C].
        mask = tf.reshape(tf.cast(mask, mean.dtype), [-1] + [1] * (len(mean.shape) - 2) + [mean.shape[-1]])
        axes = list(range(len(mean.shape) - 1))
        users = tf.reduce_sum(mask, axes)  # ghost batches using each channel
        rate = tf.cast(weight, mean.dtype) * tf.cast(users > 0, mean.dtype)
        for moving, stat in ((self.moving_mean, mean), (self.moving_variance, variance)):
            average = tf.reduce_sum(stat * mask, axes) / tf.maximum(users, 1.0)
            moving.assign_sub((moving - average) * rate)
        return None
