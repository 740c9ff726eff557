"""The darts64 space ("Deeper insights into weight sharing in NAS", §3.1, App. A.1): forms, costs, models."""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from tf_oneshot.errors import UserError
from tf_oneshot.layers import GhostBatchNormalization
from tf_oneshot.search_spaces import get_space, space_from_config
from tf_oneshot.search_spaces.darts64 import EDGE_KEYS, Darts64Space

TINY = Darts64Space(stem_filters=6, filters=4, num_cells=2, image_shape=(8, 8, 1), num_classes=3)
GBS = 4


def _images(n=2 * GBS, seed=0, space=TINY):
    return np.random.default_rng(seed).normal(size=(n, *space.image_shape)).astype("float32")


def _randomize(model, seed=0):
    """Random values for every weight (BN scales positive), so a wrong copy shows."""
    rng = np.random.default_rng(seed)
    for w in model.weights:
        value = rng.normal(scale=0.5, size=w.shape)
        if "variance" in w.path or "gamma" in w.path:
            value = 1.0 + np.abs(value)
        w.assign(value.astype("float32"))


def _multiply_adds(model: keras.Model) -> int:
    """Multiply-adds of convolutions and Dense layers, walked from the Keras model."""
    total = 0
    for layer in model.layers:
        if isinstance(layer, keras.layers.Dense):
            total += int(np.prod(layer.kernel.shape))
            continue
        if not isinstance(layer, keras.layers.Conv2D | keras.layers.SeparableConv2D):
            continue
        _, h, w, c_out = layer.output.shape
        kh, kw = layer.kernel_size
        c_in = layer.input.shape[-1]
        if isinstance(layer, keras.layers.SeparableConv2D):
            total += h * w * (kh * kw * c_in + c_in * c_out)
        else:
            total += h * w * kh * kw * c_in * c_out
    return total


# ------------------------------------------------------------------- space
def test_size_enumeration_and_round_trips():
    space = get_space("darts64")
    children = list(space.enumerate())
    assert space.size() == 64 == len(children) == len(set(children))
    names = [str(a) for a in children]
    assert len(set(names)) == 64 and names[0] == "111" and names[-1] == "444" and "124" in names
    for arch in children:
        assert space.parse(str(arch)) == arch
        assert space.from_json(json.loads(json.dumps(space.to_json(arch)))) == arch
        assert space.from_hyperparameter_values(space.hyperparameter_values(arch)) == arch
    arch = space.parse("124")
    assert space.values_of(arch) == (1, 2, 4)
    assert space.to_json(arch) == {"space": "darts64", "edge_01": 1, "edge_02": 2, "edge_12": 4}
    np.testing.assert_array_equal(space.encode(arch)["edge_12"], [0, 0, 0, 1])
    assert str(space.sample(np.random.default_rng(0))) in names
    mutated = space.mutate(arch, np.random.default_rng(0), prob=1.0)
    assert all(a != b for a, b in zip(space.values_of(mutated), (1, 2, 4)))  # every edge is a block


@pytest.mark.parametrize("text, message", [
    ("12", "has 2 characters"),
    ("1234", "has 4 characters"),
    ("125", "edge 12 op '5' is not a digit in 1-4"),
    ("abc", "edge 01 op 'a' is not a digit in 1-4"),
    ("", "empty"),
])
def test_bad_strings_say_what_is_wrong(text, message):
    with pytest.raises(UserError, match=message):
        TINY.parse(text)


def test_fields_are_checked_and_config_round_trips():
    for kwargs, field in [({"filters": 0}, "filters"), ({"stem_stride": 3}, "stem_stride"),
                          ({"num_classes": 1}, "num_classes"), ({"image_shape": (8, 8)}, "image_shape")]:
        with pytest.raises(UserError, match=f"{field}=.* is invalid; expected"):
            Darts64Space(**kwargs)
    config = json.loads(json.dumps(TINY.to_config()))
    assert config["image_shape"] == [8, 8, 1]
    assert space_from_config(config) == TINY
    restricted = TINY.restrict({"edge_01": [1, 2]})
    assert restricted.size() == 32
    assert space_from_config(json.loads(json.dumps(restricted.to_config()))).size() == 32


