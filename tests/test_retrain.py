"""`retrain`: stand-alone runs recorded one line each, resumed without repeats, exported and served."""

import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from tf_oneshot.errors import UserError
from tf_oneshot.io_utils import read_jsonl
from tf_oneshot.search.selection import select_candidates
from tf_oneshot.search_spaces import CellSpace
from tf_oneshot.training import data
from tf_oneshot.training.child import build_model
from tf_oneshot.training.config import TrainConfig
from tf_oneshot.training.retrain import (
    Candidate,
    StandaloneStartChild,
    export_model,
    retrain,
    train_standalone,
)

# F=4, one stack of 2 cells of 2 blocks on the embedded 8x8 digits: seconds to trace and train.
SPACE = CellSpace(num_blocks=2, filters=4, num_cells=2, num_stacks=1, image_shape=(8, 8, 1), num_classes=10)
CONFIG = TrainConfig(dataset="digits", batch_size=32, ghost_batch_size=16, train_steps=4, log_every=2)
ARCHS = ("01:15/2:3", "1:0/012:26")
QUIET = dict(log=lambda s: None, recalibration_images=64)


def test_retrain_records_resumes_and_exports(tmp_path):
    results, export = str(tmp_path / "retrain.jsonl"), str(tmp_path / "export")
    candidates = [Candidate(SPACE.parse(a), 0.5 + 0.1 * i) for i, a in enumerate(ARCHS)]
    first = retrain(candidates, SPACE, CONFIG, [0], results, export, **QUIET)
    assert first.trained == ((ARCHS[0], 0), (ARCHS[1], 0)) and first.skipped == ()
    lines = read_jsonl(results)
    assert [(r["architecture"], r["seed"]) for r in lines] == [(ARCHS[0], 0), (ARCHS[1], 0)]
    for r, arch in zip(lines, ARCHS):
        cost = SPACE.count(SPACE.parse(arch))
        assert (r["params"], r["flops"]) == (cost.params, cost.flops)
        assert r["validation_examples"] == 300 and r["test_examples"] == 300
        assert 0.0 <= r["validation_accuracy"] <= 1.0 and 0.0 <= r["test_accuracy"] <= 1.0
        assert r["train_steps"] == 4 and r["space"]["filters"] == 4 and r["bn_recalibration_images"] == 64
    assert [r["oneshot_accuracy"] for r in lines] == [0.5, 0.6]
    assert set(first.exported) == {"keras", "saved_model", "metadata"}
    best = json.load(open(os.path.join(export, "best.json")))
    assert best["architecture"] == first.best_architecture

    # A kill mid-append leaves a torn line; the rerun with one more seed trains
    # only the two new (architecture, seed) pairs.
    with open(results, "a") as f:
        f.write('{"architecture": "01:1')
    second = retrain(candidates, SPACE, CONFIG, [0, 1], results, export, **QUIET)
    assert second.skipped == ((ARCHS[0], 0), (ARCHS[1], 0))
    assert second.trained == ((ARCHS[0], 1), (ARCHS[1], 1))
    pairs = [(r["architecture"], r["seed"]) for r in read_jsonl(results)]
    assert sorted(pairs) == sorted({(a, s) for a in ARCHS for s in (0, 1)}) and len(pairs) == 4
    assert open(results).read().endswith("\n")
    third = retrain(candidates, SPACE, CONFIG, [0, 1], results, export, **QUIET)
    assert third.trained == () and len(read_jsonl(results)) == 4
    # TensorBoard: each run's test accuracy at step = its line, across the reruns (issue 19 item 10).
    events = str(tmp_path / "retrain_events")
    scalars = sorted((e.step, float(tf.make_ndarray(v.tensor))) for f in os.listdir(events)
                     for e in tf.compat.v1.train.summary_iterator(os.path.join(events, f))
                     for v in e.summary.value if v.tag == "retrain/test_accuracy")
    assert scalars == [(i, pytest.approx(r["test_accuracy"])) for i, r in enumerate(read_jsonl(results))]
    assert len(os.listdir(events)) == 4  # one file per finished run; the third run wrote none

    # The exported best reloads in safe mode and scores what was recorded, on [0, 1] images.
    model = keras.saving.load_model(os.path.join(export, "best.keras"), safe_mode=True)
    best = json.load(open(os.path.join(export, "best.json")))
    recorded = [r for r in read_jsonl(results) if (r["architecture"], r["seed"]) == (best["architecture"], best["seed"])]
    assert raw_accuracy(model, "validation") == pytest.approx(recorded[0]["validation_accuracy"])
    assert best["input"] == {"scale": [0.0, 1.0], "standardized_inside": True,
                             "mean": list(STATISTICS[0]), "std": list(STATISTICS[1])}


