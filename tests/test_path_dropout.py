"""PathDropout: harness and the rates of Bender et al. 2018, §3.2, on masks of any rank."""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf
from scipy import stats

from tf_oneshot.layers import PathDropout
from tf_oneshot.search_spaces import CellSpace

SPACE = CellSpace()
DRAWS = 20_000  # ghost batches per statistical test; 3-sigma ~ 0.01 on a rate


def _masks(layer, step, ghosts=DRAWS, seed=(1, 0), masks=None):
    out = layer(masks or SPACE.all_on_masks(), step=step, seed=tf.constant(seed, tf.int64), num_ghosts=ghosts)
    return {k: v.numpy() for k, v in out.items()}


# ------------------------------------------------------------------ harness
def test_shapes_and_no_weights():
    layer = PathDropout(0.05, total_steps=100)
    out = _masks(layer, step=50, ghosts=3)
    assert out["input_mask"].shape == (3, 4, 5) and out["op_mask"].shape == (3, 4, 7)
    assert layer.weights == [] and layer.count_params() == 0
    # Masks that already carry a ghost axis keep it.
    per_ghost = SPACE.encode_batch([SPACE.sample(np.random.default_rng(s)) for s in range(3)])
    again = layer(per_ghost, step=50)
    assert again["op_mask"].shape == (3, 4, 7)


def test_config_and_json_round_trip():
    layer = PathDropout(0.1, total_steps=500, schedule="constant", all_dropped="keep_one", seed=3,
                        keys=("op_mask", "input_mask"))
    config = layer.get_config()
    assert {"rate", "total_steps", "schedule", "all_dropped", "seed", "keys"} <= set(config)
    assert PathDropout.from_config(config).get_config() == config
    text = json.dumps(keras.saving.serialize_keras_object(layer))
    assert keras.saving.deserialize_keras_object(json.loads(text)).get_config() == config


@pytest.mark.filterwarnings("ignore:Gradients do not exist")  # eager: skipped ops have no gradient
def test_training_step_with_dropped_masks_changes_weights():
    space = CellSpace(filters=4, num_cells=2, num_stacks=2, image_shape=(8, 8, 1))
    model = space.build_oneshot(ghost_batch_size=4)
    masks = _masks(PathDropout(0.05, total_steps=10), step=10, ghosts=2, masks=space.all_on_masks())
    before = [w.numpy().copy() for w in model.trainable_weights]
    x = np.random.default_rng(0).normal(size=(8, 8, 8, 1)).astype("float32")
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(model({"images": x, **masks}, training=True) ** 2)
    grads = tape.gradient(loss, model.trainable_weights)
    keras.optimizers.SGD(0.1).apply_gradients(zip(grads, model.trainable_weights))
    changed = [not np.allclose(b, w.numpy()) for b, w in zip(before, model.trainable_weights)]
    assert sum(changed) > len(changed) // 2


@pytest.mark.parametrize(
    "kwargs",
    [dict(rate=1.0, total_steps=10), dict(rate=-0.1, total_steps=10), dict(rate=0.1),
     dict(rate=0.1, total_steps=10, schedule="cosine"), dict(rate=0.1, total_steps=10, all_dropped="none"),
     dict(rate=0.1, total_steps=10, keys="op_mask"), dict(rate=0.1, total_steps=10, keys=("a", "a"))],
)
def test_bad_arguments_rejected(kwargs):
    with pytest.raises(ValueError, match="Received"):
        PathDropout(**kwargs)


# ---------------------------------------------------------------- statistics
def test_rates_at_end_of_ramp_match_paper():
    # r = 0.05: k = 2 -> 0.05^(1/2) = 0.224, k = 7 -> 0.05^(1/7) = 0.652, and
    # P(all paths of a node dropped) = 0.05 whatever k (§3.2).
    out = _masks(PathDropout(0.05, total_steps=1000), step=1000)
    ops, inputs = out["op_mask"], out["input_mask"]
    assert abs((1 - ops.mean()) - 0.05 ** (1 / 7)) < 0.01
    assert abs((1 - inputs[:, 0, :2].mean()) - 0.05 ** (1 / 2)) < 0.01
    assert abs((1 - inputs[:, 3, :5].mean()) - 0.05 ** (1 / 5)) < 0.01
    assert np.all(inputs[:, 0, 2:] == 0)  # paths outside the architecture stay off
    for rows in (ops.sum(-1), inputs[:, 0, :2].sum(-1), inputs[:, 3].sum(-1)):
        assert abs((rows == 0).mean() - 0.05) < 0.006


