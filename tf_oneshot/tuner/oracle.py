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

The tuner that scores the trials is `tf_oneshot.tuner.tuner.OneShotTuner`;
`tf_oneshot.tuner.iterated.IteratedOneShotOracle` runs NAO-V2's iterated
loop (§3.2, §4.3) instead, its trials naming the checkpoint step they are
scored at.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any

import keras_tuner

from tf_oneshot.errors import UserError
from tf_oneshot.search import ALGORITHMS, Constraints, Evolution, RandomSearch
from tf_oneshot.search.evolution import GENERATIONS
from tf_oneshot.search.nao import NAO_ROUNDS
from tf_oneshot.search_spaces import SearchSpace
from tf_oneshot.search_spaces.constraints import cost_model

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


def recorded_space(model_dir: str) -> SearchSpace:
    """The search space a trained model_dir records (its config.json only: no weights)."""
    from tf_oneshot.training.model_dir import ModelDir  # imports TensorFlow

    return ModelDir.open(model_dir).space


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
            space = recorded_space(model_dir)
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
