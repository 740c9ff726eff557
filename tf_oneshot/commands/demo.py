"""`tf-oneshot demo`: the whole pipeline on the embedded digits dataset, offline, in minutes.

Without flags: Bender et al. 2018's pipeline on the cell space (flags/demo.flags).
`--flagfile=flags/spos_demo.flags` runs SPOS's instead: a single-path
supernet trained by uniform sampling, evolution under a FLOPs constraint,
the winners retrained. Any train flag (--space, --sampler, --train_steps,
...), the constraint flags, --bn_mode and the sizes of the stages below
change the default demo.

SIGTERM stops it at the next safe point with exit code 143; the same command
then resumes the unfinished demo in --output_dir.
"""

import dataclasses

from absl import flags

from tf_oneshot.commands import common_flags, pipeline_flags  # noqa: F401  (--output_dir, --overwrite)
from tf_oneshot.commands import search as search_command  # noqa: F401  (--bn_mode, --population_size, ...)
from tf_oneshot.commands import train as train_command

flags.DEFINE_integer("num_random", None, "demo: architectures scored by random search (default 200).")
flags.DEFINE_integer("num_evolution", None, "demo: architectures scored by evolution (default 100).")
flags.DEFINE_integer("num_retrain", None, "demo: architectures retrained from scratch (default 16).")
flags.DEFINE_integer("retrain_steps", None, "demo: steps of each stand-alone training (default 100).")
flags.DEFINE_string("retrain_select", None, "demo: stratified (Bender et al. Fig. 5, the default) or best "
                    "(SPOS §3.4: the best architectures searched, the winner first).")

DEFAULT_OUTPUT_DIR = "demo_output"
# Demo stage sizes: flag -> DemoConfig field.
STAGE_FLAGS = {"num_random": "num_random", "num_evolution": "num_evolution", "num_retrain": "num_retrain",
               "retrain_steps": "retrain_steps", "retrain_select": "retrain_select",
               "population_size": "population_size", "num_parents": "num_parents", "mutation_prob": "mutation_prob",
               "bn_mode": "bn_mode", "recalibration_images": "recalibration_images"}
# Flags whose search defaults are not the demo's: only a value set on the command line counts.
_SEARCH_DEFAULTED = ("population_size", "num_parents", "mutation_prob")
FLAG_NAMES = ("output_dir", "overwrite", *train_command.TRAIN_FLAGS, *STAGE_FLAGS)


def demo_config(FLAGS):
    """The default `DemoConfig` with the flags the user set (a flagfile's included)."""
    from tf_oneshot import demo

    config = demo.DEFAULT_CONFIG
    train = config.train
    if FLAGS.space is not None:  # the same pipeline on another (or the user's own) space
        train = train.for_space(FLAGS.space)
    given = common_flags.given(FLAGS, train_command.TRAIN_FLAGS)
    if given:
        train = train.replace(**given)
    stages = {}
    for flag in STAGE_FLAGS:
        value = getattr(FLAGS, flag)
        if flag in _SEARCH_DEFAULTED and not flags.FLAGS[flag].present:
            continue
        if value is not None:
            stages[STAGE_FLAGS[flag]] = value
    return dataclasses.replace(config, train=train, constraints=train.constraints(), **stages)


def run(FLAGS) -> int:
    from tf_oneshot import demo
    from tf_oneshot.training.preemption import stopped_message

    output_dir = FLAGS.output_dir or DEFAULT_OUTPUT_DIR
    summary = demo.run_demo(output_dir, demo_config(FLAGS), overwrite=FLAGS.overwrite)
    if summary.get("preempted"):
        return stopped_message("demo", f"stopped in its {summary['stage']} stage")
    print(f"\nwrote {output_dir}/summary.json, {output_dir}/report.md and the plots "
          f"({summary['total_seconds']:.0f}s in all)")
    return 0
