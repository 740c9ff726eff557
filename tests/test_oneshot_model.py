"""OneShotModel: one graph for every architecture, ghost batches, masked L2 (Bender et al. 2018, §3.2)."""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from tf_oneshot.layers import GhostBatchNormalization, PathDropout, conv_kernels
from tf_oneshot.search_spaces import CellSpace
from tf_oneshot.search_spaces.bender_cell.model import CellOneShotModel as OneShotModel
from tf_oneshot.search_spaces.check import check_masked_l2

TINY = CellSpace(filters=4, num_cells=2, num_stacks=2, image_shape=(8, 8, 1))
GBS, N = 4, 8


def _images(n=N, seed=0, space=TINY):
    return np.random.default_rng(seed).normal(size=(n, *space.image_shape)).astype("float32")


def _labels(n=N):
    return tf.constant(np.arange(n) % TINY.num_classes, tf.int32)


def _masks(arch, space=TINY):
    return {k: tf.constant(v) for k, v in space.encode(arch).items()}


def _train_step(model, optimizer, sampler, weight_decay=1e-4):
    """A Bender-style step: path dropout per ghost batch, ghost BN, masked L2."""
    seed = tf.constant([7, 0], tf.int64)

    def step(masks, images, labels):
        masks = sampler(masks, step=optimizer.iterations, seed=seed, num_ghosts=images.shape[0] // GBS)
        with tf.GradientTape() as tape:
            logits = model({"images": images, **masks}, training=True)
            loss = tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True))
            loss += weight_decay * model.masked_l2(masks)
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        return loss

    return step


def _model_and_optimizer(space=TINY, **kwargs):
    model = OneShotModel(space, ghost_batch_size=GBS, **kwargs)
    optimizer = keras.optimizers.SGD(0.05, momentum=0.9)
    optimizer.build(model.trainable_variables)
    return model, optimizer


# ------------------------------------------------------------------ harness
def test_shapes_counts_and_config_round_trip():
    model = OneShotModel(TINY, ghost_batch_size=GBS, name="oneshot")
    assert model.count_params() == TINY.count_oneshot().params  # built at construction
    logits = model({"images": _images(), **TINY.all_on_masks()}, training=True)
    assert logits.shape == (N, TINY.num_classes)
    config = model.get_config()
    assert config["space"] == TINY.to_config() and config["ghost_batch_size"] == GBS
    clone = OneShotModel.from_config(json.loads(json.dumps(config)))
    assert clone.space == TINY and clone.get_config() == config
    again = keras.saving.deserialize_keras_object(
        json.loads(json.dumps(keras.saving.serialize_keras_object(model)))
    )
    assert isinstance(again, OneShotModel) and again.count_params() == model.count_params()
    with pytest.raises(ValueError, match="Received: ghost_batch_size=0"):
        OneShotModel(TINY, ghost_batch_size=0)
    with pytest.raises(ValueError, match="batch size 6 is not a multiple of ghost_batch_size=4"):
        model({"images": _images(6), **TINY.all_on_masks()}, training=True)
    three = TINY.encode_batch([TINY.sample(np.random.default_rng(s)) for s in range(3)])
    with pytest.raises(ValueError, match="holds 3 ghost batches but the images make 2"):
        model({"images": _images(), **three}, training=True)


