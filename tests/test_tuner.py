"""OneShotOracle / OneShotTuner: KerasTuner's contract with the shared search code."""

import json
import os
import socket
import subprocess
import sys
import textwrap

import keras_tuner
import numpy as np
import pytest

from tf_oneshot.errors import UserError
from tf_oneshot.search import Constraints, Evolution, RandomSearch
from tf_oneshot.search_spaces import CellSpace
from tf_oneshot.search_spaces.constraints import cost_bounds
from tf_oneshot.tuner import OneShotOracle

SPACE = CellSpace(filters=8, num_cells=2, num_stacks=2, num_blocks=3, image_shape=(8, 8, 1))


def fake_accuracy(arch) -> float:
    weights = np.array([0.1, 0.9, 0.7, 0.5, 0.3, 0.0, 0.2])
    return float(sum(weights[list(b.ops)].sum() + 0.15 * len(b.inputs) for b in arch.blocks) / 10)


class FakeTuner(keras_tuner.Tuner):
    """Scores with `fake_accuracy`; can be told to die after some trials."""

    die_after = None

    def run_trial(self, trial, *args, **kwargs):
        if self.die_after is not None and len(self.oracle.end_order) >= self.die_after:
            raise KeyboardInterrupt
        arch = SPACE.from_hyperparameter_values(trial.hyperparameters.values)
        return {"oneshot_accuracy": fake_accuracy(arch)}


def new_oracle(directory, project, **kwargs):
    oracle = OneShotOracle(space=SPACE, algorithm="evolution", **kwargs)
    oracle._set_project_dir(directory, project)
    return oracle


def run_trials(oracle, n):
    """Creates, scores (fake) and ends `n` trials, as a tuner would; no model."""
    for _ in range(n):
        trial = oracle.create_trial("tuner0")
        oracle.update_trial(trial.trial_id, {"oneshot_accuracy": fake_accuracy(oracle.architecture(trial))})
        trial.status = "COMPLETED"
        oracle.end_trial(trial)


def finished(oracle):
    return [t for t in oracle.trials.values() if t.status == "COMPLETED"]


def archs_of(trials):
    return [SPACE.from_hyperparameter_values(t.hyperparameters.values) for t in trials]


def test_hyperparameters_cover_the_space_and_round_trip():
    oracle = OneShotOracle(space=SPACE, max_trials=5, seed=0)
    space = oracle.get_space()
    names = [hp.name for hp in space.space]
    assert names == ["block0_inputs", "block0_ops", "block1_inputs", "block1_ops", "block2_inputs", "block2_ops"]
    sizes = [len(hp.values) for hp in space.space]
    assert sizes == [3, 28, 7, 28, 15, 28]
    assert np.prod(sizes) == SPACE.size()
    rng = np.random.default_rng(0)
    for _ in range(50):
        arch = SPACE.sample(rng)
        assert SPACE.from_hyperparameter_values(SPACE.hyperparameter_values(arch)) == arch


def test_oracle_with_fake_scores_saves_and_reloads(tmp_path):
    def new():
        oracle = OneShotOracle(space=SPACE, algorithm="evolution", max_trials=12, seed=3, population_size=4,
                               num_parents=2)
        oracle._set_project_dir(str(tmp_path), "p")
        return oracle

    oracle = new()
    for _ in range(5):
        trial = oracle.create_trial("tuner0")
        arch = oracle.architecture(trial)
        oracle.update_trial(trial.trial_id, {"oneshot_accuracy": fake_accuracy(arch)})
        trial.status = "COMPLETED"
        oracle.end_trial(trial)
    running = oracle.create_trial("tuner0")  # killed while this one runs
    saved = json.load(open(os.path.join(tmp_path, "p", "oracle.json")))
    assert saved["oneshot"]["algorithm_state"]["generation"] == 1

    again = new()
    again.reload()
    assert len(again.trials) == 6 and len(again._told) == 5
    # The interrupted trial comes back first (retried, not lost), then new ones.
    first = again.create_trial("tuner0")
    assert first.trial_id == running.trial_id
    seen = []
    trial = first
    while trial.status == "RUNNING":
        arch = again.architecture(trial)
        seen.append(arch)
        again.update_trial(trial.trial_id, {"oneshot_accuracy": fake_accuracy(arch)})
        trial.status = "COMPLETED"
        again.end_trial(trial)
        trial = again.create_trial("tuner0")
    assert trial.status == "STOPPED"
    all_archs = archs_of(again.trials.values())
    assert len(all_archs) == 12 == len(set(all_archs))
    # Same proposals as an uninterrupted run of the same algorithm and seed.
    ref = Evolution(SPACE, 12, seed=3, population_size=4, num_parents=2)
    proposals = []
    while not ref.done:
        for arch in ref.ask(4):
            proposals.append(arch)
            ref.tell(arch, fake_accuracy(arch))
    assert [again.architecture(again.trials[t]) for t in sorted(again.trials)] == proposals


