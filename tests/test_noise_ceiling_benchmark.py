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
