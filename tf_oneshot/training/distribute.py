"""The one place that knows about cluster resolvers and strategies.

Model code is single-replica; the trainer calls `strategy.run`. Which strategy
is one choice at start-up (DESIGN.md), made here from `--strategy` / `--tpu`,
and so is the check that the precision and XLA choices fit that strategy: a
conflicting or impossible choice ends with one `UserError` line.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator

import tensorflow as tf

from tf_oneshot.errors import UserError

STRATEGIES = ("default", "one_device", "mirrored", "multi_worker_mirrored", "tpu")
MIXED_PRECISION = ("none", "bfloat16", "float16")
GRAPH_OPTIMIZER = ("auto", "on", "off")
_MIRRORED: dict[tuple[str, ...], tf.distribute.Strategy] = {}


def get_strategy(name: str = "default", tpu: str | None = None,
                 graph_optimizer: str = "auto") -> tf.distribute.Strategy:
    """Builds the distribution strategy named by the flags.

    Args:
        name: one of STRATEGIES. "tpu" is implied by `tpu`.
        tpu: a Cloud TPU (or TPU pod slice) name, "local" on a single-host TPU
            VM, or None.
        graph_optimizer: one of GRAPH_OPTIMIZER (`set_graph_optimizer`).

    Returns:
        The strategy; under it, the trainer creates model, optimizer and data.

    Raises:
        UserError: for an unknown name, a conflicting choice, or hardware that
            is not there.
    """
    if name not in STRATEGIES:
        raise UserError(f"--strategy={name} is unknown; choose one of {', '.join(STRATEGIES)}.")
    if tpu and name not in ("default", "tpu"):
        raise UserError(
            f"--tpu={tpu} conflicts with --strategy={name}; drop one (--tpu implies the TPU strategy)."
        )
    set_graph_optimizer(graph_optimizer, tpu=bool(tpu) or name == "tpu")
    if tpu or name == "tpu":
        return _tpu_strategy(tpu or "local")
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "one_device":
        gpus = tf.config.list_logical_devices("GPU")
        return tf.distribute.OneDeviceStrategy(gpus[0].name if gpus else "/cpu:0")
    if name == "mirrored":
        gpus = tf.config.list_logical_devices("GPU")
        cpus = tf.config.list_logical_devices("CPU")
        # Without GPUs, logical CPUs (split_cpu_for_tests) stand in for them,
        # as in Model Garden's strategy tests.
        devices = tuple(d.name for d in gpus) or tuple(d.name for d in cpus)
        # One instance per device set and process: two MirroredStrategy objects
        # number their collectives alike, and TF's runtime then mixes them up
        # ("Shape mismatch in the collective instance").
        if devices not in _MIRRORED:
            _MIRRORED[devices] = tf.distribute.MirroredStrategy(list(devices))
        return _MIRRORED[devices]
    return _multi_worker_strategy()


def set_graph_optimizer(mode: str = "auto", tpu: bool = False, few_functions: bool = False) -> bool:
    """Turns TF's graph optimizer (grappler) on or off for the functions traced from now on; True if on.

    "auto" turns it off only for a pipeline that traces a few large functions
    (`few_functions`: the demo) on a machine with neither GPU nor TPU. There
    grappler spent ~13 s on the first call of a one-shot model's traced step
    (its passes over a graph with a tf.cond per candidate) and the demo ran in
    458 s instead of 525-585 s. Everywhere else it stays on: without it a
    process's memory grew ~4x faster with every function it traced (0.28 GB
    against 0.07 GB per tiny training run; the test suite's worker reached
    13 GB), later single-path steps were 5-17% slower, GPUs need its layout
    and host-placement passes, and TPUs compile with XLA (README, "Speed").

    Raises:
        UserError: `mode` is not one of GRAPH_OPTIMIZER.
    """
    if mode not in GRAPH_OPTIMIZER:
        raise UserError(f"--graph_optimizer={mode} is unknown; choose one of {', '.join(GRAPH_OPTIMIZER)}.")
    accelerator = tpu or bool(tf.config.list_physical_devices("GPU"))
    on = mode == "on" or (mode == "auto" and (accelerator or not few_functions))
    tf.config.optimizer.set_experimental_options({"disable_meta_optimizer": not on})
    return on


@contextlib.contextmanager
def graph_optimizer(mode: str = "auto", tpu: bool = False, few_functions: bool = False) -> Iterator[bool]:
    """`set_graph_optimizer` for the body only: a command run inside a longer process (the README's
    commands in the tests) leaves the process's setting as it found it."""
    before = tf.config.optimizer.get_experimental_options().get("disable_meta_optimizer", False)
    try:
        yield set_graph_optimizer(mode, tpu, few_functions)
    finally:
        tf.config.optimizer.set_experimental_options({"disable_meta_optimizer": before})


def _tpu_strategy(tpu: str) -> tf.distribute.Strategy:
    """TPUClusterResolver -> connect -> initialize -> TPUStrategy.

    "local" is TF's own spelling for a TPU attached to this VM; any other name
    is looked up through the Cloud TPU API (a pod slice needs its name).
    """
    try:
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu)
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
    except Exception as e:  # noqa: BLE001 - resolver failures come as many types (URLError, HttpError, OpError).
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:160]
        raise UserError(
            f"no TPU {tpu!r} could be reached ({type(e).__name__}: {first}); on a Cloud TPU VM "
            "pass --tpu=local (a pod slice: its name), elsewhere drop --tpu and use "
            "--strategy=default|mirrored."
        ) from None
    return tf.distribute.TPUStrategy(resolver)


