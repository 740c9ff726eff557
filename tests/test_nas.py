"""`tf-oneshot nas`: the iterated loop of NAO-WS / NAO-V2 (Luo et al., §4) on a tiny space.

Independent iterations (§4.3, Fig. 2a) against dependent ones (Fig. 2b): the
cosine cycle, the optimizer's slots and the re-scoring are checked one by one.
Then resuming after SIGTERM mid-training and mid-scoring, the one-line errors,
and Eq. 1's sampling frequencies (§4.2) through the trainer's sampler.

The space is the user-defined example (examples/mobile_chain.py, 2 blocks of
width 8): its train step traces in seconds, where the cell space's takes ~25 s
of CPU per iteration. The loop knows no space.
"""

import contextlib
import io
import json
import os
import re
import shutil
import signal

import numpy as np
import pytest
import tensorflow as tf
from scipy import stats

from tf_oneshot.analysis import load_search_results
from tf_oneshot.commands import cli
from tf_oneshot.errors import UserError
from tf_oneshot.io_utils import read_jsonl
from tf_oneshot.search import nas
from tf_oneshot.search_spaces.space_config import build_space
from tf_oneshot.training import trainer
from tf_oneshot.training.config import TrainConfig
from tf_oneshot.training.model_dir import ModelDir

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SPACE = os.path.join(ROOT, "examples", "mobile_chain.py") + ":MobileChainSpace"
BASE = dict(dataset="digits", space=SPACE, space_args="num_blocks=2,width=8", batch_size=32, ghost_batch_size=16,
            checkpoint_every=1, log_every=1, eval_batches=1, learning_rate=0.05, keep_checkpoints=4)
K, T, P = 2, 2, 4
SETTINGS = dict(iterations=K, steps_per_iteration=T, pool_size=P, algorithm="evolution", validation_examples=32)
MOMENTUM = 0.9


def run(model_dir, log=None, **changes):
    lines = []
    settings = nas.NasSettings(**{**SETTINGS, **changes})
    result = nas.run_nas(TrainConfig(**BASE), settings, model_dir, log=log or lines.append)
    return result, lines


def records(model_dir, kind):
    return [r for r in read_jsonl(os.path.join(model_dir, nas.LOG_FILE)) if r["kind"] == kind]


def logged_rates(lines):
    """{step: learning rate} from the trainer's lines (the rate at the step reached)."""
    return {int(m[1]): float(m[2]) for m in (re.search(r"^step (\d+)/\d+: .* lr (\S+) ", x) for x in lines) if m}


@pytest.fixture(scope="module")
def independent(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("nas") / "independent")
    result, lines = run(path)
    return path, result, lines


@pytest.fixture(scope="module")
def dependent(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("nas") / "dependent")
    result, lines = run(path, iteration_mode="dependent")
    return path, result, lines


# ------------------------------------------------------- the three behaviours
def test_cosine_cycle_restarts_each_independent_iteration(independent, dependent):
    cosine = lambda t, n: 0.05 * 0.5 * (1 + np.cos(np.pi * t / n))  # noqa: E731
    # Fig. 2a: one cycle per iteration of T steps, from the full rate again.
    assert logged_rates(independent[2]) == pytest.approx({1: cosine(1, T), 2: 0.0, 3: cosine(1, T), 4: 0.0},
                                                         rel=1e-3, abs=1e-6)
    # Fig. 2b: one cycle over all K*T steps.
    assert logged_rates(dependent[2]) == pytest.approx({s: cosine(s, K * T) for s in range(1, 5)}, rel=1e-3, abs=1e-6)


