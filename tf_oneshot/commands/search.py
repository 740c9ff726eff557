"""`tf-oneshot search`: scores architectures with a trained one-shot model.

Random search (Bender et al. 2018, §4.1), evolution (SPOS, Algorithm 1) or
NAO (Luo et al. 2018, §3: `tf_oneshot.search.nao`, a Keras network trained between
generations), under optional constraints on params and multiply-adds, or
exactly the architectures of --architectures / --architectures_file (algorithm "given",
one per pass as the KerasTuner trial scores it). Each scored architecture
appends one JSON line to --results; killing the command and running it again
with the same flags carries on to --num_architectures without scoring any
architecture twice. SIGTERM stops it between batches with exit code 143.
--finetune_steps=n --finetune_top=k then fine-tunes the k best candidates
alone from the shared weights for n mini-batches ("Deeper insights" §3.3,
`tf_oneshot.training.finetune`) and re-ranks them; each fine-tuned score goes beside
its one-shot score to RESULTS.finetune.jsonl (the results are never
rewritten), and a rerun fine-tunes only the candidates not found there.
"""

from __future__ import annotations

import functools

from absl import flags

from tf_oneshot.commands import common_flags  # noqa: F401  (defines --model_dir, --results, --seed ...)
from tf_oneshot.errors import UserError

flags.DEFINE_string("algorithm", "random", "random (Bender et al. 2018, §4.1), evolution (SPOS, Algorithm 1) or "
                    "nao (Luo et al. 2018, §3); not with --architectures.")
flags.DEFINE_integer("num_architectures", 1000, "Distinct architectures to score in all (about 20,000 in §4.1); "
                     "--architectures scores exactly those instead.")
flags.DEFINE_string("bn_mode", None, "batch: batch statistics on the fly (Bender et al. §3.2); recalibrate: each "
                    "candidate's statistics recomputed on training images (SPOS §3.4). Default: the space's "
                    "(recalibrate for single-path spaces).")
flags.DEFINE_integer("recalibration_images", None, "Training images per candidate for --bn_mode=recalibrate "
                     "(SPOS §3.4: 20,000 on ImageNet; default: the same share of any training split, at least 512).")
flags.DEFINE_bool("kl", False, "Also store the symmetrized KL divergence to the all-on network (§5).")
flags.DEFINE_string("kl_reference", "all_on", "--kl against: all_on (exact, the default) or sampled (§5 as "
                    "published: references drawn by path dropout at r = 1e-8).")
flags.DEFINE_integer("population_size", 50, "Evolution: population P (SPOS: 50). NAO: the random initial pool "
                     "and the new architectures per generation (NAO-V2's code: 1000 and 300).")
flags.DEFINE_integer("num_parents", 10, "Evolution: top-k parents (SPOS: 10). NAO: top-k architectures moved "
                     "along the predictor's gradient (NAO's code: 100).")
flags.DEFINE_float("mutation_prob", 0.1, "Evolution: per-choice mutation probability (SPOS: 0.1).")
flags.DEFINE_integer("archs_per_pass", None, "Architectures scored per forward pass, one per ghost batch "
                     "(default: timed automatically; 1 with --architectures, as the KerasTuner trial scores).")
flags.DEFINE_integer("validation_examples", None, "Score on the first this many validation examples (default: all).")
flags.DEFINE_integer("finetune_steps", None, "Then re-rank the best --finetune_top candidates after fine-tuning each "
                     "alone from the shared weights for this many mini-batches (\"Deeper insights\" §3.3); the "
                     "scores go beside the results, to RESULTS.finetune.jsonl.")
flags.DEFINE_integer("finetune_top", None, "With --finetune_steps: how many of the best candidates to fine-tune "
                     "(default: 10).")

FLAG_NAMES = (
    "model_dir", "results", "algorithm", "num_architectures", "architectures", "architectures_file",
    "bn_mode", "recalibration_images", "kl", "kl_reference", "population_size", "num_parents", "mutation_prob",
    "archs_per_pass", "validation_examples", "space", "seed", "data_dir", "strategy", "tpu",
    "finetune_steps", "finetune_top", *common_flags.CONSTRAINT_FLAGS,
)
FINETUNE_TOP = 10


def _constraints(FLAGS):
    from tf_oneshot.search import Constraints

    return Constraints(**{name: getattr(FLAGS, name) for name in common_flags.CONSTRAINT_FLAGS})