STATISTICS = data.input_statistics("digits")


def raw(standardized: np.ndarray) -> np.ndarray:
    """The [0, 1] images a user has, from the standardized ones the trainer sees."""
    return (np.asarray(standardized) * np.array(STATISTICS[1]) + np.array(STATISTICS[0])).astype(np.float32)


def raw_accuracy(export: keras.Model, split: str) -> float:
    """An export's accuracy on `split` fed as [0, 1] images (the export standardizes them itself)."""
    correct = total = 0
    for images, labels in data.make_dataset("digits", split, 100, training=False):
        predicted = np.argmax(export(raw(images), training=False), axis=-1)
        correct, total = correct + int(np.sum(predicted == labels.numpy())), total + len(predicted)
    return correct / total


def test_export_reloads_with_identical_predictions_and_serves_the_same_logits(tmp_path):
    arch = SPACE.parse(ARCHS[1])
    model, metrics = train_standalone(SPACE, arch, CONFIG, seed=3, **QUIET)
    paths = export_model(model, SPACE, str(tmp_path), {"architecture": ARCHS[1]}, STATISTICS)
    images = data.take_images("digits", "test", 48)
    expected = model(images, training=False).numpy()
    loaded = keras.saving.load_model(paths["keras"], safe_mode=True)
    # The export takes [0, 1] images: its first layer standardizes them as training did.
    np.testing.assert_allclose(loaded(raw(images), training=False).numpy(), expected, rtol=1e-5, atol=1e-5)
    assert loaded.count_params() == SPACE.count(arch).params
    served = tf.saved_model.load(paths["saved_model"])
    np.testing.assert_allclose(served.serve(tf.constant(raw(images))).numpy(), expected, rtol=1e-5, atol=1e-5)
    signature = served.signatures["serving_default"]
    (logits,) = signature(images=tf.constant(raw(images))).values()
    np.testing.assert_allclose(logits.numpy(), expected, rtol=1e-5, atol=1e-5)
    assert sorted(os.listdir(tmp_path)) == ["best.json", "best.keras", "best_saved_model"]


@pytest.mark.slow
def test_masked_retrain_is_the_stand_alone_retrain_traced_once(tmp_path):
    """The masked method trains each child inside the one-shot model from its stand-alone model's fresh
    weights: the same numbers as --method=standalone, and the same export.

    Slow: 55 CPU s (404 s wall at load average 11 on 2 cores): two retrains and two exports.
    """
    candidates = [Candidate(SPACE.parse(a)) for a in ARCHS]
    runs = {}
    for method in ("standalone", "masked"):
        lines = []
        summary = retrain(candidates, SPACE, CONFIG, [3], str(tmp_path / f"{method}.jsonl"),
                          str(tmp_path / method), method=method, **{**QUIET, "log": lines.append})
        assert not any("instead" in line for line in lines)
        runs[method] = summary
    standalone, masked = ({r["architecture"]: r for r in runs[m].records} for m in ("standalone", "masked"))
    for arch in ARCHS:
        for key in ("train_loss", "validation_loss", "test_loss"):
            assert masked[arch][key] == pytest.approx(standalone[arch][key], rel=1e-4), (arch, key)
        for key in ("validation_accuracy", "test_accuracy", "params", "flops"):
            assert masked[arch][key] == pytest.approx(standalone[arch][key], abs=1e-9), (arch, key)
    assert runs["masked"].best_architecture == runs["standalone"].best_architecture
    images = raw(data.take_images("digits", "test", 32))
    exports = [keras.saving.load_model(os.path.join(tmp_path, m, "best.keras"), safe_mode=True)
               for m in ("standalone", "masked")]
    np.testing.assert_allclose(*(e(images, training=False).numpy() for e in exports), rtol=1e-4, atol=1e-4)