def test_default_budget_is_algorithm_1s_20_generations(tmp_path):
    # SPOS §3.4: T = 20 generations of P, so P * 20 architectures (1,000 for P = 50).
    assert OneShotOracle(space=SPACE, algorithm="evolution").max_trials == 50 * 20
    assert OneShotOracle(space=SPACE, algorithm="random").max_trials == 100
    assert OneShotOracle(space=SPACE, algorithm="evolution", max_trials=7).max_trials == 7
    oracle = OneShotOracle(space=SPACE, algorithm="evolution", seed=0, population_size=3, num_parents=2)
    assert oracle.algorithm.num_architectures == 60
    FakeTuner(oracle=oracle, directory=str(tmp_path), project_name="t").search(verbose=0)
    generations = [oracle.algorithm.generation_of(a) for a in archs_of(finished(oracle))]
    assert np.bincount(generations).tolist() == [3] * 20


def test_oracle_state_is_o1_per_trial_and_saved_once(tmp_path, monkeypatch):
    # oracle.json's own part holds the generator and the current population,
    # not the history: as large after 300 trials as after 30. KerasTuner's
    # own part (start_order, tried_so_far, ...) grows with the trials; that is its.
    saves = []
    monkeypatch.setattr(OneShotOracle, "save", lambda self: saves.append(1) or keras_tuner.Oracle.save(self))
    sizes = {}
    for trials in (30, 300):
        oracle = new_oracle(str(tmp_path), f"p{trials}", max_trials=trials, seed=0, population_size=10,
                            num_parents=3)
        run_trials(oracle, trials)
        saved = json.load(open(os.path.join(tmp_path, f"p{trials}", "oracle.json")))["oneshot"]
        sizes[trials] = len(json.dumps(saved))
        # Reloaded from it and the trials: the algorithm as it was.
        again = new_oracle(str(tmp_path), f"p{trials}", max_trials=trials, seed=1, population_size=10,
                           num_parents=3)
        again.reload()
        assert again.algorithm.topk == oracle.algorithm.topk and again.algorithm.done
        assert again.algorithm.seed == 0 and again._told == set(oracle.trials)
    assert sizes[300] < 1.1 * sizes[30], sizes
    other = new_oracle(str(tmp_path), "p30", max_trials=30, seed=0, population_size=5, num_parents=3)
    with pytest.raises(UserError, match="options .'population_size': 10.*use the same settings"):
        other.reload()
    # One save when a trial starts and one when it ends (KerasTuner's), not two.
    oracle = new_oracle(str(tmp_path), "once", max_trials=5, seed=0, population_size=10)
    saves.clear()
    run_trials(oracle, 5)
    assert len(saves) == 2 * 5


