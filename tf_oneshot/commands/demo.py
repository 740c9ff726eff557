"""`tf-oneshot demo`: the whole pipeline on the embedded digits dataset, offline, in minutes."""

from tf_oneshot.commands import common_flags, pipeline_flags  # noqa: F401  (--output_dir, --overwrite)

DEFAULT_OUTPUT_DIR = "demo_output"


def run(FLAGS) -> int:
    from tf_oneshot.demo import DEMO_TRAIN, DemoConfig, run_demo

    output_dir = FLAGS.output_dir or DEFAULT_OUTPUT_DIR
    config = DemoConfig()
    if FLAGS.space is not None:  # the same pipeline on another (or the user's own) space
        config = DemoConfig(train=DEMO_TRAIN.for_space(FLAGS.space))
    summary = run_demo(output_dir, config, overwrite=FLAGS.overwrite)
    print(f"\nwrote {output_dir}/summary.json, {output_dir}/report.md and the plots "
          f"({summary['total_seconds']:.0f}s in all)")
    return 0

