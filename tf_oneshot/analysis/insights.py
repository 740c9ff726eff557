"""Tables 1-3, Figures 2/3/8 and Insight 1 of "Deeper insights into weight sharing" from scores.

Input: a ground truth (`ground_truth.json` of `tf-oneshot groundtruth`: each
child's mean validation accuracy and loss over seeds, the per-seed values,
the noise ceiling) and, for each weight-sharing *instance* (one trained
one-shot model_dir), every child's one-shot score at each of its last K
snapshots (checkpoints), oldest first (`tf_oneshot.search.snapshots`).

- Table 1/2, "Instances" row (§3.2): S-Tau, Max/Min Tau over the instances'
  last snapshots; GT-Tau, T1R, T3R as mean ± std over instances.
- Table 1/2, "Different epochs" rows (§3.2): the same over the last K
  snapshots of one instance, with GT-Tau-Mean-K and GT-Tau-Std-K (§4.1,
  Table 3 reports them for K = 64 mini-batches).
- "Random rank" and "Ground truth" rows: baselines, the latter with the
  split-half noise ceiling (`analysis.ground_truth.noise_ceiling`).
- Figure 3: each child's rank distribution across instances (3a) or
  snapshots (3b), children ordered by ground truth.
- Figure 2/8: GT-Tau of each instance against its training step.
- Insight 1: prune the children whose median rank (across instances or
  snapshots) lies in the bottom fraction q of the ranks, and count how many
  of the ground-truth top n survive.

Ranks are positions, 1 = best; a score is "higher is better" (see
`analysis.ground_truth`). This module knows no TensorFlow model.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import scipy.stats

from tf_oneshot.analysis import ground_truth as metrics
from tf_oneshot.analysis.ground_truth import scores_of
from tf_oneshot.analysis.plots import figure, save_figure
from tf_oneshot.analysis.rank_metrics import mean_tau_ci, partial_kendall_tau
from tf_oneshot.errors import UserError
from tf_oneshot.io_utils import atomic_write_json, atomic_write_text, read_json

JSON_FILE = "insights.json"
TEXT_FILE = "insights.txt"
RANDOM_INSTANCES = 10  # Table 1's "Random rank": 10 random rankings
RANDOM_SEED = 2020
BOOTSTRAP_RESAMPLES = 2000  # as `analyze`'s intervals


@dataclasses.dataclass(frozen=True)
class GroundTruth:
    """The stand-alone ground truth of an enumerable space (§3.1).

    Args:
        children: the children's string forms.
        accuracy, loss: mean validation accuracy and loss over seeds, per child.
        per_seed_accuracy: [seeds, children] validation accuracies.
        noise_ceiling: the split-half Kendall tau (None: fewer than 4 seeds).
        space: the space config the ground truth was trained on (or None).
    """

    children: tuple[str, ...]
    accuracy: np.ndarray
    loss: np.ndarray
    per_seed_accuracy: np.ndarray
    noise_ceiling: float | None
    space: dict | None

    def scores(self, rank_by: str) -> np.ndarray:
        """Higher-is-better scores of the children."""
        return scores_of(self.accuracy, self.loss, rank_by)


def snapshot_scores(accuracy: np.ndarray, loss: np.ndarray, rank_by: str) -> np.ndarray:
    """[snapshots, children] accuracies and losses -> scores by `rank_by`, one snapshot at a time."""
    return np.stack([scores_of(a, b, rank_by) for a, b in zip(np.atleast_2d(accuracy), np.atleast_2d(loss))])


def read_ground_truth(path: str) -> GroundTruth:
    """Reads `ground_truth.json` (or its directory) as written by `tf-oneshot groundtruth`.

    Raises:
        UserError: a missing file, or one without each child's mean validation accuracy and loss.
    """
    if os.path.isdir(path) or not path.endswith(".json"):
        path = os.path.join(path, "ground_truth.json")
    summary = read_json(path, "ground-truth summary")
    rows = summary.get("children") if isinstance(summary, dict) else None
    needed = ("architecture", "validation_accuracy_mean", "validation_loss_mean")
    if not rows or not all(isinstance(r, dict) and all(k in r for k in needed) for r in rows):
        raise UserError(f"{path} is not a ground-truth summary (each child's {', '.join(needed)}); "
                        "write one with `tf-oneshot groundtruth`.")
    per_seed = [r.get("validation_accuracy") or [r["validation_accuracy_mean"]] for r in rows]
    if len({len(s) for s in per_seed}) != 1:
        raise UserError(f"{path}: the children hold different numbers of seeds; merge the ground truth again.")
    ceiling = summary.get("noise_ceiling")
    if isinstance(ceiling, dict):
        ceiling = ceiling.get("validation_accuracy")
    return GroundTruth(
        children=tuple(str(r["architecture"]) for r in rows),
        accuracy=np.array([float(r["validation_accuracy_mean"]) for r in rows]),
        loss=np.array([float(r["validation_loss_mean"]) for r in rows]),
        per_seed_accuracy=np.array(per_seed, np.float64).T,
        noise_ceiling=None if ceiling is None else float(ceiling),
        space=summary.get("space") if isinstance(summary.get("space"), dict) else None,
    )


@dataclasses.dataclass(frozen=True)
class Instance:
    """One weight-sharing instance: its children's scores at its snapshots, oldest first.

    Args:
        label: e.g. the model_dir's name.
        steps: the training step of each snapshot.
        scores: [snapshots, children] higher-is-better scores, in the ground truth's child order.
    """

    label: str
    steps: tuple[int, ...]
    scores: np.ndarray

    @property
    def last(self) -> np.ndarray:
        return self.scores[-1]


def positions(scores: np.ndarray) -> np.ndarray:
    """[rows, children] scores -> ranks, 1 = best; ties share their average rank."""
    scores = np.atleast_2d(np.asarray(scores, np.float64))
    return np.stack([scipy.stats.rankdata(-row, method="average") for row in scores])


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    values = np.asarray(values, np.float64)
    return float(np.mean(values)), float(np.std(values))


def ranking_row(name: str, rankings: np.ndarray, truth: np.ndarray, params: Sequence[float] | None = None,
                n_resamples: int = BOOTSTRAP_RESAMPLES) -> dict[str, Any]:
    """One row of Tables 1 and 2 for rankings [R, children] judged against `truth`.

    S-Tau, Max Tau and Min Tau need R >= 2 (None otherwise); GT-Tau, T1R and
    T3R are mean and population std over the R rankings (Table 2). Every row
    also carries the 95% bootstrap interval of its mean GT-Tau over children
    (`rank_metrics.mean_tau_ci`) and, given the children's `params`, the mean
    cost-controlled tau (`rank_metrics.partial_kendall_tau` given params).
    """
    rankings = np.atleast_2d(rankings)
    row: dict[str, Any] = {"name": name, "rankings": int(rankings.shape[0])}
    if rankings.shape[0] >= 2:
        taus = metrics.pairwise_taus(rankings)
        row.update(s_tau=float(np.nanmean(taus)), max_tau=float(np.nanmax(taus)), min_tau=float(np.nanmin(taus)))
    else:
        row.update(s_tau=None, max_tau=None, min_tau=None)
    row["gt_tau_mean"], row["gt_tau_std"] = _mean_std([metrics.gt_tau(r, truth) for r in rankings])
    for n in (1, 3):
        if n <= rankings.shape[1]:
            row[f"t{n}r_mean"], row[f"t{n}r_std"] = _mean_std([metrics.top_n_rank(r, truth, n) for r in rankings])
    row["gt_tau_ci"] = _interval(mean_tau_ci(rankings, truth, n_resamples=n_resamples))
    row["partial_tau"] = None
    if params is not None:
        partial = [partial_kendall_tau(r, truth, params) for r in rankings]
        row["partial_tau"] = None if all(math.isnan(t) for t in partial) else float(np.nanmean(partial))
    return row


def _interval(interval: tuple[float, float]) -> list[float] | None:
    return None if any(math.isnan(v) for v in interval) else [float(v) for v in interval]


def baseline_rows(baselines: Mapping[str, Sequence[float]], truth: np.ndarray) -> list[dict[str, Any]]:
    """The training-free rows beside the one-shot rows: one ranking each (`tf_oneshot.search.proxies`).

    Args:
        baselines: name -> each child's higher-is-better score, in the ground
            truth's child order; "params" also controls every row's partial tau.

    The best proxy (not params or FLOPs) is marked `best_proxy`: chosen on
    this ground truth, so its GT-Tau is an optimistic estimate of the proxy a
    user would pick blind.
    """
    params = baselines.get("params")
    rows = []
    for name, scores in baselines.items():
        scores = np.asarray(scores, np.float64)
        if scores.shape != truth.shape:
            raise UserError(f"baseline {name} scores {scores.size} children; the ground truth holds {truth.size}.")
        label = {"params": "Params", "flops": "FLOPs"}.get(name, f"Proxy {name}")
        rows.append(dict(ranking_row(label, scores[None], truth, params), baseline=name))
    proxies = [r for r in rows if r["baseline"] not in ("params", "flops")]
    if proxies:
        best = max(proxies, key=lambda r: r["gt_tau_mean"] if not math.isnan(r["gt_tau_mean"]) else -2.0)
        best["best_proxy"] = True
        best["name"] += " (best proxy)"
    return rows


def prune(rank_rows: np.ndarray, truth: np.ndarray, fraction: float, top_n: Sequence[int] = (1, 3, 5, 10),
          children: Sequence[str] | None = None) -> dict[str, Any]:
    """Insight 1: drop the children whose median rank lies in the bottom `fraction` of the ranks.

    A child is dropped when its median rank (1 = best) across the rankings
    exceeds (1 - fraction) * #children, i.e. falls among the worst
    `fraction` of positions. Reports how many of the ground-truth top n
    (positions from `truth`, ties sharing the best position) survive.

    Args:
        rank_rows: [R, children] rank positions (`positions`), one row per
            instance or snapshot.
        truth: the ground-truth scores (higher is better).
        fraction: q in [0, 1).
        top_n: the n to report.
        children: names for the dropped list (default: indices).

    Raises:
        UserError: q outside [0, 1), or rankings of another number of children.
    """
    rank_rows = np.atleast_2d(np.asarray(rank_rows, np.float64))
    truth = np.asarray(truth, np.float64)
    if not 0.0 <= fraction < 1.0:
        raise UserError(f"--prune_fraction={fraction} is invalid; expected q in [0, 1) (0.5 drops the children "
                        "whose median rank is in the worse half).")
    count = truth.size
    if rank_rows.shape[1] != count:
        raise UserError(f"the rankings hold {rank_rows.shape[1]} children but the ground truth {count}.")
    names = list(children) if children is not None else [str(i) for i in range(count)]
    median = np.median(rank_rows, axis=0)
    dropped = median > (1.0 - fraction) * count
    gt_positions = metrics.ground_truth_positions(truth)
    survivors = {}
    for n in top_n:
        if 1 <= n <= count:
            top = gt_positions <= n
            survivors[str(n)] = {"top": int(top.sum()), "kept": int((top & ~dropped).sum())}
    return {
        "fraction": float(fraction),
        "rankings": int(rank_rows.shape[0]),
        "children": count,
        "kept": int((~dropped).sum()),
        "dropped": [names[i] for i in np.flatnonzero(dropped)],
        "median_rank": {names[i]: float(median[i]) for i in range(count)},
        "top_n_survivors": survivors,
    }


def random_row(truth: np.ndarray, instances: int = RANDOM_INSTANCES, seed: int = RANDOM_SEED,
               params: Sequence[float] | None = None) -> dict[str, Any]:
    """Table 1's "Random rank" baseline: `instances` random rankings of the children."""
    rng = np.random.default_rng(seed)
    return ranking_row("Random rank", np.stack([rng.permutation(truth.size) for _ in range(instances)]), truth,
                       params)


