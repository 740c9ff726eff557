"""`tf-oneshot train`: trains the one-shot model into --model_dir and resumes from it."""

import tensorflow as tf

from tf_oneshot.commands import flags
from tf_oneshot.errors import UserError
from tf_oneshot.search_spaces import BUILTIN
from tf_oneshot.search_spaces.check import check_space
from tf_oneshot.search_spaces.space_config import build_space
from tf_oneshot.training import data, distribute, preemption, trainer
from tf_oneshot.training.config import ARCHITECTURE_FIELDS, TrainConfig
from tf_oneshot.training.model_dir import ModelDir

FLAG_NAMES = (*flags.TRAIN_FLAGS, "model_dir", "strategy", "tpu", "graph_optimizer")
# What an unset flag means: TrainConfig's default (`--help` shows it).
FLAG_DEFAULTS = TrainConfig().to_flat()


def run(FLAGS) -> int:
    config = config_for(FLAGS.model_dir, flags.given(FLAGS, flags.TRAIN_FLAGS))
    if config.space.spec not in BUILTIN:
        check_user_space(config)
    strategy = distribute.get_strategy(FLAGS.strategy, FLAGS.tpu, FLAGS.graph_optimizer)
    result = trainer.train(config, FLAGS.model_dir, strategy=strategy)
    if result["preempted"]:  # the trainer logged the step it saved
        return preemption.exit_code()  # 128 + the signal: wrappers tell a stopped run from a finished one
    return 0


def config_for(model_dir: str | None, given: dict) -> TrainConfig:
    """The flags the user set, over what an existing --model_dir recorded for its network.

    A rerun on a model_dir resumes it: the dataset and the space (a user's
    included) default to the recorded ones, as --space's help says. Setting
    --space names another space, so none of the recorded space's fields apply.

    Raises:
        UserError: no --model_dir, or one that is a file.
    """
    if not model_dir:
        raise UserError("--model_dir is required: the directory for checkpoints and events.")
    if tf.io.gfile.exists(model_dir) and not tf.io.gfile.isdir(model_dir):
        raise UserError(f"--model_dir={model_dir} is a file; give a directory (a new one, or one "
                        "`tf-oneshot train` wrote).")
    recorded = ModelDir.read(model_dir)
    if recorded is not None:
        flat = recorded.config.to_flat()
        inherited = ("dataset",) if "space" in given else ARCHITECTURE_FIELDS
        given = {**{name: flat[name] for name in inherited if name not in given}, **given}
    return TrainConfig(**given)


def check_user_space(config: TrainConfig) -> None:
    """The quick contract checks on a user's space before training it (`search_spaces.check`).

    A weight the checkpoint does not reach, or a count() that is off, would
    otherwise be found only after training, if ever; `tf-oneshot space
    --check` runs the full contract.
    """
    info = data.dataset_info(config.data.dataset, config.data.data_dir)
    space = build_space(config.space, info.image_shape, info.num_classes, info.stem_stride)
    report = check_space(space, num_archs=2, quick=True)
    report.raise_first()
    print(f"space check  {report.space}: {', '.join(r.name for r in report.results)} passed in "
          f"{report.seconds:.1f} s (`tf-oneshot space --check` runs the whole contract)", flush=True)