def test_masked_start_maps_a_planned_group_once_and_leaves_the_oneshot_weights():
    """Drawing a planned group numbers the one-shot weights once for all its children: the same element
    maps as one child at a time, each child's start its stand-alone model's fresh weights, and the one-shot
    model's own weights as they were."""
    trainer = StandaloneStartChild(SPACE, CONFIG, **QUIET)
    before = trainer.model.get_weights()
    archs = [SPACE.parse(a) for a in ARCHS]
    trainer.plan([(a, 3) for a in archs])
    starts = [trainer.start_weights(a, 3) for a in archs]
    for got, want in zip(trainer.model.get_weights(), before):
        np.testing.assert_array_equal(got, want)
    alone = StandaloneStartChild(SPACE, CONFIG, **QUIET)
    for arch, start in zip(archs, starts):
        np.testing.assert_array_equal(trainer._child_elements(arch), alone._child_elements(arch))
        keras.utils.set_random_seed(3)
        fresh = np.concatenate([w.ravel() for w in build_model(SPACE, arch, CONFIG).get_weights()])
        flat = np.concatenate([w.ravel() for w in start])
        np.testing.assert_array_equal(flat[alone._child_elements(arch)], fresh)


def test_retrain_refuses_a_method_it_does_not_have(tmp_path):
    with pytest.raises(UserError, match="--method=fused does not apply to retrain; choose masked or standalone"):
        retrain([Candidate(SPACE.parse(ARCHS[0]))], SPACE, CONFIG, [0], str(tmp_path / "f.jsonl"), method="fused",
                **QUIET)
    assert not (tmp_path / "f.jsonl").exists()


def test_selection_reuses_search_rules():
    rng = np.random.default_rng(0)
    records = [{"architecture": str(SPACE.sample(rng)), "oneshot_accuracy": float(a), "params": 1}
               for a in np.linspace(0.1, 0.9, 40)]
    strat = select_candidates(SPACE, records, "stratified", num_buckets=4, per_bucket=2)
    assert len(strat) == 8
    accs = sorted(c.oneshot_accuracy for c in strat)
    assert sum(a < 0.3 for a in accs) == 2 and sum(a > 0.7 for a in accs) == 2  # every bucket
    top = select_candidates(SPACE, records, "top", k=3, pool=None)  # no pool: the best k
    assert [c.oneshot_accuracy for c in top] == pytest.approx([0.9, 0.9 - 0.8 / 39, 0.9 - 1.6 / 39])
    with pytest.raises(UserError, match="--select=best is unknown"):
        select_candidates(SPACE, records, "best")


def test_a_resumed_run_still_exports_the_best_trained_before_it(tmp_path):
    """After SIGTERM the best run's weights are gone: its seed is trained again for the export."""
    results, export = str(tmp_path / "retrain.jsonl"), str(tmp_path / "export")
    candidates = [Candidate(SPACE.parse(a)) for a in ARCHS]
    retrain(candidates, SPACE, CONFIG, [0], results, None, **QUIET)  # as if stopped before its export
    lines = []
    resumed = retrain(candidates, SPACE, CONFIG, [0], results, export, **{**QUIET, "log": lines.append})
    assert resumed.trained == () and set(resumed.exported) == {"keras", "saved_model", "metadata"}
    best = json.load(open(os.path.join(export, "best.json")))
    assert best["architecture"] == resumed.best_architecture and best["seed"] == 0
    assert any("trained in an earlier run; training seed 0 again to export it" in line for line in lines)
    recorded = next(r for r in read_jsonl(results) if r["architecture"] == best["architecture"])
    model = keras.saving.load_model(os.path.join(export, "best.keras"), safe_mode=True)
    assert raw_accuracy(model, "validation") == pytest.approx(recorded["validation_accuracy"], abs=0.02)


