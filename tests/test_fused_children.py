"""Fused children (HFTA, Wang et al. MLSys 2021): K children in one traced step equal K separate runs."""

import numpy as np
import pytest

from tf_oneshot.errors import UserError
from tf_oneshot.search_spaces import CellSpace
from tf_oneshot.training.child import FusedChildren, MaskedChild
from tf_oneshot.training.config import TrainConfig

SPACE = CellSpace(num_blocks=2, filters=4, num_cells=2, num_stacks=1, image_shape=(8, 8, 1), num_classes=10)
CONFIG = TrainConfig(dataset="digits", batch_size=32, ghost_batch_size=16, train_steps=3, log_every=3)
PAIRS = [(SPACE.parse("01:15/2:3"), 3), (SPACE.parse("01:24/2:3"), 5)]


def test_fused_children_equal_separate_runs():
    fused = FusedChildren(SPACE, CONFIG, children=2, recalibration_images=64)
    together = fused.run(PAIRS)
    weights = [slot.model.get_weights() for slot in fused.slots]
    for (arch, seed), result, fused_weights in zip(PAIRS, together, weights):
        alone = MaskedChild(SPACE, CONFIG, recalibration_images=64)
        expected = alone.run(arch, seed)
        for got, want in zip(fused_weights, alone.model.get_weights()):
            np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
        for key in ("train_loss", "validation_loss", "test_loss", "validation_accuracy", "test_accuracy"):
            np.testing.assert_allclose(result[key], expected[key], rtol=1e-4, atol=1e-6)
    # A smaller group reuses the trace; its child starts afresh, as alone.
    again = fused.run(PAIRS[1:])
    assert fused.tracing_count() == 1 and len(again) == 1
    np.testing.assert_allclose(again[0]["validation_loss"], together[1]["validation_loss"], rtol=1e-5)


def test_fused_children_reject_a_bad_count():
    with pytest.raises(UserError, match="--fuse_children=0 is invalid"):
        FusedChildren(SPACE, CONFIG, children=0)