def ground_truth_row(gt: GroundTruth, truth: np.ndarray, params: Sequence[float] | None = None) -> dict[str, Any]:
    """The "Ground truth" row: each seed as an instance (Tables 1-2) and the noise ceiling."""
    row: dict[str, Any] = {"name": "Ground truth", "noise_ceiling": gt.noise_ceiling}
    if gt.per_seed_accuracy.shape[0] >= 2:
        row.update(ranking_row("Ground truth", gt.per_seed_accuracy, truth, params))
    return row


def build_insights(gt: GroundTruth, instances: Sequence[Instance], rank_by: str = "accuracy_then_loss",
                   prune_fraction: float | None = None, top_n: Sequence[int] = (1, 3, 5, 10),
                   baselines: Mapping[str, Sequence[float]] | None = None) -> dict[str, Any]:
    """The rows of Tables 1-3, the GT-Tau curves and the pruning counts, as one JSON-able dict.

    Args:
        gt: the ground truth.
        instances: the weight-sharing instances, their scores in `gt.children` order.
        rank_by: how the ground truth's children are scored (`ground_truth.RANK_BY`).
        prune_fraction: q of Insight 1 (None: no pruning).
        top_n: the ground-truth top n whose survivors pruning reports.
        baselines: training-free scores of the children in `gt.children`
            order, name -> scores (`baseline_rows`); with "params", every
            row also gets its partial tau given the parameter count.

    Raises:
        UserError: no instance, or instances scoring other children than the ground truth.
    """
    if not instances:
        raise UserError("insights need at least one instance (--model_dirs).")
    truth = gt.scores(rank_by)
    for inst in instances:
        if inst.scores.ndim != 2 or inst.scores.shape[1] != truth.size:
            raise UserError(f"instance {inst.label} scores {inst.scores.shape[-1]} children; the ground truth "
                            f"holds {truth.size}.")
    baselines = dict(baselines or {})
    params = baselines.get("params")
    last = np.stack([inst.last for inst in instances])
    rows = [ranking_row(f"Instances ({len(instances)}, last snapshot)", last, truth, params)]
    for inst in instances:
        k = inst.scores.shape[0]
        row = ranking_row(f"Snapshots of {inst.label} (last {k})", inst.scores, truth, params)
        row["gt_tau_mean_k"], row["gt_tau_std_k"] = metrics.gt_tau_over_snapshots(inst.scores, truth, k)
        row["k"] = k
        rows.append(row)
    # Table 3: GT-Tau-Mean-k and GT-Tau-Std-k averaged over instances, with their std across instances.
    k = min(inst.scores.shape[0] for inst in instances)
    per_instance = np.array([metrics.gt_tau_over_snapshots(inst.scores, truth, k) for inst in instances])
    rows[0].update(k=k, gt_tau_mean_k=float(per_instance[:, 0].mean()), gt_tau_mean_k_std=float(per_instance[:, 0].std()),
                   gt_tau_std_k=float(per_instance[:, 1].mean()), gt_tau_std_k_std=float(per_instance[:, 1].std()))
    rows += [*baseline_rows(baselines, truth), random_row(truth, params=params), ground_truth_row(gt, truth, params)]
    result: dict[str, Any] = {
        "rank_by": rank_by,
        "children": list(gt.children),
        "ground_truth_order": [gt.children[i] for i in np.argsort(metrics.ground_truth_positions(truth),
                                                                   kind="stable")],
        "rows": rows,
        "progress": {inst.label: {"steps": list(map(int, inst.steps)),
                                  "gt_tau": [metrics.gt_tau(s, truth) for s in inst.scores]} for inst in instances},
        "s_tau_progress": s_tau_progress(instances),
        "instances": {inst.label: {"steps": list(map(int, inst.steps)), "scores": inst.scores.tolist()}
                      for inst in instances},
        "pruning": {},
    }
    if prune_fraction is not None:
        if len(instances) < 2 and all(inst.scores.shape[0] < 2 for inst in instances):
            raise UserError("--prune_fraction takes the median rank over several rankings; give 2 or more "
                            "--model_dirs or --snapshots=2 or more.")
        if len(instances) >= 2:
            result["pruning"]["instances"] = prune(positions(last), truth, prune_fraction, top_n, gt.children)
        for inst in instances:
            if inst.scores.shape[0] >= 2:
                result["pruning"][f"snapshots of {inst.label}"] = prune(positions(inst.scores), truth,
                                                                         prune_fraction, top_n, gt.children)
    return result


