"""`tf-oneshot retrain`: trains chosen architectures from scratch, stand-alone, and exports the best.

The architectures come from search results (--select=stratified|top|small,
Bender et al. 2018 §4.1) or from --architectures / --architectures_file. One
JSON line per (architecture, seed) goes to --results; a rerun skips finished
pairs, and SIGTERM stops between training chunks with exit code 143.
--full_train trains on train + validation, as the final models of §3.4 and
§4.1 are ("trained from scratch ... on the full training set"). --method
picks the network each child trains in: standalone (the default: each
child's own Keras model, the fastest step for a long final training) or
masked (the one-shot model under the child's masks, one trace for all, the
same training: faster for many short runs); the best is exported
stand-alone either way.
"""

from __future__ import annotations

import dataclasses
import os

from tf_oneshot.commands import flags
from tf_oneshot.errors import UserError
from tf_oneshot.training.config import TrainConfig

# The training hyper-parameters are the train command's flags (--train_steps,
# --learning_rate, ...): retrain uses "the same flags as training"; those of
# one-shot training alone are refused with a reason.
NOT_APPLICABLE = flags.STANDALONE_NOT_APPLICABLE
FLAG_NAMES = (
    *flags.STANDALONE_TRAIN_FLAGS, *flags.SPACE_FLAGS, "model_dir", "search_results",
    "architectures", "architectures_file", "select", "top_k", "pool", "num_buckets", "per_bucket",
    "percentile", "seeds", "seed", "full_train", "method", "results", "output_dir", "export_tflite", "strategy",
    "tpu", "graph_optimizer",
)
# What an unset training flag means (`--help` shows it): TrainConfig's; the dataset the model_dir's.
FLAG_DEFAULTS = {name: TrainConfig().to_flat()[name] for name in flags.STANDALONE_TRAIN_FLAGS}
FLAG_DEFAULT_NOTES = {"dataset": "or what --model_dir recorded"}
# The registry's --method default is groundtruth's (masked: many short runs); a retrain's
# final training is long, where the stand-alone step is the faster.
DEFAULT_METHOD = "standalone"


def _seeds(FLAGS) -> list[int]:
    return flags.parse_seeds(FLAGS.seeds, default=[0])


def _space(FLAGS, search_space, model_dir):
    """The search space: from the search results, the model_dir, or the flags; F from --filters."""
    from tf_oneshot.analysis.records import check_same_space, describe_space
    from tf_oneshot.search_spaces import space_fields, space_from_config
    from tf_oneshot.search_spaces.space_config import build_space
    from tf_oneshot.training import data
    from tf_oneshot.training.config import TrainConfig

    space = None
    if isinstance(search_space, dict):
        space = space_from_config(search_space)
    if model_dir is not None:
        recorded = model_dir.space
        if space is None:
            space = recorded
        else:
            check_same_space(recorded.to_config(), space.to_config(), FLAGS.model_dir, ",".join(FLAGS.search_results))
    if space is None:
        config = TrainConfig(**flags.given(FLAGS, ("dataset", *flags.SPACE_FLAGS)))
        info = data.dataset_info(config.data.dataset, FLAGS.data_dir)
        return build_space(config.space, info.image_shape, info.num_classes, info.stem_stride)
    # Only F may change (Bender et al. 2018, §3.4): depth and cells are the searched network's.
    for name in ("num_cells", "num_blocks", "num_stacks", "stem_stride"):
        value = getattr(FLAGS, name)
        if value is not None and value != getattr(space, name, None):
            raise UserError(
                f"--{name}={value} differs from the searched network ({describe_space(space.to_config())}); "
                "retrain scales only --filters."
            )
    if FLAGS.filters is not None:
        if "filters" not in space_fields(type(space)):
            raise UserError(f"--filters does not apply to the search space {space.name!r} (it has no filters).")
        space = dataclasses.replace(space, filters=FLAGS.filters)
    return space


def run(FLAGS) -> int:
    from tf_oneshot.analysis.records import load_search_results
    from tf_oneshot.search.selection import select_candidates
    from tf_oneshot.training import distribute
    from tf_oneshot.training.config import TrainConfig
    from tf_oneshot.training.model_dir import ModelDir
    from tf_oneshot.training.preemption import Preemption, stopped_message
    from tf_oneshot.training.retrain import Candidate, retrain

    if not FLAGS.results:
        raise UserError("--results is required: the JSON-lines file for the retrain results.")
    given_architectures = flags.architecture_strings(FLAGS.architectures, FLAGS.architectures_file)
    if not given_architectures and not FLAGS.search_results:
        raise UserError(
            "choose architectures: pass --search_results (with --select), --architectures or --architectures_file."
        )
    seeds = _seeds(FLAGS)
    search, search_space = load_search_results(FLAGS.search_results) if FLAGS.search_results else ([], None)
    model_dir = ModelDir.open(FLAGS.model_dir) if FLAGS.model_dir else None
    space = _space(FLAGS, search_space, model_dir)
    overrides = flags.given(FLAGS, flags.STANDALONE_TRAIN_FLAGS)
    if "dataset" not in overrides and model_dir is not None:
        overrides["dataset"] = model_dir.config.data.dataset
    config = TrainConfig(**overrides)

    if given_architectures:
        candidates = [Candidate(a) for a in flags.parse_architecture_strings(space, given_architectures)]
        scores = {}
        for r in search:
            scores.setdefault(r["architecture"], r["oneshot_accuracy"])
        candidates = [dataclasses.replace(c, oneshot_accuracy=scores.get(str(c.architecture))) for c in candidates]
    else:
        candidates = select_candidates(
            space, search, FLAGS.select, k=FLAGS.top_k, num_buckets=FLAGS.num_buckets,
            per_bucket=FLAGS.per_bucket, pool=FLAGS.pool, percentile=FLAGS.percentile,
            seed=0 if FLAGS.seed is None else FLAGS.seed,
        )
    export_dir = FLAGS.output_dir or os.path.join(os.path.dirname(FLAGS.results) or ".", "export")
    strategy = distribute.get_strategy(FLAGS.strategy, FLAGS.tpu, FLAGS.graph_optimizer)
    with Preemption() as preemption:
        summary = retrain(candidates, space, config, seeds, FLAGS.results, export_dir, strategy=strategy,
                          full_train=FLAGS.full_train, stop=preemption, tflite=FLAGS.export_tflite,
                          method=FLAGS.method if flags.present(FLAGS, ["method"]) else DEFAULT_METHOD)
    if summary.preempted:
        return stopped_message("retrain", f"{len(summary.trained)} runs trained now are in {FLAGS.results}")
    print(f"done: {len(summary.trained)} runs trained, {len(summary.skipped)} already in {FLAGS.results}; "
          f"best: {summary.best_architecture}")
    return 0