def test_random_oracle_reloads_from_its_trials(tmp_path):
    def new():
        oracle = OneShotOracle(space=SPACE, algorithm="random", max_trials=20, seed=4)
        oracle._set_project_dir(str(tmp_path), "r")
        return oracle

    run_trials(new(), 8)
    again = new()
    again.reload()
    # KerasTuner's end_trial saves trial 07 as still running; it is not run again.
    assert again._retry_queue == [] and again._told == set(again.trials)
    run_trials(again, 12)
    ref = RandomSearch(SPACE, 20, seed=4).ask(20)
    assert [again.architecture(again.trials[t]) for t in again.start_order] == ref


def test_a_spent_budget_idles_tuners_while_others_still_score(tmp_path):
    # A tuner asking once the budget is spent waits (IDLE) while another
    # still scores: a failed trial would be retried, and every worker stops together.
    oracle = new_oracle(str(tmp_path), "idle", max_trials=2, seed=0, population_size=2)
    first, second = oracle.create_trial("tuner0"), oracle.create_trial("tuner1")
    for trial in (first, second):
        oracle.update_trial(trial.trial_id, {"oneshot_accuracy": fake_accuracy(oracle.architecture(trial))})
    first.status = "COMPLETED"
    oracle.end_trial(first)
    assert oracle.create_trial("tuner0").status == "IDLE" and "tuner0" in oracle.tuner_ids
    second.status = "COMPLETED"
    oracle.end_trial(second)
    assert [oracle.create_trial(t).status for t in ("tuner1", "tuner0")] == ["STOPPED", "STOPPED"]


def test_constraints_hold_in_populate_space(tmp_path):
    b = cost_bounds(SPACE)["params"]
    limit = int(b[0] + 0.3 * (b[1] - b[0]))
    oracle = OneShotOracle(space=SPACE, max_trials=15, seed=0, max_params=limit)
    tuner = FakeTuner(oracle=oracle, directory=str(tmp_path), project_name="c")
    tuner.search(verbose=0)
    archs = archs_of(finished(oracle))
    assert len(archs) == 15 and all(SPACE.count(a).params <= limit for a in archs)
    best = tuner.get_best_hyperparameters(1)[0]
    assert fake_accuracy(SPACE.from_hyperparameter_values(best.values)) == max(fake_accuracy(a) for a in archs)


def test_tuner_killed_and_built_again_continues(tmp_path):
    def build(die_after=None):
        oracle = OneShotOracle(space=SPACE, algorithm="evolution", max_trials=10, seed=1, population_size=4,
                               num_parents=2)
        tuner = FakeTuner(oracle=oracle, directory=str(tmp_path), project_name="k")
        tuner.die_after = die_after
        return tuner

    with pytest.raises(KeyboardInterrupt):
        build(die_after=6).search(verbose=0)
    tuner = build()
    assert len(finished(tuner.oracle)) == 6
    tuner.search(verbose=0)
    trials = finished(tuner.oracle)
    assert len(trials) == 10 == len(tuner.oracle.trials)
    assert len(set(archs_of(trials))) == 10


def test_bad_input_is_one_clear_error(tmp_path):
    with pytest.raises(UserError, match="--algorithm=annealing is unknown; choose one of random, evolution"):
        OneShotOracle(space=SPACE, algorithm="annealing")
    with pytest.raises(UserError, match="does not exist"):
        OneShotOracle(model_dir=str(tmp_path / "missing"))
    (tmp_path / "foreign").mkdir()
    with pytest.raises(UserError, match="not a tf_oneshot one-shot model_dir"):
        OneShotOracle(model_dir=str(tmp_path / "foreign"))
    least = cost_bounds(SPACE)["flops"][0]
    with pytest.raises(UserError, match="no architecture of this search space meets flops <= "):
        OneShotOracle(space=SPACE, max_flops=least - 1)
    assert Constraints(max_flops=least).satisfied(SPACE.count(SPACE.parse("0:0/0:0/0:0")))


