"""KerasTuner integration: each trial is an architecture scored with shared weights.

`OneShotOracle` runs the same `RandomSearch` / `Evolution` / `NAO` code as
`tf-oneshot search` behind KerasTuner's `Oracle` contract: the architecture is exposed as
hyperparameters (per choice block, one `Choice` of input subset and one of op
combination), `populate_space` proposes only architectures that meet the
constraints (SPOS §3.4: never scored and discarded, and KerasTuner aborts
after consecutive failed trials anyway), and the algorithm's state travels in
`get_state`/`set_state`. That state is O(1) in the number of trials (the
generator, the current population): the proposals and scores are rebuilt from
the trials on reload, as KerasTuner's own oracles rebuild theirs. Without
`max_trials`, evolution gets Algorithm 1's budget, P * T = population_size * 20,
and NAO its initial pool and 3 generations (NAO-V2's code), 4 * population_size.

`OneShotTuner.run_trial` scores the trial's architecture with the trained
one-shot model (Bender et al. 2018, §3.3): no training, a fraction of a second
per trial. Each tuner appends one line per trial to
`<project_dir>/results_<tuner_id>.jsonl` with the fields `tf-oneshot search`
writes (identity fields included), so `tf-oneshot analyze --search_results`
reads it like a search's results. In KerasTuner's distributed mode
(KERASTUNER_TUNER_ID, KERASTUNER_ORACLE_IP, KERASTUNER_ORACLE_PORT) all oracle
logic stays on the chief, whose client forwards only create/update/end/get
trial and space calls, and each worker loads the one-shot checkpoint itself,
on its first trial.

`tuner_nas.IteratedOneShotOracle` runs NAO-V2's iterated loop (§3.2, §4.3)
instead: its trials name the checkpoint step they are scored at (the
hyperparameter `checkpoint_step`), and `run_trial` restores exactly that
step first.
"""

from __future__ import annotations

import os
import time
from collections.abc import Hashable
from typing import Any

import keras_tuner

from tf_oneshot.errors import UserError
from tf_oneshot.nao import NAO_ROUNDS
from tf_oneshot.search import ALGORITHMS, Constraints, Evolution, RandomSearch
from tf_oneshot.search.constraints import cost_model
from tf_oneshot.search.evolution import GENERATIONS
from tf_oneshot.search_spaces import SearchSpace

OBJECTIVE = "oneshot_accuracy"
# Trials of a random search when `max_trials` is not given.
RANDOM_TRIALS = 100
# The trial hyperparameter (and metric) naming the checkpoint a trial is scored at (iterated oracle).
CHECKPOINT_STEP = "checkpoint_step"
_Trial = keras_tuner.engine.trial.Trial
_Status = keras_tuner.engine.trial.TrialStatus


# ------------------------------------------------------ architecture <-> hps
def declare_hyperparameters(space: SearchSpace, hp: keras_tuner.HyperParameters) -> None:
    """Registers one `Choice` per decision of `space` in `hp` (the space's string values)."""
    for d in space.decisions():
        hp.Choice(d.name, [d.format(v) for v in d.values()], ordered=False)


def architecture_to_values(space: SearchSpace, arch: Hashable) -> dict[str, str]:
    """The hyperparameter values of `arch` (inverse of `values_to_architecture`)."""
    return space.hyperparameter_values(arch)


def values_to_architecture(space: SearchSpace, values: dict[str, Any]) -> Hashable:
    """Parses a trial's hyperparameter values; UserError naming a bad value."""
    return space.from_hyperparameter_values(values)


def _space_of(model_dir: str) -> SearchSpace:
    from tf_oneshot.model_dir import require  # imports TensorFlow

    return require(model_dir)[1]