def _multi_worker_strategy() -> tf.distribute.Strategy:
    raw = os.environ.get("TF_CONFIG")
    example = (
        '{"cluster": {"worker": ["host1:port", "host2:port"]}, "task": {"type": "worker", "index": 0}}'
    )
    if not raw:
        raise UserError(
            f"--strategy=multi_worker_mirrored needs TF_CONFIG with the cluster and this task, e.g. {example}."
        )
    try:
        spec = json.loads(raw)
        cluster, task = spec["cluster"], spec["task"]
        members = cluster[task["type"]]
        index = int(task["index"])
        if not 0 <= index < len(members) or not set(cluster) <= {"chief", "worker"}:
            raise ValueError
    except (ValueError, KeyError, TypeError):
        raise UserError(
            "TF_CONFIG is not valid for multi_worker_mirrored: it needs JSON with cluster.worker "
            f"(and optionally cluster.chief) and a task.type/task.index inside it, e.g. {example}."
        ) from None
    return tf.distribute.MultiWorkerMirroredStrategy()


# --------------------------------------------------------------- properties
def is_tpu(strategy: tf.distribute.Strategy) -> bool:
    """True for TPUStrategy (XLA everywhere, bfloat16 native)."""
    return isinstance(strategy, tf.distribute.TPUStrategy)


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """True on the one task that writes config, events and real checkpoints."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return True
    task_type, task_id = resolver.task_type, resolver.task_id
    if task_type is None or task_type == "chief":
        return True
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    return task_type == "worker" and task_id == 0 and not has_chief


def task_id(strategy: tf.distribute.Strategy) -> int:
    """This task's index among the workers (0 for single-host strategies)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy) and resolver is not None:
        return int(resolver.task_id or 0)
    return 0


def describe(strategy: tf.distribute.Strategy) -> str:
    """A short human description, for the first log line."""
    kinds = (
        (tf.distribute.MultiWorkerMirroredStrategy, "MultiWorkerMirrored"),
        (tf.distribute.MirroredStrategy, "Mirrored"),
        (tf.distribute.TPUStrategy, "TPU"),
        (tf.distribute.OneDeviceStrategy, "OneDevice"),
    )
    name = next((label for kind, label in kinds if isinstance(strategy, kind)), "default")
    return f"{name}, {strategy.num_replicas_in_sync} replica(s)"


def _replica_device_types(strategy: tf.distribute.Strategy) -> set[str]:
    devices = getattr(strategy.extended, "worker_devices", None) or ("/cpu:0",)
    return {tf.DeviceSpec.from_string(d).device_type or "CPU" for d in devices}


def check_compatible(strategy: tf.distribute.Strategy, mixed_precision: str, jit_compile: bool) -> None:
    """Rejects precision / XLA choices the strategy's devices cannot run.

    Raises:
        UserError: float16 on TPU (TPUs have bfloat16, not float16 units), or
            XLA under a mirrored strategy over CPU devices (TF cannot compile
            the cross-device all-reduce there).
    """
    if mixed_precision not in MIXED_PRECISION:
        raise UserError(
            f"--mixed_precision={mixed_precision} is invalid; choose one of {', '.join(MIXED_PRECISION)}."
        )
    if is_tpu(strategy) and mixed_precision == "float16":
        raise UserError(
            "--mixed_precision=float16 is for GPUs; TPUs compute in bfloat16: pass "
            "--mixed_precision=bfloat16 (or none)."
        )
    multi = isinstance(
        strategy, (tf.distribute.MirroredStrategy, tf.distribute.MultiWorkerMirroredStrategy)
    )
    if jit_compile and multi and "GPU" not in _replica_device_types(strategy):
        raise UserError(
            f"--jit_compile cannot compile a {describe(strategy)} step on CPU devices; "
            "drop --jit_compile, or use --strategy=default to check XLA compilation on CPU."
        )


def split_cpu_for_tests(num_devices: int = 2) -> None:
    """Splits the host CPU into logical devices so mirrored runs without GPUs.

    Must run before TensorFlow initializes its devices (before the first op),
    so tests call it at the top of a fresh process.

    Raises:
        RuntimeError: when TensorFlow's devices are already initialized with
            another number of logical CPUs.
    """
    cpus = tf.config.list_physical_devices("CPU")
    try:
        tf.config.set_logical_device_configuration(
            cpus[0], [tf.config.LogicalDeviceConfiguration()] * num_devices
        )
    except RuntimeError:
        if len(tf.config.list_logical_devices("CPU")) != num_devices:
            raise RuntimeError(
                "split_cpu_for_tests must run before TensorFlow initializes its devices; "
                "call it first in a fresh process."
            ) from None


def replica_local_statistics(next_creator, **kwargs):
    """Variable creator: the model's non-trainable float state (batch-norm moving
    statistics, the recalibration counter) becomes replica-local, read across
    replicas as its mean (or first copy).

    Keras 3 creates moving statistics with aggregation "none", which
    MirroredStrategy refuses to assign in replica context; an on-write
    aggregation would put a cross-replica merge inside the model's tf.cond op
    skipping and batch-norm modes, which TF rejects and replicas might not even
    agree on. On-read sync (Keras 2's batch-norm recipe) updates each replica's
    copy locally; the updates are linear, so the mean of the copies follows the
    single-replica trajectory exactly.
    """
    dtype = kwargs.get("dtype")
    floating = dtype is None or tf.as_dtype(dtype).is_floating
    if (not kwargs.get("trainable", True) and floating
            and kwargs.get("synchronization") in (None, tf.VariableSynchronization.AUTO)):
        kwargs["synchronization"] = tf.VariableSynchronization.ON_READ
        if kwargs.get("aggregation") in (None, tf.VariableAggregation.NONE):
            kwargs["aggregation"] = tf.VariableAggregation.MEAN
    return next_creator(**kwargs)