def _slot_residual(model_dir):
    """Per weight with a slot of its own shape: Δw - (1 + β) m at the first step of iteration 2, and β m before it.

    Keras' Nesterov SGD: m' = β m - lr g, w' = w + β m' - lr g, so
    w' - w - (1 + β) m' = -β m: zero exactly when the slots were reset.
    """
    before = tf.train.load_checkpoint(os.path.join(model_dir, "checkpoints", f"ckpt-{T}"))
    after = tf.train.load_checkpoint(os.path.join(model_dir, "checkpoints", f"ckpt-{T + 1}"))
    shapes = before.get_variable_to_shape_map()
    weights = [k for k in shapes if k.startswith("model/") and "moving_" not in k]
    slots = [k for k in shapes if k.startswith("optimizer/_variables/")]
    out = []
    for w in weights:
        same = [s for s in slots if shapes[s] == shapes[w]]
        if len(same) == 1 and sum(shapes[v] == shapes[w] for v in weights) == 1:
            (s,) = same
            residual = after.get_tensor(w) - before.get_tensor(w) - (1 + MOMENTUM) * after.get_tensor(s)
            out.append((residual, MOMENTUM * before.get_tensor(s)))
    assert len(out) >= 2  # the stem and the classifier at least
    return out


def test_independent_iterations_reset_the_momentum(independent, dependent):
    for residual, old in _slot_residual(independent[0]):
        assert np.abs(old).max() > 1e-5  # there was momentum to clear
        np.testing.assert_allclose(residual, 0.0, atol=1e-6)
    for residual, old in _slot_residual(dependent[0]):
        np.testing.assert_allclose(residual, -old, atol=1e-6)  # Fig. 2b: momentum carried over


def test_independent_iterations_rescore_every_candidate(independent, dependent):
    for path, rescored in ((independent[0], True), (dependent[0], False)):
        scores, ends = records(path, "score"), records(path, "end")
        assert [len(e["new"]) for e in ends] == [P, 0]
        first = {r["architecture"] for r in scores if r["iteration"] == 0}
        second = {r["architecture"]: r for r in scores if r["iteration"] == 1}
        assert {r["step"] for r in scores if r["iteration"] == 0} == {T}
        assert {r["step"] for r in second.values()} == {2 * T}
        assert len(first) == P and set(ends[0]["new"]) <= set(second)
        if rescored:  # NAO-V2 §4.3: old candidates re-evaluated with the current weights
            assert set(second) == first | set(ends[0]["new"])
        else:  # NAO-WS: their iteration-1 scores are reused
            assert set(second) == set(ends[0]["new"])
    # The reported best comes from scores taken at the last checkpoint.
    path, result, _ = independent
    last = {r["architecture"]: r["oneshot_accuracy"] for r in records(path, "score") if r["iteration"] == 1}
    assert result["best"][0][1] == max(last.values()) and len(last) == 2 * P
    # The last pool as search results: retrain and analyze read it (dependent: cached scores say their step).
    for path, steps in ((independent[0], {2 * T}), (dependent[0], {T, 2 * T})):
        final, _ = load_search_results(os.path.join(path, nas.FINAL_FILE))
        assert len(final) == 2 * P and {r["scored_at_step"] for r in final} == steps
        assert {r["checkpoint_step"] for r in final} == {2 * T}


# ------------------------------------------------------------------- resume
def _sigterm_on(pattern, lines):
    def log(line):
        lines.append(line)
        if re.search(pattern, line):
            os.kill(os.getpid(), signal.SIGTERM)

    return log


@pytest.mark.slow
def test_sigterm_mid_training_and_mid_scoring_resumes_to_the_end(tmp_path, independent):
    path = str(tmp_path / "run")
    lines = []
    with contextlib.redirect_stdout(io.StringIO()):
        # Stop inside iteration 2's training (after step 3), then inside its scoring.
        result, _ = run(path, log=_sigterm_on(r"^step 3/", lines))
        assert result["preempted"] and result["iterations"] == 1
        assert ModelDir.read(path) and tf.train.latest_checkpoint(os.path.join(path, "checkpoints"))
        result, _ = run(path, log=_sigterm_on(r"^iteration 2: scoring", lines))
        assert result["preempted"] and result["iterations"] == 1
        result, resumed = run(path)
    assert not result["preempted"] and result["iterations"] == K
    assert any("resuming after 1 finished iteration" in x for x in resumed)
    assert not any(x.startswith("step ") for x in resumed)  # training was not repeated
    scores = records(path, "score")
    keys = [(r["iteration"], r["architecture"]) for r in scores]
    assert len(keys) == len(set(keys)) == P + 2 * P  # nothing scored twice, nothing lost
    # Iteration 1 ran without a kill: the same pool, scores and proposals as the uninterrupted run.
    reference = independent[0]
    assert records(path, "pool") == records(reference, "pool")
    assert records(path, "end")[0] == records(reference, "end")[0]


