"""Channel-number search (SPOS, Guo et al. 2019, §3.3, §4, Figure 3b, Table 4): spos_channels, spos_blocks_channels.

The supernet holds the widest (1.6x) weights and masks the channels past the
chosen width; these tests hold it to the sliced network of Figure 3b: equal
logits, equal batch-norm statistics, gradients and decay only on the slice.
"""

import json

import numpy as np
import pytest
import tensorflow as tf
from test_spos_blocks import _multiply_adds, _randomize

from tf_oneshot.errors import UserError
from tf_oneshot.search_spaces import get_space, space_from_config
from tf_oneshot.search_spaces.space_config import parse_space_args
from tf_oneshot.search_spaces.spos_blocks.channels import (
    MULTIPLIERS,
    SposBlocksChannelsSpace,
    SposChannelsSpace,
)
from tf_oneshot.search_spaces.spos_blocks.masked_bn import MaskedGhostBatchNormalization

# Two stages (1 + 2 blocks) at 8x8, mid widths 5 and 6: the smallest that give 8 distinct widths.
SMALL = {"image_shape": (8, 8, 1), "num_classes": 3, "stem_stride": 1, "stage_blocks": (1, 2),
         "channels": (4, 10, 12, 16)}
CHANNELS = SposChannelsSpace(**SMALL, blocks="3:x:5")
JOINT = SposBlocksChannelsSpace(**SMALL)
GBS = 4


def _images(n, seed, space=CHANNELS):
    return np.random.default_rng(seed).normal(size=(n, *space.image_shape)).astype("float32")


def _masks(space, archs):
    return {k: tf.constant(v) for k, v in space.encode_batch(archs).items()}


def _standalone(space, oneshot, arch, gbs=GBS):
    model = space.build_standalone(arch, gbs)
    space.inherit_weights(oneshot, model, arch)
    return model


# ------------------------------------------------------------------- space
def test_sizes_widths_and_defaults():
    channels, joint = get_space("spos_channels"), get_space("spos_blocks_channels")
    assert channels.size() == 8**20 and joint.size() == 32**20
    assert channels.blocks == ("3",) * 20  # §4: channel search on the baseline "all choice_3"
    assert [d.name for d in channels.decisions()][:2] == ["channels0", "channels1"]
    assert [d.name for d in joint.decisions()][:3] == ["block0", "channels0", "block1"]
    assert channels.default_sampler == joint.default_sampler == "uniform"
    # Table 2's mid widths (half a block's output) times 0.2 ... 1.6, truncated as SPOS's code: 8 distinct widths.
    widths = [channels.mid_widths(b) for b in channels.layout() if b.first]
    assert widths[0] == (6, 12, 19, 25, 32, 38, 44, 51)
    assert widths[3] == tuple(64 * k for k in range(1, 9))
    # Only candidate masks can be skipped; a width is a mask inside the one graph.
    assert channels.skip_masks() == () and joint.skip_masks() == tuple(f"block{i}" for i in range(20))
    assert channels.mask_shapes()["channels0"] == (8,) and joint.mask_shapes()["block0"] == (4,)
    assert get_space("spos_channels", multipliers="0.6:1.0:1.4").size() == 3**20
    # Table 4's second pipeline: channel search on a block-search result.
    result = "/".join("357x" * 5)
    assert get_space("spos_channels", blocks=result).blocks == tuple("357x" * 5)
    assert get_space("spos_channels", **parse_space_args("blocks=x")).blocks == ("x",) * 20


