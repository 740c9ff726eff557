"""CellOp, ChoiceBlock, Cell and the mask bookkeeping (Bender et al. 2018, §3.1-3.2)."""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from tf_oneshot.layers import GhostBatchNormalization
from tf_oneshot.search_spaces import NUM_OPS, OP_NAMES
from tf_oneshot.search_spaces.bender_cell.cell import Cell, cell_masks
from tf_oneshot.search_spaces.bender_cell.choice_block import ChoiceBlock, effective_masks
from tf_oneshot.search_spaces.bender_cell.ops import CellOp

GBS, F, N = 4, 3, 8


def _x(channels, seed=0):
    return np.random.default_rng(seed).normal(size=(N, 6, 6, channels)).astype("float32")


def _block_args(index, input_mask=None, op_mask=None):
    """Per-example masks for block `index`: all on unless given ([N, 2+i], [N, O])."""
    input_mask = np.ones((N, 2 + index), np.float32) if input_mask is None else input_mask
    op_mask = np.ones((N, NUM_OPS), np.float32) if op_mask is None else op_mask
    channel_mask = np.repeat(input_mask, F, axis=1)[:, None, None, :]
    op_masks = [tf.constant(op_mask[:, o, None, None, None]) for o in range(NUM_OPS)]
    active = [tf.constant(bool(op_mask[:, o].any())) for o in range(NUM_OPS)]
    return tf.constant(channel_mask), op_masks, active


def _all_on_cell_masks(num_blocks):
    input_mask = np.zeros((N, num_blocks, num_blocks + 1), np.float32)
    for i in range(num_blocks):
        input_mask[:, i, : 2 + i] = 1
    op_mask = np.ones((N, num_blocks, NUM_OPS), np.float32)
    alive = np.ones((N, num_blocks), np.float32)
    return cell_masks(tf.constant(input_mask), tf.constant(op_mask), tf.constant(alive),
                      tf.ones((num_blocks, NUM_OPS), tf.bool), F)


def _train_step_changes_weights(layer, call):
    before = [w.numpy().copy() for w in layer.trainable_weights]
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean((call() - 1.0) ** 2)
    grads = tape.gradient(loss, layer.trainable_weights)
    keras.optimizers.SGD(0.5).apply_gradients(zip(grads, layer.trainable_weights))
    for b, w in zip(before, layer.trainable_weights):
        assert not np.allclose(b, w.numpy()), w.name


def _round_trips(layer):
    config = layer.get_config()
    assert type(layer).from_config(config).get_config() == config
    text = json.dumps(keras.saving.serialize_keras_object(layer))
    again = keras.saving.deserialize_keras_object(json.loads(text))
    assert type(again) is type(layer) and again.get_config() == config


# ------------------------------------------------------------------- CellOp
@pytest.mark.parametrize("op", range(NUM_OPS))
def test_cell_op_harness(op):
    layer = CellOp(op, F, GBS, name=OP_NAMES[op])
    x = _x(F)
    out = layer(x, training=True)
    assert out.shape == x.shape == layer.compute_output_shape(x.shape)
    expected_weights = {0: 0, 1: 12, 2: 12, 3: 12, 4: 10, 5: 0, 6: 0}[op]  # BN: 4 each; sep conv: 2; conv: 1
    assert len(layer.weights) == expected_weights
    _round_trips(layer)
    if layer.trainable_weights:
        _train_step_changes_weights(layer, lambda: layer(x, training=True))


def test_cell_op_rejects_bad_arguments():
    with pytest.raises(ValueError, match="Received: op=7"):
        CellOp(7, F, GBS)
    with pytest.raises(ValueError, match="Received: filters=0"):
        CellOp(1, 0, GBS)
    with pytest.raises(ValueError, match="keeps 3 channels"):
        CellOp(1, F, GBS)(_x(5), training=True)


# -------------------------------------------------------------- ChoiceBlock
def test_choice_block_harness():
    block = ChoiceBlock(1, F, GBS, name="block1")
    x = _x(3 * F)
    out = block(x, *_block_args(1), training=True)
    assert out.shape == (N, 6, 6, F) == block.compute_output_shape(x.shape)
    # input BN (4 weights) + 1x1 conv + the ops' weights
    assert len(block.weights) == 4 + 1 + 12 * 3 + 10
    separable = sum(2 * (4 * F + k * k * F + F * F) for k in (3, 5, 7))
    assert block.count_params() == 4 * 3 * F + 3 * F * F + separable + 2 * (4 * F + 7 * F * F)
    _round_trips(block)
    _train_step_changes_weights(block, lambda: block(x, *_block_args(1), training=True))
    with pytest.raises(ValueError, match="Received: index=-1"):
        ChoiceBlock(-1, F, GBS)
    with pytest.raises(ValueError, match="takes 3 inputs"):
        ChoiceBlock(1, F, GBS)(_x(2 * F), *_block_args(1), training=True)


