"""Single-machine one-shot training: model_dir contents, resume, and bad input."""

import glob
import json
import os
import re
import signal

import pytest
import tensorflow as tf

from tf_oneshot.commands import cli
from tf_oneshot.errors import UserError
from tf_oneshot.search_spaces.bender_cell import CellSpace
from tf_oneshot.search_spaces.space_config import build_space
from tf_oneshot.training import trainer
from tf_oneshot.training.config import TrainConfig

TINY = dict(
    dataset="digits", filters=4, num_cells=2, num_stacks=2, batch_size=32, ghost_batch_size=16,
    train_steps=6, checkpoint_every=3, log_every=3, eval_batches=1, learning_rate=0.05,
)


def scalars(model_dir):
    """TensorBoard scalars written by the trainer: {tag: {step: value}}."""
    values = {}
    for path in glob.glob(os.path.join(model_dir, "train", "events.*")):
        for event in tf.compat.v1.train.summary_iterator(path):
            for v in event.summary.value:
                values.setdefault(v.tag, {})[event.step] = float(tf.make_ndarray(v.tensor))
    return values


def test_train_writes_config_checkpoints_and_summaries(tmp_path):
    model_dir = str(tmp_path / "run")
    result = trainer.train(TrainConfig(**TINY), model_dir, log=lambda s: None)
    assert result["step"] == 6 and not result["preempted"]
    assert 0.0 <= result["val_accuracy"] <= 1.0
    record = json.load(open(os.path.join(model_dir, "config.json")))
    assert record["kind"] == "tf_oneshot.oneshot" and record["config"]["space"]["args"]["filters"] == 4
    assert record["space"]["image_shape"] == [8, 8, 1]
    assert tf.train.latest_checkpoint(os.path.join(model_dir, "checkpoints")).endswith("ckpt-6")
    tags = scalars(model_dir)
    for tag in ("train/loss", "train/accuracy", "train/learning_rate", "train/drop_probability_ops"):
        assert sorted(tags[tag]) == [3, 6], tag
    # Bender et al. 2018 §3.2: the drop rate ramps linearly to r^(1/7) at the last step.
    assert tags["train/drop_probability_ops"][6] == pytest.approx(0.1 ** (1 / 7), rel=1e-5)
    assert tags["train/drop_probability_ops"][3] == pytest.approx(0.5 * 0.1 ** (1 / 7), rel=1e-5)
    loaded = trainer.load_oneshot(model_dir)
    assert loaded.step == 6 and loaded.space.filters == 4


def test_skipping_starts_where_the_dropout_ramp_makes_it_pay():
    config = TrainConfig(train_steps=1000)  # r = 0.1 ramped: p = 0.72 * step / 1000 for 7 ops
    sampler = trainer.make_run_sampler(config, CellSpace(filters=4, num_cells=3))

    def pays(config, s, ghosts):
        return trainer.skips_pay(sampler, config, s, ghosts)

    switch = [s for s in range(1001) if pays(config, s, ghosts=2)][0]
    # p^2 >= 0.25 from p = 0.5 on: step 0.5 / 0.1^(1/7) * 1000 = 694.7, so 695.
    assert switch == 695 and all(pays(config, s, 2) for s in range(switch, 1001))
    assert [s for s in range(1001) if pays(config, s, ghosts=1)][0] == 348
    assert not any(pays(config.replace(skip_threshold=1.0), s, 2) for s in range(1001))
    assert all(pays(config.replace(skip_threshold=0.0), s, 2) for s in range(1001))


