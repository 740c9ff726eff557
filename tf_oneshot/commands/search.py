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

from tf_oneshot.commands import flags
from tf_oneshot.errors import UserError

FLAG_NAMES = (
    "model_dir", "results", "algorithm", "num_architectures", "architectures", "architectures_file",
    "bn_mode", "recalibration_images", "kl", "kl_reference", "population_size", "num_parents", "mutation_prob",
    "archs_per_pass", "validation_examples", "space", "seed", "data_dir", "strategy", "tpu", "graph_optimizer",
    "finetune_steps", "finetune_top", "scorer", *flags.CONSTRAINT_FLAGS,
)
FINETUNE_TOP = 10


def _constraints(FLAGS):
    from tf_oneshot.search import Constraints

    return Constraints(**{name: getattr(FLAGS, name) for name in flags.CONSTRAINT_FLAGS})


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
    if FLAGS.space is not None and FLAGS.space != model_dir.config.space.spec:
        raise UserError(f"--space={FLAGS.space} differs from the model_dir's space "
                        f"{model_dir.config.space.spec}; drop --space.")
    architectures = flags.parse_architecture_strings(model_dir.space, given) if given else None
    seed = 0 if FLAGS.seed is None else FLAGS.seed
    # SIGTERM (preemption) from here on ends the search between two batches:
    # every finished line is written (a gs:// file is flushed) and exit is 143.
    with Preemption() as preemption:
        strategy = distribute.get_strategy(FLAGS.strategy, FLAGS.tpu, FLAGS.graph_optimizer)
        scorer, results = _proxy_scorer(FLAGS, model_dir, seed)
        summary = search.run(
            model_dir, FLAGS.algorithm, FLAGS.num_architectures, architectures=architectures,
            constraints=_constraints(FLAGS), results=results, seed=seed, bn_mode=FLAGS.bn_mode, kl=FLAGS.kl,
            kl_reference=FLAGS.kl_reference, archs_per_pass=FLAGS.archs_per_pass,
            recalibration_images=FLAGS.recalibration_images, validation_examples=FLAGS.validation_examples,
            data_dir=FLAGS.data_dir, strategy=strategy, scorer=scorer, stop=preemption, log=functools.partial(print, flush=True),
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


def _proxy_scorer(FLAGS, model_dir, seed: int):
    """(the training-free scorer of --scorer, its results path), or (None, --results) for the one-shot scorer.

    A proxy's lines have another identity than the one-shot search's, so they
    default to their own file, `<algorithm>_<scorer>.jsonl`.
    """
    if FLAGS.scorer == "oneshot":
        return None, FLAGS.results
    from tf_oneshot.search.scorer import make_scorer

    scorer = make_scorer(model_dir, FLAGS.scorer, seed=seed, data_dir=FLAGS.data_dir)
    name = "given" if FLAGS.architectures or FLAGS.architectures_file else FLAGS.algorithm
    return scorer, FLAGS.results or model_dir.file("search", f"{name}_{FLAGS.scorer}.jsonl")


def _check_flags(FLAGS) -> tuple[list[str], int | None]:
    """(the --architectures given, --finetune_top or None), after the checks that need no model_dir.

    A bad flag fails in a second rather than after loading a checkpoint; the
    algorithm, its options and --bn_mode are checked by `tf_oneshot.search.run`,
    before the checkpoint loads.
    """
    if not FLAGS.model_dir:
        raise UserError("--model_dir is required: the directory `tf-oneshot train` wrote.")
    given = flags.architecture_strings(FLAGS.architectures, FLAGS.architectures_file)
    finetune_top = _finetune_options(FLAGS)
    if FLAGS.scorer != "oneshot":
        used = [f"--{name}" for name in ("bn_mode", "recalibration_images", "archs_per_pass", "validation_examples",
                                          "finetune_steps") if getattr(FLAGS, name) is not None]
        if FLAGS.kl:
            used.append("--kl")
        if used:
            raise UserError(f"--scorer={FLAGS.scorer} is training-free; drop {', '.join(used)} (options of the "
                            "one-shot scorer).")
    if FLAGS.strategy == "multi_worker_mirrored":
        raise UserError(
            "--strategy=multi_worker_mirrored is for training; search on one host with --strategy=mirrored "
            "or --tpu, or run one KerasTuner worker per host (tf_oneshot.OneShotTuner)."
        )
    return given, finetune_top
