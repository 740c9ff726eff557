"""Trains the one-shot model (Bender et al. 2018, §3.2 and §4.1) under any strategy.

Model code knows one replica; only this module calls `strategy.run`. Each
replica draws the *global* path-dropout pattern from (seed, global step) and
keeps the ghost batches that fall on it, so 1 replica or N replicas see the
same masks for the same global batch (§3.2: one pattern per ghost batch). The
data loss is averaged over the global batch and the masked L2 term divided by
the number of replicas, so the gradients summed across replicas equal the
single-replica ones (§4.1: synchronous SGD over 16 workers).

A model_dir holds `config.json` (the resolved configuration, written once),
`checkpoints/` (tf.train.CheckpointManager over model, optimizer and the
global step) and `train/` (TensorBoard events). Running again resumes from the
last checkpoint: the global step is checkpointed and alone drives the
learning-rate and path-dropout schedules, so both resume in place, also when
float16 loss scaling skipped steps.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import os
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Callable, Iterator

import keras
import numpy as np
import tensorflow as tf

from tf_oneshot import data, distribute
from tf_oneshot.config import TrainConfig
from tf_oneshot.errors import UserError
from tf_oneshot.io_utils import atomic_write_json, read_json
from tf_oneshot.layers.path_dropout import PathDropout
from tf_oneshot.oneshot_model import OneShotModel
from tf_oneshot.search_spaces import CellSpace, space_from_config

MODEL_DIR_KIND = "tf_oneshot.oneshot"
CONFIG_FILE = "config.json"
# Per-step sums reduced across replicas: data loss, correct, examples, L2, skipped steps.
_TOTALS = 5


@dataclasses.dataclass
class LoadedOneShot:
    """A trained one-shot model restored from a model_dir."""

    config: TrainConfig
    space: CellSpace
    model: OneShotModel
    step: int


# ----------------------------------------------------------------- model_dir
def read_model_dir(model_dir: str) -> tuple[TrainConfig, CellSpace] | None:
    """Returns the config and space recorded in `model_dir`, or None if it has none.

    Raises:
        UserError: if the directory holds something that is not ours.
    """
    path = os.path.join(model_dir, CONFIG_FILE)
    if not tf.io.gfile.exists(path):
        return None
    record = read_json(path, "model_dir config")
    if not isinstance(record, dict) or record.get("kind") != MODEL_DIR_KIND:
        raise UserError(
            f"{model_dir} is not a tf_oneshot one-shot model_dir ({CONFIG_FILE} has another kind); "
            "pass the --model_dir that `tf-oneshot train` wrote."
        )
    return TrainConfig.from_json(record["config"]), space_from_config(record["space"])


def _prepare_model_dir(config: TrainConfig, space: CellSpace, model_dir: str, write: bool = True) -> None:
    recorded = read_model_dir(model_dir)
    if recorded is None:
        if not write:  # A non-chief worker: the chief writes config.json.
            return
        if tf.io.gfile.exists(os.path.join(model_dir, "checkpoints")):
            raise UserError(
                f"{model_dir} has checkpoints but no {CONFIG_FILE}; use a new --model_dir."
            )
        atomic_write_json(
            os.path.join(model_dir, CONFIG_FILE),
            {"kind": MODEL_DIR_KIND, "version": 1, "config": config.to_json(),
             "space": space.to_config()},
        )
        return
    old_config, old_space = recorded
    differences = config.architecture_differences(old_config)
    if differences or old_space != space:
        detail = "; ".join(differences) or "the network differs"
        raise UserError(
            f"--model_dir={model_dir} was trained with {detail}; use a new --model_dir "
            "or the same architecture flags."
        )


def _restore(checkpoint: tf.train.Checkpoint, path: str | None, partial: bool = False) -> None:
    if path is None:
        return
    try:
        status = checkpoint.restore(path).assert_existing_objects_matched()
        if partial:  # The optimizer's slots stay in the file, unread and unmentioned.
            status.expect_partial()
    except (tf.errors.OpError, ValueError, AssertionError, IndexError) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:160]
        raise UserError(
            f"checkpoint {path} cannot be read ({first}); move that checkpoint's files aside to "
            "resume from an earlier one, or use a new --model_dir."
        ) from None


# ------------------------------------------------------------------ building
def learning_rate_schedule(config: TrainConfig) -> Callable[[tf.Tensor], tf.Tensor]:
    """Learning rate as a function of the global step (§4.1: 0.1 to start)."""
    if config.lr_schedule == "cosine":
        return keras.optimizers.schedules.CosineDecay(config.learning_rate, config.train_steps)
    return lambda step: tf.constant(config.learning_rate, tf.float32)


def build_oneshot(config: TrainConfig, space: CellSpace, per_replica_batch: int) -> OneShotModel:
    """Builds the one-shot model and creates its weights with a dummy batch."""
    model = OneShotModel(space, ghost_batch_size=config.ghost_batch_size)
    masks = _tile(space.all_on_masks(), per_replica_batch // config.ghost_batch_size)
    model({"images": tf.zeros((per_replica_batch, *space.image_shape)), **masks}, training=False)
    return model


def _tile(masks: dict[str, np.ndarray], count: int) -> dict[str, tf.Tensor]:
    return {k: tf.constant(np.repeat(v[None], count, axis=0)) for k, v in masks.items()}


def _check_batch(config: TrainConfig, strategy: tf.distribute.Strategy) -> int:
    replicas = strategy.num_replicas_in_sync
    per_replica, rest = divmod(config.batch_size, replicas)
    if rest or per_replica % config.ghost_batch_size:
        raise UserError(
            f"--batch_size={config.batch_size} over {replicas} replicas gives {config.batch_size / replicas:g} "
            f"examples per replica, which must be a multiple of --ghost_batch_size={config.ghost_batch_size}."
        )
    return per_replica


@contextlib.contextmanager
def _dtype_policy(mixed_precision: str) -> Iterator[None]:
    """Builds layers under a mixed policy without leaking it to later models.

    Variables stay float32 under "mixed_*" policies, so a checkpoint trained in
    bfloat16 or float16 loads into a float32 model for search and retraining.
    """
    previous = keras.config.dtype_policy()
    if mixed_precision != "none":
        keras.config.set_dtype_policy(f"mixed_{mixed_precision}")
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def _replica_local_statistics(next_creator, **kwargs):
    """Makes the model's non-trainable float state (batch-norm moving statistics,
    the recalibration counter) replica-local, read across replicas as its mean
    (or first copy).

    Keras 3 creates moving statistics with aggregation "none", which
    MirroredStrategy refuses to assign in replica context; an on-write
    aggregation would put a cross-replica merge inside the model's tf.cond op
    skipping (choice_block.py) and tf.switch_case BN modes, which TF rejects and
    replicas might not even agree on. On-read sync (Keras 2's batch-norm recipe)
    updates each replica's copy locally; the updates are linear, so the mean of
    the copies follows the single-replica trajectory exactly.
    """
    dtype = kwargs.get("dtype")
    floating = dtype is None or tf.as_dtype(dtype).is_floating
    if (not kwargs.get("trainable", True) and floating
            and kwargs.get("synchronization") in (None, tf.VariableSynchronization.AUTO)):
        kwargs["synchronization"] = tf.VariableSynchronization.ON_READ
        if kwargs.get("aggregation") in (None, tf.VariableAggregation.NONE):
            kwargs["aggregation"] = tf.VariableAggregation.MEAN
    return next_creator(**kwargs)


def _make_optimizer(config: TrainConfig, step: tf.Variable) -> keras.optimizers.Optimizer:
    """SGD with Nesterov momentum (§4.1), its rate read from the global step.

    The rate is a callable of our own step variable, not of the optimizer's
    iteration count, which LossScaleOptimizer does not advance on a skipped step.
    """
    schedule = learning_rate_schedule(config)
    optimizer = keras.optimizers.SGD(
        learning_rate=lambda: schedule(step), momentum=config.momentum, nesterov=True
    )
    if config.mixed_precision == "float16":
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    return optimizer


def agree_on_finite(grads: list[tf.Tensor]) -> tuple[list[tf.Tensor], tf.Tensor]:
    """Makes every replica see non-finite gradients if any replica has them.

    Keras' LossScaleOptimizer decides to skip a step from the first replica's
    gradients *before* they are all-reduced; a replica-local overflow would then
    be applied as inf. One scalar all-reduce makes the decision global.

    Returns:
        The gradients (NaN everywhere if any replica overflowed) and a float
        that is 1.0 when the step's gradients are finite on every replica.
    """
    local_bad = tf.cast(
        tf.logical_not(tf.reduce_all([tf.reduce_all(tf.math.is_finite(g)) for g in grads if g is not None])),
        tf.float32,
    )
    bad = tf.distribute.get_replica_context().all_reduce(tf.distribute.ReduceOp.SUM, local_bad)
    finite = tf.cast(tf.equal(bad, 0.0), tf.float32)
    poison = tf.where(finite > 0, 1.0, float("nan"))
    return [None if g is None else g * tf.cast(poison, g.dtype) for g in grads], finite


# ------------------------------------------------------------------ training
class _Preemption:
    """Turns SIGTERM (Cloud TPU preemption, maintenance) into a clean stop.

    PreemptionCheckpointHandler does nothing on Cloud TPU VMs (DESIGN.md), so
    the trainer saves a checkpoint itself between host loops.
    """

    def __init__(self) -> None:
        self.requested = False
        self._previous = None

    def __enter__(self) -> _Preemption:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        self.requested = True

    def __exit__(self, *exc) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)


class _Checkpoints:
    """Saves to model_dir on the chief and to a scratch dir on other workers.

    Every MultiWorkerMirrored worker must take part in a save; only the chief's
    copy is kept (the TF multi-worker guide's recipe). A save never reuses the
    number of the latest checkpoint, so a kill during it leaves that one whole:
    TF writes data and index first and then swaps the `checkpoint` state file.
    """

    def __init__(self, checkpoint: tf.train.Checkpoint, model_dir: str, step: tf.Variable,
                 keep: int, chief: bool) -> None:
        self._scratch = None if chief else tempfile.mkdtemp(prefix="tf_oneshot_worker_ckpt_")
        directory = os.path.join(model_dir, "checkpoints")
        self.manager = tf.train.CheckpointManager(
            checkpoint, self._scratch or directory, max_to_keep=keep, step_counter=step
        )
        self.latest = tf.train.latest_checkpoint(directory)
        self.saved_step = _checkpoint_step(self.latest)

    def save(self, step: int) -> None:
        if step == self.saved_step:
            return
        self.manager.save(checkpoint_number=step)
        self.saved_step = step

    def close(self) -> None:
        if self._scratch:
            shutil.rmtree(self._scratch, ignore_errors=True)


def _checkpoint_step(path: str | None) -> int | None:
    return None if path is None else int(path.rsplit("-", 1)[-1])


def train(
    config: TrainConfig,
    model_dir: str,
    strategy: tf.distribute.Strategy | None = None,
    log: Callable[[str], None] = print,
) -> dict:
    """Trains (or resumes training of) the one-shot model up to `config.train_steps`.

    Args:
        config: the run's configuration.
        model_dir: where config, checkpoints and TensorBoard events go.
        strategy: a tf.distribute strategy (default: the default strategy).
        log: receives one progress line at a time; other workers than the
            chief prefix theirs with "[worker N] ".

    Returns:
        A dict with the final `step`, training `loss` and `accuracy` of the last
        logging window, all-on `val_accuracy` (when training completed), and
        `preempted`.

    Raises:
        UserError: for a model_dir trained with another architecture
            configuration, a corrupt checkpoint, bad data settings, or
            precision / XLA choices the strategy's devices cannot run.
    """
    strategy = strategy or tf.distribute.get_strategy()
    distribute.check_compatible(strategy, config.mixed_precision, config.jit_compile)
    chief = distribute.is_chief(strategy)
    if not chief:
        log = _prefixed(log, f"[worker {distribute.task_id(strategy)}] ")
    info = data.dataset_info(config.dataset, config.data_dir)
    space = config.space(info.image_shape, info.num_classes, info.stem_stride)
    _prepare_model_dir(config, space, model_dir, write=chief)
    per_replica = _check_batch(config, strategy)
    with _Preemption() as preemption:  # From here on, SIGTERM ends the run cleanly.
        return _train(config, space, model_dir, strategy, per_replica, chief, preemption, log)


def _prefixed(log: Callable[[str], None], prefix: str) -> Callable[[str], None]:
    return lambda line: log(prefix + line)


def _train(config, space, model_dir, strategy, per_replica, chief, preemption, log) -> dict:
    replicas = strategy.num_replicas_in_sync
    local_ghosts = per_replica // config.ghost_batch_size
    loss_scaling = config.mixed_precision == "float16"

    # The same seed gives the same initial weights under every strategy (and
    # the checkpoint overrides them on resume).
    keras.utils.set_random_seed(config.seed)
    with _dtype_policy(config.mixed_precision), strategy.scope():
        global_step = tf.Variable(
            0, dtype=tf.int64, trainable=False, name="global_step",
            aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA,
        )
        with tf.variable_creator_scope(_replica_local_statistics):
            model = build_oneshot(config, space, per_replica)
        optimizer = _make_optimizer(config, global_step)
        # Built eagerly inside the scope: a first build inside tf.function fails
        # under MirroredStrategy (DESIGN.md).
        optimizer.build(model.trainable_variables)
        checkpoint = tf.train.Checkpoint(model=model, optimizer=optimizer, step=global_step)
    checkpoints = _Checkpoints(checkpoint, model_dir, global_step, config.keep_checkpoints, chief)
    _restore(checkpoint, checkpoints.latest)
    start = int(global_step.numpy())
    sampler = PathDropout(
        rate=config.dropout_rate, total_steps=config.train_steps,
        schedule=config.dropout_schedule, all_dropped=config.all_dropped,
    )
    all_on = {k: tf.constant(v) for k, v in space.all_on_masks().items()}
    seed = tf.constant([config.seed, 0], tf.int64)

    def replica_step(images, labels, skip):
        # Bender et al. 2018, §3.2: one path-dropout pattern per ghost batch,
        # drawn for the whole global batch from the global step; this replica
        # keeps its own slice, so the split over replicas changes nothing.
        masks = sampler(all_on, step=global_step.read_value(), seed=seed, num_ghosts=local_ghosts * replicas)
        replica = tf.distribute.get_replica_context().replica_id_in_sync_group
        mine = {k: tf.gather(v, replica * local_ghosts + tf.range(local_ghosts)) for k, v in masks.items()}
        with tf.GradientTape() as tape:
            # Mixed precision: the network computes in bfloat16/float16, the
            # loss in float32.
            logits = tf.cast(model({"images": images, **mine}, training=True, skip_inactive=skip), tf.float32)
            per_example = keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True)
            data_loss = tf.nn.compute_average_loss(per_example, global_batch_size=config.batch_size)
            # §3.2 "Preventing over-regularization": L2 only on active paths,
            # weighted by the global masks, split evenly over replicas.
            l2 = tf.cast(config.weight_decay * model.masked_l2(masks["input_mask"], masks["op_mask"]), tf.float32)
            loss = data_loss + l2 / replicas
            scaled = optimizer.scale_loss(loss) if loss_scaling else loss
        grads = tape.gradient(scaled, model.trainable_variables)
        finite = tf.constant(1.0)
        if loss_scaling:
            grads, finite = agree_on_finite(grads)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        correct = tf.reduce_sum(tf.cast(tf.equal(tf.argmax(logits, -1, output_type=tf.int32), labels), tf.float32))
        return tf.stack([
            tf.reduce_sum(per_example), correct, tf.cast(tf.size(labels), tf.float32),
            l2 / replicas, (1.0 - finite) / replicas,
        ])

    # TPUStrategy compiles the whole replica step with XLA anyway.
    jit = config.jit_compile and not distribute.is_tpu(strategy)

    def make_host_loop(skip: bool):
        step_fn = tf.function(functools.partial(replica_step, skip=skip), jit_compile=jit)

        @tf.function
        def host_loop(iterator, steps):
            # --steps_per_loop steps per host call: on TPU the host dispatches
            # one compiled loop instead of a program per step.
            totals = tf.zeros([_TOTALS])
            for _ in tf.range(steps):
                images, labels = next(iterator)
                totals += strategy.reduce(
                    tf.distribute.ReduceOp.SUM, strategy.run(step_fn, args=(images, labels)), axis=None
                )
                global_step.assign_add(1)
            return totals

        return host_loop

    # Two compiled loops at most: without op skipping while few ops are dropped,
    # with it once the dropout ramp makes it pay (`skips_pay`).
    host_loops = {skip: make_host_loop(skip) for skip in (False, True)}

    # A resumed run reshuffles from its own seed rather than replaying the data
    # order of the first run's first steps. Each input pipeline (one per host)
    # reads its own shard and yields per-replica batches.
    def dataset_fn(context: tf.distribute.InputContext) -> tf.data.Dataset:
        return data.make_dataset(
            config.dataset, "train", config.batch_size, training=True, data_dir=config.data_dir,
            seed=config.seed * 1_000_003 + start, input_context=context,
        )

    iterator = iter(strategy.distribute_datasets_from_function(dataset_fn))
    writer = (tf.summary.create_file_writer(os.path.join(model_dir, "train")) if chief
              else tf.summary.create_noop_writer())
    stop_agreed = _stop_agreement(strategy)
    result = {"step": start, "loss": float("nan"), "accuracy": float("nan"), "preempted": False}
    if start >= config.train_steps:
        log(f"model_dir already trained to step {start} (--train_steps={config.train_steps}).")
    else:
        log(f"training {space.name} one-shot model from step {start} to {config.train_steps} "
            f"({distribute.describe(strategy)}, {local_ghosts} ghost batch(es) of "
            f"{config.ghost_batch_size} per replica, {config.steps_per_loop} step(s) per host loop)")
    step = start
    window = np.zeros(_TOTALS)
    window_steps = 0
    tic = time.perf_counter()
    try:
        with writer.as_default():
            while step < config.train_steps and not stop_agreed(preemption.requested):
                n = _next_chunk(step, config)
                host_loop = host_loops[skips_pay(config, step, local_ghosts)]
                window += host_loop(iterator, tf.constant(n)).numpy()
                window_steps += n
                step += n
                if step % config.log_every == 0 or step == config.train_steps:
                    result = _log_window(result, window, window_steps, step, tic, config, optimizer, log)
                    window, window_steps, tic = np.zeros(_TOTALS), 0, time.perf_counter()
                if step % config.checkpoint_every == 0 or step == config.train_steps:
                    checkpoints.save(step)
                    writer.flush()  # summaries up to a checkpoint survive a kill after it
            if step < config.train_steps:  # Preempted: every worker saves, then all stop.
                checkpoints.save(step)
                log(f"SIGTERM received: checkpoint saved at step {step}; run again to resume.")
                result["preempted"] = True
            result["step"] = step
            if not result["preempted"]:
                checkpoints.save(step)
                result["val_accuracy"] = evaluate_all_on(model, space, config, strategy=strategy)
                tf.summary.scalar("validation/all_on_accuracy", result["val_accuracy"], step=step)
                log(f"step {step}: all-on validation accuracy {result['val_accuracy']:.4f}")
        writer.flush()
    finally:
        checkpoints.close()
    return result


def _stop_agreement(strategy: tf.distribute.Strategy) -> Callable[[bool], bool]:
    """Whether any worker was asked to stop: one worker alone must not leave
    the others waiting in an all-reduce (MultiWorkerMirrored)."""
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return bool

    @tf.function
    def any_worker(flag):
        per_replica = strategy.run(lambda: tf.identity(flag))
        return strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None)

    return lambda requested: bool(any_worker(tf.constant(float(requested))).numpy() > 0)


def _next_chunk(step: int, config: TrainConfig) -> int:
    """Steps in the next host loop: stop at log, checkpoint and final boundaries."""
    boundaries = [config.train_steps]
    for every in (config.log_every, config.checkpoint_every):
        boundaries.append((step // every + 1) * every)
    return min(config.steps_per_loop, min(boundaries) - step)


def skips_pay(config: TrainConfig, step: int, ghosts: int) -> bool:
    """Whether the step should skip (tf.cond) the ops dropped in all its ghost batches.

    An op is skipped only when dropped in each of a replica's `ghosts` ghost
    batches, with probability p^ghosts for p = r^(1/7) on the ramp (§3.2). A
    tf.cond around every op costs ~30% of a step on CPU when nothing is
    skipped, so skipping starts once that expected share reaches
    `config.skip_threshold`. Skipped or masked, a dropped op gets no gradient
    and no decay: only its batch-norm moving statistics differ (they follow
    the data when the op runs masked), and search recalibrates or ignores them.
    """
    return drop_probability(config, step) ** ghosts >= config.skip_threshold


def drop_probability(config: TrainConfig, step: int, paths: int = 7) -> float:
    """Per-path drop probability r^(1/k) at `step`, ramped linearly (§3.2, §4.1)."""
    drop = config.dropout_rate ** (1 / paths)
    if config.dropout_schedule == "linear":
        drop *= min(step / config.train_steps, 1.0)
    return drop


def _log_window(result, window, steps, step, tic, config, optimizer, log) -> dict:
    loss, accuracy = window[0] / window[2], window[1] / window[2]
    l2 = window[3] / steps
    skipped = int(round(window[4]))
    lr = float(keras.ops.convert_to_numpy(optimizer.learning_rate))
    drop = drop_probability(config, step)
    scalars = {"loss": loss, "accuracy": accuracy, "l2": l2, "learning_rate": lr,
               "drop_probability_ops": drop}
    if config.mixed_precision == "float16":
        scalars["loss_scale"] = float(optimizer.dynamic_scale.numpy())
        scalars["skipped_steps"] = skipped
    for name, value in scalars.items():
        tf.summary.scalar(f"train/{name}", value, step=step)
    rate = steps * config.batch_size / max(time.perf_counter() - tic, 1e-9)
    extra = f" skipped {skipped}" if skipped else ""
    log(f"step {step}/{config.train_steps}: loss {loss:.4f} acc {accuracy:.4f} l2 {l2:.4f} "
        f"lr {lr:.4g} drop(k=7) {drop:.3f}{extra} ({rate:.0f} img/s)")
    return {**result, "loss": float(loss), "accuracy": float(accuracy)}


def evaluate_all_on(
    model: OneShotModel,
    space: CellSpace,
    config: TrainConfig,
    batches: int | None = None,
    strategy: tf.distribute.Strategy | None = None,
) -> float:
    """Validation accuracy of the all-on network, batch statistics on the fly (§3.2).

    Runs through `strategy.run` like training, so it also works where variables
    live on TPU; each replica scores whole ghost batches.
    """
    strategy = strategy or tf.distribute.get_strategy()
    info = data.dataset_info(config.dataset, config.data_dir)
    unit = config.ghost_batch_size * strategy.num_replicas_in_sync
    batch = min(config.batch_size, info.num_examples["validation"] // unit * unit)
    if batch == 0:
        raise UserError(
            f"the {info.num_examples['validation']} validation examples of {config.dataset} are fewer "
            f"than one ghost batch per replica ({unit}); use a smaller --ghost_batch_size."
        )
    masks = _tile(space.all_on_masks(), batch // unit)

    def dataset_fn(context):
        return data.make_dataset(config.dataset, "validation", batch, training=False,
                                 data_dir=config.data_dir, input_context=context)

    def replica_eval(images, labels):
        logits = model({"images": images, **masks}, training=False)
        hits = tf.equal(tf.argmax(logits, -1, output_type=tf.int32), labels)
        return tf.stack([tf.reduce_sum(tf.cast(hits, tf.float32)), tf.cast(tf.size(labels), tf.float32)])

    def eval_step(images, labels):
        return strategy.reduce(tf.distribute.ReduceOp.SUM, strategy.run(replica_eval, args=(images, labels)),
                               axis=None)

    if strategy.num_replicas_in_sync > 1 or distribute.is_tpu(strategy):
        eval_step = tf.function(eval_step)  # a few batches on one device: eager beats tracing

    dataset = strategy.distribute_datasets_from_function(dataset_fn)
    totals = np.zeros(2)
    for step, (images, labels) in enumerate(dataset):
        if step >= (batches or config.eval_batches):
            break
        totals += eval_step(images, labels).numpy()
    return float(totals[0] / max(totals[1], 1))


# ------------------------------------------------------------------- loading
def load_oneshot(
    model_dir: str, batch_size: int | None = None, strategy: tf.distribute.Strategy | None = None
) -> LoadedOneShot:
    """Restores the latest checkpoint of a trained one-shot model_dir.

    Args:
        model_dir: a directory written by `train`.
        batch_size: the batch the model is first called with (default: the
            training batch); any multiple of the ghost batch size works later.
        strategy: builds the model under this strategy's scope (default: the
            current one), with replica-local batch-norm statistics as in training.

    Raises:
        UserError: for a missing or foreign model_dir, no checkpoint, or a corrupt one.
    """
    if not tf.io.gfile.isdir(model_dir):
        raise UserError(f"--model_dir={model_dir} does not exist; train one with `tf-oneshot train`.")
    recorded = read_model_dir(model_dir)
    if recorded is None:
        raise UserError(
            f"{model_dir} is not a tf_oneshot one-shot model_dir (no {CONFIG_FILE}); "
            "pass the --model_dir that `tf-oneshot train` wrote."
        )
    config, space = recorded
    strategy = strategy or tf.distribute.get_strategy()
    with strategy.scope(), tf.variable_creator_scope(_replica_local_statistics):
        model = build_oneshot(config, space, batch_size or config.batch_size)
    latest = tf.train.latest_checkpoint(os.path.join(model_dir, "checkpoints"))
    if latest is None:
        raise UserError(f"{model_dir} has no checkpoint yet; run `tf-oneshot train` first.")
    _restore(tf.train.Checkpoint(model=model), latest, partial=True)
    return LoadedOneShot(config=config, space=space, model=model, step=_checkpoint_step(latest))