def test_flops_by_hand_and_between_children():
    space = Darts64Space()  # App. A.1: 32x32x3 images, 48 stem channels, 16-channel nodes
    hw = 32 * 32
    stem = hw * 9 * 3 * 48 + hw * 9 * 48 * 48
    cell_inputs = hw * 48 * 16 + 3 * hw * 32 * 16
    head = 32 * 10
    # "333" and "444" have only max pools and skips: nothing but stem, 1x1 convs and the classifier.
    assert space.count(space.parse("333")).flops == space.count(space.parse("444")).flops == stem + cell_inputs + head
    sep3 = 2 * hw * (9 * 16 + 16 * 16)  # two depthwise 3x3 + pointwise 16->16
    assert space.count(space.parse("134")).flops - space.count(space.parse("334")).flops == 4 * sep3
    bounds = space.cost_bounds()
    assert bounds["params"][0] == space.count(space.parse("333")).params
    assert bounds["params"][1] == space.count(space.parse("222")).params


# ------------------------------------------------------------------ models
def test_counts_equal_keras_for_oneshot_and_children():
    for space in (TINY, Darts64Space(stem_stride=4, image_shape=(30, 30, 3))):
        oneshot = space.build_oneshot(2)
        assert oneshot.count_params() == space.count_oneshot().params
        for text in ("111", "124", "243", "342", "444"):
            arch = space.parse(text)
            for gbs in (2, None):
                model = space.build_standalone(arch, gbs)
                assert model.count_params() == space.count(arch).params, (text, gbs)
            assert _multiply_adds(model) == space.count(arch).flops, text
    stride2 = Darts64Space(stem_filters=4, filters=2, num_cells=1, stem_stride=2, image_shape=(9, 9, 1))
    model = stride2.build_standalone(stride2.parse("213"))
    assert _multiply_adds(model) == stride2.count(stride2.parse("213")).flops
    assert model.get_layer("stem2_conv").output.shape[1:3] == (5, 5)


def test_standalone_holds_only_the_child_ops_and_uses_moving_statistics():
    model = TINY.build_standalone(TINY.parse("124"), GBS)
    names = {layer.name for layer in model.layers}
    assert "cell1_edge01_op1_sep_conv_3x3_1_sepconv" in names
    assert "cell1_edge02_op2_sep_conv_5x5_0_sepconv" in names
    assert not any(n.startswith("cell1_edge01_op2") or "max_pool" in n for n in names)
    gbn = [layer for layer in model.layers if isinstance(layer, GhostBatchNormalization)]
    assert gbn and all(layer.mode == "moving" for layer in gbn)
    assert model(_images(3), training=False).shape == (3, TINY.num_classes)  # any batch at evaluation
    plain = TINY.build_standalone(TINY.parse("124"))
    assert not any(isinstance(layer, GhostBatchNormalization) for layer in plain.layers)


def test_oneshot_equals_children_after_inherit_weights():
    oneshot = TINY.build_oneshot(GBS)
    _randomize(oneshot)
    images = _images(2 * GBS, seed=1)
    a, b = TINY.parse("143"), TINY.parse("231")
    # One child per ghost batch: each ghost batch's logits are its child's.
    masks = {k: tf.constant(v) for k, v in TINY.encode_batch([a, b]).items()}
    both = oneshot({"images": images, **masks}, training=False).numpy()
    for arch, rows in ((a, slice(0, GBS)), (b, slice(GBS, 2 * GBS))):
        for gbs in (GBS, None):
            standalone = TINY.build_standalone(arch, gbs)
            TINY.inherit_weights(oneshot, standalone, arch)
            np.testing.assert_allclose(standalone(images[rows], training=True), both[rows], atol=1e-4)
    # Whole batch, one child, masks without a ghost axis; GhostBN in "batch" mode.
    standalone = TINY.build_standalone(a, GBS)
    TINY.inherit_weights(oneshot, standalone, a)
    for layer in standalone.layers:
        if isinstance(layer, GhostBatchNormalization):
            layer.set_mode("batch")
    expected = oneshot({"images": images, **TINY.encode(a)}, training=False)
    np.testing.assert_allclose(standalone(images, training=False), expected, atol=1e-4)


