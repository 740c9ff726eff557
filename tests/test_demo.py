"""`demo`: the whole pipeline on digits, reduced for speed, and once at full length (slow)."""

import json
import math
import os
import subprocess
import sys

import matplotlib.image
import pytest

from tf_oneshot.analysis import kendall_tau, rank_metrics
from tf_oneshot.analysis.ground_truth import scores_of
from tf_oneshot.analysis.records import join, load_retrain_results, load_search_results
from tf_oneshot.analysis.report import mean_losses
from tf_oneshot.demo import DEMO_TRAIN, DemoConfig, run_demo
from tf_oneshot.errors import UserError
from tf_oneshot.training.config import TrainConfig

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REDUCED = DemoConfig(
    train=TrainConfig(dataset="digits", filters=4, num_cells=2, num_stacks=1, num_blocks=2, batch_size=32,
                      ghost_batch_size=16, train_steps=6, checkpoint_every=6, log_every=3, eval_batches=1),
    num_random=24, num_evolution=8, population_size=4, num_parents=2, num_retrain=3, retrain_steps=3,
    archs_per_pass=4,
)
PLOTS = ["kl_vs_accuracy.png", "oneshot_histogram.png", "oneshot_vs_standalone.png", "search_progress.png"]


def test_demo_training_matches_the_demo_flagfile():
    values = {}
    for line in open(os.path.join(ROOT, "flags", "demo.flags")):
        if line.startswith("--"):
            name, value = line[2:].strip().split("=", 1)
            values[name] = value
    for name, value in values.items():
        expected = DEMO_TRAIN.to_flat()[name]
        assert type(expected)(value) == expected, name


