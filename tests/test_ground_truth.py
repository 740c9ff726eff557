"""`groundtruth` ("Deeper insights" §3.1): every child stand-alone over seeds, resumable, sharded, merged."""

import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from tf_oneshot.errors import UserError
from tf_oneshot.io_utils import read_jsonl
from tf_oneshot.search_spaces.darts64 import Darts64Space
from tf_oneshot.training import data, groundtruth
from tf_oneshot.training.child import build_model, evaluate_with_loss, train_standalone
from tf_oneshot.training.config import TrainConfig
from tf_oneshot.training.groundtruth import MaskedTrainer, Shard, merge, run_ground_truth

# One cell of 4 filters on the 8x8 digits, restricted to 4 children: 331, 334, 341, 344.
BASE = Darts64Space(stem_filters=4, filters=4, num_cells=1, image_shape=(8, 8, 1), num_classes=10)
SPACE = BASE.restrict({"edge_01": [3], "edge_02": [3, 4], "edge_12": [1, 4]})
CHILDREN = ["331", "334", "341", "344"]
CONFIG = TrainConfig(dataset="digits", space="darts64", batch_size=32, ghost_batch_size=16, train_steps=2,
                     log_every=2)
QUIET = dict(log=lambda s: None, recalibration_images=64)


class FakeTrainer:
    """Deterministic metrics per (child, seed) without training; counts what it was asked."""

    def __init__(self, stop_after=None):
        self.calls = []
        self.stop_after = stop_after

    def __call__(self, space, arch, config, seed):
        if self.stop_after is not None and len(self.calls) == self.stop_after:
            raise KeyboardInterrupt  # a kill between two pairs
        self.calls.append((str(arch), seed))
        digits = sum(int(c) for c in str(arch))
        return {"validation_accuracy": 0.5 + 0.01 * digits + 0.001 * seed, "validation_loss": 1.0 - 0.01 * digits,
                "test_accuracy": 0.6, "test_loss": 0.9, "train_loss": 1.0, "seconds": 0.0}


def test_a_tiny_real_run_writes_the_summary(tmp_path):
    space = BASE.restrict({"edge_01": [3], "edge_02": [3, 4], "edge_12": [4]})  # 334, 344
    out = str(tmp_path / "gt")
    result = run_ground_truth(space, CONFIG, [0, 1], out, **QUIET)
    assert sorted(result.trained) == sorted((c, s) for c in ("334", "344") for s in (0, 1))
    lines = read_jsonl(os.path.join(out, "results.jsonl"))
    assert [(r["architecture"], r["seed"]) for r in lines] == [("334", 0), ("344", 0), ("334", 1), ("344", 1)]
    for r in lines:
        assert r["params"] == space.count(space.parse(r["architecture"])).params
        assert r["validation_examples"] == 300 and 0 < r["validation_loss"] < 10
        assert r["train_steps"] == 2 and r["space"]["restricted_to"] and r["kind"] == groundtruth.RECORD_KIND
        assert r["method"] == "masked"
    summary = json.load(open(os.path.join(out, "ground_truth.json")))
    assert summary == result.summary and summary["seeds"] == [0, 1] and summary["num_runs"] == 4
    assert summary["noise_ceiling"] is None  # 2 seeds: too few, and not demanded
    child = {c["architecture"]: c for c in summary["children"]}["344"]
    accs = [r["validation_accuracy"] for r in lines if r["architecture"] == "344"]
    assert child["validation_accuracy"] == accs
    assert child["validation_accuracy_mean"] == pytest.approx(np.mean(accs))
    assert child["validation_accuracy_std"] == pytest.approx(np.std(accs))
    assert sorted(c["rank"] for c in summary["children"]) == [1, 2]
    # A rerun has nothing to train.
    assert run_ground_truth(space, CONFIG, [0, 1], out, **QUIET).trained == ()


def test_sigterm_stops_between_pairs_and_a_rerun_resumes(tmp_path):
    out = str(tmp_path / "gt")
    trainer = FakeTrainer()
    result = run_ground_truth(SPACE, CONFIG, [0], out, train_fn=trainer, stop=lambda: len(trainer.calls) == 2,
                              **QUIET)
    assert result.preempted and result.trained == tuple(trainer.calls) and len(trainer.calls) == 2
    assert result.summary is None and result.missing == 2
    resumed = FakeTrainer()
    result = run_ground_truth(SPACE, CONFIG, [0], out, train_fn=resumed, **QUIET)
    assert not result.preempted and len(resumed.calls) == 2 and not set(resumed.calls) & set(trainer.calls)
    assert result.summary is not None


