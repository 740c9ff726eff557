"""A one-shot model_dir as a value: opened once, it alone knows the directory's layout.

A model_dir holds `config.json` (the resolved training configuration and the
search space, written once), `checkpoints/` (tf.train.CheckpointManager over
model, optimizer and global step), `train/` and `validation/` (TensorBoard
events) and what later jobs write beside them (`nas/`, the fine-tuning
curve). `ModelDir.open` reads the config once and checks that the directory
is a model_dir; every job receives the value, never a path to open again.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import tensorflow as tf

from tf_oneshot.errors import UserError
from tf_oneshot.io_utils import atomic_write_json, read_json
from tf_oneshot.search_spaces import SearchSpace, space_from_config
from tf_oneshot.search_spaces.space_config import with_sharing
from tf_oneshot.training import optimizers
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


def step_of(path: str | None) -> int | None:
    """The global step in a checkpoint path written by the trainer ("…/ckpt-1200" -> 1200)."""
    return None if path is None else int(path.rsplit("-", 1)[-1])


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


@dataclasses.dataclass(frozen=True)
class ModelDir:
    """A one-shot run's directory: its recorded config and space, its checkpoints, its files.

    Build one with `ModelDir.open` (an existing run) or `ModelDir.create` (a
    run about to train); pass it on instead of the path.
    """

    path: str
    config: TrainConfig
    space: SearchSpace

    def __str__(self) -> str:
        return self.path

    # ------------------------------------------------------------- opening
    @classmethod
    def read(cls, path: str) -> ModelDir | None:
        """The model_dir at `path`, or None if it records no config yet.

        Raises:
            UserError: a config.json that is not ours.
        """
        record_path = os.path.join(path, CONFIG_FILE)
        if not tf.io.gfile.exists(record_path):
            return None
        record = read_json(record_path, "model_dir config")
        if not isinstance(record, dict) or record.get("kind") != KIND:
            raise UserError(
                f"{path} is not a tf_oneshot one-shot model_dir ({CONFIG_FILE} has another kind); "
                "pass the --model_dir that `tf-oneshot train` wrote."
            )
        config = TrainConfig.from_json(record["config"])  # version 2 records it flat, 3 by concern
        # The space is recorded without its sharing; the config's sharing flags rebuild it.
        return cls(path, config, with_sharing(space_from_config(record["space"]), config.space))

    @classmethod
    def open(cls, path: str | ModelDir | None) -> ModelDir:
        """The existing model_dir at `path` (an open one is returned as it is).

        Raises:
            UserError: no path, a missing directory, or one `tf-oneshot train` did not write.
        """
        if isinstance(path, ModelDir):
            return path
        if not path:
            raise UserError("--model_dir is required: the directory `tf-oneshot train` wrote.")
        if not tf.io.gfile.isdir(path):
            raise UserError(f"--model_dir={path} does not exist; train one with `tf-oneshot train`.")
        opened = cls.read(path)
        if opened is None:
            raise UserError(
                f"{path} is not a tf_oneshot one-shot model_dir (no {CONFIG_FILE}); "
                "pass the --model_dir that `tf-oneshot train` wrote."
            )
        return opened

    @classmethod
    def create(cls, path: str, config: TrainConfig, space: SearchSpace, write: bool = True) -> ModelDir:
        """Records config and space in a new model_dir, or checks them against an existing one.

        Args:
            write: False on a non-chief worker: the chief writes config.json.

        Raises:
            UserError: a model_dir trained with another network, or checkpoints without a config.
        """
        existing = cls.read(path)
        if existing is None:
            if write:
                if tf.io.gfile.exists(os.path.join(path, CHECKPOINTS)):
                    raise UserError(f"{path} has checkpoints but no {CONFIG_FILE}; use a new --model_dir.")
                atomic_write_json(
                    os.path.join(path, CONFIG_FILE),
                    {"kind": KIND, "version": 3, "config": config.to_json(), "space": space.to_config()},
                )
            return cls(path, config, space)
        differences = config.architecture_differences(existing.config)
        if differences or existing.space != space:
            detail = "; ".join(differences) or "the network differs"
            raise UserError(
                f"--model_dir={path} was trained with {detail}; use a new --model_dir "
                "or the same architecture flags."
            )
        return cls(path, config, space)

    # -------------------------------------------------------------- layout
    @property
    def checkpoints(self) -> str:
        """The directory of the checkpoints."""
        return os.path.join(self.path, CHECKPOINTS)

    def checkpoint(self, step: int) -> str:
        """The checkpoint path of `step` (it may not exist)."""
        return os.path.join(self.checkpoints, f"ckpt-{int(step)}")

    def events(self, name: str = "train") -> str:
        """A TensorBoard events directory of this run ("train", "validation")."""
        return os.path.join(self.path, name)

    def file(self, *parts: str) -> str:
        """A file a later job keeps in this run (`nas/iterations.jsonl`, the fine-tuning curve ...)."""
        return os.path.join(self.path, *parts)

    # --------------------------------------------------------- checkpoints
    def latest_checkpoint(self) -> str | None:
        return tf.train.latest_checkpoint(self.checkpoints)

    def latest_step(self) -> int | None:
        """The step of the latest checkpoint, None before the first."""
        return step_of(self.latest_checkpoint())

    def checkpoint_step(self) -> int:
        """The step of the latest checkpoint (UserError if none)."""
        step = self.latest_step()
        if step is None:
            raise UserError(f"{self.path} has no checkpoint yet; run `tf-oneshot train` first.")
        return step

    def checkpoint_paths(self) -> list[str]:
        """The checkpoints the run still holds, oldest first."""
        state = tf.train.get_checkpoint_state(self.checkpoints)
        return list(state.all_model_checkpoint_paths) if state else []

    def has_checkpoint(self, step: int) -> bool:
        return tf.io.gfile.exists(self.checkpoint(step) + ".index")

    def checkpoint_manager(self, checkpoint: tf.train.Checkpoint, step_counter: tf.Variable, keep: int,
                           directory: str | None = None) -> tf.train.CheckpointManager:
        """The manager that writes this run's checkpoints (`directory`: a worker's scratch copy instead)."""
        return tf.train.CheckpointManager(checkpoint, directory or self.checkpoints, max_to_keep=keep,
                                          step_counter=step_counter)

    # -------------------------------------------------------------- models
    def build_oneshot(self, per_replica_batch: int | None = None) -> Any:
        """The space's one-shot model with its weights created (the trainer's ghost batch size)."""
        model = optimizers.set_bn_momentum(self.space.build_oneshot(self.config.data.ghost_batch_size), self.config)
        if per_replica_batch:
            model(model.dummy_inputs(per_replica_batch), training=False)
        return model

    def load_oneshot(self, batch_size: int | None = None, strategy: tf.distribute.Strategy | None = None,
                     step: int | None = None) -> LoadedOneShot:
        """Restores the latest checkpoint (or `step`'s) into a fresh one-shot model.

        Args:
            batch_size: the batch the model is first called with (default: the
                training batch); any multiple of the ghost batch size works later.
            strategy: builds the model under this strategy's scope (default: the
                current one), with replica-local batch-norm statistics as in training.
            step: a checkpoint step instead of the latest.

        Raises:
            UserError: no checkpoint (at `step`), or a corrupt one.
        """
        from tf_oneshot.training.distribute import replica_local_statistics

        strategy = strategy or tf.distribute.get_strategy()
        path = self.latest_checkpoint() if step is None else self.checkpoint(step)
        if path is None or (step is not None and not self.has_checkpoint(step)):
            raise UserError(f"{self.path} has no checkpoint{'' if step is None else f' at step {step}'} yet; "
                            "run `tf-oneshot train` first.")
        with strategy.scope(), tf.variable_creator_scope(replica_local_statistics):
            model = self.build_oneshot(batch_size or self.config.data.batch_size)
        restore(tf.train.Checkpoint(model=model), path, partial=True)
        return LoadedOneShot(config=self.config, space=self.space, model=model, step=step_of(path))


def load_oneshot(model_dir: str | ModelDir, batch_size: int | None = None,
                 strategy: tf.distribute.Strategy | None = None) -> LoadedOneShot:
    """Restores the latest checkpoint of a trained one-shot model_dir (`ModelDir.load_oneshot`)."""
    return ModelDir.open(model_dir).load_oneshot(batch_size, strategy)