def test_k_counts_only_the_architecture_paths():
    # A block with 2 active ops drops each with 0.05^(1/2), not 0.05^(1/7).
    arch = SPACE.parse("01:25/2:0/013:46/04:3")
    out = _masks(PathDropout(0.05, total_steps=10), step=10, masks=SPACE.encode(arch))
    ops = out["op_mask"]
    assert abs((1 - ops[:, 0, [2, 5]].mean()) - 0.05 ** 0.5) < 0.01
    assert abs((1 - ops[:, 1, 0].mean()) - 0.05) < 0.006  # k = 1: the rate itself
    assert np.all(ops[:, 0, [0, 1, 3, 4, 6]] == 0)


def test_linear_ramp_and_constant_schedule():
    linear = PathDropout(0.05, total_steps=1000)
    assert _masks(linear, step=0)["op_mask"].min() == 1.0  # no dropout at step 0
    half = _masks(linear, step=500)["op_mask"]
    assert abs((1 - half.mean()) - 0.5 * 0.05 ** (1 / 7)) < 0.01
    assert abs((1 - _masks(linear, step=5000)["op_mask"].mean()) - 0.05 ** (1 / 7)) < 0.01  # capped
    constant = _masks(PathDropout(0.05, schedule="constant"), step=0)["op_mask"]
    assert abs((1 - constant.mean()) - 0.05 ** (1 / 7)) < 0.01


def test_keep_one_rule_never_empties_a_node():
    out = _masks(PathDropout(0.5, total_steps=1, all_dropped="keep_one"), step=1)
    assert (out["op_mask"].sum(-1) == 0).sum() == 0
    assert (out["input_mask"].sum(-1) == 0).sum() == 0
    # The path put back is uniform among the node's paths.
    np.testing.assert_allclose(out["op_mask"].mean(0), out["op_mask"].mean(), atol=0.015)


def test_identity_at_evaluation():
    layer = PathDropout(0.05, total_steps=10)
    masks = SPACE.encode(SPACE.sample(np.random.default_rng(0)))
    out = layer(masks, step=10, num_ghosts=4, training=False)
    for key, value in masks.items():
        np.testing.assert_array_equal(out[key].numpy(), np.repeat(value[None], 4, 0))
    assert np.all(_masks(PathDropout(0.0, total_steps=10), step=10)["op_mask"] == 1.0)


def test_model_applies_no_dropout_at_evaluation():
    # The one-shot model is deterministic with training=False: the masks are
    # the architecture's, and nothing inside the model drops paths.
    space = CellSpace(filters=4, num_cells=2, num_stacks=2, image_shape=(8, 8, 1))
    model = space.build_oneshot(ghost_batch_size=4)
    arch = space.sample(np.random.default_rng(1))
    x = np.random.default_rng(0).normal(size=(8, 8, 8, 1)).astype("float32")
    first = model({"images": x, **space.encode(arch)}, training=False).numpy()
    second = model({"images": x, **space.encode(arch)}, training=False).numpy()
    np.testing.assert_array_equal(first, second)


def test_same_seed_and_step_same_masks_and_ghosts_differ():
    layer = PathDropout(0.05, total_steps=10)
    a, b = _masks(layer, step=7, ghosts=64), _masks(layer, step=7, ghosts=64)
    np.testing.assert_array_equal(a["op_mask"], b["op_mask"])
    # A tf.function with the step as a variable draws the same masks.
    step = tf.Variable(7, dtype=tf.int64)
    traced = tf.function(lambda: layer(SPACE.all_on_masks(), step=step, seed=tf.constant([1, 0], tf.int64),
                                       num_ghosts=64))()
    np.testing.assert_array_equal(traced["op_mask"].numpy(), a["op_mask"])
    assert not np.array_equal(_masks(layer, step=8, ghosts=64)["op_mask"], a["op_mask"])
    assert not np.array_equal(_masks(layer, step=7, ghosts=64, seed=(2, 0))["op_mask"], a["op_mask"])
    patterns = {m.tobytes() for m in a["op_mask"]}
    assert len(patterns) > 32  # ghost batches draw independently