def test_evaluate_with_loss_is_the_mean_cross_entropy():
    keras.utils.set_random_seed(0)
    model = build_model(BASE, BASE.parse("124"), CONFIG)
    result = evaluate_with_loss(model, CONFIG, "validation")
    images, labels = zip(*data.make_dataset("digits", "validation", 300, training=False).take(1))
    logits = model(images[0], training=False)
    expected = keras.losses.sparse_categorical_crossentropy(labels[0], logits, from_logits=True).numpy().mean()
    assert result["examples"] == 300 and result["loss"] == pytest.approx(float(expected), rel=1e-5)
    accuracy = float(np.mean(np.argmax(logits, -1) == labels[0].numpy()))
    assert result["accuracy"] == pytest.approx(accuracy)


def test_killed_and_resumed_run_trains_no_pair_twice(tmp_path):
    out = str(tmp_path / "gt")
    first = FakeTrainer(stop_after=3)
    with pytest.raises(KeyboardInterrupt):
        run_ground_truth(SPACE, CONFIG, [0, 1], out, train_fn=first, **QUIET)
    # A kill mid-append leaves a torn line: it is dropped, and its pair is trained on resume.
    with open(os.path.join(out, "results.jsonl"), "a") as f:
        f.write('{"architecture": "341", "seed": 0, "kind": "tf_on')
    second = FakeTrainer()
    result = run_ground_truth(SPACE, CONFIG, [0, 1], out, train_fn=second, **QUIET)
    everything = [(c, s) for s in (0, 1) for c in CHILDREN]  # seed-major
    assert first.calls == everything[:3] and second.calls == everything[3:]
    assert result.skipped == tuple(everything[:3]) and result.summary is not None
    pairs = [(r["architecture"], r["seed"]) for r in read_jsonl(os.path.join(out, "results.jsonl"))]
    assert sorted(pairs) == sorted(everything)
    third = FakeTrainer()
    assert run_ground_truth(SPACE, CONFIG, [0, 1], out, train_fn=third, **QUIET).trained == ()
    assert third.calls == []
    # More seeds later: only the new seed's pairs are trained.
    fourth = FakeTrainer()
    run_ground_truth(SPACE, CONFIG, [0, 1, 2], out, train_fn=fourth, **QUIET)
    assert fourth.calls == [(c, 2) for c in CHILDREN]


def test_shards_split_the_pairs_and_merge(tmp_path):
    out = str(tmp_path / "gt")
    seeds = [0, 1, 2, 3]  # 16 pairs; 4 seeds give the noise ceiling
    calls = {}
    for i in range(3):
        trainer = FakeTrainer()
        result = run_ground_truth(SPACE, CONFIG, seeds, out, Shard(i, 3), train_fn=trainer, **QUIET)
        calls[i] = trainer.calls
        assert result.results_path.endswith(f"results-{i}-of-3.jsonl")
        assert (result.summary is None) == (i < 2)  # the last shard completes the set and merges
    everything = [(c, s) for s in seeds for c in CHILDREN]
    assert calls[0] == everything[0::3] and calls[1] == everything[1::3] and calls[2] == everything[2::3]
    # TensorBoard: every pair's validation accuracy at step = its seed-major number, shard by shard.
    steps = {}
    for name in os.listdir(out):
        if name.endswith("_events"):
            for f in os.listdir(os.path.join(out, name)):
                for e in tf.compat.v1.train.summary_iterator(os.path.join(out, name, f)):
                    for v in e.summary.value:
                        if v.tag == "groundtruth/validation_accuracy":
                            steps[e.step] = float(tf.make_ndarray(v.tensor))
    digits = [sum(map(int, c)) for c, _ in everything]
    assert steps == {n: pytest.approx(0.5 + 0.01 * d + 0.001 * s) for n, (d, (_, s)) in enumerate(zip(digits, everything))}
    summary = json.load(open(os.path.join(out, "ground_truth.json")))
    assert summary["files"] == [f"results-{i}-of-3.jsonl" for i in range(3)]
    assert summary["noise_ceiling"]["validation_accuracy"] == pytest.approx(1.0)  # the fake never reorders
    # Children by accuracy (digit sums 7, 10, 8, 11): 344 best, then 334, 341, 331.
    assert {c["architecture"]: c["rank"] for c in summary["children"]} == {"344": 1, "334": 2, "341": 3, "331": 4}
    assert merge(out, log=lambda s: None)["children"] == summary["children"]

    # Overlap: shard 0/2 run at the same time as shard 0/3 repeats pairs 0 and 6.
    shard_0 = os.path.join(out, "results-0-of-3.jsonl")
    with open(shard_0) as f, open(os.path.join(out, "results-0-of-2.jsonl"), "w") as g:
        g.write(f.read())
    with pytest.raises(UserError, match="child 331 seed 0 was trained twice .*results-0-of-2.jsonl line 1 and "
                                        ".*results-0-of-3.jsonl line 1 both hold it; shards overlap"):
        merge(out, log=lambda s: None)
    os.remove(os.path.join(out, "results-0-of-2.jsonl"))
    # Missing: a shard's file is gone.
    os.remove(os.path.join(out, "results-1-of-3.jsonl"))
    with pytest.raises(UserError, match="incomplete: 5 of 16 \\(child, seed\\) pairs are missing, e.g. child 334 "
                                        "seed 0"):
        merge(out, log=lambda s: None)