def s_tau_progress(instances: Sequence[Instance]) -> dict[str, list]:
    """Figure 2: S-Tau across instances at each step they all have a snapshot of (needs 2 instances)."""
    if len(instances) < 2:
        return {"steps": [], "s_tau": []}
    common = sorted(set.intersection(*(set(inst.steps) for inst in instances)))
    values = [metrics.s_tau([inst.scores[list(inst.steps).index(step)] for inst in instances]) for step in common]
    return {"steps": common, "s_tau": values}


def format_cell(row: Mapping[str, Any], key: str, std: str | None = None, digits: int = 4) -> str:
    """`row[key]` (± `row[std]`) to `digits` decimals, "-" where missing or NaN."""
    value = row.get(key)
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    text = f"{value:.{digits}f}"
    if std and row.get(std) is not None:
        text += f" ± {row[std]:.{digits}f}"
    return text


def format_interval(interval: Sequence[float] | None, digits: int = 3) -> str:
    """[low, high] as "[low, high]", "-" where undefined."""
    return "-" if interval is None else f"[{interval[0]:.{digits}f}, {interval[1]:.{digits}f}]"


def format_table(result: Mapping[str, Any]) -> str:
    """Tables 1-3 and the pruning counts as plain text."""
    header = ["rankings", "S-Tau", "Max Tau", "Min Tau", "GT-Tau", "95% CI", "tau|params", "T1R", "T3R",
              "GT-Tau-Mean-k", "GT-Tau-Std-k"]
    lines = [f"Ranking fidelity (\"Deeper insights\", Tables 1-3); children ranked by {result['rank_by']}", ""]
    table = [["", *header]]
    for row in result["rows"]:
        table.append([row["name"], str(row.get("rankings", "-")), format_cell(row, "s_tau"), format_cell(row, "max_tau"),
                      format_cell(row, "min_tau"), format_cell(row, "gt_tau_mean", "gt_tau_std"),
                      format_interval(row.get("gt_tau_ci")), format_cell(row, "partial_tau"),
                      format_cell(row, "t1r_mean", "t1r_std", 2), format_cell(row, "t3r_mean", "t3r_std", 2),
                      format_cell(row, "gt_tau_mean_k", "gt_tau_mean_k_std"),
                      format_cell(row, "gt_tau_std_k", "gt_tau_std_k_std")])
    widths = [max(len(r[i]) for r in table) for i in range(len(table[0]))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in table]
    ceiling = next((r.get("noise_ceiling") for r in result["rows"] if r["name"] == "Ground truth"), None)
    lines += ["", f"ground-truth noise ceiling (split-half Kendall tau): {format_cell({'c': ceiling}, 'c')}",
              "95% CI: bootstrap over children of the mean GT-Tau; tau|params: partial Kendall tau given the "
              "parameter count (cost-controlled; undefined for Params itself)"]
    for source, pruned in result.get("pruning", {}).items():
        survivors = ", ".join(f"top-{n}: {v['kept']}/{v['top']}" for n, v in pruned["top_n_survivors"].items())
        lines.append(f"pruning q={pruned['fraction']:g} by median rank over {source}: keeps {pruned['kept']} of "
                     f"{pruned['children']} children; ground-truth survivors {survivors}")
    return "\n".join(lines) + "\n"