# -------------------------------------------------------------------- oracle
class OneShotOracle(keras_tuner.Oracle):
    """Random, evolutionary or NAO architecture search as a KerasTuner `Oracle`.

    Args:
        model_dir: a trained one-shot model_dir (only its config.json is read
            here: the oracle never loads weights).
        algorithm: "random" (Bender et al. 2018, §4.1), "evolution" (SPOS,
            Algorithm 1) or "nao" (Luo et al. 2018, §3).
        max_trials: architectures to score in all; by default Algorithm 1's
            population_size * 20 (T = 20 generations, SPOS §3.4) for
            evolution, population_size * (1 + 3) for NAO (its initial pool
            and 3 generations, as NAO-V2's code), and 100 for random search.
        seed: seeds the algorithm (KerasTuner's own seed if None).
        max_params, max_flops, min_params, min_flops: constraints on the
            stand-alone model, met by every proposal.
        min_bitops, max_bitops, min_latency_ms, max_latency_ms, latency_table:
            BitOps and table-latency constraints (SPOS §3.4; see
            `tf_oneshot.search.Constraints`).
        space: a search space to use instead of reading `model_dir` (tests,
            fake scores).
        population_size, num_parents, mutation_prob: evolution settings;
            NAO takes population_size as its initial pool and generation
            size, num_parents as its top-k (as `tf-oneshot search`).
        **oracle_kwargs: passed to `keras_tuner.Oracle`.

    Raises:
        UserError: a missing or foreign model_dir, an unknown algorithm, or a
            constraint no architecture can meet.
    """

    # True for `tuner_nas.IteratedOneShotOracle`, whose trials name their checkpoint step.
    iterated = False

    def __init__(
        self,
        model_dir: str | None = None,
        algorithm: str = "random",
        max_trials: int | None = None,
        seed: int | None = None,
        max_params: int | None = None,
        max_flops: int | None = None,
        *,
        min_params: int | None = None,
        min_flops: int | None = None,
        min_bitops: int | None = None,
        max_bitops: int | None = None,
        min_latency_ms: float | None = None,
        max_latency_ms: float | None = None,
        latency_table: str | None = None,
        space: SearchSpace | None = None,
        population_size: int = 50,
        num_parents: int = 10,
        mutation_prob: float = 0.1,
        **oracle_kwargs: Any,
    ):
        if algorithm not in ALGORITHMS:
            raise UserError(f"unknown algorithm {algorithm!r}; choose one of {', '.join(ALGORITHMS)}.")
        if max_trials is None:
            generations = {"evolution": GENERATIONS, "nao": 1 + NAO_ROUNDS}
            max_trials = population_size * generations[algorithm] if algorithm in generations else RANDOM_TRIALS
        if not isinstance(max_trials, int) or max_trials < 1:
            raise UserError(f"max_trials={max_trials!r} is invalid; expected a positive integer.")
        if space is None:
            if model_dir is None:
                raise UserError("OneShotOracle needs a model_dir (or a search space).")
            space = _space_of(model_dir)
        hps = keras_tuner.HyperParameters()
        declare_hyperparameters(space, hps)
        oracle_kwargs.setdefault("objective", keras_tuner.Objective(OBJECTIVE, direction="max"))
        super().__init__(
            max_trials=max_trials, hyperparameters=hps, allow_new_entries=False,
            tune_new_entries=False, seed=seed, **oracle_kwargs,
        )
        self.model_dir = model_dir
        self.space = space
        self.algorithm_name = algorithm
        self.constraints = Constraints(
            min_params=min_params, max_params=max_params, min_flops=min_flops, max_flops=max_flops,
            min_bitops=min_bitops, max_bitops=max_bitops, min_latency_ms=min_latency_ms,
            max_latency_ms=max_latency_ms, latency_table=latency_table,
        )
        # `Oracle` turns seed=None (and 0) into a random seed; keep an explicit 0.
        algo_seed = self.seed if seed is None else seed
        # A distributed worker's own oracle only knows the seed if it was given.
        self.seed_given = seed is not None
        # The settings reload checks (and a results line's `options`).
        self.algorithm_options: dict[str, Any] = {}
        if algorithm == "evolution":
            self.algorithm_options = {"population_size": population_size, "num_parents": num_parents,
                                      "mutation_prob": mutation_prob}
            self.algorithm: RandomSearch | Evolution = Evolution(
                space, max_trials, self.constraints, seed=algo_seed, **self.algorithm_options
            )
        elif algorithm == "nao":
            self.algorithm_options = {"initial_size": population_size, "new_size": population_size,
                                      "top_k": num_parents}
            self.algorithm = ALGORITHMS["nao"](space, max_trials, self.constraints, seed=algo_seed,
                                               **self.algorithm_options)
        else:
            self.algorithm = RandomSearch(space, max_trials, self.constraints, seed=algo_seed)
        # Trials told to the algorithm; rebuilt from the trials on reload, not saved.
        self._told: set[str] = set()

    # ----------------------------------------------------------- KerasTuner
    def populate_space(self, trial_id: str) -> dict[str, Any]:
        """Proposes the next architecture; constraints hold by construction."""
        archs = self.algorithm.ask(1)
        if not archs:
            if self.algorithm.exhausted:
                return {"status": _Status.STOPPED, "values": None}
            # Evolution: the generation's last members are still being scored
            # by other workers; the tuner asks again.
            return {"status": _Status.IDLE, "values": None}
        arch = archs[0]
        if not self.constraints.satisfied(cost_model(self.space, self.constraints.latency_table).count(arch)):
            raise AssertionError(f"proposal {arch} breaks {self.constraints.describe()}")
        return {"status": _Status.RUNNING,
                "values": architecture_to_values(self.space, arch)}

    @keras_tuner.synchronized
    def create_trial(self, tuner_id: str):
        # Budget spent but trials still running elsewhere: answer IDLE rather
        # than STOPPED, so a retried trial still finds a worker and every
        # worker stops together (the stock chief, once a worker stops, polls
        # only every 20 s for the others to finish).
        others_running = any(t != tuner_id for t in self.ongoing_trials)
        if (self.max_trials and len(self.trials) >= self.max_trials and not self._retry_queue
                and tuner_id not in self.ongoing_trials and others_running):
            return _Trial(self.get_space(), status=_Status.IDLE)
        return super().create_trial(tuner_id)

    @keras_tuner.synchronized
    def end_trial(self, trial):
        # `super().end_trial` saves; a tell changes nothing `get_state` holds
        # (scores are rebuilt from the trials), so one save per trial suffices.
        super().end_trial(trial)
        self._tell(self.trials[trial.trial_id])

    def _tell(self, trial) -> bool:
        """Passes a finished trial's score to the algorithm once; True if new."""
        if trial.trial_id in self._told or not _finished(trial):
            return False
        self.algorithm.tell(values_to_architecture(self.space, trial.hyperparameters.values), _score(trial))
        self._told.add(trial.trial_id)
        return True

    def get_state(self) -> dict[str, Any]:
        """KerasTuner's state plus the algorithm's, which is O(1) in the number of trials."""
        state = super().get_state()
        state["oneshot"] = {
            "algorithm": self.algorithm_name,
            "space": self.space.to_config(),
            "constraints": self.constraints.to_json(),
            "options": self.algorithm_options,
            "seed": self.algorithm.seed,
            "algorithm_state": self.algorithm.get_state(),
        }
        return state

    def set_state(self, state: dict[str, Any]) -> None:
        super().set_state(state)
        mine = state["oneshot"]
        saved = (mine["algorithm"], mine["constraints"], mine["options"])
        if saved != (self.algorithm_name, self.constraints.to_json(), self.algorithm_options):
            raise UserError(
                f"the tuner project was searched with algorithm={saved[0]}, constraints {saved[1]} and "
                f"options {saved[2]}; use the same settings, or overwrite=True / a new project_name."
            )
        # The proposals are the trials in the order they started, and the
        # finished ones are told: KerasTuner loads the trials before
        # set_state, and saved `start_order` with this very state.
        trials = [self.trials[t] for t in dict.fromkeys(self.start_order)]
        proposals = [values_to_architecture(self.space, t.hyperparameters.values) for t in trials]
        scores = {a: _score(t) for a, t in zip(proposals, trials) if _finished(t)}
        try:
            self.algorithm.set_state(mine["algorithm_state"], proposals, scores)
        except ValueError as e:
            raise UserError(f"the tuner project's trials do not match its oracle.json: {e}") from None
        self.algorithm.seed = int(mine["seed"])
        self._told = {t.trial_id for t in trials if _finished(t)}

    def reload(self) -> None:
        """KerasTuner's reload, without running finished trials again.

        `Oracle.end_trial` saves before it drops the trial from
        `ongoing_trials`, so oracle.json names the last finished trial as
        still running and `reload` queues it for a retry. A trial whose own
        file says it finished is done: it leaves the queue.
        """
        super().reload()
        for trial_id in [t for t in self._retry_queue if _finished(self.trials[t])]:
            self._retry_queue.remove(trial_id)
            if trial_id not in self.end_order:  # killed between its file and oracle.json
                self.end_order.append(trial_id)

    def architecture(self, trial) -> Hashable:
        """The architecture of a trial."""
        return values_to_architecture(self.space, trial.hyperparameters.values)

    def generation_of(self, arch: Hashable) -> int | None:
        """The generation of the algorithm that proposed `arch` (results lines' `generation`)."""
        return self.algorithm.generation_of(arch)


