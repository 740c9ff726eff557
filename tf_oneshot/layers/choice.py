"""A masked choice among candidate paths, the core of every one-shot model.

The architecture enters the model as masks, one row per ghost batch, so one
traced (and XLA-compiled) function serves every architecture (TuNAS; DESIGN.md).
A candidate is removed from an example by multiplying its output by 0, and a
candidate that is off in every example of the batch is not computed at all
(`tf.cond`): single-path sampling (SPOS §3.2) then runs only the sampled
path, and at evaluation only the scored architecture's ops run.

When the caller knows the whole call carries one path (one candidate on, the
same in every example), `choose_one` picks it with one `tf.switch_case`: K
traced branches per block instead of K `tf.cond`s with a zeros branch each,
which halves the functions that tracing, their gradients and the first graph
run must handle (benchmarks/first_step.py).
"""

from __future__ import annotations

import functools
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
        masked = functools.partial(_masked, branch, mask[:, k])
        if skip_inactive:
            outputs.append(tf.cond(tf.reduce_max(mask[:, k]) > 0.0, masked, zeros))
        else:
            outputs.append(masked())
    return tf.add_n(outputs)


def choose_one(branches: Sequence[Callable[[], tf.Tensor]], mask: tf.Tensor) -> tf.Tensor:
    """The one candidate on in the call, times its per-example mask, with one `tf.switch_case`.

    The caller guarantees that exactly one candidate is on, the same in every
    example (SPOS §3.2: one path per step); then this equals `choose` with
    `skip_inactive`, and an off candidate gets no gradient as there.

    Args:
        branches: K zero-argument callables computing the candidates, all of
            one shape [N, ...].
        mask: [N, K] per-example masks, one-hot and equal in every row.

    Returns:
        The chosen candidate's output times its mask, [N, ...].
    """
    index = tf.argmax(tf.reduce_max(mask, 0), output_type=tf.int32)
    return tf.switch_case(index, [functools.partial(_masked, branch, mask[:, k]) for k, branch in enumerate(branches)])


def _masked(branch: Callable[[], tf.Tensor], m: tf.Tensor) -> tf.Tensor:
    out = branch()
    return out * tf.reshape(tf.cast(m, out.dtype), [-1] + [1] * (out.shape.rank - 1))