def plot_rank_distribution(ranks: np.ndarray, children: Sequence[str], order: Sequence[str], path: str,
                           title: str = "") -> str:
    """Figure 3: each child's rank across rankings (boxes), children from ground-truth best to worst."""
    index = {c: i for i, c in enumerate(children)}
    columns = [np.asarray(ranks)[:, index[c]] for c in order]
    fig, ax = figure((max(800, 14 * len(order)), 500))
    ax.boxplot(columns, whis=(0, 100))
    ax.set_xticks(range(1, len(order) + 1))
    ax.set_xticklabels(order, rotation=90, fontsize=7)
    ax.set_xlabel("child, ordered by ground truth (best first)")
    ax.set_ylabel("rank in the one-shot ranking (1 = best)")
    ax.invert_yaxis()
    ax.set_title(title or "Rank distribution of each child (Deeper insights, Figure 3)")
    return save_figure(fig, path)


def plot_gt_tau_progress(progress: Mapping[str, Mapping[str, Sequence]], path: str,
                         ceiling: float | None = None, s_tau: Mapping[str, Sequence] | None = None) -> str:
    """Figures 2/8: GT-Tau of each instance against its training step, S-Tau across them, the noise ceiling."""
    fig, ax = figure((800, 500))
    for label, curve in progress.items():
        ax.plot(curve["steps"], curve["gt_tau"], marker="o", markersize=3, label=f"GT-Tau {label}")
    if s_tau and s_tau.get("steps"):
        ax.plot(s_tau["steps"], s_tau["s_tau"], color="black", marker="s", markersize=3, label="S-Tau (instances)")
    if ceiling is not None:
        ax.axhline(ceiling, color="black", linestyle="--", label="ground-truth ceiling")
    ax.set_xlabel("training step")
    ax.set_ylabel("Kendall tau")
    ax.set_title("Ranking against training progress (Deeper insights, Figures 2 and 8)")
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.0, 0.5))
    return save_figure(fig, path)


