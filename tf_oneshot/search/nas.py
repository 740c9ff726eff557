"""Iterated one-shot NAS: train on a pool, score it, let the algorithm grow it (NAO-WS / NAO-V2).

Each iteration (Luo et al., NAO-V2, §3.2 and §4):
1. trains the supernet for T steps on architectures drawn from the current
   candidate pool (`--sampler=proportional`: Eq. 1, in proportion to model
   size, §4.2; `uniform`: NAO-WS);
2. scores the pool with the shared weights (`search.scorer.OneShotScorer`);
3. tells the search algorithm (any algorithm of `tf_oneshot.search.ALGORITHMS`,
   built by `tf_oneshot.search.make_algorithm`);
4. adds the algorithm's new candidates to the pool.

Iterations are independent by default (§4.3, Fig. 2a): the cosine cycle is
one iteration's T steps and restarts each iteration, the optimizer's slots
are zeroed, and every architecture of the pool is scored again with the
current weights. `iteration_mode="dependent"` (Fig. 2b, NAO-WS) runs one
cycle over K*T steps, keeps the slots, and reuses scores from earlier
iterations. Table 5's ablation rows are then flags: fewer
`--steps_per_iteration` ("- more average updates"), `--sampler=uniform`
("- proportional sampling"), `--iteration_mode=dependent` ("- independent
training").

Everything lives in the model_dir: the trainer's checkpoints (a kill during
training resumes from the last one) and `nas/settings.json` (written once;
a rerun with other settings is refused) and `nas/iterations.jsonl`, an
append-only log (a `tf_oneshot.record_file.RecordFile`: fsync'd lines, a torn
last line dropped; on GCS the scores are written in batches, and the pool and
each iteration's end at once): the initial pool, each score (with the
checkpoint step it was scored at) and each iteration's end (new candidates
and the algorithm's `get_state`). A rerun replays that log: finished scores
are not computed again, and the algorithm is rebuilt by `set_state`, so a
run killed at any point ends exactly as an uninterrupted one. At the end,
`nas/final_pool.jsonl` holds the last pool's scores in the format of
`tf-oneshot search` results, for `tf-oneshot retrain --search_results`
(NAO-V2 retrains the top 5) and `tf-oneshot analyze`.

`tuner_nas.IteratedOneShotOracle` runs the same loop (`open_loop`, `Loop`)
with KerasTuner's workers scoring the pools.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Hashable, Sequence
from typing import TYPE_CHECKING, Any

from tf_oneshot.errors import UserError, require_positive
from tf_oneshot.search.algorithms import ALGORITHMS
from tf_oneshot.search.algorithms import make_algorithm as make_search_algorithm
from tf_oneshot.search.base import SearchAlgorithm
from tf_oneshot.search.bn_modes import check_bn_mode
from tf_oneshot.training.config import TrainConfig

if TYPE_CHECKING:  # imports TensorFlow
    from tf_oneshot.training.model_dir import ModelDir

ITERATION_MODES = ("independent", "dependent")
# Which architectures an iteration trains on: the whole pool (NAO-WS, this
# package's default) or the candidates the last iteration added (NAO-V2's code).
TRAIN_ON = ("pool", "newest")
POOL_SAMPLERS = ("proportional", "uniform")
SETTINGS_FILE = os.path.join("nas", "settings.json")
LOG_FILE = os.path.join("nas", "iterations.jsonl")
# The last pool's scores as `tf-oneshot search` results, for `retrain` / `analyze --search_results`.
FINAL_FILE = os.path.join("nas", "final_pool.jsonl")
# Training fields that only change logging and bookkeeping, not the weights a
# run produces: a rerun may change them.
BOOKKEEPING_FIELDS = ("data_dir", "steps_per_loop", "checkpoint_every", "log_every", "keep_checkpoints",
                      "eval_batches", "jit_compile", "skip_threshold")


@dataclasses.dataclass(frozen=True)
class NasSettings:
    """The iteration settings of one run (recorded in `nas/settings.json`).

    Args:
        iterations: K, the number of train / score / propose rounds.
        steps_per_iteration: T, supernet steps per iteration.
        pool_size: P, the initial pool (NAO-V2's code: 1000).
        algorithm: a name of `tf_oneshot.search.ALGORITHMS` (or "nao").
        sampler: "proportional" (NAO-V2 §4.2) or "uniform" (NAO-WS).
        iteration_mode: "independent" (NAO-V2 §4.3) or "dependent".
        bn_mode: batch-norm mode of the scorer.
        validation_examples: score on this many validation examples (None: all).
        new_per_iteration: candidates each iteration adds (None: `pool_size`;
            NAO-V2's code: 300).
        train_on: "pool" (every iteration trains on the whole pool) or
            "newest" (iteration 1 on the initial pool, each later one on the
            candidates the one before added, as NAO-V2's code does); the whole
            pool is scored either way.
    """

    iterations: int
    steps_per_iteration: int
    pool_size: int
    algorithm: str = "random"
    sampler: str = "proportional"
    iteration_mode: str = "independent"
    bn_mode: str = "batch"
    validation_examples: int | None = None
    new_per_iteration: int | None = None
    train_on: str = "pool"

    def __post_init__(self) -> None:
        if self.new_per_iteration is None:
            object.__setattr__(self, "new_per_iteration", self.pool_size)
        for name in ("iterations", "steps_per_iteration", "pool_size", "new_per_iteration"):
            require_positive(name, getattr(self, name))
        if self.sampler not in POOL_SAMPLERS:
            raise UserError(f"--sampler={self.sampler} cannot sample a candidate pool; choose one of "
                            f"{', '.join(POOL_SAMPLERS)} (NAO-V2 §4.2: proportional).")
        check_bn_mode(self.bn_mode)
        if self.train_on not in TRAIN_ON:
            raise UserError(f"--train_on={self.train_on} is unknown; choose one of {', '.join(TRAIN_ON)} "
                            "(NAO-V2's code: newest).")
        if self.algorithm == "evolution" and self.new_per_iteration != self.pool_size:
            raise UserError(f"--new_per_iteration={self.new_per_iteration} differs from --pool_size={self.pool_size}"
                            ", and evolution's generations are all one size; drop --new_per_iteration or use "
                            "--algorithm=nao or random.")
        if self.iteration_mode not in ITERATION_MODES:
            raise UserError(f"--iteration_mode={self.iteration_mode} is unknown; choose one of "
                            f"{', '.join(ITERATION_MODES)}.")

    @property
    def independent(self) -> bool:
        return self.iteration_mode == "independent"

    @property
    def total_steps(self) -> int:
        return self.iterations * self.steps_per_iteration

    @property
    def scores(self) -> int:
        """Scores taken in all: independent iterations rescore the whole grown pool, dependent ones the new."""
        if not self.independent:
            return self.budget
        K, P, N = self.iterations, self.pool_size, self.new_per_iteration
        return K * P + N * K * (K - 1) // 2

    @property
    def budget(self) -> int:
        """Distinct architectures proposed in all: the initial pool, then the new ones of K - 1 iterations."""
        return self.pool_size + self.new_per_iteration * (self.iterations - 1)

    def train_config(self, config: TrainConfig) -> TrainConfig:
        """The trainer's config: K*T steps (the dependent mode's cosine cycle), the pool's sampler."""
        # The trainer draws one architecture per ghost batch from what it trains on.
        sizes = {"pool_size": self.pool_size}
        if self.train_on == "newest" and self.iterations > 1:
            sizes["new_per_iteration"] = self.new_per_iteration
        for name, size in sizes.items():
            if config.data.num_ghosts > size:
                raise UserError(
                    f"--{name}={size} is smaller than one batch of ghost batches "
                    f"(--batch_size={config.data.batch_size} / --ghost_batch_size={config.data.ghost_batch_size}"
                    f" = {config.data.num_ghosts} architectures per step); use --{name} >= "
                    f"{config.data.num_ghosts}."
                )
        return config.replace(train_steps=self.total_steps, sampler=self.sampler)


# ------------------------------------------------------------------ algorithm
def make_algorithm(settings: NasSettings, space: Any, constraints: Any, seed: int) -> SearchAlgorithm:
    """A fresh algorithm with the settings' budget (P to start, then the new candidates of each iteration).

    One generation per iteration: evolution's population is P
    (`population_size`); NAO's initial pool is P and its later generations
    `new_per_iteration`.

    Raises:
        UserError: an unknown algorithm, a space with too few architectures
            for the budget, or one the algorithm refuses.
    """
    budget = settings.budget
    if settings.algorithm in ALGORITHMS and space.size() < budget:  # an unknown name: make_algorithm's error
        grows = ("--pool_size x --iterations" if settings.new_per_iteration == settings.pool_size
                 else "--pool_size + --new_per_iteration x (--iterations - 1)")
        raise UserError(f"--algorithm={settings.algorithm} cannot work on --space={space.name}: it proposes "
                        f"{grows} = {budget} distinct architectures and the space has {space.size()}; lower "
                        "--pool_size, --new_per_iteration or --iterations.")
    return make_search_algorithm(settings.algorithm, space, budget, constraints, seed,
                                 population_size=settings.pool_size, new_per_iteration=settings.new_per_iteration)


def _state_round_trip(algorithm: Any, state: dict, proposals: Sequence[Hashable],
                      scores: dict[Hashable, float]) -> None:
    try:
        algorithm.set_state(state, list(proposals), scores)
    except (ValueError, KeyError) as e:
        raise UserError(f"the iteration log does not match --algorithm={algorithm.name} ({e}); rerun with "
                        "the settings it was written with, or use a new --model_dir.") from None


# ------------------------------------------------------------------- the log
class IterationLog:
    """`nas/iterations.jsonl`: one JSON line per event, a `RecordFile` replayed on resume.

    Lines: {"kind": "pool", "iteration": 0, "pool": [...], "state": ...}
    (the initial pool), {"kind": "score", "iteration": i, "architecture",
    "oneshot_accuracy", "loss", "params", "flops", "step"} and {"kind":
    "end", "iteration": i, "new": [...], "state": ..., "best": ...}. Each
    line names its own kind (the file holds three), and the run's settings
    are in `nas/settings.json`, so the file checks neither a kind nor an
    identity: only that each line is one of these, its architectures parsed.
    """

    def __init__(self, model_dir: ModelDir, space: Any) -> None:
        from tf_oneshot.record_file import RecordFile

        self.path = model_dir.file(LOG_FILE)
        self.space = space
        self.file = RecordFile(self.path, kind=None, identity={}, what="a nas record",
                               fix="move the file aside or use a new --model_dir", check=self._parse)
        self.initial: dict | None = None
        self.ends: list[dict] = []
        self.scores: list[dict] = []

    def load(self) -> IterationLog:
        for record in self.file.records():
            if record["kind"] == "score":
                self.scores.append(record)
            elif record["kind"] == "end":
                self.ends.append(record)
            else:
                self.initial = record
        return self

    def _parse(self, record: dict, where: str) -> None:
        """Adds the architectures of a line read back (`arch`, `archs` or `new_archs`); UserError if it is not one."""
        kind = record.get("kind")
        try:
            if kind == "score":
                record["arch"] = self.space.parse(record["architecture"])
            elif kind == "end":
                record["new_archs"] = [self.space.parse(a) for a in record["new"]]
            elif kind == "pool":
                record["archs"] = [self.space.parse(a) for a in record["pool"]]
            else:
                raise KeyError("kind")
        except (KeyError, TypeError, UserError) as e:
            raise UserError(f"{where} is not {self.file.what} ({e}); {self.file.fix}.") from None

    def append(self, record: dict) -> dict:
        """Appends one line; a pool or an iteration's end is written at once, scores may wait for `flush`."""
        self.file.append(record)
        if record["kind"] != "score":
            self.file.flush()
        return record

    def flush(self) -> None:
        """Writes the score lines still buffered for a remote log."""
        self.file.flush()

    @property
    def done(self) -> int:
        """Iterations finished."""
        return len(self.ends)

    def pool(self, iteration: int) -> list[Hashable]:
        """The pool of `iteration` in the order the algorithm proposed it."""
        pool = list(self.initial["archs"])
        for end in self.ends[:iteration]:
            pool += end["new_archs"]
        return pool

    def state(self, iteration: int) -> dict:
        """The algorithm's state as it stood when the pool of `iteration` was fixed."""
        return self.ends[iteration - 1]["state"] if iteration else self.initial["state"]

    def newest(self, iteration: int) -> list[Hashable]:
        """What `iteration` added to the pool before it: the initial pool for iteration 0."""
        return list(self.ends[iteration - 1]["new_archs"]) if iteration else list(self.initial["archs"])

    def scores_of(self, iteration: int) -> dict[Hashable, dict]:
        return {r["arch"]: r for r in self.scores if r["iteration"] == iteration}

    def latest_scores(self, before: int) -> dict[Hashable, dict]:
        """Each architecture's most recent score from iterations before `before` (the dependent cache)."""
        out: dict[Hashable, dict] = {}
        for r in self.scores:
            if r["iteration"] < before:
                out[r["arch"]] = r
        return out


# ------------------------------------------------------------------ settings
def _recorded_settings(settings: NasSettings, config: TrainConfig, constraints: Any, model_dir: ModelDir) -> dict:
    """Writes `nas/settings.json` once; later runs must match it field for field."""
    import tensorflow as tf

    from tf_oneshot.io_utils import atomic_write_json, read_json

    train = {k: v for k, v in config.to_flat().items() if k not in BOOKKEEPING_FIELDS}
    record = {**dataclasses.asdict(settings), "constraints": constraints.to_json(), "train": train}
    path = model_dir.file(SETTINGS_FILE)
    if not tf.io.gfile.exists(path):
        if tf.io.gfile.exists(model_dir.file(LOG_FILE)):
            raise UserError(f"{model_dir} has a nas log but no {SETTINGS_FILE}; use a new --model_dir.")
        atomic_write_json(path, record)
        return record
    # A run recorded before the pool's growth and training set were settings had their defaults.
    old = {"train_on": "pool", **read_json(path, "nas settings")}
    old.setdefault("new_per_iteration", old.get("pool_size"))
    for key in [*record, *sorted(set(old) - set(record))]:  # the settings' order: --pool_size before what it sets
        if key in ("train", "constraints"):
            pairs = [(f"{key}.{k}" if key == "constraints" else k, old.get(key, {}).get(k), record[key].get(k))
                     for k in sorted(set(record[key]) | set(old.get(key, {})))]
        else:
            pairs = [(key, old.get(key), record.get(key))]
        for name, was, now in pairs:
            if was != now:
                raise UserError(
                    f"--model_dir={model_dir} holds a nas run with --{name}={was} (this run asks for {now}); "
                    "rerun with the recorded settings to resume, or use a new --model_dir."
                )
    return record


# ------------------------------------------------------------------ the loop
def run_nas(
    config: TrainConfig,
    settings: NasSettings,
    model_dir: str | ModelDir,
    constraints: Any = None,
    strategy: Any = None,
    log: Callable[[str], None] = print,
    archs_per_pass: int | None = None,
) -> dict[str, Any]:
    """Runs (or resumes) K iterations of train / score / tell / propose in `model_dir`.

    Args:
        config: the supernet's training config (its train_steps and sampler
            are set from `settings`).
        settings: the iteration settings.
        model_dir: checkpoints, the config, `nas/settings.json` and `nas/iterations.jsonl`.
        constraints: `tf_oneshot.search.Constraints` every proposal meets.
        strategy: a tf.distribute strategy (default: the default strategy).
        log: progress lines.
        archs_per_pass: architectures per scoring pass (default: one per
            ghost batch of the training batch).

    Returns:
        {"iterations": finished, "best": [(arch string, accuracy)] of the last
        scored iteration (top 5), "preempted": SIGTERM stopped it}.

    Raises:
        UserError: bad settings, a pool smaller than a batch of ghost
            batches, other settings than the model_dir's, or an algorithm
            that cannot work on the space.
    """
    from tf_oneshot.training.preemption import Preemption

    loop = open_loop(config, settings, model_dir, constraints, strategy, log, archs_per_pass)
    with Preemption() as preemption:
        loop.stop = preemption
        return loop.run()


def open_loop(
    config: TrainConfig,
    settings: NasSettings,
    model_dir: str | ModelDir,
    constraints: Any = None,
    strategy: Any = None,
    log: Callable[[str], None] = print,
    archs_per_pass: int | None = None,
) -> Loop:
    """The loop of `run_nas`, its model_dir prepared and its log replayed, run by the caller.

    `run_nas` runs all of it; `tuner.IteratedOneShotOracle` trains and
    tells through it (`train_iteration`, `record_score`, `tell_and_propose`)
    and has KerasTuner's workers score the pools. Arguments and errors as `run_nas`.
    """
    import tensorflow as tf

    from tf_oneshot.search import Constraints
    from tf_oneshot.search_spaces.space_config import build_space
    from tf_oneshot.training import data
    from tf_oneshot.training.model_dir import ModelDir

    strategy = strategy or tf.distribute.get_strategy()
    if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        raise UserError("`tf-oneshot nas` scores on one host: use --strategy=mirrored or --tpu "
                        "(multi_worker_mirrored is for `tf-oneshot train`).")
    constraints = constraints or Constraints()
    config = settings.train_config(config)
    info = data.dataset_info(config.data.dataset, config.data.data_dir)
    space = build_space(config.space, info.image_shape, info.num_classes, info.stem_stride)
    algorithm = make_algorithm(settings, space, constraints, config.seed)  # fails fast, before any write
    model_dir = ModelDir.create(str(model_dir), config, space)
    _recorded_settings(settings, config, constraints, model_dir)
    history = IterationLog(model_dir, space).load()
    if history.initial is None:
        pool = algorithm.ask(settings.pool_size)
        history.initial = history.append({"kind": "pool", "iteration": 0, "pool": [str(a) for a in pool],
                                          "state": algorithm.get_state()})
        history.initial["archs"] = pool
    return Loop(config, settings, space, model_dir, strategy, log, history, algorithm,
                archs_per_pass or config.data.num_ghosts, constraints)


class Loop:
    """The iterations of `run_nas`, each resumable from the log and the checkpoints.

    `run` does all of them; `tuner_nas.IteratedOneShotOracle` calls the steps
    (`train_iteration`, `record_score`, `tell_and_propose`, `export_final`)
    and leaves the scoring to KerasTuner's workers.
    """

    def __init__(self, config, settings, space, model_dir, strategy, log, history, algorithm, archs_per_pass,
                 constraints):
        self.config, self.settings, self.space = config, settings, space
        self.model_dir, self.strategy, self.log = model_dir, strategy, log
        self.history, self.algorithm = history, algorithm
        self.archs_per_pass = archs_per_pass
        self.constraints = constraints
        self.scorer = None
        self.stop: Callable[[], bool] = lambda: False

    def run(self) -> dict[str, Any]:
        settings, history = self.settings, self.history
        if history.done:
            self.log(f"resuming after {history.done} finished iteration(s) of {settings.iterations}")
        while history.done < settings.iterations:
            i = history.done
            if not self.train_iteration(i) or self.stop():
                return self._summary(preempted=True)
            scores = self._score(i)
            if scores is None:
                return self._summary(preempted=True)
            self.tell_and_propose(i, scores)
        self.export_final()
        return self._summary(preempted=False)

    def export_final(self) -> None:
        """Writes FINAL_FILE (derived from the log, so rewritten whole and atomically).

        Lines carry the identity fields of `search.results`; `scored_at_step`
        says when each score was taken (earlier than the last checkpoint only
        for cached scores of the dependent mode).
        """
        import json

        from tf_oneshot.io_utils import atomic_write_text

        last = self.settings.iterations - 1
        scores = self.history.latest_scores(last + 1)
        identity = {
            "space": self.space.to_config(), "bn_mode": self.settings.bn_mode, "algorithm": self.settings.algorithm,
            "seed": self.config.seed, "constraints": self.constraints.to_json(),
            "checkpoint_step": self.model_dir.latest_step(),
            "options": {"nas": dataclasses.asdict(self.settings)},
        }
        generation = {a: 0 for a in self.history.initial["archs"]}
        for i, end in enumerate(self.history.ends):
            generation.update((a, i + 1) for a in end["new_archs"])
        lines = []
        for arch in self.history.pool(last):
            r = scores[arch]
            lines.append(json.dumps({
                "architecture": r["architecture"], "oneshot_accuracy": r["oneshot_accuracy"], "loss": r["loss"],
                "params": r["params"], "flops": r["flops"], "generation": generation[arch],
                "scored_at_step": r["step"], **identity}, sort_keys=True) + "\n")
        atomic_write_text(self.model_dir.file(FINAL_FILE), "".join(lines))

    def _summary(self, preempted: bool) -> dict[str, Any]:
        last = self.history.done - 1
        scores = self.history.latest_scores(self.history.done) if last >= 0 else {}
        pool = self.history.pool(last) if last >= 0 else []
        ranked = sorted(((str(a), scores[a]["oneshot_accuracy"]) for a in pool if a in scores),
                        key=lambda t: (-t[1], t[0]))
        return {"iterations": self.history.done, "best": ranked[:5], "preempted": preempted}

    # ------------------------------------------------------------ training
    def train_iteration(self, i: int) -> bool:
        """Trains iteration i's T steps on its pool; False if SIGTERM stopped it."""
        from tf_oneshot.training import trainer

        T = self.settings.steps_per_iteration
        start, end = i * T, (i + 1) * T
        step = self.model_dir.latest_step() or 0
        if step > end or step < start:
            raise UserError(
                f"{self.model_dir} has a checkpoint at step {step}, outside iteration {i + 1}'s steps "
                f"[{start}, {end}] that its nas log asks for; use a new --model_dir."
            )
        if step == end:
            return True
        whole = self.settings.train_on == "pool"
        pool = self.history.pool(i) if whole else self.history.newest(i)
        sampler = trainer.make_run_sampler(self.config, self.space, pool=pool)
        self.log(f"iteration {i + 1}/{self.settings.iterations}: training steps {step}-{end} on "
                 f"{'a pool' if whole else 'the newest candidates'} of {len(pool)} ({self.settings.sampler} "
                 f"sampling, {self.settings.iteration_mode} iterations)")
        segment = trainer.Segment(start, end, independent=self.settings.independent)
        result = trainer.train(self.config, self.model_dir, self.strategy, self.log, sampler=sampler,
                               segment=segment)
        return not result["preempted"]

    # ------------------------------------------------------------- scoring
    def _load_scorer(self) -> Any:
        """The scorer, its model restored to the latest checkpoint (built once, compiled once)."""
        import tensorflow as tf

        from tf_oneshot.search.scorer import OneShotScorer
        from tf_oneshot.training.model_dir import restore, step_of

        latest = self.model_dir.latest_checkpoint()
        if self.scorer is None:
            self.scorer = OneShotScorer.from_model_dir(
                self.model_dir, bn_mode=self.settings.bn_mode, archs_per_pass=self.archs_per_pass,
                validation_examples=self.settings.validation_examples, data_dir=self.config.data.data_dir,
                seed=self.config.seed, strategy=self.strategy,
            )
        else:
            restore(tf.train.Checkpoint(model=self.scorer.model), latest, partial=True)
        self.scorer.step = step_of(latest)
        return self.scorer

    def _score(self, i: int) -> dict[Hashable, float] | None:
        """Iteration i's score of every pool member; None if SIGTERM stopped it.

        Independent: every member is scored with this iteration's weights
        (NAO-V2 §4.3, "re-evaluated instead of reusing their old values").
        Dependent: members scored in an earlier iteration keep that score.
        """
        pool = self.history.pool(i)
        done = self.history.scores_of(i)
        cached = {} if self.settings.independent else self.history.latest_scores(i)
        todo = [a for a in pool if a not in done and a not in cached]
        scorer = self._load_scorer()
        if scorer.step != (i + 1) * self.settings.steps_per_iteration:
            raise UserError(f"{self.model_dir}: the latest checkpoint is at step {scorer.step}, not at the end "
                            f"of iteration {i + 1}; use a new --model_dir.")
        stale = [r for r in done.values() if r["step"] != scorer.step]
        if stale:
            raise UserError(f"{self.history.path}: iteration {i + 1} has scores from step {stale[0]['step']} "
                            f"and the checkpoint is at {scorer.step}; use a new --model_dir.")
        if todo:
            self.log(f"iteration {i + 1}: scoring {len(todo)} of {len(pool)} pool architectures at step "
                     f"{scorer.step}" + ("" if self.settings.independent else f" ({len(cached)} cached)"))
        size = scorer.archs_per_call
        try:
            for begin in range(0, len(todo), size):
                if self.stop():
                    return None
                part = todo[begin:begin + size]
                for arch, score in zip(part, scorer.score(part)):
                    done[arch] = self.record_score(i, arch, score, scorer.step)
        finally:
            self.history.flush()  # a remote log writes its score lines in batches
        merged = {**cached, **done}
        return {a: float(merged[a]["oneshot_accuracy"]) for a in pool}

    def record_score(self, i: int, arch: Hashable, score: dict[str, float], step: int, **extra: Any) -> dict:
        """Appends iteration i's score of `arch` (`oneshot_accuracy`, `loss`) taken at checkpoint `step`.

        `extra` fields go into the line too (the KerasTuner oracle's trial_id).
        """
        cost = self.space.count(arch)
        record = self.history.append({
            "kind": "score", "iteration": i, "architecture": str(arch), "step": int(step),
            "oneshot_accuracy": float(score["oneshot_accuracy"]), "loss": float(score["loss"]),
            "params": int(cost.params), "flops": int(cost.flops), **extra,
        })
        record["arch"] = arch
        self.history.scores.append(record)
        return record

    # ------------------------------------------------------ tell / propose
    def tell_and_propose(self, i: int, scores: dict[Hashable, float]) -> None:
        """Tells the algorithm iteration i's scores and records its new candidates.

        The algorithm is rebuilt from the state it had when this pool was
        fixed and the scores just told (`set_state`), so a resumed run makes
        the same proposals, and evolution's Topk holds this iteration's scores.
        """
        pool = self.history.pool(i)
        _state_round_trip(self.algorithm, self.history.state(i), pool, scores)
        for arch in pool:
            self.algorithm.tell(arch, scores[arch])
        # Proposals never repeat (every algorithm excludes what it proposed),
        # so the pool stays in the algorithm's proposal order, as set_state needs.
        new = self.algorithm.ask(self.settings.new_per_iteration) if i + 1 < self.settings.iterations else []
        best = min(pool, key=lambda a: (-scores[a], str(a)))
        self.log(f"iteration {i + 1}/{self.settings.iterations}: best {scores[best]:.4f} ({best}); "
                 f"{len(new)} new candidate(s)")
        record = {"kind": "end", "iteration": i, "new": [str(a) for a in new], "state": self.algorithm.get_state(),
                  "best": [str(best), scores[best]]}
        self.history.append(record)
        record["new_archs"] = new
        self.history.ends.append(record)
