"""Images per second of the one-shot train step: 1 vs 2 replicas, 1 vs 50 steps per host loop.

    .venv/bin/python benchmarks/scaling.py [--steps=300] [--filters=4] [--batch_size=32] ...

Runs the real trainer (`tf_oneshot.training.trainer.train`, the step of Bender et al.
2018, §3.2/§4.1: path dropout per ghost batch, masked L2, SGD) on the embedded
digits data, with MirroredStrategy over 2 logical CPUs standing in for 2
accelerators, and prints one table of steady-state rates and their ratios to
the first row, all from this one run. The first logging window (tracing) is
left out. On 2 logical CPUs both replicas share the same cores, so the replica
rows measure distribution overhead, not speed-up; the host-loop rows measure
what a host call costs per step, which is what --steps_per_loop removes on TPU.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _rate(strategy, config, window: int) -> float:
    """Steady-state images per second: the best logging window after tracing.

    The best window, not the mean, because the benchmark shares its cores with
    other work: interference only ever slows a window down.
    """
    from tf_oneshot.training import trainer

    stamps: list[tuple[float, str]] = []
    trainer.train(config, tempfile.mkdtemp(prefix="scaling_"), strategy=strategy,
                  log=lambda line: stamps.append((time.perf_counter(), line)))
    ends = [t for t, line in stamps if line.startswith("step ") and "/" in line.split(":")[0]]
    # ends[0] closes the window that includes tracing; later windows are steady.
    spans = [b - a for a, b in zip(ends[:-1], ends[1:])]
    return window * config.data.batch_size / min(spans)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300, help="train steps per case (multiple of 50)")
    parser.add_argument("--filters", type=int, default=4)
    parser.add_argument("--num_cells", type=int, default=1)
    parser.add_argument("--num_stacks", type=int, default=1)
    parser.add_argument("--num_blocks", type=int, default=1)
    parser.add_argument("--batch_size", type=int, default=32, help="global batch of the 1-replica rows")
    parser.add_argument("--ghost_batch_size", type=int, default=8)
    args = parser.parse_args()
    window = 50
    if args.steps % window or args.steps < 3 * window:
        parser.error(f"--steps must be a multiple of {window}, at least {3 * window}")

    from tf_oneshot.training import distribute

    distribute.split_cpu_for_tests(2)  # before TensorFlow initializes its devices
    from tf_oneshot.training.config import TrainConfig

    base = dict(
        dataset="digits", filters=args.filters, num_cells=args.num_cells, num_stacks=args.num_stacks,
        num_blocks=args.num_blocks, ghost_batch_size=args.ghost_batch_size, train_steps=args.steps,
        log_every=window, checkpoint_every=args.steps, eval_batches=1,
        # One compiled loop per case: the replica count changes the ghost batches
        # per replica and so where skipping would start (trainer.skips_pay).
        skip_threshold=0.0,
    )
    b = args.batch_size
    cases = [
        # (label, strategy, global batch, steps per host loop)
        ("1 replica, 1 step/loop", "default", b, 1),
        ("1 replica, 50 steps/loop", "default", b, 50),
        ("2 replicas, same global batch, 1 step/loop", "mirrored", b, 1),
        ("2 replicas, same global batch, 50 steps/loop", "mirrored", b, 50),
        ("2 replicas, same per-replica batch, 50 steps/loop", "mirrored", 2 * b, 50),
    ]
    rows = []
    for label, name, batch, loop in cases:
        strategy = distribute.get_strategy(name)
        config = TrainConfig(**base, batch_size=batch, steps_per_loop=loop)
        rate = _rate(strategy, config, window)
        rows.append((label, strategy.num_replicas_in_sync, batch // strategy.num_replicas_in_sync, loop, rate))
        print(f"  measured: {label}: {rate:.0f} img/s", file=sys.stderr, flush=True)

    first = rows[0][-1]
    print(f"\none-shot train step, digits 8x8, F={args.filters}, {args.num_cells} cells, "
          f"{args.num_blocks} blocks, ghost batch {args.ghost_batch_size}; 2 logical CPUs on "
          f"{os.cpu_count()} cores\n")
    print("| case | replicas | per-replica batch | steps/loop | img/s | ratio |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for label, replicas, per_replica, loop, rate in rows:
        print(f"| {label} | {replicas} | {per_replica} | {loop} | {rate:.0f} | {rate / first:.2f} |")
    by = {(r[0]): r[-1] for r in rows}
    host_ms = 1000 * b * (1 / by[cases[0][0]] - 1 / by[cases[1][0]])
    print(f"\nhost-call overhead per step (1 replica): {host_ms:.2f} ms "
          f"(a step takes {1000 * b / by[cases[1][0]]:.2f} ms at 50 steps/loop)")
    host_ms2 = 1000 * b * (1 / by[cases[2][0]] - 1 / by[cases[3][0]])
    print(f"host-call overhead per step (2 replicas): {host_ms2:.2f} ms")


if __name__ == "__main__":
    main()
