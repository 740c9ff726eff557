"""Flags shared by `retrain`, `analyze` and `demo` (candidates for common_flags).

Each is defined once here, so importing several of these command modules in
one process (tests, a future `tf-oneshot all`) never defines a flag twice.
"""

from absl import flags

flags.DEFINE_list(
    "search_results", None,
    "Comma-separated JSON-lines results of `tf-oneshot search` (e.g. a random and an evolution search).",
)
flags.DEFINE_bool(
    "overwrite", False, "Replace the outputs of an earlier run in --output_dir instead of refusing."
)
