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
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Callable, Sequence
from typing import Any

import tensorflow as tf

from tf_oneshot.analysis import plots
from tf_oneshot.analysis.rank_metrics import RankMetrics, kendall_tau, rank_metrics
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


@dataclasses.dataclass(frozen=True)
class Analysis:
    """What `analyze` measured and wrote.

    Attributes:
        metrics: one-shot vs stand-alone rank agreement (NaN where undefined).
        num_architectures_scored: distinct architectures in the search results.
        best_architecture: highest mean stand-alone validation accuracy, or the
            best one-shot architecture when nothing was retrained.
        best_oneshot_architecture: highest one-shot accuracy in the search.
        kl_kendall_tau: tau between KL and one-shot accuracy (§5, Figure 6).
        plots: name -> PNG path, for the figures drawn.
        report: path of report.md.
        joined: the Figure 5 points.
        standalone_split: the split stand-alone accuracies come from:
            "validation", or "test" for `retrain --full_train` runs.
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

    def to_json(self) -> dict[str, Any]:
        def clean(v: Any) -> Any:
            return None if isinstance(v, float) and math.isnan(v) else v

        return {
            **self.metrics.to_json(),
            "standalone_split": self.standalone_split,
            "num_architectures_scored": self.num_architectures_scored,
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
                    "seeds": list(j.standalone.seeds),
                    "params": j.standalone.params,
                    "flops": j.standalone.flops,
                }
                for j in self.joined
            ],
        }


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


def _fmt(value: float | None, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:.{digits}f}"


def analyze(
    search_results: str | Sequence[str] | None,
    retrain_results: str | None,
    output_dir: str,
    overwrite: bool = False,
    log: Callable[[str], None] = print,
) -> Analysis:
    """Computes rank metrics, draws the figures and writes the report.

    Args:
        search_results: JSON-lines file(s) of `tf-oneshot search` (e.g. a random and
            an evolution search of one checkpoint), or None.
        retrain_results: JSON-lines file of `tf-oneshot retrain`, or None.
        output_dir: where the PNGs, report.md and analysis.json go.
        overwrite: replace an earlier analysis in `output_dir`.
        log: progress lines.

    Returns:
        The `Analysis`.

    Raises:
        UserError: no input, a missing, empty or malformed file, files of
            different search spaces, or an `output_dir` with an earlier analysis.
    """
    if not search_results and not retrain_results:
        raise UserError("nothing to analyze: pass --search_results and/or --retrain_results.")
    # Read and check everything before writing anything.
    search, search_space = load_search_results(search_results) if search_results else ([], None)
    retrain, retrain_space = (
        load_retrain_results(retrain_results) if retrain_results else ([], None)
    )
    if search_results and retrain_results:
        check_same_space(search_space, retrain_space, search_results, retrain_results)
    check_output_dir(output_dir, OUTPUTS, overwrite)
    tf.io.gfile.makedirs(output_dir)

    joined = join(search, retrain)
    split = standalone_split(retrain)
    oneshot = [j.oneshot_accuracy for j in joined]
    standalone = [j.standalone.accuracy for j in joined]
    metrics = rank_metrics(oneshot, standalone)
    if split == "test":
        log("analyze: the retrain runs trained on train + validation (--full_train): stand-alone "
            "accuracies are test accuracies")
    log(
        f"analyze: {metrics.num_architectures} retrained architectures ({split} accuracy): "
        f"Kendall tau {_fmt(metrics.kendall_tau)}, Spearman rho {_fmt(metrics.spearman_rho)}, "
        f"pairwise accuracy {_fmt(metrics.pairwise_accuracy)}"
    )

    path = lambda name: os.path.join(output_dir, PLOTS[name])  # noqa: E731
    drawn: dict[str, str] = {}
    if joined:
        drawn["oneshot_vs_standalone"] = plots.plot_oneshot_vs_standalone(
            oneshot, standalone, path("oneshot_vs_standalone"),
            standalone_std=[j.standalone.accuracy_std for j in joined],
            split=split,
            title=(
                f"One-shot vs stand-alone (n={metrics.num_architectures}): "
                f"tau={_fmt(metrics.kendall_tau, 2)}, rho={_fmt(metrics.spearman_rho, 2)}"
            ),
        )
    kl_tau = None
    if search:
        accuracies = [r["oneshot_accuracy"] for r in search]
        drawn["oneshot_histogram"] = plots.plot_oneshot_histogram(
            accuracies, path("oneshot_histogram")
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
    log(f"analyze: wrote {len(drawn)} plots to {output_dir}")

    best_oneshot = max(search, key=lambda r: r["oneshot_accuracy"])["architecture"] if search else None
    best = best_standalone([j.standalone for j in joined])
    best = best.architecture if best else best_oneshot
    analysis = Analysis(
        metrics=metrics,
        num_architectures_scored=len({r["architecture"] for r in search}),
        best_architecture=best,
        best_oneshot_architecture=best_oneshot,
        kl_kendall_tau=kl_tau,
        plots=drawn,
        report=os.path.join(output_dir, REPORT),
        joined=tuple(joined),
        standalone_split=split,
    )
    atomic_write_text(analysis.report, render_report(analysis, search_results, retrain_results))
    atomic_write_json(os.path.join(output_dir, ANALYSIS), analysis.to_json())
    log(f"analyze: wrote {analysis.report}")
    return analysis


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
        f"| Kendall tau | {_fmt(m.kendall_tau)} |",
        f"| Spearman rho | {_fmt(m.spearman_rho)} |",
        f"| pairwise accuracy | {_fmt(m.pairwise_accuracy)} |",
        f"| architectures scored with the one-shot model | {analysis.num_architectures_scored} |",
        f"| best architecture (stand-alone) | `{analysis.best_architecture or '-'}` |",
        f"| best architecture (one-shot) | `{analysis.best_oneshot_architecture or '-'}` |",
    ]
    if analysis.kl_kendall_tau is not None:
        lines.append(f"| Kendall tau, KL vs one-shot accuracy (§5) | {_fmt(analysis.kl_kendall_tau)} |")
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
            f"| architecture | one-shot acc. | stand-alone {short} acc. (mean ± std) | test acc. "
            "| seeds | params | multiply-adds |",
            "| --- | --- | --- | --- | --- | --- | --- |",
        ]
        for j in sorted(analysis.joined, key=lambda j: -j.oneshot_accuracy):
            s = j.standalone
            lines.append(
                f"| `{j.architecture}` | {j.oneshot_accuracy:.4f} | {s.accuracy:.4f} ± "
                f"{s.accuracy_std:.4f} | {_fmt(s.test_mean, 4)} | {len(s.seeds)} | "
                f"{s.params:,} | {s.flops:,} |"
            )
    return "\n".join(lines) + "\n"

