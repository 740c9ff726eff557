"""`tf-oneshot groundtruth`: trains every child of an enumerable space stand-alone over several seeds.

"Deeper insights into weight sharing" §3.1: the ground truth of the
64-child space trains each child "independently from scratch with the same
setting as weight sharing" over 10 seeds. The setting is the train
command's flags (or the one-shot run of --model_dir). One JSON line per
(child, seed) goes under --output; a rerun skips finished pairs, --shard=I/N
splits the pairs over processes or machines, and the run that completes the
set (or --merge) writes --output/ground_truth.json.
"""

from __future__ import annotations

from tf_oneshot.commands import flags
from tf_oneshot.errors import UserError
from tf_oneshot.training.config import TrainConfig

# The train flags (--train_steps, --learning_rate, ...): the ground truth
# trains "with the same setting as weight sharing" (§3.1), as retrain does.
SETTING_FLAGS = (*flags.STANDALONE_TRAIN_FLAGS, *flags.SPACE_FLAGS)
FLAG_NAMES = (*SETTING_FLAGS, "model_dir", "seeds", "output", "shard", "merge", "method", "fuse_children",
              "noise_ceiling", "strategy", "tpu", "graph_optimizer", "finetune_curve")
# What an unset training flag means (`--help` shows it): TrainConfig's, or the one-shot run's.
FLAG_DEFAULTS = {name: TrainConfig().to_flat()[name] for name in flags.STANDALONE_TRAIN_FLAGS}
FLAG_DEFAULT_NOTES = {name: "or what --model_dir recorded" for name in SETTING_FLAGS}
CURVE_FILE = "finetune_gt_tau"
NOT_APPLICABLE = flags.STANDALONE_NOT_APPLICABLE


def _config_and_space(FLAGS, log=print):
    """The training setting and space: the flags, over the one-shot run of --model_dir if given."""
    from tf_oneshot.search_spaces.space_config import build_space
    from tf_oneshot.training import data
    from tf_oneshot.training.config import TrainConfig
    from tf_oneshot.training.model_dir import ModelDir

    given = flags.given(FLAGS, SETTING_FLAGS)
    if FLAGS.model_dir:
        model_dir = ModelDir.open(FLAGS.model_dir)
        recorded, space = model_dir.config, model_dir.space
        flat = recorded.to_flat()
        differs = [f"--{k}={v} (one-shot run: {flat[k]})" for k, v in given.items() if flat[k] != v]
        if differs:
            log(f"groundtruth: not the one-shot run's setting in {FLAGS.model_dir}: {', '.join(differs)}")
        config = recorded.replace(**given)
        if not any(k in given for k in flags.SPACE_FLAGS):
            return config, space
    else:
        config = TrainConfig(**given)
    info = data.dataset_info(config.data.dataset, config.data.data_dir)
    return config, build_space(config.space, info.image_shape, info.num_classes, info.stem_stride)


def _finetune_curve(FLAGS) -> int:
    """--finetune_curve: GT-Tau against fine-tuning steps (Figure 4), written into the supernet's model_dir."""
    from tf_oneshot.io_utils import atomic_write_json
    from tf_oneshot.training import finetune
    from tf_oneshot.training.model_dir import ModelDir
    from tf_oneshot.training.preemption import Preempted, Preemption, stopped_message

    if not FLAGS.model_dir:
        raise UserError("--finetune_curve needs --model_dir: the trained one-shot model whose children are fine-tuned.")
    try:
        steps = finetune.check_steps([int(n) for n in FLAGS.finetune_curve])
    except ValueError:
        raise UserError(f"--finetune_curve={','.join(FLAGS.finetune_curve)} is invalid; expected mini-batch "
                        "counts, e.g. 0,1,2,5,10,20.") from None
    model_dir = ModelDir.open(FLAGS.model_dir)
    with Preemption() as preemption:
        try:
            curve = finetune.gt_tau_against_steps(FLAGS.output, model_dir, steps, stop=preemption)
        except Preempted:
            return stopped_message("groundtruth", "the curve is not saved; a rerun starts it again")
    base = model_dir.file(CURVE_FILE)
    atomic_write_json(base + ".json", curve)
    finetune.plot_gt_tau_against_steps(curve, base + ".png")
    for n, tau in zip(curve["steps"], curve["gt_tau"]):
        print(f"  n={n:<4d} GT-Tau {tau:.3f}")
    print(f"done: {base}.json, {base}.png")
    return 0


def run(FLAGS) -> int:
    from tf_oneshot.training import distribute, groundtruth
    from tf_oneshot.training.preemption import Preemption, stopped_message

    if not FLAGS.output:
        raise UserError("--output is required: the directory for the ground-truth results and summary.")
    if FLAGS.finetune_curve is not None:
        return _finetune_curve(FLAGS)
    seeds = flags.parse_seeds(FLAGS.seeds)
    if FLAGS.merge:
        if FLAGS.shard:
            raise UserError("--merge writes the summary of every shard; drop --shard.")
        settings = space = None
        if FLAGS.model_dir or flags.given(FLAGS, SETTING_FLAGS):
            config, space = _config_and_space(FLAGS)
            settings = groundtruth.run_settings(config, space, groundtruth.RECALIBRATION_IMAGES)
        if seeds is not None:
            seeds = groundtruth.check_seeds(seeds, FLAGS.noise_ceiling)
        groundtruth.merge(FLAGS.output, space, settings, seeds, FLAGS.noise_ceiling)
        return 0
    if seeds is None:
        raise UserError("--seeds is required: one stand-alone run per child and seed; \"Deeper insights\" "
                        "§3.1 averages 10 (--seeds=0-9).")
    shard = groundtruth.Shard.parse(FLAGS.shard)
    config, space = _config_and_space(FLAGS)
    strategy = distribute.get_strategy(FLAGS.strategy, FLAGS.tpu, FLAGS.graph_optimizer)
    with Preemption() as preemption:
        result = groundtruth.run_ground_truth(
            space, config, seeds, FLAGS.output, shard, strategy=strategy, noise_ceiling=FLAGS.noise_ceiling,
            method=FLAGS.method, stop=preemption, fuse_children=FLAGS.fuse_children,
        )
    if result.preempted:
        return stopped_message("groundtruth", f"{len(result.trained)} runs recorded in {result.results_path}")
    done = f"summary: {FLAGS.output}/{groundtruth.SUMMARY_FILE}" if result.summary else (
        f"{result.missing} runs of other shards missing")
    print(f"done: {len(result.trained)} runs trained, {len(result.skipped)} already in {FLAGS.output}; {done}")
    return 0
