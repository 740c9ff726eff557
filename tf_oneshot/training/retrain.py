"""Retrains chosen architectures from scratch, stand-alone (Bender et al. 2018, §3.4, §4.1).

"After completing a search, one can retrain the best-performing architectures
from scratch" (§3.4), scaled up by the number of filters F; for the analysis
of §4.1 (Figure 5) a stratified sample is retrained briefly, "with a batch size
of 64 and a ghost batch size of 32", and "stand-alone model accuracies were
averaged across five runs". Training follows the one-shot recipe of §4.1: SGD
with Nesterov momentum 0.9 and L2 on the kernels, the same strategies, ghost
batches and schedules (`tf_oneshot.training.optimizers`) as the one-shot
trainer, but no path dropout.

The final models of §3.4 and §4.1 are "trained from scratch ... on the full
training set, then evaluated on the test set": with `full_train` the runs
train on train + validation (`data.FULL_TRAIN`), record `"full_train": true`
and no validation accuracy, and are ranked by test accuracy, the only
held-out split left. The default keeps the validation split (Figure 5's
brief retraining is measured on it).

Every child is trained by the recipe every child shares
(`tf_oneshot.training.child`), in one of two networks (`method`):
"standalone" (the default), its own Keras model, built and traced for
every child; or "masked", the space's one-shot model under the child's fixed
masks, traced once for every child and seed (`StandaloneStartChild`). Both
are the same training: the child starts from the very weights its
stand-alone model draws for the seed (copied into the one-shot elements it
reads), the one-shot model under fixed masks computes exactly the child
(the space contract), its inactive ops get no gradient and its masked L2
decays exactly the child's kernels (`tasks.FixedChildTask`), the data order
is the seed's, the optimizer and schedule are reset for each child, and the
evaluation recalibrates the batch norm and measures the same splits
(tests/test_retrain.py checks equal numbers and exports). The best child is
exported as its stand-alone model either way, the masked one with its
trained weights copied in (`SearchSpace.inherit_weights`). Each finished
(architecture, seed) run is one line of the results file
(`tf_oneshot.record_file.RecordFile`, fsync'd): a rerun skips finished
pairs, and a torn last line (a kill mid-write) is dropped. `stop` (SIGTERM,
`tf_oneshot.training.preemption`) is polled between training chunks; the
pair in hand is dropped and trained again on the rerun. The best
architecture (highest validation accuracy, or test accuracy with
`full_train`, mean over seeds) is exported as a `.keras` file that loads in
safe mode and as a SavedModel with a `serve` signature, both written to a
temporary name first and renamed into place. An export carries its input
standardization (the training split's mean and std, a `Normalization` layer
in front of the network): it takes images scaled to [0, 1], as a user has
them, and its custom layers are registered by `import tf_oneshot`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
import uuid
from collections.abc import Callable, Hashable, Iterator, Sequence
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from tf_oneshot.analysis.records import best_standalone, standalone_by_architecture
from tf_oneshot.errors import UserError
from tf_oneshot.io_utils import atomic_write_json, read_json
from tf_oneshot.record_file import RecordFile
from tf_oneshot.search_spaces import SearchSpace
from tf_oneshot.training import data
from tf_oneshot.training.child import (
    RECALIBRATION_IMAGES,
    ChildTrainer,
    MaskedChild,
    StandaloneChild,
    build_model,
    train_standalone,  # noqa: F401 (retrain's one-run entry point, re-exported)
)
from tf_oneshot.training.config import TrainConfig
from tf_oneshot.training.preemption import Preempted

RECORD_KIND = "tf_oneshot.retrain"
# Settings that must agree between the lines of one results file: a rerun
# with other settings would mix incomparable accuracies.
RUN_FIELDS = (
    "dataset", "train_steps", "batch_size", "ghost_batch_size", "learning_rate", "lr_schedule",
    "end_learning_rate", "momentum", "nesterov", "weight_decay", "bn_momentum", "full_train",
)
# What lines written before these settings were flags trained with (issue 18: Nesterov was
# hard-coded, the decay ended at 0, batch norm used Keras's momentum).
EARLIER_DEFAULTS = {"nesterov": True, "end_learning_rate": 0.0, "bn_momentum": 0.99}
KERAS_FILE = "best.keras"
SAVED_MODEL_DIR = "best_saved_model"
TFLITE_FILE = "best.tflite"
BEST_FILE = "best.json"
# The networks a child can be trained in (`method`); "masked" is the fastest and the same training.
CHILD_NETWORKS = {"masked": MaskedChild, "standalone": StandaloneChild}


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


# -------------------------------------------------------------------- export
def _standalone_copy(trainer: ChildTrainer, arch: Hashable, weights: list[np.ndarray]) -> keras.Model:
    """The child's stand-alone model, built outside any strategy (portable export), holding its trained weights.

    `weights` are the trainer's model's after the child's run: the child's own
    model's, or the one-shot model's, whose child part `inherit_weights` copies.
    """
    copy = build_model(trainer.space, arch, trainer.config)
    if isinstance(trainer, MaskedChild):
        trainer.model.set_weights(weights)
        trainer.space.inherit_weights(trainer.model, copy, arch)
    else:
        copy.set_weights(weights)
    return copy


def _replace_dir(tmp: str, final: str) -> None:
    trash = f"{final}.old-{uuid.uuid4().hex}"
    if tf.io.gfile.exists(final):
        tf.io.gfile.rename(final, trash)
    tf.io.gfile.rename(tmp, final)
    if tf.io.gfile.exists(trash):
        tf.io.gfile.rmtree(trash)


def with_input_normalization(model: keras.Model, image_shape: Sequence[int],
                             statistics: tuple[Sequence[float], Sequence[float]]) -> keras.Model:
    """`model` behind a `Normalization` layer of the training split's (mean, std): it takes [0, 1] images.

    The network was trained on standardized images (`data.make_dataset`);
    without the layer an export fed [0, 1] digits scored 0.213 (issue 19).
    """
    mean, std = statistics
    images = keras.Input(tuple(image_shape), name="images")
    standardized = keras.layers.Normalization(mean=list(mean), variance=[s * s for s in std],
                                              name="standardize")(images)
    return keras.Model(images, model(standardized), name=model.name)


def export_model(
    model: keras.Model, space: SearchSpace, export_dir: str, metadata: dict[str, Any],
    statistics: tuple[Sequence[float], Sequence[float]], tflite: bool = False,
) -> dict[str, str]:
    """Writes `best.keras`, `best_saved_model/` (signature `serve`), `best.json` and, with `tflite`, `best.tflite`.

    All take images scaled to [0, 1]: `statistics` (the training split's
    per-channel mean and std, `data.input_statistics`) become their first
    layer, and `best.json` records them. Each file goes to a temporary name
    and is renamed into place, so a reader sees the old export or the new
    one, never half of one. A model TFLite cannot convert leaves the other
    exports written and `best.json`'s "tflite_error" saying why.

    Returns:
        {"keras", "saved_model", "metadata"} paths, with "tflite" (its path)
        or "tflite_error" (one line) when `tflite` is set.
    """
    tf.io.gfile.makedirs(export_dir)
    model = with_input_normalization(model, space.image_shape, statistics)
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
    exported = {"keras": keras_path, "saved_model": saved_model}
    if tflite:
        exported.update(export_tflite(saved_model, os.path.join(export_dir, TFLITE_FILE)))

    best = os.path.join(export_dir, BEST_FILE)
    atomic_write_json(best, {
        **metadata, "keras": KERAS_FILE, "saved_model": SAVED_MODEL_DIR,
        **({"tflite": TFLITE_FILE} if "tflite" in exported else {}),
        **({"tflite_error": exported["tflite_error"]} if "tflite_error" in exported else {}),
        "input": {"scale": [0.0, 1.0], "standardized_inside": True,
                  "mean": [float(m) for m in statistics[0]], "std": [float(v) for v in statistics[1]]},
    })
    return {**exported, "metadata": best}


def export_tflite(saved_model: str, path: str) -> dict[str, str]:
    """Converts the SavedModel's `serve` signature to a float32 TFLite flatbuffer at `path`.

    Every built-in space's stand-alone layers convert (checked: ghost batch
    norm in inference, the standardization layer, SPOS's depthwise and
    channel-shuffle blocks, PACT and DoReFa quantization, which stays
    simulated in float32 rather than becoming integer kernels). A layer of a
    user's space that TFLite lacks an op for is reported, not raised, so the
    other exports stand.

    Returns:
        {"tflite": path}, or {"tflite_error": one line} when conversion fails.
    """
    try:
        flatbuffer = tf.lite.TFLiteConverter.from_saved_model(saved_model, signature_keys=["serve"]).convert()
    except Exception as e:  # ConverterError and the errors of tracing a user's layer alike: report them
        return {"tflite_error": _conversion_problem(e)}
    tmp = f"{path}.tmp-{uuid.uuid4().hex}"
    with tf.io.gfile.GFile(tmp, "wb") as f:
        f.write(flatbuffer)
    tf.io.gfile.rename(tmp, path, overwrite=True)
    return {"tflite": path}


def _conversion_problem(error: Exception) -> str:
    """One line from a TFLite conversion error: the ops TFLite lacks and their layers, else its first line."""
    missing = re.findall(r"/([\w.]+)/\w+@[^']*'(tf\.\w+)' op is neither a custom op nor a flex op", str(error))
    if missing:
        ops = sorted({f"{op} (in {scope})" for scope, op in missing})  # the layer's name scope as traced
        return f"no TFLite built-in op for {', '.join(ops)}"
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return f"{type(error).__name__}: {lines[0] if lines else 'conversion failed'}"


# ------------------------------------------------------------------- results
def _run_settings(config: TrainConfig, space: SearchSpace, recalibration_images: int,
                  full_train: bool) -> dict[str, Any]:
    """What every line of one results file shares: the training setting and the whole space (F included)."""
    flat = config.to_flat()
    settings = {
        **{f: flat[f] for f in RUN_FIELDS if f != "full_train"},
        "full_train": bool(full_train),
        "bn_recalibration_images": int(recalibration_images),
        "space": space.to_config(),
    }
    return json.loads(json.dumps(settings))  # tuples -> lists, as read back from the file


def results_file(path: str, settings: dict[str, Any]) -> RecordFile:
    """The results file: one line per finished (architecture, seed), all of one space and `settings`.

    Each run takes minutes, so every line is written at once, remote files too.
    """
    return RecordFile(
        path, RECORD_KIND, settings, key=lambda r: (r["architecture"], int(r["seed"])),
        what="a `tf-oneshot retrain` result", fix="rerun with the same flags or pass a new --results file",
        normalize=as_written_now, flush_seconds=0.0,
    )


def as_written_now(record: dict) -> dict:
    """A line as this version writes it: older lines trained with EARLIER_DEFAULTS, on the train split."""
    return {**EARLIER_DEFAULTS, **record, "full_train": bool(record.get("full_train"))}


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
    tflite: bool = False,
    method: str = "standalone",
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
        tflite: also export the best model as `best.tflite` (`export_tflite`).
        method: the network each child trains in (`CHILD_NETWORKS`):
            "standalone" (the default: the faster step, for long training) or
            "masked" (one trace for all, for many short runs; stand-alone
            where a space's children are not copies of one-shot weights):
            the same training (see the module docstring).

    Returns:
        A `RetrainSummary`.

    Raises:
        UserError: a results file of another space or other settings, a
            dataset whose images do not fit the space, no candidates or seeds,
            an unknown `method`.
    """
    if method not in CHILD_NETWORKS:
        raise UserError(f"--method={method} does not apply to retrain; choose {' or '.join(CHILD_NETWORKS)}.")
    candidates = _checked_candidates(candidates, seeds, space, config)
    results = results_file(results_path, _run_settings(config, space, recalibration_images, full_train))
    todo, skipped = _pending_runs(candidates, seeds, results)
    wanted = {str(c.architecture) for c in candidates}
    split = _ranking_split(full_train)
    log(
        f"retrain: {len(candidates)} architectures x {len(seeds)} seeds of {space.name}"
        f"{f' at {scale}' if (scale := space.describe_scale()) else ''}, "
        f"{config.train_steps} steps each on {'train + validation' if full_train else 'train'}; "
        f"{len(skipped)} runs already in {results_path}, {len(todo)} to train"
    )
    train = dict(strategy=strategy, log=log, recalibration_images=recalibration_images,
                 full_train=full_train, stop=stop)
    if method == "masked":
        todo = sorted(todo, key=lambda pair: pair[1])  # seed-major: the data order sets TF's seed per seed
    trainer = _child_trainer(method, space, config, train, [(c.architecture, s) for c, s in todo])
    trained, best_now, preempted = _train_runs(trainer, todo, results, results_path, len(skipped), split, log)
    if preempted:
        return _summary(results, wanted, trained, skipped, None, {}, preempted=True)
    all_records = [r for r in results.records() if r["architecture"] in wanted]
    best = _best(all_records)
    exported: dict[str, str] = {}
    if export_dir and best is not None:
        try:
            exported = _export_best(best, best_now, all_records, trainer, export_dir, split, log, tflite)
        except Preempted as e:
            log(f"export: {e}; a rerun exports the best")
            return _summary(results, wanted, trained, skipped, best[0], {}, preempted=True)
    return _summary(results, wanted, trained, skipped, best[0] if best else None, exported)


