"""Retrains chosen architectures from scratch, stand-alone (Bender et al. 2018, §3.4, §4.1).

"After completing a search, one can retrain the best-performing architectures
from scratch" (§3.4), scaled up by the number of filters F; for the analysis
of §4.1 (Figure 5) a stratified sample is retrained briefly, "with a batch size
of 64 and a ghost batch size of 32", and "stand-alone model accuracies were
averaged across five runs". Training follows the one-shot recipe of §4.1: SGD
with Nesterov momentum 0.9 and L2 on the kernels, the same strategies, ghost
batches and schedules as `tf_oneshot.training.trainer`, but no path dropout.

The final models of §3.4 and §4.1 are "trained from scratch ... on the full
training set, then evaluated on the test set": with `full_train` the runs
train on train + validation (`data.FULL_TRAIN`), record `"full_train": true`
and no validation accuracy, and are ranked by test accuracy, the only
held-out split left. The default keeps the validation split (Figure 5's
brief retraining is measured on it).

Each finished (architecture, seed) run is one JSON line in the results file,
appended with fsync: a rerun skips finished pairs, and a torn last line (a kill
mid-write) is dropped. `stop` (SIGTERM, `tf_oneshot.training.preemption`) is polled
between training chunks; the pair in hand is dropped and trained again on
the rerun. The best architecture (highest validation accuracy, or test
accuracy with `full_train`, mean over seeds) is exported as a `.keras` file
that loads in safe mode and as a SavedModel with a `serve` signature, both
written to a temporary name first and renamed into place.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
import uuid
from collections.abc import Callable, Hashable, Sequence
from typing import Any

import keras
import tensorflow as tf

from tf_oneshot.analysis.records import (
    best_standalone,
    describe_space,
    space_identity,
    standalone_by_architecture,
)
from tf_oneshot.errors import UserError
from tf_oneshot.io_utils import append_jsonl, atomic_write_json, read_json, read_jsonl
from tf_oneshot.layers.ghost_batch_norm import GhostBatchNormalization
from tf_oneshot.search_spaces import SearchSpace
from tf_oneshot.training import data, strategy_loop
from tf_oneshot.training.config import TrainConfig
from tf_oneshot.training.optimizers import decay_schedule
from tf_oneshot.training.preemption import Preempted
from tf_oneshot.training.tasks import StandaloneTask, evaluation_sums

RECORD_KIND = "tf_oneshot.retrain"
# Settings that must agree between the lines of one results file: a rerun
# with other settings would mix incomparable accuracies.
RUN_FIELDS = (
    "dataset", "train_steps", "batch_size", "ghost_batch_size", "learning_rate", "lr_schedule",
    "momentum", "weight_decay", "full_train",
)
KERAS_FILE = "best.keras"
SAVED_MODEL_DIR = "best_saved_model"
BEST_FILE = "best.json"
EVAL_BATCH_CAP = 500
RECALIBRATION_IMAGES = 2048
SHUFFLE_BUFFER = 10_000


@dataclasses.dataclass(frozen=True)
class Candidate:
    """An architecture to retrain and the one-shot accuracy it was chosen with."""

    architecture: Hashable
    oneshot_accuracy: float | None = None


@dataclasses.dataclass(frozen=True)
class RetrainSummary:
    """What `retrain` did.

    Attributes:
        records: every line of the results file for this run's candidates
            (earlier and new), in file order.
        trained: (architecture string, seed) pairs trained now.
        skipped: pairs found finished in the results file.
        best_architecture: highest mean validation accuracy over seeds (test
            accuracy with `full_train`).
        exported: paths of the exports (empty if none was written now).
        preempted: `stop` ended the run early (no export then).
    """

    records: tuple[dict, ...]
    trained: tuple[tuple[str, int], ...]
    skipped: tuple[tuple[str, int], ...]
    best_architecture: str | None
    exported: dict[str, str]
    preempted: bool = False


# ------------------------------------------------------------------ training
def _learning_rate(config: TrainConfig) -> Any:
    return decay_schedule(config.learning_rate, config.train_steps, config.lr_schedule) or config.learning_rate


def _eval_batch(num_examples: int, multiple: int) -> int:
    """Largest batch <= EVAL_BATCH_CAP dividing the split, so no example is dropped."""
    for b in range(min(EVAL_BATCH_CAP, num_examples), 0, -1):
        if num_examples % b == 0 and b % multiple == 0:
            return b
    return max(multiple, min(EVAL_BATCH_CAP, num_examples) // multiple * multiple)


def build_model(space: SearchSpace, arch: Hashable, config: TrainConfig) -> keras.Model:
    """The stand-alone model of `arch`, its weights created."""
    model = space.build_standalone(arch, ghost_batch_size=config.ghost_batch_size)
    model(tf.zeros((config.ghost_batch_size, *space.image_shape)), training=False)
    return model


def train_standalone(
    space: SearchSpace,
    arch: Hashable,
    config: TrainConfig,
    seed: int,
    strategy: tf.distribute.Strategy | None = None,
    log: Callable[[str], None] = print,
    recalibration_images: int = RECALIBRATION_IMAGES,
    full_train: bool = False,
    stop: Callable[[], bool] | None = None,
    initialize: Callable[[keras.Model], None] | None = None,
) -> tuple[keras.Model, dict[str, Any]]:
    """Trains one architecture from scratch and measures it.

    Args:
        space: the network around the cell (F scaled as wished).
        arch: the cell.
        config: dataset, steps, batch and ghost batch, optimizer settings.
        seed: seeds the weights and the data order.
        strategy: a tf.distribute strategy (default: the default strategy).
        log: progress lines.
        recalibration_images: training images over which the batch-norm
            statistics are recomputed before evaluation (0: keep the moving
            averages); see `recalibrate_batch_norm`.
        full_train: train (and recalibrate) on train + validation (§3.4);
            validation_accuracy and validation_loss are then None.
        stop: polled between chunks of `config.log_every` steps.
        initialize: sets the built model's weights instead of the seed's
            random ones (e.g. `space.inherit_weights` from a one-shot model,
            "Deeper insights" §3.3); the seed still orders the data.

    Returns:
        (the model, metrics: validation_accuracy, test_accuracy, their mean
        cross-entropies validation_loss and test_loss, the numbers of
        examples they cover, train_loss of the last steps, seconds).

    Raises:
        Preempted: `stop` returned True before the training ended.
    """
    strategy = strategy or tf.distribute.get_strategy()
    replicas = strategy.num_replicas_in_sync
    per_replica, rest = divmod(config.batch_size, replicas)
    if rest or per_replica % config.ghost_batch_size:
        raise UserError(
            f"--batch_size={config.batch_size} over {replicas} replicas must give a multiple of "
            f"--ghost_batch_size={config.ghost_batch_size} per replica."
        )
    tic = time.perf_counter()
    keras.utils.set_random_seed(seed)
    with strategy.scope():
        model = build_model(space, arch, config)
        if initialize is not None:
            initialize(model)
        optimizer = keras.optimizers.SGD(
            learning_rate=_learning_rate(config), momentum=config.momentum, nesterov=True
        )
        # DESIGN.md pitfall: build the optimizer eagerly inside the scope.
        optimizer.build(model.trainable_variables)
    task = StandaloneTask(model, optimizer, config.batch_size, replicas, config.weight_decay)
    train_loop = strategy_loop.train_loop(strategy, task.train_step, 5, jit_compile=config.jit_compile)
    train_split = data.FULL_TRAIN if full_train else "train"
    iterator = _train_batches(config, train_split, seed, strategy)
    step, loss = 0, math.nan
    every = max(1, min(config.log_every, config.train_steps))
    while step < config.train_steps:
        if stop is not None and stop():
            raise Preempted(f"{arch} seed {seed} stopped at step {step}")
        n = min(every, config.train_steps - step)
        loss = float(train_loop(iterator, tf.constant(n), {}).numpy()[0]) / (n * config.batch_size)
        step += n
        log(f"  {arch} seed {seed}: step {step}/{config.train_steps} loss {loss:.4f}")
    metrics: dict[str, Any] = {"train_loss": loss}
    if recalibration_images:
        recalibrate_batch_norm(model, config, strategy, recalibration_images, split=train_split)
    metrics.update(_held_out_metrics(model, config, strategy, full_train))
    metrics["seconds"] = round(time.perf_counter() - tic, 3)
    return model, metrics


def _train_batches(config: TrainConfig, split: str, seed: int, strategy: tf.distribute.Strategy) -> Any:
    """An iterator of per-replica training batches of `split`, shuffled by `seed`.

    A shuffle buffer larger than the split would fill itself from several
    epochs before the first batch (and keep filling after the last).
    """
    info = data.dataset_info(config.dataset, config.data_dir)
    dataset = data.make_dataset(
        config.dataset, split, config.batch_size, training=True, data_dir=config.data_dir,
        seed=seed, shuffle_buffer=min(SHUFFLE_BUFFER, data.split_size(info, split)),
    )
    return iter(strategy.experimental_distribute_dataset(dataset))


def _held_out_metrics(model: keras.Model, config: TrainConfig, strategy: tf.distribute.Strategy,
                      full_train: bool) -> dict[str, Any]:
    """{split}_accuracy, _loss and _examples of validation and test; no validation after training on it (§3.4)."""
    metrics: dict[str, Any] = {}
    for split in ("validation", "test"):
        if split == "validation" and full_train:
            metrics.update(validation_accuracy=None, validation_loss=None, validation_examples=0)
            continue
        result = evaluate_with_loss(model, config, split, strategy)
        metrics[f"{split}_accuracy"] = result["accuracy"]
        metrics[f"{split}_loss"] = result["loss"]
        metrics[f"{split}_examples"] = result["examples"]
    return metrics


def recalibrate_batch_norm(
    model: keras.Model,
    config: TrainConfig,
    strategy: tf.distribute.Strategy | None = None,
    num_images: int = RECALIBRATION_IMAGES,
    split: str = "train",
) -> int:
    """Replaces the moving batch-norm statistics by exact averages over training images.

    A brief retrain (Bender et al. 2018, §4.1: "around 28 epochs"; the demo:
    a few hundred steps) leaves the moving averages (momentum 0.99) weighted
    towards their initial values and the early weights, which costs the
    evaluation more than the training has gained. As in SPOS (Guo et al.
    2019, §3.3, BN recalibration), the statistics of the final weights are
    recomputed on un-augmented training images, one ghost batch at a time.

    Args:
        split: the images trained on ("train", or `data.FULL_TRAIN`).

    Returns:
        The number of images used.
    """
    strategy = strategy or tf.distribute.get_strategy()
    layers = [layer for layer in model.layers if isinstance(layer, GhostBatchNormalization)]
    if not layers or num_images <= 0:
        return 0
    info = data.dataset_info(config.dataset, config.data_dir)
    batch = config.batch_size
    batches = max(1, min(num_images, data.split_size(info, split)) // batch)
    dataset = data.make_dataset(
        config.dataset, split, batch, training=False, data_dir=config.data_dir, repeat=False
    ).take(batches)
    for layer in layers:
        layer.set_mode("recalibrate")
    # The layers read their mode when traced: the function is traced after set_mode.
    strategy_loop.run_on_batches(
        strategy, lambda batch: model(batch[0], training=False),
        strategy.experimental_distribute_dataset(dataset),
    )
    for layer in layers:
        layer.set_mode("moving")
    return batches * batch


def evaluate(
    model: keras.Model,
    config: TrainConfig,
    split: str,
    strategy: tf.distribute.Strategy | None = None,
) -> tuple[float, int]:
    """Accuracy of `model` on a whole split (inference mode); returns (accuracy, examples)."""
    result = evaluate_with_loss(model, config, split, strategy)
    return result["accuracy"], result["examples"]


def evaluate_with_loss(
    model: keras.Model,
    config: TrainConfig,
    split: str,
    strategy: tf.distribute.Strategy | None = None,
) -> dict[str, Any]:
    """Accuracy and mean cross-entropy of `model` on a whole split (inference mode).

    The loss separates models whose accuracies tie ("Deeper insights" §3.1:
    the ground truth of a small space).

    Returns:
        {"accuracy": float, "loss": float (mean over examples), "examples": int}.
    """
    strategy = strategy or tf.distribute.get_strategy()
    info = data.dataset_info(config.dataset, config.data_dir)
    batch = _eval_batch(info.num_examples[split], strategy.num_replicas_in_sync)
    dataset = data.make_dataset(
        config.dataset, split, batch, training=False, data_dir=config.data_dir
    )

    totals = strategy_loop.evaluate(
        strategy, lambda batch: evaluation_sums(model(batch[0], training=False), batch[1]),
        strategy.experimental_distribute_dataset(dataset),
    )
    examples = max(float(totals[1]), 1.0)
    return {"accuracy": float(totals[0] / examples), "loss": float(totals[2] / examples),
            "examples": int(totals[1])}


# -------------------------------------------------------------------- export
def _plain_copy(space: SearchSpace, arch: Hashable, model: keras.Model,
                config: TrainConfig) -> keras.Model:
    """The same weights in a model built outside any strategy (portable export)."""
    copy = build_model(space, arch, config)
    copy.set_weights(model.get_weights())
    return copy


def _replace_dir(tmp: str, final: str) -> None:
    trash = f"{final}.old-{uuid.uuid4().hex}"
    if tf.io.gfile.exists(final):
        tf.io.gfile.rename(final, trash)
    tf.io.gfile.rename(tmp, final)
    if tf.io.gfile.exists(trash):
        tf.io.gfile.rmtree(trash)


def export_model(
    model: keras.Model, space: SearchSpace, export_dir: str, metadata: dict[str, Any]
) -> dict[str, str]:
    """Writes `best.keras`, `best_saved_model/` (signature `serve`) and `best.json`.

    Each goes to a temporary name and is renamed into place, so a reader sees
    the old export or the new one, never half of one.
    """
    tf.io.gfile.makedirs(export_dir)
    keras_path = os.path.join(export_dir, KERAS_FILE)
    tmp = os.path.join(export_dir, f"tmp-{uuid.uuid4().hex}.keras")
    model.save(tmp)
    tf.io.gfile.rename(tmp, keras_path, overwrite=True)

    saved_model = os.path.join(export_dir, SAVED_MODEL_DIR)
    tmp_dir = os.path.join(export_dir, f"tmp-{uuid.uuid4().hex}")
    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(
        "serve",
        lambda images: model(images, training=False),
        input_signature=[tf.TensorSpec((None, *space.image_shape), tf.float32, name="images")],
    )
    archive.write_out(tmp_dir, verbose=False)
    _replace_dir(tmp_dir, saved_model)

    best = os.path.join(export_dir, BEST_FILE)
    atomic_write_json(best, {**metadata, "keras": KERAS_FILE, "saved_model": SAVED_MODEL_DIR})
    return {"keras": keras_path, "saved_model": saved_model, "metadata": best}


# ------------------------------------------------------------------- results
def _run_settings(config: TrainConfig, space: SearchSpace, recalibration_images: int,
                  full_train: bool) -> dict[str, Any]:
    return {
        **{f: getattr(config, f) for f in RUN_FIELDS if f != "full_train"},
        "full_train": bool(full_train),
        "bn_recalibration_images": int(recalibration_images),
        "space": space.to_config(),
    }


def _check_results(records: list[dict], settings: dict[str, Any], path: str) -> None:
    for number, r in enumerate(records, start=1):
        if r.get("kind") != RECORD_KIND:
            raise UserError(
                f"{path} line {number} is not a `tf-oneshot retrain` result; pass a new --results file."
            )
        if space_identity(r.get("space")) != space_identity(settings["space"]):
            raise UserError(
                f"{path} holds retrain results of another search space ({describe_space(r.get('space'))}; "
                f"this run: {describe_space(settings['space'])}); pass a new --results file."
            )
        def scale(x: dict) -> dict:
            return {
                **{f: x.get(f) for f in (*RUN_FIELDS, "bn_recalibration_images")},
                "full_train": bool(x.get("full_train")),  # lines written before the flag: False
                "filters": (x.get("space") or {}).get("filters"),
            }

        old, new = scale(r), scale(settings)
        changed = [f"{f}={old[f]!r} (this run: {new[f]!r})" for f in new if old[f] != new[f]]
        if changed:
            raise UserError(
                f"{path} line {number} was trained with {', '.join(changed[:3])}; rerun with the "
                "same flags or pass a new --results file."
            )


def _best(records: Sequence[dict]) -> tuple[str, float] | None:
    best = best_standalone(list(standalone_by_architecture(records).values()))
    return (best.architecture, best.accuracy) if best else None


def _ranking_split(full_train: bool) -> str:
    """The held-out split runs are ranked and exported by: test once validation is trained on."""
    return "test" if full_train else "validation"


def retrain(
    candidates: Sequence[Candidate],
    space: SearchSpace,
    config: TrainConfig,
    seeds: Sequence[int],
    results_path: str,
    export_dir: str | None = None,
    strategy: tf.distribute.Strategy | None = None,
    log: Callable[[str], None] = print,
    recalibration_images: int = RECALIBRATION_IMAGES,
    full_train: bool = False,
    stop: Callable[[], bool] | None = None,
) -> RetrainSummary:
    """Trains every (candidate, seed) not yet in `results_path`, then exports the best.

    Args:
        candidates: the architectures, each with the one-shot accuracy it was
            chosen with (or None).
        space: the network; its `filters` is F (Bender et al. 2018, §3.4 scale
            up by F).
        config: dataset, train_steps, batch, ghost batch, optimizer settings.
        seeds: one stand-alone run per seed; accuracies are averaged (§4.1).
        results_path: JSON-lines file, appended one line per finished run.
        export_dir: where the best model goes (None: no export).
        strategy: a tf.distribute strategy.
        log: progress lines.
        recalibration_images: see `train_standalone`.
        full_train: train on train + validation (§3.4, §4.1's final models);
            rank and export by test accuracy.
        stop: polled between training chunks (SIGTERM); True ends the run
            with `preempted` set, every finished pair recorded.

    Returns:
        A `RetrainSummary`.

    Raises:
        UserError: a results file of another space or other settings, a
            dataset whose images do not fit the space, no candidates or seeds.
    """
    candidates = _checked_candidates(candidates, seeds, space, config)
    settings = _run_settings(config, space, recalibration_images, full_train)
    todo, skipped = _pending_runs(candidates, seeds, results_path, settings)
    wanted = {str(c.architecture) for c in candidates}
    split = _ranking_split(full_train)
    log(
        f"retrain: {len(candidates)} architectures x {len(seeds)} seeds of {space.name}"
        f"{f' at F={space.filters}' if hasattr(space, 'filters') else ''}, "
        f"{config.train_steps} steps each on {'train + validation' if full_train else 'train'}; "
        f"{len(skipped)} runs already in {results_path}, {len(todo)} to train"
    )
    train = dict(strategy=strategy, log=log, recalibration_images=recalibration_images,
                 full_train=full_train, stop=stop)
    best_now: dict[str, tuple[float, keras.Model, int]] = {}  # arch -> best seed trained now
    trained = []
    for index, (candidate, seed) in enumerate(todo, start=1):
        arch = candidate.architecture
        log(f"[{index}/{len(todo)}] {arch} seed {seed}: training from scratch")
        try:
            model, metrics = train_standalone(space, arch, config, seed, **train)
        except Preempted as e:
            log(f"[{index}/{len(todo)}] {e}: not recorded; a rerun trains it again")
            return _summary(results_path, wanted, trained, skipped, None, {}, preempted=True)
        _record_run(results_path, candidate, seed, model, metrics, space, settings, log,
                    f"[{index}/{len(todo)}] {arch} seed {seed}: ")
        trained.append((str(arch), seed))
        key, accuracy = str(arch), metrics[f"{split}_accuracy"]
        if key not in best_now or accuracy > best_now[key][0]:
            best_now[key] = (accuracy, model, seed)
    all_records = [r for r in read_jsonl(results_path) if r["architecture"] in wanted]
    best = _best(all_records)
    exported: dict[str, str] = {}
    if export_dir and best is not None:
        try:
            exported = _export_best(best, best_now, all_records, space, config, export_dir, split, train, log)
        except Preempted as e:
            log(f"export: {e}; a rerun exports the best")
            return _summary(results_path, wanted, trained, skipped, best[0], {}, preempted=True)
    return _summary(results_path, wanted, trained, skipped, best[0] if best else None, exported)


def _checked_candidates(candidates: Sequence[Candidate], seeds: Sequence[int], space: SearchSpace,
                        config: TrainConfig) -> list[Candidate]:
    """The candidates without repeats, after checking that there is work and that the dataset fits the space."""
    if not candidates:
        raise UserError("no architectures to retrain.")
    if not seeds:
        raise UserError("--seeds is empty; give at least one seed, e.g. --seeds=0,1,2.")
    data.check_fits(config.dataset, config.data_dir, space.image_shape, space.num_classes)
    unique: dict[str, Candidate] = {}
    for c in candidates:
        unique.setdefault(str(space.validate(c.architecture)), c)
    return list(unique.values())


def _pending_runs(candidates: Sequence[Candidate], seeds: Sequence[int], results_path: str,
                  settings: dict[str, Any]) -> tuple[list[tuple[Candidate, int]], tuple[tuple[str, int], ...]]:
    """(the (candidate, seed) runs still to train, the (architecture, seed) runs `results_path` holds)."""
    existing = read_jsonl(results_path)
    _check_results(existing, settings, results_path)
    done = {(r["architecture"], int(r["seed"])) for r in existing}
    pairs = [(c, int(s)) for c in candidates for s in seeds]
    todo = [(c, s) for c, s in pairs if (str(c.architecture), s) not in done]
    skipped = tuple((str(c.architecture), s) for c, s in pairs if (str(c.architecture), s) in done)
    return todo, skipped


def _record_run(results_path: str, candidate: Candidate, seed: int, model: keras.Model, metrics: dict[str, Any],
                space: SearchSpace, settings: dict[str, Any], log: Callable[[str], None], prefix: str) -> None:
    """Appends one finished run's line to `results_path` and logs its accuracies after `prefix`."""
    params = int(model.count_params())
    append_jsonl(results_path, {
        "kind": RECORD_KIND,
        "architecture": str(candidate.architecture),
        "seed": seed,
        "oneshot_accuracy": candidate.oneshot_accuracy,
        "params": params,
        "flops": int(space.count(candidate.architecture).flops),
        **metrics,
        **settings,
    })
    validation = metrics["validation_accuracy"]
    log(f"{prefix}{'' if validation is None else f'validation {validation:.4f} '}"
        f"test {metrics['test_accuracy']:.4f}, {params:,} params ({metrics['seconds']:.0f}s)")


def _summary(results_path, wanted, trained, skipped, best, exported, preempted=False) -> RetrainSummary:
    return RetrainSummary(
        records=tuple(r for r in read_jsonl(results_path) if r["architecture"] in wanted),
        trained=tuple(trained),
        skipped=skipped,
        best_architecture=best,
        exported=exported,
        preempted=preempted,
    )


def _export_best(best, best_now, records, space, config, export_dir, split, train, log) -> dict[str, str]:
    """Exports the best architecture, retraining its best seed if an earlier run trained it.

    A resumed run (after SIGTERM, say) may find that the best architecture was
    trained before the interruption, its weights gone with that process; its
    best seed is trained again (same seed, same data order) so that a resumed
    run ends with the same export as an uninterrupted one.
    """
    arch, mean = best
    previous_path = os.path.join(export_dir, BEST_FILE)
    previous = read_json(previous_path) if tf.io.gfile.exists(previous_path) else None
    if previous and previous.get("architecture") == arch and arch not in best_now:
        log(f"export: {arch} is already exported in {export_dir}")
        return {}
    if arch not in best_now:
        runs = [r for r in records if r["architecture"] == arch]
        seed = int(max(runs, key=lambda r: (r.get(f"{split}_accuracy") or 0.0, -int(r["seed"])))["seed"])
        log(f"export: the best architecture {arch} was trained in an earlier run; training seed {seed} "
            "again to export it")
        model, metrics = train_standalone(space, space.parse(arch), config, seed, **train)
        best_now = {arch: (metrics[f"{split}_accuracy"], model, seed)}
    accuracy, model, seed = best_now[arch]
    metadata = {
        "architecture": arch,
        "seed": seed,
        "selected_on": split,
        f"{split}_accuracy": accuracy,
        f"{split}_accuracy_mean": mean,
        "full_train": bool(train.get("full_train")),
        "seeds": sorted(int(r["seed"]) for r in records if r["architecture"] == arch),
        "space": space.to_config(),
        "dataset": config.dataset,
    }
    exported = export_model(_plain_copy(space, space.parse(arch), model, config), space, export_dir, metadata)
    log(f"export: best {arch} ({split} {mean:.4f} mean over seeds) -> {exported['keras']}, "
        f"{exported['saved_model']}")
    return exported
