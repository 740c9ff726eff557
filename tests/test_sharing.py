"""Partial weight sharing ("Deeper insights", §4.2-4.3) and the child orders of §3.2 (Table 1)."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from tf_oneshot.errors import UserError
from tf_oneshot.search_spaces import get_space
from tf_oneshot.search_spaces.sharing import COPY_KEY, SharedSpace, apply_sharing, group_assignment, make_plan
from tf_oneshot.search_spaces.space_config import build_space
from tf_oneshot.training.config import TrainConfig
from tf_oneshot.training.model_dir import ModelDir
from tf_oneshot.training.samplers import make_sampler

GBS = 4
TINY = get_space("darts64", stem_filters=4, filters=4, num_cells=1, image_shape=(8, 8, 1), num_classes=3)
# Four children (111, 121, 211, 221): enough to tell copies apart, cheap to build one copy each.
FOUR = TINY.restrict({"edge_01": (1, 2), "edge_02": (1, 2), "edge_12": (1,)})


def _batch(seed=0, n=GBS):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 8, 8, 1)).astype("float32"), rng.integers(0, 3, n).astype("int32")


def _train_step(model, space, arch, images, labels, lr=0.1):
    """One SGD step of child `arch` with the trainer's loss: cross-entropy + masked L2."""
    masks = {k: tf.constant(v[None]) for k, v in space.encode(arch).items()}
    with tf.GradientTape() as tape:
        logits = model({"images": images, **masks}, training=True)
        loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels, logits))
        loss += 1e-3 * model.masked_l2(masks)
    variables = model.trainable_variables
    grads = tape.gradient(loss, variables)
    for v, g in zip(variables, grads):
        if g is not None:
            v.assign_sub(lr * tf.convert_to_tensor(g))


def _name(weight) -> str:
    """A weight's path inside its model (layer/weight), without the model's own name."""
    return weight.path.split("/", 1)[1]


def _logits(model, space, arch, images):
    masks = {k: tf.constant(v) for k, v in space.encode(arch).items()}  # one child for every ghost batch
    return model({"images": images, **masks}, training=False).numpy()