def write_insights(result: dict[str, Any], output_dir: str, ceiling: float | None = None) -> dict[str, str]:
    """Writes insights.json, insights.txt and the figures (each atomically); returns their paths."""
    paths = {}
    children, order = result["children"], result["ground_truth_order"]
    instances = result["instances"]
    if len(instances) >= 2:
        last = np.stack([np.asarray(v["scores"])[-1] for v in instances.values()])
        paths["figure3_instances"] = plot_rank_distribution(
            positions(last), children, order, os.path.join(output_dir, "figure3_instances.png"),
            f"Rank of each child across {len(instances)} instances (Figure 3a)")
    for i, (label, value) in enumerate(instances.items()):
        scores = np.asarray(value["scores"])
        if scores.shape[0] >= 2:
            paths[f"figure3_snapshots_{i}"] = plot_rank_distribution(
                positions(scores), children, order, os.path.join(output_dir, f"figure3_snapshots_{i}.png"),
                f"Rank of each child across the last {scores.shape[0]} snapshots of {label} (Figure 3b)")
    paths["gt_tau_progress"] = plot_gt_tau_progress(result["progress"], os.path.join(output_dir,
                                                                                      "gt_tau_progress.png"), ceiling,
                                                  result.get("s_tau_progress"))
    text = format_table(result)
    atomic_write_text(os.path.join(output_dir, TEXT_FILE), text)
    paths["text"] = os.path.join(output_dir, TEXT_FILE)
    paths["json"] = os.path.join(output_dir, JSON_FILE)
    atomic_write_json(paths["json"], {**result, "files": {k: os.path.basename(v) for k, v in paths.items()}})
    return paths
