"""A masked choice among candidate paths, the core of every one-shot model.

The architecture enters the model as masks, one row per ghost batch, so one
traced (and XLA-compiled) function serves every architecture (TuNAS; DESIGN.md).
A candidate is removed from an example by multiplying its output by 0, and a
candidate that is off in every example of the batch is not computed at all
(`tf.cond`): single-path sampling (SPOS §3.2) then runs only the sampled
path, and at evaluation only the scored architecture's ops run.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import tensorflow as tf


def per_example(mask: tf.Tensor, ghost_batch_size: int) -> tf.Tensor:
    """[G, ...] masks of the ghost batches -> [G * ghost_batch_size, ...], one row per example.

    Broadcast and reshape rather than `tf.repeat`: XLA cannot differentiate the
    latter inside a `tf.cond` branch.
    """
    shape = tf.shape(mask)
    tiled = tf.broadcast_to(mask[:, None], tf.concat([shape[:1], [ghost_batch_size], shape[1:]], 0))
    return tf.reshape(tiled, tf.concat([[-1], shape[1:]], 0))


def choose(
    branches: Sequence[Callable[[], tf.Tensor]],
    mask: tf.Tensor,
    skip_inactive: bool,
    zeros: Callable[[], tf.Tensor],
) -> tf.Tensor:
    """Sum of the branches, each times its per-example mask.

    Args:
        branches: K zero-argument callables computing the candidates, all of
            one shape [N, ...].
        mask: [N, K] per-example masks (1 where candidate k is on).
        skip_inactive: skip (tf.cond) a candidate off in the whole batch.
        zeros: builds the zeros of a skipped candidate's shape.

    Returns:
        The masked sum, [N, ...].
    """
    outputs = []
    for k, branch in enumerate(branches):
        m = mask[:, k]

        def masked(branch=branch, m=m):
            out = branch()
            return out * tf.reshape(tf.cast(m, out.dtype), [-1] + [1] * (out.shape.rank - 1))

        if skip_inactive:
            outputs.append(tf.cond(tf.reduce_max(m) > 0.0, masked, zeros))
        else:
            outputs.append(masked())
    return tf.add_n(outputs)
