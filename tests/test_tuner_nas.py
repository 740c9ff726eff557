"""IteratedOneShotOracle: NAO-V2's iterated loop (§3.2, §4.3) behind KerasTuner.

The chief trains between iterations; tuners score each iteration's pool at the
checkpoint step its trials name, and never two steps within one iteration.
The space is the user-defined example of tests/test_nas.py (examples/
mobile_chain.py, 2 blocks of width 8, 144 architectures): a whole K=2, T=2
run trains and traces in seconds.
"""

import json
import os
import socket
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from tf_oneshot.errors import UserError
from tf_oneshot.io_utils import read_jsonl
from tf_oneshot.search import nas
from tf_oneshot.training.config import TrainConfig
from tf_oneshot.training.model_dir import ModelDir
from tf_oneshot.tuner import CHECKPOINT_STEP, OneShotTuner
from tf_oneshot.tuner.iterated import IteratedOneShotOracle

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SPACE = os.path.join(ROOT, "examples", "mobile_chain.py") + ":MobileChainSpace"
BASE = dict(dataset="digits", space=SPACE, space_args="num_blocks=2,width=8", batch_size=32, ghost_batch_size=16,
            checkpoint_every=1, log_every=1, eval_batches=1, learning_rate=0.05, keep_checkpoints=4)
K, T, P = 2, 2, 4
SETTINGS = dict(iterations=K, steps_per_iteration=T, pool_size=P, algorithm="evolution", validation_examples=32)


def new_oracle(model_dir, lines, **changes):
    return IteratedOneShotOracle(model_dir, config=TrainConfig(**BASE), log=lines.append, **{**SETTINGS, **changes})


def drive(oracle, tuners):
    """KerasTuner's workers, in one process: each round every tuner takes a trial, then all score and end them."""
    while True:
        taken = []
        for tuner in tuners:
            trial = oracle.create_trial(tuner.tuner_id)
            if trial.status == "STOPPED":
                return
            if trial.status == "RUNNING":
                taken.append((tuner, trial))
        if not taken:
            time.sleep(0.05)  # the chief is training
        for tuner, trial in taken:
            oracle.update_trial(trial.trial_id, tuner.run_trial(trial))
            trial.status = "COMPLETED"
            oracle.end_trial(trial)


@pytest.fixture(scope="module")
def two_tuners(tmp_path_factory):
    """A whole run: one oracle, two tuners taking trials side by side."""
    root = tmp_path_factory.mktemp("tuner_nas")
    model_dir, lines = str(root / "model"), []
    oracle = new_oracle(model_dir, lines)
    tuners = []
    for name in ("tuner0", "tuner1"):
        tuner = OneShotTuner(oracle, model_dir, directory=str(root), project_name="p")
        tuner.tuner_id = name
        tuners.append(tuner)
    drive(oracle, tuners)
    return oracle, tuners, model_dir, lines


def results(tuner):
    return read_jsonl(os.path.join(tuner.project_dir, f"results_{tuner.tuner_id}.jsonl"))