def test_strings_json_mutation_and_off_grid_input():
    arch = JOINT.parse("x/0.2/3/1.6/7/1.0")
    assert JOINT.block_parts(arch) == (("x", 1), ("3", 9), ("7", 6))  # int(6 * 1.6), as SPOS's code
    assert JOINT.from_json(json.loads(json.dumps(JOINT.to_json(arch)))) == arch
    assert JOINT.from_hyperparameter_values(JOINT.hyperparameter_values(arch)) == arch
    assert JOINT.parse("x/0.20/3/1.6/7/1") == arch  # the same numbers written otherwise
    assert CHANNELS.from_json({"channels0": 0.6000000000000001, "channels1": 1, "channels2": 0.4}) == \
        CHANNELS.parse("0.6/1.0/0.4")
    # A choice block is (candidate, width): mutation moves the pair, never leaves a block as it was.
    mutated = JOINT.mutate(arch, np.random.default_rng(0), prob=1.0)
    old, new = JOINT.values_of(arch), JOINT.values_of(mutated)
    assert all(old[2 * i:2 * i + 2] != new[2 * i:2 * i + 2] for i in range(3))
    bad = [lambda: CHANNELS.parse("0.5/1.0/1.0"),
           lambda: CHANNELS.from_json({"channels0": 1.8, "channels1": 1.0, "channels2": 1.0}),
           lambda: JOINT.parse("3/2.0/3/1.0/3/1.0"),
           lambda: get_space("spos_channels", **parse_space_args("multipliers=0.5")),
           lambda: get_space("spos_blocks_channels", **parse_space_args("multipliers=0.4:0.7"))]
    for call in bad:
        with pytest.raises(UserError, match=r"(0\.5|1\.8|2\.0|0\.7).*(not one of|off SPOS §3.3's grid)") as e:
            call()
        assert "\n" not in str(e.value)
    with pytest.raises(UserError, match="blocks='3:5' is invalid"):
        SposChannelsSpace(**SMALL, blocks="3:5")
    with pytest.raises(UserError, match="block 0 has 4 mid channels, too few for 8 distinct widths"):
        SposChannelsSpace(**{**SMALL, "channels": (4, 8, 12, 16)})
    assert SposChannelsSpace(**{**SMALL, "channels": (4, 8, 12, 16)}, multipliers=(0.4, 1.6)).size() == 8


def test_config_round_trips_and_restriction():
    for space in (CHANNELS, JOINT, SposChannelsSpace(**SMALL, multipliers=(1.6, 0.2))):
        assert space_from_config(json.loads(json.dumps(space.to_config()))) == space
    assert SposChannelsSpace(**SMALL, multipliers=(1.6, 0.2)).multipliers == (0.2, 1.6)
    restricted = JOINT.restrict({"channels1": [1.0, 1.6]})
    assert restricted.size() == 32**3 // 4
    assert space_from_config(json.loads(json.dumps(restricted.to_config()))).size() == restricted.size()


def test_costs_by_arithmetic():
    space = get_space("spos_channels")
    assert space.count(space.uniform(1.0)) == get_space("spos_blocks").count(get_space("spos_blocks").uniform("3"))
    low, high = space.count(space.uniform(0.2)), space.count(space.uniform(1.6))
    assert (low.flops, high.flops) == (101_887_168, 440_775_872)
    assert space.cost_bounds() == {"params": (low.params, high.params), "flops": (low.flops, high.flops)}
    # The supernet of the joint space: all four candidates at 1.6x in every block.
    joint = get_space("spos_blocks_channels")
    wide = get_space("spos_blocks_channels").count_parts(
        [[(c, joint.mid_widths(b)[-1]) for c in "357x"] for b in joint.layout()])
    assert joint.count_oneshot() == wide
    # Exact bounds without enumeration, checked by enumerating a small space.
    small = SposBlocksChannelsSpace(**{**SMALL, "stage_blocks": (1, 1)}, multipliers=(0.2, 1.0, 1.6))
    costs = [small.count(a) for a in small.enumerate()]
    assert len(costs) == 144
    for metric in ("params", "flops"):
        assert small.cost_bounds()[metric] == (min(getattr(c, metric) for c in costs),
                                               max(getattr(c, metric) for c in costs))


# ------------------------------------------------------------------ models
def test_counts_equal_keras():
    rng = np.random.default_rng(0)
    for space in (CHANNELS, JOINT):
        assert space.build_oneshot(2).count_params() == space.count_oneshot().params
        for arch in [space.sample(rng) for _ in range(3)]:
            model = space.build_standalone(arch, 2)
            assert model.count_params() == space.count(arch).params, str(arch)
            assert _multiply_adds(model) == space.count(arch).flops, str(arch)


@pytest.mark.slow
def test_counts_equal_keras_at_224_pixels():
    """Table 4's extremes at 224 pixels: all choice_3 at 0.2x and 1.6x (Keras models, no forward pass)."""
    space = get_space("spos_channels")
    for arch in (space.uniform(0.2), space.uniform(1.6)):
        model = space.build_standalone(arch)
        assert model.count_params() == space.count(arch).params
        assert _multiply_adds(model) == space.count(arch).flops
    from tf_oneshot.search_spaces.spos_blocks.model import SposBlocksOneShotModel

    assert SposBlocksOneShotModel(space, 8).count_params() == space.count_oneshot().params == 3_981_844


