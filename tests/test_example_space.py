"""The user-defined example space (examples/mobile_chain.py), loaded from its file as a user would."""

import dataclasses
import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from tf_oneshot import UserError, get_space, space_from_config
from tf_oneshot.layers import GhostBatchNormalization

SPEC = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples",
                    "mobile_chain.py") + ":MobileChainSpace"
GBS = 4


@pytest.fixture(scope="module")
def space():
    return get_space(SPEC)


@pytest.fixture(scope="module")
def oneshot(space):
    model = space.build_oneshot(GBS)
    rng = np.random.default_rng(7)
    for layer in model.layers:  # batch norms as if trained: beta != 0 shows a wrongly placed mask
        if isinstance(layer, GhostBatchNormalization):
            layer.set_weights([rng.uniform(0.5, 1.5, w.shape) if i == 0 else rng.normal(0.0, 0.5, w.shape)
                               for i, w in enumerate(layer.get_weights()[:2])] + layer.get_weights()[2:])
    return model


def _images(space, n, seed=0):
    return np.random.default_rng(seed).normal(size=(n, *space.image_shape)).astype("float32")


def test_size_decisions_and_validation(space):
    assert space.name == "mobile_chain" and space.default_sampler == "uniform"
    assert space.size() == 12**4  # skipped blocks' kernel and expansion still count
    assert [d.name for d in space.decisions()[:3]] == ["block0_kernel", "block0_expansion", "block0_skip"]
    assert space.mask_shapes()["block2_kernel"] == (3,)
    with pytest.raises(UserError, match="width=0 is invalid"):
        get_space(SPEC, width=0)
    with pytest.raises(UserError, match="block1_kernel: '4' is not one of 3, 5, 7"):
        space.parse("3/6/no/4/3/no/3/3/no/3/3/no")


def test_string_json_and_config_round_trips(space):
    rng = np.random.default_rng(0)
    for _ in range(100):
        arch = space.sample(rng)
        assert space.parse(str(arch)) == arch
        assert space.from_json(json.loads(json.dumps(space.to_json(arch)))) == arch
        assert space.from_hyperparameter_values(space.hyperparameter_values(arch)) == arch
    config = json.loads(json.dumps(space.to_config()))
    assert config["class"] == os.path.abspath(SPEC.rsplit(":", 1)[0]) + ":MobileChainSpace"
    assert space_from_config(config) == space
    wide = get_space(SPEC, width=8, stem_stride=2, image_shape=(9, 9, 3))
    assert space_from_config(json.loads(json.dumps(wide.to_config()))) == wide


ARCHS = ["3/6/no/5/3/no/7/6/no/3/3/no", "7/3/no/7/6/yes/5/6/no/3/3/yes", "3/3/yes/3/3/yes/3/3/yes/3/3/yes"]


def _macs(model, pixels=None):
    """Multiply-adds from Keras' own shapes: every kernel entry once per output pixel."""
    total = 0
    for layer in model.layers:
        if isinstance(layer, (keras.layers.Conv2D, keras.layers.DepthwiseConv2D)):
            total += int(np.prod(layer.kernel.shape)) * (pixels or int(np.prod(layer.output.shape[1:3])))
        elif isinstance(layer, keras.layers.Dense):
            total += int(np.prod(layer.kernel.shape))
    return total


def test_counts_equal_keras_count_params(space, oneshot):
    assert oneshot.count_params() == space.count_oneshot().params
    assert _macs(oneshot, pixels=8 * 8) == space.count_oneshot().flops
    for text in ARCHS:
        arch = space.parse(text)
        for gbs in (None, GBS):
            model = space.build_standalone(arch, gbs)
            assert (model.count_params(), _macs(model)) == dataclasses.astuple(space.count(arch))[:2], text
    for fields, text in [(dict(width=8, stem_stride=2, image_shape=(9, 9, 3), num_blocks=2), "5/3/no/7/6/no"),
                         (dict(stem_stride=4, image_shape=(10, 10, 3), num_blocks=1), "3/6/no")]:
        other = get_space(SPEC, **fields)
        model = other.build_standalone(other.parse(text))
        assert (model.count_params(), _macs(model)) == dataclasses.astuple(other.count(other.parse(text)))[:2]
        assert other.build_oneshot(GBS).count_params() == other.count_oneshot().params
    # Multiply-adds: a 7x7 instead of a 3x3 depthwise adds (49 - 9) * 6 * width per pixel.
    small, big = (space.count(space.parse(t)).flops for t in ("3/6/no/3/3/no/3/3/no/3/3/no",
                                                              "7/6/no/3/3/no/3/3/no/3/3/no"))
    assert big - small == 8 * 8 * 40 * 6 * space.width
    least, most = (space.cost_bounds()["flops"])
    assert least == space.count(space.parse(ARCHS[2])).flops < most < space.count_oneshot().flops
    clone = type(oneshot).from_config(json.loads(json.dumps(oneshot.get_config())))
    assert clone.space == space and clone.count_params() == oneshot.count_params()
    assert keras.saving.get_registered_name(type(oneshot)) == "examples>MobileChainOneShot"


