"""`tf-oneshot nas`: iterated one-shot NAS, training and searching in turn (NAO-WS / NAO-V2).

Each of --iterations rounds trains the supernet --steps_per_iteration steps on
architectures drawn from the candidate pool, scores the pool with the shared
weights, tells --algorithm and adds its --new_per_iteration (default
--pool_size) new candidates to the pool (Luo et al., NAO-V2, §4).
--train_on=newest trains each iteration on the newest candidates only (the
initial pool first), as NAO-V2's code does with 1000 initial and 300 new. NAO-V2's defaults: --sampler=proportional
(§4.2, Eq. 1) and --iteration_mode=independent (§4.3: the cosine cycle and
the optimizer restart each iteration, every candidate is scored again).
Table 5's ablation: halve --steps_per_iteration, --sampler=uniform, or
--iteration_mode=dependent. Killing the command and running it again with
the same flags resumes; SIGTERM stops it cleanly with exit code 143.
"""

from __future__ import annotations

from tf_oneshot.commands import flags
from tf_oneshot.errors import UserError

# Training flags of `tf-oneshot train`, less --train_steps (K x T here).
NAS_TRAIN_FLAGS = (
    "dataset", "data_dir", "seed", "batch_size", "ghost_batch_size", *flags.SPACE_FLAGS,
    "learning_rate", "lr_schedule", "momentum", "weight_decay", "steps_per_loop", "checkpoint_every",
    "log_every", "jit_compile", "skip_threshold", "mixed_precision",
)
FLAG_NAMES = (
    *NAS_TRAIN_FLAGS, "model_dir", "strategy", "tpu", "graph_optimizer", "iterations", "steps_per_iteration",
    "pool_size", "new_per_iteration", "train_on",
    "algorithm", "sampler", "iteration_mode", "bn_mode", "validation_examples", "archs_per_pass",
    *flags.CONSTRAINT_FLAGS,
)
NOT_APPLICABLE = {"train_steps": "does not apply to `tf-oneshot nas`: it trains --iterations x "
                                 "--steps_per_iteration steps"}


def run(FLAGS) -> int:
    from tf_oneshot.search import Constraints, nas
    from tf_oneshot.training import distribute, preemption
    from tf_oneshot.training.config import TrainConfig

    if not FLAGS.model_dir:
        raise UserError("--model_dir is required: the directory for checkpoints and the nas log.")
    if FLAGS.steps_per_iteration is None:
        raise UserError("--steps_per_iteration is required: T, the supernet steps per iteration (e.g. 200).")
    settings = nas.NasSettings(
        iterations=FLAGS.iterations, steps_per_iteration=FLAGS.steps_per_iteration, pool_size=FLAGS.pool_size,
        algorithm=FLAGS.algorithm, sampler=FLAGS.sampler or "proportional", iteration_mode=FLAGS.iteration_mode,
        # The pool is scored as NAO-WS does, with batch statistics of the
        # shared weights, unless --bn_mode asks for SPOS's recalibration.
        bn_mode=FLAGS.bn_mode or "batch", validation_examples=FLAGS.validation_examples,
        new_per_iteration=FLAGS.new_per_iteration, train_on=FLAGS.train_on,
    )
    config = TrainConfig(**flags.given(FLAGS, NAS_TRAIN_FLAGS))
    constraints = Constraints(**flags.given(FLAGS, flags.CONSTRAINT_FLAGS))
    if FLAGS.strategy == "multi_worker_mirrored":
        raise UserError("`tf-oneshot nas` scores on one host: use --strategy=mirrored or --tpu.")
    strategy = distribute.get_strategy(FLAGS.strategy, FLAGS.tpu, FLAGS.graph_optimizer)
    result = nas.run_nas(config, settings, FLAGS.model_dir, constraints=constraints, strategy=strategy,
                         archs_per_pass=FLAGS.archs_per_pass)
    if result["preempted"]:
        return preemption.stopped_message("nas", f"{result['iterations']} iteration(s) finished")
    print(f"done: {result['iterations']} iterations; best of the last pool:")
    for arch, accuracy in result["best"]:
        print(f"  {accuracy:.4f}  {arch}")
    return 0