# ------------------------------------------------------------ with a model
def test_tuner_scores_trials_with_the_shared_weights(oneshot_model_dir, tmp_path):
    import keras

    from tf_oneshot.io_utils import read_jsonl
    from tf_oneshot.search.scorer import OneShotScorer
    from tf_oneshot.tuner import OneShotTuner

    oracle = OneShotOracle(oneshot_model_dir, algorithm="random", max_trials=4, seed=0)
    tuner = OneShotTuner(oracle, oneshot_model_dir, directory=str(tmp_path), project_name="m",
                         scorer_kwargs={"archs_per_pass": 1})
    tuner.search(verbose=0)
    trials = finished(oracle)
    assert len(trials) == 4
    best_hp = tuner.get_best_hyperparameters(1)[0]
    best = tuner.get_best_architectures(1)[0]
    assert best == oracle.space.from_hyperparameter_values(best_hp.values)
    assert oracle.get_best_trials(1)[0].score == max(t.score for t in trials)
    # Trial scores are the scorer's one-shot accuracies: scoring again agrees.
    scorer = tuner.scorer
    assert isinstance(scorer, OneShotScorer) and scorer.step == 2
    again = scorer.score([best])[0]["oneshot_accuracy"]
    assert again == pytest.approx(oracle.get_best_trials(1)[0].score, abs=1e-6)
    lines = read_jsonl(os.path.join(str(tmp_path), "m", "results_tuner0.jsonl"))
    assert sorted(r["trial_id"] for r in lines) == sorted(t.trial_id for t in trials)
    model = tuner.get_best_models(1)[0]
    assert isinstance(model, keras.Model) and model.count_params() == oracle.space.count(best).params


def test_tuner_results_are_search_results_that_analyze_reads(oneshot_model_dir, tmp_path):
    from tf_oneshot.analysis import analyze, load_search_results
    from tf_oneshot.io_utils import read_jsonl
    from tf_oneshot.search import ResultsFile
    from tf_oneshot.search.results import IDENTITY_FIELDS
    from tf_oneshot.tuner import OneShotTuner

    oracle = OneShotOracle(oneshot_model_dir, algorithm="evolution", max_trials=4, seed=0, population_size=2,
                           num_parents=2, max_flops=10**9)
    tuner = OneShotTuner(oracle, oneshot_model_dir, directory=str(tmp_path), project_name="r")
    tuner.search(verbose=0)
    path = os.path.join(str(tmp_path), "r", "results_tuner0.jsonl")
    lines = read_jsonl(path)
    assert [r["generation"] for r in lines] == [0, 0, 1, 1]
    # The identity `tf-oneshot search --algorithm=evolution --seed=0 --max_flops=...`
    # writes (commands/search.py), so the CLI's own reader accepts the file.
    identity = {
        "space": oracle.space.to_config(), "checkpoint_step": 2, "bn_mode": "batch", "algorithm": "evolution",
        "seed": 0, "constraints": Constraints(max_flops=10**9).to_json(),
        "options": {"population_size": 2, "num_parents": 2, "mutation_prob": 0.1, "kl": False,
                    "validation_examples": None},
    }
    assert all({f: r[f] for f in IDENTITY_FIELDS} == identity for r in lines)
    assert len(ResultsFile(path, oracle.space, identity).load()) == 4
    for r in lines:
        assert oracle.space.count(oracle.space.parse(r["architecture"])).flops == r["flops"]
    # analyze's loader: labelled "evolution" (it used to fill in "random"), and the report runs.
    records, _ = load_search_results([path])
    assert [r["algorithm"] for r in records] == ["evolution"] * 4
    result = analyze([path], None, str(tmp_path / "analysis"), log=lambda s: None)
    assert result.num_architectures_scored == 4 and "search_progress" in result.plots


WORKER = textwrap.dedent("""
    import os, sys, time
    from tf_oneshot.tuner import OneShotOracle, OneShotTuner
    model_dir, directory = sys.argv[1], sys.argv[2]
    oracle = OneShotOracle(model_dir, algorithm="evolution", max_trials=12, seed=0,
                           population_size=4, num_parents=2)
    tuner = OneShotTuner(oracle, model_dir, directory=directory, project_name="dist",
                         scorer_kwargs={"archs_per_pass": 1})
    me = os.environ["KERASTUNER_TUNER_ID"]
    if me != "chief":
        tuner.scorer  # each worker loads the checkpoint itself, before the start line
        open(os.path.join(directory, "ready_" + me), "w").close()
        while len([f for f in os.listdir(directory) if f.startswith("ready_")]) < 2:
            time.sleep(0.05)
    tuner.search(verbose=0)
""")


