"""Analysis of a search: rank metrics, ground-truth metrics ("Deeper insights"), figures, a report."""

from tf_oneshot.analysis.ground_truth import (
    accuracy_then_loss,
    ground_truth_positions,
    ground_truth_rows,
    gt_tau,
    gt_tau_over_snapshots,
    noise_ceiling,
    pairwise_taus,
    s_tau,
    top_n_rank,
)
from tf_oneshot.analysis.plots import (
    plot_kl_vs_accuracy,
    plot_oneshot_histogram,
    plot_oneshot_vs_standalone,
    plot_search_progress,
)
from tf_oneshot.analysis.rank_metrics import (
    RankMetrics,
    bootstrap_ci,
    kendall_tau,
    mean_tau_ci,
    pairwise_accuracy,
    partial_kendall_tau,
    rank_metrics,
    spearman_rho,
)
from tf_oneshot.analysis.records import load_retrain_results, load_search_results
from tf_oneshot.analysis.report import Analysis, analyze, check_output_dir

__all__ = [
    "Analysis",
    "RankMetrics",
    "accuracy_then_loss",
    "analyze",
    "bootstrap_ci",
    "check_output_dir",
    "ground_truth_positions",
    "ground_truth_rows",
    "gt_tau",
    "gt_tau_over_snapshots",
    "kendall_tau",
    "load_retrain_results",
    "load_search_results",
    "mean_tau_ci",
    "noise_ceiling",
    "pairwise_accuracy",
    "pairwise_taus",
    "partial_kendall_tau",
    "plot_kl_vs_accuracy",
    "plot_oneshot_histogram",
    "plot_oneshot_vs_standalone",
    "plot_search_progress",
    "rank_metrics",
    "s_tau",
    "spearman_rho",
    "top_n_rank",
]
