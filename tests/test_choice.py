"""Which candidates a one-shot model skips when off (`tf_oneshot.layers.choice`): a speed choice that changes nothing."""

import platform

import keras
import numpy as np
import pytest
import tensorflow as tf

from tf_oneshot.layers import choice
from tf_oneshot.search_spaces.darts64 import Darts64Space

TINY = Darts64Space(stem_filters=6, filters=4, num_cells=2, image_shape=(8, 8, 1), num_classes=3)
GBS = 4


@pytest.mark.skipif(platform.system() != "Linux" or platform.machine() != "x86_64",
                    reason="the guess reads Linux's /proc/cpuinfo; other platforms keep pooling masked")
def test_onednn_guess_agrees_with_tensorflow_here():
    # TF's own answer (it reads TF_ENABLE_ONEDNN_OPTS once, from this process's environment), for this check only.
    from tensorflow.python.framework import test_util

    assert choice.onednn_on() == test_util.IsMklEnabled()


@pytest.mark.parametrize("value, expected", [("0", False), ("false", False), ("1", True), ("TRUE", True)])
def test_the_environment_variable_decides_onednn(monkeypatch, value, expected):
    monkeypatch.setenv("TF_ENABLE_ONEDNN_OPTS", value)
    assert choice.onednn_on() is expected


@pytest.mark.parametrize("pools", [True, False])
def test_max_pooling_is_skipped_only_where_pooling_is(monkeypatch, pools):
    monkeypatch.setattr(choice, "skip_pooling", lambda: pools)
    conv = keras.layers.Conv2D(4, 3)
    conv.build((None, 8, 8, 4))
    candidates = [[conv], [keras.layers.MaxPooling2D(3, 1, "same")], [keras.layers.AveragePooling2D(3, 1, "same")],
                  []]
    assert choice.skip_which(True, candidates) == [True, pools, False, False]
    assert choice.skip_which(False, candidates) == [False] * 4


@pytest.mark.parametrize("pools", [True, False])
def test_skipping_max_pools_changes_no_output_nor_gradient(monkeypatch, pools):
    # "334" and "114": every max pool of the second child is off, the first child's pools are on in one ghost
    # batch only; skipped (tf.cond) or masked, the logits and every gradient must be the same.
    monkeypatch.setattr(choice, "skip_pooling", lambda: pools)
    keras.utils.set_random_seed(0)
    model = TINY.build_oneshot(GBS)
    images = tf.constant(np.random.default_rng(1).normal(size=(2 * GBS, 8, 8, 1)).astype(np.float32))
    labels = tf.constant([0, 1, 2, 0, 1, 2, 0, 1], tf.int32)
    for archs in (["334", "114"], ["114", "124"]):
        masks = TINY.encode_batch([TINY.parse(a) for a in archs])

        @tf.function
        def step(skip, masks=masks):
            with tf.GradientTape() as tape:
                logits = model({"images": images, **masks}, training=True, skip_inactive=skip)
                loss = tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True))
            grads = tape.gradient(loss, model.trainable_variables, unconnected_gradients=tf.UnconnectedGradients.ZERO)
            return logits, grads

        (logits_a, grads_a), (logits_b, grads_b) = step(True), step(False)
        np.testing.assert_allclose(logits_a, logits_b, rtol=1e-5, atol=1e-6)
        assert sum(float(tf.reduce_sum(tf.abs(g))) > 0 for g in grads_a) > 10
        for w, a, b in zip(model.trainable_variables, grads_a, grads_b):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6, err_msg=w.path)


def test_a_skipped_max_pool_is_not_computed(monkeypatch):
    # Pools skipped: the traced step holds the max pools inside tf.cond branches, not in the step itself.
    def top_level_pools(pools: bool) -> int:
        monkeypatch.setattr(choice, "skip_pooling", lambda: pools)
        model = TINY.build_oneshot(GBS)
        masks = TINY.encode_batch([TINY.parse("114"), TINY.parse("124")])
        images = tf.zeros((2 * GBS, 8, 8, 1))
        graph = tf.function(lambda: model({"images": images, **masks}, training=True)).get_concrete_function().graph
        return sum(op.type == "MaxPool" for op in graph.get_operations())

    assert top_level_pools(False) == 3 * TINY.num_cells
    assert top_level_pools(True) == 0


@pytest.mark.parametrize("pools", [True, False])
def test_a_bender_cell_max_pool_op_is_found_inside_its_group(monkeypatch, pools):
    from tf_oneshot.search_spaces.bender_cell.ops import AVG_POOL, MAX_POOL, NUM_OPS, CellOp

    monkeypatch.setattr(choice, "skip_pooling", lambda: pools)
    ops = [CellOp(o, 4, GBS, name=f"op{o}") for o in range(NUM_OPS)]
    for op in ops:
        op.build((None, 8, 8, 4))
    skips = choice.skip_which(True, ops)
    assert skips[MAX_POOL] is pools and skips[AVG_POOL] is False
    others = [o for o in range(NUM_OPS) if o not in (MAX_POOL, AVG_POOL)]
    assert [skips[o] for o in others] == [bool(ops[o].weights) for o in others]