def _finetune_options(FLAGS) -> int | None:
    """--finetune_top checked (None without --finetune_steps)."""
    from tf_oneshot.training import finetune

    if FLAGS.finetune_steps is None:
        if FLAGS.finetune_top is not None:
            raise UserError("--finetune_top needs --finetune_steps: the mini-batches each candidate is fine-tuned.")
        return None
    finetune.check_steps(FLAGS.finetune_steps)
    return finetune.check_top(FINETUNE_TOP if FLAGS.finetune_top is None else FLAGS.finetune_top)


def _rerank(FLAGS, model_dir, summary: dict, top: int, seed: int, strategy, stop) -> bool:
    """Fine-tunes the best `top` results and prints the re-ranked list; True if `stop` ended it."""
    from tf_oneshot.training import finetune

    tuner = finetune.FineTuner(model_dir, FLAGS.finetune_steps, seed=seed, strategy=strategy, stop=stop,
                               data_dir=FLAGS.data_dir)
    path = finetune.finetune_results_path(summary["results"])
    records, stopped = finetune.rerank(summary["records"], tuner, path, top, stop=stop)
    if not stopped:
        print(f"re-ranked after {FLAGS.finetune_steps} fine-tuning steps ({path}): fine-tuned, one-shot accuracy:")
        for r in records:
            print(f"  {r['finetuned_accuracy']:.4f}  {r['oneshot_accuracy']:.4f}  {r['architecture']}")
    return stopped


def run(FLAGS) -> int:
    from tf_oneshot import search
    from tf_oneshot.training import distribute
    from tf_oneshot.training.model_dir import ModelDir
    from tf_oneshot.training.preemption import Preemption, stopped_message

    given, finetune_top = _check_flags(FLAGS)
    model_dir = ModelDir.open(FLAGS.model_dir)
    if FLAGS.space is not None and FLAGS.space != model_dir.config.space:
        raise UserError(f"--space={FLAGS.space} differs from the model_dir's space {model_dir.config.space}; "
                        "drop --space.")
    architectures = common_flags.parse_architecture_strings(model_dir.space, given) if given else None
    seed = 0 if FLAGS.seed is None else FLAGS.seed
    # SIGTERM (preemption) from here on ends the search between two batches:
    # every finished line is written (a gs:// file is flushed) and exit is 143.
    with Preemption() as preemption:
        strategy = distribute.get_strategy(FLAGS.strategy, FLAGS.tpu)
        summary = search.run(
            model_dir, FLAGS.algorithm, FLAGS.num_architectures, architectures=architectures,
            constraints=_constraints(FLAGS), results=FLAGS.results, seed=seed, bn_mode=FLAGS.bn_mode, kl=FLAGS.kl,
            kl_reference=FLAGS.kl_reference, archs_per_pass=FLAGS.archs_per_pass,
            recalibration_images=FLAGS.recalibration_images, validation_examples=FLAGS.validation_examples,
            data_dir=FLAGS.data_dir, strategy=strategy, stop=preemption, log=functools.partial(print, flush=True),
            population_size=FLAGS.population_size, num_parents=FLAGS.num_parents, mutation_prob=FLAGS.mutation_prob,
        )
        if summary["stopped"]:
            return stopped_message("search")
        print(f"done: {summary['total']} architectures ({summary['scored']} scored now, "
              f"{summary['cached']} from {summary['results']}); best:")
        for arch, accuracy in summary["best"]:
            print(f"  {accuracy:.4f}  {arch}")
        if finetune_top is not None and _rerank(FLAGS, model_dir, summary, finetune_top, seed, strategy, preemption):
            return stopped_message("search", "fine-tuning")
    return 0


def _check_flags(FLAGS) -> tuple[list[str], int | None]:
    """(the --architectures given, --finetune_top or None), after the checks that need no model_dir.

    A bad flag fails in a second rather than after loading a checkpoint; the
    algorithm, its options and --bn_mode are checked by `tf_oneshot.search.run`,
    before the checkpoint loads.
    """
    if not FLAGS.model_dir:
        raise UserError("--model_dir is required: the directory `tf-oneshot train` wrote.")
    given = common_flags.architecture_strings(FLAGS.architectures, FLAGS.architectures_file)
    finetune_top = _finetune_options(FLAGS)
    if FLAGS.strategy == "multi_worker_mirrored":
        raise UserError(
            "--strategy=multi_worker_mirrored is for training; search on one host with --strategy=mirrored "
            "or --tpu, or run one KerasTuner worker per host (tf_oneshot.OneShotTuner)."
        )
    return given, finetune_top
