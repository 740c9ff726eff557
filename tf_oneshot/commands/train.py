"""`tf-oneshot train`: trains the one-shot model into --model_dir and resumes from it."""

from absl import flags

from tf_oneshot.commands import common_flags
from tf_oneshot.errors import UserError
from tf_oneshot.training import distribute, preemption, trainer
from tf_oneshot.training.config import TrainConfig

flags.DEFINE_integer("train_steps", None, "Total training steps (Bender et al. 2018: 5,000-10,000).")
flags.DEFINE_string("sampler", None, "Sampling rule while training: path_dropout (Bender et al. 2018, §3.2), "
                    "uniform (SPOS §3.2), uniform_constraint (SPOS §3.2, with --min/max_flops or _params), "
                    "proportional (NAO-V2 §4.2), or a child order of an enumerable space: cyclic or shuffled "
                    "(\"Deeper insights\" §3.2); default: the space's own.")
flags.DEFINE_float("dropout_rate", None, "r: per-path drop probability at the end is r^(1/k) (§3.2).")
flags.DEFINE_string("dropout_schedule", None, "linear (ramped from 0, §4.1) or constant (Fig. 4).")
flags.DEFINE_string("all_dropped", None, "When all paths of a node drop: zero (paper) or keep_one.")
flags.DEFINE_float("learning_rate", None, "Initial learning rate (0.1 in §4.1).")
flags.DEFINE_string("lr_schedule", None, "cosine (Bender et al.), linear (ShuffleNetV2 and SPOS) or constant.")
flags.DEFINE_float("momentum", None, "Nesterov momentum (0.9 in §4.1).")
flags.DEFINE_float("weight_decay", None, "L2 coefficient, applied to active paths only (§3.2).")
flags.DEFINE_integer("steps_per_loop", None, "Train steps per host call (a loop inside tf.function).")
flags.DEFINE_integer("checkpoint_every", None, "Save a checkpoint every this many steps.")
flags.DEFINE_integer("log_every", None, "Log and write summaries every this many steps.")
flags.DEFINE_bool("jit_compile", None, "Compile the train step with XLA (always on for TPU).")
flags.DEFINE_float("skip_threshold", None, "Skip dropped ops (tf.cond) once this share of ops is dropped "
                   "in every ghost batch of a replica: 0 always, 1 never.")
flags.DEFINE_string("mixed_precision", None, "none, bfloat16 (TPU) or float16 (GPU).")
flags.DEFINE_integer("keep_checkpoints", None, "Checkpoints kept (the last ones); `tf-oneshot insights "
                     "--snapshots=K` ranks the children at the last K (\"Deeper insights\" §3.2).")
flags.DEFINE_string("sharing", None, "Weight sharing (\"Deeper insights\" §4.2-4.3): full, group (--sharing_groups "
                    "copies of the weights) or prefix (the stem and --sharing_prefix cells shared, the rest a copy "
                    "per child).")
flags.DEFINE_integer("sharing_groups", None, "m, the groups of children with their own weights (--sharing=group).")
flags.DEFINE_string("sharing_grouping", None, "How children are grouped: random (§4.2.1, from --sharing_seed) or "
                    "similarity (lexicographic slices, §4.2.2).")
flags.DEFINE_integer("sharing_prefix", None, "k, the cells shared after the stem (--sharing=prefix, §4.3).")
flags.DEFINE_integer("sharing_seed", None, "Seed of the random grouping (the same partition in every instance).")
flags.DEFINE_integer("order_seed", None, "Seed of the child order (the sampler; default --seed): fix it and vary "
                     "--seed for Table 1's \"different seeds\", vary it with --sampler=cyclic or shuffled for "
                     "\"different orders\".")

TRAIN_FLAGS = (
    "dataset", "data_dir", "seed", "batch_size", "ghost_batch_size", "space", *common_flags.SPACE_FLAGS,
    "sampler", *common_flags.CONSTRAINT_FLAGS,
    "train_steps", "dropout_rate", "dropout_schedule", "all_dropped", "learning_rate",
    "lr_schedule", "momentum", "weight_decay", "steps_per_loop", "checkpoint_every", "log_every",
    "jit_compile", "skip_threshold", "mixed_precision", "keep_checkpoints",
    "sharing", "sharing_groups", "sharing_grouping", "sharing_prefix", "sharing_seed", "order_seed",
)

FLAG_NAMES = (*TRAIN_FLAGS, "model_dir", "strategy", "tpu")


def config_from_flags(FLAGS) -> TrainConfig:
    """TrainConfig defaults overridden by the flags the user set."""
    return TrainConfig(**common_flags.given(FLAGS, TRAIN_FLAGS))


def run(FLAGS) -> int:
    if not FLAGS.model_dir:
        raise UserError("--model_dir is required: the directory for checkpoints and events.")
    config = config_from_flags(FLAGS)
    strategy = distribute.get_strategy(FLAGS.strategy, FLAGS.tpu)
    result = trainer.train(config, FLAGS.model_dir, strategy=strategy)
    if result["preempted"]:  # the trainer logged the step it saved
        return preemption.EXIT_CODE  # 128 + SIGTERM: wrappers tell a preempted run from a finished one
    return 0