def test_two_iterations_train_between_and_score_each_pool_at_its_step(two_tuners):
    oracle, tuners, model_dir, lines = two_tuners
    trials = sorted(oracle.trials.values(), key=lambda t: t.trial_id)
    # Independent mode (§4.3): the initial pool of 4, then all 8 of the grown pool re-scored.
    assert len(trials) == oracle.expected_trials == P + 2 * P
    assert all(t.status == "COMPLETED" for t in trials)
    assert ModelDir.open(model_dir).checkpoint_step() == K * T
    # The chief trained each iteration once, between the iterations.
    assert [x for x in lines if "training steps" in x] == [
        "iteration 1/2: training steps 0-2 on a pool of 4 (proportional sampling, independent iterations)",
        "iteration 2/2: training steps 2-4 on a pool of 8 (proportional sampling, independent iterations)"]
    steps = [t.hyperparameters.values[CHECKPOINT_STEP] for t in trials]
    assert steps == [T] * P + [2 * T] * 2 * P
    # Every score was taken at its trial's step: the metric the tuner reports and its results line.
    assert [t.metrics.get_last_value(CHECKPOINT_STEP) for t in trials] == steps
    lines_by_id = {r["trial_id"]: r for tuner in tuners for r in results(tuner)}
    assert {r["checkpoint_step"] for r in lines_by_id.values() if r["iteration"] == 0} == {T}
    assert {r["checkpoint_step"] for r in lines_by_id.values() if r["iteration"] == 1} == {2 * T}
    assert [lines_by_id[t.trial_id]["checkpoint_step"] for t in trials] == steps
    # Both tuners scored in both iterations, and each moved to the new step once.
    for tuner in tuners:
        mine = [r["checkpoint_step"] for r in results(tuner)]
        assert mine == sorted(mine) and set(mine) == {T, 2 * T}
    # Iteration 2's pool: the first pool plus the algorithm's (evolution's) 4 new candidates.
    log = read_jsonl(os.path.join(model_dir, nas.LOG_FILE))
    first, end = log[0], next(r for r in log if r["kind"] == "end")
    pool_1 = [str(oracle.architecture(t)) for t in trials[:P]]
    pool_2 = [str(oracle.architecture(t)) for t in trials[P:]]
    assert pool_1 == first["pool"] and pool_2 == first["pool"] + end["new"]
    assert len(set(end["new"]) - set(first["pool"])) == P
    assert {lines_by_id[t.trial_id]["generation"] for t in trials[P:]} == {0, 1}
    # The nas log holds the trials' scores at their steps; final_pool.jsonl the last pool's.
    scores = [r for r in log if r["kind"] == "score"]
    assert [(r["trial_id"], r["step"], r["oneshot_accuracy"]) for r in scores] == [
        (t.trial_id, s, t.score) for t, s in zip(trials, steps)]
    final = read_jsonl(os.path.join(model_dir, nas.FINAL_FILE))
    assert [r["architecture"] for r in final] == pool_2 and {r["scored_at_step"] for r in final} == {2 * T}
    # The best trials are the last pool's, each architecture once.
    best = oracle.get_best_trials(8)
    assert sorted(t.trial_id for t in best) == sorted(t.trial_id for t in trials[P:])
    assert [t.score for t in best] == sorted((t.score for t in best), reverse=True)


def test_dependent_iterations_score_only_the_new_candidates(tmp_path):
    # Fig. 2b (NAO-WS): one cosine cycle over K*T steps, earlier scores reused.
    model_dir, lines = str(tmp_path / "m"), []
    oracle = new_oracle(model_dir, lines, iteration_mode="dependent")
    OneShotTuner(oracle, model_dir, directory=str(tmp_path), project_name="d").search(verbose=0)
    trials = sorted(oracle.trials.values(), key=lambda t: t.trial_id)
    assert len(trials) == oracle.expected_trials == K * P
    assert [t.hyperparameters.values[CHECKPOINT_STEP] for t in trials] == [T] * P + [2 * T] * P
    log = read_jsonl(os.path.join(model_dir, nas.LOG_FILE))
    first, end = log[0], next(r for r in log if r["kind"] == "end")
    assert [str(oracle.architecture(t)) for t in trials[P:]] == end["new"]
    final = read_jsonl(os.path.join(model_dir, nas.FINAL_FILE))
    assert [r["architecture"] for r in final] == first["pool"] + end["new"]
    assert [r["scored_at_step"] for r in final] == [T] * P + [2 * T] * P
    assert "dependent iterations" in next(x for x in lines if "training steps 2-4" in x)
    # Resuming the model_dir with other iteration settings: one clear line, nothing trained or scored.
    other = new_oracle(model_dir, lines)
    with pytest.raises(UserError, match=f"--model_dir={model_dir} holds a nas run with --iteration_mode=dependent "
                                        r"\(this run asks for independent\)"):
        OneShotTuner(other, model_dir, directory=str(tmp_path), project_name="other").search(verbose=0)
    assert not other.trials and ModelDir.open(model_dir).checkpoint_step() == K * T


def test_run_trial_restores_the_step_its_trial_names(two_tuners):
    oracle, tuners, model_dir, _ = two_tuners
    tuner = tuners[0]
    first = min(oracle.trials.values(), key=lambda t: t.trial_id)  # scored at step T
    again = min((t for t in oracle.trials.values() if t.hyperparameters.values[CHECKPOINT_STEP] == 2 * T
                 and oracle.architecture(t) == oracle.architecture(first)), key=lambda t: t.trial_id)
    assert tuner.scorer.step == 2 * T
    # Back to step T: the weights of then, so the very loss of then (not step 2T's).
    metrics = tuner.run_trial(first)
    assert tuner.scorer.step == T and metrics[CHECKPOINT_STEP] == T
    assert metrics["loss"] == pytest.approx(first.metrics.get_last_value("loss"), rel=1e-6)
    assert metrics["loss"] != pytest.approx(again.metrics.get_last_value("loss"), rel=1e-6)
    assert tuner.run_trial(again)["loss"] == pytest.approx(again.metrics.get_last_value("loss"), rel=1e-6)
    assert tuner.scorer.step == 2 * T
    with pytest.raises(UserError, match="has no checkpoint at step 99, which the trial is to be scored at"):
        tuner.scorer_at(99)