def _train_runs(trainer: ChildTrainer, todo: Sequence[tuple[Candidate, int]], results: RecordFile,
                results_path: str, done_before: int, split: str, log: Callable[[str], None],
                ) -> tuple[list[tuple[str, int]], dict[str, tuple[float, list[np.ndarray], int]], bool]:
    """Trains and records each pending (candidate, seed): (pairs trained, arch -> (accuracy, weights, seed) of
    its best seed trained now, whether `stop` ended it)."""
    best_now: dict[str, tuple[float, list[np.ndarray], int]] = {}
    trained: list[tuple[str, int]] = []
    for index, (candidate, seed) in enumerate(todo, start=1):
        arch = candidate.architecture
        log(f"[{index}/{len(todo)}] {arch} seed {seed}: training from scratch")
        try:
            metrics = trainer.run(arch, seed)
        except Preempted as e:
            log(f"[{index}/{len(todo)}] {e}: not recorded; a rerun trains it again")
            return trained, best_now, True
        _record_run(results, candidate, seed, metrics, trainer.space, log,
                    f"[{index}/{len(todo)}] {arch} seed {seed}: ")
        write_run_scalars(events_dir(results_path), "retrain", done_before + index - 1, metrics)
        trained.append((str(arch), seed))
        key, accuracy = str(arch), metrics[f"{split}_accuracy"]
        if key not in best_now or accuracy > best_now[key][0]:
            best_now[key] = (accuracy, trainer.model.get_weights(), seed)
    return trained, best_now, False


