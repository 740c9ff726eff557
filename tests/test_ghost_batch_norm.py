"""GhostBatchNormalization: the Keras layer harness plus numeric properties (Bender et al. 2018, §3.2)."""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from tf_oneshot.layers import GhostBatchNormalization


def _images(n=8, seed=0, shape=(4, 4, 3)):
    return np.random.default_rng(seed).normal(2.0, 3.0, (n, *shape)).astype("float32")


# ------------------------------------------------------------------ harness
def test_output_shape_and_weights():
    layer = GhostBatchNormalization(4)
    out = layer(_images(8), training=True)
    assert out.shape == (8, 4, 4, 3)
    assert layer.compute_output_shape((8, 4, 4, 3)) == (8, 4, 4, 3)
    assert len(layer.trainable_weights) == 2 and len(layer.non_trainable_weights) == 2
    assert layer.count_params() == 4 * 3


def test_config_and_json_round_trip():
    layer = GhostBatchNormalization(16, momentum=0.9, epsilon=1e-5, eval_mode="moving", name="gbn")
    config = layer.get_config()
    assert {"ghost_batch_size", "momentum", "epsilon", "eval_mode"} <= set(config)
    clone = GhostBatchNormalization.from_config(config)
    assert clone.get_config() == config
    text = json.dumps(keras.saving.serialize_keras_object(layer))
    again = keras.saving.deserialize_keras_object(json.loads(text))
    assert isinstance(again, GhostBatchNormalization) and again.get_config() == config


def test_training_step_changes_weights():
    layer = GhostBatchNormalization(4)
    x = _images(8)
    layer.build(x.shape)
    before = [w.numpy().copy() for w in layer.weights]
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean((layer(x, training=True) - _images(8, seed=5)) ** 2)
    grads = tape.gradient(loss, layer.trainable_weights)
    keras.optimizers.SGD(0.1).apply_gradients(zip(grads, layer.trainable_weights))
    for b, w in zip(before, layer.weights):
        assert not np.allclose(b, w.numpy()), w.name


@pytest.mark.parametrize(
    "kwargs",
    [dict(ghost_batch_size=0), dict(ghost_batch_size=2.0), dict(ghost_batch_size=4, momentum=1.0),
     dict(ghost_batch_size=4, epsilon=0.0), dict(ghost_batch_size=4, eval_mode="ema")],
)
def test_bad_arguments_rejected(kwargs):
    with pytest.raises(ValueError, match="Received"):
        GhostBatchNormalization(**kwargs)