def test_an_iterations_trials_wait_for_the_chief(tmp_path):
    # No training yet: the first request starts it and gets IDLE, as does every
    # request until it ends. Settings the project was made with are enforced.
    lines = []
    oracle = new_oracle(str(tmp_path / "m"), lines, iterations=1)
    oracle._set_project_dir(str(tmp_path), "w")
    assert oracle.create_trial("a").status == "IDLE"
    assert oracle.create_trial("b").status == "IDLE"
    oracle._thread.join()
    trials = [oracle.create_trial(x) for x in ("a", "b", "c", "d", "e")]
    assert [t.status for t in trials] == ["RUNNING"] * P + ["IDLE"]  # e waits for a to d
    assert {t.hyperparameters.values[CHECKPOINT_STEP] for t in trials[:P]} == {T}
    other = new_oracle(str(tmp_path / "m"), [], iterations=1, iteration_mode="dependent")
    other._set_project_dir(str(tmp_path), "w")
    with pytest.raises(UserError, match="the tuner project was searched with .*'iteration_mode': 'independent'"):
        other.reload()


def test_a_chief_killed_mid_training_trains_only_the_rest(tmp_path):
    model_dir, lines = str(tmp_path / "m"), []
    oracle = new_oracle(model_dir, lines, iterations=1)
    oracle._set_project_dir(str(tmp_path), "a")
    assert oracle.create_trial("a").status == "IDLE"
    oracle._thread.join()
    # Killed after step 1's checkpoint: step 2's was never written.
    checkpoints = os.path.join(model_dir, "checkpoints")
    for name in os.listdir(checkpoints):
        if name.startswith(f"ckpt-{T}."):
            os.remove(os.path.join(checkpoints, name))
    with open(os.path.join(checkpoints, "checkpoint"), "w") as f:  # CheckpointManager's state file
        f.write('model_checkpoint_path: "ckpt-1"\nall_model_checkpoint_paths: "ckpt-1"\n')
    assert ModelDir.open(model_dir).checkpoint_step() == 1
    again = new_oracle(model_dir, lines, iterations=1)
    again._set_project_dir(str(tmp_path), "b")
    assert again.create_trial("a").status == "IDLE"
    again._thread.join()
    assert [x.split(" on ")[0] for x in lines if "training steps" in x] == [
        "iteration 1/1: training steps 0-2", "iteration 1/1: training steps 1-2"]
    trial = again.create_trial("a")
    assert trial.status == "RUNNING" and trial.hyperparameters.values[CHECKPOINT_STEP] == T


def test_a_failed_training_stops_every_tuner_and_the_chief_raises_it(tmp_path, monkeypatch):
    release = threading.Event()

    def fail(loop, i):
        release.wait(timeout=60)
        raise UserError("the data cannot be read")

    monkeypatch.setattr(nas.Loop, "train_iteration", fail)
    lines = []
    oracle = new_oracle(str(tmp_path / "m"), lines)
    oracle._set_project_dir(str(tmp_path), "f")
    assert oracle.create_trial("a").status == "IDLE"  # training started, in its thread
    release.set()
    oracle._thread.join()
    # Every tuner is stopped (a distributed chief's server ends), none is raised at.
    assert [oracle.create_trial(x).status for x in ("a", "b")] == ["STOPPED", "STOPPED"]
    assert lines[-1] == "IteratedOneShotOracle stopped: the data cannot be read"
    tuner = OneShotTuner(new_oracle(str(tmp_path / "m"), []), str(tmp_path / "m"), directory=str(tmp_path),
                         project_name="g")
    with pytest.raises(UserError, match="the data cannot be read"):
        tuner.search(verbose=0)


