"""`tf-oneshot search` end to end on a tiny trained one-shot model: lines, kill and resume, bad input."""

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf

from tf_oneshot.commands import cli
from tf_oneshot.io_utils import read_jsonl

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def model_dir(oneshot_model_dir):
    return oneshot_model_dir


def search(*flags):
    return cli.main(["tf-oneshot", "search", *flags])


def test_random_search_writes_one_line_per_architecture(model_dir, tmp_path, capsys):
    results = str(tmp_path / "r.jsonl")
    assert search(f"--model_dir={model_dir}", f"--results={results}", "--num_architectures=6",
                  "--archs_per_pass=3", "--kl", "--seed=4", "--strategy=mirrored") == 0
    out = capsys.readouterr().out
    assert "arch/s, ETA" in out and "done: 6 architectures (6 scored now" in out
    assert "3 architecture(s) per pass on each of 1 replica(s) (Mirrored" in out
    lines = read_jsonl(results)
    assert len(lines) == 6 == len({r["architecture"] for r in lines})
    for r in lines:
        assert 0.0 <= r["oneshot_accuracy"] <= 1.0 and r["loss"] > 0 and r["kl"] >= 0
        assert r["params"] > 0 and r["flops"] > 0 and r["seconds"] > 0
        assert r["generation"] is None and r["space"]["space"] == "bender_cell"
        assert r["checkpoint_step"] == 2 and r["bn_mode"] == "batch" and r["algorithm"] == "random"
    # TensorBoard: one score and the best so far per line of the results file (issue 19 item 10)
    events = os.path.join(model_dir, "search_random")
    best = [float(tf.make_ndarray(v.tensor)) for f in sorted(os.listdir(events))
            for e in tf.compat.v1.train.summary_iterator(os.path.join(events, f))
            for v in e.summary.value if v.tag == "search/best_so_far"]
    assert best[-6:] == sorted(best[-6:]) and best[-1] == pytest.approx(max(r["oneshot_accuracy"] for r in lines))


def test_evolution_with_recalibration_and_constraints(model_dir, tmp_path):
    from tf_oneshot.search import cost_bounds
    from tf_oneshot.training.model_dir import ModelDir

    space = ModelDir.open(model_dir).space
    lo, hi = cost_bounds(space)["flops"]
    limit = lo + (hi - lo) // 2
    results = str(tmp_path / "e.jsonl")
    assert search(f"--model_dir={model_dir}", f"--results={results}", "--algorithm=evolution",
                  "--num_architectures=8", "--population_size=4", "--num_parents=2",
                  "--bn_mode=recalibrate", "--recalibration_images=32", f"--max_flops={limit}") == 0
    lines = read_jsonl(results)
    assert [r["generation"] for r in lines] == [0, 0, 0, 0, 1, 1, 1, 1]
    assert all(r["flops"] <= limit for r in lines) and len({r["architecture"] for r in lines}) == 8
    assert all(r["bn_mode"] == "recalibrate" for r in lines)


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_killed_search_resumes_without_losing_or_repeating(model_dir, tmp_path, capsys, sig):
    results = str(tmp_path / "k.jsonl")
    flags = [f"--model_dir={model_dir}", f"--results={results}", "--num_architectures=30", "--archs_per_pass=2"]
    env = {**os.environ, "PYTHONPATH": ROOT, "TF_CPP_MIN_LOG_LEVEL": "3"}
    proc = subprocess.Popen([sys.executable, "-m", "tf_oneshot", "search", *flags], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 240
        while time.time() < deadline and proc.poll() is None:
            if os.path.exists(results) and len(read_jsonl(results)) >= 4:
                break
            time.sleep(0.05)
        os.kill(proc.pid, sig)  # at an arbitrary moment, maybe mid-line
        signalled = time.time()
    finally:
        _, err = proc.communicate()
    if sig == signal.SIGTERM:  # preemption: a clean exit that says how to go on
        assert proc.returncode == 143, err[-2000:]
        assert time.time() - signalled < 20
        assert err.strip().splitlines()[-1] == "tf-oneshot search: SIGTERM received; rerun the same command to resume."
    else:
        assert proc.returncode == -signal.SIGKILL
    before = open(results).read()
    finished = before[: before.rfind("\n") + 1]
    assert 4 <= len(read_jsonl(results)) < 30
    assert search(*flags) == 0
    assert "resuming from" in capsys.readouterr().out
    after = open(results).read()
    assert after.startswith(finished)  # no finished line lost or rewritten
    lines = read_jsonl(results)
    assert len(lines) == 30 == len({r["architecture"] for r in lines})


def test_bad_input_ends_with_one_clear_line(model_dir, tmp_path, capsys):
    def error(*flags):
        capsys.readouterr()
        tic = time.perf_counter()
        assert search(*flags) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and err.startswith("tf-oneshot: error: ")
        assert time.perf_counter() - tic < 10  # found before any model is loaded
        return err

    assert "does not exist" in error(f"--model_dir={tmp_path / 'missing'}")
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "config.json").write_text('{"kind": "something else"}')
    assert "not a tf_oneshot one-shot model_dir" in error(f"--model_dir={foreign}")
    assert "--algorithm=annealing is unknown" in error(f"--model_dir={model_dir}", "--algorithm=annealing")
    assert "--strategy=multi_worker_mirrored is for training" in error(
        f"--model_dir={model_dir}", "--strategy=multi_worker_mirrored")
    assert "no architecture of this search space meets params <= 10" in error(
        f"--model_dir={model_dir}", "--max_params=10")
    results = tmp_path / "bad.jsonl"
    results.write_text('{"architecture": "01:9", "oneshot_accuracy": 0.5, "loss": 1, "params": 1, "flops": 1}\n')
    assert "line 1: malformed architecture '01:9'" in error(f"--model_dir={model_dir}", f"--results={results}")
    assert results.read_text().count("\n") == 1