# ------------------------------------------------------------ any mask rank
def test_same_draws_as_the_two_mask_version():
    # The Bender masks keep the key derivation of the layer before it took
    # any masks: fold_in(seed, step), then fold_in(., 0) for "input_mask" and
    # fold_in(., 1) for "op_mask"; a uniform draw below p drops a path.
    layer = PathDropout(0.05, total_steps=100)
    out = _masks(layer, step=60, ghosts=16, seed=(9, 4))
    key = tf.random.experimental.stateless_fold_in(tf.constant([9, 4], tf.int64), tf.constant(60, tf.int64),
                                                   alg="philox")
    for index, name in enumerate(("input_mask", "op_mask")):
        on = np.repeat(SPACE.all_on_masks()[name][None], 16, 0)
        node_key = tf.random.experimental.stateless_fold_in(key, index, alg="philox")
        uniform = tf.random.stateless_uniform(on.shape, seed=node_key, dtype=tf.float32, alg="philox").numpy()
        k = np.maximum(on.sum(-1, keepdims=True), 1)
        p = (0.6 * 0.05 ** (1 / k)).astype(np.float32)
        np.testing.assert_array_equal(out[name], on * (uniform >= p))
    # The same draws when the layer is told the keys, as a sampler does, and
    # other masks pass through untouched.
    named = PathDropout(0.05, total_steps=100, keys=("input_mask", "op_mask"))
    extra = {**SPACE.all_on_masks(), "other": np.ones((4, 3), np.float32)}
    again = named(extra, step=60, seed=tf.constant([9, 4], tf.int64), num_ghosts=16)
    for name in out:
        np.testing.assert_array_equal(again[name].numpy(), out[name])
    np.testing.assert_array_equal(again["other"].numpy(), np.ones((16, 4, 3)))


@pytest.mark.parametrize("shape", [(7,), (2, 3, 7)], ids=["rank2", "rank4"])
def test_any_rank_rows_drop_at_r_to_one_over_k(shape):
    # Masks [G, ..., paths]: every row over the last axis is a node whose k
    # on paths each drop with s * r^(1/k); rows with k = 0 (empty) .. 7.
    ghosts, rate = 24_000, 0.05
    rows = ghosts * int(np.prod(shape[:-1]))
    rng = np.random.default_rng(0)
    ks = np.arange(rows) % 8
    on = (rng.random((rows, 7)).argsort(-1) < ks[:, None]).astype(np.float32)  # k random paths per row
    masks = {"nodes": on.reshape(ghosts, *shape)}
    for step, s in ((0, 0.0), (40, 0.4), (100, 1.0)):
        out = PathDropout(rate, total_steps=100, keys=("nodes",))(masks, step=step, seed=3)["nodes"].numpy()
        assert out.shape == (ghosts, *shape)
        flat = out.reshape(rows, 7)
        assert np.all(flat[on == 0] == 0)
        if s == 0.0:
            np.testing.assert_array_equal(flat, on)
            continue
        z = []
        for k in range(1, 8):
            paths = on[ks == k] > 0
            expected = s * rate ** (1 / k)
            observed = 1.0 - flat[ks == k][paths].mean()
            z.append((observed - expected) / np.sqrt(expected * (1 - expected) / paths.sum()))
        p = stats.chi2.sf(np.sum(np.square(z)), len(z))
        print(f"{shape} step {step}: z per k=1..7 {np.round(z, 2).tolist()}, chi-square p={p:.3g}")
        assert np.max(np.abs(z)) < 4.5 and p > 1e-3


def test_masks_need_a_ghost_axis_or_num_ghosts():
    layer = PathDropout(0.05, total_steps=10, keys=("nodes",))
    with pytest.raises(ValueError, match="ghost axis"):
        layer({"nodes": np.ones(7, np.float32)}, step=1)
    assert layer({"nodes": np.ones(7, np.float32)}, step=1, num_ghosts=3)["nodes"].shape == (3, 7)
    with pytest.raises(ValueError, match="needs mask 'nodes'"):
        layer({"other": np.ones((2, 7), np.float32)}, step=1)