def test_bad_input_is_one_clear_error(tmp_path):
    model_dir = str(tmp_path / "m")
    with pytest.raises(UserError, match=r"--pool_size=1 is smaller than one batch of ghost batches .* use "
                                        r"--pool_size >= 2"):
        new_oracle(model_dir, [], pool_size=1)
    with pytest.raises(UserError, match="--steps_per_iteration=0 is invalid; it must be a positive integer"):
        new_oracle(model_dir, [], steps_per_iteration=0)
    with pytest.raises(UserError, match="--algorithm=evolution cannot work on --space=mobile_chain: it proposes "
                                        "--pool_size x --iterations = 160 distinct architectures and the space has 144"):
        new_oracle(model_dir, [], iterations=40)
    with pytest.raises(UserError, match="--sampler=cyclic cannot sample a candidate pool"):
        new_oracle(model_dir, [], pool_sampler="cyclic")
    with pytest.raises(UserError, match="IteratedOneShotOracle sets max_trials itself"):
        new_oracle(model_dir, [], max_trials=10)
    with pytest.raises(UserError, match="does not exist"):  # no config and no model_dir to read one from
        IteratedOneShotOracle(model_dir, iterations=K, steps_per_iteration=T, pool_size=P)
    with pytest.raises(UserError, match="bn_mode='recalibrate' differs from the oracle's bn_mode='batch'"):
        OneShotTuner(new_oracle(model_dir, []), model_dir, bn_mode="recalibrate", directory=str(tmp_path))
    assert not os.path.exists(model_dir)  # nothing was written


class DyingTuner(OneShotTuner):
    """Killed when it is handed its first trial at `die_at_step`."""

    die_at_step = None

    def run_trial(self, trial, *args, **kwargs):
        if trial.hyperparameters.values[CHECKPOINT_STEP] == self.die_at_step:
            raise KeyboardInterrupt
        return super().run_trial(trial, *args, **kwargs)


def test_resume_between_iterations_does_not_train_again(tmp_path):
    model_dir = str(tmp_path / "m")

    def build(lines, die_at_step=None):
        tuner = DyingTuner(new_oracle(model_dir, lines), model_dir, directory=str(tmp_path), project_name="r")
        tuner.die_at_step = die_at_step
        return tuner

    first = []
    with pytest.raises(KeyboardInterrupt):  # killed on iteration 2's first trial, iteration 2 trained
        build(first, die_at_step=2 * T).search(verbose=0)
    assert sum("training steps" in x for x in first) == 2
    trained = sorted(os.listdir(os.path.join(model_dir, "checkpoints")))
    ckpt_time = os.path.getmtime(os.path.join(model_dir, "checkpoints", f"ckpt-{2 * T}.index"))
    assert ModelDir.open(model_dir).checkpoint_step() == 2 * T

    second = []
    tuner = build(second)
    assert len(tuner.oracle.trials) == P + 1 and tuner.oracle._retry_queue  # the killed trial is retried
    tuner.search(verbose=0)
    assert not [x for x in second if "training steps" in x]  # nothing trained again
    assert sorted(os.listdir(os.path.join(model_dir, "checkpoints"))) == trained
    assert os.path.getmtime(os.path.join(model_dir, "checkpoints", f"ckpt-{2 * T}.index")) == ckpt_time
    trials = list(tuner.oracle.trials.values())
    assert len(trials) == 3 * P and all(t.status == "COMPLETED" for t in trials)
    at_2t = [str(tuner.oracle.architecture(t)) for t in trials if t.hyperparameters.values[CHECKPOINT_STEP] == 2 * T]
    assert len(at_2t) == len(set(at_2t)) == 2 * P  # each pool member scored once at step 2T
    log = read_jsonl(os.path.join(model_dir, nas.LOG_FILE))
    assert [r["kind"] for r in log].count("end") == K and [r["kind"] for r in log].count("score") == 3 * P
    # `tf-oneshot nas` reads the same model_dir as a finished run: nothing to train or score.
    result = nas.run_nas(TrainConfig(**BASE), nas.NasSettings(**SETTINGS), model_dir, log=second.append)
    assert result["iterations"] == K and not result["preempted"]
    assert not [x for x in second if "training steps" in x or "scoring" in x]


