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


def parse_demo(name: str, *extra: str):
    """Parses a flagfile the way `tf-oneshot demo --flagfile=...` does: the DemoConfig it runs."""
    from tf_oneshot.commands import demo as demo_command

    values = copy.deepcopy(flags.FLAGS)
    values.unparse_flags()
    values(["tf-oneshot demo", f"--flagfile={FLAGS_DIR / name}", *extra])
    return demo_command.demo_config(values)


def test_every_flagfile_is_covered():
    assert sorted(p.name for p in FLAGS_DIR.glob("*.flags")) == sorted([*TRAIN_FLAGFILES, "spos_demo.flags"])


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