def test_training_step_changes_weights_and_checkpoint_round_trip(tmp_path):
    model, optimizer = _model_and_optimizer()
    step = tf.function(_train_step(model, optimizer, PathDropout(0.05, total_steps=10)))
    before = [w.numpy().copy() for w in model.weights]
    masks = {k: tf.constant(v) for k, v in TINY.all_on_masks().items()}
    for _ in range(2):
        step(masks, _images(), _labels())
    changed = [not np.allclose(b, w.numpy()) for b, w in zip(before, model.weights)]
    assert all(changed)  # every weight, moving statistics included, was used
    path = tf.train.Checkpoint(model=model).save(str(tmp_path / "ckpt"))
    fresh = OneShotModel(TINY, ghost_batch_size=GBS)
    tf.train.Checkpoint(model=fresh).restore(path).assert_existing_objects_matched()
    for a, b in zip(model.weights, fresh.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


# ------------------------------------------------------- one graph for all
def test_one_trace_serves_every_architecture():
    model, optimizer = _model_and_optimizer()
    train = tf.function(_train_step(model, optimizer, PathDropout(0.05, total_steps=50)))
    evaluate = tf.function(lambda masks, images: model({"images": images, **masks}, training=False))
    rng = np.random.default_rng(0)
    images, labels = _images(), _labels()
    for _ in range(50):
        masks = _masks(TINY.sample(rng))
        loss = train(masks, images, labels)
        logits = evaluate(masks, images)
    assert np.isfinite(loss.numpy()) and np.all(np.isfinite(logits.numpy()))
    assert train.experimental_get_tracing_count() == 1
    assert evaluate.experimental_get_tracing_count() == 1


def test_train_step_compiles_with_xla():
    model, optimizer = _model_and_optimizer()
    step = tf.function(_train_step(model, optimizer, PathDropout(0.05, total_steps=10)), jit_compile=True)
    masks = _masks(TINY.sample(np.random.default_rng(1)))
    first = step(masks, _images(), _labels()).numpy()
    second = step(masks, _images(), _labels()).numpy()
    assert np.isfinite(first) and np.isfinite(second) and int(optimizer.iterations.numpy()) == 2


def test_ghost_batches_score_different_architectures_in_one_pass():
    model = OneShotModel(TINY, ghost_batch_size=GBS)
    rng = np.random.default_rng(2)
    archs = [TINY.sample(rng), TINY.sample(rng)]
    images = _images()
    together = model({"images": images, **TINY.encode_batch(archs)}, training=False).numpy()
    for g, arch in enumerate(archs):
        alone = model({"images": images[g * GBS:(g + 1) * GBS], **TINY.encode(arch)}, training=False).numpy()
        np.testing.assert_allclose(together[g * GBS:(g + 1) * GBS], alone, atol=1e-5)


# --------------------------------------------------------------- batch norm
def test_set_bn_mode_switches_every_ghost_batch_norm_and_recalibrates():
    model = OneShotModel(TINY, ghost_batch_size=GBS)
    layers = model.ghost_bn_layers()
    all_gbn = [w for w in model.weights if w.name == "moving_mean"]
    assert len(layers) == len(all_gbn) and all(isinstance(x, GhostBatchNormalization) for x in layers)
    masks = TINY.encode(TINY.sample(np.random.default_rng(3)))
    batches = [_images(seed=s) * (s + 1) for s in range(3)]
    model.set_bn_mode("recalibrate")
    assert {layer.mode for layer in layers} == {"recalibrate"}
    recalibrate = tf.function(lambda x: model({"images": x, **masks}, training=False))
    for batch in batches:
        recalibrate(batch)
    # The stem's conv output feeds the first reduction's batch norm directly
    # in every architecture: its moving mean is the mean of the batch means.
    stem = model.stem[0]
    bn = model.reductions[0][0]
    expected = np.mean([stem(b).numpy().reshape(2, GBS, -1, 4).mean(axis=(1, 2)).mean(0) for b in batches], 0)
    np.testing.assert_allclose(bn.moving_mean.numpy(), expected, rtol=1e-4, atol=1e-6)
    model.set_bn_mode("moving")
    assert model.bn_mode == "moving"
    with pytest.raises(tf.errors.InvalidArgumentError, match="set_bn_mode"):
        recalibrate(batches[0])  # traced under another mode: fails loudly
    moving = tf.function(lambda x: model({"images": x, **masks}, training=False))
    assert moving(_images(seed=9)).shape == (N, TINY.num_classes)
    with pytest.raises(ValueError, match="Received: mode="):
        model.set_bn_mode("ema")


# ------------------------------------------------------------------ masked L2
def test_masked_l2_decays_only_active_paths():
    model = OneShotModel(TINY, ghost_batch_size=GBS)
    a = TINY.parse("01:1/2:0/013:46/04:3")
    b = TINY.parse("1:1/02:0/013:46/04:3")
    masks = TINY.encode_batch([a, b])  # two ghost batches
    cell = model.cells[0]
    sep3 = cell.blocks[0].ops[1].op_layers[2].pointwise_kernel  # on in both ghost batches
    sep5 = cell.blocks[0].ops[2].op_layers[2].pointwise_kernel  # off in both
    conv = cell.blocks[1].input_conv.kernel  # rows: input 0 on in b, input 2 in both, input 1 in none
    classifier = model.classifier.kernel  # always on
    with tf.GradientTape() as tape:
        l2 = model.masked_l2(masks)
    grads = tape.gradient(l2, [sep3, sep5, conv, classifier])
    np.testing.assert_allclose(grads[0], 2 * sep3.numpy(), rtol=1e-6)
    assert np.all(grads[1].numpy() == 0.0)
    c = cell.filters
    w = conv.numpy()
    np.testing.assert_allclose(grads[2][:, :, :c], 2 * w[:, :, :c] * 0.5, rtol=1e-6)
    assert np.all(grads[2].numpy()[:, :, c:2 * c] == 0.0)
    np.testing.assert_allclose(grads[2][:, :, 2 * c:], 2 * w[:, :, 2 * c:], rtol=1e-6)
    np.testing.assert_allclose(grads[3], 2 * classifier.numpy(), rtol=1e-6)
    # With every path on, it is the plain sum of squared kernels.
    everything = model.masked_l2(TINY.all_on_masks()).numpy()
    kernels = [v for v in model.trainable_weights if "kernel" in v.name]
    np.testing.assert_allclose(everything, sum(float(np.sum(k.numpy() ** 2)) for k in kernels), rtol=1e-5)


def test_masked_l2_skips_layers_no_active_path_reaches():
    """Bender et al. §3.1-3.2: a child whose blocks never read the older cell input does not use the reduction of
    that input (its stand-alone model drops it), so L2 must not decay it (issue 19: 136.0 decayed against the
    child's 91.4)."""
    model = OneShotModel(TINY, ghost_batch_size=GBS)
    only_previous = TINY.parse("1:1/12:0/13:46/4:3")
    only_older = TINY.parse("0:1/02:0/03:46/4:3")
    older_side, previous_side = (conv_kernels(unit)[0] for unit in model.reductions[:2])
    with tf.GradientTape() as tape:
        l2 = model.masked_l2(TINY.encode_batch([only_previous, only_previous]))
    grads = tape.gradient(l2, [older_side, previous_side])
    assert grads[0] is None or np.all(grads[0].numpy() == 0.0)
    np.testing.assert_allclose(grads[1], 2 * previous_side.numpy(), rtol=1e-6)
    # Two ghost batches weigh each weight by its share of them: the mean of the two children's terms.
    mixed = model.masked_l2(TINY.encode_batch([only_previous, only_older])).numpy()
    alone = [model.masked_l2(TINY.encode_batch([arch])).numpy() for arch in (only_previous, only_older)]
    np.testing.assert_allclose(mixed, np.mean(alone), rtol=1e-6)
    assert check_masked_l2(TINY, model, [only_previous, only_older], GBS) is None  # equal to each child's


def test_dropped_op_gets_no_decay_in_a_training_step():
    model = OneShotModel(TINY, ghost_batch_size=GBS)
    arch = TINY.parse("01:12/2:0/013:46/04:3")
    masks = TINY.encode_batch([arch, arch])
    masks["op_mask"][:, 0, 2] = 0.0  # path dropout took sep5x5 of block 0 in both ghost batches
    kernel = model.cells[1].blocks[0].ops[2].op_layers[2].pointwise_kernel
    with tf.GradientTape() as tape:
        logits = model({"images": _images(), **masks}, training=True)
        loss = tf.reduce_mean(logits ** 2) + 1e-2 * model.masked_l2(masks)
    grad = tape.gradient(loss, kernel)
    assert grad is None or np.all(grad.numpy() == 0.0)


def test_skipping_dropped_ops_changes_no_output_nor_gradient():
    # The trainer switches op skipping (tf.cond) on only once the dropout ramp
    # makes it pay (trainer.skips_pay): both ways must train the same weights.
    model = OneShotModel(TINY, ghost_batch_size=GBS)
    rng = np.random.default_rng(3)
    masks = {k: np.repeat(v[None], N // GBS, 0) for k, v in TINY.all_on_masks().items()}
    masks["op_mask"][:, :, [1, 4]] = 0.0  # off in every ghost batch: skipped
    masks["op_mask"][0, :, 2] = 0.0  # off in one ghost batch: computed and masked
    inputs = {"images": _images(), **{k: tf.constant(v) for k, v in masks.items()}}
    labels = tf.constant(rng.integers(0, TINY.num_classes, N), tf.int32)
    trainable = list(model.trainable_variables)
    results = []
    for skip in (True, False):

        @tf.function
        def forward_backward(skip=skip):
            with tf.GradientTape() as tape:
                logits = model(inputs, training=True, skip_inactive=skip)
                loss = tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True))
            return logits, tape.gradient(loss, trainable, unconnected_gradients=tf.UnconnectedGradients.ZERO)

        logits, grads = forward_backward()
        results.append((logits.numpy(), [g.numpy() for g in grads]))
    (logits_a, grads_a), (logits_b, grads_b) = results
    np.testing.assert_allclose(logits_a, logits_b, rtol=1e-5, atol=1e-6)
    assert sum(np.abs(g).sum() > 0 for g in grads_a) > 10
    for w, a, b in zip(trainable, grads_a, grads_b):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6, err_msg=w.path)


