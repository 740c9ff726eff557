"""Every flag of the `tf-oneshot` command line, defined once, and the groups commands share.

A command module names the flags it reads in `FLAG_NAMES`, mostly from the
groups below; `cli.py` lists exactly those in its `--help` and refuses the
others with one line. Commands import this registry and the library, never
one another, so no command is loaded to define another's flags and no flag
can be defined twice. The helpers at the end read flag values (the flags set,
seeds, architecture strings) the same way for every command that takes them.

Defaults of None mean "the command's own default" (usually TrainConfig's, or
what the model_dir recorded), so a flag left out never overrides a recorded run.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from absl import flags

from tf_oneshot.errors import UserError
from tf_oneshot.search_spaces import BUILTIN, DEFAULT_SPACE, space_class, space_fields
from tf_oneshot.search_spaces.space_config import NAMED_ARGS
from tf_oneshot.training.config import TrainConfig

# ------------------------------------------------------------ the search space
flags.DEFINE_string(
    "space", None,
    f"Search space: a registered name ({', '.join(BUILTIN)}) or a user's own, as module:Attribute or "
    f"path/to/file.py:Attribute (default: {DEFAULT_SPACE}, or what the model_dir recorded).",
)
flags.DEFINE_string("space_args", None, "Other fields of the search space, name=value,name=value "
                    "(e.g. width=32 for examples/mobile_chain.py:MobileChainSpace).")
flags.DEFINE_integer("filters", None, "F: filters of the stem and first stack.")
flags.DEFINE_integer("num_cells", None, "Cells in the network (6 CIFAR-10, 8 ImageNet).")
flags.DEFINE_integer("num_blocks", None, "Choice blocks per cell (N_choice).")
flags.DEFINE_integer("num_stacks", None, "Stacks of cells separated by stride-2 reductions.")
flags.DEFINE_integer("stem_stride", None, "Stem stride: 1, 2 or 4 (default: the dataset's).")
# The input a space is built for when no dataset says (`space`, `latency`).
flags.DEFINE_integer("image_size", 32, "Input height and width (32: CIFAR-10).")
flags.DEFINE_integer("channels", 3, "Input channels.")
flags.DEFINE_integer("num_classes", 10, "Classifier outputs.")

# ------------------------------------------------ data, the run and its devices
flags.DEFINE_string("model_dir", None, "Directory of the one-shot model: config, checkpoints, events.")
flags.DEFINE_string("dataset", None, "digits (embedded, offline), cifar10 or imagenet2012.")
flags.DEFINE_string("data_dir", None, "TFDS data directory (local or gs://).")
flags.DEFINE_integer("seed", None, "Random seed.")
flags.DEFINE_integer("batch_size", None, "Global batch size.")
flags.DEFINE_integer("ghost_batch_size", None, "Ghost batch size (Bender et al. 2018, §3.2).")
flags.DEFINE_string("strategy", "default", "default, one_device, mirrored, multi_worker_mirrored or tpu.")
flags.DEFINE_string("tpu", None, "Cloud TPU name, or 'local' on a TPU VM.")
flags.DEFINE_string("graph_optimizer", "auto", "TF's graph optimizer (grappler) for the traced steps: auto (on, "
                    "except for the demo on a machine without GPU or TPU, where it delays each large traced function's "
                    "first call by ~13 s), on or off (a faster first step; memory grows faster per traced function).")

# ------------------------------------------- training (TrainConfig's fields)
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
flags.DEFINE_integer("eval_every", None, "Validate every this many steps, as at the end (the all-on network for "
                     "path dropout, 4 sampled architectures for single-path samplers), writing validation/accuracy "
                     "and validation/loss to TensorBoard; 0: only at the end.")
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

# ------------- the papers' training settings (issue 18: "Deeper insights" App. A, SPOS Eq. 8)
flags.DEFINE_bool("nesterov", None, "Nesterov momentum (Bender et al. 2018, §4.1; the default) or, with "
                  "--nonesterov, plain momentum (\"Deeper insights\" App. A.1).")
flags.DEFINE_float("end_learning_rate", None, "The rate the cosine or linear decay ends at (default 0; "
                   "\"Deeper insights\" App. A.1: 0.025 -> 0.001).")
flags.DEFINE_float("bn_momentum", None, "Momentum of the batch-norm moving statistics in every layer, one-shot "
                   "and stand-alone (default: Keras' 0.99).")
flags.DEFINE_string("path_per", None, "Where the architectures of a training step differ: step (one for every "
                    "replica and ghost batch, SPOS §3.2 Eq. 8; the default of uniform and uniform_constraint), "
                    "replica, or ghost_batch (Bender et al. 2018, §3.2; the default of the other samplers).")
RECIPE_FLAGS = ("nesterov", "end_learning_rate", "bn_momentum")

# ---------------------------------------------------------------- constraints
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

# --------------------------------------------------------------------- search
flags.DEFINE_string("algorithm", "random", "random (Bender et al. 2018, §4.1), evolution (SPOS, Algorithm 1) or "
                    "nao (Luo et al. 2018, §3); not with --architectures.")
flags.DEFINE_integer("num_architectures", 1000, "Distinct architectures to score in all (about 20,000 in §4.1); "
                     "--architectures scores exactly those instead.")
flags.DEFINE_list(
    "architectures", None,
    "Architecture strings, comma-separated: search scores exactly these, retrain trains them (instead of --select).",
)
flags.DEFINE_string("architectures_file", None, "A file of architecture strings, one per line (as --architectures).")
flags.DEFINE_string("bn_mode", None, "batch: batch statistics on the fly (Bender et al. §3.2); recalibrate: each "
                    "candidate's statistics recomputed on training images (SPOS §3.4); running: the moving statistics "
                    "training left (\"Deeper insights\" App. A.2.2). Default: the space's (recalibrate for "
                    "single-path spaces; batch for insights).")
flags.DEFINE_integer("recalibration_images", None, "Training images per candidate for --bn_mode=recalibrate "
                     "(SPOS §3.4: 20,000 on ImageNet; default: the same share of any training split, at least 512).")
flags.DEFINE_bool("kl", False, "Also store the symmetrized KL divergence to the all-on network (§5).")
flags.DEFINE_string("kl_reference", "all_on", "--kl against: all_on (exact, the default) or sampled (§5 as "
                    "published: references drawn by path dropout at r = 1e-8).")
flags.DEFINE_integer("population_size", 50, "Evolution: population P (SPOS: 50). NAO: the random initial pool "
                     "and the new architectures per generation (NAO-V2's code: 1000 and 300).")
flags.DEFINE_integer("num_parents", 10, "Evolution: top-k parents (SPOS: 10). NAO: top-k architectures moved "
                     "along the predictor's gradient (NAO's code: 100).")
flags.DEFINE_float("mutation_prob", 0.1, "Evolution: per-choice mutation probability (SPOS: 0.1).")
# "oneshot" and tf_oneshot.search.proxies.PROXIES, spelled here so that loading the
# flags loads no TensorFlow (tests/test_proxies.py checks that the two agree).
flags.DEFINE_enum("scorer", "oneshot", ["oneshot", "params", "flops", "synflow", "grad_norm", "snip", "jacob_cov"],
                  "What ranks the architectures: oneshot (the trained one-shot model, Bender et al. 2018, §3.3) "
                  "or a training-free baseline (tf_oneshot.search.proxies), computed on each stand-alone child at "
                  "initialization; a proxy's results go to <model_dir>/search/<algorithm>_<scorer>.jsonl.")
flags.DEFINE_integer("archs_per_pass", None, "Architectures scored per forward pass, one per ghost batch "
                     "(default: timed automatically; 1 with --architectures, as the KerasTuner trial scores).")
flags.DEFINE_integer("validation_examples", None, "Score on the first this many validation examples (default: all).")
flags.DEFINE_integer("finetune_steps", None, "Then re-rank the best --finetune_top candidates after fine-tuning each "
                     "alone from the shared weights for this many mini-batches (\"Deeper insights\" §3.3); the "
                     "scores go beside the results, to RESULTS.finetune.jsonl.")
flags.DEFINE_integer("finetune_top", None, "With --finetune_steps: how many of the best candidates to fine-tune "
                     "(default: 10).")

# ------------------------------------------ iterated one-shot NAS (NAO-V2 §4)
flags.DEFINE_integer("iterations", 3, "K: rounds of train / score / propose (NAO-WS pauses 3 times).")
flags.DEFINE_integer("steps_per_iteration", None, "T: supernet training steps per iteration (NAO-V2 §4.1: "
                     "twice NAO-WS's; the ablation '- more average updates' halves it).")
flags.DEFINE_integer("pool_size", 8, "P: the initial candidate pool (NAO-V2's code: 1000), and the new candidates "
                     "each iteration adds unless --new_per_iteration says; at least --batch_size / --ghost_batch_size.")
flags.DEFINE_integer("new_per_iteration", None, "The candidates each iteration adds to the pool (NAO-V2's code: 300; "
                     "default: --pool_size).")
flags.DEFINE_string("train_on", "pool", "What an iteration trains on: pool (the whole pool, NAO-WS) or newest "
                    "(the initial pool, then the candidates the iteration before added: NAO-V2's code); the whole "
                    "pool is scored either way.")
flags.DEFINE_string("iteration_mode", "independent", "independent (NAO-V2 §4.3, Fig. 2a: LR cycle and optimizer "
                    "restart each iteration, every candidate re-scored) or dependent (Fig. 2b, NAO-WS).")

# ------------------------------------------- stand-alone training (retrain)
flags.DEFINE_string("select", "stratified", "From --search_results: stratified (§4.1, Fig. 5), top or small.")
flags.DEFINE_integer("top_k", 10, "--select=top|small: how many architectures (One-Shot Top and Small: 10).")
flags.DEFINE_integer(
    "pool", 100,
    "--select=top: a stratified --top_k from the best --pool (§4.1 One-Shot Top: 10 of the top 100); "
    "--pool <= --top_k takes the best --top_k.",
)
flags.DEFINE_integer("num_buckets", 10, "--select=stratified: one-shot accuracy buckets.")
flags.DEFINE_integer("per_bucket", 4, "--select=stratified: architectures per bucket (4 in §4.1).")
flags.DEFINE_float("percentile", 90.0, "--select=small: one-shot accuracy percentile to reach (One-Shot Small).")
flags.DEFINE_list(
    "seeds", None,
    "Seeds of the stand-alone runs, comma-separated, ranges allowed (0-9): one run per architecture and seed, "
    "accuracies averaged. retrain: default 0 (5 runs in §4.1); groundtruth: required (10 in \"Deeper insights\" "
    "§3.1).",
)
flags.DEFINE_bool(
    "full_train", False,
    "Train on the full training set, train + validation (the final models of §3.4 and §4.1); the runs then "
    "have no validation accuracy and are ranked and exported by test accuracy.",
)

# ------------------------------------------ ground truth ("Deeper insights" §3)
flags.DEFINE_string("shard", None, "I/N: train only the (child, seed) pairs whose seed-major number is I mod N.")
flags.DEFINE_bool("merge", False, "Train nothing: check every results file under --output and write the summary.")
flags.DEFINE_enum("method", "masked", ["masked", "standalone", "fused"], "(default: masked; retrain: standalone) masked: each child trained alone inside "
                  "the one-shot model under its fixed masks, traced once for all (faster); standalone: a Keras model "
                  "and traces per run; fused (groundtruth, a space with a fused network): --fuse_children children in one fused network and "
                  "step (HFTA). Each child gets its own fresh weights. retrain: masked or standalone, the same training "
                  "from the same fresh weights; the best is exported stand-alone.")
flags.DEFINE_integer("fuse_children", None, "Children trained side by side in one step by --method=fused (HFTA, "
                     "Wang et al. 2021), each with its own weights, data order and optimizer; default: as many as a "
                     "quarter of the available memory holds, at most 16.")
flags.DEFINE_bool("noise_ceiling", None, "The ground truth's split-half Kendall tau in the summary (default: "
                  "when there are at least 4 seeds; --noise_ceiling demands it).")
flags.DEFINE_list("finetune_curve", None, "Train nothing: draw \"Deeper insights\" Figure 4, GT-Tau of the children "
                  "of --model_dir fine-tuned from its shared weights for each of these mini-batch counts (e.g. "
                  "0,1,2,5,10,20), against the summary in --output; writes finetune_gt_tau.json and .png into "
                  "--model_dir, so curves of several supernets against one ground truth stay apart.")
flags.DEFINE_string("ground_truth", None, "ground_truth.json (or its directory) written by `tf-oneshot groundtruth`.")
flags.DEFINE_list("model_dirs", None, "Comma-separated one-shot model_dirs, one instance each (§3.2: runs that "
                  "differ in --seed, --order_seed or --sampler=cyclic|shuffled, or in --sharing).")
flags.DEFINE_integer("snapshots", 1, "Rank the children at each of the last K checkpoints of every run "
                     "(\"Different epochs\", GT-Tau-Mean-K; train with --keep_checkpoints >= K).")
flags.DEFINE_float("prune_fraction", None, "Insight 1: drop the children whose median rank is in the worst "
                   "fraction q of positions, and report how many of the ground-truth top n survive.")
flags.DEFINE_list("top_n", ["1", "3", "5", "10"], "The ground-truth top n counted by --prune_fraction.")
flags.DEFINE_list("proxies", ["synflow", "grad_norm", "snip", "jacob_cov"], "insights: the training-free proxies "
                  "ranked beside the one-shot rows (with params and FLOPs, always); empty for the cost rows only.")
# tf_oneshot.analysis.ground_truth.RANK_BY, spelled here so that loading the flags
# loads no TensorFlow (tests/test_cli.py checks that the two agree).
flags.DEFINE_enum("rank_by", "accuracy_then_loss", ["accuracy_then_loss", "accuracy", "loss"], "insights, "
                  "analyze, demo: how children are ranked, one-shot and stand-alone alike: accuracy (the paper), "
                  "loss, or accuracy with ties broken by the loss (the demo's default is loss).")

# -------------------------------------------------------------- the demo's stages
flags.DEFINE_integer("num_random", None, "demo: architectures scored by random search (default 200).")
flags.DEFINE_integer("num_evolution", None, "demo: architectures scored by evolution (default 100).")
flags.DEFINE_integer("num_retrain", None, "demo: architectures retrained from scratch (default 24).")
flags.DEFINE_integer("retrain_steps", None, "demo: steps of each stand-alone training (default 100).")
flags.DEFINE_string("retrain_select", None, "demo: stratified (Bender et al. Fig. 5, the default) or best "
                    "(SPOS §3.4: the best architectures searched, the winner first).")

# ------------------------------------------------------------ latency (SPOS §3.4)
flags.DEFINE_integer("warmup", 10, "Untimed calls before timing each piece.")
flags.DEFINE_integer("repeats", 50, "Timed calls per piece; the table holds their median.")
flags.DEFINE_integer("compare", 0, "Also time this many sampled architectures end to end against the table's sum.")

# ---------------------------------------------------------- files and outputs
flags.DEFINE_string("results", None, "JSON-lines results file.")
flags.DEFINE_list(
    "search_results", None,
    "Comma-separated JSON-lines results of `tf-oneshot search` (e.g. a random and an evolution search).",
)
flags.DEFINE_string(
    "retrain_results", None, "JSON-lines results of `tf-oneshot retrain` (one line per architecture and seed)."
)
flags.DEFINE_string("output_dir", None, "Directory for reports, plots and exports.")
flags.DEFINE_string(
    "output", None,
    "groundtruth: the ground-truth directory (results*.jsonl, ground_truth.json); latency: the JSON file of the "
    "latency table (local or gs://).",
)
flags.DEFINE_bool(
    "export_tflite", False,
    "retrain: also export the best model as best.tflite (float32, TFLiteConverter from best_saved_model), "
    "beside best.keras and best_saved_model. Every built-in space converts; PACT/DoReFa quantization stays "
    "simulated in float32 (no integer kernels). A layer TFLite cannot convert is reported in one line and "
    "best.json's tflite_error; the other exports are still written.",
)
flags.DEFINE_bool(
    "overwrite", False, "Replace the outputs of an earlier run in --output_dir instead of refusing."
)
flags.DEFINE_bool("json", False, "Print one JSON object instead of text.")
flags.DEFINE_bool(
    "check", False,
    "Also run the space contract on it: checkpoint reach, counts against Keras, one-shot equals stand-alone, "
    "round trips, one trace (tf_oneshot.search_spaces.check); exit 2 naming the first failure.",
)

# ------------------------------------------------------------------ the groups
# Which space, and its fields (a space's own fields come through --space_args).
SPACE_FLAGS = ("space", "filters", "num_cells", "num_blocks", "num_stacks", "stem_stride", "space_args")
# The input a space is built for without a dataset.
INPUT_FLAGS = ("image_size", "channels", "num_classes")
CONSTRAINT_FLAGS = ("min_params", "max_params", "min_flops", "max_flops", "min_bitops", "max_bitops",
                    "min_latency_ms", "max_latency_ms", "latency_table")
# The one-shot training setting: what `train` records in its model_dir (TrainConfig).
TRAIN_FLAGS = (
    "dataset", "data_dir", "seed", "batch_size", "ghost_batch_size", *SPACE_FLAGS,
    "sampler", *CONSTRAINT_FLAGS,
    "train_steps", "dropout_rate", "dropout_schedule", "all_dropped", "learning_rate",
    "lr_schedule", "momentum", "weight_decay", "steps_per_loop", "checkpoint_every", "log_every", "eval_every",
    "jit_compile", "skip_threshold", "mixed_precision", "keep_checkpoints",
    "sharing", "sharing_groups", "sharing_grouping", "sharing_prefix", "sharing_seed", "order_seed",
    "path_per", *RECIPE_FLAGS,
)
# The train flags that set a stand-alone training (retrain, and the ground
# truth "with the same setting as weight sharing", "Deeper insights" §3.1).
STANDALONE_TRAIN_FLAGS = (
    "dataset", "data_dir", "batch_size", "ghost_batch_size", "train_steps", "learning_rate",
    "lr_schedule", "momentum", "weight_decay", "log_every", "jit_compile", *RECIPE_FLAGS,
)
# Train flags that mean nothing for stand-alone training, refused with this reason.
STANDALONE_NOT_APPLICABLE = {
    name: "only affects one-shot training; stand-alone models have no path dropout"
    for name in ("dropout_rate", "dropout_schedule", "all_dropped", "steps_per_loop", "checkpoint_every",
                 "path_per", "eval_every")
}


# ------------------------------------------------- TF_ONESHOT_TINY=1 (cli.py)
# The README's commands at test scale (tests/test_readme_commands.py): the
# steps, image counts and architecture counts a command declares, capped at
# these values as if set on its command line; nothing else changes (the
# space, dataset, recipe and seeds stay as written).
TINY = {
    "train_steps": 10, "steps_per_iteration": 2, "retrain_steps": 2, "finetune_steps": 1,
    "steps_per_loop": 1, "checkpoint_every": 1, "log_every": 1,
    "num_architectures": 4, "num_random": 4, "num_evolution": 4, "num_retrain": 2,
    "population_size": 4, "num_parents": 2, "pool_size": 4, "new_per_iteration": 4,
    "recalibration_images": 64, "validation_examples": 64, "warmup": 1, "repeats": 2,
}


def shrink_to_tiny(FLAGS: Any, names: Iterable[str]) -> None:
    """Caps the `TINY` flags among `names` (a command's FLAG_NAMES), marking them given."""
    for name in sorted(set(names) & set(TINY)):
        flag = FLAGS[name]
        flag.value = TINY[name] if flag.value is None else min(flag.value, TINY[name])
        flag.present = 1


# ---------------------------------------------------------- reading the values
def given(FLAGS: Any, names: Iterable[str]) -> dict[str, Any]:
    """The flags among `names` that the user set (value not None)."""
    return {name: getattr(FLAGS, name) for name in names if getattr(FLAGS, name) is not None}


def present(FLAGS: Any, names: Iterable[str]) -> set[str]:
    """The flags among `names` set on the command line or in a flagfile, even to their default."""
    return {name for name in names if FLAGS[name].present}


def space_only_flags() -> dict[str, tuple[str, ...]]:
    """The named space flags (--filters, --num_cells, ...) that only some built-in spaces read: {flag: those spaces}.

    `--help` lists them apart, naming their spaces: every command that takes
    --space takes them, and a space without the field refuses them. Read
    from the spaces' fields (no TensorFlow loads), so a new space needs no edit here.
    """
    fields = {name: set(space_fields(space_class(name))) for name in BUILTIN}
    readers = {flag: tuple(name for name in BUILTIN if flag in fields[name]) for flag in NAMED_ARGS}
    return {flag: names for flag, names in readers.items() if len(names) < len(BUILTIN)}


def config_from_flags(FLAGS: Any) -> TrainConfig:
    """TrainConfig defaults overridden by the training flags the user set."""
    return TrainConfig(**given(FLAGS, TRAIN_FLAGS))


def parse_seeds(items: list[str] | None, default: list[int] | None = None) -> list[int] | None:
    """--seeds as ints: "0,1,2" or "0-9" (inclusive ranges); `default` when the flag is not set.

    Raises:
        UserError: an item that is neither an integer nor a range.
    """
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


def architecture_strings(architectures: list[str] | None, architectures_file: str | None) -> list[tuple[str, str]]:
    """(where, text) of each architecture of --architectures and --architectures_file, in order.

    `where` names the source for error messages ("--architectures" or
    "--architectures_file=PATH line N"). Blank lines and lines starting with
    '#' in the file are skipped.
    """
    out = [("--architectures", text.strip()) for text in architectures or []]
    if architectures_file:
        import tensorflow as tf  # gfile: local or gs://

        if not tf.io.gfile.exists(architectures_file):
            raise UserError(f"--architectures_file={architectures_file} does not exist.")
        with tf.io.gfile.GFile(architectures_file) as f:
            for number, line in enumerate(f.read().splitlines(), start=1):
                text = line.strip()
                if text and not text.startswith("#"):
                    out.append((f"--architectures_file={architectures_file} line {number}", text))
    return out


def parse_architecture_strings(space: Any, items: list[tuple[str, str]]) -> list:
    """The architectures of `architecture_strings`, duplicates dropped, in order.

    Raises:
        UserError: naming the first string that does not parse, or no strings.
    """
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
