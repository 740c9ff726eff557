"""`analyze`: rank correlations, the paper's figures and a Markdown report.

Bender et al. 2018 judge a one-shot model by how well its accuracies rank a
stratified sample of architectures retrained stand-alone (§4.1, Figure 5);
NAO-V2 §3.3 adds pairwise accuracy and Spearman rho. `analyze` reads the
search and retrain results, computes those statistics, draws the figures and
writes `report.md` (plots embedded, tables) and `analysis.json` beside them.

Stand-alone accuracy is the validation accuracy (§4: "accuracies from
abbreviated training were computed on the validation sets"), except for runs
of `retrain --full_train`, which trained on train + validation: for those the
ranking uses the test split, and the report and `analysis.json` say so.

On a small validation set (300 digits) mean accuracies take few distinct
values, and a tau over a handful of architectures is then decided by ties.
Where every retrain line records the loss on that split, the stand-alone
ranking breaks accuracy ties by the lower mean loss
(`ground_truth.accuracy_then_loss`, "Deeper insights" §3.1); the report says
how many distinct stand-alone values and tied pairs remain, and gives tau and
rho with 95% bootstrap intervals over architectures (`rank_metrics.bootstrap_ci`).
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import tensorflow as tf

from tf_oneshot.analysis import plots
from tf_oneshot.analysis.ground_truth import check_rank_by, scores_of
from tf_oneshot.analysis.rank_metrics import RankMetrics, kendall_tau, partial_kendall_tau, rank_metrics
from tf_oneshot.analysis.records import (
    Joined,
    best_standalone,
    check_same_space,
    join,
    load_retrain_results,
    load_search_results,
    standalone_split,
)
from tf_oneshot.errors import UserError
from tf_oneshot.io_utils import atomic_write_json, atomic_write_text

REPORT = "report.md"
ANALYSIS = "analysis.json"
PLOTS = {
    "oneshot_vs_standalone": "oneshot_vs_standalone.png",
    "oneshot_histogram": "oneshot_histogram.png",
    "kl_vs_accuracy": "kl_vs_accuracy.png",
    "search_progress": "search_progress.png",
}
OUTPUTS = (REPORT, ANALYSIS, *PLOTS.values())
# Bootstrap resamples of the rank statistics' confidence intervals (~0.1 s).
BOOTSTRAP_RESAMPLES = 2000
# Mean accuracies are rounded to this many decimals before ranking, so that two
# equal sets of per-seed accuracies summed in another order still tie.
DECIMALS = 10


@dataclasses.dataclass(frozen=True)
class Analysis:
    """What `analyze` measured and wrote.

    Attributes:
        metrics: one-shot vs stand-alone rank agreement (NaN where undefined).
        num_architectures_scored: distinct architectures in the search results.
        num_scores: lines of the search results (an architecture two searches
            scored counts twice here, once above; each search's screen counts
            its own lines).
        best_architecture: highest mean stand-alone validation accuracy, or the
            best one-shot architecture when nothing was retrained.
        best_oneshot_architecture: highest one-shot accuracy in the search.
        kl_kendall_tau: tau between KL and one-shot accuracy (§5, Figure 6).
        plots: name -> PNG path, for the figures drawn.
        report: path of report.md.
        joined: the Figure 5 points.
        standalone_split: the split stand-alone accuracies come from:
            "validation", or "test" for `retrain --full_train` runs.
        standalone_losses: architecture -> mean loss on that split over its
            seeds, where every retrain line records one (else empty).
        distinct_accuracies: distinct mean stand-alone accuracies.
        distinct_standalone: distinct values of the ranking measure (accuracy,
            its ties broken by loss where losses are recorded).
        tied_pairs: architecture pairs the stand-alone ranking leaves tied.
        accuracy_kendall_tau: tau against mean accuracy alone, ties and all.
        baselines: the training-free rankings of the same architectures
            (params, FLOPs, any proxies given) against stand-alone, with the
            same intervals (issue 21: a tau means little without them).
        partial_taus: the cost-controlled tau of each ranking ("oneshot" and
            every baseline): Kendall's partial tau given the parameter count
            (`rank_metrics.partial_kendall_tau`), NaN where undefined.
    """

    metrics: RankMetrics
    num_architectures_scored: int
    best_architecture: str | None
    best_oneshot_architecture: str | None
    kl_kendall_tau: float | None
    plots: dict[str, str]
    report: str
    joined: tuple[Joined, ...]
    standalone_split: str = "validation"
    standalone_losses: dict[str, float] = dataclasses.field(default_factory=dict)
    distinct_accuracies: int = 0
    distinct_standalone: int = 0
    tied_pairs: int = 0
    accuracy_kendall_tau: float = math.nan
    baselines: dict[str, RankMetrics] = dataclasses.field(default_factory=dict)
    partial_taus: dict[str, float] = dataclasses.field(default_factory=dict)
    num_scores: int = 0
    rank_by: str = "accuracy_then_loss"

    @property
    def standalone_measure(self) -> str:
        """What ranks the stand-alone results, in words."""
        return measure_words(self.standalone_split, self.rank_by, bool(self.standalone_losses))

    def to_json(self) -> dict[str, Any]:
        def clean(v: Any) -> Any:
            return None if isinstance(v, float) and math.isnan(v) else v

        return {
            **self.metrics.to_json(),
            "standalone_split": self.standalone_split,
            "standalone_measure": self.standalone_measure,
            "distinct_standalone_accuracies": self.distinct_accuracies,
            "distinct_standalone_values": self.distinct_standalone,
            "tied_standalone_pairs": self.tied_pairs,
            "kendall_tau_accuracy_only": clean(self.accuracy_kendall_tau),
            "partial_tau_params": clean(self.partial_taus.get("oneshot", math.nan)),
            "baselines": {name: {**m.to_json(), "partial_tau_params": clean(self.partial_taus.get(name, math.nan))}
                          for name, m in self.baselines.items()},
            "num_architectures_scored": self.num_architectures_scored,
            "num_scores": self.num_scores,
            "best_architecture": self.best_architecture,
            "best_oneshot_architecture": self.best_oneshot_architecture,
            "kl_kendall_tau": clean(self.kl_kendall_tau),
            "plots": {k: os.path.basename(v) for k, v in self.plots.items()},
            "report": os.path.basename(self.report),
            "architectures": [
                {
                    "architecture": j.architecture,
                    "oneshot_accuracy": j.oneshot_accuracy,
                    "standalone_validation_mean": clean(j.standalone.validation_mean),
                    "standalone_validation_std": clean(j.standalone.validation_std),
                    "standalone_test_mean": clean(j.standalone.test_mean),
                    "standalone_loss_mean": self.standalone_losses.get(j.architecture),
                    "seeds": list(j.standalone.seeds),
                    "params": j.standalone.params,
                    "flops": j.standalone.flops,
                }
                for j in self.joined
            ],
        }


def measure_words(split: str, rank_by: str, has_losses: bool) -> str:
    """The stand-alone ranking measure in words, e.g. "mean validation loss (lower first)"."""
    if rank_by == "loss":
        return f"mean {split} loss (lower first)"
    if has_losses and rank_by == "accuracy_then_loss":
        return f"mean {split} accuracy, ties broken by mean {split} loss"
    return f"mean {split} accuracy"


def check_output_dir(output_dir: str, names: tuple[str, ...], overwrite: bool) -> None:
    """Refuses an output dir that holds an earlier run, so nothing is lost.

    Args:
        output_dir: where outputs will go.
        names: files that mark an earlier run; None of them may exist unless
            `overwrite`. An empty tuple means: the dir must be empty.
        overwrite: the user's explicit --overwrite.

    Raises:
        UserError: naming the dir and both ways out.
    """
    if overwrite or not tf.io.gfile.isdir(output_dir):
        return
    present = tf.io.gfile.listdir(output_dir)
    found = [n for n in present if n.rstrip("/") in names] if names else present
    if found:
        raise UserError(
            f"--output_dir={output_dir} holds an earlier run ({', '.join(sorted(found)[:3])}); "
            "pass a new directory, or --overwrite to replace it."
        )


def _mean_std(mean: float, std: float, seeds: int) -> str:
    """"mean ± std" over several seeds; the mean alone over one (its "± 0.0000" would claim a spread never measured)."""
    return f"{mean:.4f} ± {std:.4f}" if seeds > 1 else f"{mean:.4f} (1 seed)"


def _fmt(value: float | None, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:.{digits}f}"


def _fmt_ci(interval: tuple[float, float], digits: int = 3) -> str:
    """A 95% interval as "[low, high]", or "" where undefined."""
    if any(math.isnan(x) for x in interval):
        return ""
    return f"[{interval[0]:.{digits}f}, {interval[1]:.{digits}f}]"


def mean_losses(retrain: list[dict], split: str, architectures: Sequence[str]) -> dict[str, float]:
    """Mean `{split}_loss` over seeds per architecture; empty unless every line of them records one.

    Retrain lines record the loss beside the accuracy where `retrain` measures
    it; older files have accuracies only, and then nothing breaks ties.
    """
    wanted = set(architectures)
    losses: dict[str, list[float]] = {a: [] for a in wanted}
    for r in retrain:
        if r["architecture"] in wanted:
            value = r.get(f"{split}_loss")
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                return {}
            losses[r["architecture"]].append(float(value))
    if not wanted or not all(losses.values()):
        return {}
    return {a: float(np.mean(v)) for a, v in losses.items()}


def _standalone_scores(joined: Sequence[Joined], losses: dict[str, float], rank_by: str) -> np.ndarray:
    """The stand-alone ranking measure (higher is better) by `rank_by` (`ground_truth.RANK_BY`).

    Without recorded losses (older retrain lines), "accuracy_then_loss" is
    accuracy alone, and "loss" is refused.
    """
    accuracy = np.round([j.standalone.accuracy for j in joined], DECIMALS)
    if not losses:
        if rank_by == "loss":
            raise UserError("--rank_by=loss needs the validation loss of every retrained architecture, and these "
                            "retrain lines record accuracies only (written before losses were); use "
                            "--rank_by=accuracy_then_loss or retrain again.")
        return accuracy
    return scores_of(accuracy, [losses[j.architecture] for j in joined], rank_by)


def baseline_metrics(joined: Sequence[Joined], scores: np.ndarray, oneshot: Sequence[float],
                     proxies: Mapping[str, Mapping[str, float]] | None = None,
                     ) -> tuple[dict[str, RankMetrics], dict[str, float]]:
    """(each training-free ranking's metrics against `scores`, every ranking's partial tau given params).

    The baselines are the retrained architectures' params and FLOPs and the
    `proxies` given (name -> architecture -> score, higher is better;
    `tf_oneshot.search.proxies`), with the one-shot ranking's intervals.
    """
    columns = {"params": [j.standalone.params for j in joined], "flops": [j.standalone.flops for j in joined]}
    for name, values in (proxies or {}).items():
        columns[name] = [values[j.architecture] for j in joined]
    params = columns["params"]
    metrics = {name: rank_metrics(c, scores, n_resamples=BOOTSTRAP_RESAMPLES) for name, c in columns.items()}
    partial = {name: partial_kendall_tau(c, scores, params) if joined else math.nan
               for name, c in {"oneshot": oneshot, **columns}.items()}
    return metrics, partial


def _log_metrics(log: Callable[[str], None], metrics: RankMetrics, measure: str, scores: np.ndarray,
                 tied_pairs: int, baselines: Mapping[str, RankMetrics], partial: Mapping[str, float]) -> None:
    log(
        f"analyze: {metrics.num_architectures} retrained architectures ({measure}; {len(set(scores.tolist()))} distinct "
        f"values, {tied_pairs} tied pairs): Kendall tau {_fmt(metrics.kendall_tau)} "
        f"{_fmt_ci(metrics.kendall_tau_ci)}, Spearman rho {_fmt(metrics.spearman_rho)} "
        f"{_fmt_ci(metrics.spearman_rho_ci)}, pairwise accuracy {_fmt(metrics.pairwise_accuracy)}"
    )
    log("analyze: baselines " + ", ".join(f"{name} tau {_fmt(m.kendall_tau)} {_fmt_ci(m.kendall_tau_ci)}"
                                          for name, m in baselines.items())
        + f"; one-shot tau given params {_fmt(partial['oneshot'])}")


def _read_inputs(search_results: str | Sequence[str] | None, retrain_results: str | None, output_dir: str,
                 overwrite: bool) -> tuple[list[dict], list[dict]]:
    """(search lines, retrain lines), read and checked before anything is written; then makes `output_dir`."""
    if not search_results and not retrain_results:
        raise UserError("nothing to analyze: pass --search_results and/or --retrain_results.")
    search, search_space = load_search_results(search_results) if search_results else ([], None)
    retrain, retrain_space = load_retrain_results(retrain_results) if retrain_results else ([], None)
    if search_results and retrain_results:
        check_same_space(search_space, retrain_space, search_results, retrain_results)
    check_output_dir(output_dir, OUTPUTS, overwrite)
    tf.io.gfile.makedirs(output_dir)
    return search, retrain


def analyze(
    search_results: str | Sequence[str] | None,
    retrain_results: str | None,
    output_dir: str,
    overwrite: bool = False,
    log: Callable[[str], None] = print,
    proxies: Mapping[str, Mapping[str, float]] | None = None,
    rank_by: str = "accuracy_then_loss",
) -> Analysis:
    """Computes rank metrics, draws the figures and writes the report.

    Args:
        search_results: JSON-lines file(s) of `tf-oneshot search` (e.g. a random and
            an evolution search of one checkpoint), or None.
        retrain_results: JSON-lines file of `tf-oneshot retrain`, or None.
        output_dir: where the PNGs, report.md and analysis.json go.
        overwrite: replace an earlier analysis in `output_dir`.
        log: progress lines.
        proxies: training-free scores of the retrained architectures, name ->
            architecture -> score, reported beside params and FLOPs.
        rank_by: the stand-alone ranking measure: "accuracy" (§4.1),
            "accuracy_then_loss" (ties broken by the loss) or "loss".

    Returns:
        The `Analysis`.

    Raises:
        UserError: no input, a missing, empty or malformed file, files of
            different search spaces, or an `output_dir` with an earlier analysis.
    """
    check_rank_by(rank_by)
    search, retrain = _read_inputs(search_results, retrain_results, output_dir, overwrite)

    joined = join(search, retrain)
    split = standalone_split(retrain)
    oneshot = [j.oneshot_accuracy for j in joined]
    standalone = [j.standalone.accuracy for j in joined]
    losses = mean_losses(retrain, split, [j.architecture for j in joined])
    scores = _standalone_scores(joined, losses, rank_by)
    metrics = rank_metrics(oneshot, scores, n_resamples=BOOTSTRAP_RESAMPLES)
    tied_pairs = sum(int(x == y) for x, y in itertools.combinations(scores.tolist(), 2))
    if split == "test":
        log("analyze: the retrain runs trained on train + validation (--full_train): stand-alone "
            "accuracies are test accuracies")
    baselines, partial = baseline_metrics(joined, scores, oneshot, proxies)
    _log_metrics(log, metrics, measure_words(split, rank_by, bool(losses)), scores, tied_pairs, baselines, partial)
    drawn, kl_tau = _draw(output_dir, joined, oneshot, standalone, metrics, split, search)
    log(f"analyze: wrote {len(drawn)} plots to {output_dir}")

    best_oneshot = max(search, key=lambda r: r["oneshot_accuracy"])["architecture"] if search else None
    best = best_standalone([j.standalone for j in joined])
    best = best.architecture if best else best_oneshot
    analysis = Analysis(
        metrics=metrics,
        num_architectures_scored=len({r["architecture"] for r in search}),
        num_scores=len(search),
        best_architecture=best,
        best_oneshot_architecture=best_oneshot,
        kl_kendall_tau=kl_tau,
        plots=drawn,
        report=os.path.join(output_dir, REPORT),
        joined=tuple(joined),
        standalone_split=split,
        standalone_losses=losses,
        distinct_accuracies=len(set(np.round(standalone, DECIMALS).tolist())),
        distinct_standalone=len(set(scores.tolist())),
        tied_pairs=tied_pairs,
        accuracy_kendall_tau=kendall_tau(oneshot, standalone) if joined else math.nan,
        baselines=baselines,
        partial_taus=partial,
        rank_by=rank_by,
    )
    atomic_write_text(analysis.report, render_report(analysis, search_results, retrain_results))
    atomic_write_json(os.path.join(output_dir, ANALYSIS), analysis.to_json())
    log(f"analyze: wrote {analysis.report}")
    return analysis


def _draw(output_dir: str, joined: Sequence, oneshot: Sequence[float], standalone: Sequence[float], metrics: Any,
          split: str, search: Sequence[dict]) -> tuple[dict[str, str], float | None]:
    """The figures of `analyze` ({name: path}) and the Kendall tau of KL against one-shot accuracy (§5)."""
    path = lambda name: os.path.join(output_dir, PLOTS[name])  # noqa: E731
    drawn: dict[str, str] = {}
    if joined:
        drawn["oneshot_vs_standalone"] = plots.plot_oneshot_vs_standalone(
            oneshot, standalone, path("oneshot_vs_standalone"),
            standalone_std=[j.standalone.accuracy_std for j in joined],
            split=split,
            title=(
                f"One-shot vs stand-alone (n={metrics.num_architectures}): "
                f"tau={_fmt(metrics.kendall_tau, 2)} {_fmt_ci(metrics.kendall_tau_ci, 2)}, "
                f"rho={_fmt(metrics.spearman_rho, 2)}"
            ),
        )
    kl_tau = None
    if search:
        accuracies = [r["oneshot_accuracy"] for r in search]
        drawn["oneshot_histogram"] = plots.plot_oneshot_histogram(
            accuracies, path("oneshot_histogram"), distinct=len({r["architecture"] for r in search})
        )
        with_kl = [r for r in search if r.get("kl") is not None]
        if with_kl:
            kl = [r["kl"] for r in with_kl]
            acc = [r["oneshot_accuracy"] for r in with_kl]
            kl_tau = kendall_tau(kl, acc)
            drawn["kl_vs_accuracy"] = plots.plot_kl_vs_accuracy(
                kl, acc, path("kl_vs_accuracy"),
                title=f"KL divergence vs one-shot accuracy (n={len(kl)}): tau={_fmt(kl_tau, 2)}",
            )
        rand = [r["oneshot_accuracy"] for r in search if r["algorithm"] != "evolution"]
        evo = [r for r in search if r["algorithm"] == "evolution" and r["generation"] is not None]
        drawn["search_progress"] = plots.plot_search_progress(
            rand, [r["generation"] for r in evo], [r["oneshot_accuracy"] for r in evo],
            path("search_progress"),
        )
    return drawn, kl_tau


def baseline_table(analysis: Analysis) -> list[str]:
    """The report's rows of the one-shot ranking beside the training-free baselines."""
    if not analysis.joined:
        return []
    lines = ["", "## Beside the training-free baselines", "",
             "Each ranking of the same retrained architectures against stand-alone; tau given params is "
             "Kendall's partial tau given the parameter count (cost-controlled, undefined for params itself).", "",
             "| ranking | Kendall tau (95% CI) | Spearman rho (95% CI) | tau given params |",
             "| --- | --- | --- | --- |"]
    for name, m in {"one-shot": analysis.metrics, **analysis.baselines}.items():
        partial = analysis.partial_taus.get("oneshot" if name == "one-shot" else name, math.nan)
        lines.append(f"| {name} | {_fmt(m.kendall_tau)} {_fmt_ci(m.kendall_tau_ci)} | {_fmt(m.spearman_rho)} "
                     f"{_fmt_ci(m.spearman_rho_ci)} | {_fmt(partial)} |")
    return lines


