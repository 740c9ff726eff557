"""One-shot accuracy of architectures from the shared weights, compiled once.

Bender et al. 2018, §3.3: a candidate is evaluated by zeroing the paths it
does not use in the trained one-shot model and measuring its validation
accuracy. The architecture enters the compiled function as mask tensors of a
fixed shape, so scoring never retraces per architecture (`tracing_count`).

Batch norm at evaluation is a mode:
- "batch" (Bender et al. 2018, §3.2): statistics of each ghost batch on the
  fly. The validation set is split into fixed ghost batches; one pass tiles a
  chunk of them once per architecture and gives each copy its own mask (one
  architecture per ghost batch), so G architectures share one forward pass
  and each sees exactly the ghost batches it would see alone.
- "recalibrate" (SPOS, §3.4): the moving statistics are recomputed for each
  candidate as the exact average over a fixed set of training images, then
  used on the validation set, all inside one compiled function per candidate.
  One moving statistic per layer means one candidate per pass. SPOS uses
  20,000 training images on ImageNet; other datasets default to the same
  share of their training split, at least 512 (`default_recalibration_images`).
  It is the default for single-path spaces (`SearchSpace.default_bn_mode`).
- "running" ("Deeper insights" App. A.2.2, Figure 8): the moving statistics
  as training left them in the shared weights, the same for every candidate,
  so G architectures still share one pass.

Under a strategy with several replicas (GPUs, TPU cores), each replica scores
its own `archs_per_pass` architectures over the same images: architectures,
not images, are split over replicas, so every candidate sees exactly the ghost
batches it would see on one device.

The symmetrized KL divergence of §5 compares a candidate's predicted class
distribution with that of the all-on network on 64 training images, with
batch statistics on the fly: a label-free score.
"""

from __future__ import annotations

import math
import time
from collections.abc import Hashable, Sequence
from typing import Any

import numpy as np
import tensorflow as tf

from tf_oneshot.errors import UserError
from tf_oneshot.search.bn_modes import check_bn_mode
from tf_oneshot.training.model_dir import ModelDir
from tf_oneshot.training.strategy_loop import SplitFunction

KL_EXAMPLES = 64  # Bender et al. 2018, §5: "64 random examples from the training set"
# §5's references: "almost all the operations ... enabled (base dropout rate r = 10^-8)".
KL_REFERENCES = ("all_on", "sampled")
KL_REFERENCE_RATE = 1e-8
# SPOS §3.4: "recalculated on a random subset of training data (20000 images on
# ImageNet)", of the 1,231,121 training images left after its validation split.
SPOS_RECALIBRATION_IMAGES = 20_000
SPOS_TRAIN_IMAGES = 1_231_121
MIN_RECALIBRATION_IMAGES = 512
# Largest tensor of validation images kept in memory; beyond it ask for a cap.
MAX_VALIDATION_BYTES = 2 << 30


def default_recalibration_images(train_images: int) -> int:
    """SPOS's 20,000 ImageNet images as a share of any training split, at least 512 (all of a smaller split)."""
    share = round(train_images * SPOS_RECALIBRATION_IMAGES / SPOS_TRAIN_IMAGES)
    return min(train_images, max(MIN_RECALIBRATION_IMAGES, share))


def recalibration_images_for(model_dir: str | ModelDir, requested: int | None = None, data_dir: str | None = None) -> int:
    """The recalibration image count of a search on `model_dir`: `requested`, or the dataset's default.

    Raises:
        UserError: a count below 1, or a dataset that is not prepared.
    """
    if requested is not None:
        if isinstance(requested, bool) or not isinstance(requested, int) or requested < 1:
            raise UserError(f"--recalibration_images={requested} is invalid; expected a positive integer.")
        return requested
    from tf_oneshot.training import data

    config = ModelDir.open(model_dir).config
    info = data.dataset_info(config.data.dataset, data_dir or config.data.data_dir)
    return default_recalibration_images(info.num_examples["train"])