def test_resume_continues_schedules_from_the_checkpoint(tmp_path):
    straight, resumed = str(tmp_path / "a"), str(tmp_path / "b")
    trainer.train(TrainConfig(**TINY), straight, log=lambda s: None)

    def stop_at_3(line):
        if line.startswith("step 3/"):
            os.kill(os.getpid(), signal.SIGTERM)  # as a Cloud TPU preemption would

    first = trainer.train(TrainConfig(**TINY), resumed, log=stop_at_3)
    assert first["preempted"] and first["step"] == 3
    lines = []
    second = trainer.train(TrainConfig(**TINY), resumed, log=lines.append)
    assert second["step"] == 6 and not second["preempted"]
    assert "from step 3 to 6" in lines[0]
    a, b = scalars(straight), scalars(resumed)
    for tag in ("train/learning_rate", "train/drop_probability_ops"):
        assert b[tag][6] == pytest.approx(a[tag][6]), tag
    # A finished model_dir trains no further.
    lines.clear()
    assert trainer.train(TrainConfig(**TINY), resumed, log=lines.append)["step"] == 6
    assert "already trained" in lines[0]


def test_model_dir_with_other_architecture_is_refused(tmp_path):
    model_dir = str(tmp_path / "run")
    trainer.train(TrainConfig(**{**TINY, "train_steps": 3}), model_dir, log=lambda s: None)
    before = sorted(os.listdir(os.path.join(model_dir, "checkpoints")))
    with pytest.raises(UserError, match=r"was trained with filters=4 \(this run asks for 8\)"):
        trainer.train(TrainConfig(**{**TINY, "filters": 8}), model_dir, log=lambda s: None)
    assert sorted(os.listdir(os.path.join(model_dir, "checkpoints"))) == before


def test_corrupt_checkpoint_is_one_line_and_kept(tmp_path):
    model_dir = str(tmp_path / "run")
    trainer.train(TrainConfig(**{**TINY, "train_steps": 3}), model_dir, log=lambda s: None)
    data_files = glob.glob(os.path.join(model_dir, "checkpoints", "ckpt-3.data-*"))
    for path in data_files:
        with open(path, "wb") as f:
            f.write(b"garbage")
    with pytest.raises(UserError, match="checkpoint .*ckpt-3 cannot be read") as info:
        trainer.train(TrainConfig(**TINY), model_dir, log=lambda s: None)
    assert "\n" not in str(info.value)
    assert all(open(p, "rb").read() == b"garbage" for p in data_files)
    with pytest.raises(UserError, match="cannot be read"):
        trainer.load_oneshot(model_dir)


