"""Scheduled path dropout of Bender et al. 2018, §3.2, as masks.

The one-shot model takes the architecture as mask tensors, so path dropout is
a transformation of masks: given the masks of the architectures the ghost
batches train (1 = path in the architecture, a leading ghost axis [G, ...])
it returns, for every ghost batch, the masks of the paths that survive. The
model then multiplies each path's output by its mask.

Every row of a mask over its last axis is a node, its on entries the node's
incoming paths: a node with k paths in the architecture drops each of them
independently with probability p = s * r^(1/k), so that at the end of the
ramp (s = 1) all k are dropped together with probability r, whatever k
(§3.2: r = 0.05 gives 0.22 for k = 2 and 0.65 for k = 7). s ramps linearly
from 0 at step 0 to 1 at `total_steps` ("linear", the paper's schedule) or is
1 throughout ("constant", §4.1's fixed-rate experiments). In the Bender cell
space the nodes are the input concatenation of each choice block (rows of
"input_mask") and the op sum of each choice block (rows of "op_mask"); any
search space names its node masks in `SearchSpace.dropout_masks()`. Each
ghost batch draws its own pattern; the same pattern serves every cell (§3.2).

The draw is stateless, from (seed, step): the same seed and step give the
same masks on every replica and after a restart from a checkpoint.
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
import tensorflow as tf

SCHEDULES = ("linear", "constant")
# What happens when every path of a node is dropped: "zero" leaves the node
# with no input, so the model zeroes it (and everything that only it feeds);
# "keep_one" puts back one of its architecture's paths, chosen uniformly.
ALL_DROPPED_RULES = ("zero", "keep_one")
# The Bender cell space's node masks (its `dropout_masks()`), kept for callers
# that name them.
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
        keys: the masks whose rows are nodes (`space.dropout_masks()`); other
            masks pass through unchanged. None: every mask given, in name
            order. The i-th key draws from the i-th sub-key of (seed, step),
            so a mask's pattern does not depend on the other masks' shapes.
        **kwargs: base layer arguments.

    Call arguments:
        masks: dict of float masks [G, ..., paths] (one architecture per
            ghost batch; rank >= 2), or, with `num_ghosts`, masks of one
            architecture without the ghost axis, tiled to G ghost batches.
        step: the global step (int scalar tensor or variable).
        seed: int tensor of shape [2] (or a Python int); default `self.seed`.
        num_ghosts: G when the masks have no ghost axis; None when they have.
        training: False returns the masks unchanged (with the ghost axis):
            there is no path dropout at evaluation.

    Returns:
        A dict with the same keys, float32 masks of shape [G, ...].
    """

    def __init__(
        self,
        rate: float,
        total_steps: int | None = None,
        schedule: str = "linear",
        all_dropped: str = "zero",
        seed: int = 0,
        keys: Sequence[str] | None = None,
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
        if keys is not None and (isinstance(keys, str) or len(set(keys)) != len(tuple(keys))):
            raise ValueError(f"keys must be a sequence of distinct mask names. Received: keys={keys!r}")
        self.rate = float(rate)
        self.total_steps = None if total_steps is None else int(total_steps)
        self.schedule = schedule
        self.all_dropped = all_dropped
        self.seed = int(seed)
        self.keys = None if keys is None else tuple(str(k) for k in keys)
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
        keys = tuple(sorted(masks)) if self.keys is None else self.keys
        missing = [key for key in keys if key not in masks]
        if missing:
            raise ValueError(f"PathDropout needs mask {missing[0]!r}. Received: keys={sorted(masks)}")
        masks = {key: self._with_ghost_axis(key, tf.cast(value, tf.float32), num_ghosts)
                 for key, value in masks.items()}
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
        out = dict(masks)
        for index, name in enumerate(keys):
            node_key = tf.random.experimental.stateless_fold_in(key, index, alg="philox")
            out[name] = self._drop(masks[name], node_key, step)
        return out

    @staticmethod
    def _with_ghost_axis(name: str, mask: tf.Tensor, num_ghosts) -> tf.Tensor:
        if num_ghosts is not None:
            if mask.shape.rank is None or mask.shape.rank < 1:
                raise ValueError(f"mask {name!r} needs a paths axis. Received: shape={mask.shape}")
            return tf.tile(mask[None], [num_ghosts] + [1] * mask.shape.rank)
        if mask.shape.rank is None or mask.shape.rank < 2:
            raise ValueError(
                f"mask {name!r} needs a ghost axis and a paths axis [G, ..., paths], or pass "
                f"num_ghosts=G for masks of one architecture. Received: shape={mask.shape}"
            )
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
            keys=None if self.keys is None else list(self.keys),
        )
        return config
