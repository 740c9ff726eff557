"""How the split-half noise ceiling of darts64's ground truth grows with seeds and with steps (issue 21 item 4).

A ranking can only be shown to beat another up to the ground truth's own
noise: the split-half ceiling (`analysis.ground_truth.noise_ceiling`: the
Kendall tau between the means of two disjoint halves of the seeds, "Deeper
insights" §3.1-3.2's "Ground truth" rows) bounds every GT-Tau. At the ranking
study's setting (60 steps, 4-5 seeds) it is about 0.62, so no ranking can be
shown better than about 0.6. This trains the ground truth (`groundtruth.
run_ground_truth`, every child over --seeds seeds, one directory per
--steps value, resumable) and prints one table: for each number of steps,
the ceiling over the first s seeds for s = 4, 6, ..., --seeds, the mean tau of
one seed against the mean of all, the mean tau between two single seeds, and
the wall time of that ground truth. The cheapest (steps, seeds) reaching
--target (0.8) is named, or the table says none did.

    python benchmarks/noise_ceiling.py --quick     # 8 children, a tiny network, 4 seeds, 6 and 12 steps (CI)
    python benchmarks/noise_ceiling.py --output_dir=/tmp/nc --steps=60,240,960 --seeds=10   # the study

The full study is 64 children x seeds x each step count of stand-alone runs
(the ranking study's network: filters 8, stem 16, 2 cells, batch 64): run it
on an idle machine with the fastest child trainer (--method).
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# The ranking study's network (benchmarks/ranking_fidelity.py FULL).
FULL = {"steps": "60,240,960", "seeds": 10, "filters": 8, "stem_filters": 16, "num_cells": 2, "batch_size": 64,
        "ghost_batch_size": 32, "children": 64}
# --quick: the same table at a tiny size, to check the script (8 children: every op on some edge).
QUICK = {"steps": "6,12", "seeds": 4, "filters": 4, "stem_filters": 4, "num_cells": 1, "batch_size": 16,
         "ghost_batch_size": 8, "children": 8}
SAMPLE = {"edge_01": [1, 3], "edge_02": [2, 4], "edge_12": [1, 4]}  # benchmarks/ground_truth_speed.py's 8
TARGET = 0.8


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes, for CI")
    parser.add_argument("--output_dir", default=None, help="ground truths go here (resumable); default: a temp dir")
    parser.add_argument("--steps", default=None, help="comma-separated train steps per child (default 60,240,960)")
    parser.add_argument("--seeds", type=int, default=None, help="seeds per child, at least 4 (default 10)")
    parser.add_argument("--method", default="masked", help="the child trainer (groundtruth.make_trainer)")
    parser.add_argument("--target", type=float, default=TARGET, help="the ceiling to reach (issue 21: 0.8)")
    parser.add_argument("--rank_by", choices=("accuracy", "loss"), default="accuracy",
                        help="what ranks the children: validation accuracy (the package's ground truth) or "
                             "validation loss (finer-grained on a small validation set)")
    args = parser.parse_args(argv)
    sizes = dict(QUICK if args.quick else FULL)
    args.steps = [int(s) for s in (args.steps or sizes.pop("steps")).split(",")]
    sizes.pop("steps", None)
    args.seeds = args.seeds or sizes.pop("seeds")
    sizes.pop("seeds", None)
    if args.seeds < 4 or min(args.steps) < 1:
        parser.error(f"--seeds={args.seeds} and --steps={args.steps}: need 4 or more seeds (2 per half) and "
                     "positive steps.")
    args.sizes = sizes
    return args


def ceiling_row(per_seed, seeds_list) -> dict:
    """The ceiling over the first s seeds for each s, and the single-seed agreements of all seeds."""
    import numpy as np

    from tf_oneshot.analysis import ground_truth as metrics

    per_seed = np.asarray(per_seed, np.float64)
    mean = per_seed.mean(0)
    return {
        "ceiling": {s: metrics.noise_ceiling(per_seed[:s]) for s in seeds_list},
        "seed_vs_mean": float(np.nanmean([metrics.gt_tau(row, mean) for row in per_seed])),
        "seed_vs_seed": float(np.nanmean([metrics.gt_tau(a, b) for a, b in itertools.combinations(per_seed, 2)])),
    }


def seeds_for(seed_vs_seed: float, target: float) -> float:
    """Seeds a ground truth needs for a split-half ceiling of `target`: a projection, not a measurement.

    Two single seeds agree at Kendall tau t1. On Greiner's relation (Pearson r = sin(pi t / 2) for
    bivariate normal scores) a mean of h seeds has reliability h r1 / (1 + (h - 1) r1)
    (Spearman-Brown); the split-half ceiling compares two means of h = s / 2 seeds.
    """
    r1, r = math.sin(math.pi * seed_vs_seed / 2), math.sin(math.pi * target / 2)
    if r1 <= 0:
        return math.inf
    return 2 * max(1.0, r * (1 - r1) / (r1 * (1 - r)))


def format_table(rows: dict[int, dict], seeds_list: list[int], target: float) -> str:
    """One line per step count: the ceilings, single-seed agreements and wall time; then the verdict."""
    header = ["steps", *[f"ceiling s={s}" for s in seeds_list], "seed vs mean", "seed vs seed", "wall min"]
    table = [header] + [[str(steps), *[f"{r['ceiling'][s]:.3f}" for s in seeds_list], f"{r['seed_vs_mean']:.3f}",
                         f"{r['seed_vs_seed']:.3f}", f"{r['seconds'] / 60:.1f}"] for steps, r in rows.items()]
    widths = [max(len(line[i]) for line in table) for i in range(len(header))]
    lines = ["  ".join(c.rjust(w) for c, w in zip(line, widths)) for line in table]
    reached = [(steps * s, steps, s) for steps, r in rows.items() for s in seeds_list if r["ceiling"][s] >= target]
    if reached:
        _, steps, s = min(reached)
        lines.append(f"cheapest setting reaching ceiling {target}: {steps} steps x {s} seeds "
                     f"(ceiling {rows[steps]['ceiling'][s]:.3f})")
    else:
        lines.append(f"no setting in this table reaches ceiling {target}")
    for steps, r in rows.items():
        lines.append(f"projected (Spearman-Brown from seed vs seed): {steps} steps need about "
                     f"{seeds_for(r['seed_vs_seed'], target):.0f} seeds for ceiling {target}")
    return "\n".join(lines) + "\n"


def per_seed_scores(path: str, rank_by: str):
    """[seeds, children] scores (higher is better) of the ground truth in `path`: accuracy or -loss."""
    import numpy as np

    from tf_oneshot.analysis.insights import read_ground_truth
    from tf_oneshot.training.groundtruth import SUMMARY_FILE

    if rank_by == "accuracy":
        return read_ground_truth(path).per_seed_accuracy
    with open(os.path.join(path, SUMMARY_FILE)) as f:
        children = json.load(f)["children"]
    return -np.array([c["validation_loss"] for c in children], np.float64).T


def main(argv: list[str] | None = None) -> int:
    from tf_oneshot.search_spaces import get_space
    from tf_oneshot.training import groundtruth
    from tf_oneshot.training.config import TrainConfig

    args = parse_args(argv)
    z = args.sizes
    space = get_space("darts64", stem_filters=z["stem_filters"], filters=z["filters"], num_cells=z["num_cells"],
                      image_shape=(8, 8, 1), num_classes=10)
    space = space if z["children"] == 64 else space.restrict(SAMPLE)
    seeds = list(range(args.seeds))
    seeds_list = list(range(4, args.seeds + 1, 2)) + ([args.seeds] if args.seeds % 2 else [])
    out = args.output_dir or tempfile.mkdtemp(prefix="noise_ceiling_")
    print(f"noise ceiling of darts64 on digits (F={z['filters']}, stem {z['stem_filters']}, {z['num_cells']} "
          f"cells, batch {z['batch_size']}): {space.size()} children x {args.seeds} seeds at steps {args.steps}, "
          f"method {args.method}, ranked by validation {args.rank_by}, -> {out}; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores",
          flush=True)
    rows = {}
    for steps in args.steps:
        config = TrainConfig(dataset="digits", space="darts64", batch_size=z["batch_size"],
                             ghost_batch_size=z["ghost_batch_size"], train_steps=steps, log_every=steps)
        tic = time.perf_counter()
        path = os.path.join(out, f"steps{steps}")
        groundtruth.run_ground_truth(space, config, seeds, path, method=args.method, log=lambda s: None)
        rows[steps] = {**ceiling_row(per_seed_scores(path, args.rank_by), seeds_list),
                       "seconds": time.perf_counter() - tic}
        print(f"  {steps} steps: ceiling {rows[steps]['ceiling'][seeds_list[-1]]:.3f} with {args.seeds} seeds, "
              f"{rows[steps]['seconds'] / 60:.1f} min", flush=True)
    text = format_table(rows, seeds_list, args.target)
    print("\n" + text)
    with open(os.path.join(out, "noise_ceiling.json"), "w") as f:
        json.dump({"rows": {str(k): v for k, v in rows.items()}, "sizes": z, "seeds": args.seeds}, f, default=str)
    return 0


if __name__ == "__main__":
    sys.exit(main())