def test_one_group_is_full_sharing():
    shared = apply_sharing(TINY, "group", groups=1)
    assert isinstance(shared, SharedSpace) and shared.mask_shapes()[COPY_KEY] == (1,)
    keras.utils.set_random_seed(3)
    full = TINY.build_oneshot(GBS)
    keras.utils.set_random_seed(3)
    group = shared.build_oneshot(GBS)
    assert [_name(w) for w in full.weights] == [_name(w) for w in group.weights]
    for a, b in zip(full.weights, group.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    images, labels = _batch()
    for arch in ("123", "412"):
        _train_step(full, TINY, TINY.parse(arch), images, labels)
        _train_step(group, shared, TINY.parse(arch), images, labels)
    test_images, _ = _batch(seed=1, n=2 * GBS)
    for arch in ("123", "444"):
        np.testing.assert_allclose(_logits(full, TINY, TINY.parse(arch), test_images),
                                   _logits(group, shared, TINY.parse(arch), test_images), atol=1e-6)


def test_a_group_per_child_isolates_children():
    shared = apply_sharing(FOUR, "group", groups=4, grouping="similarity")
    assert sorted(shared.plan.assignment) == [0, 1, 2, 3]
    keras.utils.set_random_seed(0)
    model = shared.build_oneshot(GBS)
    images, labels = _batch()
    test_images, _ = _batch(seed=1, n=2 * GBS)
    trained, other = FOUR.parse("111"), FOUR.parse("221")
    before = {str(a): _logits(model, shared, a, test_images) for a in (trained, other)}
    _train_step(model, shared, trained, images, labels, lr=0.5)
    assert np.abs(_logits(model, shared, trained, test_images) - before["111"]).max() > 1e-3
    np.testing.assert_array_equal(_logits(model, shared, other, test_images), before["221"])


def test_prefix_zero_shares_only_the_stem():
    shared = apply_sharing(FOUR, "prefix", prefix=0)
    assert shared.plan.copies == 4 and shared.plan.shared_segments == 1
    keras.utils.set_random_seed(0)
    model = shared.build_oneshot(GBS)
    assert [model.segment_copies(s) for s in range(3)] == [1, 4, 4]  # stem, the cell, the head
    values = {_name(w): w.numpy() for w in model.trainable_variables}
    images, labels = _batch()
    _train_step(model, shared, FOUR.parse("121"), images, labels, lr=0.5)  # child 121 reads copy 1
    changed = {_name(w) for w in model.trainable_variables if not np.array_equal(values[_name(w)], w.numpy())}
    stem = {p for p in changed if p.startswith("stem")}
    assert stem, changed  # the shared stem learns from every child
    assert any(p.startswith("copy1_cell0") for p in changed) and any(p.startswith("copy1_classifier") for p in changed)
    assert all(p.startswith("copy1_") for p in changed - stem), sorted(changed - stem)


def test_prefix_child_inherits_its_own_copy():
    shared = apply_sharing(FOUR, "prefix", prefix=1)  # the cell is shared; the head is each child's
    model = shared.build_oneshot(GBS)
    rng = np.random.default_rng(0)
    for w in model.weights:
        w.assign(rng.normal(scale=0.3, size=w.shape).astype("float32") + (1.0 if "variance" in w.path else 0.0))
    images, _ = _batch(seed=2)
    arch = FOUR.parse("211")
    standalone = FOUR.build_standalone(arch, GBS)
    shared.inherit_weights(model, standalone, arch)
    for layer in standalone.layers:
        if hasattr(layer, "set_mode"):
            layer.set_mode("batch")
    np.testing.assert_allclose(standalone(images, training=False), _logits(model, shared, arch, images), atol=1e-4)


def test_similarity_groups_are_lexicographic_slices():
    darts = get_space("darts64")
    plan = make_plan(darts, "group", groups=8, grouping="similarity")
    groups = plan.groups()
    assert groups[0] == ["111", "112", "113", "114", "121", "122", "123", "124"]  # §4.2.2's example
    assert groups[1][0] == "131" and groups[1][-1] == "144" and groups[2][0] == "211"
    flat = [c for g in groups for c in g]
    assert flat == sorted(flat) and all(len(g) == 8 for g in groups)
    # Uneven slices differ by at most one child and stay contiguous.
    assert group_assignment(5, 2, "similarity") == [0, 0, 0, 1, 1]
    assert group_assignment(5, 2, "similarity", order=[4, 3, 2, 1, 0]) == [1, 1, 0, 0, 0]


def test_random_groups_are_balanced_and_seeded():
    a = group_assignment(64, 16, "random", seed=0)
    assert np.bincount(a).tolist() == [4] * 16
    assert a == group_assignment(64, 16, "random", seed=0) != group_assignment(64, 16, "random", seed=1)
    assert a != group_assignment(64, 16, "similarity")


@pytest.mark.parametrize("kwargs, message", [
    ({"mode": "group", "groups": 0}, "sharing_groups=0"),
    ({"mode": "group", "groups": 65}, "1..64"),
    ({"mode": "prefix", "prefix": 2}, "0..1 shared cells"),
    ({"mode": "group", "groups": 2, "grouping": "close"}, "sharing_grouping=close"),
    ({"mode": "halves"}, "sharing=halves"),
])
def test_bad_plans_say_what_is_right(kwargs, message):
    with pytest.raises(UserError, match=message):
        make_plan(TINY, **kwargs)


def test_a_space_without_copies_is_refused_in_one_line():
    cell = get_space("bender_cell", image_shape=(8, 8, 1), num_classes=3)
    with pytest.raises(UserError, match="sharing_segments") as info:
        make_plan(cell, "group", groups=2)
    assert "\n" not in str(info.value)


def test_the_model_dir_records_the_sharing(tmp_path):
    config = TrainConfig(space="darts64", sharing="group", sharing_groups=4, sharing_grouping="similarity")
    space = build_space(config.space, (8, 8, 1), 10)
    assert isinstance(space, SharedSpace) and space.plan.copies == 4
    ModelDir.create(str(tmp_path), config, space)
    recorded = ModelDir.read(str(tmp_path))
    recorded_config, recorded_space = recorded.config, recorded.space
    assert recorded_space == space and recorded_config.space.sharing_groups == 4
    with pytest.raises(UserError, match=r"sharing_groups=4 \(this run asks for 2\)"):
        ModelDir.create(str(tmp_path), config.replace(sharing_groups=2),
                        build_space(config.replace(sharing_groups=2).space, (8, 8, 1), 10))
    with pytest.raises(UserError, match="--sharing=most"):
        TrainConfig(sharing="most")


def test_sharing_needs_a_sampler_of_whole_children():
    from tf_oneshot.training.trainer import make_run_sampler

    config = TrainConfig(space="darts64", sharing="group", sharing_groups=2, sampler="path_dropout")
    space = build_space(config.space, (8, 8, 1), 10)
    with pytest.raises(UserError, match="needs a sampler that draws whole children"):
        make_run_sampler(config, space)
    assert make_run_sampler(config.replace(sampler="cyclic"), space).name == "cyclic"


@pytest.mark.parametrize("name, reshuffles", [("cyclic", False), ("shuffled", True)])
def test_child_orders(name, reshuffles):
    space = FOUR
    sampler = make_sampler(name, space, seed=5)
    children = {str(a) for a in space.enumerate()}

    def step_children(step, ghosts=2):
        masks = sampler.host_masks(step, ghosts)
        by_values = {tuple(np.concatenate([v for _, v in sorted(space.encode(a).items())])): str(a)
                     for a in space.enumerate()}
        return [by_values[tuple(np.concatenate([masks[k][g] for k in sorted(masks)]))] for g in range(ghosts)]

    first = step_children(0) + step_children(1)  # ghost batches 0..3: one pass over the 4 children
    second = step_children(2) + step_children(3)
    assert set(first) == children and set(second) == children
    passes = [[str(sampler.child(i)) for i in range(p * 4, p * 4 + 4)] for p in range(6)]
    assert passes[0] == first and passes[1] == second
    assert (len({tuple(p) for p in passes}) > 1) == reshuffles
    again = make_sampler(name, space, seed=5)
    assert [str(again.child(i)) for i in range(24)] == [c for p in passes for c in p]
    other = make_sampler(name, space, seed=6)
    assert [str(other.child(i)) for i in range(24)] != [c for p in passes for c in p]


def test_group_sharing_trains_every_group_for_the_full_budget():
    # "Deeper insights" §4.2: each group "trained independently ... for 200
    # epochs". One run trains the m copies in turn, m x --train_steps steps,
    # and a child per step in a shuffled order gives every group exactly
    # --train_steps updates (full and prefix sharing keep --train_steps).
    from tf_oneshot.training.samplers import global_masks, resolve_path_per
    from tf_oneshot.training.trainer import make_run_sampler, training_steps

    steps = 32
    config = TrainConfig(dataset="digits", space="darts64", filters=4, num_cells=1, sharing="group",
                         sharing_groups=4, sharing_grouping="similarity", sampler="shuffled", path_per="step",
                         batch_size=GBS, ghost_batch_size=GBS, train_steps=steps)
    space = build_space(config.space, (8, 8, 1), 3, 1)
    total = training_steps(config, space)
    assert total == 4 * steps
    sampler = make_run_sampler(config.replace(train_steps=total), space)
    path_per = resolve_path_per(sampler, config.sampler.path_per)
    updates = sum(global_masks(sampler, s, path_per, 1, 1)[COPY_KEY][0] for s in range(total))
    assert updates.tolist() == [steps] * 4
    for sharing in ({"sharing": "full"}, {"sharing": "prefix", "sharing_prefix": 0}):
        other = config.replace(**sharing)
        assert training_steps(other, build_space(other.space, (8, 8, 1), 3, 1)) == steps
