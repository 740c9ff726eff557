"""`tf-oneshot insights` ("Deeper insights", §3.2, Tables 1-3, Figures 2/3, Insight 1) on tiny runs."""

import json
import os

import numpy as np
import pytest

from tf_oneshot.analysis import ground_truth as metrics
from tf_oneshot.analysis import insights
from tf_oneshot.commands import cli
from tf_oneshot.errors import UserError
from tf_oneshot.search_spaces.space_config import build_space
from tf_oneshot.training import trainer
from tf_oneshot.training.config import TrainConfig
from tf_oneshot.training.model_dir import ModelDir

TINY = {"space": "darts64", "filters": 4, "num_cells": 1, "space_args": "stem_filters=4", "batch_size": 16,
        "ghost_batch_size": 8, "train_steps": 6, "checkpoint_every": 2, "log_every": 2, "keep_checkpoints": 3,
        "eval_batches": 1, "learning_rate": 0.05, "order_seed": 0}


def _fake_ground_truth(path, space, seeds=4, seed=0):
    """A ground_truth.json in `tf-oneshot groundtruth`'s format, with made-up per-seed accuracies."""
    children = [str(c) for c in space.enumerate()]
    rng = np.random.default_rng(seed)
    quality = rng.normal(size=len(children))
    accuracy = np.clip(0.8 + 0.05 * quality + 0.01 * rng.normal(size=(seeds, len(children))), 0, 1)
    loss = 1.0 - accuracy + 0.01 * rng.normal(size=(seeds, len(children)))
    rows = [{"architecture": c, "validation_accuracy_mean": float(accuracy[:, j].mean()),
             "validation_loss_mean": float(loss[:, j].mean()), "validation_accuracy": accuracy[:, j].tolist(),
             "validation_loss": loss[:, j].tolist()} for j, c in enumerate(children)]
    summary = {"kind": "tf_oneshot.ground_truth", "space": space.to_config(), "children": rows,
               "noise_ceiling": {"validation_accuracy": metrics.noise_ceiling(accuracy)}}
    os.makedirs(path, exist_ok=True)
    with open(os.path.join(path, "ground_truth.json"), "w") as f:
        json.dump(summary, f)
    return accuracy, loss


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two tiny instances: a cyclic child order, and a shuffled order with two groups of weights."""
    root = tmp_path_factory.mktemp("insights")
    dirs = []
    for name, extra in (("cyclic", {"sampler": "cyclic", "seed": 1}),
                        ("shuffled_m2", {"sampler": "shuffled", "seed": 2, "sharing": "group", "sharing_groups": 2,
                                         "sharing_grouping": "similarity"})):
        model_dir = str(root / name)
        # Group sharing trains each of its m = 2 groups for --train_steps (§4.2): half of them
        # ends at the same step as the other instance, so the two share snapshot steps.
        config = TrainConfig(**TINY, **extra)
        if config.space.sharing == "group":
            config = config.replace(train_steps=TINY["train_steps"] // 2)
        trainer.train(config, model_dir, log=lambda line: None)
        dirs.append(model_dir)
    space = build_space(TrainConfig(**TINY).space, (8, 8, 1), 10)
    accuracy, loss = _fake_ground_truth(str(root / "gt"), space)
    return root, dirs, accuracy, loss


@pytest.mark.slow
def test_insights_command_writes_the_tables_and_figures(runs, capsys):
    root, dirs, accuracy, loss = runs
    assert [len(ModelDir.open(d).checkpoint_paths()) for d in dirs] == [3, 3]  # steps 2, 4, 6 kept
    out = str(root / "out")
    argv = ["tf-oneshot", "insights", f"--ground_truth={root / 'gt'}", f"--model_dirs={','.join(dirs)}",
            "--snapshots=3", "--prune_fraction=0.5", "--validation_examples=64", f"--output_dir={out}",
            "--proxies=synflow,snip"]
    assert cli.main(argv) == 0
    printed = capsys.readouterr().out
    assert "GT-Tau" in printed and "Ground truth" in printed and "pruning q=0.5" in printed
    assert "instance rows scored with --bn_mode=batch" in printed  # App. A.2.2: the mode is reported
    result = json.load(open(os.path.join(out, "insights.json")))
    assert result["bn_mode"] == "batch"
    for name in ("figure3_instances.png", "figure3_snapshots_0.png", "figure3_snapshots_1.png",
                 "gt_tau_progress.png", "insights.txt"):
        assert os.path.getsize(os.path.join(out, name)) > 1000 or name.endswith(".txt")
    truth = metrics.accuracy_then_loss(accuracy.mean(0), loss.mean(0))
    rows = {r["name"].split(" (")[0]: r for r in result["rows"]}
    # The instances row recomputed from the recorded scores.
    last = np.array([result["instances"][k]["scores"][-1] for k in ("cyclic", "shuffled_m2")])
    assert rows["Instances"]["s_tau"] == pytest.approx(metrics.s_tau(last))
    gts = [metrics.gt_tau(s, truth) for s in last]
    assert rows["Instances"]["gt_tau_mean"] == pytest.approx(np.mean(gts))
    assert rows["Instances"]["t1r_mean"] == pytest.approx(np.mean([metrics.top_n_rank(s, truth, 1) for s in last]))
    # Snapshot rows: GT-Tau-Mean-3 over steps 2, 4, 6, and the progress curve they come from.
    progress = result["progress"]["cyclic"]
    assert progress["steps"] == [2, 4, 6]
    snap = rows["Snapshots of cyclic"]
    assert snap["gt_tau_mean_k"] == pytest.approx(np.mean(progress["gt_tau"]))
    assert snap["gt_tau_std_k"] == pytest.approx(np.std(progress["gt_tau"]))
    # Table 3: the instances' GT-Tau-Mean-3 and GT-Tau-Std-3 averaged, and Figure 2's S-Tau per common step.
    both = [rows[f"Snapshots of {k}"] for k in ("cyclic", "shuffled_m2")]
    assert rows["Instances"]["gt_tau_mean_k"] == pytest.approx(np.mean([r["gt_tau_mean_k"] for r in both]))
    assert rows["Instances"]["gt_tau_std_k_std"] == pytest.approx(np.std([r["gt_tau_std_k"] for r in both]))
    assert result["s_tau_progress"]["steps"] == [2, 4, 6]
    assert result["s_tau_progress"]["s_tau"][-1] == pytest.approx(rows["Instances"]["s_tau"])
    assert rows["Ground truth"]["noise_ceiling"] == pytest.approx(metrics.noise_ceiling(accuracy))
    assert rows["Ground truth"]["s_tau"] == pytest.approx(metrics.s_tau(accuracy))
    assert result["ground_truth_order"][0] == result["children"][int(np.argmax(truth))]
    pruned = result["pruning"]["instances"]
    assert pruned["kept"] + len(pruned["dropped"]) == 64
    # The training-free rows beside them (issue 21), recomputed from the space's arithmetic.
    space = ModelDir.open(dirs[0]).space
    params = [space.count(space.parse(c)).params for c in result["children"]]
    assert rows["Params"]["gt_tau_mean"] == pytest.approx(metrics.gt_tau(np.array(params, float), truth))
    assert rows["Params"]["partial_tau"] is None and rows["FLOPs"]["rankings"] == 1
    assert {r.get("baseline") for r in result["rows"]} >= {"params", "flops", "synflow", "snip"}
    assert sum(bool(r.get("best_proxy")) for r in result["rows"]) == 1
    assert all(r["gt_tau_ci"][0] <= r["gt_tau_mean"] <= r["gt_tau_ci"][1] for r in result["rows"] if r["gt_tau_ci"])
    assert rows["Instances"]["partial_tau"] is not None and "tau|params" in printed
    # A second run refuses to overwrite; a run with too many snapshots says how to get them.
    assert cli.main(argv) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert cli.main([*argv[:4], "--snapshots=4", f"--output_dir={root / 'out2'}"]) == 2
    assert "--keep_checkpoints=4" in capsys.readouterr().err


@pytest.mark.slow
def test_a_ground_truth_of_another_network_is_refused(runs, capsys, tmp_path):
    root, dirs, _, _ = runs
    other = build_space(TrainConfig(**{**TINY, "filters": 8}).space, (8, 8, 1), 10)
    _fake_ground_truth(str(tmp_path / "gt"), other)
    code = cli.main(["tf-oneshot", "insights", f"--ground_truth={tmp_path / 'gt'}", f"--model_dirs={dirs[0]}",
                     f"--output_dir={tmp_path / 'out'}"])
    assert code == 2 and "another space or network" in capsys.readouterr().err


def test_pruning_counts_a_hand_made_case():
    # 6 children, ground truth best to worst: c0 > c1 > ... > c5.
    truth = np.array([6.0, 5, 4, 3, 2, 1])
    ranks = np.array([[1, 3, 2, 6, 5, 4],
                      [2, 1, 5, 3, 6, 4],
                      [1, 2, 6, 4, 5, 3]], float)
    # Median ranks: c0 1, c1 2, c2 5, c3 4, c4 5, c5 4. q = 0.5 drops medians > 3: c2, c3, c4, c5.
    pruned = insights.prune(ranks, truth, 0.5, top_n=(1, 3, 5), children=list("abcdef"))
    assert pruned["dropped"] == ["c", "d", "e", "f"] and pruned["kept"] == 2
    assert pruned["top_n_survivors"] == {"1": {"top": 1, "kept": 1}, "3": {"top": 3, "kept": 2},
                                         "5": {"top": 5, "kept": 2}}
    # q = 1/3 drops medians > 4: c2 and c4 only (c3, c5 sit at 4).
    assert insights.prune(ranks, truth, 1 / 3, children=list("abcdef"))["dropped"] == ["c", "e"]
    assert insights.prune(ranks, truth, 0.0)["kept"] == 6
    with pytest.raises(UserError, match="prune_fraction=1"):
        insights.prune(ranks, truth, 1.0)


def test_positions_and_table_rows_by_hand():
    np.testing.assert_array_equal(insights.positions([[0.9, 0.5, 0.7]]), [[1, 3, 2]])
    np.testing.assert_array_equal(insights.positions([[0.5, 0.5, 0.7]]), [[2.5, 2.5, 1]])
    truth = np.array([3.0, 2.0, 1.0])
    row = insights.ranking_row("x", np.array([[3.0, 2, 1], [1.0, 2, 3]]), truth)
    assert row["s_tau"] == pytest.approx(-1.0) and row["gt_tau_mean"] == pytest.approx(0.0)
    assert row["gt_tau_std"] == pytest.approx(1.0) and row["t1r_mean"] == pytest.approx(2.0)
    single = insights.ranking_row("y", np.array([[3.0, 2, 1]]), truth)
    assert single["s_tau"] is None and single["gt_tau_mean"] == pytest.approx(1.0)
    assert single["gt_tau_ci"] == [1.0, 1.0] and single["partial_tau"] is None  # perfect on every resample; no params


def test_baseline_rows_by_hand():
    truth = np.array([4.0, 3.0, 2.0, 1.0])
    # params agree with the truth on 5 of 6 pairs, FLOPs reverse it, the proxy agrees on 4 of 6.
    baselines = {"params": [4.0, 3.0, 1.0, 2.0], "flops": [1.0, 2.0, 3.0, 4.0], "snip": [4.0, 2.0, 3.0, 1.0],
                 "synflow": [1.0, 3.0, 2.0, 4.0]}
    rows = {r["baseline"]: r for r in insights.baseline_rows(baselines, truth)}
    assert rows["params"]["gt_tau_mean"] == pytest.approx(4 / 6) and rows["flops"]["gt_tau_mean"] == pytest.approx(-1)
    assert rows["params"]["partial_tau"] is None and rows["snip"]["best_proxy"]
    assert rows["snip"]["name"] == "Proxy snip (best proxy)" and "best_proxy" not in rows["synflow"]
    # snip: tau_ab = 4/6, tau_ac (snip, params) = 2/6, tau_bc (truth, params) = 4/6.
    expected = (4 / 6 - 2 / 6 * 4 / 6) / np.sqrt((1 - (2 / 6) ** 2) * (1 - (4 / 6) ** 2))
    assert rows["snip"]["partial_tau"] == pytest.approx(expected)
    with pytest.raises(UserError, match="baseline snip scores 3 children"):
        insights.baseline_rows({"snip": [1.0, 2.0, 3.0]}, truth)


def test_pruning_needs_several_rankings():
    gt = insights.GroundTruth(("a", "b", "c"), np.array([0.9, 0.8, 0.7]), np.array([0.1, 0.2, 0.3]),
                              np.array([[0.9, 0.8, 0.7]]), None, None)
    one = insights.Instance("run", (10,), np.array([[0.5, 0.6, 0.7]]))
    assert insights.build_insights(gt, [one])["pruning"] == {}
    with pytest.raises(UserError, match="--snapshots=2 or more"):
        insights.build_insights(gt, [one], prune_fraction=0.5)
    two = insights.Instance("run2", (10,), np.array([[0.7, 0.6, 0.5]]))
    result = insights.build_insights(gt, [one, two], prune_fraction=0.4)
    assert result["pruning"]["instances"]["median_rank"] == {"a": 2.0, "b": 2.0, "c": 2.0}


def test_a_file_that_is_no_ground_truth_is_refused(tmp_path):
    path = tmp_path / "ground_truth.json"
    path.write_text(json.dumps({"children": [{"architecture": "111"}]}))
    with pytest.raises(UserError, match="not a ground-truth summary"):
        insights.read_ground_truth(str(tmp_path))