def _search_records(n, seed=0):
    rng = np.random.default_rng(seed)
    archs = list(dict.fromkeys(str(SPACE.sample(rng)) for _ in range(3 * n)))[:n]
    accuracies = rng.permutation(np.linspace(0.2, 0.95, n))
    return [{"architecture": a, "oneshot_accuracy": float(acc), "params": 1} for a, acc in zip(archs, accuracies)]


def test_oneshot_top_default_is_a_stratified_10_of_the_top_100():
    """§4.1: "From the top 100 architectures, we took a stratified sample of 10"."""
    records = _search_records(300)
    ranked = sorted(records, key=lambda r: -r["oneshot_accuracy"])
    rank = {r["architecture"]: i for i, r in enumerate(ranked)}
    chosen = select_candidates(SPACE, records, "top")
    ranks = sorted(rank[str(c.architecture)] for c in chosen)
    assert len(ranks) == 10 and max(ranks) < 100  # all from the top 100 ...
    assert max(ranks) >= 80 and ranks != list(range(10))  # ... spread over it, not the best 10
    # One per tenth of the top 100's accuracy range (equal-width buckets of a uniform spread).
    assert all(10 * k <= r < 10 * (k + 1) for k, r in enumerate(ranks))
    assert [str(c.architecture) for c in select_candidates(SPACE, records, "top", pool=10)] == [
        r["architecture"] for r in ranked[:10]]


def test_cli_select_top_without_pool_follows_the_paper(tmp_path, capsys):
    from tf_oneshot.io_utils import append_jsonl

    search = tmp_path / "search.jsonl"
    for r in _search_records(120, seed=1):
        append_jsonl(str(search), {**r, "loss": 1.0, "flops": 1, "space": SPACE.to_config(), "checkpoint_step": 1,
                                   "bn_mode": "batch", "algorithm": "random"})
    results = tmp_path / "retrain.jsonl"
    assert _cli("retrain", f"--search_results={search}", "--select=top", "--top_k=2", f"--results={results}",
                "--batch_size=32", "--ghost_batch_size=16", "--train_steps=1", "--log_every=1") == 0
    from tf_oneshot.analysis.records import load_search_results

    expected = select_candidates(SPACE, load_search_results(str(search))[0], "top", k=2, pool=100)
    trained = [r["architecture"] for r in read_jsonl(str(results))]
    assert trained == [str(c.architecture) for c in expected]
    best = sorted(_search_records(120, seed=1), key=lambda r: -r["oneshot_accuracy"])[:2]
    assert sorted(trained) != sorted(r["architecture"] for r in best)  # not the plain best 2


def test_full_train_trains_on_train_and_validation_and_records_it(tmp_path):
    """§3.4 / §4.1: final models train on the full training set; no validation accuracy is left."""
    results, export = str(tmp_path / "full.jsonl"), str(tmp_path / "export")
    candidates = [Candidate(SPACE.parse(a), 0.5) for a in ARCHS]
    summary = retrain(candidates, SPACE, CONFIG, [0], results, export, full_train=True, **QUIET)
    lines = read_jsonl(results)
    assert len(lines) == 2 and summary.trained == ((ARCHS[0], 0), (ARCHS[1], 0))
    for r in lines:
        assert r["full_train"] is True and r["validation_accuracy"] is None and r["validation_examples"] == 0
        assert 0.0 <= r["test_accuracy"] <= 1.0 and r["test_examples"] == 300
    best = json.load(open(os.path.join(export, "best.json")))
    assert best["selected_on"] == "test" and best["full_train"] is True
    assert best["architecture"] == max(lines, key=lambda r: (r["test_accuracy"], r["architecture"]))["architecture"]
    # A results file holds one kind of run: held-out validation or full training set.
    with pytest.raises(UserError, match="full_train=True \\(this run: False\\)"):
        retrain(candidates, SPACE, CONFIG, [1], results, None, **QUIET)
    # The training pipeline really reads train + validation (1,497 digits, in that order).
    info = data.dataset_info("digits")
    assert data.split_size(info, data.FULL_TRAIN) == 1497
    full = np.concatenate([x.numpy() for x, _ in data.make_dataset("digits", data.FULL_TRAIN, 499,
                                                                   training=False)])
    parts = [np.concatenate([x.numpy() for x, _ in data.make_dataset("digits", s, n, training=False)])
             for s, n in (("train", 399), ("validation", 300))]
    np.testing.assert_array_equal(full, np.concatenate(parts))


