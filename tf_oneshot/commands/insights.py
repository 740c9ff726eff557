"""`tf-oneshot insights`: ranking fidelity of weight-sharing instances against a ground truth ("Deeper insights").

Scores every child of the (enumerable) space with each --model_dirs run, at
each of its last --snapshots checkpoints, and reports Tables 1-3 of "Deeper
insights into weight sharing" (S-Tau, GT-Tau ± std, T1R, T3R,
GT-Tau-Mean-k/Std-k, the ground truth's own rows and noise ceiling), Figure 3
(each child's rank distribution across instances and across snapshots) and
GT-Tau against training progress (Figures 2/8); with --prune_fraction, how
many of the ground-truth top n survive pruning by median rank (Insight 1).
Beside the one-shot rows: the training-free baselines (params, FLOPs and the
--proxies, `tf_oneshot.search.proxies`, on the first run's data) and, for
every row, the bootstrap interval of GT-Tau and the partial tau given params.
"""

from __future__ import annotations

import os

from tf_oneshot.analysis import insights
from tf_oneshot.analysis.report import check_output_dir
from tf_oneshot.errors import UserError

FLAG_NAMES = ("ground_truth", "model_dirs", "snapshots", "prune_fraction", "top_n", "rank_by", "output_dir",
              "overwrite", "validation_examples", "bn_mode", "proxies", "seed", "data_dir", "graph_optimizer")


def _top_n(values) -> list[int]:
    try:
        return [int(v) for v in values or []]
    except ValueError:
        raise UserError(f"--top_n={','.join(values)} is invalid; expected integers, e.g. --top_n=1,3,5.") from None


def _check_space(gt: insights.GroundTruth, model_dir: str, space) -> None:
    """The run's space must be the ground truth's (same children, same network)."""
    if gt.space is not None and gt.space != space.to_config():
        raise UserError(f"{model_dir} trains another space or network ({space.to_config()}) than the ground truth "
                        f"({gt.space}); use a ground truth of the same space and fields.")
    children = [str(c) for c in space.enumerate()]
    if sorted(children) != sorted(gt.children):
        raise UserError(f"{model_dir}'s space has {len(children)} children, the ground truth {len(gt.children)} "
                        "others; use a ground truth of the same space.")


def _baselines(FLAGS, model_dir, children) -> dict:
    """Params, FLOPs and the --proxies of every child (ground-truth order), on one minibatch of the run's data."""
    from tf_oneshot.search import proxies

    names = ("params", "flops", *proxies.check_proxies(FLAGS.proxies or []))
    space = model_dir.space
    archs = [space.parse(c) for c in children]
    seed = 0 if FLAGS.seed is None else FLAGS.seed
    images = labels = None
    if set(names) - {"params", "flops", "synflow"}:
        images, labels = proxies.minibatch(model_dir, seed=seed, data_dir=FLAGS.data_dir)
    return proxies.proxy_values(space, archs, names, images, labels, seed)


def run(FLAGS) -> int:
    from tf_oneshot.training.distribute import graph_optimizer

    with graph_optimizer(FLAGS.graph_optimizer):
        return _insights(FLAGS)


def _insights(FLAGS) -> int:
    from tf_oneshot.search.snapshots import score_snapshots
    from tf_oneshot.training.model_dir import ModelDir

    if not FLAGS.ground_truth:
        raise UserError("--ground_truth is required: the ground_truth.json of `tf-oneshot groundtruth`.")
    if not FLAGS.model_dirs:
        raise UserError("--model_dirs is required: one or more trained one-shot model_dirs, comma-separated.")
    if not FLAGS.output_dir:
        raise UserError("--output_dir is required: the directory for insights.json, insights.txt and the figures.")
    top_n = _top_n(FLAGS.top_n)
    bn_mode = FLAGS.bn_mode or "batch"
    check_output_dir(FLAGS.output_dir, (insights.JSON_FILE, insights.TEXT_FILE), FLAGS.overwrite)
    gt = insights.read_ground_truth(FLAGS.ground_truth)
    instances = []
    for path in FLAGS.model_dirs:
        model_dir = ModelDir.open(path)
        _check_space(gt, path, model_dir.space)
        scores = score_snapshots(model_dir, gt.children, FLAGS.snapshots, FLAGS.validation_examples,
                                 bn_mode=bn_mode)
        label = os.path.basename(os.path.normpath(path)) or path
        instances.append(insights.Instance(
            label, scores.steps, insights.snapshot_scores(scores.accuracy, scores.loss, FLAGS.rank_by)))
    baselines = _baselines(FLAGS, ModelDir.open(FLAGS.model_dirs[0]), gt.children)
    result = insights.build_insights(gt, instances, FLAGS.rank_by, FLAGS.prune_fraction, top_n, baselines)
    # Every instance row is scored under this batch-norm mode ("Deeper insights" App. A.2.2
    # involves the running statistics); insights.json and the printout say which.
    result["bn_mode"] = bn_mode
    paths = insights.write_insights(result, FLAGS.output_dir, gt.noise_ceiling)
    print(f"instance rows scored with --bn_mode={bn_mode}")
    print(insights.format_table(result), end="")
    print(f"insights: {paths['json']}")
    return 0

