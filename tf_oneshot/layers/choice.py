"""A masked choice among candidate paths, the core of every one-shot model.

The architecture enters the model as masks, one row per ghost batch, so one
traced (and XLA-compiled) function serves every architecture (TuNAS; DESIGN.md).
A candidate is removed from an example by multiplying its output by 0, and a
candidate that is off in every example of the batch is not computed at all
(`tf.cond`): single-path sampling (SPOS §3.2) then runs only the sampled
path, and at evaluation only the scored architecture's ops run.

Candidates without weights cost little and run masked, with one exception
that depends on TensorFlow's CPU kernels (`skip_pooling`): max pooling's
gradient. Where TF runs oneDNN (x86 CPUs with AVX512-VNNI, AVX512-BF16,
AVX-VNNI or AMX by default), the gradient pairs with its forward op and
costs ~0.6 ms at 64x32x32x16 on 2 cores, but inside a `tf.cond` branch the
rewrite cannot pair them and training falls back to Eigen's MaxPoolGrad,
~50 ms: max pooling runs masked. Without oneDNN (other x86 CPUs, e.g. AVX2
only) Eigen's MaxPoolGrad runs either way, ~25 ms a call, so a max pool that
is off is skipped like a candidate with weights (issue 20: a DARTS-like
space of 4 cells trained one path per step ran 12 masked max pools a step,
`benchmarks/train_step.py`). On GPUs and TPUs pooling is cheap and runs
masked. `skip_which` says which candidates a space skips.
"""

from __future__ import annotations

import functools
import os
import platform
from collections.abc import Callable, Sequence

import keras
import tensorflow as tf

from tf_oneshot.layers.common import nested_layers


def per_example(mask: tf.Tensor, ghost_batch_size: int) -> tf.Tensor:
    """[G, ...] masks of the ghost batches -> [G * ghost_batch_size, ...], one row per example.

    Broadcast and reshape rather than `tf.repeat`: XLA cannot differentiate the
    latter inside a `tf.cond` branch.
    """
    shape = tf.shape(mask)
    tiled = tf.broadcast_to(mask[:, None], tf.concat([shape[:1], [ghost_batch_size], shape[1:]], 0))
    return tf.reshape(tiled, tf.concat([[-1], shape[1:]], 0))


# CPU features with which TensorFlow turns oneDNN on by default on Linux x86 (`DefaultOneDnnPolicy`,
# tensorflow/core/util/port.cc), as /proc/cpuinfo names them.
ONEDNN_CPU_FLAGS = ("avx512_vnni", "avx512_bf16", "avx_vnni", "amx_tile", "amx_bf16", "amx_int8")


def _cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo") as f:
            return {flag for line in f if line.startswith("flags") for flag in line.split(":", 1)[1].split()}
    except OSError:
        return set()


def onednn_on() -> bool:
    """Whether TensorFlow's CPU kernels come from oneDNN here: TF_ENABLE_ONEDNN_OPTS if set, else TF's default.

    TF's default (`DefaultOneDnnPolicy`): on Linux x86, on for CPUs with one
    of `ONEDNN_CPU_FLAGS`; off on macOS, whose builds have no oneDNN; on
    elsewhere (Windows x86; ARM Linux, where TF turns it on for some CPUs
    only, is taken as on, which keeps max pooling masked as before).
    """
    value = os.environ.get("TF_ENABLE_ONEDNN_OPTS", "").strip().lower()
    if value in ("0", "false", "1", "true"):
        return value in ("1", "true")
    system = platform.system()
    if system == "Linux" and platform.machine().lower() in ("x86_64", "amd64", "i386", "i686"):
        return bool(_cpu_flags() & set(ONEDNN_CPU_FLAGS))
    return system != "Darwin"


@functools.cache
def skip_pooling() -> bool:
    """Whether an inactive max pool is skipped (tf.cond) rather than masked: on CPUs without oneDNN only.

    A performance choice (module docstring); skipped or masked, the outputs
    and gradients are the same.
    """
    accelerators = tf.config.list_logical_devices("GPU") + tf.config.list_logical_devices("TPU")
    return not accelerators and not onednn_on()


def skip_which(skip_inactive: bool, candidates: Sequence) -> list[bool]:
    """Per candidate (a layer, a `LayerGroup` or a list of layers), whether to skip it when off.

    Those with weights, and max pooling where `skip_pooling()`; the other
    weightless ones (average pooling, the identity) run masked (module docstring).
    """
    def skipped(candidate) -> bool:
        roots = candidate if isinstance(candidate, (list, tuple)) else [candidate]
        layers = [layer for root in roots for layer in (root, *nested_layers(root))]
        return any(layer.weights for layer in layers) or (
            skip_pooling() and any(isinstance(layer, keras.layers.MaxPooling2D) for layer in layers))

    return [bool(skip_inactive) and skipped(c) for c in candidates]


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
