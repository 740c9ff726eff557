"""A masked choice among candidate paths, the core of every one-shot model.

The architecture enters the model as masks, one row per ghost batch, so one
traced (and XLA-compiled) function serves every architecture (TuNAS; DESIGN.md).
A candidate is removed from an example by multiplying its output by 0, and a
candidate that is off in every example of the batch is not computed at all
(`tf.cond`): single-path sampling (SPOS §3.2) then runs only the sampled
path, and at evaluation only the scored architecture's ops run.

Candidates without weights (pooling, the identity) are better run masked
than skipped: they cost little, and inside a `tf.cond` branch TF's oneDNN
rewrite cannot pair a pooling gradient with its forward op, so training
falls back to Eigen's MaxPoolGrad: ~50 ms per call at 64x32x32x16 on
2 CPU cores against 0.6 ms (profiled, issue 20). `skip_which`
says which candidates a space skips.
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


def skip_which(skip_inactive: bool, candidates: Sequence) -> list[bool]:
    """Per candidate (a layer or a list of layers), whether to skip it when off: only those with weights.

    Pooling and the identity hold none and run masked (module docstring).
    """
    def has_weights(candidate) -> bool:
        layers = candidate if isinstance(candidate, (list, tuple)) else [candidate]
        return any(layer.weights for layer in layers)

    return [bool(skip_inactive) and has_weights(c) for c in candidates]


def choose(
    branches: Sequence[Callable[[], tf.Tensor]],
    mask: tf.Tensor,
    skip_inactive: bool | Sequence[bool],
    zeros: Callable[[], tf.Tensor],
) -> tf.Tensor:
    """Sum of the branches, each times its per-example mask.

    Args:
        branches: K zero-argument callables computing the candidates, all of
            one shape [N, ...].
        mask: [N, K] per-example masks (1 where candidate k is on).
        skip_inactive: skip (tf.cond) a candidate off in the whole batch; one
            bool for all, or one per branch (`skip_which`).
        zeros: builds the zeros of a skipped candidate's shape.

    Returns:
        The masked sum, [N, ...].
    """
    skips = [skip_inactive] * len(branches) if isinstance(skip_inactive, bool) else list(skip_inactive)

    def masked(branch: Callable[[], tf.Tensor], m: tf.Tensor) -> Callable[[], tf.Tensor]:
        def run() -> tf.Tensor:
            out = branch()
            return out * tf.reshape(tf.cast(m, out.dtype), [-1] + [1] * (out.shape.rank - 1))
        return run

    columns = [mask[:, k] for k in range(len(branches))]
    active = [tf.reduce_max(m) > 0.0 if skip else None for m, skip in zip(columns, skips)]  # read only if skipped
    return masked_sum([masked(b, m) for b, m in zip(branches, columns)], active, skips, zeros)


def masked_sum(
    masked: Sequence[Callable[[], tf.Tensor]],
    active: Sequence[tf.Tensor | None],
    skips: Sequence[bool],
    zeros: Callable[[], tf.Tensor],
) -> tf.Tensor:
    """Sum of the already-masked candidates; a candidate with `skips[k]` runs only where `active[k]`.

    A running sum rather than tf.add_n: grappler turns an add_n whose inputs
    come from tf.cond into temporary-variable accumulation (an AssignAdd per
    input, ~40 ms a step in a 4-cell space), and a skipped candidate passes the sum
    on instead of adding zeros.
    """
    total = None
    for k in (k for k, skip in enumerate(skips) if not skip):
        total = masked[k]() if total is None else total + masked[k]()
    for k in (k for k, skip in enumerate(skips) if skip):
        if total is None:
            total = tf.cond(active[k], masked[k], zeros)
        else:
            total = tf.cond(active[k], lambda k=k, t=total: t + masked[k](), lambda t=total: t)
    return total
