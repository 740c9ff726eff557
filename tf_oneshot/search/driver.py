"""Runs a search algorithm against a scoring function, recording every score.

The loop asks the algorithm for a batch of architectures (one per ghost batch
of the scorer), tells it cached scores from the results file at once, scores
the rest in one call, appends one line per architecture, and tells it those
scores. It knows no TensorFlow: `score_fn` is any callable from a list of
architectures to a list of dicts with at least `oneshot_accuracy` and `loss`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable, Sequence
from typing import TYPE_CHECKING, Any

from tf_oneshot.search.base import SearchAlgorithm

if TYPE_CHECKING:  # the results file imports TensorFlow (tf.io.gfile)
    from tf_oneshot.search.results import ResultsFile

ScoreFn = Callable[[Sequence[Hashable]], list[dict[str, float]]]


class Progress:
    """One line per report: done/total, architectures per second, ETA, best so far."""

    def __init__(self, total: int, log: Callable[[str], None] = print, every_seconds: float = 10.0):
        self.total = total
        self.log = log
        self.every = every_seconds
        self.start = time.perf_counter()
        self.last = -float("inf")
        self.scored = 0  # scored in this process (the rate ignores cache hits)
        self.shown: int | None = None  # `done` of the last line logged

    def update(self, done: int, scored_now: int, best: str, force: bool = False) -> None:
        """Logs a line every `every_seconds`; `force` logs one unless this count's line was the last (issue 19)."""
        self.scored += scored_now
        now = time.perf_counter()
        if (not force and now - self.last < self.every) or (force and done == self.shown):
            return
        self.last, self.shown = now, done
        elapsed = max(now - self.start, 1e-9)
        rate = self.scored / elapsed
        left = self.total - done
        eta = _duration(left / rate) if rate > 0 else "?"
        self.log(
            f"{done}/{self.total} architectures ({100 * done / max(self.total, 1):.1f}%), "
            f"{rate:.2f} arch/s, ETA {eta}; best {best}"
        )


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s"


def run_search(
    algorithm: SearchAlgorithm,
    score_fn: ScoreFn,
    results: ResultsFile,
    batch_size: int = 1,
    count: Callable[[Hashable], Any] | None = None,
    log: Callable[[str], None] = print,
    progress_every: float = 10.0,
    stop: Callable[[], bool] | None = None,
) -> dict[str, Any]:
    """Drives `algorithm` to its budget, resuming from `results`.

    Args:
        algorithm: any `SearchAlgorithm` (ask/tell).
        score_fn: scores a list of architectures (at most `batch_size`).
        results: the results file; its finished lines are a cache.
        batch_size: architectures per `score_fn` call (the scorer's ghosts).
        count: architecture -> Cost (default `results.space.count`).
        log: receives progress lines.
        progress_every: seconds between progress lines.
        stop: polled before each batch; True ends the search there, every
            finished line written (SIGTERM: `tf_oneshot.training.preemption`).

    Returns:
        {"scored": newly scored, "cached": reused lines, "best": [(arch
        string, accuracy), ...] (top 5), "total": lines for this search,
        "stopped": whether `stop` ended it before the budget, "records":
        every line of the file, the first per architecture, in file order}.
    """
    count = count or results.space.count
    cache = results.load()
    progress = Progress(algorithm.num_architectures, log, progress_every)
    if cache:
        log(f"resuming from {results.path}: {len(cache)} architectures already scored")
    try:
        scored, cached, stopped = _drive(algorithm, score_fn, results, cache, count, batch_size, progress,
                                         stop or (lambda: False))
    finally:
        results.flush()  # a remote results file writes in batches
    done = scored + cached
    best = algorithm.best(5)
    best_text = f"{best[0][1]:.4f} ({best[0][0]})" if best else "-"
    progress.update(done, 0, best_text, force=True)
    return {
        "scored": scored,
        "cached": cached,
        "total": done,
        "best": [(str(a), f) for a, f in best],
        "stopped": stopped,
        "records": list(cache.values()),
    }


def _drive(algorithm, score_fn, results, cache, count, batch_size, progress, stop) -> tuple[int, int, bool]:
    """The ask / score / append / tell loop of `run_search`; returns (scored, cached, stopped)."""
    scored = cached = 0
    while True:
        if stop():
            return scored, cached, True
        archs = algorithm.ask(batch_size)
        if not archs:
            break
        fresh = []
        for arch in archs:
            if arch in cache:
                algorithm.tell(arch, float(cache[arch]["oneshot_accuracy"]))
                cached += 1
            else:
                fresh.append(arch)
        if fresh:
            tic = time.perf_counter()
            scores = score_fn(fresh)
            seconds = (time.perf_counter() - tic) / len(fresh)
            if len(scores) != len(fresh):
                raise RuntimeError(f"score_fn returned {len(scores)} scores for {len(fresh)} architectures.")
            for arch, score in zip(fresh, scores):
                cost = count(arch)
                record = {
                    "architecture": str(arch),
                    "oneshot_accuracy": float(score["oneshot_accuracy"]),
                    "loss": float(score["loss"]),
                    "params": int(cost.params),
                    "flops": int(cost.flops),
                    "seconds": round(seconds, 6),
                    "generation": algorithm.generation_of(arch),
                }
                for key, value in score.items():
                    record.setdefault(key, float(value))
                cache[arch] = results.append(record)
                algorithm.tell(arch, record["oneshot_accuracy"])
            scored += len(fresh)
        best = algorithm.best(1)
        best_text = f"{best[0][1]:.4f} ({best[0][0]})" if best else "-"
        progress.update(scored + cached, len(fresh), best_text)
    return scored, cached, False
