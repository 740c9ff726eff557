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
flags.DEFINE_integer("max_bitops", None, "Only architectures with at most this many BitOps per image "
                     "(SPOS §3.3-4, mixed-precision spaces).")
flags.DEFINE_integer("min_bitops", None, "Only architectures with at least this many BitOps per image.")
flags.DEFINE_float("max_latency_ms", None, "Only architectures whose latency, summed from --latency_table, "
                   "is at most this (SPOS §3.4, Table 5).")
flags.DEFINE_float("min_latency_ms", None, "Only architectures whose table latency is at least this.")
flags.DEFINE_string("latency_table", None, "Latency lookup table written by `tf-oneshot latency` on the target "
                    "device; needed by --min/max_latency_ms.")
flags.DEFINE_list(
    "architectures", None,
    "Architecture strings, comma-separated: search scores exactly these, retrain trains them (instead of --select).",
)
flags.DEFINE_string("architectures_file", None, "A file of architecture strings, one per line (as --architectures).")

SPACE_FLAGS = ("filters", "num_cells", "num_blocks", "num_stacks", "stem_stride", "space_args")
CONSTRAINT_FLAGS = ("min_params", "max_params", "min_flops", "max_flops", "min_bitops", "max_bitops",
                    "min_latency_ms", "max_latency_ms", "latency_table")


def given(FLAGS, names) -> dict:
    """The flags among `names` that the user set (value not None)."""
    return {name: getattr(FLAGS, name) for name in names if getattr(FLAGS, name) is not None}


def architecture_strings(architectures: list[str] | None, architectures_file: str | None) -> list[tuple[str, str]]:
    """(where, text) of each architecture of --architectures and --architectures_file, in order.

    `where` names the source for error messages ("--architectures" or
    "--architectures_file=PATH line N"). Blank lines and lines starting with
    '#' in the file are skipped.
    """
    out = [("--architectures", text.strip()) for text in architectures or []]
    if architectures_file:
        import tensorflow as tf  # gfile: local or gs://

        from tf_oneshot.errors import UserError

        if not tf.io.gfile.exists(architectures_file):
            raise UserError(f"--architectures_file={architectures_file} does not exist.")
        with tf.io.gfile.GFile(architectures_file) as f:
            for number, line in enumerate(f.read().splitlines(), start=1):
                text = line.strip()
                if text and not text.startswith("#"):
                    out.append((f"--architectures_file={architectures_file} line {number}", text))
    return out


def parse_architecture_strings(space, items: list[tuple[str, str]]) -> list:
    """The architectures of `architecture_strings`, duplicates dropped, in order.

    Raises:
        UserError: naming the first string that does not parse, or no strings.
    """
    from tf_oneshot.errors import UserError

    out: dict = {}
    for where, text in items:
        try:
            arch = space.parse(text)
        except UserError as e:
            raise UserError(f"{where}: {text!r} does not parse: {e}") from None
        out.setdefault(arch, None)
    if not out:
        raise UserError(f"no architecture strings given; e.g. --architectures={space.example()}")
    return list(out)
