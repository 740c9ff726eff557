"""Times the ground-truth loop ("Deeper insights" §3.1) at digits scale: (child, seed) runs per minute.

`tf-oneshot groundtruth` trains every child of the 64-child space over
several seeds, the expensive part of any ranking study (issue 10 item 1).
This runs `groundtruth.run_ground_truth` itself, into a temporary directory,
over 8 of the children (or all 64) and a few seeds, once per
method:

  standalone: one child at a time as its own Keras model
              (`groundtruth.StandaloneTrainer`), a new model and new traces
              of its train, recalibration and evaluation functions for
              every (child, seed);
  masked:     one child at a time inside the one-shot model under fixed
              masks (`groundtruth.MaskedTrainer`): the same steps, traced
              once for all children;
  fused:      `--fuse_children` children at a time (default: from memory),
              in one network whose every operator serves all of them, each
              with its own weights and masks (`groundtruth.FusedTrainer`,
              HFTA's horizontal fusion): per run, the group's time over its
              size.

Both are the one child trainer of `tf_oneshot.training.child`.

It prints wall-clock and process CPU seconds per run (CPU time is the less
noisy on a shared machine), the first run apart (it carries the masked
method's one trace), and runs per minute over all runs: what a full ground
truth of 64 children x S seeds costs.

    python benchmarks/ground_truth_speed.py                      # 8 children x 2 seeds, 200 steps
    python benchmarks/ground_truth_speed.py --children=64 --seeds=1 --methods=masked
    python benchmarks/ground_truth_speed.py --seeds=1 --methods=standalone,masked,fused --fuse_children=8
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from tf_oneshot.search_spaces import get_space  # noqa: E402
from tf_oneshot.training import groundtruth  # noqa: E402
from tf_oneshot.training.config import TrainConfig  # noqa: E402

SAMPLE = {"edge_01": [1, 3], "edge_02": [2, 4], "edge_12": [1, 4]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--children", type=int, default=8, choices=(8, 64), help="8 (a sub-space) or all 64")
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--train_steps", type=int, default=200)
    parser.add_argument("--stem_filters", type=int, default=16)
    parser.add_argument("--filters", type=int, default=8)
    parser.add_argument("--num_cells", type=int, default=4)
    parser.add_argument("--methods", default="standalone,masked")
    parser.add_argument("--jit_compile", action="store_true")
    parser.add_argument("--fuse_children", type=int, default=None, help="default: from memory (child.fuse_count)")
    args = parser.parse_args()

    full = get_space("darts64", stem_filters=args.stem_filters, filters=args.filters, num_cells=args.num_cells,
                     image_shape=(8, 8, 1), num_classes=10)
    # 8 children: every op on some edge (1, 2 sep convs 3x3 and 5x5; 3 max pool; 4 skip).
    space = full if args.children == 64 else full.restrict(SAMPLE)
    config = TrainConfig(dataset="digits", space="darts64", batch_size=64, ghost_batch_size=32,
                         train_steps=args.train_steps, log_every=args.train_steps, jit_compile=args.jit_compile)
    seeds = list(range(args.seeds))
    print(f"darts64 at F={args.filters}, stem {args.stem_filters}, {args.num_cells} cells on 8x8 digits; "
          f"{space.size()} children x {len(seeds)} seeds, {args.train_steps} steps of batch 64; "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    rows = []
    for method in args.methods.split(","):
        times: list[tuple[float, float]] = []
        wall0, cpu0 = time.perf_counter(), time.process_time()
        trainer = groundtruth.make_trainer(method, space, config, fuse_children=args.fuse_children)

        def timed(space_, arch, config_, seed, trainer=trainer, times=times):
            wall, cpu = time.perf_counter(), time.process_time()
            result = trainer(space_, arch, config_, seed)
            times.append((time.perf_counter() - wall, time.process_time() - cpu))
            return result

        clock = [time.perf_counter(), time.process_time()]

        def per_group(line, times=times, clock=clock):
            # A fused group logs its runs together: each run is the group's time over its size.
            if line.startswith("["):
                times.append((time.perf_counter() - clock[0], time.process_time() - clock[1]))
                clock[:] = [time.perf_counter(), time.process_time()]

        fused = method == "fused"
        with tempfile.TemporaryDirectory() as out:
            groundtruth.run_ground_truth(space, config, seeds, out, train_fn=trainer if fused else timed,
                                         log=per_group if fused else (lambda s: None), noise_ceiling=False)
        if fused:  # the group's time is on its first line: spread it over the group
            k = trainer.children
            times[:] = [tuple(sum(t[j] for t in times[i:i + k]) / len(times[i:i + k]) for j in (0, 1))
                        for i in range(0, len(times), k) for _ in times[i:i + k]]
        total_wall, total_cpu = time.perf_counter() - wall0, time.process_time() - cpu0
        rest = times[1:] or times
        rows.append((method, times[0], sum(w for w, _ in rest) / len(rest), sum(c for _, c in rest) / len(rest),
                     len(times), total_wall, total_cpu))
        print(f"{method:>10}: first run {times[0][0]:.1f}s wall / {times[0][1]:.1f}s CPU; later runs "
              f"{rows[-1][2]:.2f}s wall / {rows[-1][3]:.2f}s CPU each; {len(times)} runs in {total_wall:.0f}s wall "
              f"= {60 * len(times) / total_wall:.1f} runs/min", flush=True)
    if len(rows) > 1:
        base = rows[0]
        for row in rows[1:]:
            print(f"{row[0]} vs {base[0]}: {base[2] / row[2]:.2f}x wall, {base[3] / row[3]:.2f}x CPU per later run; "
                  f"{base[5] / row[5]:.2f}x wall overall")
    print(f"load average after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