def test_bad_input_is_refused_before_any_training(tmp_path):
    from tf_oneshot.search_spaces import CellSpace

    out = str(tmp_path / "gt")
    trainer = FakeTrainer()
    big = CellSpace(image_shape=(8, 8, 1))
    with pytest.raises(UserError, match=f"'bender_cell' holds {big.size():,}, more than the 100,000"):
        run_ground_truth(big, CONFIG, [0], out, train_fn=trainer, **QUIET)
    with pytest.raises(UserError, match="needs at least 2 seeds per half \\(4 seeds\\), got 3"):
        run_ground_truth(SPACE, CONFIG, [0, 1, 2], out, noise_ceiling=True, train_fn=trainer, **QUIET)
    with pytest.raises(UserError, match="--seeds repeats 1"):
        run_ground_truth(SPACE, CONFIG, [0, 1, 1], out, train_fn=trainer, **QUIET)
    assert trainer.calls == [] and not os.path.exists(out)

    run_ground_truth(SPACE, CONFIG, [0], out, train_fn=trainer, **QUIET)
    before = open(os.path.join(out, "results.jsonl")).read()
    with pytest.raises(UserError, match="another setting, train_steps=2 \\(this run: 3\\)"):
        run_ground_truth(SPACE, CONFIG.replace(train_steps=3), [0], out, train_fn=trainer, **QUIET)
    other = Darts64Space(stem_filters=4, filters=8, num_cells=1, image_shape=(8, 8, 1), num_classes=10)
    with pytest.raises(UserError, match="another search space, darts64 \\(.*filters=4"):
        run_ground_truth(other, CONFIG, [0], out, train_fn=trainer, **QUIET)
    with pytest.raises(UserError, match="needs at least 2 seeds per half"):
        merge(out, noise_ceiling=True, log=lambda s: None)
    assert open(os.path.join(out, "results.jsonl")).read() == before and len(trainer.calls) == 4
    # A diverged run stops the ground truth with one line; earlier runs stay.
    def diverged(space, arch, config, seed):
        return {**FakeTrainer()(space, arch, config, seed), "validation_loss": float("nan")}

    with pytest.raises(UserError, match=r"child 331 seed 1 diverged \(validation_loss=nan\)"):
        run_ground_truth(SPACE, CONFIG, [0, 1], out, train_fn=diverged, **QUIET)
    assert open(os.path.join(out, "results.jsonl")).read() == before
    # A line broken by hand is named.
    line = json.loads(before.splitlines()[0])
    del line["validation_loss"]
    with open(os.path.join(out, "results-0-of-2.jsonl"), "w") as f:
        f.write(json.dumps(line) + "\n")
    with pytest.raises(UserError, match="results-0-of-2.jsonl line 1 has validation_loss=None"):
        merge(out, log=lambda s: None)
    assert Shard.parse("1/4") == Shard(1, 4) and str(Shard.parse(" 1 / 4 ")) == "1/4"
    with pytest.raises(UserError, match="--shard=4/4 is invalid"):
        Shard.parse("4/4")


def _cli(*args):
    from absl import flags

    from tf_oneshot.commands import cli

    flags.FLAGS.unparse_flags()
    try:
        return cli.main(["tf-oneshot", *args])
    finally:
        flags.FLAGS.unparse_flags()