def scoring_options(
    model_dir: str | ModelDir,
    bn_mode: str,
    kl: bool = False,
    kl_reference: str = "all_on",
    recalibration_images: int | None = None,
    validation_examples: int | None = None,
    data_dir: str | None = None,
) -> dict[str, Any]:
    """How a search's scores are taken, as its results lines record it (`options`, beside the algorithm's).

    The KL divergence (§5) is stored with each score; the validation subset
    and the recalibration images (SPOS §3.4) change the scores: a rerun with
    other values must not reuse the lines, so they are part of the identity.

    Raises:
        UserError: an unknown bn_mode or a bad recalibration image count.
    """
    options: dict[str, Any] = {"kl": kl, "validation_examples": validation_examples}
    if kl:
        options["kl_reference"] = kl_reference
    if check_bn_mode(bn_mode) == "recalibrate":
        options["recalibration_images"] = recalibration_images_for(model_dir, recalibration_images, data_dir)
    return options


def _largest_divisor(n: int, at_most: int) -> int:
    return max(d for d in range(1, max(1, min(n, at_most)) + 1) if n % d == 0)


class OneShotScorer:
    """Scores batches of architectures with a trained `OneShotModel`.

    Args:
        model: the trained one-shot model.
        space: its search space.
        images, labels: the validation examples (numpy); the first multiple of
            the ghost batch size of them are used.
        bn_mode: "batch", "recalibrate" or "running" (`tf_oneshot.search.bn_modes`).
        archs_per_pass: architectures per forward pass in "batch" mode (one
            per ghost batch); None picks the fastest of a few by timing.
            Always 1 in "recalibrate" mode.
        recalibration_images: training images for "recalibrate" (SPOS).
        kl_images: training images for the KL divergence (None: no KL).
        kl_reference: "all_on" (the default: the exact all-on network, the
            limit of §5's references as r -> 0, with no sampling noise) or
            "sampled" (§5 as published: one reference per ghost batch of the
            KL images, sampled by path dropout at r = 1e-8).
        step: the checkpoint step, for records.
        options: how the scores are taken, as results lines record it
            (`scoring_options`; set by `from_model_dir`).
        pass_examples: examples per forward pass to aim for (all copies).
        jit_compile: compile with XLA (TPU; slow for depthwise convs on CPU).
        strategy: the strategy `model` was built under (default: the current
            one); each replica scores `archs_per_pass` architectures a call.

    Raises:
        UserError: for an unknown bn_mode or too few examples.
    """

    def __init__(
        self,
        model: Any,
        space: Any,
        images: np.ndarray,
        labels: np.ndarray,
        *,
        bn_mode: str = "batch",
        archs_per_pass: int | None = None,
        recalibration_images: np.ndarray | None = None,
        kl_images: np.ndarray | None = None,
        kl_reference: str = "all_on",
        step: int = 0,
        options: dict[str, Any] | None = None,
        pass_examples: int = 512,
        jit_compile: bool = False,
        strategy: tf.distribute.Strategy | None = None,
    ):
        check_bn_mode(bn_mode)
        if archs_per_pass is not None and archs_per_pass < 1:
            raise UserError(f"archs_per_pass={archs_per_pass} is invalid; expected a positive integer.")
        self.model = model
        self.space = space
        self.strategy = strategy or tf.distribute.get_strategy()
        self.replicas = int(self.strategy.num_replicas_in_sync)
        self.bn_mode = bn_mode
        self.step = step
        self.options = options
        self.ghost = int(model.ghost_batch_size)
        self.pass_examples = pass_examples
        self.jit_compile = jit_compile
        self.kl = kl_images is not None
        if kl_reference not in KL_REFERENCES:
            raise UserError(f"kl_reference={kl_reference!r} is unknown; choose one of {', '.join(KL_REFERENCES)}.")
        self.kl_reference = kl_reference
        n = len(images) // self.ghost * self.ghost
        if n == 0:
            raise UserError(f"{len(images)} validation examples are fewer than one ghost batch of {self.ghost}.")
        self.num_examples = n
        self._images = tf.convert_to_tensor(np.asarray(images[:n], np.float32))
        self._labels = tf.convert_to_tensor(np.asarray(labels[:n], np.int32))
        self._recal = None
        if bn_mode == "recalibrate":
            if recalibration_images is None:
                raise UserError('bn_mode="recalibrate" needs recalibration_images.')
            r = len(recalibration_images) // self.ghost * self.ghost
            if r == 0:
                raise UserError(f"recalibration needs at least {self.ghost} images (one ghost batch).")
            self._recal = tf.convert_to_tensor(np.asarray(recalibration_images[:r], np.float32))
        self.recalibration_count = 0 if self._recal is None else int(self._recal.shape[0])
        self._kl_images = None
        if kl_images is not None:
            k = len(kl_images) // self.ghost * self.ghost
            if k == 0:
                raise UserError(f"the KL divergence needs at least {self.ghost} images.")
            self._kl_images = tf.convert_to_tensor(np.asarray(kl_images[:k], np.float32))
        self._functions: dict[tuple[str, int], Any] = {}
        self._reference_logp = None
        if bn_mode == "recalibrate":
            self.archs_per_pass = 1
        elif archs_per_pass is not None:
            self.archs_per_pass = int(archs_per_pass)
        else:
            self.archs_per_pass = self._pick_archs_per_pass()

    # ------------------------------------------------------------- building
    @classmethod
    def from_model_dir(
        cls,
        model_dir: str | ModelDir,
        *,
        bn_mode: str = "batch",
        kl: bool = False,
        kl_reference: str = "all_on",
        archs_per_pass: int | None = None,
        recalibration_images: int | None = None,
        validation_examples: int | None = None,
        data_dir: str | None = None,
        seed: int = 0,
        strategy: tf.distribute.Strategy | None = None,
        **kwargs: Any,
    ) -> OneShotScorer:
        """Loads the latest checkpoint of `model_dir` and its dataset's splits.

        The scorer's `options` record these settings (`scoring_options`), so a
        search given this scorer writes the lines a search building its own would.

        Raises:
            UserError: a missing or foreign model_dir, no checkpoint, or data
                that is not prepared.
        """
        from tf_oneshot.training import data

        model_dir = ModelDir.open(model_dir)
        options = scoring_options(model_dir, bn_mode, kl, kl_reference, recalibration_images, validation_examples,
                                  data_dir)
        loaded = model_dir.load_oneshot(strategy=strategy)
        config = loaded.config
        data_dir = data_dir or config.data.data_dir
        info = data.dataset_info(config.data.dataset, data_dir)
        ghost = config.data.ghost_batch_size
        available = info.num_examples["validation"]
        n = min(available, validation_examples or available) // ghost * ghost
        if n == 0:
            raise UserError(f"--validation_examples={validation_examples} is fewer than one ghost batch of {ghost}.")
        if n * math.prod(info.image_shape) * 4 > MAX_VALIDATION_BYTES:
            raise UserError(
                f"{n} validation images of {info.image_shape} exceed {MAX_VALIDATION_BYTES >> 30} GiB in memory; "
                "pass --validation_examples to score on a subset."
            )
        dataset = data.make_dataset(config.data.dataset, "validation", n, training=False, data_dir=data_dir)
        images, labels = (t.numpy() for t in next(iter(dataset)))
        recal = kl_images = None
        if bn_mode == "recalibrate":
            wanted = options["recalibration_images"]
            count = max(ghost, min(wanted, info.num_examples["train"]) // ghost * ghost)
            recal = data.take_images(config.data.dataset, "train", count, data_dir=data_dir, seed=seed)
        if kl:
            count = max(ghost, -(-KL_EXAMPLES // ghost) * ghost)
            kl_images = data.take_images(config.data.dataset, "train", count, data_dir=data_dir,
                                         seed=seed + 1)
        kwargs.setdefault("jit_compile", bool(config.jit_compile))
        return cls(
            loaded.model, loaded.space, images, labels, bn_mode=bn_mode, archs_per_pass=archs_per_pass,
            recalibration_images=recal, kl_images=kl_images, kl_reference=kl_reference, step=loaded.step,
            options=options, strategy=strategy, **kwargs,
        )

    def _masks(self, archs: Sequence[Hashable], size: int) -> dict[str, np.ndarray]:
        # Pad a short batch with copies of its first architecture: same shapes,
        # no retrace, and (with skipped inactive ops) no extra ops computed.
        padded = list(archs) + [archs[0]] * (size - len(archs))
        return self.space.encode_batch(padded)

    @property
    def archs_per_call(self) -> int:
        """Architectures `score` handles in one call: `archs_per_pass` on every replica."""
        return self.archs_per_pass * self.replicas

    def _call(self, kind: str, masks: dict[str, np.ndarray]) -> Any:
        """Runs body `kind` on masks for `archs_per_call` architectures, replica r taking the r-th slice."""
        # A function traces one bn mode (`OneShotModel` checks it): the mode is part of the key.
        key = (kind, masks[next(iter(masks))].shape[0] // self.replicas, self.model.bn_mode)
        if key not in self._functions:
            body = {"evaluate": self._evaluate, "recalibrated": self._recalibrated, "kl": self._kl_divergence}[kind]
            self._functions[key] = SplitFunction(self.strategy, body, self.jit_compile)
        return self._functions[key](masks)

    # ------------------------------------------------------ compiled bodies
    def _run_chunks(self, images: tf.Tensor, archs: int, masks: dict[str, tf.Tensor]):
        """Splits `images` into chunks of whole ghost batches; returns (chunks, chunk size, forward).

        `forward(i)` tiles chunk i once per architecture and returns logits
        [archs, chunk, classes]; ghost batch j of a chunk always holds the
        same images, whatever `archs` is.
        """
        n = images.shape[0]
        ghosts_per_chunk = _largest_divisor(n // self.ghost, max(1, self.pass_examples // (archs * self.ghost)))
        chunk = ghosts_per_chunk * self.ghost
        num_chunks = n // chunk
        grouped = tf.reshape(images, [num_chunks, chunk, *images.shape[1:]])
        masks = {k: tf.repeat(v, ghosts_per_chunk, axis=0) for k, v in masks.items()}

        def forward(i):
            x = tf.tile(grouped[i], [archs, 1, 1, 1])
            logits = self.model({"images": x, **masks}, training=False)
            return tf.reshape(logits, [archs, chunk, -1])

        return num_chunks, chunk, forward

    def _evaluate(self, masks: dict[str, tf.Tensor]) -> tuple[tf.Tensor, tf.Tensor]:
        """Accuracy and mean cross-entropy on the validation set, per architecture."""
        archs = _count(masks)
        num_chunks, chunk, forward = self._run_chunks(self._images, archs, masks)
        labels = tf.reshape(self._labels, [num_chunks, chunk])
        correct = tf.zeros([archs])
        loss = tf.zeros([archs])
        for i in tf.range(num_chunks):
            logits = forward(i)
            y = tf.broadcast_to(labels[i][None], [archs, chunk])
            hit = tf.equal(tf.argmax(logits, -1, output_type=tf.int32), y)
            correct += tf.reduce_sum(tf.cast(hit, tf.float32), 1)
            ce = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=logits)
            loss += tf.reduce_sum(ce, 1)
        n = float(self.num_examples)
        return correct / n, loss / n

    def _recalibrated(self, masks: dict[str, tf.Tensor]) -> tuple[tf.Tensor, tf.Tensor]:
        """SPOS: exact BN statistics of this candidate on the calibration images, then evaluate."""
        self.model.set_bn_mode("recalibrate")  # variable assigns: fine inside tf.function
        num_chunks, _, forward = self._run_chunks(self._recal, 1, masks)
        for i in tf.range(num_chunks):
            forward(i)
        self.model.set_bn_mode("moving")
        result = self._evaluate(masks)
        self.model.set_bn_mode("batch")
        return result

    def _kl_divergence(self, masks: dict[str, tf.Tensor]) -> tf.Tensor:
        """Mean symmetrized KL divergence to the all-on network's predictions (§5)."""
        archs = _count(masks)
        num_chunks, chunk, forward = self._run_chunks(self._kl_images, archs, masks)
        logq = tf.concat([tf.nn.log_softmax(forward(i), -1) for i in range(num_chunks)], 1)
        logp = self._reference_logp[None]
        p, q = tf.exp(logp), tf.exp(logq)
        kl = tf.reduce_sum(p * (logp - logq) + q * (logq - logp), -1)
        return tf.reduce_mean(kl, 1)

    # --------------------------------------------------------------- public
    def score(self, archs: Sequence[Hashable]) -> list[dict[str, float]]:
        """One-shot accuracy and loss (and KL) of each architecture.

        Args:
            archs: at most `archs_per_call` architectures for one pass; longer
                lists are scored in several passes.

        Returns:
            One dict per architecture: `oneshot_accuracy`, `loss`, and `kl`
            when the scorer was built with KL images.
        """
        out: list[dict[str, float]] = []
        size = self.archs_per_call
        for start in range(0, len(archs), size):
            part = list(archs[start : start + size])
            masks = self._masks(part, size)
            if self.bn_mode in ("batch", "running"):
                self._statistics("batch" if self.bn_mode == "batch" else "moving")
                accuracy, loss = self._call("evaluate", masks)
            else:
                accuracy, loss = self._call("recalibrated", masks)
            accuracy, loss = accuracy.numpy(), loss.numpy()
            kl = self._kl_batch(masks) if self.kl else None
            for j in range(len(part)):
                record = {"oneshot_accuracy": float(accuracy[j]), "loss": float(loss[j])}
                if kl is not None:
                    record["kl"] = float(kl[j])
                out.append(record)
        return out

    def _statistics(self, mode: str) -> None:
        # One variable read; switching writes to every batch norm layer.
        if self.model.bn_mode != mode:
            self.model.set_bn_mode(mode)

    def _kl_batch(self, masks: dict[str, np.ndarray]) -> np.ndarray:
        self._statistics("batch")  # §5: batch statistics, whatever the accuracy's mode
        if self._reference_logp is None:
            ghosts = self._kl_images.shape[0] // self.ghost
            reference = self._reference_masks(ghosts)
            logits = self.model({"images": self._kl_images, **reference}, training=False)
            self._reference_logp = tf.nn.log_softmax(logits, -1)
        return self._call("kl", masks).numpy()

    def _reference_masks(self, ghosts: int) -> dict[str, tf.Tensor]:
        """One reference architecture per ghost batch of the KL images (Bender et al. 2018, §5)."""
        on = {k: tf.constant(np.repeat(v[None], ghosts, axis=0)) for k, v in self.space.all_on_masks().items()}
        if self.kl_reference == "all_on":
            return on
        from tf_oneshot.layers.path_dropout import PathDropout

        dropout = PathDropout(KL_REFERENCE_RATE, schedule="constant", keys=self.space.dropout_masks(), seed=self.step)
        return dropout(on, step=0, training=True)

    def tracing_count(self) -> int:
        """Traces of every compiled scoring function so far (constant in the number of architectures)."""
        return sum(f.tracing_count() for f in self._functions.values())

    def _pick_archs_per_pass(self, candidates: Sequence[int] = (1, 2, 4, 8)) -> int:
        """Times a few pass widths on random architectures; returns the fastest per architecture.

        Which is fastest depends on the device: on CPU the ops skipped for a
        single architecture win, on accelerators wider passes fill the chip.
        """
        rng = np.random.default_rng(0)
        best, best_time = 1, math.inf
        for size in candidates:
            self.archs_per_pass = size
            self.score([self.space.sample(rng) for _ in range(size)])  # trace and warm up
            per_arch = math.inf
            for _ in range(2):  # best of two: shared machines are noisy
                archs = [self.space.sample(rng) for _ in range(size)]
                tic = time.perf_counter()
                self.score(archs)
                per_arch = min(per_arch, (time.perf_counter() - tic) / size)
            if per_arch < best_time:
                best, best_time = size, per_arch
        return best


def _count(masks: dict[str, tf.Tensor]) -> int:
    """Architectures in a batch of masks (the static leading axis)."""
    return next(iter(masks.values())).shape[0]


def make_scorer(model_dir: str | ModelDir, scorer: str = "oneshot", *, seed: int = 0, data_dir: str | None = None,
                **kwargs: Any) -> Any:
    """The scorer of a search by name: "oneshot" (`OneShotScorer.from_model_dir`, given `kwargs`), or a proxy.

    A proxy (`tf_oneshot.search.proxies.PROXIES`) scores the stand-alone
    child at initialization with the same interface, so every algorithm and
    the results file take it unchanged; it takes no one-shot scoring option.

    Raises:
        UserError: an unknown scorer, or one-shot scoring options given to a proxy.
    """
    if scorer == "oneshot":
        return OneShotScorer.from_model_dir(model_dir, seed=seed, data_dir=data_dir, **kwargs)
    from tf_oneshot.search.proxies import ProxyScorer, check_proxies

    check_proxies([scorer])
    if kwargs:
        raise UserError(f"--scorer={scorer} is training-free; drop {', '.join('--' + k for k in sorted(kwargs))} "
                        "(options of the one-shot scorer).")
    return ProxyScorer.from_model_dir(model_dir, scorer, seed=seed, data_dir=data_dir)
