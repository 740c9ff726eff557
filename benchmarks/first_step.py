"""Time to the first training step of the SPOS demo's supernet: tracing, then the first graph run.

The supernet of flags/spos_demo.flags (spos_blocks at half width, stages
2/2/4/2, 8x8 digits, batch 64 in one ghost batch: SPOS §3.2's one path per
step) under the trainer's own task (`OneShotTask`) and compiled host loop
(`strategy_loop.train_loop`), skipping off candidates as the trainer does
for single-path sampling. Prints, per revision, the seconds to trace the
loop (`get_concrete_function`), to run its first step (graph optimization
and the first kernels) and one later step, and the sum to the first step.

The code before the change (`--base`, default the commit before issue 20)
runs the same measurement in a git worktree of its own, in the same run,
alternately with this tree, so machine load hits both alike.

    python benchmarks/first_step.py                 # this tree and the base, one round each
    python benchmarks/first_step.py --rounds=2 --base=HEAD~1
    python benchmarks/first_step.py --worker        # this tree only, one JSON line
    python benchmarks/first_step.py --graph_optimizer=on   # this tree with grappler on, as before

Each revision runs with its own default graph optimizer: a revision that
predates `--graph_optimizer` always ran grappler; this tree follows
`--graph_optimizer` as `tf-oneshot demo` does (default auto: off on a
machine without GPU or TPU).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

from revision_tree import ROOT, base_tree, only_this_tree

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

BASE = "fcb97ef"  # main before issue 20 (the first-step figure of the issue: ~48 s)
SPACE = dict(width_multiplier=0.5, stage_blocks=(2, 2, 4, 2), image_shape=(8, 8, 1), num_classes=10,
             stem_stride=1)
BATCH = 64
LATER_STEPS = 20  # "later_step" is their mean: what a faster first step must not cost later


def _modules():
    """(TrainConfig, trainer, strategy_loop, tasks) of this tree or of a revision before the layer folders."""
    try:
        from tf_oneshot.training import strategy_loop, tasks, trainer
        from tf_oneshot.training.config import TrainConfig
    except ImportError:  # the flat package of older revisions
        from tf_oneshot.config import TrainConfig

        from tf_oneshot import strategy_loop, tasks, trainer
    return TrainConfig, trainer, strategy_loop, tasks


def _sgd():
    """The trainer's SGD: MomentumSGD where this revision has it, else Keras' own."""
    try:
        from tf_oneshot.training.optimizers import MomentumSGD
    except ImportError:
        import keras

        return keras.optimizers.SGD
    return MomentumSGD


def _set_graph_optimizer(mode: str) -> str:
    """Applies the trainer's graph-optimizer choice where this revision has one; says what ran."""
    try:
        from tf_oneshot.training.distribute import set_graph_optimizer
    except ImportError:  # a revision before the choice: grappler always on
        return "on (before --graph_optimizer)"
    return "on" if set_graph_optimizer(mode, few_functions=True) else "off"  # as the demo runs it