@pytest.fixture(scope="module")
def supernets():
    out = {}
    for seed, space in enumerate((CHANNELS, JOINT)):
        model = space.build_oneshot(GBS)
        _randomize(model, seed)
        out[space.name] = model
    return out


@pytest.mark.parametrize("space,archs,other", [
    (CHANNELS, ["0.2/1.6/0.6", "1.4/0.4/1.0"], "1.6/1.6/1.6"),
    (JOINT, ["x/0.4/5/1.2/3/1.6", "7/1.6/x/0.2/3/0.8"], "x/0.6/5/1.2/3/1.6"),
], ids=["spos_channels", "spos_blocks_channels"])
def test_masked_supernet_equals_sliced_standalone(supernets, space, archs, other):
    oneshot = supernets[space.name]
    images = _images(2 * GBS, seed=1, space=space)
    archs = [space.parse(a) for a in archs]
    # Inference with batch statistics, one architecture per ghost batch.
    both = oneshot({"images": images, **_masks(space, archs)}, training=False).numpy()
    for arch, rows in zip(archs, (slice(0, GBS), slice(GBS, 2 * GBS))):
        for gbs in (GBS, None):
            model = _standalone(space, oneshot, arch, gbs)
            np.testing.assert_allclose(model(images[rows], training=True), both[rows], atol=1e-4)
    wider = _standalone(space, oneshot, space.parse(other))
    assert not np.allclose(wider(images[:GBS], training=True), both[:GBS], atol=1e-2)  # the test has teeth
    # Inference with moving statistics: the stand-alone network took the leading slices of them too.
    oneshot.set_bn_mode("moving")
    try:
        expected = oneshot({"images": images, **space.encode(archs[0])}, training=False)
    finally:
        oneshot.set_bn_mode("batch")
    np.testing.assert_allclose(_standalone(space, oneshot, archs[0])(images, training=False), expected, atol=1e-4)


def _mid_bns(model):
    return [x for x in model.ghost_bn_layers() if isinstance(x, MaskedGhostBatchNormalization)]


