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

from typing import Any

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


def _rerank(FLAGS, results, top: int, seed: int, strategy, stop) -> bool:
    """Fine-tunes the best `top` results and prints the re-ranked list; True if `stop` ended it."""
    from tf_oneshot.training import finetune

    tuner = finetune.FineTuner(FLAGS.model_dir, FLAGS.finetune_steps, seed=seed, strategy=strategy, stop=stop,
                               data_dir=FLAGS.data_dir)
    path = finetune.finetune_results_path(results.path)
    records, stopped = finetune.rerank(list(results.load().values()), tuner, path, top, stop=stop)
    if not stopped:
        print(f"re-ranked after {FLAGS.finetune_steps} fine-tuning steps ({path}): fine-tuned, one-shot accuracy:")
        for r in records:
            print(f"  {r['finetuned_accuracy']:.4f}  {r['oneshot_accuracy']:.4f}  {r['architecture']}")
    return stopped


def run(FLAGS) -> int:
    from tf_oneshot.search import ResultsFile, run_search
    from tf_oneshot.search.scorer import OneShotScorer
    from tf_oneshot.training.preemption import Preemption, stopped_message

    given, finetune_top = _check_flags(FLAGS)
    from tf_oneshot.training.model_dir import ModelDir

    model_dir = ModelDir.open(FLAGS.model_dir)
    if FLAGS.space is not None and FLAGS.space != model_dir.config.space:
        raise UserError(f"--space={FLAGS.space} differs from the model_dir's space {model_dir.config.space}; "
                        "drop --space.")
    space = model_dir.space
    step = model_dir.checkpoint_step()
    constraints = _constraints(FLAGS)
    bn_mode = FLAGS.bn_mode or space.default_bn_mode
    seed = 0 if FLAGS.seed is None else FLAGS.seed
    algorithm, options, archs_per_pass = _algorithm(FLAGS, space, constraints, seed, given)
    options.update(kl=FLAGS.kl, validation_examples=FLAGS.validation_examples)
    if FLAGS.kl:
        options["kl_reference"] = FLAGS.kl_reference
    recalibration_images = FLAGS.recalibration_images
    if bn_mode == "recalibrate":
        from tf_oneshot.search.scorer import recalibration_images_for

        recalibration_images = recalibration_images_for(model_dir, recalibration_images, FLAGS.data_dir)
        options["recalibration_images"] = recalibration_images
    path = FLAGS.results or model_dir.file("search", f"{algorithm.name}.jsonl")
    results = ResultsFile(path, space, {
        "space": space.to_config(), "checkpoint_step": step, "bn_mode": bn_mode,
        "algorithm": algorithm.name, "seed": seed, "constraints": constraints.to_json(), "options": options,
    })
    results.load()  # a malformed or foreign file fails here, before the model loads

    from tf_oneshot.training import distribute

    # SIGTERM (preemption) from here on ends the search between two batches:
    # every finished line is written (a gs:// file is flushed) and exit is 143.
    with Preemption() as preemption:
        strategy = distribute.get_strategy(FLAGS.strategy, FLAGS.tpu)
        scorer = OneShotScorer.from_model_dir(
            FLAGS.model_dir, bn_mode=bn_mode, kl=FLAGS.kl, kl_reference=FLAGS.kl_reference,
            archs_per_pass=archs_per_pass,
            recalibration_images=recalibration_images, validation_examples=FLAGS.validation_examples,
            data_dir=FLAGS.data_dir, seed=seed, strategy=strategy,
        )
        if scorer.step != step:
            raise UserError(f"{FLAGS.model_dir} gained a checkpoint while starting; run again.")
        what = (f"{algorithm.num_architectures} given architecture(s)" if given
                else f"{FLAGS.algorithm} search over {space.name}")
        print(
            f"{what} (checkpoint step {step}), bn_mode={bn_mode}"
            f"{f' on {scorer.recalibration_count} training images' if bn_mode == 'recalibrate' else ''}, "
            f"constraints: {constraints.describe()}; {scorer.archs_per_pass} architecture(s) per pass on each of "
            f"{scorer.replicas} replica(s) ({distribute.describe(strategy)}), {scorer.num_examples} validation "
            f"images; results: {path}", flush=True,
        )
        summary = run_search(algorithm, scorer.score, results, batch_size=scorer.archs_per_call, stop=preemption)
        if summary["stopped"]:
            return stopped_message("search")
        print(f"done: {summary['total']} architectures ({summary['scored']} scored now, "
              f"{summary['cached']} from {path}); best:")
        for arch, accuracy in summary["best"]:
            print(f"  {accuracy:.4f}  {arch}")
        if finetune_top is not None and _rerank(FLAGS, results, finetune_top, seed, strategy, preemption):
            return stopped_message("search", "fine-tuning")
    return 0


def _check_flags(FLAGS) -> tuple[list[str], int | None]:
    """(the --architectures given, --finetune_top or None), after every check that needs no model.

    A bad flag fails in a second rather than after loading a checkpoint.
    """
    from tf_oneshot.search import ALGORITHMS
    from tf_oneshot.search.bn_modes import check_bn_mode

    if not FLAGS.model_dir:
        raise UserError("--model_dir is required: the directory `tf-oneshot train` wrote.")
    given = common_flags.architecture_strings(FLAGS.architectures, FLAGS.architectures_file)
    if FLAGS.algorithm not in ALGORITHMS:
        raise UserError(f"--algorithm={FLAGS.algorithm} is unknown; choose one of {', '.join(ALGORITHMS)}.")
    if given and FLAGS.algorithm != "random":
        raise UserError(f"--algorithm={FLAGS.algorithm} and --architectures exclude one another; "
                        "--architectures scores exactly the architectures given.")
    if FLAGS.bn_mode is not None:
        check_bn_mode(FLAGS.bn_mode)
    finetune_top = _finetune_options(FLAGS)
    if FLAGS.num_architectures < 1:
        raise UserError(f"--num_architectures={FLAGS.num_architectures} is invalid; expected a positive integer.")
    if FLAGS.strategy == "multi_worker_mirrored":
        raise UserError(
            "--strategy=multi_worker_mirrored is for training; search on one host with --strategy=mirrored "
            "or --tpu, or run one KerasTuner worker per host (tf_oneshot.OneShotTuner)."
        )
    return given, finetune_top


def _algorithm(FLAGS, space, constraints, seed: int, given: list[str]) -> tuple[Any, dict[str, Any], int | None]:
    """(the search algorithm, its options for the results lines, architectures per pass)."""
    from tf_oneshot.search import GivenArchitectures, make_algorithm

    archs_per_pass = FLAGS.archs_per_pass
    if given:
        if constraints.active:
            raise UserError("--min/max_params, _flops, _bitops and _latency_ms do not apply with --architectures: "
                            "the architectures given are scored as they are.")
        algorithm = GivenArchitectures(space, common_flags.parse_architecture_strings(space, given))
        if archs_per_pass is None:
            archs_per_pass = 1  # as OneShotTuner scores a trial: the same number for the same architecture
    else:
        algorithm = make_algorithm(FLAGS.algorithm, space, FLAGS.num_architectures, constraints, seed,
                                   population_size=FLAGS.population_size, num_parents=FLAGS.num_parents,
                                   mutation_prob=FLAGS.mutation_prob)
    return algorithm, dict(algorithm.options), archs_per_pass
