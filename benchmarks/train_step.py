"""Times the one-shot train step, as the trainer runs it, against a plain network.

One run, side by side, the same shapes and optimizer:
  one-shot: the trainer's own single-replica task (`tf_oneshot.training.tasks.OneShotTask`)
            in its compiled host loop, under the space's sampler (path dropout,
            Bender et al. 2018, §3.2, at the start and at the end of its
            linear ramp; uniform single path for single-path spaces), ghost
            batch norm and masked L2 on active paths, with inactive
            candidates either masked or skipped with tf.cond;
  baseline: path dropout: the all-on network without masks, plain batch norm
            and plain L2 (the goal is <= 1.25); single path: the stand-alone
            network of a sampled path (its ideal; the goal is <= 1.3).
For single-path spaces it also times one path per step (the ghost batch is
the whole batch: SPOS §3.2 trains one architecture per step, so only that
path's ops run) and that very path of the baseline (a pool of one), which
isolates the supernet's own overhead from the path's cost.
Prints ms per step and the ratio one-shot / baseline. Rows marked "*" are what
the trainer runs there (`trainer.skips_pay`, --skip_threshold, and the
sampler's default --path_per). Where that row trains another path each step,
the last line divides it by the mean stand-alone step of the very paths it
draws: the goal of issue 20 (<= 1.3) for single-path spaces.

    python benchmarks/train_step.py                     # Bender cells, CIFAR-10 shapes, F=8, 3 cells
    python benchmarks/train_step.py --paper             # F=16, 6 cells as in §4.1
    python benchmarks/train_step.py --space=darts64     # the 64-child space, uniform sampling
    python benchmarks/train_step.py --space=spos_blocks --space_args=width_multiplier=0.5,stage_blocks=2:2:4:2
    python benchmarks/train_step.py --space=darts64 --graph_optimizer=off   # grappler off, as the demo on CPUs

Both networks run under the commands' --graph_optimizer (default auto: on).
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

from tf_oneshot.search_spaces.space_config import build_space  # noqa: E402
from tf_oneshot.training import distribute, optimizers, strategy_loop, trainer  # noqa: E402
from tf_oneshot.training.config import TrainConfig  # noqa: E402
from tf_oneshot.training.samplers import global_masks, resolve_path_per  # noqa: E402
from tf_oneshot.training.tasks import TOTALS, OneShotTask, StandaloneTask  # noqa: E402

TOTAL_STEPS = 1000


def _loop_over(step_fn, images, labels, per_step):
    """A host loop of `repeats` steps on a fixed batch (no input pipeline in the timing)."""
    dataset = tf.data.Dataset.from_tensors((images, labels)).repeat()
    strategy = tf.distribute.get_strategy()
    loop = strategy_loop.train_loop(strategy, step_fn, TOTALS)
    iterator = iter(dataset)
    return lambda steps: loop(iterator, tf.constant(steps), per_step(steps))


def oneshot_loop(config: TrainConfig, space, images, labels, at_step: int, skip: bool, sampler=None,
                 path_per: str = "ghost_batch", optimizer_class=optimizers.MomentumSGD):
    model = space.build_oneshot(config.data.ghost_batch_size)
    model(model.dummy_inputs(config.data.batch_size), training=False)
    optimizer = optimizer_class(0.01, momentum=0.9, nesterov=True)  # the trainer's (`optimizers.make_optimizer`)
    optimizer.build(model.trainable_variables)
    sampler = sampler or trainer.make_run_sampler(config, space)
    step = tf.Variable(at_step, dtype=tf.int64, trainable=False)  # stays at one point of the ramp
    ghosts = config.data.batch_size // config.data.ghost_batch_size
    task = OneShotTask(model, sampler, optimizer, step, 0, config.data.batch_size, 1, ghosts, 1e-4)

    def per_step(steps):  # drawn as the trainer draws them (`samplers.global_masks`, one replica)
        masks = [global_masks(sampler, at_step + i, path_per, 1, ghosts) for i in range(steps)]
        return {k: np.stack([m[k] for m in masks]) for k in masks[0]}

    return _loop_over(lambda batch, masks: task.train_step(batch, masks, skip), images, labels, per_step)


def plain_loop(config: TrainConfig, model, images, labels, optimizer_class=optimizers.MomentumSGD):
    optimizer = optimizer_class(0.01, momentum=0.9, nesterov=True)
    optimizer.build(model.trainable_variables)
    task = StandaloneTask(model, optimizer, config.data.batch_size, 1, 1e-4)
    return _loop_over(task.train_step, images, labels, lambda steps: {})


def single_path(config: TrainConfig, space, arch, images, labels, loops: dict) -> None:
    """SPOS's one path per step: the ghost batch is the batch; also the baseline's own path alone."""
    from tf_oneshot.training.samplers import UniformSampler

    one = config.replace(ghost_batch_size=config.data.batch_size)
    sampler = trainer.make_run_sampler(one, space)
    if config.data.num_ghosts > 1:
        loops[f"one-shot, {sampler.name}, 1 path per step, tf.cond skip"] = oneshot_loop(
            one, space, images, labels, TOTAL_STEPS // 2, True, sampler)
    same = UniformSampler(space, seed=0, total_steps=TOTAL_STEPS, pool=[arch])
    loops["one-shot, the baseline's path, 1 per step, tf.cond skip"] = oneshot_loop(
        one, space, images, labels, TOTAL_STEPS // 2, True, same)


def time_loop(loop, steps: int) -> float:
    tic = time.perf_counter()
    loop(steps).numpy()
    return (time.perf_counter() - tic) / steps * 1000


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--space", default="bender_cell", help="a registered space or module:Attribute")
    parser.add_argument("--paper", action="store_true", help="Bender cells: F=16, 6 cells (slower)")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--ghost", type=int, default=32)
    parser.add_argument("--image_size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5, help="steps per timed host loop")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--space_args", default=None, help="other space fields, name=value,name=value")
    parser.add_argument("--skip_only", action="store_true", help="time only the tf.cond-skipping one-shot steps")
    parser.add_argument("--graph_optimizer", default="auto", choices=distribute.GRAPH_OPTIMIZER,
                        help="as the commands' flag: grappler for both networks (auto: on)")
    return parser.parse_args()


def drawn_paths(config: TrainConfig, space, sampler, images, labels, at_step: int, repeats: int,
                loops: dict) -> list[str]:
    """The stand-alone networks of the paths a timed one-shot loop draws (one per step), each its own loop.

    The uniform row trains another path each step; its fair baseline is the
    mean stand-alone step over those very paths, not one sampled path.
    """
    names = []
    for i in range(repeats):
        arch = sampler.draw(sampler.rng(at_step + i))  # as host_masks(at_step + i, 1) draws it
        name = f"stand-alone, drawn path {arch}"
        if name not in loops:
            loops[name] = plain_loop(config, space.build_standalone(arch, ghost_batch_size=None), images, labels)
        names.append(name)
    return names


def main() -> None:
    args = _arguments()
    grappler = distribute.set_graph_optimizer(args.graph_optimizer)
    print(f"graph optimizer: {'on' if grappler else 'off'}")
    options = {}
    if args.space == "bender_cell":
        options = dict(filters=16, num_cells=6) if args.paper else dict(filters=8, num_cells=3)
    config = TrainConfig(space=args.space, train_steps=TOTAL_STEPS, batch_size=args.batch,
                         ghost_batch_size=args.ghost, space_args=args.space_args, **options)
    space = build_space(config.space, (args.image_size, args.image_size, 3), 10)
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    images = tf.constant(rng.normal(size=(args.batch, args.image_size, args.image_size, 3)).astype(np.float32))
    labels = tf.constant(rng.integers(0, 10, size=args.batch).astype(np.int32))
    sampler = trainer.make_run_sampler(config, space)
    ghosts = args.batch // args.ghost
    path_per = resolve_path_per(sampler, config.sampler.path_per)  # as `tf-oneshot train` draws by default
    loops, drawn = {}, []
    if sampler.name == "path_dropout" and hasattr(space, "build_all_on"):
        base_name = "all-on, no masks, plain BN"
        loops[base_name] = plain_loop(config, space.build_all_on(ghost_batch_size=None), images, labels)
        points = (("ramp start (no drops)", 0), ("ramp end (r=0.1)", TOTAL_STEPS))
    else:
        base_name = "stand-alone sampled path, plain BN"
        arch = space.sample(np.random.default_rng(0))
        loops[base_name] = plain_loop(config, space.build_standalone(arch, ghost_batch_size=None), images, labels)
        points = ((f"{sampler.name} sampling", TOTAL_STEPS // 2),)
        single_path(config, space, arch, images, labels, loops)
        if path_per == "step":
            drawn = drawn_paths(config, space, sampler, images, labels, points[0][1], args.repeats, loops)
    starred = None
    for where, at_step in points:
        chosen = trainer.skips_pay(sampler, config, at_step, ghosts)
        for skip in (True,) if args.skip_only else (False, True):
            name = (f"one-shot, {where}, a path per {path_per}, {'tf.cond skip' if skip else 'masked'}"
                    f"{' *' if skip == chosen else ''}")
            loops[name] = oneshot_loop(config, space, images, labels, at_step, skip, path_per=path_per)
            starred = name if skip == chosen else starred
    report(space, args, loops, base_name, drawn, starred)


def report(space, args, loops: dict, base_name: str, drawn: list[str], starred: str | None) -> None:
    """Times every loop in interleaved rounds and prints ms per step and the ratios."""
    samples = {name: [] for name in loops}
    for loop in loops.values():  # trace and warm up
        loop(args.repeats).numpy()
    for _ in range(args.rounds):  # interleaved, so that load on the machine hits every variant alike
        for name, loop in loops.items():
            samples[name].append(time_loop(loop, args.repeats))
    base = statistics.median(samples[base_name])
    print(f"\n{space.name} {space.to_config()}, batch {args.batch} in ghost batches of {args.ghost}, "
          f"{os.cpu_count()} CPU(s)")
    print(f"{'variant':<64} {'ms/step (median)':>17} {'ratio to baseline':>18}")
    for name, values in samples.items():
        ms = statistics.median(values)
        print(f"{name:<64} {ms:>17.1f} {ms / base:>18.2f}")
    if drawn and starred:
        mean = statistics.mean(statistics.median(samples[name]) for name in drawn)
        ratio = statistics.median(samples[starred]) / mean
        print(f"\nthe row marked * / the mean stand-alone step of the {len(drawn)} paths it draws "
              f"({mean:.1f} ms): {ratio:.2f}")


if __name__ == "__main__":
    main()
