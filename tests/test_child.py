"""The one child trainer: its host loop stops between chunks, and a run of no step measures the initial child."""

import pytest

from tf_oneshot.search_spaces import CellSpace
from tf_oneshot.training.child import StandaloneChild
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
