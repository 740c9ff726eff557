"""KerasTuner integration: each trial is an architecture scored with shared weights.

`OneShotOracle` runs the same algorithms as `tf-oneshot search`, built the
same way (`tf_oneshot.search.make_algorithm`: random, evolution or NAO),
behind KerasTuner's `Oracle` contract: the architecture is exposed as
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
from tf_oneshot.search import Constraints, SearchAlgorithm, make_algorithm
from tf_oneshot.search.evolution import GENERATIONS
from tf_oneshot.search.nao import NAO_ROUNDS
from tf_oneshot.search_spaces import SearchSpace
from tf_oneshot.search_spaces.constraints import cost_model

OBJECTIVE = "oneshot_accuracy"
# Trials of a random search when `max_trials` is not given.
RANDOM_TRIALS = 100
# The trial hyperparameter (and metric) naming the checkpoint a trial is scored at (iterated oracle).
CHECKPOINT_STEP = "checkpoint_step"
# A trial's status: the strings `Oracle.populate_space` documents (KerasTuner's
# public names stop short of the class that lists them).
RUNNING, IDLE, STOPPED, COMPLETED, FAILED = "RUNNING", "IDLE", "STOPPED", "COMPLETED", "FAILED"


# ------------------------------------------------------ architecture <-> hps
def declare_hyperparameters(space: SearchSpace, hp: keras_tuner.HyperParameters) -> None:
    """Registers one `Choice` per decision of `space` in `hp` (the space's string values)."""
    for d in space.decisions():
        hp.Choice(d.name, [d.format(v) for v in d.values()], ordered=False)


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
        self.algorithm: SearchAlgorithm = make_algorithm(
            algorithm, space, max_trials, self.constraints, seed=algo_seed, population_size=population_size,
            num_parents=num_parents, mutation_prob=mutation_prob,
        )
        # The settings reload checks (and a results line's `options`).
        self.algorithm_options: dict[str, Any] = self.algorithm.options
        # Trials told to the algorithm; rebuilt from the trials on reload, not saved.
        self._told: set[str] = set()

    # ----------------------------------------------------------- KerasTuner
    def populate_space(self, trial_id: str) -> dict[str, Any]:
        """Proposes the next architecture; constraints hold by construction."""
        archs = self.algorithm.ask(1)
        if not archs:
            if self.algorithm.exhausted:
                return {"status": STOPPED, "values": None}
            # Evolution: the generation's last members are still being scored
            # by other workers; the tuner asks again.
            return {"status": IDLE, "values": None}
        arch = archs[0]
        if not self.constraints.satisfied(cost_model(self.space, self.constraints.latency_table).count(arch)):
            raise AssertionError(f"proposal {arch} breaks {self.constraints.describe()}")
        return {"status": RUNNING, "values": self.space.hyperparameter_values(arch)}

    @keras_tuner.synchronized
    def create_trial(self, tuner_id: str):
        # Budget spent but trials still running elsewhere: answer IDLE rather
        # than STOPPED, so a retried trial still finds a worker and every
        # worker stops together (the stock chief, once a worker stops, polls
        # only every 20 s for the others to finish). KerasTuner answers a
        # retry or the asking tuner's own trial first, so a STOPPED here means
        # the budget is spent.
        others_running = any(t != tuner_id for t in self.ongoing_trials)
        trial = super().create_trial(tuner_id)
        if trial.status == STOPPED and self.max_trials and others_running:
            self.tuner_ids.add(tuner_id)  # KerasTuner let the tuner go with its STOPPED
            trial.status = IDLE
        return trial

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
        self.algorithm.tell(self.architecture(trial), _score(trial))
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
            "algorithm_state": self.algorithm.get_state(),
        }
        return state

    def set_state(self, state: dict[str, Any]) -> None:
        """KerasTuner's state, less the finished trials it names as running; then the search's (`restore_search`).

        `Oracle.end_trial` saves before it drops the trial from
        `ongoing_trials`, so oracle.json names the last finished trial as
        still running and `reload` would queue it for a retry. A trial whose
        own file says it finished is done (KerasTuner loads the trial files
        before `set_state`): it is dropped from the running ones, and ended
        if the kill came between its file and oracle.json.
        """
        running = state["ongoing_trials"]
        ended = [t for t in running.values() if _finished(self.trials[t])]
        super().set_state({
            **state, "ongoing_trials": {k: t for k, t in running.items() if t not in ended},
            "end_order": state["end_order"] + [t for t in ended if t not in state["end_order"]],
        })
        self.restore_search(state)

    def restore_search(self, state: dict[str, Any]) -> None:
        """Checks the saved settings and rebuilds the algorithm from its state and the trials."""
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
        proposals = [self.architecture(t) for t in trials]
        scores = {a: _score(t) for a, t in zip(proposals, trials) if _finished(t)}
        try:
            self.algorithm.set_state(mine["algorithm_state"], proposals, scores)
        except (ValueError, KeyError) as e:
            raise UserError(f"the tuner project's trials do not match its oracle.json: {e}") from None
        self._told = {t.trial_id for t in trials if _finished(t)}

    def architecture(self, trial) -> Hashable:
        """The architecture of a trial."""
        return self.space.from_hyperparameter_values(trial.hyperparameters.values)

    def generation_of(self, arch: Hashable) -> int | None:
        """The generation of the algorithm that proposed `arch` (results lines' `generation`)."""
        return self.algorithm.generation_of(arch)


def _finished(trial) -> bool:
    return trial.status in (COMPLETED, FAILED)


def _score(trial) -> float | None:
    """The one-shot accuracy of a finished trial; None if it failed."""
    return float(trial.score) if trial.status == COMPLETED else None
