"""benchmarks/ranking_fidelity.py: its arguments, job graph and table, on canned inputs (no training)."""

import importlib.util
import os
import sys

import numpy as np
import pytest

from tf_oneshot.analysis import ground_truth as metrics

pytestmark = pytest.mark.slow  # imports TensorFlow through the analysis modules

_PATH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks",
                     "ranking_fidelity.py")
_spec = importlib.util.spec_from_file_location("ranking_fidelity", _PATH)
rf = importlib.util.module_from_spec(_spec)
sys.modules.setdefault("ranking_fidelity", rf)  # its dataclasses look their module up
_spec.loader.exec_module(rf)


def test_quick_sizes_and_bad_sizes(tmp_path):
    args = rf.parse_args(["--quick", f"--output_dir={tmp_path}", "--finetune_steps=5,0,5"])
    assert (args.seeds, args.instances, args.train_steps) == (rf.QUICK["seeds"], rf.QUICK["instances"],
                                                              rf.QUICK["train_steps"])
    assert args.finetune_steps == [0, 5]
    full = rf.parse_args([f"--output_dir={tmp_path}", "--seeds=7"])
    assert full.seeds == 7 and full.train_steps == rf.FULL["train_steps"]
    with pytest.raises(SystemExit):  # the last 8 checkpoints, 3 apart, do not fit in 10 steps
        rf.parse_args(["--train_steps=10", "--snapshots=8", "--checkpoint_every=3"])
    with pytest.raises(SystemExit):
        rf.parse_args(["--instances=1"])


def test_resuming_refuses_other_sizes(tmp_path):
    rf.check_output_dir(rf.parse_args(["--quick", f"--output_dir={tmp_path}"]))
    rf.check_output_dir(rf.parse_args(["--quick", f"--output_dir={tmp_path}"]))  # same sizes: resumes
    with pytest.raises(SystemExit, match="--seeds=3"):
        rf.check_output_dir(rf.parse_args(["--quick", f"--output_dir={tmp_path}", "--seeds=3"]))


def test_jobs_share_the_setting_and_wait_for_their_inputs(tmp_path):
    args = rf.parse_args(["--quick", f"--output_dir={tmp_path}", "--jobs=3"])
    jobs = rf.build_jobs(args)
    names = [j.name for j in jobs]
    assert len(set(names)) == len(names)
    for i, job in enumerate(jobs):  # every prerequisite exists and comes earlier
        assert all(a in names[:i] for a in job.after), job.name
    common = rf.training_flags(args)
    trained = [j for j in jobs if j.argv[0] == "train" or (j.argv[0] == "groundtruth" and "--shard" in str(j.argv))]
    assert len(trained) == 3 + 2 * args.instances
    for job in trained:  # §3.1: the ground truth and the one-shot runs train with the same setting
        assert all(flag in job.argv for flag in common), job.name
    group = [j for j in jobs if "--sharing=group" in j.argv]
    assert len(group) == args.instances and all("--sharing_grouping=similarity" in j.argv for j in group)
    longer = rf.build_jobs(rf.parse_args(["--quick", f"--output_dir={tmp_path}", "--supernet_steps=60"]))
    steps = {j.name: [a for a in j.argv if a.startswith("--train_steps=")] for j in longer}
    assert all(steps[j.name] == ["--train_steps=60"] for j in longer if j.argv[0] == "train")
    assert steps["groundtruth shard 0/2"] == [f"--train_steps={args.train_steps}"]


def _curve(accuracy, loss, steps):
    return {"steps": steps, "validation_accuracy": accuracy, "validation_loss": loss}


def test_finetune_rows_and_table():
    truth = np.array([0.9, 0.8, 0.7, 0.6, 0.5])
    rng = np.random.default_rng(0)
    curves = []
    for _ in range(3):
        noisy = [list(truth + rng.normal(0, 0.2, 5)), list(truth + rng.normal(0, 0.01, 5))]  # n=0 noisy, n=5 good
        curves.append(_curve(noisy, [[0.1] * 5, [0.1] * 5], [0, 5]))
    rows = rf.finetune_rows(truth, curves, params=[5, 1, 4, 2, 3])
    assert [r["name"].strip() for r in rows] == ["+ fine-tuned n=0", "+ fine-tuned n=5"]
    expected = np.mean([metrics.gt_tau(c["validation_accuracy"][1], truth) for c in curves])
    assert rows[1]["gt_tau_mean"] == pytest.approx(expected)
    assert rows[1]["t1r_mean"] >= 1 and rows[1]["s_tau"] is not None
    ceiling = 0.95
    text = rf.format_table([{"name": "Ground truth, split-half noise ceiling", "gt_tau_mean": ceiling}, *rows],
                           ceiling, 8)
    assert "GT-Tau-Mean-8" in text and "n=5" in text and "tau|params" in text
    assert rows[1]["partial_tau"] is not None and rows[1]["gt_tau_ci"] is not None
    best = max(r["gt_tau_mean"] for r in rows)
    assert f"gap {ceiling - best:+.3f}" in text
    assert ("goal (gap <= 0.1) met" in text) == (ceiling - best <= 0.1)
