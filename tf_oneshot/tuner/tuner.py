"""`OneShotTuner`: KerasTuner's tuner whose trials score an architecture with the shared weights.

`run_trial` scores the trial's architecture with the trained one-shot model
(Bender et al. 2018, §3.3): no training, a fraction of a second per trial.
Each tuner appends one line per trial to `<project_dir>/results_<tuner_id>.jsonl`
with the fields `tf-oneshot search` writes (identity fields included), so
`tf-oneshot analyze --search_results` reads it like a search's results. In
KerasTuner's distributed mode each worker loads the one-shot checkpoint
itself, on its first trial. Trials of `IteratedOneShotOracle` name the
checkpoint step they are scored at (`checkpoint_step`), which `run_trial`
restores exactly first.
"""

from __future__ import annotations

import os
import time
from collections.abc import Hashable
from typing import Any

import keras_tuner

from tf_oneshot.errors import UserError
from tf_oneshot.search.bn_modes import check_bn_mode
from tf_oneshot.tuner.oracle import CHECKPOINT_STEP, OneShotOracle, recorded_space


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
        from tf_oneshot.training import finetune

        if finetune_steps is not None:
            finetune.check_steps(finetune_steps)
            finetune.check_top(finetune_top)
        self.finetune_steps, self.finetune_top = finetune_steps, finetune_top

        if bn_mode is not None:
            check_bn_mode(bn_mode)
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
            self.space = recorded_space(model_dir)
        self.bn_mode = bn_mode or self.space.default_bn_mode
        self._scorer = None
        self._opened = None
        self._waiting = False
        super().__init__(oracle=oracle, hypermodel=None, **tuner_kwargs)
        self.on_worker = self.oracle is not oracle

    @property
    def identity(self) -> dict[str, Any]:
        """The identity fields of `tf-oneshot search` lines (`search.results.IDENTITY_FIELDS`).

        Read from the local oracle, which a distributed worker builds with the
        chief's arguments: the algorithm, constraints and options are the
        chief's, and so is the seed when one was given (else the chief drew
        it, and a worker writes None). The scoring options are the scorer's
        own (`scoring_options`), as `tf-oneshot search` records them.
        """
        oracle = self.oneshot_oracle
        return {
            "space": self.space.to_config(), "checkpoint_step": self.scorer.step, "bn_mode": self.bn_mode,
            "algorithm": oracle.algorithm_name,
            "seed": oracle.algorithm.seed if oracle.seed_given or not self.on_worker else None,
            "constraints": oracle.constraints.to_json(), "options": {**oracle.algorithm_options, **self.scorer.options},
        }

    @property
    def opened_model_dir(self):
        """The `ModelDir` of `model_dir`, opened on first use (an iterated chief may create it after start-up)."""
        if self._opened is None:
            from tf_oneshot.training.model_dir import ModelDir

            self._opened = ModelDir.open(self.model_dir)
        return self._opened

    @property
    def scorer(self):
        """The one-shot scorer, loaded from `model_dir` on first use."""
        if self._scorer is None:
            from tf_oneshot.search.scorer import OneShotScorer

            self._scorer = OneShotScorer.from_model_dir(
                self.opened_model_dir, bn_mode=self.bn_mode, kl=self.kl, **self._scorer_kwargs
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

        from tf_oneshot.training.model_dir import restore

        model_dir = self.opened_model_dir
        if not model_dir.has_checkpoint(step):
            raise UserError(f"{self.model_dir} has no checkpoint at step {step}, which the trial is to be scored "
                            "at; raise the training config's keep_checkpoints so the chief keeps it.")
        restore(tf.train.Checkpoint(model=scorer.model), model_dir.checkpoint(step), partial=True)
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
        arch = self.space.from_hyperparameter_values(trial.hyperparameters.values)
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
        """The trial's child with the shared weights (`child`), as KerasTuner's `get_best_models` returns it."""
        return self.child(self.space.from_hyperparameter_values(trial.hyperparameters.values))

    def get_best_models(self, num_models: int = 1) -> list:
        """The best architectures' children, each holding the trained shared weights (`child`), best first.

        Ranked as `get_best_architectures` ranks them (after fine-tuning, with
        `finetune_steps`). Before issue 19 KerasTuner's default returned
        untrained networks (0/32 correct after save and reload).
        """
        return [self.child(arch) for arch in self.get_best_architectures(num_models)]

    def child(self, arch: Hashable):
        """`arch`'s stand-alone Keras model with the one-shot model's shared weights, ready to predict.

        The weights are inherited from the latest checkpoint (Bender et al.
        2018, §3.3: the child is the one-shot model under its masks) and its
        batch norm recalibrated on training images (SPOS, Guo et al. 2019);
        with `finetune_steps` it is also fine-tuned alone for that many
        mini-batches ("Deeper insights" §3.3). A `Normalization` layer with
        the training split's statistics sits in front, as in `tf-oneshot
        retrain`'s exports, so it takes images scaled to [0, 1] and saves to a
        `.keras` file that loads after `import tf_oneshot`.
        """
        from tf_oneshot.training import data, finetune
        from tf_oneshot.training.retrain import with_input_normalization

        if self.finetune_steps is None:
            model = finetune.inherited_child(self.opened_model_dir, arch)
        else:
            model, _ = finetune.finetune_standalone(self.opened_model_dir, arch, self.finetune_steps,
                                                    seed=self.oneshot_oracle.algorithm.seed)
        dataset = self.opened_model_dir.config.data.dataset
        return with_input_normalization(model, self.space.image_shape, data.input_statistics(dataset))

    def rerank(self) -> list[dict[str, Any]]:
        """The best `finetune_top` trials fine-tuned for `finetune_steps` steps, best fine-tuned first.

        Each record holds the one-shot and the fine-tuned accuracy; they go to
        `<project_dir>/finetune_<tuner_id>.jsonl`, so a second call (or a
        restarted tuner) fine-tunes only the trials not found there.
        """
        from tf_oneshot.training import finetune

        if self.finetune_steps is None:
            raise UserError("rerank() needs OneShotTuner(finetune_steps=n): the mini-batches per candidate.")
        candidates = [{"architecture": str(self.space.from_hyperparameter_values(t.hyperparameters.values)),
                       "oneshot_accuracy": float(t.score)} for t in self.oracle.get_best_trials(self.finetune_top)]
        tuner = finetune.FineTuner(self.opened_model_dir, self.finetune_steps, seed=self.oneshot_oracle.algorithm.seed)
        path = os.path.join(self.project_dir, f"finetune_{self.tuner_id}.jsonl")
        records, _ = finetune.rerank(candidates, tuner, path, self.finetune_top, log=lambda s: None)
        return records

    def get_best_architectures(self, num_trials: int = 1) -> list[Hashable]:
        """The architectures of the best trials, best first (after fine-tuning, with `finetune_steps`)."""
        if self.finetune_steps is not None:
            return [self.space.parse(r["architecture"]) for r in self.rerank()[:num_trials]]
        return [
            self.space.from_hyperparameter_values(t.hyperparameters.values)
            for t in self.oracle.get_best_trials(num_trials)
        ]