def measure(graph_optimizer: str = "auto") -> dict[str, float]:
    """{"trace", "first_run", "later_step"} wall seconds of the demo supernet's training loop, and each "_cpu".

    CPU seconds (all threads of the process) are the fairer figure on a
    loaded machine, where wall time mostly waits for a core.
    """
    import keras
    import numpy as np
    import tensorflow as tf

    from tf_oneshot.search_spaces import get_space

    TrainConfig, trainer, strategy_loop, tasks = _modules()
    grappler = _set_graph_optimizer(graph_optimizer)
    config = TrainConfig(space="spos_blocks", dataset="digits", batch_size=BATCH, ghost_batch_size=BATCH,
                         train_steps=3000)
    space = get_space("spos_blocks", **SPACE)
    keras.utils.set_random_seed(0)
    model = space.build_oneshot(BATCH)
    model(model.dummy_inputs(BATCH), training=False)
    optimizer = _sgd()(0.05, momentum=0.9)
    optimizer.build(model.trainable_variables)
    sampler = trainer.make_run_sampler(config, space)
    step = tf.Variable(0, dtype=tf.int64, trainable=False)
    task = tasks.OneShotTask(model, sampler, optimizer, step, 0, BATCH, 1, 1, 4e-5)
    skip = trainer.skips_pay(sampler, config, 0, 1)
    loop = strategy_loop.train_loop(tf.distribute.get_strategy(),
                                    lambda batch, masks: task.train_step(batch, masks, skip), tasks.TOTALS,
                                    counter=step)
    rng = np.random.default_rng(0)
    images = tf.constant(rng.normal(size=(BATCH, *space.image_shape)).astype(np.float32))
    labels = tf.constant(rng.integers(0, 10, size=BATCH).astype(np.int32))
    iterator = iter(tf.data.Dataset.from_tensors((images, labels)).repeat())

    def masks(at):
        return {k: v[None] for k, v in sampler.host_masks(at, 1).items()}

    out = {}
    for what, run in (("trace", lambda: loop.get_concrete_function(iterator, tf.constant(1), masks(0))),
                      ("first_run", lambda: loop(iterator, tf.constant(1), masks(0)).numpy()),
                      ("later_step", lambda: [loop(iterator, tf.constant(1), masks(1 + i)).numpy()
                                              for i in range(LATER_STEPS)])):
        tic, cpu = time.perf_counter(), time.process_time()
        run()
        out[what], out[f"{what}_cpu"] = time.perf_counter() - tic, time.process_time() - cpu
    out["later_step"], out["later_step_cpu"] = out["later_step"] / LATER_STEPS, out["later_step_cpu"] / LATER_STEPS
    out["graph_optimizer"] = grappler
    return out


def run_tree(tree: str, graph_optimizer: str) -> dict[str, float]:
    env = {**os.environ, "PYTHONPATH": tree}
    out = subprocess.run([sys.executable, os.path.abspath(__file__), "--worker",
                          f"--graph_optimizer={graph_optimizer}"], cwd=tree, env=env,
                         capture_output=True, text=True, check=False)
    if out.returncode:
        raise SystemExit(f"{tree}: the measurement failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", default=BASE, help="git revision to compare against")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--worker", action="store_true", help="measure this tree only and print JSON")
    parser.add_argument("--graph_optimizer", default="auto", choices=("auto", "on", "off"),
                        help="this tree's --graph_optimizer (the base runs its own default)")
    args = parser.parse_args()
    if args.worker:
        only_this_tree()
        print(json.dumps(measure(args.graph_optimizer)))
        return
    samples = {"base": [], "new": []}
    with base_tree(args.base, "tf_oneshot_first_step_") as (tree, _):
        for _ in range(args.rounds):
            for name, path in (("base", tree), ("new", ROOT)):
                samples[name].append(run_tree(path, args.graph_optimizer))
    print(f"\nspos_blocks {SPACE}, batch {BATCH} (one path per step), {args.rounds} round(s), "
          f"{os.cpu_count()} CPU(s); base {args.base} vs this tree")
    print(f"graph optimizer: base {samples['base'][0]['graph_optimizer']}, new {samples['new'][0]['graph_optimizer']}")
    print(f"{'median over rounds':<30} {'base':>8} {'new':>8} {'new/base':>9}")
    for clock in ("", "_cpu"):
        for what in ("trace", "first_run", "later_step", "to first step"):
            base, new = (_median(samples[name], what, clock) for name in ("base", "new"))
            print(f"{what + (' (CPU s)' if clock else ' (wall s)'):<30} {base:>8.2f} {new:>8.2f} {new / base:>9.2f}")


def _median(samples: list[dict[str, float]], what: str, clock: str) -> float:
    if what == "to first step":
        return statistics.median(s["trace" + clock] + s["first_run" + clock] for s in samples)
    return statistics.median(s[what + clock] for s in samples)


if __name__ == "__main__":
    main()