def _child_trainer(method: str, space: SearchSpace, config: TrainConfig, train: dict[str, Any],
                   pairs: Sequence[tuple[Hashable, int]]) -> ChildTrainer:
    """The child trainer of `method`; "masked" only where it is the same training as "standalone"."""
    if method == "standalone":
        return StandaloneChild(space, config, **train)
    trainer = StandaloneStartChild(space, config, **train)
    reason = trainer.unmapped_reason(space.sample(np.random.default_rng(0)))
    if reason:
        train["log"](f"retrain: {reason}; training each child as its own Keras model instead")
        return StandaloneChild(space, config, **train)
    trainer.plan(pairs)
    return trainer


class StandaloneStartChild(MaskedChild):
    """A child trained inside the one-shot model from its own stand-alone model's fresh weights.

    A child's stand-alone model draws its fresh weights from Keras
    initializers whose scale follows each weight's shape (Glorot: its fans);
    a child that takes a slice of a wider one-shot weight (the input 1x1
    convolution of a Bender et al. 2018 block, §3.1, over the inputs it
    chose; a channel width, SPOS §3.3) would start differently inside the
    one-shot model's fresh weights. So each child starts from the weights
    `StandaloneChild` draws for it (same seed, same values), copied into the
    one-shot model's weights at the elements the child reads: the same
    training as `StandaloneChild`, traced once.

    Drawing sets the seeds (`keras.utils.set_random_seed`), which makes
    TensorFlow instantiate every traced function again; `plan` draws the
    planned children before the first trace, up to `DRAW_BYTES` at a time.
    """

    DRAW_BYTES = 256 * 2**20

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._planned: list[tuple[Hashable, int]] = []
        self._drawn: dict[tuple[str, int], np.ndarray] = {}
        self._elements: dict[str, np.ndarray | None] = {}
        self._base: list[np.ndarray] | None = None

    def plan(self, pairs: Sequence[tuple[Hashable, int]]) -> None:
        """The (architecture, seed) children to come, in order: their fresh weights are drawn in groups."""
        self._planned = [(arch, int(seed)) for arch, seed in pairs]

    def unmapped_reason(self, arch: Hashable) -> str | None:
        """Why `arch`'s stand-alone weights cannot be placed in the one-shot model (None: they can)."""
        sizes = [w.size for w in self.model.get_weights()]
        if sum(sizes) >= 2**24:
            return f"the one-shot model of {self.space.name} holds over 2^24 weights, too many to map exactly"
        index = self._child_elements(arch)
        if index is None:
            return f"the children of {self.space.name} are not plain copies of one-shot weights"
        return None

    def _child_elements(self, arch: Hashable, child: keras.Model | None = None) -> np.ndarray | None:
        """For each element of `arch`'s stand-alone weights (flattened in order), the one-shot element it copies.

        `child` is `arch`'s stand-alone model (built if None); its weights are
        overwritten. None where a copy is not exact, missing or repeated.
        """
        if str(arch) not in self._elements:
            with self._numbered():
                self._map(arch, child)
        return self._elements[str(arch)]

    @contextlib.contextmanager
    def _numbered(self) -> Iterator[None]:
        """The one-shot weights numbered 0, 1, ... (exact in float32 below 2^24) for the body, then restored.

        Numbering and restoring the one-shot model cost most of a mapping
        (0.35 of 0.55 s a child on the demo's cell space): `_draw` numbers
        once for all the children it maps.
        """
        weights = self.model.get_weights()
        offsets = np.cumsum([0] + [w.size for w in weights])
        self.model.set_weights([np.arange(o, o + w.size).reshape(w.shape).astype(w.dtype)
                                for o, w in zip(offsets, weights)])
        try:
            yield
        finally:
            self.model.set_weights(weights)

    def _map(self, arch: Hashable, child: keras.Model | None) -> None:
        """`_child_elements` of `arch`, the one-shot weights numbered: `inherit_weights` copies them into
        `child`, whose elements set to -1 first show any it does not copy."""
        child = child or self.space.build_standalone(arch, ghost_batch_size=self.config.data.ghost_batch_size)
        child.set_weights([np.full(w.shape, -1, w.dtype) for w in child.get_weights()])
        self.space.inherit_weights(self.model, child, arch)
        flat = np.concatenate([w.ravel().astype(np.float64) for w in child.get_weights()])
        exact = (flat >= 0).all() and (flat == np.round(flat)).all() and len(np.unique(flat)) == flat.size
        self._elements[str(arch)] = flat.astype(np.int64) if exact else None

    def _draw(self, arch: Hashable, seed: int) -> None:
        """Draws the fresh stand-alone weights of (arch, seed) and of the planned children after it, up to DRAW_BYTES."""
        key = (str(arch), seed)
        upcoming = [p for p in self._planned if (str(p[0]), p[1]) != key]
        size = 0
        with self._numbered():  # drawing leaves the one-shot weights alone: they are restored after the maps
            for a, s in [(arch, seed), *upcoming]:
                if size > self.DRAW_BYTES:
                    break
                keras.utils.set_random_seed(s)  # as StandaloneChild draws them
                child = build_model(self.space, a, self.config)
                values = np.concatenate([w.ravel() for w in child.get_weights()])
                if str(a) not in self._elements:
                    self._map(a, child)
                self._drawn[(str(a), s)] = values
                size += values.nbytes
        self._planned = [p for p in upcoming if (str(p[0]), p[1]) not in self._drawn]

    def start_weights(self, arch: Hashable, seed: int) -> list[np.ndarray]:
        """The one-shot weights with `arch`'s elements set to its stand-alone model's fresh weights for `seed`."""
        if self._snapshot is not None:
            return super().start_weights(arch, seed)
        if self._base is None:
            self._base = self.model.get_weights()  # the elements no child reads: never used
        if (str(arch), seed) not in self._drawn:
            self._draw(arch, seed)
        flat = np.concatenate([w.ravel() for w in self._base])
        flat[self._child_elements(arch)] = self._drawn.pop((str(arch), seed))
        offsets = np.cumsum([0] + [w.size for w in self._base])
        return [flat[o:o + w.size].reshape(w.shape) for o, w in zip(offsets, self._base)]


