"""Times the one-shot train step against the all-on network without masks.

One run, side by side, the same shapes and optimizer:
  one-shot: path dropout (Bender et al. 2018, §3.2) at the start and at the end
            of its linear ramp, ghost batch norm, masked L2 on active paths,
            with dropped ops either masked or skipped with tf.cond;
  all-on:   every path on, no masks, plain batch norm, plain L2 on all kernels.
Prints ms per step and the ratio one-shot / all-on (goal: <= 1.25). Rows marked
"*" are what the trainer runs there (`trainer.skips_pay`, --skip_threshold).

    python benchmarks/train_step.py             # CIFAR-10 shapes, F=8, 3 cells (minutes on 2 cores)
    python benchmarks/train_step.py --paper     # F=16, 6 cells as in §4.1
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from tf_oneshot.config import TrainConfig  # noqa: E402
from tf_oneshot.layers.path_dropout import PathDropout  # noqa: E402
from tf_oneshot.layers.common import conv_kernels  # noqa: E402
from tf_oneshot.search_spaces.bender_cell.model import CellOneShotModel as OneShotModel  # noqa: E402
from tf_oneshot.search_spaces import CellSpace  # noqa: E402
from tf_oneshot.search_spaces.bender_cell.standalone import build_all_on_model  # noqa: E402
from tf_oneshot.trainer import skips_pay  # noqa: E402

TOTAL_STEPS = 1000


def oneshot_step(space: CellSpace, batch: int, ghost: int, at_step: int, skip: bool):
    model = OneShotModel(space, ghost_batch_size=ghost)
    optimizer = keras.optimizers.SGD(0.01, momentum=0.9, nesterov=True)
    sampler = PathDropout(rate=0.1, total_steps=TOTAL_STEPS)
    all_on = {k: tf.constant(v) for k, v in space.all_on_masks().items()}
    seed = tf.constant([0, 0], tf.int64)
    counter = tf.constant(at_step, tf.int64)  # stay at one point of the ramp

    @tf.function
    def step(images, labels):
        masks = sampler(all_on, step=counter, seed=seed, num_ghosts=batch // ghost)
        with tf.GradientTape() as tape:
            logits = model({"images": images, **masks}, training=True, skip_inactive=skip)
            loss = tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True))
            loss += 1e-4 * model.masked_l2(masks)
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        return loss

    return step


def all_on_step(space: CellSpace):
    model = build_all_on_model(space, ghost_batch_size=None)
    optimizer = keras.optimizers.SGD(0.01, momentum=0.9, nesterov=True)
    kernels = conv_kernels(model.layers)

    @tf.function
    def step(images, labels):
        with tf.GradientTape() as tape:
            logits = model(images, training=True)
            loss = tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True))
            loss += 1e-4 * tf.add_n([tf.reduce_sum(tf.square(k)) for k in kernels])
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        return loss

    return step


def time_steps(step, images, labels, repeats: int) -> float:
    tic = time.perf_counter()
    for _ in range(repeats):
        loss = step(images, labels)
    loss.numpy()
    return (time.perf_counter() - tic) / repeats * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--paper", action="store_true", help="F=16, 6 cells (slower)")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--ghost", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    filters, cells = (16, 6) if args.paper else (8, 3)
    space = CellSpace(filters=filters, num_cells=cells, image_shape=(32, 32, 3), num_classes=10)
    rng = np.random.default_rng(0)
    images = tf.constant(rng.normal(size=(args.batch, 32, 32, 3)).astype(np.float32))
    labels = tf.constant(rng.integers(0, 10, size=args.batch).astype(np.int32))
    config = TrainConfig(train_steps=TOTAL_STEPS, batch_size=args.batch, ghost_batch_size=args.ghost)
    steps = {"all-on, no masks, plain BN": all_on_step(space)}
    for where, at_step in (("ramp start (no drops)", 0), ("ramp end (r=0.1)", TOTAL_STEPS)):
        chosen = skips_pay(config, at_step, args.batch // args.ghost)
        for skip in (False, True):
            name = f"one-shot, {where}, {'tf.cond skip' if skip else 'masked'}{' *' if skip == chosen else ''}"
            steps[name] = oneshot_step(space, args.batch, args.ghost, at_step, skip)
    # Interleave rounds so that load on the machine hits every variant alike.
    samples = {name: [] for name in steps}
    for step in steps.values():  # trace and warm up
        for _ in range(3):
            step(images, labels).numpy()
    for _ in range(args.rounds):
        for name, step in steps.items():
            samples[name].append(time_steps(step, images, labels, args.repeats))
    base = statistics.median(samples["all-on, no masks, plain BN"])
    print(f"\nF={filters}, {cells} cells, 32x32x3, batch {args.batch} in ghost batches of {args.ghost}, "
          f"{tf.config.threading.get_inter_op_parallelism_threads() or os.cpu_count()} CPU threads")
    print(f"{'variant':<50} {'ms/step (median)':>17} {'ratio to all-on':>16}")
    for name, values in samples.items():
        ms = statistics.median(values)
        print(f"{name:<50} {ms:>17.1f} {ms / base:>16.2f}")


if __name__ == "__main__":
    main()
