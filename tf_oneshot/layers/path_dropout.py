"""Scheduled path dropout of Bender et al. 2018, §3.2, as masks.

The one-shot model takes the architecture as mask tensors, so path dropout is
a transformation of masks: given an architecture's masks (1 = path in the
architecture) it returns, for every ghost batch, the masks of the paths that
survive. The model then multiplies each path's output by its mask.

A node with k incoming paths in the architecture drops each of them
independently with probability p = s * r^(1/k), so that at the end of the
ramp (s = 1) all k are dropped together with probability r, whatever k
(§3.2: r = 0.05 gives 0.22 for k = 2 and 0.65 for k = 7). s ramps linearly
from 0 at step 0 to 1 at `total_steps` ("linear", the paper's schedule) or is
1 throughout ("constant", §4.1's fixed-rate experiments). The nodes are the
input concatenation of each choice block (k = its active inputs) and the op
sum of each choice block (k = its active ops). Each ghost batch draws its own
pattern; the same pattern serves every cell (§3.2).

The draw is stateless, from (seed, step): the same seed and step give the
same masks on every replica and after a restart from a checkpoint.
"""

from __future__ import annotations

import keras
import tensorflow as tf

SCHEDULES = ("linear", "constant")
# What happens when every path of a node is dropped: "zero" leaves the node
# with no input, so the model zeroes it (and everything that only it feeds);
# "keep_one" puts back one of its architecture's paths, chosen uniformly.
ALL_DROPPED_RULES = ("zero", "keep_one")
MASK_KEYS = ("input_mask", "op_mask")


@keras.saving.register_keras_serializable(package="tf_oneshot")
class PathDropout(keras.layers.Layer):
    """Draws per-ghost-batch path-dropout masks from architecture masks.

    Args:
        rate: r, the probability at the end of the ramp that all incoming
            paths of a node are dropped; 0 disables dropout.
        total_steps: steps of the linear ramp (required for "linear").
        schedule: "linear" (0 at step 0, full at `total_steps`) or "constant".
        all_dropped: "zero" or "keep_one" (see `ALL_DROPPED_RULES`).
        seed: default seed when `call` gets none.
        **kwargs: base layer arguments.

    Call arguments:
        masks: dict with "input_mask" [B, B+1] and "op_mask" [B, O] (one
            architecture for every ghost batch) or with a leading ghost axis
            [G, B, ...] (one architecture per ghost batch).
        step: the global step (int scalar tensor or variable).
        seed: int tensor of shape [2] (or a Python int); default `self.seed`.
        num_ghosts: G, needed when the masks have no ghost axis.
        training: False returns the masks unchanged (with the ghost axis):
            there is no path dropout at evaluation.

    Returns:
        A dict with the same keys, float32 masks of shape [G, B, ...].
    """

    def __init__(
        self,
        rate: float,
        total_steps: int | None = None,
        schedule: str = "linear",
        all_dropped: str = "zero",
        seed: int = 0,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        if not 0.0 <= rate < 1.0:
            raise ValueError(f"rate must lie in [0, 1). Received: rate={rate!r}")
        if schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES}. Received: schedule={schedule!r}")
        if schedule == "linear" and (total_steps is None or total_steps < 1):
            raise ValueError(
                f"the linear schedule needs total_steps >= 1. Received: total_steps={total_steps!r}"
            )
        if all_dropped not in ALL_DROPPED_RULES:
            raise ValueError(
                f"all_dropped must be one of {ALL_DROPPED_RULES}. Received: all_dropped={all_dropped!r}"
            )
        self.rate = float(rate)
        self.total_steps = None if total_steps is None else int(total_steps)
        self.schedule = schedule
        self.all_dropped = all_dropped
        self.seed = int(seed)
        self._allow_non_tensor_positional_args = True
        self.built = True

    def ramp(self, step) -> tf.Tensor:
        """The schedule factor s in [0, 1] at `step`."""
        if self.schedule == "constant":
            return tf.constant(1.0)
        step = tf.cast(step, tf.float32)
        return tf.clip_by_value(step / float(self.total_steps), 0.0, 1.0)

    def drop_probability(self, k, step) -> tf.Tensor:
        """Per-path drop probability s * r^(1/k) for a node with k paths."""
        k = tf.maximum(tf.cast(k, tf.float32), 1.0)
        return self.ramp(step) * tf.pow(self.rate, 1.0 / k)

    def call(self, masks, step=None, seed=None, num_ghosts=None, training=True):
        masks = {key: tf.cast(masks[key], tf.float32) for key in MASK_KEYS}
        masks = {key: self._with_ghost_axis(value, num_ghosts) for key, value in masks.items()}
        if not training or self.rate == 0.0:
            return masks
        if step is None:
            raise ValueError("PathDropout needs the global step in training: call(masks, step=...).")
        seed = tf.constant([self.seed, 0], tf.int64) if seed is None else seed
        if isinstance(seed, int):
            seed = tf.constant([seed, 0], tf.int64)
        key = tf.random.experimental.stateless_fold_in(
            tf.cast(seed, tf.int64), tf.cast(step, tf.int64), alg="philox"
        )
        out = {}
        for index, name in enumerate(MASK_KEYS):
            node_key = tf.random.experimental.stateless_fold_in(key, index, alg="philox")
            out[name] = self._drop(masks[name], node_key, step)
        return out

    def _with_ghost_axis(self, mask: tf.Tensor, num_ghosts) -> tf.Tensor:
        if mask.shape.rank == 2:
            if num_ghosts is None:
                raise ValueError("masks without a ghost axis need num_ghosts=G.")
            return tf.tile(mask[None], [num_ghosts, 1, 1])
        if mask.shape.rank != 3:
            raise ValueError(f"masks must have rank 2 or 3. Received: shape={mask.shape}")
        if num_ghosts is not None and mask.shape[0] is not None and mask.shape[0] != num_ghosts:
            raise ValueError(f"masks have {mask.shape[0]} ghost batches. Received: num_ghosts={num_ghosts}")
        return mask

    def _drop(self, mask: tf.Tensor, key: tf.Tensor, step) -> tf.Tensor:
        """Drops the paths of every node (a row of `mask`) independently."""
        k = tf.reduce_sum(mask, -1, keepdims=True)
        p = self.drop_probability(k, step)
        uniform = tf.random.stateless_uniform(
            tf.shape(mask), seed=key, dtype=tf.float32, alg="philox"
        )
        kept = mask * tf.cast(uniform >= p, tf.float32)
        if self.all_dropped == "keep_one":
            # Put back the architecture path with the smallest draw: a uniform
            # choice among the node's paths, reusing the same draw.
            smallest = tf.one_hot(tf.argmin(uniform + 2.0 * (1.0 - mask), -1), tf.shape(mask)[-1])
            empty = tf.cast(tf.reduce_max(kept, -1, keepdims=True) == 0.0, tf.float32)
            kept = kept + empty * smallest * mask
        return kept

    def compute_output_shape(self, masks_shape, **kwargs):
        return masks_shape

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(
            rate=self.rate,
            total_steps=self.total_steps,
            schedule=self.schedule,
            all_dropped=self.all_dropped,
            seed=self.seed,
        )
        return config
