"""Search and retrain results as checked records, joined per architecture.

Both files are JSON lines (io_utils.append_jsonl). A search line holds one
architecture scored with the shared weights (Bender et al. 2018, §3.3):
`architecture`, `oneshot_accuracy`, `params`, `flops`, `space`, and optionally
`kl` (§5) and `generation` (evolution; absent or null for random search). A
retrain line holds one (architecture, seed) trained stand-alone (§3.4):
`architecture`, `seed`, `validation_accuracy`, `test_accuracy`, `params`,
`flops`, `space`, and the `oneshot_accuracy` it was chosen with. A run of
`retrain --full_train` trained on train + validation (§3.4: "the full training
set") and says so with `"full_train": true`; its validation accuracy is null,
and its stand-alone accuracy is the test accuracy (`Standalone.split`).

Figure 5 compares one-shot accuracy with stand-alone accuracy averaged over
runs; `join` builds exactly those pairs.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import tensorflow as tf

from tf_oneshot.errors import UserError
from tf_oneshot.io_utils import read_jsonl

# Space config keys that may differ between a search and a retrain of the same
# search space: Bender et al. 2018, §3.4 scale architectures up by F only.
SCALING_KEYS = ("filters",)
# Search-line fields that fix what a one-shot accuracy means (search/results.py).
SCORING_KEYS = ("checkpoint_step", "bn_mode")


@dataclasses.dataclass(frozen=True)
class Standalone:
    """Stand-alone results of one architecture over its seeds.

    `split` is the held-out split its stand-alone accuracy is measured on:
    "validation", or "test" for runs trained on train + validation
    (`full_train`), whose validation mean and std are NaN.
    """

    architecture: str
    seeds: tuple[int, ...]
    validation_mean: float
    validation_std: float
    test_mean: float
    params: int
    flops: int
    oneshot_accuracy: float | None
    test_std: float = math.nan
    split: str = "validation"

    @property
    def accuracy(self) -> float:
        """Mean stand-alone accuracy on `split` (what Figure 5 ranks)."""
        return self.test_mean if self.split == "test" else self.validation_mean

    @property
    def accuracy_std(self) -> float:
        return self.test_std if self.split == "test" else self.validation_std


@dataclasses.dataclass(frozen=True)
class Joined:
    """One point of Figure 5 (top): one-shot vs mean stand-alone accuracy."""

    architecture: str
    oneshot_accuracy: float
    standalone: Standalone


def architecture_key(value: Any) -> str:
    """Canonical string of an architecture given as string or JSON form."""
    if isinstance(value, str) and value.strip():
        return value.strip()
    if isinstance(value, dict) and isinstance(value.get("blocks"), list):
        try:
            return "/".join(
                "".join(str(int(i)) for i in sorted(b["inputs"]))
                + ":"
                + "".join(str(int(k)) for k in sorted(b["ops"]))
                for b in value["blocks"]
            )
        except (KeyError, TypeError, ValueError):
            pass
    raise UserError(f"architecture {value!r} is neither a string nor a JSON architecture.")


def space_identity(space: Any) -> Any:
    """What must match for two result files to describe the same search space."""
    if isinstance(space, dict):
        return tuple(sorted((k, repr(v)) for k, v in space.items() if k not in SCALING_KEYS))
    return space


def describe_space(space: Any) -> str:
    """Short human form of a `space` field, for messages."""
    if isinstance(space, dict):
        keys = ("space", "num_blocks", "num_cells", "num_stacks", "image_shape", "num_classes")
        return ", ".join(f"{k}={space[k]}" for k in keys if k in space)
    return repr(space)


def _read(path: str, what: str, hint: str) -> list[dict]:
    if not tf.io.gfile.exists(path):
        raise UserError(f"{what} file {path} does not exist; {hint}")
    records = read_jsonl(path)
    if not records:
        raise UserError(f"{what} file {path} is empty (no complete line); {hint}")
    return records


def _number(record: dict, key: str, path: str, index: int, optional: bool = False) -> Any:
    value = record.get(key)
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise UserError(
            f"{path} record {index + 1} has {key}={value!r}; expected a finite number. "
            "Is this a tf_oneshot results file?"
        )
    return value


def _one_space(records: list[dict], path: str) -> Any:
    spaces = {space_identity(r.get("space")): r.get("space") for r in records}
    if len(spaces) > 1:
        found = "; ".join(describe_space(s) for s in list(spaces.values())[:3])
        raise UserError(
            f"{path} mixes results of {len(spaces)} search spaces ({found}); "
            "keep one search space per results file."
        )
    return next(iter(spaces.values()))


def load_search_results(paths: str | Sequence[str]) -> tuple[list[dict], Any]:
    """Reads one or more search results files (e.g. a random and an evolution search).

    Each file holds one search (tf_oneshot.search.results); files read
    together must score with the same search space and checkpoint, or their
    one-shot accuracies would not be comparable.

    Returns:
        (records of all files in file order, `architecture` canonicalized,
        `algorithm` filled in as "random" or "evolution" where missing; the
        `space` field they share).

    Raises:
        UserError: a missing or empty file, a line without an architecture or a
            one-shot accuracy, or files of different spaces or checkpoints.
    """
    paths = [paths] if isinstance(paths, str) else list(paths)
    hint = "run `tf-oneshot search --results=...` first or pass the right file."
    out: list[dict] = []
    first: tuple[str, Any, dict] | None = None
    for path in paths:
        records = _read(path, "search results", hint)
        file_records = []
        for i, r in enumerate(records):
            if "architecture" not in r or "oneshot_accuracy" not in r:
                raise UserError(
                    f"{path} record {i + 1} has no architecture/oneshot_accuracy; "
                    "is it a `tf-oneshot search` results file?"
                )
            rec = dict(r)
            rec["architecture"] = architecture_key(r["architecture"])
            rec["oneshot_accuracy"] = float(_number(r, "oneshot_accuracy", path, i))
            rec["kl"] = _number(r, "kl", path, i, optional=True)
            generation = r.get("generation")
            rec["generation"] = None if generation is None else int(generation)
            rec.setdefault("algorithm", "random" if generation is None else "evolution")
            file_records.append(rec)
        space = _one_space(file_records, path)
        scoring = {k: file_records[0].get(k) for k in SCORING_KEYS}
        if first is None:
            first = (path, space, scoring)
        else:
            check_same_space(first[1], space, first[0], path)
            for key in SCORING_KEYS:
                if scoring[key] != first[2][key]:
                    raise UserError(
                        f"{first[0]} ({key}={first[2][key]!r}) and {path} ({key}={scoring[key]!r}) "
                        "were scored differently, so their one-shot accuracies are not comparable; "
                        "analyze searches of one checkpoint together."
                    )
        out.extend(file_records)
    return out, first[1] if first else None


def load_retrain_results(path: str) -> tuple[list[dict], Any]:
    """Reads a retrain results file (one line per architecture and seed).

    Records of `full_train` runs need a test accuracy instead of a validation
    accuracy; one file holds one kind or the other.

    Raises:
        UserError: missing or empty file, a malformed line, several spaces,
            or runs with and without `full_train` in one file.
    """
    hint = "run `tf-oneshot retrain --results=...` first or pass the right file."
    records = _read(path, "retrain results", hint)
    out = []
    for i, r in enumerate(records):
        full_train = bool(r.get("full_train"))
        needed = "test_accuracy" if full_train else "validation_accuracy"
        if "architecture" not in r or needed not in r:
            raise UserError(
                f"{path} record {i + 1} has no architecture/{needed}; "
                "is it a `tf-oneshot retrain` results file?"
            )
        rec = dict(r)
        rec["architecture"] = architecture_key(r["architecture"])
        rec["full_train"] = full_train
        rec["validation_accuracy"] = _number(r, "validation_accuracy", path, i, optional=full_train)
        if rec["validation_accuracy"] is not None:
            rec["validation_accuracy"] = float(rec["validation_accuracy"])
        rec["test_accuracy"] = _number(r, "test_accuracy", path, i, optional=not full_train)
        out.append(rec)
    if len({r["full_train"] for r in out}) > 1:
        raise UserError(
            f"{path} mixes runs trained on train + validation (--full_train) with runs trained on train; "
            "their accuracies are measured on different splits. Keep one kind per results file."
        )
    return out, _one_space(out, path)


def standalone_split(retrain: list[dict]) -> str:
    """The split stand-alone accuracies are measured on: "test" for --full_train runs, else "validation"."""
    return "test" if any(r.get("full_train") for r in retrain) else "validation"


def check_same_space(space_a: Any, space_b: Any, path_a: str, path_b: str) -> None:
    """Raises UserError if two result files come from different search spaces."""
    if space_a is None or space_b is None:
        return  # Older files without a space field: nothing to compare.
    if space_identity(space_a) != space_identity(space_b):
        raise UserError(
            f"{path_a} ({describe_space(space_a)}) and {path_b} ({describe_space(space_b)}) come "
            "from different search spaces; analyze results of one search space together."
        )


def oneshot_by_architecture(search: list[dict]) -> dict[str, float]:
    """One-shot accuracy per architecture (the mean if it was scored repeatedly)."""
    scores: dict[str, list[float]] = {}
    for r in search:
        scores.setdefault(r["architecture"], []).append(r["oneshot_accuracy"])
    return {a: float(np.mean(s)) for a, s in scores.items()}


def standalone_by_architecture(retrain: list[dict]) -> dict[str, Standalone]:
    """Stand-alone accuracy per architecture, averaged over seeds (Figure 5)."""
    groups: dict[str, list[dict]] = {}
    for r in retrain:
        groups.setdefault(r["architecture"], []).append(r)
    out = {}
    for arch, rs in groups.items():
        val = np.array([r["validation_accuracy"] for r in rs if r.get("validation_accuracy") is not None],
                       np.float64)
        tests = np.array([r["test_accuracy"] for r in rs if r.get("test_accuracy") is not None], np.float64)
        oneshot = [r["oneshot_accuracy"] for r in rs if r.get("oneshot_accuracy") is not None]
        out[arch] = Standalone(
            architecture=arch,
            seeds=tuple(int(r.get("seed", 0)) for r in rs),
            validation_mean=float(val.mean()) if val.size else math.nan,
            validation_std=float(val.std()) if val.size else math.nan,
            test_mean=float(tests.mean()) if tests.size else math.nan,
            params=int(rs[0].get("params") or 0),
            flops=int(rs[0].get("flops") or 0),
            oneshot_accuracy=float(oneshot[0]) if oneshot else None,
            test_std=float(tests.std()) if tests.size else math.nan,
            split=standalone_split(rs),
        )
    return out


def best_standalone(standalones: Sequence[Standalone]) -> Standalone | None:
    """Highest mean accuracy on each one's `split`; ties go to the higher test accuracy, then the string."""
    if not standalones:
        return None

    def key(s: Standalone) -> tuple[float, float, str]:
        return (s.accuracy, -math.inf if math.isnan(s.test_mean) else s.test_mean, s.architecture)

    return max(standalones, key=key)


def join(search: list[dict] | None, retrain: list[dict]) -> list[Joined]:
    """Pairs each retrained architecture with its one-shot accuracy.

    The one-shot accuracy comes from the search results when they hold the
    architecture, else from the retrain line (recorded when it was chosen).
    Architectures with neither are left out. Sorted by one-shot accuracy.
    """
    oneshot = oneshot_by_architecture(search or [])
    joined = []
    for arch, sa in standalone_by_architecture(retrain).items():
        score = oneshot.get(arch, sa.oneshot_accuracy)
        if score is not None:
            joined.append(Joined(arch, float(score), sa))
    return sorted(joined, key=lambda j: (j.oneshot_accuracy, j.architecture))