def test_load_oneshot_refuses_missing_and_foreign_dirs(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        trainer.load_oneshot(str(tmp_path / "nope"))
    (tmp_path / "other").mkdir()
    with pytest.raises(UserError, match="not a tf_oneshot one-shot model_dir"):
        trainer.load_oneshot(str(tmp_path / "other"))
    (tmp_path / "other" / "config.json").write_text('{"kind": "something-else"}')
    with pytest.raises(UserError, match="not a tf_oneshot one-shot model_dir"):
        trainer.load_oneshot(str(tmp_path / "other"))


@pytest.mark.parametrize(
    "args, message",
    [
        (["train", "--dropout_rate=1.5"], "--dropout_rate=1.5 is invalid; r must lie strictly between 0 and 1"),
        (["train", "--dropout_rate=0"], "r must lie strictly between 0 and 1"),
        (["train", "--batch_size=64", "--ghost_batch_size=24"], "--ghost_batch_size=24 does not divide --batch_size=64"),
        (["train", "--dataset=mnist3d"], "nknown dataset"),
        (["train", "--dataset=cifar10"], "not prepared"),
        (["train", "--filters=0"], "--filters=0 is invalid"),
        (["train", "--num_cells=-2"], "--num_cells=-2 is invalid"),
        (["frobnicate"], "unknown command 'frobnicate'"),
        (["train", "--nonsense=1"], "Unknown command line flag 'nonsense'"),
    ],
)
def test_cli_bad_input_is_one_line(tmp_path, capsys, args, message):
    model_dir = tmp_path / "run"
    argv = ["tf-oneshot", *args, f"--model_dir={model_dir}", f"--data_dir={tmp_path / 'tfds'}"]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err
    assert err.count("\n") == 0 and err.startswith("tf-oneshot: error:")
    assert not (model_dir / "checkpoints").exists()


def test_cli_space_json(capsys):
    assert cli.main(["tf-oneshot", "space", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["size"] == 6_002_115_840
    assert summary["oneshot_params"] == 1_295_034
    assert set(summary) >= {"size", "oneshot_params", "oneshot_flops", "example"}
    assert cli.main(["tf-oneshot", "space", "--json", "--filters=32", "--num_cells=6"]) == 0
    assert json.loads(capsys.readouterr().out)["oneshot_params"] == 4_789_610
    # Issue 19 item 10: `space` assumed 32x32x3; --dataset describes the space `train` builds for it.
    assert cli.main(["tf-oneshot", "space", "--json", "--dataset=digits", "--filters=4", "--num_cells=2",
                     "--num_stacks=2"]) == 0
    digits = json.loads(capsys.readouterr().out)
    assert digits["config"]["image_shape"] == [8, 8, 1]


@pytest.mark.slow
def test_single_path_training_is_summarized_by_its_paths_not_the_all_on_network(tmp_path):
    """SPOS §3.2: a supernet trained one path at a time never trains its all-on network."""
    from tf_oneshot.training import samplers

    config = TrainConfig(space="spos_blocks", space_args="width_multiplier=0.5,stage_blocks=1:1:1:1",
                         dataset="digits", batch_size=64, ghost_batch_size=64, train_steps=80,
                         checkpoint_every=80, log_every=40, learning_rate=0.05, eval_batches=4)
    space = build_space(config.space, (8, 8, 1), 10)
    path = space.parse("7/7/7/7")
    sampler = samplers.UniformSampler(space, seed=0, total_steps=80, pool=[path])
    logs = []
    result = trainer.train(config, str(tmp_path / "run"), sampler=sampler, log=logs.append)
    model = trainer.load_oneshot(str(tmp_path / "run")).model
    all_on = trainer.evaluate_all_on(model, space, config)
    assert result["val_accuracy_of"] == "4 sampled architectures"
    assert any("4 sampled architectures validation accuracy" in line for line in logs)
    # Every draw is the trained path: its accuracy, far above the untrained all-on network's.
    assert result["val_accuracy"] > 0.5 > all_on + 0.2
    assert result["val_accuracy"] == pytest.approx(
        trainer.evaluate_all_on(model, space, config, masks={k: v[0] for k, v in space.encode_batch([path]).items()}))


def test_progress_lines_and_events_as_a_user_expects(tmp_path):
    """Issue 19 item 10: the first ETA counted tracing in; the dip at the ramp's end went unexplained; every
    rerun added an events file, even one that trained nothing; TensorBoard had no validation curve during
    training (--eval_every: the all-on network as at the end, Bender et al. §3.2, between host loops)."""
    model_dir, lines = str(tmp_path / "run"), []
    config = TrainConfig(**{**TINY, "steps_per_loop": 3, "eval_every": 4})
    result = trainer.train(config, model_dir, log=lines.append)
    step_lines = [line for line in lines if line.startswith("step ") and "/6:" in line]
    assert "ETA after the next log" in step_lines[0]  # step 3: only the tracing loop has run
    assert "ETA 0m00s" in step_lines[1]
    assert sum("the path-dropout ramp is complete" in line for line in lines) == 1
    assert len(lines) == len(set(lines))  # no line printed twice
    # Step 4 is no log or checkpoint step: the host loop stopped there to validate.
    values = scalars(model_dir)
    assert set(values["validation/accuracy"]) == set(values["validation/loss"]) == {4, 6}
    assert values["validation/accuracy"][6] == values["validation/all_on_accuracy"][6] == pytest.approx(
        result["val_accuracy"])
    assert all(0 < loss < 10 for loss in values["validation/loss"].values())
    validation_lines = [line for line in lines if re.match(r"step \d: all-on validation accuracy [\d.]+ loss", line)]
    assert len(validation_lines) == 2  # the end reuses step 6's
    events = sorted(os.listdir(os.path.join(model_dir, "train")))
    again = []
    trainer.train(config, model_dir, log=again.append)
    assert "already trained" in again[0] and not any("ramp is complete" in line for line in again)
    assert sorted(os.listdir(os.path.join(model_dir, "train"))) == events

