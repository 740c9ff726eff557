"""`tf-oneshot demo`: the whole pipeline on the embedded digits dataset, offline, in minutes.

SIGTERM stops it at the next safe point with exit code 143; the same command
then resumes the unfinished demo in --output_dir.
"""

import dataclasses

from tf_oneshot.commands import common_flags, pipeline_flags  # noqa: F401  (--output_dir, --overwrite)

DEFAULT_OUTPUT_DIR = "demo_output"
FLAG_NAMES = ("output_dir", "overwrite", "space")


def run(FLAGS) -> int:
    from tf_oneshot import demo
    from tf_oneshot.preemption import stopped_message

    output_dir = FLAGS.output_dir or DEFAULT_OUTPUT_DIR
    config = demo.DEFAULT_CONFIG
    if FLAGS.space is not None:  # the same pipeline on another (or the user's own) space
        config = dataclasses.replace(config, train=config.train.for_space(FLAGS.space))
    summary = demo.run_demo(output_dir, config, overwrite=FLAGS.overwrite)
    if summary.get("preempted"):
        return stopped_message("demo", f"stopped in its {summary['stage']} stage")
    print(f"\nwrote {output_dir}/summary.json, {output_dir}/report.md and the plots "
          f"({summary['total_seconds']:.0f}s in all)")
    return 0
