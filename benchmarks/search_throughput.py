"""Architectures scored per second: the one-shot scorer against the naive way and the floor.

    .venv/bin/python benchmarks/search_throughput.py [--filters=16 --num_cells=6 --num_stacks=3
        --num_archs=32 --validation_examples=288]
    .venv/bin/python benchmarks/search_throughput.py --space=darts64 --filters=16 --num_cells=4
    .venv/bin/python benchmarks/search_throughput.py --space=spos_blocks --bn_mode=recalibrate --passes=1

Prints one table from one run, on the embedded digits validation set (8x8x1,
offline) or random CIFAR-sized images (--image_size=32), with untrained
weights (throughput does not depend on them):

- one-shot scorer: `OneShotScorer` in "batch" mode (Bender et al. 2018, §3.2),
  one compiled function for every architecture, for several architectures
  per pass (one per ghost batch);
- naive (a): per architecture, a new stand-alone Keras model with the shared
  weights copied in (`space.inherit_weights`), evaluated with `predict`;
- naive (b): per architecture, a tf.function over the one-shot model with the
  masks as Python constants, so it traces anew for every architecture;
- floor: the stand-alone model of each architecture, compiled once and
  warmed up, timed only while running forward over the same images.

With --bn_mode=recalibrate (SPOS §3.4, the default of single-path spaces)
the scorer recomputes each candidate's batch-norm statistics on
--recalibration_images training images before evaluating it, and the floor
runs the stand-alone model forward over those images too (without updating
statistics: a lower bound).

Goals (issue): >= 10x naive, <= 2x the floor (<= 1.5x for single-path
spaces). Each timing is the best of --repeats. Takes about ten minutes on 2
shared CPU cores.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from a checkout

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from tf_oneshot.search.scorer import OneShotScorer  # noqa: E402
from tf_oneshot.search_spaces.space_config import build_space, for_space  # noqa: E402
from tf_oneshot.training import data  # noqa: E402
from tf_oneshot.training.config import TrainConfig  # noqa: E402
from tf_oneshot.training.model_dir import ModelDir  # noqa: E402


def batch_mode(model: keras.Model) -> None:
    for layer in model.layers:
        if hasattr(layer, "set_mode"):
            layer.set_mode("batch")  # statistics on the fly, as the one-shot scorer


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--space", default="bender_cell", help="a registered space or module:Attribute")
    parser.add_argument("--filters", type=int, default=16)
    parser.add_argument("--num_cells", type=int, default=6)
    parser.add_argument("--num_stacks", type=int, default=3)
    parser.add_argument("--ghost_batch_size", type=int, default=32)
    parser.add_argument("--num_archs", type=int, default=32, help="architectures per measurement")
    parser.add_argument("--naive_archs", type=int, default=4, help="architectures for the (slow) naive ways")
    parser.add_argument("--validation_examples", type=int, default=288)
    parser.add_argument("--passes", default="1,2,4,8", help="architectures per pass to time")
    parser.add_argument("--pass_examples", type=int, default=512, help="examples per forward pass (all copies)")
    parser.add_argument("--image_size", type=int, default=8,
                        help="8: the digits validation set; e.g. 32: random CIFAR-sized 32x32x3 images")
    parser.add_argument("--repeats", type=int, default=3, help="timings per measurement; the best is kept")
    parser.add_argument("--space_args", default=None, help="other space fields, name=value,name=value")
    parser.add_argument("--bn_mode", default="batch", help="batch (Bender) or recalibrate (SPOS §3.4)")
    parser.add_argument("--recalibration_images", type=int, default=512)
    return parser.parse_args()


def _images(args: argparse.Namespace):
    """(image shape, validation x, y, recalibration images or None)."""
    n = args.validation_examples // args.ghost_batch_size * args.ghost_batch_size
    if args.image_size == 8:
        shape = data.dataset_info("digits").image_shape
        x, y = (t.numpy() for t in next(iter(data.make_dataset("digits", "validation", n, training=False))))
    else:  # throughput does not depend on the pixels
        shape = (args.image_size, args.image_size, 3)
        rng = np.random.default_rng(1)
        x, y = rng.normal(size=(n, *shape)).astype(np.float32), rng.integers(0, 10, n).astype(np.int32)
    r = args.recalibration_images // args.ghost_batch_size * args.ghost_batch_size
    recal = np.random.default_rng(2).normal(size=(r, *shape)).astype(np.float32) if args.bn_mode == "recalibrate" else None
    return shape, x, y, recal


def _scorer_rates(args, model, space, archs, x, y, recal) -> list[tuple[str, float]]:
    """The one-shot scorer's architectures per second at each --passes size, one trace each."""
    rows = []
    for size in [int(s) for s in args.passes.split(",")]:
        scorer = OneShotScorer(model, space, x, y, archs_per_pass=size, pass_examples=args.pass_examples,
                               bn_mode=args.bn_mode, recalibration_images=recal)
        if scorer.archs_per_pass != size:
            continue  # recalibration scores one architecture per pass
        scorer.score(archs[:size])  # trace once
        traces = scorer.tracing_count()
        seconds = math.inf
        for _ in range(args.repeats):  # best of a few: the CPUs are shared
            tic = time.perf_counter()
            scorer.score(archs)
            seconds = min(seconds, time.perf_counter() - tic)
        assert scorer.tracing_count() == traces, "retraced"
        rows.append((f"one-shot scorer, {size} arch/pass", len(archs) / seconds))
    return rows


