"""Few-step fine-tuning from the shared weights ("Deeper insights" §3.3): the inherited child, the
fine-tuned scores, search re-ranking (resumable) and GT-Tau against the fine-tuning steps."""

import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from tf_oneshot.errors import UserError
from tf_oneshot.io_utils import read_jsonl
from tf_oneshot.training import finetune, model_dir, trainer
from tf_oneshot.training.config import TrainConfig
from tf_oneshot.training.groundtruth import summarize

# darts64 with one cell of 4 filters on the 8x8 digits: seconds to train and trace.
CONFIG = TrainConfig(dataset="digits", space="darts64", filters=4, num_cells=1, space_args="stem_filters=4",
                     batch_size=32, ghost_batch_size=16, train_steps=20, checkpoint_every=20, log_every=10,
                     eval_batches=1, sampler="uniform")
ARCH = "341"
QUIET = dict(recalibration_images=64)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("finetune") / "model")
    trainer.train(CONFIG, path, log=lambda s: None)
    return path


@pytest.fixture(scope="module")
def tuner(trained):
    return finetune.FineTuner(trained, [0, 4, 12], seed=3, **QUIET)


def test_inherited_child_computes_the_oneshot_model_under_its_masks(trained):
    loaded = model_dir.load_oneshot(trained)
    child = finetune.inherited_child(trained, ARCH, recalibration_images=0)
    arch = loaded.space.parse(ARCH)
    images = tf.random.stateless_uniform((32, 8, 8, 1), seed=(1, 2))
    masks = {k: tf.constant(v) for k, v in loaded.space.encode_batch([arch, arch]).items()}
    expected = loaded.model({"images": images, **masks}, training=False)  # ghost-batch statistics
    np.testing.assert_allclose(child(images, training=True), expected, atol=1e-4)
    # A plain Keras model: it keeps training with fit().
    child.compile(optimizer="sgd", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    before = [w.copy() for w in child.get_weights()]
    child.fit(images, tf.zeros(32, tf.int32), batch_size=16, epochs=1, verbose=0)
    assert any(not np.allclose(a, b) for a, b in zip(before, child.get_weights()))


@pytest.mark.slow
def test_fine_tuning_lowers_the_loss_and_equals_the_keras_child(trained, tuner):
    scores = tuner(ARCH)
    assert [s["finetune_steps"] for s in scores] == [0, 4, 12]
    assert scores[0]["train_loss"] is None and scores[0]["validation_examples"] == 300
    assert scores[2]["validation_loss"] < scores[0]["validation_loss"] - 0.05
    # The same child again: the same numbers (fresh copy of the snapshot, the same mini-batches).
    assert tuner(ARCH)[1]["validation_loss"] == pytest.approx(scores[1]["validation_loss"], rel=1e-5)
    assert tuner.trainer.tracing_count() == 1
    # The per-child Keras route gives the same fine-tuned child.
    _, alone = finetune.finetune_standalone(trained, ARCH, 4, seed=3, **QUIET)
    assert alone["validation_loss"] == pytest.approx(scores[1]["validation_loss"], rel=1e-3)
    assert alone["validation_accuracy"] == pytest.approx(scores[1]["validation_accuracy"], abs=2 / 300)


def test_bad_fine_tuning_options_are_one_clear_error():
    with pytest.raises(UserError, match="--finetune_steps=-1 is invalid"):
        finetune.check_steps(-1)
    with pytest.raises(UserError, match="--finetune_top=0 is invalid"):
        finetune.check_top(0)
    assert finetune.check_steps([5, 0, 5]) == [0, 5]


def test_the_figure_4_flag_refuses_bad_input_in_one_line(tmp_path, capsys):
    out = str(tmp_path / "gt")
    assert _cli("groundtruth", "--finetune_curve=0,2", f"--output={out}") == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "tf-oneshot: error: --finetune_curve needs --model_dir: the trained one-shot model whose children are "
        "fine-tuned."]
    assert _cli("groundtruth", "--finetune_curve=0,x", f"--model_dir={tmp_path}", f"--output={out}") == 2
    assert "--finetune_curve=0,x is invalid" in capsys.readouterr().err
    assert not os.path.exists(out)


