"""The recipe the supernet and every child share: SGD with Nesterov momentum, its decayed rate, the batch layout."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from tf_oneshot.errors import UserError
from tf_oneshot.training import optimizers, strategy_loop
from tf_oneshot.training.config import TrainConfig


@pytest.mark.parametrize("schedule,halfway", [("cosine", 0.5), ("linear", 0.5), ("constant", 1.0)])
def test_learning_rate_schedules_decay_to_zero_at_the_last_step(schedule, halfway):
    """Bender et al. §4.1 (cosine); ShuffleNetV2, whose settings SPOS §4 trains with (linear)."""
    config = TrainConfig(learning_rate=0.4, train_steps=100, lr_schedule=schedule)
    rate = optimizers.learning_rate_schedule(config)
    got = [float(rate(tf.constant(s))) for s in (0, 25, 50, 100)]
    end = 0.4 if schedule == "constant" else 0.0
    assert got[0] == pytest.approx(0.4) and got[2] == pytest.approx(0.4 * halfway) and got[3] == pytest.approx(end)
    if schedule == "linear":
        assert got[1] == pytest.approx(0.3)  # a straight line, where cosine would give 0.341
    # The optimizer reads its rate from the step variable (a child's or the supernet's global step).
    step = optimizers.global_step()
    optimizer = optimizers.make_optimizer(config, step)
    step.assign(50)
    assert float(optimizer.learning_rate) == pytest.approx(0.4 * halfway)
    assert optimizer.nesterov and optimizer.momentum == config.optimizer.momentum
    # An independent segment (NAO-V2 §4.3) restarts the decay at its own start.
    segment = optimizers.Segment(start=50, end=100, independent=True)
    assert float(optimizers.learning_rate_schedule(config, segment)(tf.constant(75))) == pytest.approx(0.4 * halfway)


def test_reset_slots_clears_momentum_and_keeps_the_loss_scale():
    """NAO-V2 §4.3: "the optimizer is also reset and the momentum is cleared"."""
    config = TrainConfig(learning_rate=0.1, train_steps=10)
    variable = keras.Variable(np.ones(3, np.float32))
    optimizer = optimizers.make_optimizer(config, optimizers.global_step(), loss_scaling=True)
    optimizer.build([variable])
    optimizer.apply_gradients([(tf.ones(3), variable)])
    scale = float(optimizer.dynamic_scale.numpy())
    assert np.any(optimizer.inner_optimizer.momentums[0].numpy() != 0)
    optimizers.reset_slots(optimizer)
    assert np.all(optimizer.inner_optimizer.momentums[0].numpy() == 0)
    assert float(optimizer.dynamic_scale.numpy()) == scale


def test_a_batch_that_does_not_split_into_ghost_batches_per_replica_is_one_line():
    strategy = tf.distribute.get_strategy()
    assert strategy_loop.per_replica_batch(strategy, 64, 16) == 64
    with pytest.raises(UserError, match="--batch_size=48 over 1 replicas gives 48 examples per replica, which must "
                                        "be a multiple of --ghost_batch_size=32"):
        strategy_loop.per_replica_batch(strategy, 48, 32)
