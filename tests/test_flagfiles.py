"""The papers' setups in flags/ parse, through absl's --flagfile, into valid TrainConfigs."""

import copy
import pathlib

import pytest
from absl import flags

from tf_oneshot.commands import flags as registry
from tf_oneshot.search_spaces.space_config import build_space, for_space
from tf_oneshot.training import distribute

FLAGS_DIR = pathlib.Path(__file__).resolve().parents[1] / "flags"


def parse(name: str, *extra: str):
    """Parses a flagfile the way `tf-oneshot train --flagfile=...` does, on a copy of FLAGS."""
    values = copy.deepcopy(flags.FLAGS)
    values.unparse_flags()
    values(["tf-oneshot train", f"--flagfile={FLAGS_DIR / name}", "--model_dir=unused", *extra])
    return values, registry.config_from_flags(values)


BENDER = ["demo.flags", "cifar10.flags", "cifar10_gpu.flags", "imagenet.flags"]
SPOS_TRAIN = ["spos_imagenet.flags", "spos_channels.flags", "spos_quant_resnet18.flags"]
TRAIN_FLAGFILES = BENDER + SPOS_TRAIN + ["insights_darts64.flags"]
# Each recipe's last stage, `tf-oneshot retrain` (its flags only): supernet flagfile -> retrain flagfile.
RETRAIN = {"cifar10.flags": "cifar10_retrain.flags", "imagenet.flags": "imagenet_retrain.flags",
           "spos_imagenet.flags": "spos_imagenet_retrain.flags"}


def parse_demo(name: str, *extra: str):
    """Parses a flagfile the way `tf-oneshot demo --flagfile=...` does: the DemoConfig it runs."""
    from tf_oneshot.commands import demo as demo_command

    values = copy.deepcopy(flags.FLAGS)
    values.unparse_flags()
    values(["tf-oneshot demo", f"--flagfile={FLAGS_DIR / name}", *extra])
    return demo_command.demo_config(values)


def test_every_flagfile_is_covered():
    assert sorted(p.name for p in FLAGS_DIR.glob("*.flags")) == sorted(
        [*TRAIN_FLAGFILES, "spos_demo.flags", *RETRAIN.values()])


def parse_retrain(name: str, *extra: str):
    """Parses a retrain flagfile as `tf-oneshot retrain --flagfile=...` does: the flags set and the TrainConfig."""
    from tf_oneshot.commands import retrain
    from tf_oneshot.training.config import TrainConfig

    values = copy.deepcopy(flags.FLAGS)
    values.unparse_flags()
    values(["tf-oneshot retrain", f"--flagfile={FLAGS_DIR / name}", *extra])
    return {n for n in retrain.FLAG_NAMES if values[n].present}, TrainConfig(
        **registry.given(values, registry.STANDALONE_TRAIN_FLAGS))


@pytest.mark.parametrize("train_file,retrain_file", RETRAIN.items())
def test_a_retrain_recipe_holds_only_retrain_flags_and_keeps_the_supernet_data(train_file, retrain_file):
    from tf_oneshot.commands import retrain

    text = (FLAGS_DIR / retrain_file).read_text()
    assert text.startswith(f"# Command: tf-oneshot retrain --flagfile=flags/{retrain_file}")
    assert f"flags/{train_file}" in text  # names the supernet stage it follows
    names = [line[2:].split("=")[0] for line in text.splitlines() if line.startswith("--")]
    assert names and set(names) <= set(retrain.FLAG_NAMES)  # a flag no command reads is refused
    _, supernet = parse(train_file)
    _, config = parse_retrain(retrain_file)
    assert config.data.dataset == supernet.data.dataset


