"""One way to run a search: `tf_oneshot.search(model_dir, algorithm=..., ...)`.

Bender et al. 2018, §3.3-3.4: score candidate architectures with the shared
weights of a trained one-shot model, here proposed by random search (§4.1),
SPOS's evolution (Algorithm 1, §3.4), NAO (Luo et al. 2018, §3) or a given
list. `run` opens the run (`ModelDir`), builds the algorithm (`make_algorithm`),
the scorer, the results file and the identity its lines carry, and drives the
algorithm to its budget (`driver.run_search`). `tf-oneshot search` and the
demo call it; they no longer assemble a search themselves.

Every check that needs no model (the algorithm, its options, the batch-norm
mode, a foreign or malformed results file) is made before the checkpoint
loads, so bad input fails in seconds.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from typing import TYPE_CHECKING, Any

from tf_oneshot.errors import UserError
from tf_oneshot.search.algorithms import make_algorithm
from tf_oneshot.search.base import SearchAlgorithm
from tf_oneshot.search.given import GivenArchitectures
from tf_oneshot.search_spaces.constraints import Constraints

if TYPE_CHECKING:  # import TensorFlow
    from tf_oneshot.search.results import ResultsFile
    from tf_oneshot.search.scorer import OneShotScorer
    from tf_oneshot.training.model_dir import ModelDir


def run(
    model_dir: str | ModelDir,
    algorithm: str = "random",
    num_architectures: int = 1000,
    *,
    architectures: Sequence[Hashable | str] | None = None,
    constraints: Constraints | None = None,
    results: str | None = None,
    seed: int = 0,
    bn_mode: str | None = None,
    kl: bool = False,
    kl_reference: str = "all_on",
    archs_per_pass: int | None = None,
    recalibration_images: int | None = None,
    validation_examples: int | None = None,
    data_dir: str | None = None,
    strategy: Any = None,
    scorer: OneShotScorer | None = None,
    stop: Callable[[], bool] | None = None,
    log: Callable[[str], None] = print,
    progress_every: float = 10.0,
    **options: Any,
) -> dict[str, Any]:
    """Runs (or resumes) one search on a trained one-shot model; returns the driver's summary.

    Args:
        model_dir: the trained one-shot model_dir (a path or a `ModelDir`).
        algorithm: "random", "evolution" or "nao" (`ALGORITHMS`).
        num_architectures: distinct architectures to score in all.
        architectures: score exactly these instead, in order (algorithm
            "given"; `algorithm` stays "random", no constraints).
        constraints: bounds every proposal meets (SPOS §3.4).
        results: the results file (default: `<model_dir>/search/<algorithm>.jsonl`), a cache.
        seed: seeds the algorithm and the scorer's image draws.
        bn_mode, kl, kl_reference, archs_per_pass, recalibration_images,
            validation_examples, data_dir, strategy: how architectures are
            scored, as the flags of `tf-oneshot search` of those names say
            (`OneShotScorer.from_model_dir`); `bn_mode` defaults to the
            space's, `archs_per_pass` to 1 with `architectures`.
        scorer: a scorer built on `model_dir`, shared between searches (the
            demo's); the scoring arguments are then its own.
        stop: polled between batches; True ends the search (SIGTERM, Ctrl-C).
        log, progress_every: where progress lines go, and seconds between them.
        **options: the algorithm's options (`make_algorithm`:
            population_size, num_parents, mutation_prob).

    Returns:
        `run_search`'s summary ("scored", "cached", "total", "best",
        "stopped", "records") and "results", the results file's path.

    Raises:
        UserError: a missing or foreign model_dir, a bad algorithm, option,
            bn_mode or architecture, or a results file of another search.
    """
    from tf_oneshot.search.driver import run_search
    from tf_oneshot.training.model_dir import ModelDir

    model_dir = ModelDir.open(model_dir)
    constraints = constraints or Constraints()
    search = _algorithm(model_dir.space, algorithm, num_architectures, architectures, constraints, seed, options)
    scoring = dict(bn_mode=bn_mode or model_dir.space.default_bn_mode, kl=kl, kl_reference=kl_reference,
                   recalibration_images=recalibration_images, validation_examples=validation_examples,
                   data_dir=data_dir)
    file = _results_file(model_dir, search, results, seed, constraints, scorer, scoring)
    if scorer is None:
        from tf_oneshot.search.scorer import OneShotScorer

        if architectures is not None and archs_per_pass is None:
            archs_per_pass = 1  # as OneShotTuner scores a trial: the same number for the same architecture
        scorer = OneShotScorer.from_model_dir(model_dir, archs_per_pass=archs_per_pass, seed=seed,
                                              strategy=strategy, **scoring)
    if scorer.step != file.identity["checkpoint_step"]:
        raise UserError(f"{model_dir.path} gained a checkpoint while starting; run again.")
    log(_describe(search, model_dir.space, constraints, scorer, file.path, given=architectures is not None))
    summary = run_search(search, scorer.score, file, batch_size=scorer.archs_per_call, log=log,
                         progress_every=progress_every, stop=stop)
    if summary["scored"]:  # a rerun that scores nothing writes no new events file
        write_search_summaries(model_dir.events(f"search_{search.name}"),
                               [float(r["oneshot_accuracy"]) for r in file.records()])
    return {**summary, "results": file.path}


def write_search_summaries(events_dir: str, scores: Sequence[float]) -> None:
    """TensorBoard view of a search (Bender et al. 2018, §4.1's score distribution).

    Step i is the i-th line of the results file: `search/score` (its one-shot
    accuracy), `search/best_so_far`, and at the last step the histogram
    `search/scores` of every score the file holds.
    """
    import tensorflow as tf

    if not scores:
        return
    writer = tf.summary.create_file_writer(events_dir)
    best = float("-inf")
    with writer.as_default():
        for step, score in enumerate(scores):
            best = max(best, score)
            tf.summary.scalar("search/score", score, step=step)
            tf.summary.scalar("search/best_so_far", best, step=step)
        tf.summary.histogram("search/scores", list(scores), step=len(scores) - 1)
    writer.close()


def _algorithm(space: Any, name: str, num_architectures: int, architectures: Sequence[Hashable | str] | None,
               constraints: Constraints, seed: int, options: dict[str, Any]) -> SearchAlgorithm:
    """`make_algorithm`'s algorithm, or `GivenArchitectures` of `architectures`."""
    if architectures is None:
        return make_algorithm(name, space, num_architectures, constraints, seed, **options)
    if name != "random":
        raise UserError(f"--algorithm={name} and --architectures exclude one another; "
                        "--architectures scores exactly the architectures given.")
    if constraints.active:
        raise UserError("--min/max_params, _flops, _bitops and _latency_ms do not apply with --architectures: "
                        "the architectures given are scored as they are.")
    parsed = [space.parse(a) if isinstance(a, str) else space.validate(a) for a in architectures]
    if not parsed:
        raise UserError("--architectures lists no architecture; give at least one.")
    return GivenArchitectures(space, parsed)


def _results_file(model_dir: ModelDir, search: SearchAlgorithm, path: str | None, seed: int,
                  constraints: Constraints, scorer: OneShotScorer | None, scoring: dict[str, Any]) -> ResultsFile:
    """The results file of this search, its identity set and its lines checked (before any model loads).

    The scoring options are `scorer`'s own, or those of the scorer `scoring`
    will build (`scoring_options`).
    """
    from tf_oneshot.search.results import ResultsFile
    from tf_oneshot.search.scorer import scoring_options

    if scorer is None:
        bn_mode, options = scoring["bn_mode"], scoring_options(model_dir, **scoring)  # checks bn_mode
    elif scorer.options is None:
        raise ValueError("run(scorer=...) takes a scorer built by OneShotScorer.from_model_dir.")
    else:
        bn_mode, options = scorer.bn_mode, scorer.options
    space = model_dir.space
    file = ResultsFile(path or model_dir.file("search", f"{search.name}.jsonl"), space, {
        "space": space.to_config(), "checkpoint_step": model_dir.checkpoint_step(), "bn_mode": bn_mode,
        "algorithm": search.name, "seed": seed, "constraints": constraints.to_json(),
        "options": {**search.options, **options},
    })
    file.load()  # a malformed or foreign file fails here
    return file


def _describe(search: SearchAlgorithm, space: Any, constraints: Constraints, scorer: OneShotScorer, path: str,
              given: bool) -> str:
    """The line that starts a search: what is searched, how it is scored, where the lines go."""
    from tf_oneshot.training import distribute

    what = (f"{search.num_architectures} given architecture(s)" if given
            else f"{search.name} search over {space.name}")
    recalibrated = f" on {scorer.recalibration_count} training images" if scorer.bn_mode == "recalibrate" else ""
    return (f"{what} (checkpoint step {scorer.step}), bn_mode={scorer.bn_mode}{recalibrated}, constraints: "
            f"{constraints.describe()}; {scorer.archs_per_pass} architecture(s) per pass on each of "
            f"{scorer.replicas} replica(s) ({distribute.describe(scorer.strategy)}), {scorer.num_examples} "
            f"validation images; results: {path}")