# ---------------------------------------------------------------- properties
def test_single_ghost_batch_equals_keras_batch_norm():
    x = _images(8)
    ghost = GhostBatchNormalization(8, momentum=0.9)
    plain = keras.layers.BatchNormalization(momentum=0.9)
    for step in range(3):  # training output and the moving-statistics updates
        batch = x + step
        np.testing.assert_allclose(ghost(batch, training=True), plain(batch, training=True), atol=1e-5)
    np.testing.assert_allclose(ghost.moving_mean, plain.moving_mean, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(ghost.moving_variance, plain.moving_variance, rtol=1e-6, atol=1e-6)
    ghost.set_mode("moving")
    np.testing.assert_allclose(ghost(x, training=False), plain(x, training=False), atol=1e-5)


def test_each_ghost_batch_gets_its_own_statistics():
    x = np.concatenate([_images(4, seed=1), 10.0 + 5.0 * _images(4, seed=2)])
    out = GhostBatchNormalization(4)(x, training=True).numpy()
    for g in range(2):
        part = out[4 * g: 4 * g + 4]
        np.testing.assert_allclose(part.mean(axis=(0, 1, 2)), 0.0, atol=1e-5)
        np.testing.assert_allclose(part.var(axis=(0, 1, 2)), 1.0, atol=2e-3)
    # Moving statistics follow the mean of the ghost statistics.
    layer = GhostBatchNormalization(4, momentum=0.0)
    layer(x, training=True)
    ghost_means = x.reshape(2, 4, -1, 3).mean(axis=(1, 2))
    ghost_vars = x.reshape(2, 4, -1, 3).var(axis=(1, 2))
    np.testing.assert_allclose(layer.moving_mean, ghost_means.mean(0), rtol=1e-5)
    np.testing.assert_allclose(layer.moving_variance, ghost_vars.mean(0), rtol=1e-5)


def test_batch_mode_uses_ghost_statistics_at_evaluation():
    x = _images(8)
    layer = GhostBatchNormalization(4)
    train = layer(x, training=True)
    moving = (layer.moving_mean.numpy().copy(), layer.moving_variance.numpy().copy())
    np.testing.assert_allclose(layer(x, training=False), train, atol=1e-6)
    # Evaluation in "batch" mode does not touch the moving statistics.
    np.testing.assert_array_equal(layer.moving_mean, moving[0])
    np.testing.assert_array_equal(layer.moving_variance, moving[1])


def test_batch_not_multiple_of_ghost_size_is_rejected_clearly():
    layer = GhostBatchNormalization(4)
    with pytest.raises(ValueError, match=r"batch size 6 .*ghost_batch_size=4"):
        layer(_images(6), training=True)
    with pytest.raises(ValueError, match=r"batch size 6 .*ghost_batch_size=4"):
        layer(_images(6), training=False)  # "batch" mode needs whole ghost batches too
    layer.set_mode("moving")
    assert layer(_images(6), training=False).shape == (6, 4, 4, 3)  # moving statistics do not


def test_unknown_batch_size_is_checked_at_run_time():
    layer = GhostBatchNormalization(4)
    fn = tf.function(lambda x: layer(x, training=True),
                     input_signature=[tf.TensorSpec([None, 4, 4, 3], tf.float32)])
    assert fn(_images(8)).shape == (8, 4, 4, 3)
    with pytest.raises(tf.errors.InvalidArgumentError, match="ghost_batch_size=4"):
        fn(_images(6))


def test_recalibration_is_an_exact_average_inside_tf_function():
    layer = GhostBatchNormalization(4, momentum=0.99)
    batches = [_images(8, seed=s) * (1 + s) + s for s in range(5)]
    layer(batches[0], training=True)
    params = layer.count_params()
    layer.set_mode("recalibrate")
    step = tf.function(lambda x: layer(x, training=False))
    for batch in batches:
        step(batch)
    assert step.experimental_get_tracing_count() == 1
    assert layer.count_params() == params  # the counter is no weight
    means = [b.reshape(2, 4, -1, 3).mean(axis=(1, 2)).mean(0) for b in batches]
    variances = [b.reshape(2, 4, -1, 3).var(axis=(1, 2)).mean(0) for b in batches]
    np.testing.assert_allclose(layer.moving_mean, np.mean(means, 0), rtol=1e-5)
    np.testing.assert_allclose(layer.moving_variance, np.mean(variances, 0), rtol=1e-5)
    # Restarting recalibration forgets the earlier batches.
    layer.set_mode("recalibrate")
    tf.function(lambda x: layer(x, training=False))(batches[2])
    np.testing.assert_allclose(layer.moving_mean, means[2], rtol=1e-5)
    layer.set_mode("moving")
    assert layer.mode == "moving"
    with pytest.raises(ValueError, match="Received: mode="):
        layer.set_mode("train")


def test_counter_is_not_checkpointed(tmp_path):
    layer = GhostBatchNormalization(4)
    layer.build((8, 4, 4, 3))
    path = tf.train.Checkpoint(layer=layer).save(str(tmp_path / "ckpt"))
    names = [name for name, _ in tf.train.list_variables(path)]
    assert not any("recalibration" in name for name in names)
    assert sum("layer/" in name for name in names) == 4


def test_a_frozen_layer_keeps_its_moving_statistics_as_keras_does():
    layer = GhostBatchNormalization(4, eval_mode="moving")
    x = tf.random.stateless_normal((8, 3, 3, 2), seed=[1, 2]) * 3.0 + 1.0
    layer(x, training=True)
    statistics = (layer.moving_mean, layer.moving_variance)
    before = [w.numpy().copy() for w in statistics]
    layer.trainable = False
    out = layer(x, training=True)
    for old, new in zip(before, statistics):
        np.testing.assert_array_equal(old, new.numpy())
    # It normalizes as at evaluation, like keras.layers.BatchNormalization.
    np.testing.assert_allclose(out, layer(x, training=False), rtol=1e-6)
    keras_bn = keras.layers.BatchNormalization()
    keras_bn.build(x.shape)
    keras_bn.trainable = False
    keras_before = keras_bn.moving_mean.numpy().copy()
    keras_bn(x, training=True)
    np.testing.assert_array_equal(keras_before, keras_bn.moving_mean.numpy())
    layer.trainable = True
    layer(x, training=True)
    assert not np.array_equal(before[0], layer.moving_mean.numpy())


@pytest.mark.parametrize("shape", [(4, 4, 3), (5,)])
def test_one_ghost_batch_runs_the_fused_kernel_with_the_composite_statistics(shape):
    """A batch that is one ghost batch (SPOS §3.2's single path per step) is normalized by one fused kernel.

    Its outputs, gradients and moving statistics (biased variance) are those
    of the per-ghost-batch ops that a batch of several ghost batches takes.
    """
    x = tf.constant(_images(8, shape=shape))
    weights = tf.constant(_images(8, seed=1, shape=shape))  # a loss whose gradient is not BN's zero
    results = {}
    for name, gbs, batch in (("fused", 8, x), ("composite", 8, tf.concat([x, x], 0))):
        layer = GhostBatchNormalization(gbs, momentum=0.5)
        layer.build(batch.shape)
        layer.gamma.assign(np.linspace(0.5, 1.5, shape[-1]).astype(np.float32))
        layer.beta.assign(np.linspace(-1.0, 1.0, shape[-1]).astype(np.float32))

        def step(images, layer=layer):
            with tf.GradientTape() as tape:
                tape.watch(images)
                out = layer(images, training=True)
                loss = tf.reduce_sum(out[:8] * weights)
            return out[:8], tape.gradient(loss, [images, layer.gamma, layer.beta])

        traced = tf.function(step)
        ops = {op.type for op in traced.get_concrete_function(batch).graph.get_operations()}
        assert ("FusedBatchNormV3" in ops) == (name == "fused")
        out, grads = traced(batch)
        # The loss reads the first 8 outputs only: the composite's second ghost batch adds no gradient.
        results[name] = [out, grads[0][:8], grads[1], grads[2], layer.moving_mean, layer.moving_variance]
    for fused, composite in zip(results["fused"], results["composite"]):
        np.testing.assert_allclose(fused, composite, rtol=2e-4, atol=2e-4)


def test_a_subclass_that_redefines_the_normalization_keeps_it_for_one_ghost_batch():
    """The fused kernel would bypass a subclass's `_normalize`: such a layer keeps its own ops."""

    class Shifted(GhostBatchNormalization):
        def _normalize(self, x, mean, variance):
            return super()._normalize(x, mean, variance) + 1.0

    x = tf.constant(_images(8))
    layer, base = Shifted(8), GhostBatchNormalization(8)
    graph = tf.function(lambda t: layer(t, training=True)).get_concrete_function(x).graph
    assert "FusedBatchNormV3" not in {op.type for op in graph.get_operations()}
    np.testing.assert_allclose(layer(x, training=True), base(x, training=True) + 1.0, atol=1e-4)


def test_one_ghost_batch_traces_one_kernel_and_one_update_per_statistic():
    """The fused path's statistics go to the moving averages as [C]: no reshape, no mean, one assign each.

    Fewer ops to trace where SPOS trains one path per step (`benchmarks/first_step.py`).
    """
    layer = GhostBatchNormalization(8, momentum=0.5)
    x = tf.constant(_images(8))
    graph = tf.function(lambda t: layer(t, training=True)).get_concrete_function(x).graph
    types = [op.type for op in graph.get_operations()]
    assert types.count("FusedBatchNormV3") == 1 and types.count("AssignVariableOp") == 2
    assert not {"Mean", "Reshape"} & set(types)


@pytest.mark.parametrize("batch", [8, 16])
def test_stateless_call_returns_the_moving_statistics_and_leaves_the_variables(batch):
    """Keras' `stateless_call` (one ghost batch and two): the updates come back, the layer's variables stay."""
    layer, reference = GhostBatchNormalization(8, momentum=0.5), GhostBatchNormalization(8, momentum=0.5)
    x = tf.constant(_images(batch))
    layer.build(x.shape)
    reference.build(x.shape)
    before = [v.numpy() for v in layer.non_trainable_variables]
    out, updated = layer.stateless_call(layer.trainable_variables, layer.non_trainable_variables, x, training=True)
    np.testing.assert_allclose(out, reference(x, training=True), atol=1e-5)
    for new, old, expected in zip(updated, before, reference.non_trainable_variables):
        np.testing.assert_allclose(new, expected, rtol=1e-6)
        assert not np.allclose(new, old)
    for variable, old in zip(layer.non_trainable_variables, before):
        np.testing.assert_array_equal(variable.numpy(), old)


def test_a_subclass_with_its_own_update_reads_the_ghost_layout_after_the_fused_kernel():
    """A subclass's `_update` (a masked update, say) gets [G=1, 1, 1, 1, C] statistics, as for several ghost batches."""
    seen = []

    class Recording(GhostBatchNormalization):
        def _update(self, mean, variance, weight):
            seen.append((tuple(mean.shape), tuple(variance.shape)))
            return super()._update(mean, variance, weight)

    x = tf.constant(_images(8))
    layer, base = Recording(8, momentum=0.5), GhostBatchNormalization(8, momentum=0.5)
    np.testing.assert_allclose(layer(x, training=True), base(x, training=True), atol=1e-5)
    assert seen == [((1, 1, 1, 1, 3), (1, 1, 1, 1, 3))]
    for ours, theirs in ((layer.moving_mean, base.moving_mean), (layer.moving_variance, base.moving_variance)):
        np.testing.assert_allclose(ours, theirs, rtol=1e-6)