def _floor_rate(args, model, space, archs, x, y, recal) -> float:
    """Floor: each stand-alone model compiled once and warmed up; only forward passes timed."""
    floor_seconds = 0.0
    for arch in archs:
        standalone = space.build_standalone(arch, ghost_batch_size=args.ghost_batch_size)
        space.inherit_weights(model, standalone, arch)
        batch_mode(standalone)
        forward = tf.function(lambda images, m=standalone: m(images, training=False))
        images = tf.constant(x)
        forward(images)  # trace and warm up: not timed
        recal_images = None if recal is None else tf.constant(recal)
        if recal_images is not None:
            forward(recal_images)
        best = math.inf
        for _ in range(args.repeats):
            tic = time.perf_counter()
            if recal_images is not None:
                forward(recal_images).numpy()
            np.mean(np.argmax(forward(images).numpy(), -1) == y)
            best = min(best, time.perf_counter() - tic)
        floor_seconds += best
    return len(archs) / floor_seconds


def _naive_rates(args, model, space, archs, x, y) -> tuple[float, float]:
    """(a) a new Keras model per architecture with the weights copied in; (b) masks as Python constants."""
    n = len(x)
    tic = time.perf_counter()
    for arch in archs[: args.naive_archs]:
        standalone = space.build_standalone(arch, ghost_batch_size=args.ghost_batch_size)
        space.inherit_weights(model, standalone, arch)
        batch_mode(standalone)
        logits = standalone.predict(x, batch_size=n, verbose=0)
        np.mean(np.argmax(logits, -1) == y)
    naive_a = args.naive_archs / (time.perf_counter() - tic)
    tic = time.perf_counter()
    for arch in archs[: args.naive_archs]:  # one trace per architecture
        masks = {k: tf.constant(np.repeat(v[None], n // args.ghost_batch_size, 0)) for k, v in space.encode(arch).items()}

        @tf.function
        def evaluate(images, masks=masks):
            return model({"images": images, **masks}, training=False)

        np.mean(np.argmax(evaluate(tf.constant(x)).numpy(), -1) == y)
    return naive_a, args.naive_archs / (time.perf_counter() - tic)


def main() -> None:
    args = parse_args()
    keras.utils.set_random_seed(0)
    config = TrainConfig(filters=args.filters, num_cells=args.num_cells, num_stacks=args.num_stacks,
                         batch_size=args.ghost_batch_size, ghost_batch_size=args.ghost_batch_size)
    config = config.replace(space=for_space(config.space, args.space)).replace(space_args=args.space_args)
    shape, x, y, recal = _images(args)
    space = build_space(config.space, shape, 10, 1)
    model = ModelDir("", config, space).build_oneshot(config.data.batch_size)
    rng = np.random.default_rng(0)
    archs = [space.sample(rng) for _ in range(args.num_archs)]
    print(f"space: {space.name} {config.space.options}, images {'x'.join(map(str, shape))}; "
          f"{len(x)} validation images, ghost batch {args.ghost_batch_size}, bn_mode {args.bn_mode}"
          f"{f' on {len(recal)} images' if recal is not None else ''}; "
          f"one-shot params {space.count_oneshot().params:,}; {os.cpu_count()} CPU(s)")
    rows = _scorer_rates(args, model, space, archs, x, y, recal)
    best_rate = max(rate for _, rate in rows)
    floor_rate = _floor_rate(args, model, space, archs, x, y, recal)
    naive_a, naive_b = _naive_rates(args, model, space, archs, x, y)
    rows += [("floor: stand-alone forward, compiled once", floor_rate),
             ("naive (a): new Keras model + copied weights", naive_a),
             ("naive (b): tf.function retraced per architecture", naive_b)]
    print(f"\n{'method':<52} {'arch/s':>9}")
    for name, rate in rows:
        print(f"{name:<52} {rate:>9.2f}")
    naive = max(naive_a, naive_b)
    print(f"\nbest one-shot scorer / best naive: {best_rate / naive:.1f}x   (goal >= 10x)")
    print(f"floor / best one-shot scorer:      {floor_rate / best_rate:.2f}x   (goal <= 2x; <= 1.5x single path)")


if __name__ == "__main__":
    main()