def test_a_kill_mid_scoring_loses_no_line_and_scores_nothing_twice(tmp_path, independent):
    path = str(tmp_path / "run")
    shutil.copytree(independent[0], path)
    log = os.path.join(path, nas.LOG_FILE)
    lines = open(log).read().splitlines(True)
    # Cut after the third score of iteration 2, with a torn fourth line (a SIGKILL mid-write).
    cut = [i for i, x in enumerate(lines) if '"iteration": 1, "kind": "score"' in x][2]
    open(log, "w").write("".join(lines[: cut + 1]) + lines[cut + 1][:20])
    result, out = run(path)
    assert result == independent[1]
    assert any(f"scoring {2 * P - 3} of {2 * P}" in x for x in out)
    assert read_jsonl(log) == read_jsonl(os.path.join(independent[0], nas.LOG_FILE))


# --------------------------------------------------------------- bad input
def _cli_error(capsys, *flags):
    rc = cli.main(["tf-oneshot", "nas", *flags])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1, err
    return err


def test_bad_settings_end_with_one_line(capsys, tmp_path):
    common = [f"--model_dir={tmp_path / 'x'}", f"--space={SPACE}", "--space_args=num_blocks=2,width=8",
              "--batch_size=32", "--ghost_batch_size=8"]
    assert "--pool_size=3 is smaller than one batch of ghost batches" in _cli_error(
        capsys, *common, "--steps_per_iteration=2", "--pool_size=3")
    assert "--steps_per_iteration=0 is invalid" in _cli_error(capsys, *common, "--steps_per_iteration=0")
    assert "--sampler=path_dropout cannot sample a candidate pool" in _cli_error(
        capsys, *common, "--steps_per_iteration=2", "--sampler=path_dropout")
    assert "--train_steps does not apply" in _cli_error(capsys, *common, "--steps_per_iteration=2",
                                                        "--train_steps=5")
    # 12 architectures in a one-block chain: 8 + 8 distinct proposals cannot fit.
    err = _cli_error(capsys, *common[:2], "--space_args=num_blocks=1,width=8", "--batch_size=32",
                     "--ghost_batch_size=16", "--steps_per_iteration=2", "--pool_size=8", "--iterations=2")
    assert "--algorithm=random cannot work on --space=mobile_chain" in err and "has 12" in err
    assert "--algorithm=nope is unknown" in _cli_error(capsys, *common, "--steps_per_iteration=2",
                                                       "--algorithm=nope")
    assert "--new_per_iteration=2 is smaller than one batch of ghost batches" in _cli_error(
        capsys, *common, "--steps_per_iteration=2", "--new_per_iteration=2", "--train_on=newest")
    assert "--train_on=all is unknown" in _cli_error(capsys, *common, "--steps_per_iteration=2", "--train_on=all")
    assert "evolution's generations are all one size" in _cli_error(
        capsys, *common, "--steps_per_iteration=2", "--algorithm=evolution", "--new_per_iteration=4")
    assert not os.path.exists(tmp_path / "x")  # nothing written for bad input


