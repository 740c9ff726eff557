"""The spos_quant spaces (SPOS, Guo et al. 2019, §3.3, Figure 3c, §4, Table 6): quantizers, block, costs, models."""

import numpy as np
import pytest
import tensorflow as tf

from tf_oneshot.errors import UserError
from tf_oneshot.layers.quantize import PACT, QuantizedConv2D, dorefa_weights, pact
from tf_oneshot.search_spaces import get_space, space_from_config
from tf_oneshot.search_spaces.spos_quant.space import BIT_PAIRS, BlockLayout, SposQuantResNet18Space

# Two stages of one block at 8x8: an identity-shortcut block (4 -> 4) and a projection block (4 -> 8, stride 2).
TINY = SposQuantResNet18Space(image_shape=(8, 8, 1), num_classes=3, stem_stride=1, stage_blocks=(1, 1),
                              channels=(4, 4, 8))
GBS = 4


# ------------------------------------------------------- NumPy references
def np_levels(bits):
    return 2.0**bits - 1.0


def np_pact(x, alpha, bits):
    """PACT (Choi et al. 2018): clip to [0, alpha], round to 2^k - 1 steps."""
    n = np_levels(bits)
    return np.round(np.clip(x, 0.0, alpha) * n / alpha) * alpha / n


def np_dorefa(w, bits):
    """DoReFa (Zhou et al. 2016): sign * mean|w| at 1 bit, else 2 q(tanh w / (2 max|tanh w|) + 1/2) - 1."""
    if bits == 1:
        return np.sign(w) * np.abs(w).mean()
    t = np.tanh(w)
    n = np_levels(bits)
    return 2.0 * np.round((t / (2.0 * np.abs(t).max()) + 0.5) * n) / n - 1.0


def tie_margin(values):
    """Distance of values (in units of the quantizer step) from a rounding tie."""
    return float(np.min(np.abs(values - np.floor(values) - 0.5)))


