"""TrainConfig is one value per concern, still spelled by the flat names of flags, records and older runs."""

import dataclasses
import json
import os

import pytest

from tf_oneshot.errors import UserError
from tf_oneshot.search_spaces import get_space
from tf_oneshot.search_spaces.constraints import Constraints
from tf_oneshot.search_spaces.space_config import SpaceConfig, build_space, for_space, parse_space_args
from tf_oneshot.training.config import DataConfig, OptimizerConfig, SamplerConfig, TrainConfig
from tf_oneshot.training.model_dir import ModelDir

FLAT = dict(dataset="digits", train_steps=100, filters=8, num_cells=2, learning_rate=0.05, batch_size=32,
            ghost_batch_size=16, sampler="uniform", max_flops=10**9, dropout_rate=0.2, space_args="width=3",
            sharing_seed=2, order_seed=5, seed=7)


def test_flat_names_route_to_their_concern():
    config = TrainConfig(**FLAT)
    assert config.data == DataConfig(dataset="digits", batch_size=32, ghost_batch_size=16)
    assert config.space == SpaceConfig(args={"filters": 8, "num_cells": 2, "width": 3}, sharing_seed=2)
    assert config.sampler == SamplerConfig(name="uniform", dropout_rate=0.2, order_seed=5,
                                           constraints=Constraints(max_flops=10**9))
    assert config.optimizer == OptimizerConfig(learning_rate=0.05)
    assert (config.train_steps, config.seed, config.sampler_seed, config.data.num_ghosts) == (100, 7, 5, 2)
    assert config == TrainConfig(data=config.data, space=config.space, sampler=config.sampler,
                                 optimizer=config.optimizer, train_steps=100, seed=7)


def test_to_flat_gives_back_every_flat_name_and_from_json_reads_either_form():
    config = TrainConfig(**FLAT)
    flat = config.to_flat()
    assert {k: flat[k] for k in FLAT} == FLAT
    assert len(flat) == 49 and flat["stem_stride"] is None and flat["min_params"] is None
    assert TrainConfig(**flat) == config
    assert TrainConfig.from_json(flat) == config  # config.json of runs written before concerns
    assert TrainConfig.from_json(json.loads(json.dumps(config.to_json()))) == config
    assert TrainConfig.from_json({**flat, "retired_field": 1}) == config


def test_space_arguments_do_not_depend_on_order_nor_on_their_spelling():
    a = TrainConfig(space_args="width=3,filters=8")
    b = TrainConfig(filters=8, space_args="width=3")
    assert a == b and a.space.args == (("filters", 8), ("width", 3))
    assert a.to_flat()["space_args"] == "width=3" and a.to_flat()["filters"] == 8
    with pytest.raises(UserError, match="--space_args sets filters and so does --filters; keep one."):
        TrainConfig(filters=8, space_args="filters=4")


def test_replace_takes_flat_names_and_concerns():
    config = TrainConfig(**FLAT)
    assert config.replace(space="darts64").space.options == config.space.options
    assert config.replace(space="darts64").space.spec == "darts64"
    assert config.replace(sampler=None).sampler == dataclasses.replace(config.sampler, name=None)
    assert config.replace(filters=None).space.options == {"num_cells": 2, "width": 3}
    assert config.replace(space_args=None).space.options == {"filters": 8, "num_cells": 2}
    data = DataConfig(batch_size=64)
    assert config.replace(data=data).data == data
    assert config.replace(data=data, batch_size=128).data.batch_size == 128  # flat names change the value given
    assert dataclasses.replace(config, seed=1) == config.replace(seed=1)
    with pytest.raises(TypeError, match="unexpected keyword argument 'filterz'"):
        config.replace(filterz=8)


@pytest.mark.parametrize("kwargs,message", [
    (dict(filters=0), "--filters=0 is invalid; it must be a positive integer."),
    (dict(train_steps=0), "--train_steps=0 is invalid; it must be a positive integer."),
    (dict(batch_size=64, ghost_batch_size=24), "--ghost_batch_size=24 does not divide --batch_size=64"),
    (dict(dropout_rate=1.0), "--dropout_rate=1.0 is invalid; r must lie strictly between 0 and 1"),
    (dict(lr_schedule="step"), "--lr_schedule=step is invalid; choose one of cosine, linear, constant."),
    (dict(momentum=1.0), r"--momentum in \[0, 1\); got 0.1, 0.0001, 1.0."),
    (dict(stem_stride=3), "--stem_stride=3 is invalid; choose 1, 2 or 4."),
    (dict(sharing_groups=0), "--sharing_groups=0 is invalid; expected an integer >= 1."),
    (dict(min_flops=10, max_flops=5), "flops"),
    (dict(mixed_precision="fp8"), "--mixed_precision=fp8 is invalid; choose one of none, bfloat16, float16."),
    (dict(eval_every=-1), r"--eval_every=-1 is invalid; expected a number of steps, e.g. 1000, or 0 to validate"),
])
def test_each_concern_checks_its_fields_in_one_line(kwargs, message):
    with pytest.raises(UserError, match=message) as info:
        TrainConfig(**kwargs)
    assert "\n" not in str(info.value)


def test_build_space_refuses_arguments_the_space_lacks_and_takes_the_dataset_stem_stride():
    with pytest.raises(UserError, match="--num_blocks does not apply to --space=darts64; its fields are"):
        build_space(SpaceConfig("darts64", {"num_blocks": 2}), (8, 8, 1), 10)
    assert build_space(SpaceConfig(), (8, 8, 1), 10, stem_stride=2).stem_stride == 2
    assert build_space(SpaceConfig(args={"stem_stride": 1}), (8, 8, 1), 10, stem_stride=2).stem_stride == 1
    spos = for_space(SpaceConfig(args={"num_blocks": 2, "filters": 8}), "darts64")
    assert spos == SpaceConfig("darts64", {"filters": 8})
    assert get_space("darts64", **parse_space_args("filters=8")).filters == 8


def test_a_model_dir_written_with_a_flat_config_still_opens(tmp_path):
    config = TrainConfig(**{**FLAT, "sampler": None, "max_flops": None, "space_args": None}, space="darts64")
    space = build_space(config.space, (8, 8, 1), 10)
    with open(os.path.join(tmp_path, "config.json"), "w") as f:  # as version 2 wrote it
        json.dump({"kind": "tf_oneshot.oneshot", "version": 2, "config": config.to_flat(),
                   "space": space.to_config()}, f)
    opened = ModelDir.open(str(tmp_path))
    assert opened.config == config and opened.space == space
    assert ModelDir.create(str(tmp_path), config, space).config == config  # the same architecture