def test_bad_input_is_one_clear_error_and_loses_nothing(tmp_path):
    from tf_oneshot.commands.flags import parse_architecture_strings

    with pytest.raises(UserError, match="'01:19/2:3' does not parse: block 0: op 9 out of range"):
        parse_architecture_strings(SPACE, [("--architectures", "01:19/2:3")])
    results = tmp_path / "retrain.jsonl"
    line = {"kind": "tf_oneshot.retrain", "architecture": ARCHS[0], "seed": 0, "validation_accuracy": 0.5,
            "space": CellSpace(num_blocks=3, image_shape=(8, 8, 1)).to_config()}
    results.write_text(json.dumps(line) + "\n")
    before = results.read_text()
    candidates = [Candidate(SPACE.parse(ARCHS[0]))]
    with pytest.raises(UserError, match="another search space.*new --results"):
        retrain(candidates, SPACE, CONFIG, [0], str(results), None, **QUIET)
    line["space"] = SPACE.to_config()
    line.update({k: CONFIG.to_flat()[k] for k in ("dataset", "batch_size", "ghost_batch_size", "learning_rate",
                                                 "lr_schedule", "momentum", "weight_decay")})
    line.update(train_steps=99, bn_recalibration_images=64)
    results.write_text(json.dumps(line) + "\n")
    before = results.read_text()
    with pytest.raises(UserError, match="train_steps=99 \\(this run: 4\\)"):
        retrain(candidates, SPACE, CONFIG, [0], str(results), None, **QUIET)
    assert results.read_text() == before
    cifar_space = CellSpace(num_blocks=2, filters=4, num_cells=2, num_stacks=1)
    with pytest.raises(UserError, match="images \\(8, 8, 1\\).*built for \\(32, 32, 3\\)"):
        retrain([Candidate(cifar_space.parse(ARCHS[0]))], cifar_space, CONFIG, [0], str(tmp_path / "x"), None,
                **QUIET)


def _cli(*args):
    from absl import flags

    from tf_oneshot.commands import cli

    # In-process commands share absl's FLAGS: start from and leave the defaults.
    flags.FLAGS.unparse_flags()
    try:
        return cli.main(["tf-oneshot", *args])
    finally:
        flags.FLAGS.unparse_flags()


def test_cli_reports_bad_architecture_and_empty_results_in_one_line(tmp_path, capsys):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    code = _cli("retrain", f"--results={tmp_path / 'r.jsonl'}", "--architectures=01:15/2:3/x",
                "--num_blocks=2", "--num_cells=2", "--num_stacks=1", "--filters=4")
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert err[0].startswith(
        "tf-oneshot: error: --architectures: '01:15/2:3/x' does not parse: architecture '01:15/2:3/x' has "
        "3 blocks; this space needs 2, e.g. '"
    )
    code = _cli("retrain", f"--results={tmp_path / 'r.jsonl'}", f"--search_results={empty}")
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert err[0].startswith(f"tf-oneshot: error: search results file {empty} is empty")
    code = _cli("retrain", f"--results={tmp_path / 'r.jsonl'}", "--architectures=01:15/2:3", "--dropout_rate=0.1")
    assert code == 2 and "--dropout_rate only affects one-shot training" in capsys.readouterr().err
    assert not (tmp_path / "r.jsonl").exists()


