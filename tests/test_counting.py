"""The space's arithmetic counts equal the built Keras models (params and multiply-adds)."""

import keras
import numpy as np
import pytest

from tf_oneshot.search_spaces import CellSpace
from tf_oneshot.search_spaces.bender_cell.model import CellOneShotModel as OneShotModel
from tf_oneshot.search_spaces.bender_cell.standalone import build_all_on_model, build_standalone_model

SPACES = [
    CellSpace(filters=4, num_cells=3, num_stacks=3, image_shape=(16, 16, 3)),
    CellSpace(filters=8, num_cells=4, num_stacks=2, image_shape=(15, 17, 1), stem_stride=2, num_classes=7),
    CellSpace(filters=16, num_cells=2, num_stacks=2, num_blocks=3, image_shape=(24, 24, 3), stem_stride=4),
]


def keras_macs(model: keras.Model) -> int:
    """Multiply-adds per image, from each layer's kernel shape and output shape."""
    total = 0
    for layer in model.layers:
        if isinstance(layer, (keras.layers.SeparableConv2D, keras.layers.DepthwiseConv2D, keras.layers.Conv2D,
                              keras.layers.Dense)):
            out = layer.output.shape
            positions = int(np.prod(out[1:-1])) if len(out) > 2 else 1
        if isinstance(layer, keras.layers.SeparableConv2D):
            kh, kw, c_in, multiplier = layer.depthwise_kernel.shape
            total += positions * (kh * kw * c_in * multiplier + int(np.prod(layer.pointwise_kernel.shape)))
        elif isinstance(layer, keras.layers.DepthwiseConv2D):
            total += positions * int(np.prod(layer.kernel.shape))
        elif isinstance(layer, keras.layers.Conv2D):
            total += positions * int(np.prod(layer.kernel.shape))
        elif isinstance(layer, keras.layers.Dense):
            total += int(np.prod(layer.kernel.shape))
    return total


def reads_both_cell_inputs(arch) -> bool:
    """Whether some block reads each of the two previous cells.

    When no block reads one of them, a functional Keras model drops the layers
    that only fed it (a reduction unit, or every other cell): they cannot
    reach the output.
    """
    return all(any(j in block.inputs for block in arch.blocks) for j in (0, 1))


def _archs(space, count, both_inputs):
    rng = np.random.default_rng(space.filters)
    archs = []
    while len(archs) < count:
        arch = space.sample(rng)
        if reads_both_cell_inputs(arch) == both_inputs:
            archs.append(arch)
    return archs


@pytest.mark.parametrize("space", SPACES, ids=lambda s: f"F{s.filters}")
def test_standalone_params_and_macs_match_arithmetic(space):
    for arch in _archs(space, 10 if space.filters == 16 else 15, both_inputs=True):
        model = build_standalone_model(space, arch, ghost_batch_size=4)
        cost = space.count(arch)
        assert model.count_params() == cost.params, str(arch)
        assert keras_macs(model) == cost.flops, str(arch)


@pytest.mark.parametrize("space", SPACES[:2], ids=lambda s: f"F{s.filters}")
def test_counts_skip_layers_that_cannot_reach_the_output(space):
    for arch in _archs(space, 3, both_inputs=False):
        model = build_standalone_model(space, arch, ghost_batch_size=4)
        cost = space.count(arch)
        assert (model.count_params(), keras_macs(model)) == (cost.params, cost.flops), str(arch)


@pytest.mark.parametrize("space", SPACES, ids=lambda s: f"F{s.filters}")
def test_oneshot_and_all_on_match_arithmetic(space):
    cost = space.count_oneshot()
    assert OneShotModel(space, ghost_batch_size=4).count_params() == cost.params
    all_on = build_all_on_model(space)
    assert all_on.count_params() == cost.params
    assert keras_macs(all_on) == cost.flops


@pytest.mark.parametrize("filters, paper", [(16, 1.3e6), (32, 4.8e6)])
def test_default_all_on_counts_near_table_1(filters, paper):
    # Bender et al. 2018, Table 1 "All On": 1.3M params at F=16, 4.8M at F=32
    # (6 cells, CIFAR-10 32x32x3, 10 classes).
    space = CellSpace(filters=filters, num_cells=6, image_shape=(32, 32, 3), num_classes=10)
    params = OneShotModel(space, ghost_batch_size=32).count_params()
    cost = space.count_oneshot()
    print(f"All On F={filters}: {params:,} params (paper {paper / 1e6:.1f}M), {cost.flops:,} multiply-adds")
    assert params == cost.params
    assert abs(params - paper) / paper < 0.03
