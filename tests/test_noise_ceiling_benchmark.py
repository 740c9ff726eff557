"""benchmarks/noise_ceiling.py: its arguments and table on canned per-seed accuracies (no training)."""

import importlib.util
import os

import numpy as np
import pytest

from tf_oneshot.analysis import ground_truth as metrics

pytestmark = pytest.mark.slow  # imports TensorFlow through the analysis modules

_PATH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks", "noise_ceiling.py")
_spec = importlib.util.spec_from_file_location("noise_ceiling", _PATH)
nc = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(nc)


def test_arguments():
    quick = nc.parse_args(["--quick"])
    assert quick.steps == [6, 12] and quick.seeds == 4 and quick.sizes["children"] == 8
    full = nc.parse_args(["--steps=60,240", "--seeds=7"])
    assert full.steps == [60, 240] and full.seeds == 7 and full.sizes["filters"] == 8
    with pytest.raises(SystemExit):
        nc.parse_args(["--seeds=3"])


def test_rows_and_the_cheapest_setting():
    rng = np.random.default_rng(0)
    quality = rng.normal(size=30)
    noisy = quality + rng.normal(scale=2.0, size=(6, 30))  # few steps: noisy seeds
    clean = quality + rng.normal(scale=0.1, size=(6, 30))  # more steps: seeds agree
    rows = {6: {**nc.ceiling_row(noisy, [4, 6]), "seconds": 60.0},
            12: {**nc.ceiling_row(clean, [4, 6]), "seconds": 120.0}}
    assert rows[12]["ceiling"][6] == pytest.approx(metrics.noise_ceiling(clean))
    assert rows[6]["ceiling"][4] == pytest.approx(metrics.noise_ceiling(noisy[:4]))
    text = nc.format_table(rows, [4, 6], 0.8)
    assert "ceiling s=4" in text and "cheapest setting reaching ceiling 0.8: 12 steps x 4 seeds" in text
    assert "no setting in this table reaches ceiling 0.99" in nc.format_table(rows, [4, 6], 0.99)


def test_the_seed_projection_matches_hand_arithmetic_and_simulated_ground_truths():
    # t1 = 0.5: r1 = sin(pi/4) = 0.7071; target 0.8: r = sin(0.4 pi) = 0.9511;
    # h = 0.9511 * 0.2929 / (0.7071 * 0.0489) = 8.06 seeds per half, 16.1 in all.
    assert nc.seeds_for(0.5, 0.8) == pytest.approx(16.11, abs=0.05)
    assert nc.seeds_for(0.9, 0.8) == 2.0 and nc.seeds_for(-0.1, 0.8) == float("inf")
    # Normal seeds around a true quality: the ceiling measured at s seeds reaches what the
    # projection from the single-seed agreement says it should.
    rng = np.random.default_rng(1)
    quality = rng.normal(size=400)
    per_seed = quality + rng.normal(scale=1.2, size=(16, 400))
    row = nc.ceiling_row(per_seed, [16])
    assert nc.seeds_for(row["seed_vs_seed"], row["ceiling"][16]) == pytest.approx(16, abs=2)


def test_rank_by_loss_reads_minus_the_per_seed_losses(tmp_path):
    children = [{"validation_loss": [0.5, 0.7]}, {"validation_loss": [0.4, 0.9]}]
    (tmp_path / "ground_truth.json").write_text(__import__("json").dumps({"children": children}))
    np.testing.assert_allclose(nc.per_seed_scores(str(tmp_path), "loss"), [[-0.5, -0.4], [-0.7, -0.9]])
    assert nc.parse_args(["--rank_by=loss"]).rank_by == "loss"