_CHILD = r"""
import json, sys
from tf_oneshot.training import distribute
distribute.split_cpu_for_tests(2)  # before anything touches TensorFlow's devices
from tf_oneshot.training.config import TrainConfig
from tf_oneshot.training.retrain import train_standalone
from tf_oneshot.search_spaces import CellSpace
space = CellSpace(num_blocks=2, filters=4, num_cells=2, num_stacks=1, image_shape=(8, 8, 1), num_classes=10)
config = TrainConfig(dataset="digits", batch_size=32, ghost_batch_size=16, train_steps=4, log_every=4)
out = {}
for name, recal in (("default", 0), ("mirrored", 0), ("default", 64), ("mirrored", 64)):
    strategy = distribute.get_strategy(name)
    _, metrics = train_standalone(space, space.parse("1:0/012:26"), config, seed=5, strategy=strategy,
                                  log=lambda s: None, recalibration_images=recal)
    out[f"{name}{recal}"] = {**metrics, "replicas": strategy.num_replicas_in_sync}
print("RESULT" + json.dumps(out))
"""


def test_mirrored_strategy_trains_the_same_numbers():
    # Ghost batches of 16 on 2 replicas of 16 are the default strategy's two
    # ghost batches of one 32-batch: same gradients, statistics and accuracy.
    import subprocess
    import sys

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {**os.environ, "PYTHONPATH": root, "TF_CPP_MIN_LOG_LEVEL": "3"}
    proc = subprocess.run([sys.executable, "-c", _CHILD], capture_output=True, text=True, env=env, cwd=root,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    runs = json.loads(proc.stdout.split("RESULT", 1)[1])
    assert (runs["default0"]["replicas"], runs["mirrored0"]["replicas"]) == (1, 2)
    for recal in (0, 64):
        default, mirrored = runs[f"default{recal}"], runs[f"mirrored{recal}"]
        assert mirrored["train_loss"] == pytest.approx(default["train_loss"], rel=1e-4)
        assert mirrored["validation_examples"] == default["validation_examples"] == 300
    # With the moving statistics of training, the same predictions.
    for key in ("validation_accuracy", "test_accuracy"):
        assert runs["mirrored0"][key] == pytest.approx(runs["default0"][key], abs=1e-9)
    # Recalibrated statistics agree closely, not bit for bit: the ghost batch
    # norm's running average is updated per replica. A near-chance model (4
    # steps) turns that into a few flipped predictions out of 300.
    for key in ("validation_accuracy", "test_accuracy"):
        assert runs["mirrored64"][key] == pytest.approx(runs["default64"][key], abs=0.02)


def test_the_optimizer_recipe_is_part_of_a_results_files_identity(tmp_path):
    """Two retrains that differ only in Nesterov, the decay's end or BN momentum do not share a file
    (issue 18); lines written before those were flags read as the values then hard-coded."""
    from tf_oneshot.training.retrain import EARLIER_DEFAULTS, RUN_FIELDS, results_file

    assert {"nesterov", "end_learning_rate", "bn_momentum"} <= set(RUN_FIELDS)
    flat = CONFIG.to_flat()
    old = {f: flat[f] for f in RUN_FIELDS if f not in (*EARLIER_DEFAULTS, "full_train")}
    old.update(full_train=False, bn_recalibration_images=64, space=SPACE.to_config())
    old = json.loads(json.dumps(old))
    path = str(tmp_path / "old.jsonl")
    with open(path, "w") as f:
        f.write(json.dumps({**old, "kind": "tf_oneshot.retrain", "architecture": ARCHS[0], "seed": 0,
                            "validation_accuracy": 0.5, "test_accuracy": 0.5}) + "\n")
    now = {**old, **EARLIER_DEFAULTS}
    assert results_file(path, now).done() == {(ARCHS[0], 0)}
    for field, value in (("nesterov", False), ("end_learning_rate", 0.001), ("bn_momentum", 0.9)):
        with pytest.raises(UserError, match=field):
            results_file(path, {**now, field: value}).done()
