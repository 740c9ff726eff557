"""Stand-alone models: only the architecture's layers, the one-shot model's function, .keras files."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from tf_oneshot.errors import UserError
from tf_oneshot.layers import GhostBatchNormalization
from tf_oneshot.search_spaces import OP_NAMES, CellSpace
from tf_oneshot.search_spaces.bender_cell.model import CellOneShotModel as OneShotModel
from tf_oneshot.search_spaces.bender_cell.standalone import (
    build_all_on_model,
    build_standalone_model,
    copy_oneshot_weights,
)

TINY = CellSpace(filters=4, num_cells=2, num_stacks=2, image_shape=(8, 8, 1))
GBS = 4


def _images(n=8, seed=0, space=TINY):
    return np.random.default_rng(seed).normal(size=(n, *space.image_shape)).astype("float32")


def test_holds_only_the_architecture_ops():
    arch = TINY.parse("01:25/2:0/013:46/04:3")
    model = build_standalone_model(TINY, arch, GBS)
    assert model.count_params() == TINY.count(arch).params
    names = [layer.name for layer in model.layers]
    for i, block in enumerate(arch.blocks):
        for o, op in enumerate(OP_NAMES):
            present = any(n.startswith(f"cell0_block{i}_op{o}_{op}") for n in names)
            assert present == (o in block.ops and o != 0), (i, op)  # identity has no layer
    # Block 1 reads one input: no concatenation; blocks with two ops sum them.
    assert "cell0_block1_concat" not in names and "cell0_block0_concat" in names
    assert "cell0_block0_sum" in names and "cell0_block1_sum" not in names
    assert model(_images(), training=True).shape == (8, TINY.num_classes)


def test_rejects_an_architecture_of_another_space():
    arch = CellSpace(num_blocks=2).sample(np.random.default_rng(0))
    with pytest.raises(UserError, match="blocks"):
        build_standalone_model(TINY, arch)


def test_plain_batch_norm_without_ghost_batches():
    arch = TINY.sample(np.random.default_rng(1))
    model = build_standalone_model(TINY, arch)
    assert not any(isinstance(layer, GhostBatchNormalization) for layer in model.layers)
    assert model.count_params() == TINY.count(arch).params
    assert model(_images(5), training=False).shape == (5, TINY.num_classes)  # any batch size


def test_all_on_model_matches_oneshot_size():
    model = build_all_on_model(TINY)
    assert model.count_params() == TINY.count_oneshot().params


@pytest.mark.parametrize("seed, text", [(0, None), (1, None), (2, "0:1/02:3/3:0/04:56")])
def test_equals_oneshot_model_with_its_masks(seed, text):
    # Bender et al. 2018, Figure 2: zeroing paths of the one-shot model
    # emulates the smaller network; with shared weights they are one function.
    space = CellSpace(filters=4, num_cells=3, num_stacks=2, image_shape=(8, 8, 3), stem_stride=2)
    oneshot = OneShotModel(space, ghost_batch_size=GBS)
    images = _images(8, seed, space)
    oneshot({"images": images, **space.all_on_masks()}, training=True)  # move the statistics
    # The last one reads no previous cell: Keras drops the unreachable layers.
    arch = space.parse(text) if text else space.sample(np.random.default_rng(seed))
    standalone = build_standalone_model(space, arch, GBS)
    copy_oneshot_weights(oneshot, standalone, arch)
    for layer in standalone.layers:
        if isinstance(layer, GhostBatchNormalization):
            layer.set_mode("batch")
    expected = oneshot({"images": images, **space.encode(arch)}, training=False)
    np.testing.assert_allclose(standalone(images, training=False), expected, atol=1e-5)
    np.testing.assert_allclose(
        standalone(images, training=True), oneshot({"images": images, **space.encode(arch)}, training=True),
        atol=1e-5,
    )


def test_trains_with_fit_and_round_trips_through_keras_file(tmp_path):
    arch = TINY.sample(np.random.default_rng(3))
    model = build_standalone_model(TINY, arch, GBS)
    model.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    labels = np.arange(16) % TINY.num_classes
    before = [w.numpy().copy() for w in model.weights]
    model.fit(_images(16), labels, batch_size=8, epochs=1, verbose=0)
    assert all(not np.allclose(b, w.numpy()) for b, w in zip(before, model.weights))
    path = str(tmp_path / "standalone.keras")
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    images = _images(6, seed=4)  # moving statistics at evaluation: any batch size
    np.testing.assert_allclose(loaded.predict(images, verbose=0), model.predict(images, verbose=0), atol=1e-6)
    assert loaded.count_params() == TINY.count(arch).params
    gbn = [layer for layer in loaded.layers if isinstance(layer, GhostBatchNormalization)]
    assert gbn and all(layer.ghost_batch_size == GBS and layer.mode == "moving" for layer in gbn)


def test_jit_compiled_predict_matches_eager():
    arch = TINY.sample(np.random.default_rng(5))
    model = build_standalone_model(TINY, arch, GBS)
    images = tf.constant(_images())
    compiled = tf.function(lambda x: model(x, training=False), jit_compile=True)
    np.testing.assert_allclose(compiled(images), model(images, training=False), atol=1e-5)