def test_resuming_with_other_settings_is_refused_and_changes_nothing(independent):
    path = independent[0]
    before = open(os.path.join(path, nas.LOG_FILE)).read()
    for change, flag in ((dict(pool_size=8), "--pool_size=4 (this run asks for 8)"),
                         (dict(iteration_mode="dependent"), "--iteration_mode=independent"),
                         (dict(sampler="uniform"), "--sampler=proportional")):
        with pytest.raises(UserError, match=re.escape(flag)):
            run(path, **change)
    with pytest.raises(UserError, match="--learning_rate=0.05 \\(this run asks for 0.1\\)"):
        nas.run_nas(TrainConfig(**{**BASE, "learning_rate": 0.1}), nas.NasSettings(**SETTINGS), path)
    assert open(os.path.join(path, nas.LOG_FILE)).read() == before


# -------------------------------------------- Eq. 1 through the trainer's sampler
@pytest.mark.parametrize("rule", ["proportional", "uniform"])
def test_pool_sampling_frequencies_follow_model_size(rule):
    """NAO-V2 §4.2, Eq. 1: P(x_i) = size(x_i) / Σ size(x), against uniform; chi-square at fixed seeds."""
    config = TrainConfig(**{**BASE, "sampler": rule})
    from tf_oneshot.training import data

    info = data.dataset_info("digits")
    space = build_space(config.space, info.image_shape, info.num_classes, info.stem_stride)
    archs = sorted(space.enumerate(), key=lambda a: space.count(a).params)
    pool = [archs[0], archs[len(archs) // 2], archs[-1], archs[-2]]  # diverse sizes
    sampler = trainer.make_run_sampler(config, space, pool=pool)
    encoded = [space.encode(a) for a in pool]
    counts = np.zeros(len(pool))
    for step in range(1500):
        masks = sampler.host_masks(step, config.data.num_ghosts)
        for g in range(config.data.num_ghosts):
            hits = [i for i, e in enumerate(encoded) if all(np.array_equal(masks[k][g], v) for k, v in e.items())]
            counts[hits[0]] += 1 / len(hits)  # architectures with equal masks share the count
    params = np.array([space.count(a).params for a in pool], float)
    proportional, uniform = params / params.sum(), np.full(len(pool), 1 / len(pool))
    expected, other = (proportional, uniform) if rule == "proportional" else (uniform, proportional)
    assert stats.chisquare(counts, expected * counts.sum()).pvalue > 1e-3
    assert stats.chisquare(counts, other * counts.sum()).pvalue < 1e-6


def test_cli_runs_an_ablation_row_with_flags_alone(capsys, tmp_path):
    """Table 5's "- proportional sampling" and "- independent training" rows are flags."""
    rc = cli.main(["tf-oneshot", "nas", f"--model_dir={tmp_path / 'run'}", f"--space={SPACE}",
                   "--space_args=num_blocks=2,width=8", "--batch_size=32", "--ghost_batch_size=16",
                   "--iterations=1", "--steps_per_iteration=1", "--pool_size=2", "--algorithm=random",
                   "--sampler=uniform", "--iteration_mode=dependent", "--validation_examples=32"])
    out = capsys.readouterr().out
    assert rc == 0 and "done: 1 iterations" in out and "uniform over 2 candidates" in out
    settings = read_jsonl(str(tmp_path / "run" / nas.LOG_FILE))
    assert [r["kind"] for r in settings] == ["pool", "score", "score", "end"]
    recorded = json.load(open(tmp_path / "run" / nas.SETTINGS_FILE))
    assert recorded["sampler"] == "uniform" and recorded["iteration_mode"] == "dependent"


# ------------------------------------------------- NAO-V2's pool (its code)
def test_nao_v2_pool_trains_the_newest_and_scores_the_whole_pool(tmp_path, monkeypatch):
    """NAO-V2's code: a large initial pool, fewer new candidates per iteration, each iteration
    trained on the newest candidates only; every candidate of the pool is still scored."""
    trained = []
    make = trainer.make_run_sampler

    def recording(config, space, pool=None):
        trained.append(sorted(map(str, pool)))
        return make(config, space, pool=pool)

    monkeypatch.setattr(trainer, "make_run_sampler", recording)
    path = str(tmp_path / "run")
    result, _ = run(path, iterations=3, pool_size=4, new_per_iteration=2, train_on="newest", algorithm="random")
    assert result["iterations"] == 3 and not result["preempted"]
    initial = records(path, "pool")[0]["pool"]
    ends = records(path, "end")
    assert [len(initial), *(len(e["new"]) for e in ends)] == [4, 2, 2, 0]
    assert trained == [sorted(initial), sorted(ends[0]["new"]), sorted(ends[1]["new"])]
    scored = [sorted(r["architecture"] for r in records(path, "score") if r["iteration"] == i) for i in range(3)]
    assert scored == [sorted(initial), sorted(initial + ends[0]["new"]),
                      sorted(initial + ends[0]["new"] + ends[1]["new"])]
    recorded = json.load(open(os.path.join(path, nas.SETTINGS_FILE)))
    assert (recorded["pool_size"], recorded["new_per_iteration"], recorded["train_on"]) == (4, 2, "newest")
    assert len(read_jsonl(os.path.join(path, nas.FINAL_FILE))) == 8


def test_a_run_recorded_before_the_pool_settings_resumes(independent):
    """settings.json written without new_per_iteration / train_on means their defaults."""
    path = independent[0]
    settings_file = os.path.join(path, nas.SETTINGS_FILE)
    recorded = json.load(open(settings_file))
    old = {k: v for k, v in recorded.items() if k not in ("new_per_iteration", "train_on")}
    try:
        json.dump(old, open(settings_file, "w"))
        assert run(path)[0]["iterations"] == K
    finally:
        json.dump(recorded, open(settings_file, "w"))


# ------------------------------------------------------------- the log file
class _Dir:
    """Where a ModelDir puts its files: all the log needs of one."""

    def __init__(self, root):
        self.root = root

    def file(self, *parts):
        return os.path.join(self.root, *parts)


def test_the_log_is_a_record_file_whose_remote_scores_wait_for_the_iterations_end(tmp_path, monkeypatch):
    from tf_oneshot import record_file
    from tf_oneshot.search_spaces import CellSpace

    space = CellSpace(filters=8, num_cells=2, num_stacks=2, num_blocks=3, image_shape=(8, 8, 1))
    archs = [space.sample(np.random.default_rng(0)) for _ in range(3)]
    writes = []
    real = record_file.append_jsonl_lines
    monkeypatch.setattr(record_file, "append_jsonl_lines", lambda path, lines: (writes.append(len(lines)),
                                                                                 real(path, lines)))
    for root in (str(tmp_path), "ram://nas_log"):
        writes.clear()
        log = nas.IterationLog(_Dir(root), space)
        log.append({"kind": "pool", "iteration": 0, "pool": [str(a) for a in archs], "state": {}})
        for a in archs:
            log.append({"kind": "score", "iteration": 0, "architecture": str(a), "oneshot_accuracy": 0.5})
        log.append({"kind": "end", "iteration": 0, "new": [str(archs[0])], "state": {}, "best": [str(a), 0.5]})
        # Locally every line is fsync'd on its own; on GCS (ram:// here) the
        # scores wait for the end of the iteration, written with it.
        assert writes == ([1] * 5 if root == str(tmp_path) else [1, 4])
        again = nas.IterationLog(_Dir(root), space).load()
        assert again.initial["archs"] == archs and again.done == 1 and again.pool(1) == [*archs, archs[0]]
        assert [r["arch"] for r in again.scores] == archs
    path = tmp_path / nas.LOG_FILE
    path.write_text(path.read_text() + '{"kind": "score", "architecture": "9:9"}\n')
    with pytest.raises(UserError, match=r"iterations.jsonl line 6 is not a nas record \(.*\); move the file aside"):
        nas.IterationLog(_Dir(str(tmp_path)), space).load()
