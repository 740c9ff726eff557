"""The one module that calls `strategy.run`: host loops around single-replica steps.

Model code and tasks (`tf_oneshot.training.tasks`) know one replica. Training,
stand-alone retraining, evaluation, batch-norm recalibration and scoring all
go through these few functions (Model Garden's task / trainer split, Orbit's
host loop), so distribution, `--steps_per_loop` and XLA are decided here once:

- `train_loop`: a compiled host loop of `steps` replica steps per call (on a
  TPU the host dispatches one program per loop, not per step), each step
  taking the next batch and its slice of per-step tensors (the masks a
  sampler drew on the host);
- `evaluate`: sums of a replica function over a distributed dataset
  (`evaluator`: the same, compiled once for many datasets);
- `run_on_batches`: a replica function over a dataset for its side effects
  (batch-norm recalibration; `batch_runner`: compiled once);
- `SplitFunction`: a replica function on each replica's slice of host arrays,
  outputs gathered (scoring architectures on several devices);
- `per_replica_batch`: the one check that a global batch splits into whole
  ghost batches on every replica.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import tensorflow as tf

from tf_oneshot.errors import UserError
from tf_oneshot.training.distribute import is_tpu

SUM = tf.distribute.ReduceOp.SUM


def _compile(fn: Callable, jit_compile: bool, autograph: bool = True) -> Callable:
    """`tf.function` of a closure; a fresh `functools.partial` per closure.

    TensorFlow's frequent-retracing warning counts traces per code object and
    would take the closures of earlier models for retraces of this one; a
    partial (which has no code object) is counted alone.

    `autograph=False` for a step whose Python control flow is static (an XLA
    replica train step, an evaluation or recalibration step): the model code
    under it never sees autograph anyway (autograph does not convert Keras,
    so nothing a layer calls is converted), and converting the calls in
    between cost ~3 s of the SPOS demo supernet's ~15 s trace
    (`benchmarks/first_step.py`) and ~1.3 s of a masked child's first
    measurement. Host loops and the scorer's bodies loop over `tf.range` and
    keep it.
    """
    return tf.function(functools.partial(fn), jit_compile=jit_compile, autograph=autograph)


def per_replica_batch(strategy: tf.distribute.Strategy, batch_size: int, ghost_batch_size: int) -> int:
    """Examples per replica of a global batch, a whole number of ghost batches (Bender et al. 2018, §3.2).

    Raises:
        UserError: the batch does not split so over the strategy's replicas.
    """
    replicas = strategy.num_replicas_in_sync
    per_replica, rest = divmod(batch_size, replicas)
    if rest or per_replica % ghost_batch_size:
        raise UserError(
            f"--batch_size={batch_size} over {replicas} replicas gives {batch_size / replicas:g} examples per "
            f"replica, which must be a multiple of --ghost_batch_size={ghost_batch_size}."
        )
    return per_replica


def train_loop(
    strategy: tf.distribute.Strategy,
    replica_step: Callable[..., tf.Tensor],
    width: int,
    jit_compile: bool = False,
    counter: tf.Variable | None = None,
) -> Callable:
    """A compiled host loop over `replica_step`.

    Args:
        strategy: the distribution strategy.
        replica_step: `(batch, per_step) -> [width]` float sums of one replica's
            step; `per_step` is the slice for this step of the loop's per-step
            tensors (a nest, possibly empty).
        width: length of the vector of sums.
        jit_compile: compile the replica step with XLA (TPUStrategy always does).
        counter: a variable incremented once per step (the global step).

    Returns:
        `loop(iterator, steps, per_step) -> [width]` sums over replicas and steps,
        where every tensor of `per_step` has a leading axis of at least `steps`.
    """
    if jit_compile and not is_tpu(strategy):
        step_fn = _compile(replica_step, True, autograph=False)
    else:
        # Traced inline in the host loop: a tf.function of its own would nest one more graph, through which
        # every variable and tensor a cond branch captures passes (~1.1 s of the SPOS demo supernet's trace).
        step_fn = tf.autograph.experimental.do_not_convert(replica_step)

    def host_loop(iterator, steps, per_step):
        totals = tf.zeros([width])
        for i in tf.range(steps):
            batch = next(iterator)
            args = tf.nest.map_structure(lambda t, i=i: t[i], per_step)
            totals += strategy.reduce(SUM, strategy.run(step_fn, args=(batch, args)), axis=None)
            if counter is not None:
                counter.assign_add(1)
        return totals

    return _compile(host_loop, False)


def evaluate(
    strategy: tf.distribute.Strategy,
    replica_fn: Callable[..., tf.Tensor],
    dataset: Iterable,
    max_batches: int | None = None,
    compiled: bool = True,
) -> np.ndarray:
    """Sums `replica_fn(batch)` (a vector per replica) over a distributed dataset.

    `compiled=False` runs eagerly on a single device: a few batches on one
    device are faster eager than traced.
    """
    return evaluator(strategy, replica_fn, compiled)(dataset, max_batches)


def evaluator(
    strategy: tf.distribute.Strategy,
    replica_fn: Callable[..., tf.Tensor],
    compiled: bool = True,
) -> Callable[..., np.ndarray]:
    """`evaluate` with its step compiled once: `run(dataset, max_batches=None)` for many datasets.

    A caller that evaluates many models in one set of variables (the ground
    truth's children in one one-shot model) traces once, not once per call.
    """

    def step(batch):
        return strategy.reduce(SUM, strategy.run(replica_fn, args=(batch,)), axis=None)

    if compiled or strategy.num_replicas_in_sync > 1 or is_tpu(strategy):
        step = _compile(step, False, autograph=False)

    def run(dataset: Iterable, max_batches: int | None = None) -> np.ndarray:
        totals = None
        for index, batch in enumerate(dataset):
            if max_batches is not None and index >= max_batches:
                break
            out = step(batch).numpy()
            totals = out if totals is None else totals + out
        return np.zeros(0) if totals is None else totals

    return run


def run_on_batches(strategy: tf.distribute.Strategy, replica_fn: Callable, dataset: Iterable) -> int:
    """Runs `replica_fn(batch)` on every batch of a distributed dataset; returns the batch count."""
    return batch_runner(strategy, replica_fn)(dataset)


def batch_runner(strategy: tf.distribute.Strategy, replica_fn: Callable) -> Callable[[Iterable], int]:
    """`run_on_batches` with its step compiled once: `run(dataset) -> batch count` for many datasets."""

    def step(batch):
        strategy.run(replica_fn, args=(batch,))

    step = _compile(step, False, autograph=False)

    def run(dataset: Iterable) -> int:
        count = 0
        for batch in dataset:
            step(batch)
            count += 1
        return count

    return run


def distribute_dataset(strategy: tf.distribute.Strategy, dataset_fn: Callable) -> Any:
    """Per-replica batches from `dataset_fn(input_context)` (one pipeline per host)."""
    return strategy.distribute_datasets_from_function(dataset_fn)


class SplitFunction:
    """`body(arrays)` on each replica's slice (axis 0) of host arrays, outputs gathered.

    Used to score architectures: architectures, not images, are split over
    replicas, so each sees exactly what it would see on one device.

    Args:
        strategy: the distribution strategy.
        body: `(dict of tensors) -> nest of tensors`, leading axis = this
            replica's share.
        jit_compile: compile `body` with XLA (TPUStrategy always does).
    """

    def __init__(self, strategy: tf.distribute.Strategy, body: Callable, jit_compile: bool = False):
        self.strategy = strategy
        self.replicas = int(strategy.num_replicas_in_sync)
        if self.replicas == 1:
            self._local = tf.function(body, jit_compile=jit_compile)
            self._distributed = None
            return
        self._local = tf.function(body, jit_compile=jit_compile and not is_tpu(strategy))

        @tf.function
        def distributed(arrays):
            out = strategy.run(self._local, args=(arrays,))
            return tf.nest.map_structure(lambda t: strategy.gather(t, axis=0), out)

        self._distributed = distributed

    def __call__(self, arrays: dict[str, np.ndarray]) -> Any:
        if self._distributed is None:
            return self._local({k: tf.constant(v) for k, v in arrays.items()})
        per = next(iter(arrays.values())).shape[0] // self.replicas

        def slices(context):
            r = context.replica_id_in_sync_group
            return {k: tf.constant(v[r * per:(r + 1) * per]) for k, v in arrays.items()}

        return self._distributed(self.strategy.experimental_distribute_values_from_function(slices))

    def tracing_count(self) -> int:
        functions = [f for f in (self._local, self._distributed) if f is not None]
        return sum(f.experimental_get_tracing_count() for f in functions)


def any_replica(strategy: tf.distribute.Strategy, flag: bool) -> bool:
    """Whether `flag` is set on any replica (any worker asked to stop)."""
    fn = _ANY.get(id(strategy))
    if fn is None:

        @tf.function
        def fn(value):
            return strategy.reduce(SUM, strategy.run(lambda: tf.identity(value)), axis=None)

        _ANY[id(strategy)] = fn
    return bool(fn(tf.constant(float(flag))).numpy() > 0)


_ANY: dict[int, Callable] = {}
