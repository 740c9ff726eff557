"""Compiled one-shot scoring: batch statistics, SPOS recalibration, KL, no retracing."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from tf_oneshot.errors import UserError
from tf_oneshot.search.scorer import OneShotScorer
from tf_oneshot.search_spaces.bender_cell.standalone import build_standalone_model, copy_oneshot_weights
from tf_oneshot.search_spaces.space_config import build_space
from tf_oneshot.training import data, trainer
from tf_oneshot.training.config import TrainConfig
from tf_oneshot.training.model_dir import ModelDir

CONFIG = TrainConfig(dataset="digits", filters=4, num_cells=2, num_stacks=2, batch_size=32, ghost_batch_size=16)
GHOST = CONFIG.data.ghost_batch_size


@pytest.fixture(scope="module")
def setup():
    keras.utils.set_random_seed(0)
    info = data.dataset_info("digits")
    space = build_space(CONFIG.space, info.image_shape, info.num_classes, info.stem_stride)
    model = ModelDir("", CONFIG, space).build_oneshot(CONFIG.data.batch_size)
    # Give the batch norms non-trivial moving statistics, as training would.
    train = data.make_dataset("digits", "train", 64, training=False)
    images, _ = next(iter(train))
    masks = trainer._tile(space.all_on_masks(), 4)
    for _ in range(3):
        model({"images": images, **masks}, training=True)
    x, y = next(iter(data.make_dataset("digits", "validation", 288, training=False)))
    recal = data.take_images("digits", "train", 96, seed=0)
    kl_images = data.take_images("digits", "train", 64, seed=1)
    rng = np.random.default_rng(0)
    archs = [space.sample(rng) for _ in range(8)]
    scorer = OneShotScorer(model, space, x.numpy(), y.numpy(), archs_per_pass=4, kl_images=kl_images)
    return dict(model=model, space=space, x=x.numpy(), y=y.numpy(), recal=recal, kl=kl_images,
                archs=archs, scorer=scorer)


def test_scores_do_not_depend_on_the_company_of_an_architecture(setup):
    # One architecture per ghost batch: scored with three others or alone (padded),
    # an architecture sees the same ghost batches and gets the same score.
    scorer, archs = setup["scorer"], setup["archs"]
    together = scorer.score(archs)
    alone = [scorer.score([a])[0] for a in archs[:3]]
    for a, b in zip(together, alone):
        assert a["oneshot_accuracy"] == pytest.approx(b["oneshot_accuracy"], abs=1e-6)
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5)
    one_per_pass = OneShotScorer(setup["model"], setup["space"], setup["x"], setup["y"], archs_per_pass=1)
    single = one_per_pass.score(archs[:2])
    for a, b in zip(together, single):
        assert a["oneshot_accuracy"] == pytest.approx(b["oneshot_accuracy"], abs=1e-6)
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5)
    assert len({round(r["loss"], 6) for r in together}) == 8  # different architectures, different scores


def test_scores_equal_the_standalone_model_with_copied_weights(setup):
    # Bender et al. 2018, §3.3: zeroing the unused paths of the one-shot model is
    # evaluating the architecture with the shared weights.
    space, model, arch = setup["space"], setup["model"], setup["archs"][5]
    standalone = build_standalone_model(space, arch, ghost_batch_size=GHOST)
    copy_oneshot_weights(model, standalone, arch)
    for layer in standalone.layers:
        if hasattr(layer, "set_mode"):
            layer.set_mode("batch")  # statistics on the fly, ghost batch by ghost batch
    logits = standalone.predict(setup["x"], batch_size=GHOST * 2, verbose=0)
    accuracy = np.mean(np.argmax(logits, -1) == setup["y"])
    loss = np.mean(keras.losses.sparse_categorical_crossentropy(setup["y"], logits, from_logits=True))
    score = setup["scorer"].score([arch])[0]
    assert score["oneshot_accuracy"] == pytest.approx(accuracy, abs=1e-6)
    assert score["loss"] == pytest.approx(float(loss), rel=1e-4)


def test_scoring_never_retraces_per_architecture(setup):
    scorer = setup["scorer"]
    scorer.score(setup["archs"][:4])
    before = scorer.tracing_count()
    rng = np.random.default_rng(7)
    for n in (4, 3, 1, 4):  # short batches are padded, not retraced
        scorer.score([setup["space"].sample(rng) for _ in range(n)])
    assert scorer.tracing_count() == before


def test_kl_is_zero_for_the_reference_and_matches_its_definition(setup):
    scorer, space, model = setup["scorer"], setup["space"], setup["model"]
    arch = setup["archs"][2]
    kl_arch = scorer.score([arch])[0]["kl"]
    # The all-on reference (7 ops per block: outside the space) against itself.
    on = space.all_on_masks()
    masks = {k: np.repeat(on[k][None], 4, 0) for k in ("input_mask", "op_mask")}
    assert scorer._kl_batch(masks) == pytest.approx([0.0] * 4, abs=1e-5)
    # §5: D(p||q) + D(q||p) per example, averaged over the 64 training examples.
    model.set_bn_mode("batch")

    def probs(masks):
        masks = trainer._tile(masks, 64 // GHOST)
        return tf.nn.softmax(model({"images": setup["kl"], **masks}, training=False)).numpy().astype(np.float64)

    p, q = probs(space.all_on_masks()), probs(space.encode(arch))
    expected = np.mean(np.sum(p * np.log(p / q) + q * np.log(q / p), -1))
    assert kl_arch == pytest.approx(expected, rel=1e-3)
    assert kl_arch > 1e-3


def test_kl_against_references_sampled_at_r_1e8_as_in_section_5(setup):
    model, space = setup["model"], setup["space"]
    sampled = OneShotScorer(model, space, setup["x"], setup["y"], archs_per_pass=4, kl_images=setup["kl"],
                            kl_reference="sampled", step=7)
    references = sampled._reference_masks(2)
    # r = 1e-8: p = r^(1/k) drops ~7% of a block's 7 ops and ~0.01% of 2 inputs, so the
    # references are almost, but not exactly, the all-on network (§5).
    ops = references["op_mask"].numpy()
    assert ops.shape[0] == 2 and 0.5 < ops.sum() / ops.size < 1.0
    arch = setup["archs"][2]
    kl_sampled = sampled.score([arch])[0]["kl"]
    kl_all_on = setup["scorer"].score([arch])[0]["kl"]
    assert kl_sampled > 1e-3 and kl_sampled != pytest.approx(kl_all_on, rel=1e-6)
    with pytest.raises(UserError, match="kl_reference"):
        OneShotScorer(model, space, setup["x"], setup["y"], kl_images=setup["kl"], kl_reference="most")


def test_recalibration_is_the_exact_average_then_moving_statistics(setup):
    # SPOS §3.4: BN statistics recomputed for each candidate on training images.
    space, model, arch = setup["space"], setup["model"], setup["archs"][1]
    scorer = OneShotScorer(model, space, setup["x"], setup["y"], bn_mode="recalibrate",
                           recalibration_images=setup["recal"])
    assert scorer.archs_per_pass == 1
    first = scorer.score([arch, setup["archs"][3]])
    traces = scorer.tracing_count()
    again = scorer.score([arch])[0]
    assert scorer.tracing_count() == traces
    assert again == pytest.approx(first[0], rel=1e-6)  # nothing leaks from the previous candidate
    # The same procedure by hand, eagerly.
    model.set_bn_mode("recalibrate")
    for i in range(0, 96, 48):
        model({"images": setup["recal"][i : i + 48], **trainer._tile(space.encode(arch), 3)}, training=False)
    model.set_bn_mode("moving")
    logits = model({"images": setup["x"], **trainer._tile(space.encode(arch), 288 // GHOST)}, training=False)
    model.set_bn_mode("batch")
    assert first[0]["oneshot_accuracy"] == pytest.approx(np.mean(np.argmax(logits, -1) == setup["y"]), abs=1e-6)
    batch_mode = setup["scorer"].score([arch])[0]
    assert batch_mode["loss"] != pytest.approx(first[0]["loss"], rel=1e-3)


def test_running_statistics_score_with_the_moving_averages_as_trained(setup):
    # "Deeper insights" App. A.2.2: scoring with the BN running statistics the
    # shared weights hold, the same for every candidate (several per pass).
    space, model, archs = setup["space"], setup["model"], setup["archs"]
    scorer = OneShotScorer(model, space, setup["x"], setup["y"], bn_mode="running", archs_per_pass=4,
                           kl_images=setup["kl"])
    records = scorer.score(archs[:5])
    model.set_bn_mode("moving")
    for arch, record in zip(archs[:5], records):
        logits = model({"images": setup["x"], **trainer._tile(space.encode(arch), 288 // GHOST)}, training=False)
        assert record["oneshot_accuracy"] == pytest.approx(np.mean(np.argmax(logits, -1) == setup["y"]), abs=1e-6)
    model.set_bn_mode("batch")
    assert records[0]["kl"] == pytest.approx(setup["scorer"].score([archs[0]])[0]["kl"], rel=1e-5)  # §5: batch
    assert scorer.score(archs[:1])[0] == pytest.approx(records[0], rel=1e-6)  # after the KL's batch statistics
    assert records[0]["loss"] != pytest.approx(setup["scorer"].score([archs[0]])[0]["loss"], rel=1e-3)
    with pytest.raises(UserError, match="--bn_mode=batch or --bn_mode=recalibrate or --bn_mode=running"):
        OneShotScorer(model, space, setup["x"], setup["y"], bn_mode="moving")


def test_bad_scorer_input_is_a_user_error(setup, tmp_path):
    with pytest.raises(UserError, match="unknown bn_mode 'global'"):
        OneShotScorer(setup["model"], setup["space"], setup["x"], setup["y"], bn_mode="global")
    with pytest.raises(UserError, match="fewer than one ghost batch"):
        OneShotScorer(setup["model"], setup["space"], setup["x"][:5], setup["y"][:5], archs_per_pass=1)
    with pytest.raises(UserError, match="does not exist"):
        OneShotScorer.from_model_dir(str(tmp_path / "nope"))