def _cli(*args):
    from absl import flags

    from tf_oneshot.commands import cli

    flags.FLAGS.unparse_flags()
    try:
        return cli.main(["tf-oneshot", *args])
    finally:
        flags.FLAGS.unparse_flags()


@pytest.mark.slow
def test_search_reranks_the_top_candidates_and_resumes(trained, tmp_path, capsys):
    results = str(tmp_path / "random.jsonl")
    args = ["search", f"--model_dir={trained}", "--num_architectures=6", f"--results={results}",
            "--finetune_steps=3"]
    assert _cli(*args, "--finetune_top=0") == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "tf-oneshot: error: --finetune_top=0 is invalid; expected the number of best candidates to fine-tune, "
        "at least 1 (e.g. 10)."]
    assert not os.path.exists(results)
    assert _cli("search", f"--model_dir={trained}", "--finetune_top=2") == 2
    assert "--finetune_top needs --finetune_steps" in capsys.readouterr().err
    assert _cli(*args, "--finetune_top=2") == 0
    out = capsys.readouterr().out
    searched = read_jsonl(results)
    path = finetune.finetune_results_path(results)
    lines = read_jsonl(path)
    best = sorted(searched, key=lambda r: (-r["oneshot_accuracy"], r["loss"]))[:2]
    assert len(searched) == 6 and [r["architecture"] for r in lines] == [r["architecture"] for r in best]
    for line, one in zip(lines, best):
        assert line["oneshot_accuracy"] == one["oneshot_accuracy"] and line["finetune_steps"] == 3
        assert 0 <= line["finetuned_accuracy"] <= 1 and line["finetuned_loss"] > 0
    assert "re-ranked after 3 fine-tuning steps" in out
    # A rerun finds every fine-tuned score; the search results and the fine-tuned lines stay as they were.
    assert _cli(*args, "--finetune_top=2") == 0
    assert "2 found in" in capsys.readouterr().out
    assert read_jsonl(results) == searched and read_jsonl(path) == lines


def test_rerank_stopped_and_resumed_fine_tunes_each_candidate_once(tuner, tmp_path):
    path = str(tmp_path / "ft.jsonl")
    candidates = [{"architecture": a, "oneshot_accuracy": acc, "loss": 1.0}
                  for a, acc in (("114", 0.3), ("341", 0.5), ("231", 0.4), ("344", 0.1))]
    records, stopped = finetune.rerank(candidates, tuner, path, 3, log=lambda s: None,
                                       stop=lambda: os.path.exists(path))
    assert stopped and records == [] and [r["architecture"] for r in read_jsonl(path)] == ["341"]
    first = read_jsonl(path)[0]
    records, stopped = finetune.rerank(candidates, tuner, path, 3, log=lambda s: None)
    assert not stopped and [r["architecture"] for r in read_jsonl(path)] == ["341", "231", "114"]
    assert read_jsonl(path)[0] == first and first["finetune_steps"] == 12 and first["oneshot_accuracy"] == 0.5
    assert [r["finetuned_accuracy"] for r in records] == sorted((r["finetuned_accuracy"] for r in records),
                                                               reverse=True)
    other = finetune.FineTuner.__new__(finetune.FineTuner)  # the same file, another setting: refused
    other.identity = lambda: {**tuner.identity(), "finetune_seed": 9}
    other.steps = tuner.steps
    with pytest.raises(UserError, match="another setting, finetune_seed=3 \\(this run: 9\\); use the same settings"):
        finetune.rerank(candidates, other, path, 3, log=lambda s: None)