@pytest.mark.slow
def test_distributed_chief_and_two_workers_on_loopback(oneshot_model_dir, tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    procs = []
    for tuner_id in ("chief", "worker0", "worker1"):
        env = {**os.environ, "KERASTUNER_TUNER_ID": tuner_id, "KERASTUNER_ORACLE_IP": "127.0.0.1",
               "KERASTUNER_ORACLE_PORT": str(port), "PYTHONPATH": root, "TF_CPP_MIN_LOG_LEVEL": "3"}
        procs.append(subprocess.Popen(
            [sys.executable, "-c", WORKER, oneshot_model_dir, str(tmp_path)], env=env,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        ))
    try:
        for proc in procs:
            out, _ = proc.communicate(timeout=300)
            assert proc.returncode == 0, out[-3000:]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    from tf_oneshot.io_utils import read_jsonl

    scored = {w: read_jsonl(os.path.join(str(tmp_path), "dist", f"results_{w}.jsonl")) for w in ("worker0", "worker1")}
    assert scored["worker0"] and scored["worker1"]  # both workers scored trials
    ids = [r["trial_id"] for lines in scored.values() for r in lines]
    assert len(ids) == 12 == len(set(ids))  # every trial scored exactly once
    # A worker's lines name the chief's algorithm and seed; the generation is
    # known only on the chief.
    for r in (r for lines in scored.values() for r in lines):
        assert (r["algorithm"], r["seed"], r["generation"]) == ("evolution", 0, None)
    # The chief's oracle holds all 12 trials, completed, 12 distinct architectures.
    oracle = OneShotOracle(oneshot_model_dir, algorithm="evolution", max_trials=12, seed=0,
                           population_size=4, num_parents=2)
    oracle._set_project_dir(str(tmp_path), "dist")
    oracle.reload()
    trials = finished(oracle)
    assert len(trials) == 12 and sorted(t.trial_id for t in trials) == sorted(ids)
    assert len({str(oracle.architecture(t)) for t in trials}) == 12
    assert oracle.algorithm.generation == 2 and oracle.algorithm.done


def test_best_models_hold_the_trained_shared_weights_after_save_and_reload(tmp_path):
    """Issue 19 item 5: `get_best_models()` returned untrained networks (0/32 correct after a reload)."""
    import keras
    from sklearn.datasets import load_digits

    from tf_oneshot.training import trainer
    from tf_oneshot.training.config import TrainConfig
    from tf_oneshot.tuner import OneShotTuner

    model_dir = str(tmp_path / "oneshot")
    trainer.train(TrainConfig(dataset="digits", filters=8, num_cells=1, num_stacks=1, num_blocks=2, batch_size=32,
                              ghost_batch_size=16, train_steps=150, checkpoint_every=150, log_every=50,
                              eval_batches=1), model_dir, log=lambda s: None)
    oracle = OneShotOracle(model_dir, algorithm="random", max_trials=3, seed=0)
    tuner = OneShotTuner(oracle, model_dir, directory=str(tmp_path), project_name="best")
    tuner.search(verbose=0)
    path = str(tmp_path / "best.keras")
    tuner.get_best_models(1)[0].save(path)
    reloaded = keras.saving.load_model(path, safe_mode=True)
    digits = load_digits()  # [0, 1] images, as a user has them: the model standardizes them itself
    predicted = np.argmax(reloaded.predict((digits.images / 16.0)[..., None].astype("float32"), verbose=0), axis=-1)
    accuracy = float(np.mean(predicted == digits.target))
    assert accuracy > 0.5, accuracy  # chance is 0.1
