"""`tf-oneshot train`: trains the one-shot model into --model_dir and resumes from it."""

from tf_oneshot.commands import flags
from tf_oneshot.errors import UserError
from tf_oneshot.training import distribute, preemption, trainer
from tf_oneshot.training.config import TrainConfig

FLAG_NAMES = (*flags.TRAIN_FLAGS, "model_dir", "strategy", "tpu")
# What an unset flag means: TrainConfig's default (`--help` shows it).
FLAG_DEFAULTS = TrainConfig().to_flat()


def run(FLAGS) -> int:
    if not FLAGS.model_dir:
        raise UserError("--model_dir is required: the directory for checkpoints and events.")
    config = flags.config_from_flags(FLAGS)
    strategy = distribute.get_strategy(FLAGS.strategy, FLAGS.tpu)
    result = trainer.train(config, FLAGS.model_dir, strategy=strategy)
    if result["preempted"]:  # the trainer logged the step it saved
        return preemption.exit_code()  # 128 + the signal: wrappers tell a stopped run from a finished one
    return 0
