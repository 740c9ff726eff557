"""Flags shared by `retrain`, `analyze`, `demo`, `groundtruth` and `latency` (candidates for common_flags).

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
flags.DEFINE_string(
    "output", None,
    "groundtruth: the ground-truth directory (results*.jsonl, ground_truth.json); latency: the JSON file of the "
    "latency table (local or gs://).",
)
flags.DEFINE_list(
    "seeds", None,
    "Seeds of the stand-alone runs, comma-separated, ranges allowed (0-9): one run per architecture and seed, "
    "accuracies averaged. retrain: default 0 (5 runs in §4.1); groundtruth: required (10 in \"Deeper insights\" "
    "§3.1).",
)


def parse_seeds(items: list[str] | None, default: list[int] | None = None) -> list[int] | None:
    """--seeds as ints: "0,1,2" or "0-9" (inclusive ranges); `default` when the flag is not set.

    Raises:
        UserError: an item that is neither an integer nor a range.
    """
    from tf_oneshot.errors import UserError

    if items is None:
        return default
    seeds = []
    for item in items:
        low, sep, high = item.strip().partition("-")
        try:
            seeds += list(range(int(low), int(high) + 1)) if sep and low else [int(item)]
        except ValueError:
            raise UserError(f"--seeds={','.join(items)} is invalid at {item!r}; expected integers or ranges, "
                            "e.g. --seeds=0-9 or --seeds=0,1,2.") from None
    return seeds