def test_spos_retrain_recipe_is_section_4_final_training():
    # §4: "the best architecture for 240 epochs (300000 iterations)", batch 1,024, ShuffleNetV2's settings.
    _, config = parse_retrain("spos_imagenet_retrain.flags")
    optimizer = config.optimizer
    assert (config.train_steps, config.data.batch_size, config.data.dataset) == (300_000, 1024, "imagenet2012")
    assert (optimizer.learning_rate, optimizer.lr_schedule, optimizer.momentum, optimizer.weight_decay) == (
        0.5, "linear", 0.9, 4e-5)
    assert config.data.batch_size // config.data.ghost_batch_size == 8  # BN per replica on 8 GPUs
    # Bender et al. §4.1, Figure 5: about 28 epochs of 45,000 images at batch 64, ghost batches of 32.
    _, cifar = parse_retrain("cifar10_retrain.flags")
    assert (cifar.train_steps, cifar.data.batch_size, cifar.data.ghost_batch_size) == (19_688, 64, 32)
    # §4.2: 200 epochs of ImageNet's 1,281,167 training images at batch 4,096.
    _, imagenet = parse_retrain("imagenet_retrain.flags")
    assert imagenet.train_steps == -(-200 * 1_281_167 // 4096) and imagenet.data.batch_size == 4096


def test_the_spos_recipe_reaches_the_winners_retraining(tmp_path, monkeypatch, capsys):
    """The winner retrains with the recipe's batch, schedule and optimizer (steps capped at tiny scale),
    read back from the retrain results; the recipe's data swapped for the embedded digits."""
    from tf_oneshot.commands import cli
    from tf_oneshot.io_utils import read_jsonl
    from tf_oneshot.search_spaces import space_from_config

    monkeypatch.setenv("TF_ONESHOT_TINY", "1")
    space_flags = ["--space=spos_blocks", "--space_args=width_multiplier=0.5,stage_blocks=2:2:4:2"]
    results = str(tmp_path / "retrain.jsonl")
    rc = cli.main(["tf-oneshot", "retrain", f"--flagfile={FLAGS_DIR / 'spos_imagenet_retrain.flags'}",
                   "--dataset=digits", *space_flags, "--architectures=3/3/3/3/3/3/3/3/3/3", "--full_train",
                   f"--results={results}", f"--output_dir={tmp_path / 'export'}"])
    assert rc == 0, capsys.readouterr().err
    (record,) = read_jsonl(results)
    assert space_from_config(record["space"]).name == "spos_blocks"
    assert {k: record[k] for k in ("batch_size", "ghost_batch_size", "learning_rate", "lr_schedule", "momentum",
                                   "weight_decay", "full_train")} == {
        "batch_size": 1024, "ghost_batch_size": 128, "learning_rate": 0.5, "lr_schedule": "linear",
        "momentum": 0.9, "weight_decay": 4e-5, "full_train": True}
    assert record["train_steps"] == registry.TINY["train_steps"]  # 300,000 capped by TF_ONESHOT_TINY


@pytest.mark.parametrize("name", BENDER)
def test_header_names_the_command_and_the_paper_section(name):
    text = (FLAGS_DIR / name).read_text()
    assert text.startswith(f"# Command: tf-oneshot train --flagfile=flags/{name}")
    assert "Bender et al. 2018 §4." in text


@pytest.mark.parametrize("name,sections", [
    ("spos_imagenet.flags", ["§4", "Table 2", "§3.2", "§3.4"]),
    ("spos_channels.flags", ["§3.3", "Figure 3b", "Table 4"]),
    ("spos_quant_resnet18.flags", ["§3.3", "Figure 3c", "Table 6"]),
    ("spos_demo.flags", ["§3.2", "§3.4", "Algorithm 1"]),
])
def test_spos_headers_name_the_command_and_cite_their_sections(name, sections):
    text = (FLAGS_DIR / name).read_text()
    command = "demo" if name == "spos_demo.flags" else "train"
    assert text.startswith(f"# Command: tf-oneshot {command} --flagfile=flags/{name}")
    assert "SPOS" in text and all(section in text for section in sections), name


@pytest.mark.parametrize("name,space", [("spos_imagenet.flags", "spos_blocks"), ("spos_channels.flags", "spos_channels"),
                                        ("spos_quant_resnet18.flags", "spos_quant_resnet18")])
def test_spos_imagenet_setups_are_section_4(name, space):
    _, config = parse(name)
    # §4 "Training": batch 1,024, 120 epochs of the 1,231,121 training images left after validation.
    assert (config.space.spec, config.data.dataset, config.data.batch_size) == (space, "imagenet2012", 1024)
    assert config.train_steps == -(-120 * 1_231_121 // 1024)
    # ShuffleNetV2's SGD settings, which SPOS follows.
    optimizer = config.optimizer
    assert (optimizer.learning_rate, optimizer.momentum, optimizer.weight_decay) == (0.5, 0.9, 4e-5)
    # One path per replica and step on 8 replicas.
    assert config.data.batch_size // config.data.ghost_batch_size == 8
    if space != "spos_quant_resnet18":  # Table 3-4's FLOPs <= 330M, uniform constraint sampling (§3.2)
        assert config.sampler.name == "uniform_constraint"
        assert config.sampler.constraints.max_flops == 330_000_000


def test_spos_search_recalibrates_on_20000_imagenet_images_and_a_share_elsewhere():
    # §3.4: BN statistics "recalculated on a random subset of training data (20000 images on ImageNet)".
    from tf_oneshot.search.scorer import default_recalibration_images

    assert default_recalibration_images(1_231_121) == 20_000
    assert default_recalibration_images(45_000) == 731  # CIFAR-10: the same share
    assert default_recalibration_images(1_197) == 512  # digits: at least 512
    assert default_recalibration_images(300) == 300  # never more than the split
    _, config = parse("spos_imagenet.flags")
    space = build_space(config.space, (224, 224, 3), 1000, stem_stride=4)
    assert space.default_bn_mode == "recalibrate"
    cell = build_space(for_space(config.space, "bender_cell"), (32, 32, 3), 10)
    assert cell.default_bn_mode == "batch"  # path dropout: batch statistics (Bender et al. §3.2)


def test_spos_imagenet_flops_limit_lies_inside_the_table_2_space():
    from tf_oneshot.search_spaces.constraints import ConstrainedSampler

    _, config = parse("spos_imagenet.flags")
    space = build_space(config.space, (224, 224, 3), 1000, stem_stride=4)
    ConstrainedSampler(space, config.sampler.constraints)  # raises if no architecture fits
    # Table 3's "all choice_3" fits.
    assert space.count(space.uniform("3")).flops <= config.sampler.constraints.max_flops


def test_spos_demo_runs_spos_pipeline_on_digits():
    from tf_oneshot.search_spaces.constraints import ConstrainedSampler

    demo = parse_demo("spos_demo.flags")
    train = demo.train
    # None: the space's own sampler, uniform.
    assert (train.space.spec, train.data.dataset, train.sampler.name) == ("spos_blocks", "digits", None)
    assert train.data.num_ghosts == 1  # one path per step (SPOS §3.2)
    assert train.train_steps * train.data.batch_size <= 200_000  # minutes on a laptop CPU (~1,000 images/s)
    assert demo.constraints.max_flops == train.sampler.constraints.max_flops and demo.constraints.active
    assert demo.retrain_select == "best" and demo.num_evolution > 0
    space = build_space(train.space, (8, 8, 1), 10)
    assert space.name == "spos_blocks" and space.default_bn_mode == "recalibrate"
    ConstrainedSampler(space, demo.constraints)  # the FLOPs limit lies inside the space's range
    low, high = space.cost_bounds()["flops"]
    assert low < demo.constraints.max_flops < high
    # A flag after the flagfile overrides it; the plain demo keeps Bender et al.'s pipeline.
    assert parse_demo("spos_demo.flags", "--num_evolution=7").num_evolution == 7
    # A search flag counts when set (the demo's own default otherwise), in the flags parsed here.
    assert parse_demo("spos_demo.flags", "--population_size=30").population_size == 30
    # --rank_by too: the demo ranks by the loss unless told (its flag default is insights').
    assert parse_demo("demo.flags").rank_by == "loss"
    assert parse_demo("demo.flags", "--rank_by=accuracy").rank_by == "accuracy"
    from tf_oneshot.demo import DEFAULT_CONFIG

    assert parse_demo("demo.flags") == DEFAULT_CONFIG


def test_cifar10_is_section_4_1():
    values, config = parse("cifar10.flags")
    # §4.1: 16 workers x 64 = 1,024, two ghost batches of 32 per worker.
    data, optimizer = config.data, config.optimizer
    assert (data.dataset, data.batch_size, data.ghost_batch_size, data.num_ghosts) == ("cifar10", 1024, 32, 32)
    assert (optimizer.learning_rate, optimizer.momentum, config.train_steps) == (0.1, 0.9, 10_000)
    assert (config.sampler.dropout_rate, config.sampler.dropout_schedule) == (0.1, "linear")
    assert config.space.options["num_cells"] == 6
    assert config.mixed_precision == "bfloat16" and values.strategy == "default"  # --tpu picks TPU


def test_cifar10_gpu_splits_the_same_batch_over_mirrored_gpus():
    values, config = parse("cifar10_gpu.flags")
    _, tpu_config = parse("cifar10.flags")
    assert values.strategy == "mirrored" and config.mixed_precision == "float16"
    same = ("batch_size", "ghost_batch_size", "learning_rate", "momentum", "train_steps",
            "dropout_rate", "dropout_schedule", "num_cells", "filters", "weight_decay")
    assert {k: config.to_flat()[k] for k in same} == {k: tpu_config.to_flat()[k] for k in same}
    for gpus in (1, 2, 4, 8, 16):  # any power-of-two GPU count keeps whole ghost batches
        assert (config.data.batch_size // gpus) % config.data.ghost_batch_size == 0


def test_imagenet_is_section_4_2():
    _, config = parse("imagenet.flags")
    assert (config.data.dataset, config.data.batch_size, config.train_steps) == ("imagenet2012", 4096, 15_000)
    assert config.space.options["num_cells"] == 8 and config.space.options["stem_stride"] == 4
    assert config.mixed_precision == "bfloat16"
    # 224x224 inputs, as the paper's ImageNet models.
    from tf_oneshot.training.data import TFDS_SOURCES

    assert TFDS_SOURCES[config.data.dataset].image_shape == (224, 224, 3)
    # 16 chips (the paper's four Cloud TPUs) with 1 or 2 cores each: whole ghost batches.
    for replicas in (16, 32):
        assert (config.data.batch_size // replicas) % config.data.ghost_batch_size == 0


def test_demo_runs_on_the_embedded_dataset():
    values, config = parse("demo.flags")
    assert config.data.dataset == "digits" and config.mixed_precision == "none"
    assert values.strategy == "default" and values.tpu is None
    assert config.train_steps * config.data.batch_size <= 50_000  # minutes on a laptop CPU


@pytest.mark.parametrize("name", TRAIN_FLAGFILES)
def test_strategy_and_precision_choices_are_accepted(name):
    values, config = parse(name)
    assert values.strategy in distribute.STRATEGIES
    assert config.mixed_precision in distribute.MIXED_PRECISION
    # A flag given after the flagfile overrides it, as users expect.
    _, overridden = parse(name, "--train_steps=7")
    assert overridden.train_steps == 7


@pytest.mark.parametrize("name", [*TRAIN_FLAGFILES, "spos_demo.flags"])
def test_the_learning_rate_schedule_is_explicit_and_its_choice_explained(name):
    text = (FLAGS_DIR / name).read_text()
    # Bender et al. are silent on decay (cosine, explained); SPOS follows ShuffleNetV2's linear decay.
    schedule = "linear" if name.startswith("spos_") else "cosine"
    assert f"\n--lr_schedule={schedule}\n" in text
    header = "".join(line for line in text.splitlines(keepends=True) if line.startswith("#"))
    # "Deeper insights" states its schedule (App. A.1); the others explain their choice.
    explained = "cosine schedule without restart" if name == "insights_darts64.flags" else "silent"
    assert explained in header and schedule in header
    config = parse_demo(name).train if name == "spos_demo.flags" else parse(name)[1]
    assert config.optimizer.lr_schedule == schedule


def test_deeper_insights_flagfile_trains_as_appendix_a1():
    """"Deeper insights" App. A.1: plain momentum 0.9, wd 1e-3, cosine 0.025 -> 0.001, a child per mini-batch."""
    values, config = parse("insights_darts64.flags")
    opt = config.optimizer
    assert (opt.momentum, opt.nesterov, opt.weight_decay) == (0.9, False, 1e-3)
    assert (opt.lr_schedule, opt.learning_rate, opt.end_learning_rate) == ("cosine", 0.025, 0.001)
    assert opt.bn_momentum == pytest.approx(1 - 0.4)  # PyTorch's 0.4, footnote 3
    assert config.sampler.path_per == "step" and config.data.num_ghosts == 1
    assert config.data.batch_size == 256 and config.train_steps == 200 * 196
    assert config.space.spec == "darts64"


@pytest.mark.parametrize("name", [*SPOS_TRAIN, "spos_demo.flags"])
def test_spos_flagfiles_draw_one_path_per_step(name):
    """SPOS §3.2, Eq. 8: one architecture per step, shared by every replica and ghost batch."""
    text = (FLAGS_DIR / name).read_text()
    assert "--path_per=step" in text.splitlines()
