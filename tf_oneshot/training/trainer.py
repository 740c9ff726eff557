"""Trains the one-shot model (Bender et al. 2018, §3.2 and §4.1) under any strategy.

The task (`tasks.OneShotTask`) knows one replica; `strategy_loop` runs it.
A sampling rule (`tf_oneshot.training.samplers`: path dropout, uniform single path,
uniform-constraint, size-proportional) draws the paths of every ghost batch of
the global batch from (seed, step), so 1 replica or N replicas, and a resumed
run, train on the same paths.

The model_dir (`tf_oneshot.training.model_dir`) records the config and the space once;
running again resumes from the last checkpoint: the global step is
checkpointed and alone drives the learning-rate and sampling schedules, so
both resume in place, also when float16 loss scaling skipped steps.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from tf_oneshot.errors import UserError
from tf_oneshot.search_spaces.sharing import budget_factor
from tf_oneshot.search_spaces.space_config import build_space
from tf_oneshot.training import data, distribute, optimizers, strategy_loop
from tf_oneshot.training.config import TrainConfig
from tf_oneshot.training.model_dir import LoadedOneShot, ModelDir, load_oneshot, restore, step_of
from tf_oneshot.training.optimizers import Segment
from tf_oneshot.training.preemption import Preemption, signal_name
from tf_oneshot.training.samplers import (
    ArchitectureSampler,
    PathDropoutSampler,
    Sampler,
    draws_per_step,
    global_masks,
    make_sampler,
    resolve_path_per,
)
from tf_oneshot.training.tasks import TOTALS, OneShotTask, evaluation_sums

# Architectures whose mean accuracy summarizes a single-path supernet at the end of training.
SAMPLED_ARCHITECTURES = 4
SAMPLED_ARCHITECTURES_STREAM = 7_919  # their draws' own random stream, apart from training's

__all__ = ["LoadedOneShot", "ModelDir", "Segment", "all_on_metrics", "evaluate_all_on", "evaluate_sampled",
           "load_oneshot", "make_run_sampler", "sampled_metrics", "train", "training_steps"]


# ------------------------------------------------------------------ building
def _tile(masks: dict[str, np.ndarray], count: int) -> dict[str, tf.Tensor]:
    return {k: tf.constant(np.repeat(v[None], count, axis=0)) for k, v in masks.items()}


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


# ------------------------------------------------------------------ training
class _Checkpoints:
    """Saves to model_dir on the chief and to a scratch dir on other workers.

    Every MultiWorkerMirrored worker must take part in a save; only the chief's
    copy is kept (the TF multi-worker guide's recipe). A save never reuses the
    number of the latest checkpoint, so a kill during it leaves that one whole:
    TF writes data and index first and then swaps the `checkpoint` state file.
    """

    def __init__(self, checkpoint: tf.train.Checkpoint, model_dir: ModelDir, step: tf.Variable,
                 keep: int, chief: bool) -> None:
        self._scratch = None if chief else tempfile.mkdtemp(prefix="tf_oneshot_worker_ckpt_")
        self.manager = model_dir.checkpoint_manager(checkpoint, step, keep, directory=self._scratch)
        self.latest = model_dir.latest_checkpoint()
        self.saved_step = step_of(self.latest)

    def save(self, step: int) -> None:
        if step == self.saved_step:
            return
        self.manager.save(checkpoint_number=step)
        self.saved_step = step

    def close(self) -> None:
        if self._scratch:
            shutil.rmtree(self._scratch, ignore_errors=True)


def make_run_sampler(config: TrainConfig, space, pool=None) -> Sampler:
    """The sampling rule of a run (`--sampler`, default: the space's own).

    Raises:
        UserError: partial weight sharing with a rule that draws no whole
            child per ghost batch (each child must read its own copy).
    """
    sampler = make_sampler(
        config.sampler.name, space, seed=config.sampler_seed, total_steps=config.train_steps,
        dropout_rate=config.sampler.dropout_rate, dropout_schedule=config.sampler.dropout_schedule,
        all_dropped=config.sampler.all_dropped, constraints=config.sampler.constraints, pool=pool,
    )
    if config.space.sharing != "full" and not isinstance(sampler, ArchitectureSampler):
        raise UserError(f"--sharing={config.space.sharing} trains each child on its own copy of the weights, so "
                        "it needs a sampler that draws whole children (uniform, cyclic, shuffled, ...), not "
                        f"{sampler.name}.")
    return sampler


def training_steps(config: TrainConfig, space) -> int:
    """The steps a run trains: --train_steps, times m under group sharing so each group gets them all (§4.2)."""
    return config.train_steps * budget_factor(space)


def train(
    config: TrainConfig,
    model_dir: str | ModelDir,
    strategy: tf.distribute.Strategy | None = None,
    log: Callable[[str], None] = print,
    *,
    sampler: Sampler | None = None,
    segment: Segment | None = None,
) -> dict:
    """Trains (or resumes training of) the one-shot model up to `training_steps(config, space)`.

    Args:
        config: the run's configuration.
        model_dir: where config, checkpoints and TensorBoard events go (a path,
            or the `ModelDir` of an earlier run).
        strategy: a tf.distribute strategy (default: the default strategy).
        log: receives one progress line at a time; other workers than the
            chief prefix theirs with "[worker N] ".
        sampler: the sampling rule (default: `make_run_sampler(config, space)`),
            e.g. one restricted to a candidate pool (NAO-V2 §4.2).
        segment: train only up to `segment.end`, with its learning-rate cycle
            and slot reset (NAO-V2 §4.3); no all-on evaluation at its end.

    Returns:
        A dict with the final `step`, training `loss` and `accuracy` of the last
        logging window, `val_accuracy` (all-on, or of sampled architectures for a
        single-path sampler; when training completed) with `val_accuracy_of`, and
        `preempted`.

    Raises:
        UserError: for a model_dir trained with another architecture
            configuration, a corrupt checkpoint, bad data or sampler settings,
            or precision / XLA choices the strategy's devices cannot run.
    """
    strategy = strategy or tf.distribute.get_strategy()
    distribute.check_compatible(strategy, config.mixed_precision, config.jit_compile)
    chief = distribute.is_chief(strategy)
    if not chief:
        log = _prefixed(log, f"[worker {distribute.task_id(strategy)}] ")
    info = data.dataset_info(config.data.dataset, config.data.data_dir)
    space = build_space(config.space, info.image_shape, info.num_classes, info.stem_stride)
    model_dir = ModelDir.create(str(model_dir), config, space, write=chief)
    config = config.replace(train_steps=training_steps(config, space))  # the recorded config keeps --train_steps
    sampler = sampler or make_run_sampler(config, space)
    per_replica = strategy_loop.per_replica_batch(strategy, config.data.batch_size,
                                                  config.data.ghost_batch_size)
    # From here on, SIGTERM ends the run cleanly (PreemptionCheckpointHandler
    # does nothing on Cloud TPU VMs, DESIGN.md: the loop saves between host loops).
    with Preemption() as preemption:
        return _train(config, space, sampler, model_dir, strategy, per_replica, chief, preemption, log, segment)


def _prefixed(log: Callable[[str], None], prefix: str) -> Callable[[str], None]:
    return lambda line: log(prefix + line)


def _log_start(config, space, sampler, strategy, start: int, path_per: str, local_ghosts: int,
               log: Callable[[str], None]) -> None:
    if start >= config.train_steps:
        log(f"model_dir already trained to step {start} (--train_steps={config.train_steps}).")
    else:
        log(f"training {space.name} one-shot model ({sampler.name} sampling, a path per {path_per}) from step "
            f"{start} to {config.train_steps} ({distribute.describe(strategy)}, {local_ghosts} ghost batch(es) "
            f"of {config.data.ghost_batch_size} per replica, {config.steps_per_loop} step(s) per host loop)")


def _train(config, space, sampler, model_dir, strategy, per_replica, chief, preemption, log, segment) -> dict:
    replicas = strategy.num_replicas_in_sync
    local_ghosts = per_replica // config.data.ghost_batch_size
    path_per = resolve_path_per(sampler, config.sampler.path_per)
    # Distinct architectures per replica and step: what op skipping can count on.
    local_draws = max(draws_per_step(path_per, replicas, local_ghosts) // replicas, 1)
    model, optimizer, global_step, checkpoint = _build_state(config, model_dir, strategy, per_replica, segment)
    checkpoints = _Checkpoints(checkpoint, model_dir, global_step, config.keep_checkpoints, chief)
    restore(checkpoint, checkpoints.latest)
    start = int(global_step.numpy())
    if segment is not None:
        if segment.independent and start == segment.start:
            optimizers.reset_slots(optimizer)  # NAO-V2 §4.3: "the optimizer is also reset and the momentum is cleared"
        # The loop below stops at the segment's end (the schedule keeps its own length).
        config = config.replace(train_steps=segment.end)
    task = OneShotTask(
        model, sampler, optimizer, global_step, config.seed, config.data.batch_size, replicas, local_ghosts,
        config.optimizer.weight_decay, loss_scaling=config.mixed_precision == "float16",
    )
    # Two compiled loops at most: without op skipping while few candidates are
    # off, with it once the sampler makes it pay (`skips_pay`).
    host_loops = {
        skip: strategy_loop.train_loop(
            strategy, lambda batch, masks, skip=skip: task.train_step(batch, masks, skip), TOTALS,
            jit_compile=config.jit_compile, counter=global_step,
        )
        for skip in (False, True)
    }

    iterator = _train_iterator(config, strategy, start)
    # A rerun that trains nothing writes nothing: no new, empty events file.
    writer = (tf.summary.create_file_writer(model_dir.events("train")) if chief and start < config.train_steps
              else tf.summary.create_noop_writer())
    stop_agreed = _stop_agreement(strategy)
    result = {"step": start, "loss": float("nan"), "accuracy": float("nan"), "preempted": False}
    _log_start(config, space, sampler, strategy, start, path_per, local_ghosts, log)
    step = start
    window = np.zeros(TOTALS)
    window_steps = 0
    tic = time.perf_counter()
    eta = _Eta(config.train_steps)
    validated = None  # (step, metrics) of the last validation
    try:
        with writer.as_default():
            while step < config.train_steps and not stop_agreed(preemption.requested):
                n = _next_chunk(step, config)
                masks = _host_masks(sampler, step, n, config.steps_per_loop, path_per, replicas, local_ghosts)
                host_loop = host_loops[skips_pay(sampler, config, step, local_draws)]
                window += host_loop(iterator, tf.constant(n), masks).numpy()
                window_steps += n
                step += n
                eta.passed(step)
                if step % config.log_every == 0 or step == config.train_steps:
                    result = _log_window(result, window, window_steps, step, tic, eta(step), config, sampler,
                                         optimizer, log)
                    window, window_steps, tic = np.zeros(TOTALS), 0, time.perf_counter()
                if config.eval_every and step % config.eval_every == 0:
                    validated = (step, _validate(model, space, sampler, config, strategy, step, log))
                if step % config.checkpoint_every == 0 or step == config.train_steps:
                    # Summaries first: once a checkpoint exists, every summary up to
                    # its step is on disk, so a kill right after the save loses none
                    # (a kill before it only repeats summaries on resume).
                    writer.flush()
                    checkpoints.save(step)
            if step < config.train_steps:  # Preempted: every worker saves, then all stop.
                writer.flush()
                checkpoints.save(step)
                log(f"{signal_name()} received: checkpoint saved at step {step}; run again to resume.")
                result["preempted"] = True
            result["step"] = step
            if not result["preempted"]:
                checkpoints.save(step)
            if not result["preempted"] and segment is None:
                _ramp_ended(sampler, start, step, config, log)
                result.update(_final_validation(model, space, sampler, config, strategy, step, log, validated))
        writer.flush()
    finally:
        checkpoints.close()
    return result


def _train_iterator(config: TrainConfig, strategy, start: int) -> Iterator:
    """Per-replica training batches, from step `start` on.

    A resumed run reshuffles from its own seed rather than replaying the data
    order of the first run's first steps. Each input pipeline (one per host)
    reads its own shard and yields per-replica batches.
    """
    def dataset_fn(context: tf.distribute.InputContext) -> tf.data.Dataset:
        return data.make_dataset(
            config.data.dataset, "train", config.data.batch_size, training=True,
            data_dir=config.data.data_dir, seed=config.seed * 1_000_003 + start, input_context=context,
        )

    return iter(strategy_loop.distribute_dataset(strategy, dataset_fn))


def _build_state(config, model_dir: ModelDir, strategy, per_replica: int, segment: Segment | None) -> tuple:
    """(model, optimizer, global step, tf.train.Checkpoint of the three), built in the strategy's scope.

    The same seed gives the same initial weights under every strategy (and
    the checkpoint overrides them on resume).
    """
    keras.utils.set_random_seed(config.seed)
    with _dtype_policy(config.mixed_precision), strategy.scope():
        global_step = optimizers.global_step()
        with tf.variable_creator_scope(distribute.replica_local_statistics):
            model = model_dir.build_oneshot(per_replica)
        optimizer = optimizers.make_optimizer(config, global_step, segment,
                                              loss_scaling=config.mixed_precision == "float16")
        # Built eagerly inside the scope: a first build inside tf.function fails
        # under MirroredStrategy (DESIGN.md).
        optimizer.build(model.trainable_variables)
        checkpoint = tf.train.Checkpoint(model=model, optimizer=optimizer, step=global_step)
    return model, optimizer, global_step, checkpoint


def _final_validation(model, space, sampler: Sampler, config: TrainConfig, strategy, step: int,
                      log: Callable[[str], None], validated: tuple[int, dict] | None) -> dict:
    """{"val_accuracy", "val_accuracy_of"} at the end of training (`_validate`'s, reused if it ran at this step)."""
    metrics = validated[1] if validated and validated[0] == step else _validate(
        model, space, sampler, config, strategy, step, log)
    name = "sampled_accuracy" if isinstance(sampler, ArchitectureSampler) else "all_on_accuracy"
    tf.summary.scalar(f"validation/{name}", metrics["accuracy"], step=step)
    return {"val_accuracy": metrics["accuracy"], "val_accuracy_of": metrics["of"]}


def _validate(model, space, sampler: Sampler, config: TrainConfig, strategy, step: int,
              log: Callable[[str], None]) -> dict:
    """Validation accuracy and loss under the sampler's architectures, logged and summarized at `step`.

    The all-on network for path dropout (Bender et al. §3.2); the sampled
    paths for samplers of whole architectures, which never train it. Runs
    between host loops (`--eval_every` and the end), so the compiled step
    stays as it is.
    """
    if isinstance(sampler, ArchitectureSampler):
        metrics = sampled_metrics(model, space, sampler, config, strategy=strategy)
        of = f"{SAMPLED_ARCHITECTURES} sampled architectures"
    else:
        metrics, of = all_on_metrics(model, space, config, strategy=strategy), "all-on"
    tf.summary.scalar("validation/accuracy", metrics["accuracy"], step=step)
    tf.summary.scalar("validation/loss", metrics["loss"], step=step)
    log(f"step {step}: {of} validation accuracy {metrics['accuracy']:.4f} loss {metrics['loss']:.4f}")
    return {**metrics, "of": of}


def _host_masks(sampler: Sampler, step: int, n: int, size: int, path_per: str, replicas: int,
                local_ghosts: int) -> dict[str, np.ndarray]:
    """The sampler's masks for steps step..step+n-1, padded to `size` steps (one traced shape)."""
    per_step = [global_masks(sampler, step + i, path_per, replicas, local_ghosts) for i in range(n)]
    per_step += [per_step[-1]] * (size - n)
    return {k: np.stack([m[k] for m in per_step]) for k in per_step[0]}


def _stop_agreement(strategy: tf.distribute.Strategy) -> Callable[[bool], bool]:
    """Whether any worker was asked to stop: one worker alone must not leave
    the others waiting in an all-reduce (MultiWorkerMirrored)."""
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return bool
    return lambda requested: bool(strategy_loop.any_replica(strategy, requested))


def _next_chunk(step: int, config: TrainConfig) -> int:
    """Steps in the next host loop: stop at log, checkpoint, validation and final boundaries."""
    boundaries = [config.train_steps]
    for every in (config.log_every, config.checkpoint_every, config.eval_every):
        if every:
            boundaries.append((step // every + 1) * every)
    return min(config.steps_per_loop, min(boundaries) - step)


def skips_pay(sampler: Sampler, config: TrainConfig, step: int, ghosts: int) -> bool:
    """Whether the step should skip (tf.cond) the candidates off in all of a replica's ghost batches.

    A tf.cond around every op costs ~30% of a step on CPU when nothing is
    skipped, so skipping starts once the sampler's expected share of skipped
    candidates reaches `config.sampler.skip_threshold`. Skipped or masked, an off
    candidate gets no gradient and no decay: only its batch-norm moving
    statistics differ (they follow the data when it runs masked), and search
    recalibrates or ignores them.
    """
    return sampler.skipped_share(step, ghosts) >= config.sampler.skip_threshold


def _log_window(result, window, steps, step, tic, eta, config, sampler, optimizer, log) -> dict:
    loss, accuracy = window[0] / window[2], window[1] / window[2]
    l2 = window[3] / steps
    skipped = int(round(window[4]))
    lr = float(keras.ops.convert_to_numpy(optimizer.learning_rate))
    scalars = {"loss": loss, "accuracy": accuracy, "l2": l2, "learning_rate": lr, **sampler.summaries(step)}
    if config.mixed_precision == "float16":
        scalars["loss_scale"] = float(optimizer.dynamic_scale.numpy())
        scalars["skipped_steps"] = skipped
    for name, value in scalars.items():
        tf.summary.scalar(f"train/{name}", value, step=step)
    rate = steps * config.data.batch_size / max(time.perf_counter() - tic, 1e-9)
    extra = f" skipped {skipped}" if skipped else ""
    log(f"step {step}/{config.train_steps}: loss {loss:.4f} acc {accuracy:.4f} l2 {l2:.4f} "
        f"lr {lr:.4g} {sampler.describe(step)}{extra} ({rate:.0f} img/s, "
        f"{'ETA after the next log' if eta is None else f'ETA {_duration(eta)}'})")
    return {**result, "loss": float(loss), "accuracy": float(accuracy)}


class _Eta:
    """Time left, from the pace of the host loops after the first.

    The first host loop traces and compiles the step (seconds to minutes on
    a TPU): counted in, it inflated the first ETA many times over.
    """

    def __init__(self, train_steps: int) -> None:
        self.train_steps = train_steps
        self.since: tuple[float, int] | None = None  # (time, step) at the end of the first host loop

    def passed(self, step: int) -> None:
        if self.since is None:
            self.since = (time.perf_counter(), step)

    def __call__(self, step: int) -> float | None:
        """Seconds left; None while only the first (tracing) host loop has run."""
        tic, first = self.since
        if step <= first:
            return None
        return (time.perf_counter() - tic) / (step - first) * (self.train_steps - step)


def _ramp_ended(sampler: Sampler, start: int, step: int, config: TrainConfig, log: Callable[[str], None]) -> None:
    """Says why the training accuracy fell near the end, once the linear path-dropout ramp is complete.

    Bender et al. 2018, §3.2: the drop rate rises linearly to its full value at
    the last step, so the logged training accuracy (on dropped paths) falls
    late in training; the all-on validation accuracy is not affected by it.
    """
    if isinstance(sampler, PathDropoutSampler) and sampler.schedule == "linear" and start < step >= sampler.total_steps:
        log(f"step {step}: the path-dropout ramp is complete (rate r={sampler.rate:g} from 0 at step 0): the "
            "training accuracy above, measured on dropped paths, falls as the rate rises; the all-on "
            "validation accuracy below is measured without dropout.")


def _duration(seconds: float) -> str:
    seconds = int(round(max(seconds, 0.0)))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s"


def evaluate_all_on(*args: Any, **kwargs: Any) -> float:
    """Validation accuracy of the all-on network, batch statistics on the fly (§3.2): `all_on_metrics`'s."""
    return all_on_metrics(*args, **kwargs)["accuracy"]


def all_on_metrics(
    model,
    space,
    config: TrainConfig,
    batches: int | None = None,
    strategy: tf.distribute.Strategy | None = None,
    masks: dict[str, np.ndarray] | None = None,
) -> dict[str, float]:
    """{"accuracy", "loss"} (mean cross-entropy) of the all-on network on validation batches (§3.2).

    Runs through the strategy loop like training, so it also works where
    variables live on TPU; each replica scores whole ghost batches.
    `masks` (one architecture's, without the ghost axis) scores that
    architecture instead.
    """
    strategy = strategy or tf.distribute.get_strategy()
    info = data.dataset_info(config.data.dataset, config.data.data_dir)
    unit = config.data.ghost_batch_size * strategy.num_replicas_in_sync
    batch = min(config.data.batch_size, info.num_examples["validation"] // unit * unit)
    if batch == 0:
        raise UserError(
            f"the {info.num_examples['validation']} validation examples of {config.data.dataset} are fewer "
            f"than one ghost batch per replica ({unit}); use a smaller --ghost_batch_size."
        )
    masks = _tile(space.all_on_masks() if masks is None else masks, batch // unit)

    def dataset_fn(context):
        return data.make_dataset(config.data.dataset, "validation", batch, training=False,
                                 data_dir=config.data.data_dir, input_context=context)

    def replica_eval(batch):
        images, labels = batch
        return evaluation_sums(model({"images": images, **masks}, training=False), labels)

    totals = strategy_loop.evaluate(
        strategy, replica_eval, strategy_loop.distribute_dataset(strategy, dataset_fn),
        max_batches=batches or config.eval_batches, compiled=False,
    )
    examples = max(totals[1], 1)
    return {"accuracy": float(totals[0] / examples), "loss": float(totals[2] / examples)}


def evaluate_sampled(*args: Any, **kwargs: Any) -> float:
    """Mean validation accuracy of architectures drawn by the training sampler: `sampled_metrics`'s."""
    return sampled_metrics(*args, **kwargs)["accuracy"]


def sampled_metrics(
    model,
    space,
    sampler: ArchitectureSampler,
    config: TrainConfig,
    count: int = SAMPLED_ARCHITECTURES,
    strategy: tf.distribute.Strategy | None = None,
) -> dict[str, float]:
    """Mean validation {"accuracy", "loss"} of `count` architectures drawn by the training sampler.

    A supernet trained one path at a time (SPOS §3.2, NAO-V2 §4.2) never
    trains its all-on network, whose accuracy then says nothing about it (a
    ShuffleNetV2 path trained to 0.88 scored 0.105 all on); the paths it
    trained do. The draws are fixed by the run's seed.
    """
    rng = np.random.default_rng([config.seed, SAMPLED_ARCHITECTURES_STREAM])
    results = []
    for _ in range(count):
        masks = space.encode_batch([sampler.draw(rng)])
        results.append(all_on_metrics(model, space, config, strategy=strategy,
                                      masks={k: np.asarray(v[0], np.float32) for k, v in masks.items()}))
    return {name: float(np.mean([r[name] for r in results])) for name in ("accuracy", "loss")}