def test_weighted_sum_of_squares_weighs_a_shared_weight_once_with_the_same_value_and_gradient():
    """Kernels sharing one scalar weight (a candidate path's) are summed first, each by one op and one op back.

    The value and the gradient, 2 * weight * kernel, are those of the
    kernel-by-kernel sum (Bender et al. 2018, §3.2's L2 on active paths).
    """
    from tf_oneshot.search_spaces.supernet import weighted_sum_of_squares

    rng = np.random.default_rng(0)
    kernels = [tf.Variable(rng.normal(size=s).astype(np.float32)) for s in ((3, 3, 2, 4), (1, 1, 4, 4), (2, 5), (3,))]
    shared = tf.constant([[0.5]])
    rows = np.linspace(0.0, 1.0, 4, dtype=np.float32).reshape(1, 1, 1, 4)
    weights = [shared, shared, 1.0, np.float32(0.25), rows]  # numpy weights as well as tensors and numbers
    terms = list(zip(kernels + [kernels[1]], weights))
    with tf.GradientTape() as tape:
        value = weighted_sum_of_squares(terms)
    grads = tape.gradient(value, kernels)
    numeric = [0.5, 0.5, 1.0, 0.25]
    expected = sum(w * np.sum(k.numpy() ** 2) for k, w in zip(kernels, numeric)) + np.sum(rows * kernels[1].numpy() ** 2)
    np.testing.assert_allclose(value, expected, rtol=1e-5)
    for k, (kernel, grad) in enumerate(zip(kernels, grads)):
        want = 2 * numeric[k] * kernel.numpy() + (2 * rows * kernel.numpy() if k == 1 else 0.0)
        np.testing.assert_allclose(grad, want, rtol=1e-5)
    graph = tf.function(lambda: weighted_sum_of_squares(terms)).get_concrete_function().graph
    types = [op.type for op in graph.get_operations()]
    assert types.count("L2Loss") == 4 and types.count("Square") == 1  # the broadcast weight keeps its own product
    unknown = tf.function(lambda w: weighted_sum_of_squares([(kernels[2], w)]), input_signature=[tf.TensorSpec(None)])
    np.testing.assert_allclose(unknown(tf.constant(0.5)), 0.5 * np.sum(kernels[2].numpy() ** 2), rtol=1e-5)
