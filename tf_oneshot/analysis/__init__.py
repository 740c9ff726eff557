"""Analysis of a search: rank metrics, the paper's figures, a Markdown report."""

from tf_oneshot.analysis.plots import (
    plot_kl_vs_accuracy,
    plot_oneshot_histogram,
    plot_oneshot_vs_standalone,
    plot_search_progress,
)
from tf_oneshot.analysis.rank_metrics import (
    RankMetrics,
    kendall_tau,
    pairwise_accuracy,
    rank_metrics,
    spearman_rho,
)
from tf_oneshot.analysis.records import load_retrain_results, load_search_results
from tf_oneshot.analysis.report import Analysis, analyze, check_output_dir

__all__ = [
    "Analysis",
    "RankMetrics",
    "analyze",
    "check_output_dir",
    "kendall_tau",
    "load_retrain_results",
    "load_search_results",
    "pairwise_accuracy",
    "plot_kl_vs_accuracy",
    "plot_oneshot_histogram",
    "plot_oneshot_vs_standalone",
    "plot_search_progress",
    "rank_metrics",
    "spearman_rho",
]
