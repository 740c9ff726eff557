"""The one child trainer: its host loop stops between chunks, and a run of no step measures the initial child."""

import numpy as np
import pytest
import tensorflow as tf

from tf_oneshot.search_spaces import CellSpace
from tf_oneshot.training.child import MaskedChild, StandaloneChild
from tf_oneshot.training.config import TrainConfig
from tf_oneshot.training.preemption import Preempted

SPACE = CellSpace(num_blocks=2, filters=4, num_cells=2, num_stacks=1, image_shape=(8, 8, 1), num_classes=10)
CONFIG = TrainConfig(dataset="digits", batch_size=32, ghost_batch_size=16, train_steps=6, log_every=2)
ARCH = SPACE.parse("01:15/2:3")


def test_stop_is_polled_between_chunks_of_log_every_steps():
    lines = []
    trainer = StandaloneChild(SPACE, CONFIG, stop=lambda: len(lines) == 2, log=lines.append, recalibration_images=0)
    with pytest.raises(Preempted, match="01:15/2:3 seed 3 stopped at step 4"):
        trainer.run(ARCH, seed=3)
    assert [line.split(" loss")[0] for line in lines] == ["  01:15/2:3 seed 3: step 2/6", "  01:15/2:3 seed 3: step 4/6"]


def test_no_step_measures_the_initial_child():
    trainer = StandaloneChild(SPACE, CONFIG, recalibration_images=64)
    metrics = trainer.run(ARCH, seed=3, steps=0)
    assert metrics["train_loss"] is None and metrics["validation_examples"] == 300 and metrics["test_examples"] == 300
    assert int(trainer.step.numpy()) == 0
    trainer.start(ARCH, seed=3)
    assert trainer.train(2) > 0 and int(trainer.step.numpy()) == 2  # the learning rate's step counts the steps


def test_masked_children_of_one_seed_set_tf_seed_once_and_train_as_alone(monkeypatch):
    # Setting TF's global seed clears TF's caches: every later child re-instantiated the traced functions.
    calls = []
    set_seed = tf.random.set_seed
    monkeypatch.setattr(tf.random, "set_seed", lambda seed: (calls.append(seed), set_seed(seed)))
    tf.random.set_seed(99)
    calls.clear()
    other = SPACE.parse("01:24/2:3")
    trainer = MaskedChild(SPACE, CONFIG, recalibration_images=64)
    trainer.run(ARCH, seed=3, steps=2)
    second = trainer.run(other, seed=3, steps=2)
    assert calls == [3]
    alone = MaskedChild(SPACE, CONFIG, recalibration_images=64).run(other, seed=3, steps=2)
    for key in ("train_loss", "validation_loss", "test_loss"):
        np.testing.assert_allclose(second[key], alone[key], rtol=1e-5)
