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


def test_deeper_insights_recipe_plain_momentum_cosine_to_its_end_rate_and_bn_momentum():
    """"Deeper insights" App. A.1: SGD with plain momentum 0.9, cosine 0.025 -> 0.001, its BN momentum."""
    config = TrainConfig(learning_rate=0.025, end_learning_rate=0.001, train_steps=100, nesterov=False,
                         bn_momentum=0.9, dataset="digits", space="darts64")
    step = optimizers.global_step()
    optimizer = optimizers.make_optimizer(config, step)
    assert not optimizer.nesterov
    rate = optimizers.learning_rate_schedule(config)
    assert float(rate(tf.constant(0))) == pytest.approx(0.025)
    assert float(rate(tf.constant(50))) == pytest.approx(0.013)  # halfway between 0.025 and 0.001
    assert float(rate(tf.constant(100))) == pytest.approx(0.001)
    linear = optimizers.learning_rate_schedule(config.replace(lr_schedule="linear"))
    assert float(linear(tf.constant(100))) == pytest.approx(0.001)
    with pytest.raises(UserError, match="--end_learning_rate=0.5 is invalid"):
        TrainConfig(learning_rate=0.1, end_learning_rate=0.5)
    with pytest.raises(UserError, match="--bn_momentum=1.0 is invalid"):
        TrainConfig(bn_momentum=1.0)


def test_bn_momentum_reaches_the_supernet_and_the_stand_alone_child(tmp_path):
    """Every batch norm of the supernet and of a child's model reads --bn_momentum; Keras' 0.99 by default."""
    from tf_oneshot.layers.common import nested_layers
    from tf_oneshot.search_spaces.space_config import build_space
    from tf_oneshot.training import child, data
    from tf_oneshot.training.model_dir import ModelDir

    def momenta(model):
        return {layer.momentum for layer in nested_layers(model) if hasattr(layer, "moving_mean")}

    info = data.dataset_info("digits")
    for value in (0.9, None):
        config = TrainConfig(dataset="digits", space="darts64", **({} if value is None else {"bn_momentum": value}))
        space = build_space(config.space, info.image_shape, info.num_classes, info.stem_stride)
        expected = {0.99 if value is None else value}
        assert momenta(child.build_model(space, space.parse(space.example()), config)) == expected
        run = ModelDir.create(str(tmp_path / f"run{value}"), config, space, write=True)
        assert momenta(run.build_oneshot()) == expected


def _train(optimizer_class, nesterov, strategy, jit_compile=False, steps=4):
    """Weights after `steps` SGD steps of a small network on fixed data, built under `strategy`."""
    keras.utils.set_random_seed(0)
    images = np.random.default_rng(0).normal(size=(16, 6, 6, 2)).astype(np.float32)
    labels = np.arange(16) % 3
    with strategy.scope():
        model = keras.Sequential([keras.Input((6, 6, 2)), keras.layers.Conv2D(4, 3, use_bias=False),
                                  keras.layers.BatchNormalization(), keras.layers.ReLU(),
                                  keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(3)])
        optimizer = optimizer_class(learning_rate=lambda: 0.1, momentum=0.9, nesterov=nesterov)
        optimizer.build(model.trainable_variables)

    def replica_step(x, y):
        with tf.GradientTape() as tape:
            logits = model(x, training=True)
            loss = tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(y, logits, from_logits=True))
        optimizer.apply_gradients(zip(tape.gradient(loss, model.trainable_variables), model.trainable_variables))
        return loss

    step = tf.function(lambda x, y: strategy.run(replica_step, (x, y)), jit_compile=jit_compile)
    for _ in range(steps):
        step(tf.constant(images), tf.constant(labels))
    graph = step.get_concrete_function(tf.constant(images), tf.constant(labels)).graph
    fused = sum(op.type == "ResourceApplyKerasMomentum" for op in graph.get_operations())
    return [w.numpy() for w in model.weights], fused


@pytest.mark.parametrize("nesterov", [True, False])
def test_momentum_sgd_is_keras_sgd_one_kernel_per_variable(nesterov):
    """MomentumSGD computes Keras SGD's update (plain and under MirroredStrategy, whose copies it must find)."""
    default = tf.distribute.get_strategy()
    expected, none = _train(keras.optimizers.SGD, nesterov, default)
    assert none == 0
    for strategy in (default, tf.distribute.MirroredStrategy(["/cpu:0"])):
        got, fused = _train(optimizers.MomentumSGD, nesterov, strategy)
        for a, b in zip(got, expected):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
        assert fused == 5  # one kernel per trainable variable (conv, gamma, beta, dense kernel and bias) ran, not Keras' element-wise update


def test_momentum_sgd_compiles_under_xla():
    """Train steps compile with XLA on TPUs and GPUs: the fused kernel has an XLA lowering."""
    default = tf.distribute.get_strategy()
    expected, _ = _train(keras.optimizers.SGD, True, default, steps=2)
    for a, b in zip(_train(optimizers.MomentumSGD, True, default, jit_compile=True, steps=2)[0], expected):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_momentum_sgd_makes_its_rate_and_momentum_once_per_update_and_again_in_each_trace():
    """One rate read and one momentum constant serve every variable of an update (fewer ops to trace).

    A second trace and an eager update make their own tensors: a tensor of an
    earlier graph would fail there. Each update is Keras SGD's.
    """
    def make(optimizer_class):
        variables = [tf.Variable(np.full(3, float(i), np.float32)) for i in range(1, 5)]
        optimizer = optimizer_class(learning_rate=0.1, momentum=0.9, nesterov=True)  # a rate variable, read to cast
        optimizer.build(variables)
        return variables, optimizer

    ours, expected = make(optimizers.MomentumSGD), make(keras.optimizers.SGD)
    for variables, optimizer in (ours, expected):
        update = tf.function(lambda scale, v=variables, o=optimizer: o.apply_gradients([(scale * x, x) for x in v]))
        update(tf.constant(0.5))
        update(tf.constant([1.0, -1.0, 2.0]))  # another trace
        optimizer.apply_gradients([(tf.ones(3), x) for x in variables])  # eager
    for a, b in zip(*(variables for variables, _ in (ours, expected))):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-6)
    counts = []
    for n in (2, 6):
        variables = [tf.Variable(np.ones(3, np.float32)) for _ in range(n)]
        optimizer = optimizers.MomentumSGD(learning_rate=0.1, momentum=0.9)
        optimizer.build(variables)
        graph = tf.function(lambda v=variables, o=optimizer: o.apply_gradients([(tf.ones(3), x) for x in v])
                            ).get_concrete_function().graph
        types = [op.type for op in graph.get_operations()]
        momenta = [op for op in graph.get_operations() if op.type == "Const" and op.get_attr("dtype") == tf.float32
                   and np.isclose(tf.make_ndarray(op.get_attr("value")), 0.9).all()]
        assert types.count("ResourceApplyKerasMomentum") == n
        counts.append((len(momenta), types.count("ReadVariableOp"), types.count("Cast")))
    assert counts[0] == counts[1] and counts[0][0] == 1  # per update, not per variable
