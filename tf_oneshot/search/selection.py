"""Choosing architectures to retrain from scored ones (Bender et al. 2018, §4.1).

- `stratified_sample`: "divided the architectures into buckets based on their
  accuracies, and sampled four architectures from each bucket" (Figure 5), so
  the rank correlation is measured across the whole accuracy range.
- `oneshot_top`: the best k by one-shot accuracy; with `pool`, "from the top
  100 architectures, we took a stratified sample of 10" ("One-Shot Top").
- `oneshot_small`: "the smallest architectures whose one-shot model accuracies
  exceeded a certain threshold (roughly in the 90th percentile)"
  ("One-Shot Small").

Records are dicts as in a results file (`oneshot_accuracy`, `params`, ...).
Ties are broken by the architecture string, so selections are deterministic.
`select_candidates` applies a rule by name to search results and returns
what `tf_oneshot.training.retrain` trains.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from tf_oneshot.errors import UserError
from tf_oneshot.search_spaces import SearchSpace

if TYPE_CHECKING:
    from tf_oneshot.training.retrain import Candidate

KEY = "oneshot_accuracy"


def _sorted_best_first(records: Sequence[dict], key: str = KEY) -> list[dict]:
    usable = [r for r in records if r.get(key) is not None]
    return sorted(usable, key=lambda r: (-float(r[key]), str(r["architecture"])))


def buckets(records: Sequence[dict], num_buckets: int, key: str = KEY) -> list[list[dict]]:
    """Splits records into `num_buckets` equal-width accuracy ranges, low to high."""
    if num_buckets < 1:
        raise ValueError(f"num_buckets must be >= 1. Received: num_buckets={num_buckets}")
    usable = [r for r in records if r.get(key) is not None]
    if not usable:
        return [[] for _ in range(num_buckets)]
    values = np.array([float(r[key]) for r in usable])
    lo, hi = float(values.min()), float(values.max())
    width = (hi - lo) / num_buckets
    out: list[list[dict]] = [[] for _ in range(num_buckets)]
    for r, v in zip(usable, values):
        index = num_buckets - 1 if width == 0 else min(int((v - lo) / width), num_buckets - 1)
        out[index].append(r)
    for bucket in out:
        bucket.sort(key=lambda r: str(r["architecture"]))
    return out


def stratified_sample(
    records: Sequence[dict],
    num_buckets: int = 10,
    per_bucket: int = 4,
    seed: int = 0,
    key: str = KEY,
) -> list[dict]:
    """`per_bucket` random records from each of `num_buckets` accuracy buckets.

    Buckets with fewer records contribute all of theirs. Returns records
    ordered from the lowest bucket to the highest.
    """
    rng = np.random.default_rng(seed)
    out = []
    for bucket in buckets(records, num_buckets, key):
        if len(bucket) <= per_bucket:
            out.extend(bucket)
        else:
            chosen = sorted(rng.choice(len(bucket), size=per_bucket, replace=False))
            out.extend(bucket[i] for i in chosen)
    return out


def oneshot_top(
    records: Sequence[dict],
    k: int = 10,
    pool: int | None = None,
    seed: int = 0,
    key: str = KEY,
) -> list[dict]:
    """One-Shot Top: the best `k`, or a stratified `k` from the best `pool`.

    Returns records best first.
    """
    best = _sorted_best_first(records, key)
    if pool is None or pool <= k:
        return best[:k]
    top = best[:pool]
    picked = stratified_sample(top, num_buckets=k, per_bucket=1, seed=seed, key=key)
    if len(picked) < k:  # empty buckets: fill with the best not yet picked
        chosen = {id(r) for r in picked}
        picked += [r for r in top if id(r) not in chosen][: k - len(picked)]
    return _sorted_best_first(picked, key)


def accuracy_threshold(records: Sequence[dict], percentile: float = 90.0, key: str = KEY) -> float:
    """The one-shot accuracy at `percentile` (0-100) of the records."""
    values = [float(r[key]) for r in records if r.get(key) is not None]
    if not values:
        raise ValueError("no record has a one-shot accuracy.")
    return float(np.percentile(values, percentile))


def oneshot_small(
    records: Sequence[dict],
    k: int = 10,
    percentile: float = 90.0,
    key: str = KEY,
    size_key: str = "params",
) -> list[dict]:
    """One-Shot Small: the `k` fewest-parameter records at or above the percentile.

    Returns records smallest first (ties: higher accuracy first).
    """
    threshold = accuracy_threshold(records, percentile, key)
    eligible = [r for r in records if r.get(key) is not None and float(r[key]) >= threshold]
    eligible.sort(key=lambda r: (int(r[size_key]), -float(r[key]), str(r["architecture"])))
    return eligible[:k]


def select_candidates(
    space: SearchSpace,
    search_records: Sequence[dict],
    how: str = "stratified",
    k: int = 10,
    num_buckets: int = 10,
    per_bucket: int = 4,
    pool: int | None = 100,
    percentile: float = 90.0,
    seed: int = 0,
) -> list[Candidate]:
    """The `retrain.Candidate`s chosen from scored architectures by the rule `how`.

    Args:
        space: the search space; parses the architecture strings of the records.
        search_records: lines of search results (several searches may hold the
            same architecture: its one-shot accuracies are averaged).
        how: "stratified" (§4.1, Figure 5: `per_bucket` from each of
            `num_buckets` accuracy buckets), "top" (One-Shot Top, §4.1: "from
            the top 100 architectures, we took a stratified sample of 10",
            i.e. a stratified `k` from the best `pool`; `pool` None or <= `k`:
            the best `k`) or "small" (One-Shot Small: the `k` smallest at or
            above the `percentile`).

    Raises:
        UserError: an unknown rule, or no records.
    """
    from tf_oneshot.training.retrain import Candidate  # TensorFlow: imported on use

    merged: dict[str, list[dict]] = {}
    for r in search_records:
        merged.setdefault(r["architecture"], []).append(r)
    if not merged:
        raise UserError("the search results hold no architecture to retrain.")
    records = [
        {
            "architecture": arch,
            "oneshot_accuracy": float(np.mean([r["oneshot_accuracy"] for r in rs])),
            "params": int(rs[0].get("params") or space.count(space.parse(arch)).params),
        }
        for arch, rs in sorted(merged.items())
    ]
    if how == "stratified":
        chosen = stratified_sample(records, num_buckets, per_bucket, seed=seed)
    elif how == "top":
        chosen = oneshot_top(records, k, pool=pool, seed=seed)
    elif how == "small":
        chosen = oneshot_small(records, k, percentile=percentile)
    else:
        raise UserError(f"--select={how} is unknown; choose stratified, top or small.")
    return [Candidate(space.parse(r["architecture"]), r["oneshot_accuracy"]) for r in chosen]