def test_given_architectures_score_what_the_tuner_scores(model_dir, tmp_path, capsys):
    """`search --architectures` checks candidates with the tuner's number for them (§3.3)."""
    from tf_oneshot.search.scorer import OneShotScorer
    from tf_oneshot.training.model_dir import ModelDir

    space = ModelDir.open(model_dir).space
    rng = np.random.default_rng(3)
    archs = [str(space.sample(rng)) for _ in range(3)]
    listed = tmp_path / "archs.txt"
    listed.write_text(f"# candidates\n{archs[2]}\n\n{archs[0]}\n")
    results = str(tmp_path / "given.jsonl")
    assert search(f"--model_dir={model_dir}", f"--results={results}", f"--architectures={archs[0]},{archs[1]}",
                  f"--architectures_file={listed}") == 0
    out = capsys.readouterr().out
    assert "3 given architecture(s)" in out and "1 architecture(s) per pass" in out
    lines = read_jsonl(results)
    assert [r["architecture"] for r in lines] == [archs[0], archs[1], archs[2]]  # in order, once each
    assert all(r["algorithm"] == "given" and r["generation"] is None for r in lines)
    # OneShotTuner's scorer: archs_per_pass=1, batch statistics, no KL.
    tuner_scorer = OneShotScorer.from_model_dir(model_dir, bn_mode="batch", kl=False, archs_per_pass=1)
    for r in lines:
        expected = tuner_scorer.score([space.parse(r["architecture"])])[0]
        assert r["oneshot_accuracy"] == expected["oneshot_accuracy"]
        assert r["loss"] == pytest.approx(expected["loss"], rel=1e-6)
        cost = space.count(space.parse(r["architecture"]))
        assert (r["params"], r["flops"]) == (cost.params, cost.flops)
    # Asking again reuses the lines: nothing is scored twice.
    assert search(f"--model_dir={model_dir}", f"--results={results}", f"--architectures={archs[1]}") == 0
    assert "0 scored now, 1 from" in capsys.readouterr().out and len(read_jsonl(results)) == 3


def test_bad_given_architecture_is_one_line_naming_it(model_dir, tmp_path, capsys):
    from tf_oneshot.training.model_dir import ModelDir

    good = ModelDir.open(model_dir).space.example()

    def error(*flags):
        capsys.readouterr()
        assert search(f"--model_dir={model_dir}", *flags) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("tf-oneshot: error: "), err
        return err[0]

    assert "--architectures: '01:9' does not parse" in error(f"--architectures={good},01:9")
    listed = tmp_path / "archs.txt"
    listed.write_text(f"{good}\nnot-an-arch\n")
    assert f"--architectures_file={listed} line 2: 'not-an-arch' does not parse" in error(
        f"--architectures_file={listed}")
    assert "does not exist" in error(f"--architectures_file={tmp_path / 'missing.txt'}")
    assert "exclude one another" in error(f"--architectures={good}", "--algorithm=evolution")
    assert "do not apply with --architectures" in error(f"--architectures={good}", "--max_params=10")
    assert not os.path.exists(os.path.join(model_dir, "search", "given.jsonl"))


def test_the_library_entry_writes_the_lines_the_command_writes(model_dir, tmp_path, capsys):
    """`tf_oneshot.search(...)` is the search the command runs; a scorer can be shared between searches."""
    import tf_oneshot
    from tf_oneshot.search.scorer import OneShotScorer

    def lines(path):
        return [{k: v for k, v in r.items() if k != "seconds"} for r in read_jsonl(path)]

    command = str(tmp_path / "command.jsonl")
    assert search(f"--model_dir={model_dir}", f"--results={command}", "--algorithm=evolution", "--seed=2",
                  "--num_architectures=6", "--population_size=3", "--num_parents=2", "--archs_per_pass=3", "--kl") == 0
    library = str(tmp_path / "library.jsonl")
    logged = []
    summary = tf_oneshot.search(model_dir, "evolution", 6, results=library, seed=2, archs_per_pass=3, kl=True,
                                population_size=3, num_parents=2, log=logged.append)
    assert summary["total"] == summary["scored"] == 6 and summary["results"] == library
    assert [r["architecture"] for r in summary["records"]] == [r["architecture"] for r in read_jsonl(library)]
    assert lines(library) == lines(command)
    assert "evolution search over bender_cell (checkpoint step 2)" in logged[0]
    # A scorer built once serves several searches with the lines each would write alone.
    scorer = OneShotScorer.from_model_dir(model_dir, kl=True, archs_per_pass=3, seed=2)
    shared = str(tmp_path / "shared.jsonl")
    tf_oneshot.search.run(model_dir, "evolution", 6, results=shared, seed=2, scorer=scorer, population_size=3,
                          num_parents=2, log=logged.append)
    assert lines(shared) == lines(command)
    with pytest.raises(tf_oneshot.UserError, match="--mutation_prob=2.0 is invalid for --algorithm=evolution"):
        tf_oneshot.search(model_dir, "evolution", 6, results=shared, scorer=scorer, mutation_prob=2.0)