def test_inactive_ops_are_skipped_and_skipping_changes_nothing():
    oneshot = TINY.build_oneshot(GBS)
    _randomize(oneshot, seed=2)
    images = _images(2 * GBS, seed=3)
    masks = TINY.encode_batch([TINY.parse("114"), TINY.parse("134")])
    skipped = oneshot({"images": images, **masks}, training=True, skip_inactive=True)
    computed = oneshot({"images": images, **masks}, training=True, skip_inactive=False)
    np.testing.assert_allclose(skipped, computed, atol=1e-5)
    # Poison sep_conv_5x5 (op 2, off in both ghost batches): only skipping keeps the logits finite.
    for unit in oneshot.edge_ops[0][0][1]:
        for w in unit.weights:
            w.assign(tf.fill(w.shape, np.nan))
    assert np.isfinite(oneshot({"images": images, **masks}, training=False, skip_inactive=True)).all()
    assert np.isnan(oneshot({"images": images, **masks}, training=False, skip_inactive=False)).all()
    # A traced, XLA-compiled function skips the same way.
    traced = tf.function(lambda x: oneshot(x, training=False), jit_compile=True)
    assert np.isfinite(traced({"images": images, **masks})).all()


def test_masked_l2_decays_only_ops_in_use():
    oneshot = TINY.build_oneshot(GBS)
    masks = {k: tf.constant(v) for k, v in TINY.encode_batch([TINY.parse("114"), TINY.parse("134")]).items()}
    with tf.GradientTape() as tape:
        l2 = oneshot.masked_l2(masks)
    variables = oneshot.trainable_variables
    grads = dict(zip([v.path for v in variables], tape.gradient(l2, variables)))

    def grad_of(layer):
        kernel = layer.depthwise_kernel if isinstance(layer, keras.layers.SeparableConv2D) else layer.kernel
        return grads[kernel.path]

    edge01 = oneshot.edge_ops[1][0]  # cell 1, edge (0, 1): op 1 in both ghost batches, op 2 in none
    sep3, sep5 = edge01[0][2], edge01[1][2]
    assert grad_of(sep5) is not None and not np.any(grad_of(sep5))  # exactly 0, not merely small
    np.testing.assert_allclose(grad_of(sep3), 2 * sep3.depthwise_kernel.numpy(), rtol=1e-6)
    edge02 = oneshot.edge_ops[1][1]  # op 1 in one ghost batch of two: half the decay
    np.testing.assert_allclose(grad_of(edge02[0][2]), edge02[0][2].depthwise_kernel.numpy(), rtol=1e-6)
    stem = oneshot.stem[0]
    np.testing.assert_allclose(grads[stem.kernel.path], 2 * stem.kernel.numpy(), rtol=1e-6)
    # All on: every kernel counts fully.
    everything = sum(float(tf.reduce_sum(tf.square(v))) for v in variables
                     if "kernel" in v.path and "bias" not in v.path)
    np.testing.assert_allclose(oneshot.masked_l2(TINY.all_on_masks()).numpy(), everything, rtol=1e-5)


def test_config_and_checkpoint_round_trip(tmp_path):
    oneshot = TINY.build_oneshot(GBS)
    _randomize(oneshot, seed=4)
    clone = type(oneshot).from_config(json.loads(json.dumps(oneshot.get_config())))
    assert clone.space == TINY and clone.count_params() == oneshot.count_params()
    path = tf.train.Checkpoint(model=oneshot).write(str(tmp_path / "ckpt"))
    tf.train.Checkpoint(model=clone).read(path).assert_existing_objects_matched()
    inputs = {"images": _images(), **TINY.encode(TINY.parse("212"))}
    np.testing.assert_allclose(clone(inputs, training=False), oneshot(inputs, training=False), atol=1e-6)
    assert set(EDGE_KEYS) == set(TINY.mask_shapes())


def test_standalone_round_trips_through_keras_file(tmp_path):
    model = TINY.build_standalone(TINY.parse("312"), GBS)
    _randomize(model, seed=5)
    path = str(tmp_path / "child.keras")
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    images = _images(3, seed=6)
    np.testing.assert_allclose(loaded(images, training=False), model(images, training=False), atol=1e-6)
    assert loaded.count_params() == TINY.count(TINY.parse("312")).params
