"""KerasTuner runs the iterated one-shot loop of NAO-WS / NAO-V2 (Luo et al., §3.2 and §4.3).

`IteratedOneShotOracle` is `tf-oneshot nas` with the scoring handed to
KerasTuner's workers. Iteration i (of K):
1. the chief trains the supernet in `model_dir` for T more steps on pool i
   (`nas.Loop.train_iteration`, the command's own code: the pool sampler of
   §4.2 and, in independent mode, the restarted cosine cycle and reset
   optimizer slots of §4.3), in a background thread: every worker asking for
   a trial meanwhile gets IDLE;
2. it hands out pool i as trials, each naming its checkpoint step (the
   hyperparameter `checkpoint_step` = (i + 1) * T). `OneShotTuner.run_trial`
   restores exactly that checkpoint before it scores, so all of one
   iteration's scores come from the same weights. Independent mode scores
   the whole pool again with the new weights (§4.3, "re-evaluated");
   dependent mode (Fig. 2b) scores only the new candidates;
3. when the pool's last trial has ended, the chief logs the scores, tells the
   algorithm and adds its new candidates (`nas.Loop.tell_and_propose`), and
   only then starts training iteration i + 1.

State: the model_dir holds the checkpoints and `nas/iterations.jsonl` (pools,
scores with their step, the algorithm's state), exactly as `tf-oneshot nas`
writes them (so either can resume the other's run); the tuner project holds
the trials. A chief killed at any point resumes: training from its last
checkpoint, an iteration already trained is never trained again, finished
trials are kept, and an interrupted trial is retried at its step.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable, Hashable
from typing import Any

import keras_tuner

from tf_oneshot.errors import UserError
from tf_oneshot.search import nas
from tf_oneshot.training.config import TrainConfig
from tf_oneshot.tuner.oracle import CHECKPOINT_STEP, COMPLETED, IDLE, RUNNING, STOPPED, OneShotOracle

_RESERVED = ("max_trials", "space", "population_size")


class IteratedOneShotOracle(OneShotOracle):
    """NAO-V2's iterated train / score / propose loop (§3.2, §4.3) as a KerasTuner `Oracle`.

    Args:
        model_dir: the supernet's model_dir; trained here, by the chief.
        iterations: K, train / score / propose rounds.
        steps_per_iteration: T, supernet steps per iteration.
        pool_size: P, the initial pool (NAO-V2's code: 1000).
        new_per_iteration: candidates each iteration adds (default P; NAO-V2's
            code: 300).
        train_on: "pool" (each iteration trains on the whole pool) or
            "newest" (on what the iteration before added; NAO-V2's code).
        algorithm: "random", "evolution" or "nao" (`nas.make_algorithm`).
        pool_sampler: "proportional" (§4.2, Eq. 1) or "uniform" (NAO-WS).
        iteration_mode: "independent" (§4.3, Fig. 2a) or "dependent" (Fig. 2b).
        seed: the run's seed (training and algorithm); default: the config's.
        config: the supernet's training config for a new model_dir (default:
            the model_dir's config.json); its train_steps and sampler are set
            from the iteration settings.
        bn_mode, validation_examples: how workers score (`OneShotTuner`
            takes them from here).
        strategy: the chief's tf.distribute strategy for training.
        log: the chief's progress lines (training included).
        **kwargs: constraints (max_params, max_flops, ...) and
            `keras_tuner.Oracle` arguments, as `OneShotOracle`.

    Raises:
        UserError: bad iteration settings, a pool smaller than one batch of
            ghost batches, an algorithm that cannot work on the space, or
            (on the first trial) a model_dir or project with other settings.
    """

    iterated = True

    def __init__(
        self,
        model_dir: str,
        iterations: int,
        steps_per_iteration: int,
        pool_size: int,
        algorithm: str = "random",
        pool_sampler: str = "proportional",
        iteration_mode: str = "independent",
        seed: int | None = None,
        *,
        new_per_iteration: int | None = None,
        train_on: str = "pool",
        config: TrainConfig | None = None,
        bn_mode: str = "batch",
        validation_examples: int | None = None,
        strategy: Any = None,
        log: Callable[[str], None] = print,
        **kwargs: Any,
    ):
        from tf_oneshot.search_spaces.space_config import build_space
        from tf_oneshot.training import data
        from tf_oneshot.training.model_dir import ModelDir

        for name in _RESERVED:
            if name in kwargs:
                raise UserError(f"IteratedOneShotOracle sets {name} itself (from iterations, pool_size and the "
                                "model_dir); leave it out.")
        self.settings = nas.NasSettings(
            iterations=iterations, steps_per_iteration=steps_per_iteration, pool_size=pool_size,
            algorithm=algorithm, sampler=pool_sampler, iteration_mode=iteration_mode, bn_mode=bn_mode,
            validation_examples=validation_examples, new_per_iteration=new_per_iteration, train_on=train_on,
        )
        config = config or ModelDir.open(model_dir).config
        if seed is not None:
            config = config.replace(seed=seed)
        self.config = self.settings.train_config(config)
        info = data.dataset_info(config.data.dataset, config.data.data_dir)
        space = build_space(self.config.space, info.image_shape, info.num_classes, info.stem_stride)
        # The base oracle's own algorithm is replaced below: "random" with one
        # trial never refuses a space, whatever `algorithm` is.
        super().__init__(model_dir, algorithm="random", max_trials=1, seed=self.config.seed, space=space, **kwargs)
        self.algorithm_name = algorithm
        self.algorithm = nas.make_algorithm(self.settings, space, self.constraints, self.config.seed)
        self.algorithm_options = {"nas": dataclasses.asdict(self.settings)}
        self.seed_given = True  # the config's seed: every worker's oracle knows it
        # The oracle stops after K iterations, not after a count: a failed
        # trial's architecture is handed out again.
        self.max_trials = None
        K, T = iterations, steps_per_iteration
        self.expected_trials = self.settings.scores
        self.hyperparameters.Int(CHECKPOINT_STEP, min_value=T, max_value=K * T, step=T)
        self.strategy, self.log = strategy, log
        self.loop: nas.Loop | None = None  # opened by the chief on its first trial
        self._thread: threading.Thread | None = None
        # What stopped the loop (bad settings, a failed training): every tuner
        # then gets STOPPED, so a distributed chief's server ends too, and
        # `OneShotTuner.search` raises it on the chief. A new oracle retries.
        self.failure: BaseException | None = None
        self._exported = False
        self._failure_logged = False
        self._checkpoint_step = 0  # the model_dir's latest checkpoint step, as last read

    # ----------------------------------------------------------- iterations
    def step_of_iteration(self, i: int) -> int:
        """The checkpoint step iteration i's trials are scored at: the end of its training."""
        return (i + 1) * self.settings.steps_per_iteration

    def iteration_of(self, step: int) -> int:
        return step // self.settings.steps_per_iteration - 1

    def _open(self) -> nas.Loop:
        if self.loop is None:
            self.loop = nas.open_loop(self.config, self.settings, self.model_dir, self.constraints,
                                      self.strategy, self.log)
        return self.loop

    def _trials_of(self, i: int) -> list:
        step = self.step_of_iteration(i)
        return [t for t in self.trials.values() if t.hyperparameters.values.get(CHECKPOINT_STEP) == step]

    def _needed(self, i: int) -> list[Hashable]:
        """Pool members iteration i still has to score (dependent mode reuses earlier scores)."""
        history = self.loop.history
        cached = {} if self.settings.independent else history.latest_scores(i)
        logged = history.scores_of(i)
        return [a for a in history.pool(i) if a not in cached and a not in logged]

    def _unassigned(self, i: int) -> list[Hashable]:
        """Needed members without a completed or running trial (a failed one is handed out again)."""
        taken = {self.architecture(t) for t in self._trials_of(i)
                 if t.status in (COMPLETED, RUNNING)}
        return [a for a in self._needed(i) if a not in taken]

    def _pending(self, i: int) -> bool:
        return any(t.status == RUNNING for t in self._trials_of(i))

    def _busy(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _trained(self, i: int) -> bool:
        """Whether the model_dir holds iteration i's checkpoint; read from it only until it does.

        `_advance` asks on every trial request, and a model_dir on GCS costs a
        request per read; a step once reached stays reached.
        """
        if self._checkpoint_step < self.step_of_iteration(i):
            self._checkpoint_step = self._open().model_dir.latest_step() or 0
        return self._checkpoint_step >= self.step_of_iteration(i)

    def _start_training(self, i: int) -> None:
        """Trains iteration i in a thread; workers get IDLE until it ends."""
        def work() -> None:
            try:
                if not self.loop.train_iteration(i) or not self._trained(i):
                    raise UserError(f"training iteration {i + 1} stopped before step {self.step_of_iteration(i)}; "
                                    "run the tuner again to resume it.")
            except BaseException as e:  # stops the search; `OneShotTuner.search` raises it
                self.failure = e

        self._thread = threading.Thread(target=work, name=f"nas-iteration-{i + 1}", daemon=True)
        self._thread.start()

    def _progress(self) -> None:
        """Advances the loop as far as it can without a worker; a failure is kept in `failure`."""
        if self.failure is None:
            try:
                self._advance()
            except Exception as e:  # answered with STOPPED, not raised inside KerasTuner's server
                self.failure = e
        if self.failure is not None and not self._failure_logged:
            self.log(f"IteratedOneShotOracle stopped: {self.failure}")
            self._failure_logged = True

    def _advance(self) -> None:
        """Trains, or tells and proposes, as far as the loop goes without a worker."""
        loop = self._open()
        K = self.settings.iterations
        while not self._busy() and loop.history.done < K:
            i = loop.history.done
            if not self._trained(i):
                self._start_training(i)
                return
            if self._unassigned(i) or self._pending(i):
                return
            self._finish(i)
        if loop.history.done == K and not self._exported:
            loop.export_final()
            self._exported = True

    def _finish(self, i: int) -> None:
        """Logs iteration i's scores from its trials, tells the algorithm and grows the pool."""
        step = self.step_of_iteration(i)
        latest = {}
        for trial in sorted(self._trials_of(i), key=lambda t: t.trial_id):
            if trial.status == COMPLETED:
                latest[self.architecture(trial)] = trial
        for arch in self._needed(i):
            trial = latest[arch]
            reported = trial.metrics.get_last_value(CHECKPOINT_STEP)
            if reported != step:
                raise UserError(f"trial {trial.trial_id} of iteration {i + 1} was scored at checkpoint step "
                                f"{reported}, not {step}; run IteratedOneShotOracle with OneShotTuner workers.")
            score = {"oneshot_accuracy": trial.score, "loss": trial.metrics.get_last_value("loss")}
            self.loop.record_score(i, arch, score, step, trial_id=trial.trial_id)
        history = self.loop.history
        scores = {**({} if self.settings.independent else history.latest_scores(i)), **history.scores_of(i)}
        self.loop.tell_and_propose(i, {a: float(scores[a]["oneshot_accuracy"]) for a in history.pool(i)})

    # ----------------------------------------------------------- KerasTuner
    def populate_space(self, trial_id: str) -> dict[str, Any]:
        """The next pool member of the current iteration at its step; IDLE while training or waiting."""
        self._progress()
        loop = self.loop
        if self.failure is not None or loop.history.done >= self.settings.iterations:
            return {"status": STOPPED, "values": None}
        i = loop.history.done
        unassigned = [] if self._busy() else self._unassigned(i)
        if not unassigned:
            return {"status": IDLE, "values": None}
        values = {**self.space.hyperparameter_values(unassigned[0]), CHECKPOINT_STEP: self.step_of_iteration(i)}
        return {"status": RUNNING, "values": values}

    @keras_tuner.synchronized
    def end_trial(self, trial):
        # The iteration's last trial starts the next training at once.
        keras_tuner.Oracle.end_trial(self, trial)
        self._progress()

    def get_state(self) -> dict[str, Any]:
        state = keras_tuner.Oracle.get_state(self)
        state["oneshot_nas"] = {"settings": dataclasses.asdict(self.settings),
                                "constraints": self.constraints.to_json()}
        return state

    def restore_search(self, state: dict[str, Any]) -> None:
        """Checks the saved settings: the pools, scores and algorithm state are in the model_dir's nas log."""
        mine = {"settings": dataclasses.asdict(self.settings), "constraints": self.constraints.to_json()}
        saved = state.get("oneshot_nas")
        if saved != mine:
            raise UserError(f"the tuner project was searched with {saved}; this oracle asks for {mine}. Use the "
                            "same settings, or overwrite=True / a new project_name.")

    def generation_of(self, arch: Hashable) -> int | None:
        """The iteration whose proposals added `arch` to the pool (0: the initial pool)."""
        history = self._open().history
        if arch in history.initial["archs"]:
            return 0
        return next((g + 1 for g, end in enumerate(history.ends) if arch in end["new_archs"]), None)

    def get_best_trials(self, num_trials: int = 1) -> list:
        """The trials of the last finished iteration's pool scores (`nas/final_pool.jsonl`), best first.

        An architecture is scored once per iteration; only its latest score
        counts, so no architecture appears twice.
        """
        history = self._open().history
        if not history.done:
            return []
        scores = history.latest_scores(history.done)
        ids = [scores[a].get("trial_id") for a in history.pool(history.done - 1)]
        trials = [self.trials[t] for t in ids if t in self.trials]
        return sorted(trials, key=lambda t: -t.score)[:num_trials]