def _finished(trial) -> bool:
    return trial.status in (_Status.COMPLETED, _Status.FAILED)


def _score(trial) -> float | None:
    """The one-shot accuracy of a finished trial; None if it failed."""
    return float(trial.score) if trial.status == _Status.COMPLETED else None


# --------------------------------------------------------------------- tuner
class OneShotTuner(keras_tuner.Tuner):
    """Scores each trial's architecture with a trained one-shot model.

    Args:
        oracle: a `OneShotOracle` (or, on a distributed worker, the same
            oracle the chief runs; KerasTuner swaps in its client).
        model_dir: the trained one-shot model_dir; loaded on the first trial.
        bn_mode: "batch" (Bender et al. 2018, §3.2) or "recalibrate" (SPOS);
            None: the space's `default_bn_mode`.
        kl: also report the symmetrized KL divergence to the all-on network
            (Bender et al. 2018, §5) as metric "kl".
        scorer_kwargs: passed to `tf_oneshot.search.scorer.OneShotScorer`.
        finetune_steps: re-rank the best `finetune_top` trials after
            fine-tuning each alone from the shared weights for this many
            mini-batches ("Deeper insights" §3.3; `rerank`,
            `get_best_architectures`); None: the one-shot ranking.
        finetune_top: how many of the best trials to fine-tune.
        **tuner_kwargs: passed to `keras_tuner.Tuner` (directory,
            project_name, overwrite, ...).
    """

    def __init__(
        self,
        oracle: OneShotOracle,
        model_dir: str,
        bn_mode: str | None = None,
        kl: bool = False,
        scorer_kwargs: dict[str, Any] | None = None,
        finetune_steps: int | None = None,
        finetune_top: int = 10,
        **tuner_kwargs: Any,
    ):
        from tf_oneshot import finetune
        from tf_oneshot.search.scorer import BN_MODES

        if finetune_steps is not None:
            finetune.check_steps(finetune_steps)
            finetune.check_top(finetune_top)
        self.finetune_steps, self.finetune_top = finetune_steps, finetune_top

        if bn_mode is not None and bn_mode not in BN_MODES:
            raise UserError(f"unknown bn_mode {bn_mode!r}; choose one of {', '.join(BN_MODES)}.")
        if not isinstance(oracle, OneShotOracle):
            raise UserError(f"OneShotTuner needs a OneShotOracle; got {type(oracle).__name__}.")
        # Kept: on a distributed worker `self.oracle` becomes a client of the
        # chief's, and this local copy is where the search's settings are read.
        self.oneshot_oracle = oracle
        self.model_dir = model_dir
        self.kl = kl
        # One architecture per trial: one per pass (no ghost batches to share).
        self._scorer_kwargs = {"archs_per_pass": 1, **(scorer_kwargs or {})}
        if oracle.iterated:
            # The chief may not have written the model_dir yet; the oracle knows the space.
            self.space = oracle.space
            wanted = oracle.settings.bn_mode
            if bn_mode not in (None, wanted):
                raise UserError(f"bn_mode={bn_mode!r} differs from the oracle's bn_mode={wanted!r}, which its "
                                "nas log records; set it on the oracle only.")
            bn_mode = wanted
            self._scorer_kwargs.setdefault("validation_examples", oracle.settings.validation_examples)
        else:
            self.space = _space_of(model_dir)
        self.bn_mode = bn_mode or self.space.default_bn_mode
        self._scorer = None
        self._waiting = False
        super().__init__(oracle=oracle, hypermodel=None, **tuner_kwargs)
        self.on_worker = self.oracle is not oracle

    @property
    def identity(self) -> dict[str, Any]:
        """The identity fields of `tf-oneshot search` lines (`search.results.IDENTITY_FIELDS`).

        Read from the local oracle, which a distributed worker builds with the
        chief's arguments: the algorithm, constraints and options are the
        chief's, and so is the seed when one was given (else the chief drew
        it, and a worker writes None).
        """
        from tf_oneshot.search.scorer import recalibration_images_for

        oracle = self.oneshot_oracle
        options = {**oracle.algorithm_options, "kl": self.kl,
                   "validation_examples": self._scorer_kwargs.get("validation_examples")}
        if self.bn_mode == "recalibrate":
            options["recalibration_images"] = recalibration_images_for(
                self.model_dir, self._scorer_kwargs.get("recalibration_images"), self._scorer_kwargs.get("data_dir"))
        return {
            "space": self.space.to_config(), "checkpoint_step": self.scorer.step, "bn_mode": self.bn_mode,
            "algorithm": oracle.algorithm_name,
            "seed": oracle.algorithm.seed if oracle.seed_given or not self.on_worker else None,
            "constraints": oracle.constraints.to_json(), "options": options,
        }

    @property
    def scorer(self):
        """The one-shot scorer, loaded from `model_dir` on first use."""
        if self._scorer is None:
            from tf_oneshot.search.scorer import OneShotScorer

            self._scorer = OneShotScorer.from_model_dir(
                self.model_dir, bn_mode=self.bn_mode, kl=self.kl, **self._scorer_kwargs
            )
        return self._scorer

    def scorer_at(self, step: int | None):
        """The scorer with the weights of checkpoint `step` (None: as loaded).

        An iterated oracle's trials name their step; restoring exactly it
        keeps all scores of one iteration on the same weights (NAO-V2 §4.3),
        whatever the chief has trained since.
        """
        scorer = self.scorer
        if step is None or scorer.step == step:
            return scorer
        import tensorflow as tf

        from tf_oneshot import model_dir as model_dirs

        path = os.path.join(self.model_dir, model_dirs.CHECKPOINTS, f"ckpt-{step}")
        if not tf.io.gfile.exists(path + ".index"):
            raise UserError(f"{self.model_dir} has no checkpoint at step {step}, which the trial is to be scored "
                            "at; raise the training config's keep_checkpoints so the chief keeps it.")
        model_dirs.restore(tf.train.Checkpoint(model=scorer.model), path, partial=True)
        scorer.step = step
        return scorer

    def search(self, *args: Any, **kwargs: Any) -> None:
        """KerasTuner's search; raises what stopped an iterated oracle's loop (on its chief)."""
        super().search(*args, **kwargs)
        failure = None if self.on_worker else getattr(self.oneshot_oracle, "failure", None)
        if failure is not None:
            raise failure

    def pre_create_trial(self) -> None:
        # Two requests with no trial in between: the oracle answered IDLE (an
        # evolution generation still being scored elsewhere). Wait a moment
        # instead of spinning on the chief.
        if self._waiting:
            time.sleep(0.2)
        self._waiting = True

    def on_trial_begin(self, trial) -> None:
        self._waiting = False
        super().on_trial_begin(trial)

    def run_trial(self, trial, *args, **kwargs) -> dict[str, float]:
        """Scores the trial's architecture with the shared weights; no training."""
        arch = values_to_architecture(self.space, trial.hyperparameters.values)
        step = trial.hyperparameters.values.get(CHECKPOINT_STEP)
        scorer = self.scorer_at(step)
        tic = time.perf_counter()
        score = scorer.score([arch])[0]
        seconds = round(time.perf_counter() - tic, 6)
        cost = self.space.count(arch)
        from tf_oneshot.io_utils import append_jsonl

        # The line `tf-oneshot search` writes (search/driver.py), plus the trial.
        # A distributed worker's algorithm proposes nothing (the chief's
        # does), so it does not know the generation: None there.
        generation = None if self.on_worker else self.oneshot_oracle.generation_of(arch)
        record = {
            "architecture": str(arch), "oneshot_accuracy": float(score["oneshot_accuracy"]),
            "loss": float(score["loss"]), "params": int(cost.params), "flops": int(cost.flops),
            "seconds": seconds, "generation": generation,
        }
        for key, value in score.items():
            record.setdefault(key, float(value))
        record.update(trial_id=trial.trial_id, tuner_id=self.tuner_id, **self.identity)
        metrics = {k: float(v) for k, v in score.items()}
        if step is not None:  # the iterated oracle checks the step each score was taken at
            record["iteration"] = self.oneshot_oracle.iteration_of(step)
            metrics[CHECKPOINT_STEP] = step
        # One file per tuner, so that workers never append to the same file.
        append_jsonl(os.path.join(self.project_dir, f"results_{self.tuner_id}.jsonl"), record)
        return metrics

    def save_model(self, trial_id, model, step=0) -> None:
        """Nothing to save: the weights are the one-shot model's."""

    def load_model(self, trial):
        """The stand-alone Keras model of the trial's architecture (untrained)."""
        return self.space.build_standalone(values_to_architecture(self.space, trial.hyperparameters.values))

    def rerank(self) -> list[dict[str, Any]]:
        """The best `finetune_top` trials fine-tuned for `finetune_steps` steps, best fine-tuned first.

        Each record holds the one-shot and the fine-tuned accuracy; they go to
        `<project_dir>/finetune_<tuner_id>.jsonl`, so a second call (or a
        restarted tuner) fine-tunes only the trials not found there.
        """
        from tf_oneshot import finetune

        if self.finetune_steps is None:
            raise UserError("rerank() needs OneShotTuner(finetune_steps=n): the mini-batches per candidate.")
        candidates = [{"architecture": str(values_to_architecture(self.space, t.hyperparameters.values)),
                       "oneshot_accuracy": float(t.score)} for t in self.oracle.get_best_trials(self.finetune_top)]
        tuner = finetune.FineTuner(self.model_dir, self.finetune_steps, seed=self.oneshot_oracle.algorithm.seed)
        path = os.path.join(self.project_dir, f"finetune_{self.tuner_id}.jsonl")
        records, _ = finetune.rerank(candidates, tuner, path, self.finetune_top, log=lambda s: None)
        return records

    def get_best_architectures(self, num_trials: int = 1) -> list[Hashable]:
        """The architectures of the best trials, best first (after fine-tuning, with `finetune_steps`)."""
        if self.finetune_steps is not None:
            return [self.space.parse(r["architecture"]) for r in self.rerank()[:num_trials]]
        return [
            values_to_architecture(self.space, t.hyperparameters.values)
            for t in self.oracle.get_best_trials(num_trials)
        ]
