"""The papers' setups in flags/ parse, through absl's --flagfile, into valid TrainConfigs."""

import copy
import pathlib

import pytest
from absl import flags

from tf_oneshot import distribute
from tf_oneshot.commands import train as train_command

FLAGS_DIR = pathlib.Path(__file__).resolve().parents[1] / "flags"


def parse(name: str, *extra: str):
    """Parses a flagfile the way `tf-oneshot train --flagfile=...` does, on a copy of FLAGS."""
    values = copy.deepcopy(flags.FLAGS)
    values.unparse_flags()
    values(["tf-oneshot train", f"--flagfile={FLAGS_DIR / name}", "--model_dir=unused", *extra])
    return values, train_command.config_from_flags(values)


def test_every_flagfile_is_covered():
    assert sorted(p.name for p in FLAGS_DIR.glob("*.flags")) == [
        "cifar10.flags", "cifar10_gpu.flags", "demo.flags", "imagenet.flags",
    ]


@pytest.mark.parametrize("name", ["demo.flags", "cifar10.flags", "cifar10_gpu.flags", "imagenet.flags"])
def test_header_names_the_command_and_the_paper_section(name):
    text = (FLAGS_DIR / name).read_text()
    assert text.startswith(f"# Command: tf-oneshot train --flagfile=flags/{name}")
    assert "Bender et al. 2018 §4." in text


def test_cifar10_is_section_4_1():
    values, config = parse("cifar10.flags")
    # §4.1: 16 workers x 64 = 1,024, two ghost batches of 32 per worker.
    assert (config.dataset, config.batch_size, config.ghost_batch_size) == ("cifar10", 1024, 32)
    assert config.num_ghosts == 32
    assert (config.learning_rate, config.momentum, config.train_steps) == (0.1, 0.9, 10_000)
    assert (config.dropout_rate, config.dropout_schedule, config.num_cells) == (0.1, "linear", 6)
    assert config.mixed_precision == "bfloat16" and values.strategy == "default"  # --tpu picks TPU


def test_cifar10_gpu_splits_the_same_batch_over_mirrored_gpus():
    values, config = parse("cifar10_gpu.flags")
    _, tpu_config = parse("cifar10.flags")
    assert values.strategy == "mirrored" and config.mixed_precision == "float16"
    same = ("batch_size", "ghost_batch_size", "learning_rate", "momentum", "train_steps",
            "dropout_rate", "dropout_schedule", "num_cells", "filters", "weight_decay")
    assert {k: getattr(config, k) for k in same} == {k: getattr(tpu_config, k) for k in same}
    for gpus in (1, 2, 4, 8, 16):  # any power-of-two GPU count keeps whole ghost batches
        assert (config.batch_size // gpus) % config.ghost_batch_size == 0


def test_imagenet_is_section_4_2():
    _, config = parse("imagenet.flags")
    assert (config.dataset, config.batch_size, config.train_steps, config.num_cells) == (
        "imagenet2012", 4096, 15_000, 8)
    assert config.stem_stride == 4 and config.mixed_precision == "bfloat16"
    # 224x224 inputs, as the paper's ImageNet models.
    from tf_oneshot.data import TFDS_SOURCES

    assert TFDS_SOURCES[config.dataset].image_shape == (224, 224, 3)
    # 16 chips (the paper's four Cloud TPUs) with 1 or 2 cores each: whole ghost batches.
    for replicas in (16, 32):
        assert (config.batch_size // replicas) % config.ghost_batch_size == 0


def test_demo_runs_on_the_embedded_dataset():
    values, config = parse("demo.flags")
    assert config.dataset == "digits" and config.mixed_precision == "none"
    assert values.strategy == "default" and values.tpu is None
    assert config.train_steps * config.batch_size <= 50_000  # minutes on a laptop CPU


@pytest.mark.parametrize("name", ["demo.flags", "cifar10.flags", "cifar10_gpu.flags", "imagenet.flags"])
def test_strategy_and_precision_choices_are_accepted(name):
    values, config = parse(name)
    assert values.strategy in distribute.STRATEGIES
    assert config.mixed_precision in distribute.MIXED_PRECISION
    # A flag given after the flagfile overrides it, as users expect.
    _, overridden = parse(name, "--train_steps=7")
    assert overridden.train_steps == 7


@pytest.mark.parametrize("name", ["demo.flags", "cifar10.flags", "cifar10_gpu.flags", "imagenet.flags"])
def test_the_learning_rate_schedule_is_explicit_and_its_choice_explained(name):
    text = (FLAGS_DIR / name).read_text()
    assert "\n--lr_schedule=cosine\n" in text
    header = "".join(line for line in text.splitlines(keepends=True) if line.startswith("#"))
    assert "silent" in header and "cosine" in header
    _, config = parse(name)
    assert config.lr_schedule == "cosine"