def np_conv(x, w, stride):
    """A "same" convolution as TensorFlow pads it (the extra pixel after)."""
    n, h, wd, _ = x.shape
    k = w.shape[0]
    ho, wo = -(-h // stride), -(-wd // stride)
    ph, pw = max((ho - 1) * stride + k - h, 0), max((wo - 1) * stride + k - wd, 0)
    x = np.pad(x, ((0, 0), (ph // 2, ph - ph // 2), (pw // 2, pw - pw // 2), (0, 0)))
    out = np.zeros((n, ho, wo, w.shape[-1]))
    for i in range(ho):
        for j in range(wo):
            patch = x[:, i * stride:i * stride + k, j * stride:j * stride + k, :]
            out[:, i, j, :] = np.tensordot(patch, w, axes=([1, 2, 3], [0, 1, 2]))
    return out


def np_bn(x, gamma, beta, eps=1e-3):
    """Batch norm with the batch's (biased) statistics, as keras.layers.BatchNormalization in training."""
    mean, var = x.mean((0, 1, 2)), x.var((0, 1, 2))
    return (x - mean) / np.sqrt(var + eps) * gamma + beta


def _randomize(model, seed=0):
    """Random values for every weight (BN gammas, variances and PACT alphas positive), so a wrong copy shows."""
    rng = np.random.default_rng(seed)
    for w in model.weights:
        value = rng.normal(scale=0.5, size=w.shape)
        if "variance" in w.path or "gamma" in w.path:
            value = 0.5 + np.abs(value)
        if "alpha" in w.path:
            value = 0.8 + np.abs(value)
        w.assign(value.astype("float32"))


def _images(n, seed=0, space=TINY):
    return np.random.default_rng(seed).normal(size=(n, *space.image_shape)).astype("float32")


def _masks(space, archs):
    return {k: tf.constant(v) for k, v in space.encode_batch(archs).items()}


# -------------------------------------------------------------- the space
def test_sizes_decisions_and_table6_bitops():
    r18, r34 = get_space("spos_quant_resnet18"), get_space("spos_quant_resnet34")
    assert r18.size() == 18**8 and r34.size() == 18**16
    assert r18.default_sampler == r34.default_sampler == "uniform"
    assert [d.name for d in r18.decisions()][:2] == ["block0_bits", "block0_channels"]
    assert len(r34.layout()) == 16 and [b.stride for b in r18.layout()] == [1, 1, 2, 1, 2, 1, 2, 1]
    # Table 6's kWkA baselines, its "G" being 2^30 (module docstring of `space`).
    table6 = {r18: {2: 6.32, 4: 25.27}, r34: {2: 13.21, 4: 52.83}}
    for space, figures in table6.items():
        for k, giga in figures.items():
            assert round(space.count(space.uniform((k, k))).bitops / 2**30, 2) == giga
    assert r18.count(r18.uniform((2, 2))).flops == 1_814_073_344  # ResNet-18's well-known 1.8G
    bounds = r18.cost_bounds()
    assert set(bounds) == {"params", "flops", "bitops"}
    low, high = r18.count(r18.uniform((1, 2), 0.5)), r18.count(r18.uniform((4, 4), 1.5))
    assert bounds["bitops"] == (low.bitops, high.bitops) and bounds["flops"] == (low.flops, high.flops)


def test_bad_bit_pair_or_multiplier_is_one_user_error_line():
    for bad in [lambda: TINY.uniform((3, 2)), lambda: TINY.uniform((4, 8)),
                lambda: TINY.parse("w3a2/1.0/w2a2/1.0"), lambda: TINY.uniform((2, 2), 0.7),
                lambda: TINY.architecture([(2, 2)], [1.0])]:
        with pytest.raises(UserError) as error:
            bad()
        assert "\n" not in str(error.value)
    with pytest.raises(UserError, match=r"\(3, 2\) is not in SPOS's set"):
        TINY.uniform((3, 2))
    with pytest.raises(UserError, match="block0_bits"):
        TINY.parse("w3a2/1.0/w2a2/1.0")
    arch = TINY.architecture([(1, 2), (3, 4)], [0.5, 1.5])
    assert str(arch) == "w1a2/0.5/w3a4/1.5" and TINY.parse(str(arch)) == arch
    assert TINY.block_choices(arch) == [((1, 2), 0.5), ((3, 4), 1.5)]


def test_fields_are_checked_and_config_round_trips():
    for bad in [{"channels": (4, 1, 8)}, {"stem_stride": 3}, {"stage_blocks": "1:x"}, {"channels": (4, 4)},
                {"width_multiplier": 0}]:
        with pytest.raises(UserError):
            get_space("spos_quant_resnet18", **bad)
    space = get_space("spos_quant_resnet34", width_multiplier=0.25, image_shape=(32, 32, 3), num_classes=10,
                      stem_stride=1)
    assert space.stage_channels == (16, 32, 64, 128) and space.stem_channels == 16
    assert space.stage_blocks == (3, 4, 6, 3) and not space.layout()[0].projection
    assert space_from_config(space.to_config()) == space
    assert [b.mids for b in TINY.layout()] == [(2, 4, 6), (4, 8, 12)]


def test_bitops_of_one_block_by_hand():
    # 8x8x4 -> 4x4x8 with stride 2 and a projection; 0.5x bottleneck = 4 channels; w2a4.
    block = BlockLayout(0, 0, 2, 4, 8, (8, 8), (4, 4))
    cost = SposQuantResNet18Space.block_cost(block, (2, 4), 4)
    macs = 16 * (9 * 4 * 4) + 16 * (9 * 4 * 8) + 16 * (4 * 8)  # conv1, conv2, projection
    assert cost.flops == macs == 7424 and cost.bitops == macs * 2 * 4
    assert cost.params == 9 * 4 * 4 + 4 * 4 + 9 * 4 * 8 + 4 * 8 + 4 * 8 + 4 * 8 + 2


def _keras_bitops(model) -> int:
    """BitOps walked from a stand-alone Keras model: each quantized conv's MACs x its bits x its input's bits."""
    bits = {layer.name: layer.bits for layer in model.layers if isinstance(layer, PACT)}
    total = 0
    for layer in model.layers:
        if isinstance(layer, QuantizedConv2D):
            _, h, w, c_out = layer.output.shape
            macs = h * w * int(np.prod(layer.kernel_size)) * layer.input.shape[-1] * c_out
            source = layer.name.replace("_conv2", "_pact2").replace("_proj_conv", "_pact1").replace("_conv1", "_pact1")
            total += macs * layer.weight_bits * bits[source]
    return total


def test_counts_and_bitops_equal_the_keras_models():
    rng = np.random.default_rng(0)
    for arch in [TINY.sample(rng) for _ in range(4)]:
        model = TINY.build_standalone(arch, GBS)
        assert model.count_params() == TINY.count(arch).params
        assert _keras_bitops(model) == TINY.count(arch).bitops
    assert TINY.build_oneshot(GBS).count_params() == TINY.count_oneshot().params
    r18 = get_space("spos_quant_resnet18")
    arch = r18.sample(rng)
    model = r18.build_standalone(arch)
    assert model.count_params() == r18.count(arch).params and _keras_bitops(model) == r18.count(arch).bitops


# ------------------------------------------------------------- quantizers
@pytest.mark.parametrize("bits", [1, 2, 3, 4])
def test_weight_quantizer_matches_numpy_and_masks_its_statistics(bits):
    rng = np.random.default_rng(bits)
    w = rng.normal(scale=0.3, size=(3, 3, 4, 6)).astype("float32")
    expected = np_dorefa(w.astype(np.float64), bits)
    np.testing.assert_allclose(dorefa_weights(tf.constant(w), bits), expected, atol=1e-5)
    assert len(np.unique(np.round(expected, 5))) <= 2**bits
    # A 1.5x kernel masked to its first 4 outputs quantizes as the 4-output slice, 0 elsewhere.
    mask = np.zeros((1, 1, 1, 6), np.float32)
    mask[..., :4] = 1.0
    masked = dorefa_weights(tf.constant(w), tf.constant(float(bits)), tf.constant(mask)).numpy()
    np.testing.assert_allclose(masked[..., :4], np_dorefa(w[..., :4].astype(np.float64), bits), atol=1e-5)
    assert not masked[..., 4:].any()


@pytest.mark.parametrize("bits", [1, 2, 3, 4])
def test_pact_matches_numpy(bits):
    x = np.random.default_rng(bits).normal(scale=2.0, size=(64,)).astype("float32")
    alpha = 1.7
    got = pact(tf.constant(x), tf.constant(alpha), tf.constant(float(bits))).numpy()
    np.testing.assert_allclose(got, np_pact(x.astype(np.float64), alpha, bits), atol=1e-5)
    assert got.min() == 0.0 and np.isclose(got.max(), alpha) and len(np.unique(got)) <= 2**bits


def test_straight_through_gradients():
    x = tf.constant(np.arange(-1.0, 3.0, 0.1, dtype=np.float32) + 0.05)  # no point at 0 or alpha
    alpha = tf.Variable(2.0)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(x)
        y = tf.reduce_sum(pact(x, alpha, 2.0))
    # PACT Eq. 3: dy/dx = 1 on [0, alpha] and 0 outside, dy/dalpha = 1 for each x above alpha.
    inside = ((x.numpy() > 0.0) & (x.numpy() < 2.0)).astype("float32")
    np.testing.assert_array_equal(tape.gradient(y, x).numpy(), inside)
    assert tape.gradient(y, alpha).numpy() == (x.numpy() > 2.0).sum()
    w = tf.Variable(np.random.default_rng(0).normal(scale=0.3, size=(3, 3, 2, 2)).astype("float32"))
    weights = tf.constant(np.random.default_rng(1).normal(size=(3, 3, 2, 2)).astype("float32"))
    for bits in (1.0, 3.0):
        with tf.GradientTape() as tape:
            got = tf.reduce_sum(dorefa_weights(w, tf.constant(bits)) * weights)
        with tf.GradientTape() as tape2:
            # The surrogate without rounding: identity at 1 bit, tanh(w) / max|tanh w| above.
            t = tf.tanh(w)
            surrogate = w if bits == 1.0 else t / tf.reduce_max(tf.abs(t))
            want = tf.reduce_sum(surrogate * weights)
        np.testing.assert_allclose(tape.gradient(got, w), tape2.gradient(want, w), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("bits", [(1, 2), (2, 4), (3, 4)])
def test_a_quantized_block_against_numpy(bits):
    """The projection block of TINY, stand-alone layers at `bits`, against a float64 NumPy forward."""
    from tf_oneshot.search_spaces.spos_quant.model import block_layers

    block = TINY.layout()[1]
    mid = block.mids[0]
    layers = block_layers(block, None, mid=mid, bits=bits)
    x = np.random.default_rng(7).normal(size=(2, 4, 4, 4)).astype("float32")
    def forward():
        q = layers["pact1"](x)
        h = layers["pact2"](layers["bn1"](layers["conv1"](q), training=True))
        y = layers["bn2"](layers["conv2"](h), training=True)
        return tf.nn.relu(y + layers["proj_bn"](layers["proj_conv"](q), training=True)).numpy()

    forward()  # builds the layers
    _randomize_layers(layers.values())
    out = forward()

    w_bits, a_bits = bits
    alpha1, alpha2 = (float(layers[n].alpha.numpy()) for n in ("pact1", "pact2"))
    x64 = x.astype(np.float64)
    kernels = {n: layers[n].kernel.numpy().astype(np.float64) for n in ("conv1", "conv2", "proj_conv")}
    bn = {n: (layers[n].gamma.numpy(), layers[n].beta.numpy()) for n in ("bn1", "bn2", "proj_bn")}
    n = np_levels(a_bits)
    # The reference is well conditioned: no value float32 could round the other way.
    assert tie_margin(np.clip(x64, 0, alpha1) * n / alpha1) > 1e-4
    for kernel in kernels.values():
        t = np.tanh(kernel)
        assert w_bits == 1 or tie_margin((t / (2 * np.abs(t).max()) + 0.5) * np_levels(w_bits)) > 1e-4
    q_ref = np_pact(x64, alpha1, a_bits)
    h_pre = np_bn(np_conv(q_ref, np_dorefa(kernels["conv1"], w_bits), 2), *bn["bn1"])
    assert tie_margin(np.clip(h_pre, 0, alpha2) * n / alpha2) > 1e-4
    h_ref = np_pact(h_pre, alpha2, a_bits)
    y_ref = np_bn(np_conv(h_ref, np_dorefa(kernels["conv2"], w_bits), 1), *bn["bn2"])
    shortcut = np_bn(np_conv(q_ref, np_dorefa(kernels["proj_conv"], w_bits), 2), *bn["proj_bn"])
    np.testing.assert_allclose(out, np.maximum(y_ref + shortcut, 0.0), atol=1e-4)
    assert len(np.unique(h_ref)) <= 2**a_bits


def _randomize_layers(layers, seed=3):
    rng = np.random.default_rng(seed)
    for layer in layers:
        for w in layer.weights:
            value = rng.normal(scale=0.5, size=w.shape)
            if "gamma" in w.path or "variance" in w.path:
                value = 0.5 + np.abs(value)
            if "alpha" in w.path:
                value = 1.0 + np.abs(value)
            w.assign(value.astype("float32"))


# ------------------------------------------------------------------ models
@pytest.fixture(scope="module")
def oneshot():
    model = TINY.build_oneshot(GBS)
    _randomize(model)
    return model


def test_oneshot_equals_standalone_for_each_ghost_batch(oneshot):
    archs = [TINY.architecture([(1, 2), (4, 4)], [0.5, 1.5]), TINY.architecture([(3, 4), (1, 4)], [1.5, 1.0]),
             TINY.architecture([(2, 2), (2, 4)], [1.0, 0.5])]
    images = _images(len(archs) * GBS)
    both = oneshot({"images": images, **_masks(TINY, archs)}, training=True).numpy()
    outputs = []
    for g, arch in enumerate(archs):
        rows = slice(g * GBS, (g + 1) * GBS)
        standalone = TINY.build_standalone(arch, GBS)
        TINY.inherit_weights(oneshot, standalone, arch)
        np.testing.assert_allclose(standalone(images[rows], training=True), both[rows], atol=1e-4)
        alone = oneshot({"images": images[rows], **_masks(TINY, [arch])}, training=False).numpy()
        np.testing.assert_allclose(alone, both[rows], atol=1e-4)  # batch statistics: one ghost batch alone
        outputs.append(oneshot({"images": images[:GBS], **_masks(TINY, [arch])}, training=False).numpy())
    assert all(np.abs(outputs[0] - o).max() > 1e-3 for o in outputs[1:])  # the choices change the network
    # All-on masks run the most precise, widest network (4W4A, 1.5x).
    widest = TINY.uniform((4, 4), 1.5)
    on = {k: tf.constant(v) for k, v in TINY.all_on_masks().items()}
    np.testing.assert_allclose(oneshot({"images": images[:GBS], **on}, training=False),
                               oneshot({"images": images[:GBS], **_masks(TINY, [widest])}, training=False),
                               atol=1e-5)


def test_moving_statistics_and_l2_follow_the_active_channels(oneshot):
    arch = TINY.architecture([(2, 2), (2, 2)], [0.5, 0.5])  # bottlenecks of 2 and 4 of 6 and 12 channels
    bn1 = oneshot.get_layer("block1_bn1")
    before = bn1.moving_mean.numpy().copy()
    oneshot({"images": _images(GBS, 1), **_masks(TINY, [arch])}, training=True)
    after = bn1.moving_mean.numpy()
    assert np.all(after[:4] != before[:4]) and np.array_equal(after[4:], before[4:])
    masks = _masks(TINY, [arch])
    with tf.GradientTape() as tape:
        l2 = oneshot.masked_l2(masks)
    conv1, conv2, alpha = (oneshot.get_layer(n) for n in ("block1_conv1", "block1_conv2", "block1_pact1"))
    g1, g2, ga = tape.gradient(l2, [conv1.kernel, conv2.kernel, alpha.alpha])
    assert np.all(g1.numpy()[..., 4:] == 0) and np.all(g1.numpy()[..., :4] != 0)
    assert np.all(g2.numpy()[:, :, 4:, :] == 0) and np.all(g2.numpy()[:, :, :4, :] != 0)
    assert np.isclose(ga.numpy(), 2 * alpha.alpha.numpy())  # PACT's L2 on alpha


def test_one_trace_serves_every_bit_width(oneshot):
    calls = []

    @tf.function
    def logits(inputs):
        calls.append(1)
        return oneshot(inputs, training=False)

    rng = np.random.default_rng(5)
    images = _images(2 * GBS)
    for _ in range(5):
        logits({"images": images, **_masks(TINY, [TINY.sample(rng), TINY.sample(rng)])})
    assert len(calls) == 1


def test_unknown_batch_size_maps_over_ghost_batches(oneshot):
    rng = np.random.default_rng(6)
    masks = _masks(TINY, [TINY.sample(rng) for _ in range(3)])
    images = _images(3 * GBS)
    expected = oneshot({"images": images, **masks}, training=False)
    spec = {"images": tf.TensorSpec([None, *TINY.image_shape]),
            **{k: tf.TensorSpec([None, *v.shape[1:]]) for k, v in masks.items()}}
    dynamic = tf.function(lambda inputs: oneshot(inputs, training=False), input_signature=[spec])
    np.testing.assert_allclose(dynamic({"images": tf.constant(images), **masks}), expected, atol=1e-5)


def test_standalone_saves_and_loads(tmp_path):
    import keras

    arch = TINY.architecture([(1, 4), (3, 4)], [1.5, 0.5])
    model = TINY.build_standalone(arch, GBS)
    _randomize(model)
    path = str(tmp_path / "m.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    images = _images(GBS)
    np.testing.assert_allclose(loaded(images, training=False), model(images, training=False), atol=1e-6)
    assert {layer.weight_bits for layer in loaded.layers if isinstance(layer, QuantizedConv2D)} == {1, 3}


def test_bit_pairs_are_the_papers():
    assert BIT_PAIRS == ((1, 2), (2, 2), (1, 4), (2, 4), (3, 4), (4, 4))


def test_a_stand_alone_child_decays_its_pact_clips_as_the_one_shot_model_does(oneshot):
    """PACT regularizes its clip value with L2 (Choi et al. 2018, §2): the masked and the stand-alone
    ground truths of a quantized child must decay the same weights (issue 19)."""
    import keras

    from tf_oneshot.layers import nested_layers
    from tf_oneshot.training.tasks import StandaloneTask

    arch = TINY.architecture([(2, 2), (2, 2)], [0.5, 0.5])
    child = TINY.build_standalone(arch, GBS)
    TINY.inherit_weights(oneshot, child, arch)
    task = StandaloneTask(child, keras.optimizers.SGD(0.1), GBS, 1, 1e-4)
    alphas = [layer.alpha for layer in nested_layers(child) if isinstance(layer, PACT)]
    assert alphas and all(any(a is k for k in task.kernels) for a in alphas)
    plain = float(sum(np.sum(np.square(k.numpy())) for k in task.kernels))
    assert np.isclose(plain, float(oneshot.masked_l2(_masks(TINY, [arch]))), rtol=1e-5)
