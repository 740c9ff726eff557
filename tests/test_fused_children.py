"""Fused children (HFTA, Wang et al. MLSys 2021): K children in one fused network equal K separate runs.

The cheapest case that still covers every op, two seeds and a short group:
the equality test ran in 33 s of CPU (2 min wall at load average 10 on 2
shared cores), most of it the traces of the fused and the masked graphs.
"""

import numpy as np
import pytest

from tf_oneshot.errors import UserError
from tf_oneshot.io_utils import read_jsonl
from tf_oneshot.search_spaces import CellSpace
from tf_oneshot.search_spaces.darts64 import Darts64Space
from tf_oneshot.training.child import FusedChildren, MaskedChild, fuse_count
from tf_oneshot.training.config import TrainConfig
from tf_oneshot.training.groundtruth import run_ground_truth

SPACE = Darts64Space(stem_filters=4, filters=4, num_cells=1, image_shape=(8, 8, 1), num_classes=10)
CONFIG = TrainConfig(dataset="digits", space="darts64", batch_size=32, ghost_batch_size=16, train_steps=3,
                     log_every=3)
# Every op on some edge, two seeds: each child's own weights, masks and data order.
PAIRS = [(SPACE.parse("123"), 0), (SPACE.parse("432"), 1)]


@pytest.mark.slow
def test_fused_children_equal_separate_runs():
    fused = FusedChildren(SPACE, CONFIG, children=2, recalibration_images=64)
    together = fused.run(PAIRS)
    alone = MaskedChild(SPACE, CONFIG, recalibration_images=64)  # one trace for both children
    for k, ((arch, seed), result) in enumerate(zip(PAIRS, together)):
        expected = alone.run(arch, seed)
        # Every weight but the moving statistics, which the fused network also keeps for the ops a child
        # does not use (recalibrated before evaluation: the metrics below check them).
        for variable, got, want in zip(alone.model.weights, fused.child_weights(k), alone.model.get_weights()):
            if "moving" not in variable.path:
                np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5, err_msg=variable.path)
        for key in ("train_loss", "validation_loss", "test_loss", "validation_accuracy", "test_accuracy"):
            np.testing.assert_allclose(result[key], expected[key], rtol=1e-4, atol=1e-6)
    # A smaller group reuses the trace; its child starts afresh, as alone.
    again = fused.run(PAIRS[1:2])
    assert fused.tracing_count() == 1 and len(again) == 1
    np.testing.assert_allclose(again[0]["validation_loss"], together[1]["validation_loss"], rtol=1e-5)


def test_fused_children_reject_a_bad_count_and_a_space_without_a_fused_network():
    with pytest.raises(UserError, match="--fuse_children=0 is invalid"):
        FusedChildren(SPACE, CONFIG, children=0)
    cells = CellSpace(num_blocks=2, filters=4, num_cells=2, num_stacks=1, image_shape=(8, 8, 1), num_classes=10)
    with pytest.raises(UserError, match="has no fused network.*--method=masked"):
        FusedChildren(cells, CONFIG, children=2)


def test_fuse_count_follows_memory():
    assert 1 <= fuse_count(SPACE, CONFIG) <= 16
    assert fuse_count(SPACE, CONFIG, limit=3) <= 3


def test_fused_ground_truth_records_what_the_masked_method_records(tmp_path):
    space = Darts64Space(stem_filters=4, filters=4, num_cells=1, image_shape=(8, 8, 1), num_classes=10).restrict(
        {"edge_01": [3], "edge_02": [3, 4], "edge_12": [4]})
    config = TrainConfig(dataset="digits", space="darts64", batch_size=32, ghost_batch_size=16, train_steps=2,
                         log_every=2)
    quiet = dict(log=lambda s: None, recalibration_images=64, noise_ceiling=False)
    masked = run_ground_truth(space, config, [0, 1], str(tmp_path / "masked"), **quiet)
    fused = run_ground_truth(space, config, [0, 1], str(tmp_path / "fused"), method="fused", fuse_children=3,
                             **quiet)  # a group of 3 pairs, then a group of 1
    assert fused.trained == masked.trained
    for a, b in zip(masked.summary["children"], fused.summary["children"]):
        np.testing.assert_allclose(a["validation_loss"], b["validation_loss"], rtol=1e-4)
    assert {r["method"] for r in read_jsonl(fused.results_path)} == {"fused"}
