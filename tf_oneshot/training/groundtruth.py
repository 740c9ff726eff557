"""Ground truth of an enumerable search space: every child trained stand-alone over several seeds.

"Deeper insights into weight sharing" §3.1: "the ground truth performance of
each child model is obtained by training each of them independently from
scratch with the same setting as weight sharing, and averaging over 10 runs
with different random seeds for initializations." Here every child of a
space small enough to enumerate (the paper's: 64) is trained from scratch,
alone, with the recipe of every child (`tf_oneshot.training.child`): the
one-shot training's dataset, steps, batch, ghost batch and optimizer flags,
no path dropout, batch norm recalibrated before evaluation. Its validation
accuracy, validation loss (which orders children whose accuracies tie) and
test accuracy are recorded.

Two child trainers do this (`--method`): "standalone" builds and traces each
child's Keras model anew for every (child, seed); "masked" (the default)
trains the child inside the space's one-shot model under its fixed masks,
from fresh weights, so one trace serves every child and seed, with the same
steps (tests/test_ground_truth.py checks the weights against the
stand-alone child's). benchmarks/ground_truth_speed.py times both: at
digits scale (F=8, 4 cells, 200 steps) on 2 shared cores, 7.4 against 5.0
runs per minute over all 64 children. One process keeps about one core
busy there; shards run at once (`--shard=0/2`, `--shard=1/2`) used the
second core, each as fast as a lone process after its first trace.

Layout of the output directory:

    results.jsonl             one line per finished (child, seed), fsync'd (a `RecordFile`)
    results-I-of-N.jsonl      the same for shard I of N (`--shard=I/N`)
    ground_truth.json         the summary: each child's mean and std over seeds

The (child, seed) pairs are numbered seed-major (every child of the first
seed, then of the second ...), so a partial run already holds whole seeds and
adding seeds later keeps the numbers of the old pairs; shard I of N trains
the pairs whose number is I mod N. A run skips every pair found in *any*
results file of the directory, so a killed run, or a re-sharded one, never
trains a pair twice. The summary is written when every pair is present (by
the run that completes it, or by `merge`); it refuses pairs found twice
(overlapping shards running at once) and missing pairs, each with one line.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import time
from collections.abc import Callable, Hashable, Sequence
from typing import Any

import numpy as np
import tensorflow as tf

from tf_oneshot.analysis import ground_truth as metrics
from tf_oneshot.errors import UserError
from tf_oneshot.io_utils import atomic_write_json, read_json
from tf_oneshot.record_file import RecordFile
from tf_oneshot.search_spaces import (
    ENUMERATION_LIMIT,
    SearchSpace,
    get_space,
    known_spaces,
    space_from_config,
)
from tf_oneshot.training import data
from tf_oneshot.training.child import (
    RECALIBRATION_IMAGES,
    FusedChildren,
    MaskedChild,
    StandaloneChild,
    fuse_count,
)
from tf_oneshot.training.config import TrainConfig
from tf_oneshot.training.preemption import Preempted
from tf_oneshot.training.retrain import RUN_FIELDS, as_written_now, events_dir, write_run_scalars

RECORD_KIND = "tf_oneshot.groundtruth"
SUMMARY_KIND = "tf_oneshot.ground_truth"
SUMMARY_FILE = "ground_truth.json"
RESULTS_FILE = "results.jsonl"
_SHARD_FILE = re.compile(r"^results(-(\d+)-of-(\d+))?\.jsonl$")
# Fields of a line that must equal this run's: a mix would average incomparable runs.
# (Ground truth never trains on the validation split: retrain's full_train does not apply.)
TRAIN_FIELDS = tuple(f for f in RUN_FIELDS if f != "full_train")
SETTINGS_FIELDS = (*TRAIN_FIELDS, "bn_recalibration_images", "space")

TrainFn = Callable[[SearchSpace, Hashable, TrainConfig, int], dict[str, Any]]


@dataclasses.dataclass(frozen=True)
class Shard:
    """Shard `index` of `count`: the pairs whose seed-major number is `index` mod `count`."""

    index: int = 0
    count: int = 1

    @classmethod
    def parse(cls, text: str | None) -> Shard:
        """"I/N" -> Shard(I, N); None or "" -> the whole run."""
        if not text:
            return cls()
        match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
        if not match or not 0 <= int(match[1]) < int(match[2]):
            raise UserError(f"--shard={text} is invalid; expected I/N with 0 <= I < N, e.g. --shard=0/4.")
        return cls(int(match[1]), int(match[2]))

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"

    def results_file(self) -> str:
        return RESULTS_FILE if self.count == 1 else f"results-{self.index}-of-{self.count}.jsonl"


@dataclasses.dataclass(frozen=True)
class GroundTruthRun:
    """What `run_ground_truth` did.

    Attributes:
        trained: (child, seed) pairs trained now.
        skipped: pairs of this shard found finished in the directory.
        results_path: the file this shard appends to.
        summary: the summary written now, or None while pairs are missing.
        missing: pairs of the whole run (every shard) not yet trained.
        preempted: `stop` ended the run early (every finished pair recorded).
    """

    trained: tuple[tuple[str, int], ...]
    skipped: tuple[tuple[str, int], ...]
    results_path: str
    summary: dict | None
    missing: int
    preempted: bool = False


# ------------------------------------------------------------------ checks
def enumerable_spaces() -> list[str]:
    """"name (size)" of the registered spaces that can be enumerated with their default fields."""
    out = []
    for name in known_spaces():
        try:
            size = get_space(name).size()
        except (UserError, TypeError, ValueError):
            continue
        if size <= ENUMERATION_LIMIT:
            out.append(f"{name} ({size:,} children)")
    return out


def check_enumerable(space: SearchSpace) -> list[Hashable]:
    """Every child of `space`, or UserError saying its size and the limit."""
    size = space.size()
    if size > ENUMERATION_LIMIT:
        small = enumerable_spaces()
        hint = f"; use a small space: {', '.join(small)}" if small else ""
        raise UserError(
            f"ground truth trains every architecture, but search space {space.name!r} holds {size:,}, more "
            f"than the {ENUMERATION_LIMIT:,} that can be enumerated{hint}."
        )
    return list(space.enumerate())


def check_seeds(seeds: Sequence[int], noise_ceiling: bool | None = None) -> list[int]:
    """The seeds as ints, refusing none, repeats, and too few for a demanded noise ceiling."""
    seeds = [int(s) for s in seeds]
    if not seeds:
        raise UserError("--seeds is empty; the ground truth averages several seeds, e.g. --seeds=0-9.")
    repeated = sorted({s for s in seeds if seeds.count(s) > 1})
    if repeated:
        raise UserError(f"--seeds repeats {repeated[0]}; each seed is one run, give it once.")
    if noise_ceiling and len(seeds) < 4:
        raise UserError(
            f"the noise ceiling needs at least 2 seeds per half (4 seeds), got {len(seeds)}; pass more "
            "--seeds or --nonoise_ceiling."
        )
    return seeds


def run_settings(config: TrainConfig, space: SearchSpace, recalibration_images: int) -> dict[str, Any]:
    """What every line of one ground truth shares: the training setting and the whole space (F included)."""
    flat = config.to_flat()
    settings = {f: flat[f] for f in TRAIN_FIELDS}
    settings["bn_recalibration_images"] = int(recalibration_images)
    settings["space"] = space.to_config()
    return json.loads(json.dumps(settings))  # tuples -> lists, as read back from a file


def _check_numbers(record: dict, where: str) -> None:
    """UserError for a line whose metrics are not finite numbers, or without its child and seed."""
    for key in ("validation_accuracy", "validation_loss", "test_accuracy"):
        value = record.get(key)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise UserError(f"{where} has {key}={value!r}; expected a finite number. Remove that line and rerun.")
    if not isinstance(record.get("architecture"), str) or not isinstance(record.get("seed"), int):
        raise UserError(f"{where} lacks its architecture or seed; remove that line and rerun.")


# ------------------------------------------------------------------- files
def results_files(output: str) -> list[str]:
    """Every results file of the directory (unsharded and sharded), sorted."""
    if not tf.io.gfile.isdir(output):
        return []
    names = [n for n in tf.io.gfile.listdir(output) if _SHARD_FILE.match(n.rstrip("/"))]
    return [os.path.join(output, n) for n in sorted(names)]


def results_file(path: str, settings: dict[str, Any]) -> RecordFile:
    """One results file: its lines are of `settings` (space first) with finite metrics.

    A run takes seconds to minutes, so every line is written at once, remote files too.
    """
    return RecordFile(path, RECORD_KIND, settings, what="a `tf-oneshot groundtruth` result",
                      fix="pass another --output or the same flags", check=_check_numbers, flush_seconds=0.0,
                      normalize=as_written_now)


def read_results(output: str, settings: dict | None = None) -> tuple[list[tuple[str, int, dict]], dict | None]:
    """(file, line number, record) of every line in the directory, checked against `settings`.

    Without `settings` the first line's setting is the reference, so files of
    two settings are still refused.
    """
    paths = results_files(output)
    if settings is None:
        settings = _first_settings(paths)
    out = []
    for path in paths:
        out += [(path, number, r) for number, r in enumerate(results_file(path, settings).records(), start=1)]
    return out, settings


def _first_settings(paths: Sequence[str]) -> dict | None:
    """The setting of the first line of the first results file that has one (None: no line)."""
    for path in paths:
        lines = results_file(path, {}).records()  # of this kind, any setting
        if lines:
            return {f: as_written_now(lines[0]).get(f) for f in SETTINGS_FIELDS}
    return None


def all_pairs(children: Sequence[Hashable], seeds: Sequence[int]) -> list[tuple[str, int]]:
    """Every (child, seed), seed-major: pair number = seed position * children + child position."""
    return [(str(child), int(seed)) for seed in seeds for child in children]


# ----------------------------------------------------------------- summary
def _per_child(records: dict[tuple[str, int], dict], children: Sequence[str], seeds: Sequence[int],
               key: str) -> np.ndarray:
    return np.array([[float(records[(c, s)][key]) for c in children] for s in seeds], np.float64)


def summarize(records: dict[tuple[str, int], dict], children: Sequence[str], seeds: Sequence[int],
              settings: dict, noise_ceiling: bool | None = None) -> dict[str, Any]:
    """The summary: each child's mean and std (ddof=0, as the paper) over seeds, its rank, the ceiling.

    A child's `rank` is its position (1 = best) by mean validation accuracy,
    ties broken by the lower mean validation loss. The noise ceiling
    (`analysis.ground_truth.noise_ceiling`) needs 4 seeds; with fewer it is
    None unless `noise_ceiling` demands it (UserError).
    """
    accuracy = _per_child(records, children, seeds, "validation_accuracy")  # [seeds, children]
    loss = _per_child(records, children, seeds, "validation_loss")
    test = _per_child(records, children, seeds, "test_accuracy")
    scores = metrics.accuracy_then_loss(accuracy.mean(0), loss.mean(0))
    ranks = metrics.ground_truth_positions(scores)
    table = []
    for j, child in enumerate(children):
        first = records[(child, seeds[0])]
        table.append({
            "architecture": child,
            "rank": int(ranks[j]),
            "validation_accuracy_mean": float(accuracy[:, j].mean()),
            "validation_accuracy_std": float(accuracy[:, j].std()),
            "validation_loss_mean": float(loss[:, j].mean()),
            "validation_loss_std": float(loss[:, j].std()),
            "test_accuracy_mean": float(test[:, j].mean()),
            "test_accuracy_std": float(test[:, j].std()),
            "params": first.get("params"),
            "flops": first.get("flops"),
            "validation_accuracy": accuracy[:, j].tolist(),
            "validation_loss": loss[:, j].tolist(),
        })
    summary: dict[str, Any] = {
        "kind": SUMMARY_KIND,
        **settings,
        "seeds": [int(s) for s in seeds],
        "num_children": len(children),
        "num_runs": len(children) * len(seeds),
        "children": table,
        "noise_ceiling": None,
        "ground_truth_rows": None,
    }
    if len(seeds) >= 4 and noise_ceiling is not False:
        summary["noise_ceiling"] = {
            "validation_accuracy": metrics.noise_ceiling(accuracy),
            "validation_loss": metrics.noise_ceiling(-loss),
        }
    elif noise_ceiling:
        metrics.noise_ceiling(accuracy)  # raises: too few seeds
    if len(seeds) >= 2 and len(children) >= 2:
        summary["ground_truth_rows"] = metrics.ground_truth_rows(accuracy)
    return summary


def merge(output: str, space: SearchSpace | None = None, settings: dict | None = None,
          seeds: Sequence[int] | None = None, noise_ceiling: bool | None = None,
          log: Callable[[str], None] = print) -> dict[str, Any]:
    """Checks every results file of `output` and writes `ground_truth.json` (atomically).

    Args:
        output: the ground-truth directory.
        space: the space (default: the one the results record).
        settings: `run_settings` to check the lines against (default: the first line's).
        seeds: the seeds the ground truth averages (default: those the runs asked for).
        noise_ceiling: None computes it when there are 4 seeds, True demands it, False skips it.
        log: progress lines.

    Returns:
        The summary written.

    Raises:
        UserError: no results, lines of another kind, space or setting, a
            (child, seed) pair found twice (overlapping shards), or pairs missing.
    """
    lines, settings = read_results(output, settings)
    if not lines:
        raise UserError(f"no ground-truth results in {output}; run `tf-oneshot groundtruth --output={output}` "
                        "first.")
    found: dict[tuple[str, int], tuple[str, int, dict]] = {}
    twice = []
    for path, number, record in lines:
        pair = (str(record["architecture"]), int(record["seed"]))
        if pair in found:
            twice.append((pair, found[pair], (path, number)))
        else:
            found[pair] = (path, number, record)
    if twice:
        (child, seed), (path_a, line_a, _), (path_b, line_b) = twice[0]
        where = (f"{path_a} holds it twice (lines {line_a} and {line_b})" if path_a == path_b
                 else f"{path_a} line {line_a} and {path_b} line {line_b} both hold it")
        raise UserError(
            f"child {child} seed {seed} was trained twice ({len(twice)} pair(s) in all): {where}; shards "
            "overlap (two runs of one shard, or shards of different N, at once). Remove the duplicate lines "
            "and merge again."
        )
    if space is None:
        space = space_from_config(settings["space"])
    children = [str(c) for c in check_enumerable(space)]
    if seeds is None:
        asked = [int(s) for _, _, r in lines for s in (r.get("seeds") or [r["seed"]])]
        seeds = list(dict.fromkeys(sorted(asked)))
    expected = all_pairs(children, seeds)
    missing = [p for p in expected if p not in found]
    if missing:
        child, seed = missing[0]
        raise UserError(
            f"the ground truth in {output} is incomplete: {len(missing)} of {len(expected)} (child, seed) pairs "
            f"are missing, e.g. child {child} seed {seed}; run the shards that lack them (or rerun without "
            "--shard) first."
        )
    extra = len(found) - len(expected)
    if extra:
        log(f"merge: {extra} runs of seeds outside {','.join(map(str, seeds))} are left out of the summary")
    summary = summarize({p: found[p][2] for p in expected}, children, list(seeds), settings, noise_ceiling)
    summary["files"] = sorted({os.path.basename(path) for path, _, _ in lines})
    path = os.path.join(output, SUMMARY_FILE)
    atomic_write_json(path, summary)
    log(f"ground truth: {len(children)} children x {len(seeds)} seeds -> {path}")
    return summary


def load_summary(path: str) -> dict[str, Any]:
    """Reads `ground_truth.json` (a path or its directory); UserError if it is not one."""
    if tf.io.gfile.isdir(path):
        path = os.path.join(path, SUMMARY_FILE)
    summary = read_json(path, "ground-truth summary")
    if not isinstance(summary, dict) or summary.get("kind") != SUMMARY_KIND:
        raise UserError(f"{path} is not a ground-truth summary; run `tf-oneshot groundtruth` to write one.")
    return summary


# -------------------------------------------------------------------- run
class _PairTrainer:
    """A child trainer (`tf_oneshot.training.child`) called as a `TrainFn`: one (child, seed) from fresh weights."""

    def __call__(self, space: SearchSpace, arch: Hashable, config: TrainConfig, seed: int) -> dict[str, Any]:
        if config != self.config or space.to_config() != self.space.to_config():
            raise ValueError(f"a {type(self).__name__} trains the space and config it was built for.")
        return self.run(arch, seed)


class MaskedTrainer(_PairTrainer, MaskedChild):
    """Trains each (child, seed) inside the space's one-shot model under fixed masks, traced once (`MaskedChild`).

    At digits scale the traces of a new network's train, recalibration and
    evaluation functions cost more than its training: one trace serves every
    child and seed here, each step equal to the child's stand-alone step.
    """


class StandaloneTrainer(_PairTrainer, StandaloneChild):
    """Trains each (child, seed) as its own Keras model, built and traced anew (`StandaloneChild`)."""


class FusedTrainer(FusedChildren):
    """Trains groups of K (child, seed) pairs side by side in one traced step (`FusedChildren`, HFTA)."""

    def __call__(self, space: SearchSpace, arch: Hashable, config: TrainConfig, seed: int) -> dict[str, Any]:
        return self.run([(arch, seed)])[0]


TRAINERS = {"masked": MaskedTrainer, "standalone": StandaloneTrainer, "fused": FusedTrainer}
METHODS = tuple(TRAINERS)


def make_trainer(method: str, space: SearchSpace, config: TrainConfig,
                 strategy: tf.distribute.Strategy | None = None,
                 recalibration_images: int = RECALIBRATION_IMAGES,
                 stop: Callable[[], bool] | None = None, fuse_children: int | None = None) -> TrainFn:
    """The pair trainer of `method`: "masked", "standalone" or "fused" (`fuse_children` pairs per step, None: from memory)."""
    if method not in TRAINERS:
        raise UserError(f"--method={method} is unknown; choose {' or '.join(METHODS)}.")
    fused = {"children": fuse_children} if method == "fused" else {}
    return TRAINERS[method](space, config, strategy, recalibration_images=recalibration_images, stop=stop, **fused)


def _groups(todo: Sequence[tuple[str, int]], train_fn: TrainFn) -> list[list[tuple[str, int]]]:
    """The pairs in the groups `train_fn` trains at once: K for a fused trainer, else one."""
    size = train_fn.children if isinstance(train_fn, FusedChildren) else 1
    return [list(todo[i:i + size]) for i in range(0, len(todo), size)]


def _train_group(train_fn: TrainFn, space: SearchSpace, config: TrainConfig, by_name: dict[str, Hashable],
                 group: Sequence[tuple[str, int]]) -> list[dict[str, Any]]:
    """The metrics of each pair of `group`, fused in one run or one pair at a time."""
    if isinstance(train_fn, FusedChildren):
        return train_fn.run([(by_name[child], seed) for child, seed in group])
    return [train_fn(space, by_name[child], config, seed) for child, seed in group]


def run_ground_truth(
    space: SearchSpace,
    config: TrainConfig,
    seeds: Sequence[int],
    output: str,
    shard: Shard = Shard(),
    strategy: tf.distribute.Strategy | None = None,
    log: Callable[[str], None] = print,
    recalibration_images: int = RECALIBRATION_IMAGES,
    noise_ceiling: bool | None = None,
    train_fn: TrainFn | None = None,
    method: str = "masked",
    stop: Callable[[], bool] | None = None,
    fuse_children: int | None = None,
) -> GroundTruthRun:
    """Trains this shard's (child, seed) pairs not yet found in `output`; writes the summary when complete.

    Args:
        space: an enumerable search space (its `filters` etc. fix the network).
        config: dataset, train_steps, batch, ghost batch and optimizer: the
            one-shot training's ("the same setting as weight sharing", §3.1).
        seeds: one stand-alone run per child and seed (10 in §3.1).
        output: the ground-truth directory.
        shard: which pairs this process trains.
        strategy: a tf.distribute strategy.
        log: progress lines.
        recalibration_images: see `child.ChildTrainer`.
        noise_ceiling: None: in the summary when there are 4 seeds; True:
            demanded (UserError before any training with fewer); False: skipped.
        train_fn: trains one pair and returns its metrics (default: the
            trainer of `method`).
        method: "masked" (`MaskedTrainer`: one trace for every child, the
            default), "standalone" (`StandaloneTrainer`: a new model and
            traces per pair) or "fused" (`FusedTrainer`: groups of
            `fuse_children` pairs in one step); each trains every child from
            scratch as alone.
        fuse_children: pairs per step of the "fused" method (HFTA); None:
            `child.fuse_count` (from memory), at most the pairs to train.
        stop: polled between pairs and chunks of training (SIGTERM, Ctrl-C):
            the pair in hand is dropped, finished pairs kept; a rerun resumes.

    Raises:
        UserError: a space too large to enumerate, bad seeds, a dataset that
            does not fit the space, or results of another space or setting in `output`.
    """
    children = check_enumerable(space)
    seeds = check_seeds(seeds, noise_ceiling)
    data.check_fits(config.data.dataset, config.data.data_dir, space.image_shape, space.num_classes)
    settings = run_settings(config, space, recalibration_images)
    lines, _ = read_results(output, settings)
    done = {(str(r["architecture"]), int(r["seed"])) for _, _, r in lines}
    pairs = all_pairs(children, seeds)
    mine = [p for number, p in enumerate(pairs) if number % shard.count == shard.index]
    todo, skipped = [p for p in mine if p not in done], tuple(p for p in mine if p in done)
    path = os.path.join(output, shard.results_file())
    results = results_file(path, settings)
    by_name = {str(c): c for c in children}
    log(f"groundtruth: {len(children)} children x {len(seeds)} seeds of {space.name}, {config.train_steps} steps "
        f"each; shard {shard}: {len(mine)} runs, {len(skipped)} already done, {len(todo)} to train -> {path}")
    if train_fn is None and todo:
        train_fn = _default_trainer(method, space, config, strategy, recalibration_images, stop, fuse_children,
                                    len(todo))
    trained, tic = [], time.perf_counter()
    for group in _groups(todo, train_fn) if todo else []:
        try:
            if stop is not None and stop():
                raise Preempted(f"before {group[0][0]} seed {group[0][1]}")
            group_results = _train_group(train_fn, space, config, by_name, group)
        except Preempted as e:
            log(f"groundtruth: stopped ({e}); {len(trained)} runs recorded now, a rerun resumes.")
            missing = sum(p not in done for p in pairs) - len(trained)
            return GroundTruthRun(tuple(trained), skipped, path, None, missing, preempted=True)
        for (child, seed), result in zip(group, group_results):
            results.append(_record(space, by_name[child], seed, result, seeds, shard,
                                   getattr(train_fn, "method", "custom")))
            trained.append((child, seed))
            write_run_scalars(events_dir(path), "groundtruth", pairs.index((child, seed)), result)  # step: seed-major
            log(_progress(len(trained), len(todo), child, seed, result, time.perf_counter() - tic))
    summary, missing = _merge_if_complete(output, space, settings, seeds, pairs, shard, noise_ceiling, log)
    return GroundTruthRun(tuple(trained), skipped, path, summary, missing)


def _default_trainer(method: str, space: SearchSpace, config: TrainConfig, strategy, recalibration_images: int,
                     stop, fuse_children: int | None, pairs: int) -> TrainFn:
    """The trainer of `method`; a fused one without a given K gets no more slots than pairs to fill them."""
    if method == "fused" and fuse_children is None:
        fuse_children = min(fuse_count(space, config), pairs)
    return make_trainer(method, space, config, strategy, recalibration_images, stop, fuse_children)


def _progress(index: int, count: int, child: str, seed: int, result: dict[str, Any], elapsed: float) -> str:
    """The line logged after the `index`-th of `count` runs: its numbers, the rate and what is left."""
    rate = index / elapsed * 60
    eta = (count - index) / max(rate, 1e-9)
    return (f"[{index}/{count}] {child} seed {seed}: validation {result['validation_accuracy']:.4f} "
            f"loss {result['validation_loss']:.4f}, test {result['test_accuracy']:.4f} "
            f"({result.get('seconds', math.nan):.1f}s; {rate:.1f} runs/min, {eta:.0f} min left)")


def _record(space: SearchSpace, arch: Any, seed: int, result: dict[str, Any], seeds: Sequence[int], shard: Shard,
            method: str) -> dict[str, Any]:
    """One finished (child, seed) run's line, less the file's kind and setting; a diverged run is a UserError."""
    child = str(arch)
    bad = [k for k in ("validation_accuracy", "validation_loss", "test_accuracy")
           if not math.isfinite(result.get(k, math.nan))]
    if bad:
        raise UserError(f"child {child} seed {seed} diverged ({bad[0]}={result.get(bad[0])}); lower "
                        "--learning_rate and use a new --output. Finished runs are kept.")
    cost = space.count(arch)
    return {
        "architecture": child,
        "seed": seed,
        "seeds": seeds,
        "shard": str(shard),
        "method": method,
        "flops": int(cost.flops),
        "params": int(cost.params),
        **result,
    }


def _merge_if_complete(output: str, space: SearchSpace, settings: dict[str, Any], seeds: Sequence[int],
                       pairs: Sequence[tuple[str, int]], shard: Shard, noise_ceiling: bool | None,
                       log: Callable[[str], None]) -> tuple[dict | None, int]:
    """(the summary, or None while other shards' runs are missing; how many are missing)."""
    lines, _ = read_results(output, settings)
    present = {(str(r["architecture"]), int(r["seed"])) for _, _, r in lines}
    missing = sum(p not in present for p in pairs)
    if missing:
        log(f"groundtruth: shard {shard} done; {missing} of {len(pairs)} runs of other shards are still missing. "
            f"The last shard to finish writes {SUMMARY_FILE}, or run with --merge.")
        return None, missing
    return merge(output, space, settings, seeds, noise_ceiling, log), 0