def _error(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


def test_cli_merges_and_reports_bad_input_in_one_line(tmp_path, capsys):
    out = str(tmp_path / "gt")
    tiny = ["--space=darts64", "--filters=4", "--space_args=stem_filters=4", "--num_cells=1", "--train_steps=2",
            "--batch_size=32", "--ghost_batch_size=16"]
    assert _cli("groundtruth", "--help") == 0
    usage = capsys.readouterr().out
    assert all(f"--{name}" in usage for name in ("shard", "[no]merge", "method", "seeds", "train_steps")), usage
    assert _cli("groundtruth", "--space=bender_cell", "--seeds=0-9", f"--output={out}") == 2
    assert _error(capsys).startswith("tf-oneshot: error: ground truth trains every architecture, but search "
                                     "space 'bender_cell' holds ")
    assert _cli("groundtruth", *tiny, "--seeds=0,1,2", "--noise_ceiling", f"--output={out}") == 2
    assert "needs at least 2 seeds per half (4 seeds), got 3" in _error(capsys)
    assert _cli("groundtruth", *tiny, f"--output={out}") == 2
    assert "--seeds is required" in _error(capsys)
    assert _cli("groundtruth", *tiny, "--seeds=0,x", f"--output={out}") == 2
    assert "--seeds=0,x is invalid at 'x'" in _error(capsys)
    assert _cli("groundtruth", *tiny, "--seeds=0", "--shard=1of2", f"--output={out}") == 2
    assert "--shard=1of2 is invalid" in _error(capsys)
    assert _cli("groundtruth", "--merge", f"--output={out}") == 2
    assert f"no ground-truth results in {out}" in _error(capsys)
    assert not os.path.exists(out)

    # Results of the restricted space written by the library merge from the command line.
    run_ground_truth(SPACE, CONFIG, [0, 1], out, Shard(0, 2), train_fn=FakeTrainer(), **QUIET)
    assert _cli("groundtruth", "--merge", f"--output={out}") == 2
    assert "incomplete: 4 of 8 (child, seed) pairs are missing, e.g. child 334 seed 0" in _error(capsys)
    run_ground_truth(SPACE, CONFIG, [0, 1], out, Shard(1, 2), train_fn=FakeTrainer(), **QUIET)
    os.remove(os.path.join(out, "ground_truth.json"))
    assert _cli("groundtruth", "--merge", f"--output={out}") == 0
    capsys.readouterr()
    assert json.load(open(os.path.join(out, "ground_truth.json")))["num_runs"] == 8
    # The flags of another setting are refused by the merge too.
    assert _cli("groundtruth", "--merge", *tiny, "--train_steps=5", f"--output={out}") == 2
    assert "another search space" in _error(capsys)  # the flags name the unrestricted darts64


def test_masked_trainer_trains_exactly_the_stand_alone_child_with_one_trace():
    arch = SPACE.parse("341")  # a separable conv, a max pool and a skip connection
    config = CONFIG.replace(train_steps=3)
    trainer = MaskedTrainer(SPACE, config, recalibration_images=64)
    masked = trainer(SPACE, arch, config, seed=5)
    # The same child stand-alone, from the same initial weights (those of the
    # one-shot model for seed 5), on the same data order.
    oneshot = BASE.build_oneshot(config.data.ghost_batch_size)
    oneshot.set_weights(trainer.initial_weights(5))
    # (The base space: a restricted one builds the base's networks but does not inherit weights.)
    model, standalone = train_standalone(BASE, arch, config, 5, log=lambda s: None, recalibration_images=64,
                                         snapshot=oneshot)
    for key in ("train_loss", "validation_loss", "test_loss"):
        assert masked[key] == pytest.approx(standalone[key], rel=1e-4), key
    assert masked["validation_accuracy"] == pytest.approx(standalone["validation_accuracy"])
    assert masked["validation_examples"] == 300
    trained, start = build_model(BASE, arch, config), build_model(BASE, arch, config)
    BASE.inherit_weights(trainer.model, trained, arch)
    BASE.inherit_weights(oneshot, start, arch)
    assert len(trained.get_weights()) == len(model.get_weights()) > 10
    for got, want in zip(trained.get_weights(), model.get_weights()):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    moved = [not np.allclose(a, b) for a, b in zip(trained.get_weights(), start.get_weights())]
    assert sum(moved) > len(moved) // 2  # the 3 steps changed the weights
    # Another child and another seed reuse the same traces.
    other = trainer(SPACE, SPACE.parse("334"), config, seed=6)
    assert other["validation_loss"] != masked["validation_loss"] and trainer.tracing_count() == 1