def render_report(
    analysis: Analysis, search_results: str | Sequence[str] | None, retrain_results: str | None
) -> str:
    """The Markdown report: metrics table, embedded plots, per-architecture table."""
    m = analysis.metrics
    if isinstance(search_results, str):
        search_results = [search_results]
    searched = ", ".join(f"`{p}`" for p in search_results or []) or "-"
    if analysis.standalone_split == "test":
        which = ("Stand-alone accuracy is the **test** accuracy averaged over seeds: the retrain runs "
                 "trained on the full training set, train + validation (`retrain --full_train`, Bender "
                 "et al. 2018, §3.4 and §4.1), which leaves no validation split to rank them on.")
    else:
        which = ("Stand-alone accuracy is the validation accuracy averaged over seeds (Bender et al. "
                 "2018, §4.1, Figure 5).")
    if analysis.rank_by == "loss":
        which += (" The architectures are ranked by their mean loss on the same split (lower first), not by "
                  "accuracy as in §4.1: on a small validation set accuracy takes few values and ranks with "
                  "more noise (its tau is given below too).")
    elif analysis.standalone_losses and analysis.rank_by == "accuracy_then_loss":
        which += (" Architectures tied in accuracy are ranked by their mean loss on the same split "
                  "(lower first), since a small validation set leaves many accuracies tied.")
    which += (f" Intervals are 95% percentile bootstrap intervals over architectures "
              f"({BOOTSTRAP_RESAMPLES} resamples).")
    lines = [
        "# One-shot architecture search: analysis",
        "",
        f"Search results: {searched}; retrain results: `{retrain_results or '-'}`.",
        "",
        "## Rank agreement of one-shot and stand-alone accuracy",
        "",
        f"{which} Pairwise accuracy and Spearman rho as in NAO-V2 §3.3.",
        "",
        "| metric | value |",
        "| --- | --- |",
        f"| architectures retrained | {m.num_architectures} |",
        f"| stand-alone ranking measure | {analysis.standalone_measure} |",
        f"| distinct stand-alone accuracies / ranking values | {analysis.distinct_accuracies} / "
        f"{analysis.distinct_standalone} |",
        f"| tied pairs in the stand-alone ranking | {analysis.tied_pairs} of "
        f"{m.num_architectures * (m.num_architectures - 1) // 2} |",
        f"| Kendall tau (95% CI) | {_fmt(m.kendall_tau)} {_fmt_ci(m.kendall_tau_ci)} |",
        f"| Kendall tau on accuracy alone | {_fmt(analysis.accuracy_kendall_tau)} |",
        f"| Spearman rho (95% CI) | {_fmt(m.spearman_rho)} {_fmt_ci(m.spearman_rho_ci)} |",
        f"| pairwise accuracy | {_fmt(m.pairwise_accuracy)} |",
        f"| architectures scored with the one-shot model | {_scored_text(analysis, search_results)} |",
        f"| best architecture (stand-alone) | `{analysis.best_architecture or '-'}` |",
        f"| best architecture (one-shot) | `{analysis.best_oneshot_architecture or '-'}` |",
    ]
    if analysis.kl_kendall_tau is not None:
        lines.append(f"| Kendall tau, KL vs one-shot accuracy (§5) | {_fmt(analysis.kl_kendall_tau)} |")
    lines += baseline_table(analysis)
    captions = {
        "oneshot_vs_standalone": "One-shot vs stand-alone accuracy (Figure 5, top)",
        "oneshot_histogram": "Distribution of one-shot accuracies (Figure 5, bottom)",
        "kl_vs_accuracy": "Symmetrized KL divergence vs one-shot accuracy (Figure 6)",
        "search_progress": "Best one-shot accuracy vs architectures scored: evolution vs random",
    }
    lines += ["", "## Figures", ""]
    for name, file in analysis.plots.items():
        lines += [f"### {captions[name]}", "", f"![{captions[name]}]({os.path.basename(file)})", ""]
    if analysis.joined:
        short = "test" if analysis.standalone_split == "test" else "val."
        lines += [
            "## Retrained architectures",
            "",
            f"| architecture | one-shot acc. | stand-alone {short} acc. (mean ± std) | {short} loss "
            "| test acc. | seeds | params | multiply-adds |",
            "| --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        for j in sorted(analysis.joined, key=lambda j: -j.oneshot_accuracy):
            s = j.standalone
            lines.append(
                f"| `{j.architecture}` | {j.oneshot_accuracy:.4f} | {_mean_std(s.accuracy, s.accuracy_std, len(s.seeds))} "
                f"| {_fmt(analysis.standalone_losses.get(j.architecture), 4)} | "
                f"{_fmt(s.test_mean, 4)} | {len(s.seeds)} | "
                f"{s.params:,} | {s.flops:,} |"
            )
    return "\n".join(lines) + "\n"


def _scored_text(analysis: Analysis, search_results: Any) -> str:
    """The scored count, saying what it counts: distinct architectures, and the scores when more."""
    files = 1 if isinstance(search_results, str) else len(search_results or ())
    text = f"{analysis.num_architectures_scored} distinct"
    if analysis.num_scores != analysis.num_architectures_scored:
        text += (f" ({analysis.num_scores} scores in {files} file(s), as the searches' screens count; "
                 "an architecture scored twice counts once)")
    return text