PROCESS = textwrap.dedent("""
    import json, os, sys, time
    from tf_oneshot.training.config import TrainConfig
    from tf_oneshot.tuner import OneShotTuner
    from tf_oneshot.tuner.iterated import IteratedOneShotOracle
    model_dir, directory, base, settings = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), json.loads(sys.argv[4])
    oracle = IteratedOneShotOracle(model_dir, config=TrainConfig(**base), log=lambda s: print(s, flush=True),
                                   **settings)
    tuner = OneShotTuner(oracle, model_dir, directory=directory, project_name="dist")
    me = os.environ["KERASTUNER_TUNER_ID"]
    if me != "chief":  # both workers up before the first trial, so both take part
        open(os.path.join(directory, "ready_" + me), "w").close()
        while len([f for f in os.listdir(directory) if f.startswith("ready_")]) < 2:
            time.sleep(0.05)
    tuner.search(verbose=0)
""")


@pytest.mark.slow
def test_distributed_chief_trains_and_two_workers_score(tmp_path):
    # KerasTuner's distributed mode on loopback: the chief only serves the
    # oracle (and trains); the workers score each pool in parallel.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    model_dir = str(tmp_path / "m")
    procs = {}
    for tuner_id in ("chief", "worker0", "worker1"):
        env = {**os.environ, "KERASTUNER_TUNER_ID": tuner_id, "KERASTUNER_ORACLE_IP": "127.0.0.1",
               "KERASTUNER_ORACLE_PORT": str(port), "PYTHONPATH": ROOT, "TF_CPP_MIN_LOG_LEVEL": "3"}
        procs[tuner_id] = subprocess.Popen(
            [sys.executable, "-c", PROCESS, model_dir, str(tmp_path), json.dumps(BASE), json.dumps(SETTINGS)],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    outputs = {}
    try:
        for tuner_id, proc in procs.items():
            outputs[tuner_id], _ = proc.communicate(timeout=300)
            assert proc.returncode == 0, outputs[tuner_id][-3000:]
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
    assert outputs["chief"].count("training steps") == K  # the chief trained, once per iteration
    assert "training steps" not in outputs["worker0"] + outputs["worker1"]
    assert ModelDir.open(model_dir).checkpoint_step() == K * T
    scored = {w: read_jsonl(os.path.join(str(tmp_path), "dist", f"results_{w}.jsonl")) for w in ("worker0", "worker1")}
    lines = scored["worker0"] + scored["worker1"]
    # Both took part (a worker's first trial loads and traces the scorer, so
    # the other takes trials meanwhile); once warm, one may score a whole pool alone.
    assert scored["worker0"] and scored["worker1"]
    assert len(lines) == 3 * P == len({r["trial_id"] for r in lines})
    for i in range(K):  # one step per iteration, over both workers
        assert {r["checkpoint_step"] for r in lines if r["iteration"] == i} == {(i + 1) * T}
    for mine in scored.values():  # each worker moved to the new step once, never back
        steps = [r["checkpoint_step"] for r in mine]
        assert steps == sorted(steps)
    log = read_jsonl(os.path.join(model_dir, nas.LOG_FILE))
    assert sorted(r["trial_id"] for r in log if r["kind"] == "score") == sorted(r["trial_id"] for r in lines)


@pytest.mark.slow
def test_the_oracle_runs_nao_v2s_pool_setting(tmp_path):
    """NAO-V2's code trains each iteration on the newest candidates and rescores the grown pool (issue 18)."""
    model_dir, lines = str(tmp_path / "m"), []
    oracle = new_oracle(model_dir, lines, algorithm="random", new_per_iteration=2, train_on="newest")
    assert oracle.settings.new_per_iteration == 2 and oracle.settings.train_on == "newest"
    OneShotTuner(oracle, model_dir, directory=str(tmp_path), project_name="n").search(verbose=0)
    trials = sorted(oracle.trials.values(), key=lambda t: t.trial_id)
    assert len(trials) == oracle.expected_trials == P + (P + 2)
    assert [t.hyperparameters.values[CHECKPOINT_STEP] for t in trials] == [T] * P + [2 * T] * (P + 2)
    assert [x for x in lines if "training steps" in x] == [
        "iteration 1/2: training steps 0-2 on the newest candidates of 4 (proportional sampling, "
        "independent iterations)",
        "iteration 2/2: training steps 2-4 on the newest candidates of 2 (proportional sampling, "
        "independent iterations)"]


def test_scores_count_what_each_iteration_mode_scores():
    settings = dict(iterations=3, steps_per_iteration=10, pool_size=1000, new_per_iteration=300)
    # Independent: 1000, then 1300, then 1600 rescored; dependent: each candidate once.
    assert nas.NasSettings(**settings).scores == 3900
    assert nas.NasSettings(**settings, iteration_mode="dependent").scores == 1600
