"""Times a train step with Keras' SGD against the trainer's MomentumSGD (one kernel per variable).

Side by side in one process, alternating timed rounds so machine load hits
both alike: the one-shot step as the trainer runs it (`train_step.oneshot_loop`:
the trainer's task, sampler and host loop) and a stand-alone child's step
(`train_step.plain_loop`), each once with `keras.optimizers.SGD` and once with
`tf_oneshot.training.optimizers.MomentumSGD`, Nesterov momentum 0.9 both; and
the update alone (`apply_gradients` of fixed gradients to every weight of the
one-shot model), which the steps' own noise (several percent between rounds
on a shared CPU) does not blur.
The default network is compare_revisions.py's: Bender cells F=16, 6 cells,
8x8 digits-sized inputs, batch 64 in ghost batches of 32. Prints ms per step
(median over rounds) and the ratio Keras / MomentumSGD (above 1: faster).

    python benchmarks/optimizer_step.py
    python benchmarks/optimizer_step.py --space=darts64 --rounds=9
"""

from __future__ import annotations

import argparse
import os
import statistics

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from train_step import TOTAL_STEPS, oneshot_loop, plain_loop, time_loop  # noqa: E402

from tf_oneshot.search_spaces.space_config import build_space  # noqa: E402
from tf_oneshot.training import distribute, optimizers  # noqa: E402
from tf_oneshot.training.config import TrainConfig  # noqa: E402

OPTIMIZERS = {"keras SGD": keras.optimizers.SGD, "MomentumSGD": optimizers.MomentumSGD}


def update_loop(space, config: TrainConfig, optimizer_class):
    """`loop(steps)`: that many `apply_gradients` of fixed gradients to all of the one-shot model's weights."""
    model = space.build_oneshot(config.data.ghost_batch_size)
    variables = model.trainable_variables
    optimizer = optimizer_class(0.01, momentum=0.9, nesterov=True)
    optimizer.build(variables)
    grads = [tf.random.normal(v.shape, stddev=1e-3) for v in variables]

    @tf.function
    def apply(steps):
        for _ in tf.range(steps):
            optimizer.apply_gradients(zip(grads, variables))
        return tf.constant(0.0)

    return lambda steps: apply(tf.constant(steps))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--space", default="bender_cell")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--steps", type=int, default=20, help="steps per timed host loop")
    parser.add_argument("--graph_optimizer", default="auto", choices=distribute.GRAPH_OPTIMIZER)
    args = parser.parse_args()
    distribute.set_graph_optimizer(args.graph_optimizer)
    flat = dict(dataset="digits", batch_size=64, ghost_batch_size=32, space=args.space)
    if args.space == "bender_cell":
        flat.update(filters=16, num_cells=6)
    config = TrainConfig(**flat)
    space = build_space(config.space, (8, 8, 1), 10)
    keras.utils.set_random_seed(0)
    images, labels = tf.random.normal([64, 8, 8, 1]), tf.zeros([64], tf.int32)
    arch = space.sample(np.random.default_rng(0))
    loops = {}
    for name, optimizer_class in OPTIMIZERS.items():
        loops[("one-shot", name)] = oneshot_loop(config, space, images, labels, TOTAL_STEPS // 2, True,
                                                 optimizer_class=optimizer_class)
        loops[("stand-alone", name)] = plain_loop(config, space.build_standalone(arch, ghost_batch_size=None),
                                                  images, labels, optimizer_class=optimizer_class)
    for name, optimizer_class in OPTIMIZERS.items():
        loops[("update alone", name)] = update_loop(space, config, optimizer_class)
    times = {key: [] for key in loops}
    for loop in loops.values():
        time_loop(loop, args.steps)  # the trace (one per number of steps) and the first run, untimed
    for _ in range(args.rounds):
        for key, loop in loops.items():
            times[key].append(time_loop(loop, args.steps))
    print(f"{args.space}, {args.rounds} rounds of {args.steps} steps, graph optimizer {args.graph_optimizer}")
    for step in ("one-shot", "stand-alone", "update alone"):
        keras_ms, fused_ms = (statistics.median(times[(step, name)]) for name in OPTIMIZERS)
        print(f"{step:<13} keras SGD {keras_ms:7.1f} ms  MomentumSGD {fused_ms:7.1f} ms  "
              f"ratio {keras_ms / fused_ms:.3f}x")


if __name__ == "__main__":
    main()