def _checked_candidates(candidates: Sequence[Candidate], seeds: Sequence[int], space: SearchSpace,
                        config: TrainConfig) -> list[Candidate]:
    """The candidates without repeats, after checking that there is work and that the dataset fits the space."""
    if not candidates:
        raise UserError("no architectures to retrain.")
    if not seeds:
        raise UserError("--seeds is empty; give at least one seed, e.g. --seeds=0,1,2.")
    data.check_fits(config.data.dataset, config.data.data_dir, space.image_shape, space.num_classes)
    unique: dict[str, Candidate] = {}
    for c in candidates:
        unique.setdefault(str(space.validate(c.architecture)), c)
    return list(unique.values())


def _pending_runs(candidates: Sequence[Candidate], seeds: Sequence[int],
                  results: RecordFile) -> tuple[list[tuple[Candidate, int]], tuple[tuple[str, int], ...]]:
    """(the (candidate, seed) runs still to train, the (architecture, seed) runs `results` holds)."""
    done = results.done()
    pairs = [(c, int(s)) for c in candidates for s in seeds]
    todo = [(c, s) for c, s in pairs if (str(c.architecture), s) not in done]
    skipped = tuple((str(c.architecture), s) for c, s in pairs if (str(c.architecture), s) in done)
    return todo, skipped


