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

from tf_oneshot.commands import flags

DEFAULT_OUTPUT_DIR = "demo_output"
# Demo stage sizes: flag -> DemoConfig field.
STAGE_FLAGS = {"num_random": "num_random", "num_evolution": "num_evolution", "num_retrain": "num_retrain",
               "retrain_steps": "retrain_steps", "retrain_select": "retrain_select",
               "population_size": "population_size", "num_parents": "num_parents", "mutation_prob": "mutation_prob",
               "bn_mode": "bn_mode", "recalibration_images": "recalibration_images", "rank_by": "rank_by"}
# Flags whose search defaults are not the demo's: only a value set on the command line counts.
_SEARCH_DEFAULTED = ("population_size", "num_parents", "mutation_prob", "rank_by")
FLAG_NAMES = ("output_dir", "overwrite", "graph_optimizer", *flags.TRAIN_FLAGS, *STAGE_FLAGS)


def demo_config(FLAGS):
    """The default `DemoConfig` with the flags the user set (a flagfile's included)."""
    from tf_oneshot import demo
    from tf_oneshot.search_spaces.space_config import for_space

    config = demo.DEFAULT_CONFIG
    train = config.train
    if FLAGS.space is not None:  # the same pipeline on another (or the user's own) space
        train = train.replace(space=for_space(train.space, FLAGS.space))
    given = flags.given(FLAGS, flags.TRAIN_FLAGS)
    if given:
        train = train.replace(**given)
    set_here = flags.present(FLAGS, _SEARCH_DEFAULTED)
    stages = {}
    for flag in STAGE_FLAGS:
        value = getattr(FLAGS, flag)
        if flag in _SEARCH_DEFAULTED and flag not in set_here:
            continue
        if value is not None:
            stages[STAGE_FLAGS[flag]] = value
    return dataclasses.replace(config, train=train, constraints=train.sampler.constraints, **stages)


def run(FLAGS) -> int:
    from tf_oneshot import demo
    from tf_oneshot.training.distribute import graph_optimizer
    from tf_oneshot.training.preemption import stopped_message

    output_dir = FLAGS.output_dir or DEFAULT_OUTPUT_DIR
    with graph_optimizer(FLAGS.graph_optimizer, few_functions=True):  # auto: off on CPUs for the demo
        summary = demo.run_demo(output_dir, demo_config(FLAGS), overwrite=FLAGS.overwrite)
    if summary.get("preempted"):
        return stopped_message("demo", f"stopped in its {summary['stage']} stage")
    print(f"\nwrote {output_dir}/summary.json, {output_dir}/report.md and the plots "
          f"({summary['total_seconds']:.0f}s in all)")
    return 0
