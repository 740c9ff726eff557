"""Flags shared by several commands, defined once.

Defaults of None mean "the command's own default" (usually TrainConfig's, or
what the model_dir recorded), so a flag left out never overrides a recorded run.
"""

from absl import flags

from tf_oneshot.search_spaces import BUILTIN, DEFAULT_SPACE

flags.DEFINE_string(
    "space", None,
    f"Search space: a registered name ({', '.join(BUILTIN)}) or a user's own, as module:Attribute or "
    f"path/to/file.py:Attribute (default: {DEFAULT_SPACE}, or what the model_dir recorded).",
)
flags.DEFINE_string("space_args", None, "Other fields of the search space, name=value,name=value "
                    "(e.g. width=32 for examples/mobile_chain.py:MobileChainSpace).")
flags.DEFINE_string("model_dir", None, "Directory of the one-shot model: config, checkpoints, events.")
flags.DEFINE_string("dataset", None, "digits (embedded, offline), cifar10 or imagenet2012.")
flags.DEFINE_string("data_dir", None, "TFDS data directory (local or gs://).")
flags.DEFINE_integer("seed", None, "Random seed.")
flags.DEFINE_integer("batch_size", None, "Global batch size.")
flags.DEFINE_integer("ghost_batch_size", None, "Ghost batch size (Bender et al. 2018, §3.2).")
flags.DEFINE_integer("filters", None, "F: filters of the stem and first stack.")
flags.DEFINE_integer("num_cells", None, "Cells in the network (6 CIFAR-10, 8 ImageNet).")
flags.DEFINE_integer("num_blocks", None, "Choice blocks per cell (N_choice).")
flags.DEFINE_integer("num_stacks", None, "Stacks of cells separated by stride-2 reductions.")
flags.DEFINE_integer("stem_stride", None, "Stem stride: 1, 2 or 4 (default: the dataset's).")
flags.DEFINE_string("strategy", "default", "default, one_device, mirrored, multi_worker_mirrored or tpu.")
flags.DEFINE_string("tpu", None, "Cloud TPU name, or 'local' on a TPU VM.")
flags.DEFINE_string("output_dir", None, "Directory for reports, plots and exports.")
flags.DEFINE_string("results", None, "JSON-lines results file.")
flags.DEFINE_integer("max_params", None, "Only architectures with at most this many parameters.")
flags.DEFINE_integer("min_params", None, "Only architectures with at least this many parameters.")
flags.DEFINE_integer("max_flops", None, "Only architectures with at most this many multiply-adds per image.")
flags.DEFINE_integer("min_flops", None, "Only architectures with at least this many multiply-adds per image.")

SPACE_FLAGS = ("filters", "num_cells", "num_blocks", "num_stacks", "stem_stride", "space_args")
CONSTRAINT_FLAGS = ("min_params", "max_params", "min_flops", "max_flops")


def given(FLAGS, names) -> dict:
    """The flags among `names` that the user set (value not None)."""
    return {name: getattr(FLAGS, name) for name in names if getattr(FLAGS, name) is not None}