def _check_outputs(out, summary):
    saved = json.load(open(os.path.join(out, "summary.json")))
    assert saved == summary
    for key in ("num_architectures_scored", "kendall_tau", "spearman_rho", "best_architecture", "plots"):
        assert key in saved
    assert saved["plots"] == PLOTS
    for name in PLOTS:
        assert matplotlib.image.imread(os.path.join(out, name)).shape[:2] == (600, 800)
    # The reported correlations are those of the files the run wrote.
    search, _ = load_search_results([os.path.join(out, "search", f) for f in ("random.jsonl", "evolution.jsonl")])
    retrain, _ = load_retrain_results(os.path.join(out, "retrain", "results.jsonl"))
    joined = join(search, retrain)
    # The demo ranks the stand-alone results by their mean validation loss (DemoConfig.rank_by),
    # and reports the tau on accuracy alone beside it.
    accuracy = [j.standalone.validation_mean for j in joined]
    losses = mean_losses(retrain, "validation", [j.architecture for j in joined])
    scores = scores_of(accuracy, [losses[j.architecture] for j in joined], "loss")
    m = rank_metrics([j.oneshot_accuracy for j in joined], scores)
    assert saved["standalone_measure"] == "mean validation loss (lower first)"
    on_accuracy = kendall_tau([j.oneshot_accuracy for j in joined], accuracy)
    assert (saved["kendall_tau_accuracy_only"] is None and math.isnan(on_accuracy)) or \
        saved["kendall_tau_accuracy_only"] == pytest.approx(on_accuracy)
    for key in ("kendall_tau", "spearman_rho", "pairwise_accuracy"):
        value = getattr(m, key)
        assert (saved[key] is None and math.isnan(value)) or saved[key] == pytest.approx(value)
    assert saved["num_architectures_scored"] == len({r["architecture"] for r in search})
    # Beside them the training-free baselines of the same architectures (issue 21).
    params = rank_metrics([j.standalone.params for j in joined], scores)
    value = saved["baselines"]["params"]["kendall_tau"]
    assert (value is None and math.isnan(params.kendall_tau)) or value == pytest.approx(params.kendall_tau)
    assert set(saved["baselines"]) == {"params", "flops", "synflow", "grad_norm", "snip", "jacob_cov"}
    assert "partial_tau_params" in saved
    report = open(os.path.join(out, "report.md")).read()
    assert "Kendall tau" in report and "![" in report
    assert os.path.exists(os.path.join(out, saved["export"]["keras"]))
    # The demo's export loads in a fresh process after `import tf_oneshot` alone and takes
    # [0, 1] images (issue 19: it needed tf_oneshot.layers imported and standardized input).
    code = ("import keras, numpy as np, tf_oneshot; "
            f"model = keras.saving.load_model({os.path.join(out, saved['export']['keras'])!r}, safe_mode=True); "
            "print(model.predict(np.full((3, 8, 8, 1), 0.5, 'float32'), verbose=0).shape)")
    proc = subprocess.run([sys.executable, "-c", code], cwd="/", env={**os.environ, "PYTHONPATH": ROOT},
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and proc.stdout.strip().splitlines()[-1] == "(3, 10)", proc.stderr[-3000:]
    return saved


def test_reduced_demo_runs_the_whole_pipeline_and_refuses_to_overwrite(tmp_path):
    out = str(tmp_path / "demo")
    lines = []
    summary = run_demo(out, REDUCED, log=lines.append)
    saved = _check_outputs(out, summary)
    assert saved["num_random"] == 24 and saved["num_evolution"] == 8 and saved["num_retrained"] == 3
    text = "\n".join(lines)
    for stage in range(1, 6):
        assert f"[{stage}/5]" in text
    assert "tf-oneshot demo: summary" in text and "Kendall tau" in text and "architectures (100.0%)" in text
    assert "baselines, Kendall tau vs stand-alone: params" in text and "tau given params: one-shot" in text

    before = open(os.path.join(out, "summary.json")).read()
    with pytest.raises(UserError, match="holds an earlier run.*new directory, or --overwrite"):
        run_demo(out, REDUCED, log=lines.append)
    assert open(os.path.join(out, "summary.json")).read() == before


@pytest.mark.slow
def test_demo_from_the_command_line(tmp_path):
    """The real `tf-oneshot demo` console path, every stage, at a size the CI budget affords.

    The default sizes (400 one-shot steps, 200 random + 100 evolved, 24 retrained) take 738 CPU
    seconds, too much of the suite's budget: they are timed by hand for the README.
    Here the same command runs with the demo's own size flags turned down.
    """
    out = str(tmp_path / "demo")
    env = {**os.environ, "PYTHONPATH": ROOT}
    small = ["--train_steps=40", "--checkpoint_every=40", "--log_every=20", "--num_random=30", "--num_evolution=12",
             "--population_size=4", "--num_parents=2", "--num_retrain=4", "--retrain_steps=10"]
    proc = subprocess.run([sys.executable, "-m", "tf_oneshot", "demo", f"--output_dir={out}", *small], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.load(open(os.path.join(out, "summary.json")))
    _check_outputs(out, summary)
    assert summary["num_random"] == 30 and summary["num_evolution"] == 12
    assert summary["num_architectures_scored"] >= 30 and summary["num_retrained"] == 4
    for key in ("kendall_tau", "spearman_rho", "pairwise_accuracy"):
        assert summary[key] is None or -1.0 <= summary[key] <= 1.0
    assert "tf-oneshot demo: summary" in proc.stdout and "[5/5]" in proc.stdout
    # A second run into the same directory is refused with one line, exit code 2.
    proc = subprocess.run([sys.executable, "-m", "tf_oneshot", "demo", f"--output_dir={out}"], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith(f"tf-oneshot: error: --output_dir={out} holds an earlier run")


def test_overwrite_clears_only_what_a_demo_wrote(tmp_path):
    from tf_oneshot.demo import PARTS, _clear

    for name in ("oneshot", "search", "retrain"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "file").write_text("old")
    for name in ("summary.json", "report.md", "search_progress.png"):
        (tmp_path / name).write_text("old")
    (tmp_path / "notes.txt").write_text("mine")
    assert "summary.json" in PARTS
    _clear(str(tmp_path))
    assert os.listdir(tmp_path) == ["notes.txt"]


def test_demo_resumes_only_its_own_unfinished_run(tmp_path):
    """A demo's directory is resumed (after SIGTERM, say); other directories are refused."""
    import dataclasses

    from tf_oneshot.demo import RUN_FILE, _prepare_output_dir

    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match="no demo.json of a demo; pass a new directory, or --overwrite"):
        run_demo(str(other), REDUCED, log=lambda s: None)
    assert os.listdir(other) == ["notes.txt"]
    out = str(tmp_path / "demo")
    assert _prepare_output_dir(out, REDUCED, overwrite=False) is False  # a new demo, marked as such
    assert json.load(open(os.path.join(out, RUN_FILE)))["kind"] == "tf_oneshot.demo"
    assert _prepare_output_dir(out, REDUCED, overwrite=False) is True  # its own unfinished run
    changed = dataclasses.replace(REDUCED, num_random=25)
    with pytest.raises(UserError, match="unfinished demo with other settings.*--overwrite"):
        _prepare_output_dir(out, changed, overwrite=False)
    assert _prepare_output_dir(out, changed, overwrite=True) is False


def test_readme_activates_the_environment_dev_installs_into():
    """Issue 19 item 10: after `./dev demo` every `tf-oneshot ...` line failed with "command not found"."""
    dev = open(os.path.join(ROOT, "dev")).read()
    readme = open(os.path.join(ROOT, "README.md")).read()
    install = readme.split("## Install", 1)[1].split("\n## ", 1)[0]
    assert "python3 -m venv .venv" in dev and ".venv/bin/tf-oneshot" in dev
    assert "source .venv/bin/activate" in install and ".venv/bin/tf-oneshot" in install
