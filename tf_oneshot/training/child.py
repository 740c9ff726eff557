"""One child network trained at a time, from given initial weights, then measured.

Retraining (Bender et al. 2018, §3.4, §4.1), the ground truth of a small
space ("Deeper insights into weight sharing" §3.1) and fine-tuning from the
shared weights (§3.3) each train children one at a time. `ChildTrainer` is
the one way they do it:

- initial weights fresh from the seed, or inherited from a trained one-shot
  model (`snapshot`, "Deeper insights" §3.3);
- the seed's data order (shuffle and augmentation), SGD with Nesterov
  momentum and the learning-rate schedule of `tf_oneshot.training.optimizers`
  (reset for every child), L2 on the child's kernels (`tasks`), and one host
  loop that polls `stop` (SIGTERM) between chunks of `config.log_every` steps;
- batch norm recalibrated over training images (SPOS §3.3: the moving
  averages of a brief training lag behind its final weights), then the
  held-out splits evaluated with moving statistics.

Two networks hold the child (`method`):

- `StandaloneChild`: the child's own Keras model (`space.build_standalone`),
  built and traced anew for every child; what retraining exports;
- `MaskedChild`: the space's one-shot model under the child's fixed masks
  (`tasks.FixedChildTask`), built and traced once for every child and seed.
  With the masks fixed, the one-shot model computes exactly the child, so
  each step equals the stand-alone step (tests/test_ground_truth.py checks
  the weights).

`FusedChildren` trains K children at once in the space's fused network
(HFTA: each operator serves all K, each child with its own weights).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Hashable, Sequence
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from tf_oneshot.errors import UserError
from tf_oneshot.layers.ghost_batch_norm import GhostBatchNormalization
from tf_oneshot.search_spaces import SearchSpace
from tf_oneshot.training import data, optimizers, strategy_loop
from tf_oneshot.training.config import TrainConfig
from tf_oneshot.training.preemption import Preempted
from tf_oneshot.training.tasks import TOTALS, FixedChildTask, StandaloneTask, evaluation_sums

EVAL_BATCH_CAP = 500
RECALIBRATION_IMAGES = 2048
SHUFFLE_BUFFER = 10_000
HELD_OUT = ("validation", "test")
FUSE_LIMIT = 16  # children per fused step at most (a bound, not tuned: 8 is what was measured)
MEMORY_SHARE = 0.25  # of the available host memory, for the fused children's weights and activations


# ------------------------------------------------------------------ pieces
def set_seed_once(seed: int) -> None:
    """`keras.utils.set_random_seed(seed)` unless TF's global seed is `seed` already.

    Setting TF's global seed clears TF's caches, so every traced function is
    instantiated and optimized again on its next call: with the one-shot
    model's graph that cost 20-80 s per child on 2 shared cores, more than
    the child's training (the masked ground truth's regression, issue 20).
    """
    if tf.compat.v1.get_seed(0)[0] != seed:
        keras.utils.set_random_seed(seed)


def oneshot_weights(space: SearchSpace, config: TrainConfig, seed: int) -> list[np.ndarray]:
    """The fresh weights of `space`'s one-shot model for `seed`: a masked child's initial weights."""
    keras.utils.set_random_seed(seed)
    return space.build_oneshot(config.data.ghost_batch_size).get_weights()


def build_model(space: SearchSpace, arch: Hashable, config: TrainConfig) -> keras.Model:
    """The stand-alone model of `arch`, its weights created."""
    model = optimizers.set_bn_momentum(space.build_standalone(arch, ghost_batch_size=config.data.ghost_batch_size),
                                       config)
    if not model.built:  # a subclassed model creates its weights on its first call; a functional one has them
        model(tf.zeros((config.data.ghost_batch_size, *space.image_shape)), training=False)
    return model


def _eval_batch(num_examples: int, multiple: int) -> int:
    """Largest batch <= EVAL_BATCH_CAP dividing the split, so no example is dropped."""
    for b in range(min(EVAL_BATCH_CAP, num_examples), 0, -1):
        if num_examples % b == 0 and b % multiple == 0:
            return b
    return max(multiple, min(EVAL_BATCH_CAP, num_examples) // multiple * multiple)


def _training_dataset(config: TrainConfig, split: str, seed: int) -> tf.data.Dataset:
    """Training batches of `split`, shuffled and augmented by `seed` (and TF's global seed, set to it).

    A shuffle buffer larger than the split would fill itself from several
    epochs before the first batch (and keep filling after the last).

    tf.data's autotuning is off: a child's iterator is dropped after its brief
    run, and with autotuning on, dropping it waited for the autotuner's thread
    on 2 busy cores (0.8-2.7 s for 2-3 of 10 children, and once ~20 s, in the
    demo's retrain stage). Parallel map keeps the machine's parallelism and
    prefetching its own buffer rule; the batches are the same.
    """
    set_seed_once(seed)
    info = data.dataset_info(config.data.dataset, config.data.data_dir)
    options = tf.data.Options()
    options.autotune.enabled = False
    return data.make_dataset(
        config.data.dataset, split, config.data.batch_size, training=True, data_dir=config.data.data_dir,
        seed=seed, shuffle_buffer=min(SHUFFLE_BUFFER, data.split_size(info, split)),
    ).with_options(options)


def _training_batches(config: TrainConfig, split: str, seed: int, strategy: tf.distribute.Strategy) -> Any:
    """An iterator of per-replica training batches of `split`, shuffled and augmented by `seed`."""
    return iter(strategy.experimental_distribute_dataset(_training_dataset(config, split, seed)))


def _recalibration_batches(config: TrainConfig, split: str, num_images: int,
                           strategy: tf.distribute.Strategy) -> tuple[Any, int]:
    """(whole training batches of un-augmented `split` images covering `num_images`, their image count)."""
    info = data.dataset_info(config.data.dataset, config.data.data_dir)
    batches = max(1, min(num_images, data.split_size(info, split)) // config.data.batch_size)
    dataset = data.make_dataset(config.data.dataset, split, config.data.batch_size, training=False,
                                data_dir=config.data.data_dir, repeat=False).take(batches)
    return strategy.experimental_distribute_dataset(dataset), batches * config.data.batch_size


def _evaluation_batches(config: TrainConfig, split: str, strategy: tf.distribute.Strategy) -> Any:
    """The whole `split` in batches that divide it (no example dropped)."""
    info = data.dataset_info(config.data.dataset, config.data.data_dir)
    batch = _eval_batch(info.num_examples[split], strategy.num_replicas_in_sync)
    dataset = data.make_dataset(config.data.dataset, split, batch, training=False,
                                data_dir=config.data.data_dir)
    return strategy.experimental_distribute_dataset(dataset)


def _held_out(totals: np.ndarray) -> dict[str, Any]:
    """{"accuracy", "loss" (mean cross-entropy), "examples"} from `evaluation_sums` totals."""
    examples = max(float(totals[1]), 1.0)
    return {"accuracy": float(totals[0] / examples), "loss": float(totals[2] / examples),
            "examples": int(totals[1])}


def _ghost_batch_norms(model: keras.Model) -> list[GhostBatchNormalization]:
    return [layer for layer in model.layers if isinstance(layer, GhostBatchNormalization)]


def recalibrate_batch_norm(
    model: keras.Model,
    config: TrainConfig,
    strategy: tf.distribute.Strategy | None = None,
    num_images: int = RECALIBRATION_IMAGES,
    split: str = "train",
) -> int:
    """Replaces a stand-alone model's moving batch-norm statistics by exact averages over training images.

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
    layers = _ghost_batch_norms(model)
    if not layers or num_images <= 0:
        return 0
    batches, images = _recalibration_batches(config, split, num_images, strategy)
    for layer in layers:
        layer.set_mode("recalibrate")
    # The layers read their mode when traced: the function is traced after set_mode.
    strategy_loop.run_on_batches(strategy, lambda batch: model(batch[0], training=False), batches)
    for layer in layers:
        layer.set_mode("moving")
    return images


def evaluate_with_loss(
    model: keras.Model,
    config: TrainConfig,
    split: str,
    strategy: tf.distribute.Strategy | None = None,
) -> dict[str, Any]:
    """Accuracy and mean cross-entropy of a stand-alone `model` on a whole split (inference mode).

    The loss separates models whose accuracies tie ("Deeper insights" §3.1:
    the ground truth of a small space).

    Returns:
        {"accuracy": float, "loss": float (mean over examples), "examples": int}.
    """
    strategy = strategy or tf.distribute.get_strategy()
    totals = strategy_loop.evaluate(
        strategy, lambda batch: evaluation_sums(model(batch[0], training=False), batch[1]),
        _evaluation_batches(config, split, strategy),
    )
    return _held_out(totals)


def evaluate(
    model: keras.Model,
    config: TrainConfig,
    split: str,
    strategy: tf.distribute.Strategy | None = None,
) -> tuple[float, int]:
    """Accuracy of a stand-alone `model` on a whole split (inference mode); returns (accuracy, examples)."""
    result = evaluate_with_loss(model, config, split, strategy)
    return result["accuracy"], result["examples"]


# ----------------------------------------------------------------- trainer
class ChildTrainer:
    """Trains one child at a time and measures it; `StandaloneChild` and `MaskedChild` hold the network.

    Args:
        space: the search space (its fields fix the network).
        config: dataset, train_steps, batch and ghost batch, learning rate,
            schedule, momentum, weight decay, log_every, jit_compile.
        strategy: a tf.distribute strategy (default: the default strategy).
        snapshot: a trained one-shot model of `space` whose weights every
            child inherits ("Deeper insights" §3.3); None: fresh weights from
            each child's seed.
        recalibration_images: training images over which the batch-norm
            statistics are recomputed before evaluation (0: keep the moving
            averages).
        full_train: train and recalibrate on train + validation (Bender et
            al. 2018, §3.4); the validation metrics are then None.
        stop: polled between chunks of `config.log_every` steps; True raises
            `Preempted` (the child in hand is dropped).
        log: one line per chunk (default: none).

    Raises:
        UserError: the batch does not split into ghost batches per replica.
    """

    method = ""

    def __init__(self, space: SearchSpace, config: TrainConfig, strategy: tf.distribute.Strategy | None = None, *,
                 snapshot: keras.Model | None = None, recalibration_images: int = RECALIBRATION_IMAGES,
                 full_train: bool = False, stop: Callable[[], bool] | None = None,
                 log: Callable[[str], None] | None = None) -> None:
        self.space, self.config = space, config
        self.strategy = strategy = strategy or tf.distribute.get_strategy()
        strategy_loop.per_replica_batch(strategy, config.data.batch_size, config.data.ghost_batch_size)
        self.full_train = bool(full_train)
        self.train_split = data.FULL_TRAIN if full_train else "train"
        self.stop = stop
        self.log = log or (lambda line: None)
        self._recalibration = (_recalibration_batches(config, self.train_split, recalibration_images, strategy)[0]
                               if recalibration_images > 0 else None)
        self._evaluation: dict[str, Any] = {}
        self._iterator: Any = None
        self._what = "child"
        self._build(snapshot)

    # Each network keeps what it needs of the snapshot and sets `model`, `optimizer`, `step` and the
    # traced functions (`_compile`): once in `_build`, or for every child in `_prepare`, which also
    # sets the child's initial weights.
    def _build(self, snapshot: keras.Model | None) -> None:
        raise NotImplementedError

    def _prepare(self, arch: Hashable, seed: int) -> None:
        raise NotImplementedError

    def _set_bn_mode(self, mode: str) -> bool:
        """Sets the evaluation mode of the child's batch norms; False if it has none."""
        raise NotImplementedError

    def _compile(self, task: Any, logits: Callable[[tf.Tensor], tf.Tensor]) -> None:
        """The host loop of `task.train_step`, and recalibration and evaluation through `logits(images)`.

        Traced on their first call: batch-norm layers read their mode when traced.
        """
        strategy = self.strategy
        self._train_loop = strategy_loop.train_loop(strategy, task.train_step, TOTALS,
                                                    jit_compile=self.config.jit_compile, counter=self.step)
        self._recalibrate = strategy_loop.batch_runner(strategy, lambda batch: logits(batch[0]))
        self._evaluate = strategy_loop.evaluator(strategy, lambda batch: evaluation_sums(logits(batch[0]), batch[1]))

    def tracing_count(self) -> int:
        """Traces of the current train loop (1 after the first child of a `MaskedChild`: it never retraces)."""
        return self._train_loop.experimental_get_tracing_count()

    def start(self, arch: Hashable, seed: int) -> None:
        """Sets `arch`'s initial weights, a reset optimizer and `seed`'s data order."""
        self._prepare(arch, seed)
        self._iterator = _training_batches(self.config, self.train_split, seed, self.strategy)
        self._what = f"{arch} seed {seed}"

    def train(self, steps: int) -> float | None:
        """`steps` steps of the started child; the mean training loss of the last chunk (None: no step).

        Raises:
            Preempted: `stop` returned True before the steps ended.
        """
        step, loss = 0, None
        every = max(1, min(self.config.log_every, steps))
        while step < steps:
            if self.stop is not None and self.stop():
                raise Preempted(f"{self._what} stopped at step {step}")
            n = min(every, steps - step)
            loss = float(self._train_loop(self._iterator, tf.constant(n), {}).numpy()[0])
            loss /= n * self.config.data.batch_size
            step += n
            self.log(f"  {self._what}: step {step}/{steps} loss {loss:.4f}")
        return loss

    def measure(self, splits: Sequence[str] = HELD_OUT) -> dict[str, Any]:
        """{split}_accuracy, _loss and _examples of the child, batch norm recalibrated first.

        No validation metrics after training on the validation split (`full_train`, §3.4).
        """
        if self._recalibration is not None and self._set_bn_mode("recalibrate"):
            self._recalibrate(self._recalibration)
        self._set_bn_mode("moving")
        metrics: dict[str, Any] = {}
        for split in splits:
            if split == "validation" and self.full_train:
                metrics.update(validation_accuracy=None, validation_loss=None, validation_examples=0)
                continue
            if split not in self._evaluation:
                self._evaluation[split] = _evaluation_batches(self.config, split, self.strategy)
            result = _held_out(self._evaluate(self._evaluation[split]))
            metrics.update({f"{split}_{name}": value for name, value in result.items()})
        return metrics

    def run(self, arch: Hashable, seed: int, steps: int | None = None) -> dict[str, Any]:
        """Trains `arch` from its initial weights for `steps` (default: `config.train_steps`) and measures it.

        Returns:
            train_loss, validation_ and test_ accuracy, loss and examples, seconds.
        """
        tic = time.perf_counter()
        self.start(arch, seed)
        metrics = {"train_loss": self.train(self.config.train_steps if steps is None else steps), **self.measure()}
        metrics["seconds"] = round(time.perf_counter() - tic, 3)
        return metrics


class StandaloneChild(ChildTrainer):
    """The child as its own Keras model, built and traced for every child (Bender et al. 2018, §3.4).

    `model` is the last child's model: what retraining exports.
    """

    method = "standalone"

    def _build(self, snapshot: keras.Model | None) -> None:
        self._snapshot = snapshot

    def _prepare(self, arch: Hashable, seed: int) -> None:
        config = self.config
        keras.utils.set_random_seed(seed)  # the weights of a fresh child (its functions are new anyway)
        with self.strategy.scope():
            self.model = build_model(self.space, arch, config)
            if self._snapshot is not None:
                self.space.inherit_weights(self._snapshot, self.model, arch)
            self.step = optimizers.global_step()
            self.optimizer = optimizers.make_optimizer(config, self.step)
            self.optimizer.build(self.model.trainable_variables)
        task = StandaloneTask(self.model, self.optimizer, config.data.batch_size,
                              self.strategy.num_replicas_in_sync, config.optimizer.weight_decay)
        self._compile(task, lambda images: self.model(images, training=False))

    def _set_bn_mode(self, mode: str) -> bool:
        layers = _ghost_batch_norms(self.model)
        for layer in layers:
            layer.set_mode(mode)
        return bool(layers)


class MaskedChild(ChildTrainer):
    """The child inside the space's one-shot model under fixed masks: one trace for every child and seed.

    Building and tracing a stand-alone network per child costs more than a
    brief training at digits scale (benchmarks/ground_truth_speed.py). Here
    one one-shot model holds the child; each child starts from its initial
    weights (the seed's fresh one-shot weights, or the snapshot's) and a reset
    optimizer, and the evaluation pads a batch to whole ghost batches
    (harmless with moving statistics). The space's one-shot model must
    compute its children exactly under their masks, which the space contract
    tests require. `model` is the one-shot model.
    """

    method = "masked"

    def _build(self, snapshot: keras.Model | None) -> None:
        space, config, strategy = self.space, self.config, self.strategy
        with strategy.scope():
            self.model = optimizers.set_bn_momentum(space.build_oneshot(config.data.ghost_batch_size), config)
            self.step = optimizers.global_step()
            self.optimizer = optimizers.make_optimizer(config, self.step)
            self.optimizer.build(self.model.trainable_variables)
            self.masks = {k: tf.Variable(np.zeros(shape, np.float32), trainable=False, name=f"child_{k}")
                          for k, shape in space.mask_shapes().items()}
        self._snapshot = None if snapshot is None else snapshot.get_weights()  # the weights, not the model
        if self._snapshot is not None and len(self._snapshot) != len(self.model.weights):
            raise ValueError(f"the snapshot holds {len(self._snapshot)} weights; the one-shot model of "
                             f"{space.name} {len(self.model.weights)}.")
        self.task = task = FixedChildTask(self.model, self.optimizer, self.masks, config.data.batch_size,
                                          strategy.num_replicas_in_sync, config.optimizer.weight_decay)
        self._compile(task, task.eval_logits)
        self._initial: dict[int, list[np.ndarray]] = {}

    def initial_weights(self, seed: int) -> list[np.ndarray]:
        """The one-shot model's fresh weights for `seed` (built once per seed)."""
        if seed not in self._initial:
            # Ground-truth pairs come seed-major: keep one seed's weights, not every seed's.
            self._initial = {seed: oneshot_weights(self.space, self.config, seed)}
        return self._initial[seed]

    def start_weights(self, arch: Hashable, seed: int) -> list[np.ndarray]:
        """The one-shot model's weights a child starts from: the snapshot's, or the seed's fresh ones."""
        return self.initial_weights(seed) if self._snapshot is None else self._snapshot

    def _prepare(self, arch: Hashable, seed: int) -> None:
        self.model.set_weights(self.start_weights(arch, seed))
        self.step.assign(0)
        self.optimizer.iterations.assign(0)
        optimizers.reset_slots(self.optimizer)
        for key, value in self.space.encode(arch).items():
            self.masks[key].assign(value)

    def _set_bn_mode(self, mode: str) -> bool:
        self.model.set_bn_mode(mode)
        return True


def fuse_count(space: SearchSpace, config: TrainConfig, limit: int = FUSE_LIMIT) -> int:
    """Children per fused step from memory: as many as a quarter of the available host memory holds, at most `limit`.

    A child's share is bounded above by its weights, gradients and momentum
    (4 bytes, three times the one-shot model's parameters) and its
    activations, kept for the backward pass: at most one float per
    multiply-add of each image of the batch, twice (forward and backward).
    """
    cost = space.count_oneshot()
    per_child = 4 * (3 * cost.params + 2 * config.data.batch_size * cost.flops)
    return max(1, min(limit, int(MEMORY_SHARE * available_memory()) // max(1, per_child)))


def available_memory() -> int:
    """Bytes of host memory available now (Linux: MemAvailable; elsewhere the free pages)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


class FusedChildren:
    """K children trained side by side in one network and one traced step, each with its own weights (HFTA).

    At digits scale a child's step is a few hundred tiny operators, and
    their dispatch, not their arithmetic, is the cost (HFTA, Wang et al.
    MLSys 2021, §2: small models leave the hardware idle). K one-shot models
    in one step keep K times the operators, and measured no faster per child
    than one at a time (issue 20); HFTA's horizontal fusion does: the space's
    fused network (`SearchSpace.build_fused`) runs the same operator of the
    K children as one, each child under its own fixed masks, as
    `MaskedChild` runs one. Each child keeps exactly what it gets alone: its
    initial weights, its seed's data order (K datasets zipped), its optimizer
    state and the learning-rate schedule (they start together), its
    batch-norm recalibration and evaluation (tests/test_fused_children.py
    checks them against separate runs). One trace serves every group; a group
    of fewer than K fills its free slots with its first child and drops
    their results.

    Args:
        space, config, strategy, snapshot, recalibration_images, full_train,
            stop, log: as for `ChildTrainer`.
        children: K, the children of one step; None: `fuse_count` (from memory).

    Raises:
        UserError: K is not positive, or the space has no fused network.
    """

    method = "fused"

    def __init__(self, space: SearchSpace, config: TrainConfig, strategy: tf.distribute.Strategy | None = None, *,
                 children: int | None = None, snapshot: keras.Model | None = None,
                 recalibration_images: int = RECALIBRATION_IMAGES, full_train: bool = False,
                 stop: Callable[[], bool] | None = None, log: Callable[[str], None] | None = None) -> None:
        if children is not None and (isinstance(children, bool) or not isinstance(children, int) or children < 1):
            raise UserError(f"--fuse_children={children} is invalid; expected a positive number of children, e.g. 8.")
        self.space, self.config = space, config
        self.children = k = children or fuse_count(space, config)
        self.strategy = strategy = strategy or tf.distribute.get_strategy()
        strategy_loop.per_replica_batch(strategy, config.data.batch_size, config.data.ghost_batch_size)
        self.full_train = bool(full_train)
        self.train_split = data.FULL_TRAIN if full_train else "train"
        self.stop, self.log = stop, log or (lambda line: None)
        self._recalibration = (_recalibration_batches(config, self.train_split, recalibration_images, strategy)[0]
                               if recalibration_images > 0 else None)
        with strategy.scope():
            self.model = optimizers.set_bn_momentum(space.build_fused(k, config.data.ghost_batch_size), config)
            self.step = optimizers.global_step()
            self.optimizer = optimizers.make_optimizer(config, self.step)
            self.optimizer.build(self.model.trainable_variables)
            self.masks = {key: tf.Variable(np.zeros((k, *shape), np.float32), trainable=False, name=f"children_{key}")
                          for key, shape in space.mask_shapes().items()}
        self._snapshot = None if snapshot is None else snapshot.get_weights()
        self._initial: dict[int, list[np.ndarray]] = {}
        self._train_loop = strategy_loop.train_loop(strategy, self._train_step, TOTALS * k,
                                                    jit_compile=config.jit_compile, counter=self.step)
        self._recalibrate = strategy_loop.batch_runner(strategy, lambda batch: self._logits(batch[0]))
        self._evaluate = strategy_loop.evaluator(
            strategy, lambda batch: tf.concat([evaluation_sums(out, batch[1]) for out in tf.unstack(
                self._logits(batch[0]))], 0))
        self._evaluation: dict[str, Any] = {}

    def _train_step(self, batches, per_step=None) -> tf.Tensor:
        """One replica's step of the K children: the sum of their losses, so each child's weights get its own gradient.

        Each child's loss is `FixedChildTask`'s: its data loss over the global
        batch plus its masked L2 over the replicas; returns its `TOTALS` sums.
        """
        images, labels = (tf.stack([batch[j] for batch in batches]) for j in (0, 1))
        masks = {key: mask.read_value() for key, mask in self.masks.items()}
        replicas = self.strategy.num_replicas_in_sync
        with tf.GradientTape() as tape:
            logits = tf.cast(self.model({"images": images, **masks}, training=True), tf.float32)  # [K, n, classes]
            per_example = keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True)
            l2 = self.config.optimizer.weight_decay * self.model.masked_l2(masks) / replicas
            loss = tf.reduce_sum(tf.reduce_sum(per_example, 1) / self.config.data.batch_size + l2)
        variables = self.model.trainable_variables
        self.optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
        correct = tf.equal(tf.argmax(logits, -1, output_type=tf.int32), labels)
        examples = tf.fill([self.children], tf.cast(tf.shape(labels)[1], tf.float32))
        return tf.reshape(tf.stack([tf.reduce_sum(per_example, 1), tf.reduce_sum(tf.cast(correct, tf.float32), 1),
                                    examples, l2, tf.zeros([self.children])], 1), [-1])

    def _logits(self, images) -> tf.Tensor:
        """[K, n, classes]: every child's inference logits of the same n images (padded to whole ghost batches)."""
        count = int(images.shape[0])
        pad = -count % self.config.data.ghost_batch_size
        padded = tf.pad(images, [[0, pad]] + [[0, 0]] * (images.shape.rank - 1)) if pad else images
        tiled = tf.tile(padded[None], [self.children] + [1] * padded.shape.rank)
        masks = {key: mask.read_value() for key, mask in self.masks.items()}
        return self.model({"images": tiled, **masks}, training=False)[:, :count]

    def initial_weights(self, seed: int) -> list[np.ndarray]:
        """The one-shot model's fresh weights for `seed`, as `MaskedChild` gives them (kept for the group's seeds)."""
        if seed not in self._initial:
            self._initial[seed] = oneshot_weights(self.space, self.config, seed)
        return self._initial[seed]

    def tracing_count(self) -> int:
        """Traces of the fused train loop (1 for every group of children)."""
        return self._train_loop.experimental_get_tracing_count()

    def start(self, pairs: Sequence[tuple[Hashable, int]]) -> None:
        """Sets each (child, seed)'s initial weights and masks, a reset optimizer and its seed's data order."""
        if not 1 <= len(pairs) <= self.children:
            raise ValueError(f"a group holds 1 to {self.children} children; got {len(pairs)}.")
        filled = [*pairs, *[pairs[0]] * (self.children - len(pairs))]
        seeds = {seed for _, seed in filled}
        self._initial = {seed: weights for seed, weights in self._initial.items() if seed in seeds}
        self.model.set_children([self._snapshot or self.initial_weights(seed) for _, seed in filled])
        self.step.assign(0)
        self.optimizer.iterations.assign(0)
        optimizers.reset_slots(self.optimizer)
        encoded = [self.space.encode(arch) for arch, _ in filled]
        for key, mask in self.masks.items():
            mask.assign(np.stack([e[key] for e in encoded]))
        zipped = tf.data.Dataset.zip(tuple(_training_dataset(self.config, self.train_split, seed)
                                           for _, seed in filled))
        self._iterator = iter(self.strategy.experimental_distribute_dataset(zipped))
        self._count = len(pairs)

    def child_weights(self, child: int) -> list[np.ndarray]:
        """Child `child`'s weights of the group, in the order of the one-shot model's `get_weights()`."""
        return self.model.child_weights(child)

    def train(self, steps: int) -> list[float | None]:
        """`steps` steps of every started child; each child's mean training loss of the last chunk."""
        step, losses = 0, [None] * self._count
        every = max(1, min(self.config.log_every, steps))
        while step < steps:
            if self.stop is not None and self.stop():
                raise Preempted(f"{self._count} fused children stopped at step {step}")
            n = min(every, steps - step)
            totals = self._train_loop(self._iterator, tf.constant(n), {}).numpy().reshape(self.children, TOTALS)
            losses = [float(t[0]) / (n * self.config.data.batch_size) for t in totals[:self._count]]
            step += n
            self.log(f"  {self._count} fused children: step {step}/{steps} loss {min(losses):.4f}..{max(losses):.4f}")
        return losses

    def measure(self, splits: Sequence[str] = HELD_OUT) -> list[dict[str, Any]]:
        """Each started child's metrics as `ChildTrainer.measure` gives them, batch norm recalibrated first."""
        if self._recalibration is not None:
            self.model.set_bn_mode("recalibrate")
            self._recalibrate(self._recalibration)
        self.model.set_bn_mode("moving")
        metrics: list[dict[str, Any]] = [{} for _ in range(self._count)]
        for split in splits:
            if split == "validation" and self.full_train:
                for m in metrics:
                    m.update(validation_accuracy=None, validation_loss=None, validation_examples=0)
                continue
            if split not in self._evaluation:
                self._evaluation[split] = _evaluation_batches(self.config, split, self.strategy)
            totals = self._evaluate(self._evaluation[split]).reshape(self.children, -1)
            for m, row in zip(metrics, totals):
                m.update({f"{split}_{name}": value for name, value in _held_out(row).items()})
        return metrics

    def run(self, pairs: Sequence[tuple[Hashable, int]], steps: int | None = None) -> list[dict[str, Any]]:
        """Trains each (child, seed) of a group from its initial weights and measures it.

        Returns:
            Per pair, what `ChildTrainer.run` returns; `seconds` is the group's time over its size.
        """
        tic = time.perf_counter()
        self.start(pairs)
        losses = self.train(self.config.train_steps if steps is None else steps)
        results = [{"train_loss": loss, **m} for loss, m in zip(losses, self.measure())]
        for result in results:
            result["seconds"] = round((time.perf_counter() - tic) / len(pairs), 3)
        return results


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
    snapshot: keras.Model | None = None,
) -> tuple[keras.Model, dict[str, Any]]:
    """Trains one architecture as its own Keras model and measures it (`StandaloneChild`).

    Args:
        space: the network around the cell (F scaled as wished).
        arch: the child.
        config: dataset, steps, batch and ghost batch, optimizer settings.
        seed: seeds the weights and the data order.
        strategy: a tf.distribute strategy (default: the default strategy).
        log: progress lines.
        recalibration_images: see `ChildTrainer`.
        full_train: train (and recalibrate) on train + validation (§3.4);
            validation_accuracy and validation_loss are then None.
        stop: polled between chunks of `config.log_every` steps.
        snapshot: a trained one-shot model whose weights the child inherits
            ("Deeper insights" §3.3) instead of the seed's random ones; the
            seed still orders the data.

    Returns:
        (the model, metrics: validation_accuracy, test_accuracy, their mean
        cross-entropies validation_loss and test_loss, the numbers of
        examples they cover, train_loss of the last steps, seconds).

    Raises:
        Preempted: `stop` returned True before the training ended.
    """
    trainer = StandaloneChild(space, config, strategy, snapshot=snapshot, recalibration_images=recalibration_images,
                              full_train=full_train, stop=stop, log=log)
    metrics = trainer.run(arch, seed)
    return trainer.model, metrics