def _standalone_like(space, oneshot, arch):
    model = space.build_standalone(arch, GBS)
    space.inherit_weights(oneshot, model, arch)
    for layer in model.layers:
        if isinstance(layer, GhostBatchNormalization):
            layer.set_mode("batch")  # Bender et al. 2018, §3.2: batch statistics at evaluation
    return model


@pytest.mark.parametrize("text", ARCHS)
def test_oneshot_with_masks_equals_standalone_child(space, oneshot, text):
    arch = space.parse(text)
    standalone = _standalone_like(space, oneshot, arch)
    images = _images(space, 8, seed=1)
    inputs = {"images": images, **space.encode(arch)}
    expected = standalone(images, training=False)
    np.testing.assert_allclose(oneshot(inputs, training=False), expected, atol=1e-5)
    np.testing.assert_allclose(oneshot(inputs, training=False, skip_inactive=False), expected, atol=1e-5)


def test_ghost_batches_carry_different_architectures(space, oneshot):
    a, b = space.parse(ARCHS[0]), space.parse(ARCHS[1])
    images = _images(space, 2 * GBS, seed=2)
    logits = oneshot({"images": images, **space.encode_batch([a, b])}, training=False)
    for k, arch in enumerate((a, b)):
        part = images[k * GBS:(k + 1) * GBS]
        np.testing.assert_allclose(logits[k * GBS:(k + 1) * GBS],
                                   _standalone_like(space, oneshot, arch)(part, training=False), atol=1e-5)


def test_masked_l2_decays_only_what_ghost_batches_use(space, oneshot):
    # Block 0: kernel 5 in both ghost batches, expansion 3 in one and 6 in the other.
    # Block 1: skipped in both. Block 2: skipped in one.
    a = space.parse("5/3/no/3/6/yes/7/6/no/3/3/no")
    b = space.parse("5/6/no/5/6/yes/7/6/yes/3/3/no")
    dw3, dw5, dw7 = (oneshot.get_layer(f"block0_dw{k}").kernel for k in (3, 5, 7))
    expand0 = oneshot.get_layer("block0_expand_conv").kernel
    project1 = oneshot.get_layer("block1_project_conv").kernel
    dw7_2 = oneshot.get_layer("block2_dw7").kernel
    variables = [dw3, dw5, dw7, expand0, project1, dw7_2, oneshot.get_layer("classifier").kernel]
    with tf.GradientTape() as tape:
        l2 = oneshot.masked_l2(space.encode_batch([a, b]))
    grads = [g.numpy() for g in tape.gradient(l2, variables)]
    w = [v.numpy() for v in variables]
    c3 = 3 * space.width
    assert not grads[0].any() and not grads[2].any() and not grads[4].any()
    np.testing.assert_allclose(grads[1][:, :, :c3], 2 * w[1][:, :, :c3], rtol=1e-6)
    np.testing.assert_allclose(grads[1][:, :, c3:], w[1][:, :, c3:], rtol=1e-6)  # half the ghost batches
    np.testing.assert_allclose(grads[3][..., c3:], w[3][..., c3:], rtol=1e-6)
    np.testing.assert_allclose(grads[5], w[5], rtol=1e-6)
    np.testing.assert_allclose(grads[6], 2 * w[6], rtol=1e-6)
    # Every path on: the plain sum of squared kernels.
    kernels = [v for v in oneshot.trainable_weights if "kernel" in v.path]
    np.testing.assert_allclose(oneshot.masked_l2(space.all_on_masks()),
                               sum(float(np.sum(k.numpy() ** 2)) for k in kernels), rtol=1e-5)


def test_trains_in_a_tf_function_leaving_unused_paths_untouched(space):
    model = space.build_oneshot(GBS)
    optimizer = keras.optimizers.SGD(0.1, momentum=0.9)
    optimizer.build(model.trainable_variables)
    images, labels = _images(space, 4 * GBS, seed=3), np.arange(4 * GBS) % space.num_classes

    @tf.function
    def step(masks):
        with tf.GradientTape() as tape:
            logits = model({"images": images, **masks}, training=True)
            loss = tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True))
            loss += 1e-3 * model.masked_l2(masks)
        optimizer.apply_gradients(zip(tape.gradient(loss, model.trainable_variables), model.trainable_variables))
        return loss

    rng = np.random.default_rng(4)
    archs = [space.sample(rng) for _ in range(4)]
    masks = space.encode_batch(archs)
    masks["block0_kernel"][:] = [0, 1, 0]  # every ghost batch uses the 5x5 kernel in block 0
    dw3 = model.get_layer("block0_dw3").kernel
    before = dw3.numpy()
    losses = [float(step(masks)) for _ in range(5)]
    assert step.experimental_get_tracing_count() == 1 and np.isfinite(losses).all()
    assert losses[-1] < losses[0]
    np.testing.assert_array_equal(dw3.numpy(), before)


def test_space_args_cannot_set_what_the_dataset_sets():
    from tf_oneshot.search_spaces.space_config import build_space
    from tf_oneshot.training.config import TrainConfig

    config = TrainConfig(dataset="digits", space=SPEC, space_args="image_shape=8:8:1")
    with pytest.raises(UserError, match=r"image_shape=\.\.\. is set by the dataset"):
        build_space(config.space, (8, 8, 1), 10)