@pytest.mark.slow
def test_gt_tau_against_steps_and_its_plot(trained, tuner, tmp_path):
    space = tuner.space
    children = ["114", "231", "341", "344"]
    # A made-up ground truth of four children of the model's space (the real one: `tf-oneshot groundtruth`).
    records = {(c, s): {"validation_accuracy": 0.5 + 0.1 * i + 0.01 * s, "validation_loss": 1.0 - 0.1 * i,
                        "test_accuracy": 0.5} for i, c in enumerate(children) for s in (0, 1)}
    settings = {"space": json.loads(json.dumps(space.to_config()))}
    summary = summarize(records, children, [0, 1], settings)
    curve = finetune.gt_tau_curve(summary, tuner, log=lambda s: None)
    assert curve["steps"] == [0, 4, 12] and curve["children"] == children
    accuracy = np.array(curve["validation_accuracy"])
    assert accuracy.shape == (3, 4)
    from scipy.stats import kendalltau

    assert curve["gt_tau_accuracy"][2] == pytest.approx(kendalltau(accuracy[2], [0, 1, 2, 3]).statistic)
    png = finetune.plot_gt_tau_against_steps(curve, str(tmp_path / "fig4.png"))
    assert os.path.getsize(png) > 1000
    other = {**summary, "space": {**summary["space"], "filters": 8}}
    with pytest.raises(UserError, match="another search space"):
        finetune.gt_tau_against_steps(other, trained, [0], log=lambda s: None, **QUIET)


@pytest.mark.slow
def test_the_figure_4_curve_is_written_into_the_supernets_model_dir(trained, tuner, tmp_path, capsys):
    """Curves of several supernets against one ground truth must not overwrite each other."""
    from tf_oneshot.io_utils import atomic_write_json
    from tf_oneshot.training.groundtruth import SUMMARY_FILE

    children = ["114", "341"]
    records = {(c, s): {"validation_accuracy": 0.5 + 0.1 * i, "validation_loss": 1.0 - 0.1 * i, "test_accuracy": 0.5}
               for i, c in enumerate(children) for s in (0, 1)}
    gt = tmp_path / "gt"
    gt.mkdir()
    atomic_write_json(str(gt / SUMMARY_FILE),
                      summarize(records, children, [0, 1], {"space": json.loads(json.dumps(tuner.space.to_config()))}))
    assert _cli("groundtruth", "--finetune_curve=0,1", f"--model_dir={trained}", f"--output={gt}") == 0
    curve = json.load(open(os.path.join(trained, "finetune_gt_tau.json")))
    assert curve["steps"] == [0, 1] and curve["children"] == children
    assert os.path.getsize(os.path.join(trained, "finetune_gt_tau.png")) > 1000
    assert sorted(os.listdir(gt)) == [SUMMARY_FILE]  # the ground truth is only read


@pytest.mark.slow
def test_the_keras_tuner_reranks_its_best_trials(trained, tmp_path):
    from tf_oneshot.tuner import OneShotOracle, OneShotTuner

    oracle = OneShotOracle(trained, algorithm="random", max_trials=3, seed=0)
    with pytest.raises(UserError, match="--finetune_top=0 is invalid"):
        OneShotTuner(oracle, trained, directory=str(tmp_path), project_name="bad", finetune_steps=2, finetune_top=0)
    tuner = OneShotTuner(oracle, trained, directory=str(tmp_path), project_name="t", finetune_steps=2,
                         finetune_top=2)
    tuner.search(verbose=0)
    best = tuner.get_best_architectures(1)[0]
    lines = read_jsonl(os.path.join(str(tmp_path), "t", "finetune_tuner0.jsonl"))
    assert len(lines) == 2 and {r["finetune_steps"] for r in lines} == {2}
    assert sorted(r["oneshot_accuracy"] for r in lines) == sorted(t.score for t in oracle.get_best_trials(2))
    assert str(best) == max(lines, key=lambda r: (r["finetuned_accuracy"], -r["finetuned_loss"]))["architecture"]
    tuner.get_best_architectures(2)  # a second call fine-tunes nothing more
    assert read_jsonl(os.path.join(str(tmp_path), "t", "finetune_tuner0.jsonl")) == lines
