"""Times the trainer and the search command of two revisions side by side, end to end.

Each round trains a one-shot model with `tf-oneshot train` and scores
architectures with `tf-oneshot search` under the code of the base revision
(a git worktree) and of this working tree, alternately, so machine load hits
both alike. The figures are the ones the commands log themselves: images per
second per logging window (the first window, which holds the tracing, left
out) and architectures per second of the search. Prints both and the ratio
new / base (above 1: the new code is faster).

    python benchmarks/compare_revisions.py                     # base: the last commit before plug-in spaces
    python benchmarks/compare_revisions.py --base=HEAD~3 --rounds=3
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys

from revision_tree import ROOT, base_tree

# The last commit of main before search spaces and samplers became plug-ins.
BEFORE_PLUGINS = "fa4d41e"
TRAIN_FLAGS = ["--dataset=digits", "--filters=16", "--num_cells=6", "--batch_size=64", "--ghost_batch_size=32",
               "--train_steps=400", "--log_every=50", "--checkpoint_every=400"]


def run(tree: str, args: list[str]) -> str:
    env = {**os.environ, "PYTHONPATH": tree, "TF_CPP_MIN_LOG_LEVEL": "2"}
    out = subprocess.run([sys.executable, "-m", "tf_oneshot", *args], cwd=tree, env=env, capture_output=True,
                         text=True, check=False)
    if out.returncode:
        raise SystemExit(f"{tree}: tf-oneshot {args[0]} failed:\n{out.stderr[-2000:]}")
    return out.stdout + out.stderr


def train_rate(log: str) -> float:
    rates = [float(r) for r in re.findall(r"\((\d+) img/s", log)]
    return statistics.median(rates[1:])


def search_rate(log: str) -> float:
    return float(re.findall(r"([\d.]+) arch/s", log)[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", default=BEFORE_PLUGINS, help="git revision to compare against")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--num_architectures", type=int, default=200)
    args = parser.parse_args()
    samples = {(name, what): [] for name in ("base", "new") for what in ("train", "search")}
    with base_tree(args.base, "tf_oneshot_compare_") as (tree, scratch):
        trees = {"base": tree, "new": ROOT}
        for r in range(args.rounds):
            for name, tree in trees.items():
                model_dir = os.path.join(scratch, f"{name}{r}")
                samples[(name, "train")].append(train_rate(run(tree, ["train", f"--model_dir={model_dir}",
                                                                      *TRAIN_FLAGS])))
                log = run(tree, ["search", f"--model_dir={model_dir}", "--archs_per_pass=1",
                                 f"--num_architectures={args.num_architectures}",
                                 f"--results={os.path.join(scratch, f'{name}{r}.jsonl')}"])
                samples[(name, "search")].append(search_rate(log))
    print(f"\nbase {args.base} vs this tree, {args.rounds} round(s), {os.cpu_count()} CPU(s); "
          f"train: {' '.join(TRAIN_FLAGS)}")
    print(f"{'measure':<40} {'base':>10} {'new':>10} {'new/base':>9}")
    for what, unit in (("train", "img/s"), ("search", "arch/s")):
        base, new = statistics.median(samples[("base", what)]), statistics.median(samples[("new", what)])
        print(f"{what + ' (' + unit + ', median over rounds)':<40} {base:>10.2f} {new:>10.2f} {new / base:>9.2f}")


if __name__ == "__main__":
    main()