def _record_run(results: RecordFile, candidate: Candidate, seed: int, metrics: dict[str, Any],
                space: SearchSpace, log: Callable[[str], None], prefix: str) -> None:
    """Appends one finished run's line (with the file's kind and settings) and logs its accuracies after `prefix`.

    The costs are the architecture's arithmetic, equal to its stand-alone Keras model's (the space contract).
    """
    cost = space.count(candidate.architecture)
    params = int(cost.params)
    results.append({
        "architecture": str(candidate.architecture),
        "seed": seed,
        "oneshot_accuracy": candidate.oneshot_accuracy,
        "params": params,
        "flops": int(cost.flops),
        **metrics,
    })
    validation = metrics["validation_accuracy"]
    log(f"{prefix}{'' if validation is None else f'validation {validation:.4f} '}"
        f"test {metrics['test_accuracy']:.4f}, {params:,} params ({metrics['seconds']:.0f}s)")


def events_dir(results_path: str) -> str:
    """TensorBoard events beside a results file: `r.jsonl` -> `r_events/`."""
    return os.path.splitext(results_path)[0] + "_events"


def write_run_scalars(path: str, prefix: str, step: int, metrics: dict[str, Any]) -> None:
    """One finished stand-alone run's accuracies as TensorBoard scalars (`<prefix>/test_accuracy` ...).

    Step = the run's line in its results file, so a resumed job continues the
    curve; Bender et al. 2018 (§3.4) compare these with the one-shot scores.
    """
    writer = tf.summary.create_file_writer(path)
    with writer.as_default():
        for key in ("validation_accuracy", "test_accuracy"):
            if metrics.get(key) is not None:
                tf.summary.scalar(f"{prefix}/{key}", float(metrics[key]), step=step)
    writer.close()


