"""A one-shot model_dir: its recorded config, its checkpoints, and loading it.

A model_dir holds `config.json` (the resolved training configuration and the
search space, written once), `checkpoints/` (tf.train.CheckpointManager over
model, optimizer and global step) and `train/` (TensorBoard events). This
module is the one place that knows that layout and the one check of whether
a directory is a model_dir; train, search, retrain, the tuner and the demo ask
it.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import tensorflow as tf

from tf_oneshot.errors import UserError
from tf_oneshot.io_utils import atomic_write_json, read_json
from tf_oneshot.search_spaces import SearchSpace, space_from_config
from tf_oneshot.training.config import TrainConfig

KIND = "tf_oneshot.oneshot"
CONFIG_FILE = "config.json"
CHECKPOINTS = "checkpoints"


@dataclasses.dataclass
class LoadedOneShot:
    """A trained one-shot model restored from a model_dir."""

    config: TrainConfig
    space: SearchSpace
    model: Any
    step: int


def read(model_dir: str) -> tuple[TrainConfig, SearchSpace] | None:
    """The config and space recorded in `model_dir`, or None if it records none.

    Raises:
        UserError: if the directory holds a config.json that is not ours.
    """
    path = os.path.join(model_dir, CONFIG_FILE)
    if not tf.io.gfile.exists(path):
        return None
    record = read_json(path, "model_dir config")
    if not isinstance(record, dict) or record.get("kind") != KIND:
        raise UserError(
            f"{model_dir} is not a tf_oneshot one-shot model_dir ({CONFIG_FILE} has another kind); "
            "pass the --model_dir that `tf-oneshot train` wrote."
        )
    config = TrainConfig.from_json(record["config"])
    # The space is recorded without its sharing; the config's sharing flags rebuild it.
    return config, config.shared(space_from_config(record["space"]))


def require(model_dir: str | None) -> tuple[TrainConfig, SearchSpace]:
    """The recorded config and space of an existing model_dir (UserError otherwise)."""
    if not model_dir:
        raise UserError("--model_dir is required: the directory `tf-oneshot train` wrote.")
    if not tf.io.gfile.isdir(model_dir):
        raise UserError(f"--model_dir={model_dir} does not exist; train one with `tf-oneshot train`.")
    recorded = read(model_dir)
    if recorded is None:
        raise UserError(
            f"{model_dir} is not a tf_oneshot one-shot model_dir (no {CONFIG_FILE}); "
            "pass the --model_dir that `tf-oneshot train` wrote."
        )
    return recorded


def prepare(config: TrainConfig, space: SearchSpace, model_dir: str, write: bool = True) -> None:
    """Records config and space in a new model_dir, or checks them against an existing one.

    Raises:
        UserError: a model_dir trained with another network, or checkpoints without a config.
    """
    recorded = read(model_dir)
    if recorded is None:
        if not write:  # A non-chief worker: the chief writes config.json.
            return
        if tf.io.gfile.exists(os.path.join(model_dir, CHECKPOINTS)):
            raise UserError(f"{model_dir} has checkpoints but no {CONFIG_FILE}; use a new --model_dir.")
        atomic_write_json(
            os.path.join(model_dir, CONFIG_FILE),
            {"kind": KIND, "version": 2, "config": config.to_json(), "space": space.to_config()},
        )
        return
    old_config, old_space = recorded
    differences = config.architecture_differences(old_config)
    if differences or old_space != space:
        detail = "; ".join(differences) or "the network differs"
        raise UserError(
            f"--model_dir={model_dir} was trained with {detail}; use a new --model_dir "
            "or the same architecture flags."
        )


def latest_checkpoint(model_dir: str) -> str | None:
    return tf.train.latest_checkpoint(os.path.join(model_dir, CHECKPOINTS))


def step_of(path: str | None) -> int | None:
    """The global step in a checkpoint path written by the trainer."""
    return None if path is None else int(path.rsplit("-", 1)[-1])


def checkpoint_step(model_dir: str) -> int:
    """The step of the latest checkpoint (UserError if none)."""
    path = latest_checkpoint(model_dir)
    if path is None:
        raise UserError(f"{model_dir} has no checkpoint yet; run `tf-oneshot train` first.")
    return step_of(path)


def restore(checkpoint: tf.train.Checkpoint, path: str | None, partial: bool = False) -> None:
    """Restores `path` into `checkpoint` (UserError with a way out if it cannot be read)."""
    if path is None:
        return
    try:
        status = checkpoint.restore(path).assert_existing_objects_matched()
        if partial:  # The optimizer's slots stay in the file, unread and unmentioned.
            status.expect_partial()
    except (tf.errors.OpError, ValueError, AssertionError, IndexError) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:160]
        raise UserError(
            f"checkpoint {path} cannot be read ({first}); move that checkpoint's files aside to "
            "resume from an earlier one, or use a new --model_dir."
        ) from None


def build_oneshot(config: TrainConfig, space: SearchSpace, per_replica_batch: int | None = None) -> Any:
    """The space's one-shot model with its weights created (the trainer's ghost batch size)."""
    model = space.build_oneshot(config.ghost_batch_size)
    if per_replica_batch:
        model(model.dummy_inputs(per_replica_batch), training=False)
    return model


def load_oneshot(
    model_dir: str, batch_size: int | None = None, strategy: tf.distribute.Strategy | None = None
) -> LoadedOneShot:
    """Restores the latest checkpoint of a trained one-shot model_dir.

    Args:
        model_dir: a directory written by `tf_oneshot.train`.
        batch_size: the batch the model is first called with (default: the
            training batch); any multiple of the ghost batch size works later.
        strategy: builds the model under this strategy's scope (default: the
            current one), with replica-local batch-norm statistics as in training.

    Raises:
        UserError: for a missing or foreign model_dir, no checkpoint, or a corrupt one.
    """
    from tf_oneshot.training.distribute import replica_local_statistics

    config, space = require(model_dir)
    strategy = strategy or tf.distribute.get_strategy()
    latest = latest_checkpoint(model_dir)
    if latest is None:
        raise UserError(f"{model_dir} has no checkpoint yet; run `tf-oneshot train` first.")
    with strategy.scope(), tf.variable_creator_scope(replica_local_statistics):
        model = build_oneshot(config, space, batch_size or config.batch_size)
    restore(tf.train.Checkpoint(model=model), latest, partial=True)
    return LoadedOneShot(config=config, space=space, model=model, step=step_of(latest))