def test_batch_norm_statistics_cover_only_active_channels():
    space = SposChannelsSpace(**SMALL)
    oneshot = space.build_oneshot(GBS)
    _randomize(oneshot, seed=7)
    images = _images(2 * GBS, seed=8, space=space)
    narrow, wide = space.parse("0.4/0.2/1.0"), space.parse("1.0/1.2/1.4")
    before = {x.name: (x.moving_mean.numpy(), x.moving_variance.numpy()) for x in _mid_bns(oneshot)}
    # Each sliced network's own update on its own ghost batch, from the same starting statistics.
    updated = {}
    for arch, rows in ((narrow, slice(0, GBS)), (wide, slice(GBS, 2 * GBS))):
        model = _standalone(space, oneshot, arch)
        model(images[rows], training=True)
        updated[arch] = {x.name: (x.moving_mean.numpy(), x.moving_variance.numpy())
                         for x in model.layers if x.name in before}
    oneshot({"images": images, **_masks(space, [narrow, wide])}, training=True)
    for layer in _mid_bns(oneshot):
        a, b = updated[narrow][layer.name], updated[wide][layer.name]
        n, w = len(a[0]), len(b[0])
        assert n < w < layer.moving_mean.shape[0]
        for k, moving in enumerate((layer.moving_mean.numpy(), layer.moving_variance.numpy())):
            # On in both ghost batches: the mean of the two updates; in the wide one only: its update;
            # in neither: untouched (the zeros of masked channels never enter the statistics).
            np.testing.assert_allclose(moving[:n], (a[k] + b[k][:n]) / 2, rtol=1e-5, atol=1e-6)
            np.testing.assert_allclose(moving[n:w], b[k][n:], rtol=1e-5, atol=1e-6)
            np.testing.assert_array_equal(moving[w:], before[layer.name][k][w:])
    # SPOS recalibration of one candidate: exact averages of its active channels, the rest untouched.
    before = {x.name: x.moving_mean.numpy() for x in _mid_bns(oneshot)}
    model = _standalone(space, oneshot, narrow)
    oneshot.set_bn_mode("recalibrate")
    for bn in model.layers:
        if hasattr(bn, "set_mode"):
            bn.set_mode("recalibrate")
    for seed in (9, 10):
        batch = _images(2 * GBS, seed=seed, space=space)
        oneshot({"images": batch, **space.encode(narrow)}, training=False)
        model(batch, training=False)
    oneshot.set_bn_mode("batch")
    for layer in _mid_bns(oneshot):
        expected = model.get_layer(layer.name).moving_mean.numpy()
        np.testing.assert_allclose(layer.moving_mean.numpy()[:len(expected)], expected, rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(layer.moving_mean.numpy()[len(expected):], before[layer.name][len(expected):])


def test_gradients_and_weight_decay_only_on_the_slice(supernets):
    oneshot = supernets[JOINT.name]
    arch = JOINT.parse("x/0.4/5/1.2/3/0.6")
    images = _images(2 * GBS, seed=11, space=JOINT)
    model = _standalone(JOINT, oneshot, arch)
    with tf.GradientTape(persistent=True) as tape:
        loss = tf.reduce_mean(tf.square(oneshot({"images": images, **JOINT.encode(arch)}, training=True)))
        reference = tf.reduce_mean(tf.square(model(images, training=True)))
    # Keyed by layer/weight: the supernet's paths may carry its own name first.
    grads = {"/".join(v.path.split("/")[-2:]): g
             for v, g in zip(oneshot.trainable_variables, tape.gradient(loss, oneshot.trainable_variables))}
    checked = 0
    for v, g in zip(model.trainable_variables, tape.gradient(reference, model.trainable_variables)):
        full = grads["/".join(v.path.split("/")[-2:])].numpy()
        sliced = tuple(slice(0, n) for n in v.shape)
        np.testing.assert_allclose(full[sliced], g.numpy(), rtol=1e-3, atol=1e-5)
        rest = full.copy()
        rest[sliced] = 0.0
        assert not np.any(rest), v.path  # the channels past the slice get no gradient
        checked += full.shape != tuple(v.shape)
    assert checked >= 10  # sliced kernels and batch norms were among them
    # Weight decay: a kernel column on in both ghost batches weighs 1, in one 1/2, in none 0.
    two = [JOINT.parse("x/0.4/5/1.2/3/0.6"), JOINT.parse("x/1.0/5/0.4/3/0.6")]
    with tf.GradientTape() as tape:
        l2 = oneshot.masked_l2(_masks(JOINT, two))
    variables = oneshot.trainable_variables
    l2_grads = dict(zip([v.path for v in variables], tape.gradient(l2, variables)))
    pw1 = next(x for x in oneshot.candidates[0][3]["main"] if x.name == "block0_choice_x_pw1_conv")  # mid -> mid
    n, w = JOINT.mid_widths(JOINT.layout()[0])[1], JOINT.mid_widths(JOINT.layout()[0])[4]  # 0.4x, 1.0x
    kernel, grad = pw1.kernel.numpy(), l2_grads[pw1.kernel.path].numpy()
    share = np.zeros(kernel.shape[2:])
    share[:w, :w] = 0.5
    share[:n, :n] = 1.0
    np.testing.assert_allclose(grad, 2 * kernel * share, rtol=1e-6)
    pw0 = oneshot.candidates[1][1]["main"][0]  # block 1 choice_5's first 1x1: widths 1.2x and 0.4x
    assert pw0.name == "block1_choice_5_pw0_conv"
    n, w = JOINT.mid_widths(JOINT.layout()[1])[1], JOINT.mid_widths(JOINT.layout()[1])[5]
    share = np.zeros(pw0.kernel.shape[-1])
    share[:w] = 0.5
    share[:n] = 1.0
    np.testing.assert_allclose(l2_grads[pw0.kernel.path], 2 * pw0.kernel.numpy() * share, rtol=1e-6)


def test_one_trace_serves_every_width(supernets):
    oneshot = supernets[CHANNELS.name]
    calls = []

    @tf.function(jit_compile=True)
    def logits(inputs):
        calls.append(1)
        return oneshot(inputs, training=False)

    images = _images(2 * GBS, seed=12)
    rng = np.random.default_rng(13)
    for _ in range(5):
        archs = [CHANNELS.sample(rng) for _ in range(2)]
        out = logits({"images": images, **_masks(CHANNELS, archs)})
        model = _standalone(CHANNELS, oneshot, archs[1])
        np.testing.assert_allclose(model(images[GBS:], training=True), out[GBS:], atol=1e-4)
    assert len(calls) == 1
    assert MULTIPLIERS == (0.2, 0.4, 0.6, 0.8, 1.0, 1.2, 1.4, 1.6)