def test_masked_input_equals_removed_input():
    # Zeroing input 1's channels after BN-ReLU equals deleting its rows from
    # the 1x1 convolution: the stand-alone block's smaller concatenation.
    block = ChoiceBlock(1, F, GBS)
    x = _x(3 * F)
    input_mask = np.tile([[1.0, 0.0, 1.0]], (N, 1)).astype("float32")
    op_mask = np.zeros((N, NUM_OPS), np.float32)
    op_mask[:, 0] = 1  # identity: the block output is the 1x1 conv output
    out = block(x, *_block_args(1, input_mask, op_mask), training=True).numpy()
    keep = np.r_[0:F, 2 * F:3 * F]
    bn = GhostBatchNormalization(GBS)
    bn.build((None, 6, 6, 2 * F))
    bn.set_weights([w[keep] for w in block.input_bn.get_weights()])
    kernel = block.input_conv.kernel.numpy()[:, :, keep]
    expected = tf.nn.conv2d(tf.nn.relu(bn(x[..., keep], training=True)), kernel, 1, "SAME")
    np.testing.assert_allclose(out, expected, atol=1e-5)


def test_ops_off_everywhere_are_skipped_and_contribute_nothing():
    block = ChoiceBlock(0, F, GBS)
    x = _x(2 * F)
    op_mask = np.zeros((N, NUM_OPS), np.float32)
    op_mask[:, 5] = 1  # max pooling only
    out = block(x, *_block_args(0, op_mask=op_mask), training=True)
    hidden = block.input_conv(tf.nn.relu(block.input_bn(x, training=True)))
    np.testing.assert_allclose(out, tf.nn.max_pool2d(hidden, 3, 1, "SAME"), atol=1e-5)
    # Skipped or computed and zeroed: the same result.
    dense = ChoiceBlock(0, F, GBS, skip_inactive=False)
    dense.build(x.shape)
    dense.set_weights(block.get_weights())
    np.testing.assert_allclose(dense(x, *_block_args(0, op_mask=op_mask), training=True), out, atol=1e-6)


def test_per_example_op_masks():
    block = ChoiceBlock(0, F, GBS)
    x = _x(2 * F)
    op_mask = np.ones((N, NUM_OPS), np.float32)
    op_mask[GBS:, 1:] = 0  # second ghost batch: identity only
    out = block(x, *_block_args(0, op_mask=op_mask), training=True).numpy()
    full = block(x, *_block_args(0), training=True).numpy()
    identity = block.input_conv(tf.nn.relu(block.input_bn(x, training=True))).numpy()
    np.testing.assert_allclose(out[:GBS], full[:GBS], atol=1e-5)
    np.testing.assert_allclose(out[GBS:], identity[GBS:], atol=1e-5)


# --------------------------------------------------------------------- Cell
def test_cell_harness():
    cell = Cell(F, 3, GBS, name="cell")
    x = _x(2 * F)
    masks = _all_on_cell_masks(3)
    out = cell(x, masks, training=True)
    assert out.shape == (N, 6, 6, F) == cell.compute_output_shape(x.shape)
    block_weights = sum(len(b.weights) for b in cell.blocks)
    assert len(cell.weights) == block_weights + 4 + 1
    _round_trips(cell)
    _train_step_changes_weights(cell, lambda: cell(x, masks, training=True))
    with pytest.raises(ValueError, match="Received: num_blocks=0"):
        Cell(F, 0, GBS)


def test_effective_masks_remove_dead_blocks_and_their_paths():
    input_mask = np.zeros((2, 3, 4), np.float32)
    op_mask = np.ones((2, 3, NUM_OPS), np.float32)
    input_mask[:, 0, :2] = 1
    input_mask[:, 1, 2] = 1  # block 1 reads only block 0
    input_mask[:, 2, [0, 3]] = 1  # block 2 reads cell input 0 and block 1
    op_mask[1, 0] = 0  # ghost batch 1: block 0 lost all its ops
    eff_in, eff_op, alive = (t.numpy() for t in effective_masks(tf.constant(input_mask), tf.constant(op_mask)))
    np.testing.assert_array_equal(alive, [[1, 1, 1], [0, 0, 1]])
    np.testing.assert_array_equal(eff_in[0], input_mask[0])
    assert eff_in[1, 0].sum() == 0 and eff_in[1, 1].sum() == 0 and eff_op[1, 1].sum() == 0
    np.testing.assert_array_equal(eff_in[1, 2], [1, 0, 0, 0])  # block 1's path to block 2 is gone