def _summary(results, wanted, trained, skipped, best, exported, preempted=False) -> RetrainSummary:
    return RetrainSummary(
        records=tuple(r for r in results.records() if r["architecture"] in wanted),
        trained=tuple(trained),
        skipped=skipped,
        best_architecture=best,
        exported=exported,
        preempted=preempted,
    )


def _export_best(best, best_now, records, trainer, export_dir, split, log, tflite) -> dict[str, str]:
    """Exports the best architecture, retraining its best seed if an earlier run trained it.

    A resumed run (after SIGTERM, say) may find that the best architecture was
    trained before the interruption, its weights gone with that process; its
    best seed is trained again (same seed, same data order) so that a resumed
    run ends with the same export as an uninterrupted one.
    """
    arch, mean = best
    space, config = trainer.space, trainer.config
    previous_path = os.path.join(export_dir, BEST_FILE)
    previous = read_json(previous_path) if tf.io.gfile.exists(previous_path) else None
    if (previous and previous.get("architecture") == arch and arch not in best_now
            and (not tflite or "tflite" in previous)):
        log(f"export: {arch} is already exported in {export_dir}")
        return {}
    if arch not in best_now:
        runs = [r for r in records if r["architecture"] == arch]
        seed = int(max(runs, key=lambda r: (r.get(f"{split}_accuracy") or 0.0, -int(r["seed"])))["seed"])
        log(f"export: the best architecture {arch} was trained in an earlier run; training seed {seed} "
            "again to export it")
        metrics = trainer.run(space.parse(arch), seed)
        best_now = {arch: (metrics[f"{split}_accuracy"], trainer.model.get_weights(), seed)}
    accuracy, weights, seed = best_now[arch]
    metadata = {
        "architecture": arch,
        "seed": seed,
        "selected_on": split,
        f"{split}_accuracy": accuracy,
        f"{split}_accuracy_mean": mean,
        "full_train": trainer.full_train,
        "seeds": sorted(int(r["seed"]) for r in records if r["architecture"] == arch),
        "space": space.to_config(),
        "dataset": config.data.dataset,
    }
    exported = export_model(_standalone_copy(trainer, space.parse(arch), weights), space, export_dir, metadata,
                            data.input_statistics(config.data.dataset), tflite=tflite)
    log(f"export: best {arch} ({split} {mean:.4f} mean over seeds) -> {exported['keras']}, "
        f"{exported['saved_model']}{', ' + exported['tflite'] if 'tflite' in exported else ''}")
    if "tflite_error" in exported:
        log(f"export: {TFLITE_FILE} not written, TFLite cannot convert this model ({exported['tflite_error']}); "
            f"{KERAS_FILE} and {SAVED_MODEL_DIR} are.")
    return exported
