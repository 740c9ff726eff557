"""`tf-oneshot analyze`: rank correlations, plots and a report from search and retrain results."""

from tf_oneshot.analysis import analyze
from tf_oneshot.errors import UserError

FLAG_NAMES = ("search_results", "retrain_results", "output_dir", "overwrite", "rank_by")


def run(FLAGS) -> int:
    if not FLAGS.output_dir:
        raise UserError("--output_dir is required: the directory for report.md and the plots.")
    result = analyze(
        FLAGS.search_results, FLAGS.retrain_results, FLAGS.output_dir, overwrite=FLAGS.overwrite,
        rank_by=FLAGS.rank_by,
    )
    print(f"report: {result.report}")
    return 0
