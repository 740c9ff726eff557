"""The KerasTuner oracle's saved state after 100 and 2,000 trials: save time and size.

    .venv/bin/python benchmarks/oracle_state.py [--trials=100,2000 --population_size=50 --repeats=20]

Drives a `OneShotOracle` with fake scores and no model, as KerasTuner's own
oracle tests do (create_trial, update_trial, end_trial), over the Bender et
al. cell space (F=16, 6 cells, 3 stacks), for SPOS evolution (§3.4,
Algorithm 1, P=50) and random search. At each checkpoint it times
`oracle.save()` (median of --repeats), and measures oracle.json and its
"oneshot" part, the algorithm's own state, and the time of `reload()` (which
rebuilds the history from the trial files). Prints one table per algorithm
with the ratio last / first.

The algorithm's state is O(1) per trial: its ratio stays near 1. The rest of
oracle.json is KerasTuner's own (start_order, end_order, tried_so_far,
id_to_hash, run_times: one entry per trial), so the file and its save time
grow linearly with the trials whatever the algorithm; that part is theirs.
Takes about a minute on 2 shared CPU cores.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from a checkout

import numpy as np  # noqa: E402

from tf_oneshot.search_spaces import CellSpace  # noqa: E402
from tf_oneshot.tuner import OneShotOracle  # noqa: E402

SPACE = CellSpace(filters=16, num_cells=6, num_stacks=3)


def fake_accuracy(arch) -> float:
    """A deterministic stand-in for one-shot accuracy (favours some ops and wide blocks)."""
    weights = np.array([0.1, 0.9, 0.7, 0.5, 0.3, 0.0, 0.2])
    return float(sum(weights[list(b.ops)].sum() + 0.15 * len(b.inputs) for b in arch.blocks) / 12)


def make_oracle(directory: str, algorithm: str, max_trials: int, population_size: int) -> OneShotOracle:
    kwargs = {"population_size": population_size} if algorithm == "evolution" else {}
    oracle = OneShotOracle(space=SPACE, algorithm=algorithm, max_trials=max_trials, seed=0, **kwargs)
    oracle._set_project_dir(directory, algorithm)
    oracle.verbose = 0  # KerasTuner prints a table per trial otherwise
    return oracle


def run_trials(oracle: OneShotOracle, n: int) -> None:
    """Creates, scores and ends `n` trials, as a tuner would."""
    for _ in range(n):
        trial = oracle.create_trial("tuner0")
        oracle.update_trial(trial.trial_id, {"oneshot_accuracy": fake_accuracy(oracle.architecture(trial))})
        trial.status = "COMPLETED"
        oracle.end_trial(trial)


def measure(oracle: OneShotOracle, directory: str, algorithm: str, max_trials: int, population_size: int,
            repeats: int) -> dict[str, float]:
    times = []
    for _ in range(repeats):
        tic = time.perf_counter()
        oracle.save()
        times.append(time.perf_counter() - tic)
    path = os.path.join(directory, algorithm, "oracle.json")
    with open(path) as f:
        saved = json.load(f)
    tic = time.perf_counter()
    make_oracle(directory, algorithm, max_trials, population_size).reload()
    return {
        "save_ms": 1e3 * statistics.median(times),
        "file_bytes": os.path.getsize(path),
        "oneshot_bytes": len(json.dumps(saved["oneshot"])),
        "reload_ms": 1e3 * (time.perf_counter() - tic),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", default="100,2000", help="comma-separated checkpoints, increasing")
    parser.add_argument("--population_size", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--algorithms", default="evolution,random")
    args = parser.parse_args()
    checkpoints = [int(t) for t in args.trials.split(",")]
    columns = [("save_ms", "save (ms)", "{:.2f}"), ("file_bytes", "oracle.json (bytes)", "{:,}"),
               ("oneshot_bytes", '"oneshot" part (bytes)', "{:,}"), ("reload_ms", "reload (ms)", "{:.0f}")]
    for algorithm in args.algorithms.split(","):
        with tempfile.TemporaryDirectory(prefix="tf_oneshot_oracle_") as directory:
            oracle = make_oracle(directory, algorithm, checkpoints[-1], args.population_size)
            rows, done = {}, 0
            for n in checkpoints:
                run_trials(oracle, n - done)
                done = n
                rows[n] = measure(oracle, directory, algorithm, checkpoints[-1], args.population_size, args.repeats)
        print(f"\n{algorithm} (population {args.population_size})" if algorithm == "evolution" else f"\n{algorithm}")
        print("| trials | " + " | ".join(c[1] for c in columns) + " |")
        print("| ---: | " + " | ".join("---:" for _ in columns) + " |")
        for n, row in rows.items():
            print(f"| {n:,} | " + " | ".join(fmt.format(row[key]) for key, _, fmt in columns) + " |")
        first, last = rows[checkpoints[0]], rows[checkpoints[-1]]
        print(f"| ratio {checkpoints[-1]:,} / {checkpoints[0]:,} | "
              + " | ".join(f"{last[key] / first[key]:.2f}" for key, _, _ in columns) + " |")


if __name__ == "__main__":
    main()
