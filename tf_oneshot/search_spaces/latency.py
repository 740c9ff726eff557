"""Latency lookup tables: each candidate block timed in its position (SPOS §3.4).

SPOS searches under hard constraints, latency among them (§3.4, Eq. 5;
Table 5 compares architectures "under the constraints of same FLOPs or same
latency"), and meets them by construction: evolution only breeds candidates
that fit. That needs an architecture's latency without running it, so, as
is usual for single-path spaces (FBNet, ProxylessNAS), each candidate of
each choice block is timed once, on the target device, with the input shape
it has at its position, and an architecture's latency is the table's sum:

    latency(arch) = fixed_ms + sum over choice blocks of table[block][choice]

`measure_table` times the pieces a space exposes (`SearchSpace.latency_units`)
and `tf-oneshot latency` writes the table; `LatencyTable.load` reads it back
for the search and refuses a table measured for another space, input size or
network configuration. The sum ignores what happens between pieces (memory
traffic, fusion across blocks, one call's overhead instead of many), so it
approximates the end-to-end time; `measure_end_to_end` measures that, and
the README reports how close the two come.

Loading and summing need no TensorFlow (search algorithms import this module);
measuring imports it.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import platform
import statistics
import time
from collections.abc import Callable, Hashable, Sequence
from typing import Any

from tf_oneshot.errors import UserError

KIND = "tf_oneshot.latency_table"
VERSION = 1
WARMUP = 10
REPEATS = 50


@functools.lru_cache(maxsize=16)
def _plan(space: Any) -> tuple[tuple[Any, ...], dict[str, tuple[int, ...]]]:
    """The space's decisions and the decision indices of each choice block (cached per space)."""
    decisions = tuple(space.decisions())
    groups: dict[str, list[int]] = {}
    for i, d in enumerate(decisions):
        groups.setdefault(d.block, []).append(i)
    return decisions, {block: tuple(indices) for block, indices in groups.items()}


def _groups(space: Any) -> dict[str, tuple[int, ...]]:
    """Decision indices of each choice block, in decision order."""
    return _plan(space)[1]


def _key(space: Any, indices: Sequence[int], values: Sequence) -> str:
    """A block's entry key: its decisions' string forms joined with '/'."""
    decisions = _plan(space)[0]
    return "/".join(decisions[i].format(v) for i, v in zip(indices, values))


@dataclasses.dataclass(frozen=True, eq=False)
class LatencyTable:
    """A measured table: milliseconds per candidate block and for the fixed parts.

    Attributes:
        path: where it was read from (for messages).
        fixed_ms: stem, head and one call's overhead: in every architecture.
        entries: {block: {key: ms}}; a key joins the block's decision values.
        metadata: the space config, batch size, device, repeats ... as written.
    """

    path: str
    fixed_ms: float
    entries: dict[str, dict[str, float]]
    metadata: dict[str, Any]

    @classmethod
    def load(cls, path: str, space: Any) -> LatencyTable:
        """Reads a table written by `tf-oneshot latency` and checks it fits `space`.

        Raises:
            UserError: a missing or malformed file, or one measured for another
                space, input size or network configuration (naming the field).
        """
        obj = _read_json(path)
        if not isinstance(obj, dict) or obj.get("kind") != KIND:
            raise UserError(f"--latency_table={path} is not a latency table of `tf-oneshot latency`.")
        mine, theirs = space.to_config(), obj.get("space") or {}
        if theirs != mine:
            fields = sorted(k for k in set(mine) | set(theirs) if mine.get(k) != theirs.get(k))
            shown = ", ".join(f"{k}={theirs.get(k)!r} (this search: {mine.get(k)!r})" for k in fields[:3])
            raise UserError(
                f"--latency_table={path} was measured for another network: {shown}; measure one for this "
                f"model with `tf-oneshot latency --space={space.name} ... --output=FILE`."
            )
        table = cls(path, float(obj["fixed_ms"]), {b: {k: float(v) for k, v in e.items()}
                                                   for b, e in obj["blocks"].items()}, obj)
        groups = _groups(space)
        for block, indices in groups.items():
            decisions = [space.decisions()[i] for i in indices]
            have = table.entries.get(block, {})
            for values in _combinations(decisions):
                if _key(space, indices, values) not in have:
                    raise UserError(f"--latency_table={path} lacks block {block!r} choice "
                                    f"{_key(space, indices, values)!r}; measure it again.")
        return table

    def latency_ms(self, space: Any, arch: Hashable) -> float:
        """The table's latency of `arch`: fixed parts plus its candidates' entries."""
        values = space.values_of(arch)
        total = self.fixed_ms
        for block, indices in _groups(space).items():
            total += self.entries[block][_key(space, indices, [values[i] for i in indices])]
        return total

    def bounds(self) -> tuple[float, float]:
        """Least and greatest latency over the space: blocks add independently, so exact."""
        low = self.fixed_ms + sum(min(e.values()) for e in self.entries.values())
        high = self.fixed_ms + sum(max(e.values()) for e in self.entries.values())
        return low, high

    def describe(self) -> str:
        m = self.metadata
        return (f"{self.path}: batch {m.get('batch_size')}, {m.get('device')}, "
                f"measured {m.get('created', '?')}")


def _combinations(decisions: Sequence[Any]) -> list[tuple]:
    import itertools

    return list(itertools.product(*(d.values() for d in decisions)))


def _read_json(path: str) -> Any:
    try:
        if "://" in path:
            import tensorflow as tf  # gs:// and other remote files

            if not tf.io.gfile.exists(path):
                raise FileNotFoundError(path)
            with tf.io.gfile.GFile(path) as f:
                return json.loads(f.read())
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise UserError(f"--latency_table={path} does not exist; write one with `tf-oneshot latency`.") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"--latency_table={path} is not valid JSON ({e}).") from None


# ----------------------------------------------------------------- measuring
def time_callable(fn: Callable[[], Any], warmup: int = WARMUP, repeats: int = REPEATS) -> float:
    """Median wall milliseconds of `fn()` (which must block until its result is ready)."""
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(repeats):
        tic = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - tic) * 1000.0)
    return statistics.median(samples)


def _compiled(model: Any, shape: Sequence[int], batch_size: int, seed: int) -> Callable[[], Any]:
    """A no-argument call of `model` on a fixed random batch, returning numpy (so it blocks)."""
    import tensorflow as tf

    x = tf.random.stateless_normal((batch_size, *shape), seed=[seed, 0])
    fn = tf.function(lambda t: model(t, training=False))
    return lambda: fn(x).numpy()


def call_overhead_ms(batch_size: int, shape: Sequence[int], warmup: int, repeats: int) -> float:
    """The time of a compiled call that does nothing: paid once per piece timed, once per network run."""
    import tensorflow as tf

    x = tf.zeros((batch_size, *shape))
    fn = tf.function(lambda t: tf.identity(t))
    return time_callable(lambda: fn(x).numpy(), warmup, repeats)


def device_name() -> str:
    """The device TensorFlow places ops on by default, in words."""
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        details = tf.config.experimental.get_device_details(gpus[0])
        return f"GPU {details.get('device_name', gpus[0].name)}"
    return f"CPU {platform.processor() or platform.machine()} ({_cpu_count()} cores visible)"


def _cpu_count() -> int:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def measure_table(space: Any, batch_size: int = 1, warmup: int = WARMUP, repeats: int = REPEATS,
                  log: Callable[[str], None] = print) -> dict[str, Any]:
    """Times every latency unit of `space`; returns the table as JSON (see `write_table`).

    Each piece's time is its median call minus the empty call's, so the
    overhead of one call is counted once (in `fixed_ms`), as in one run of
    the whole network.

    Raises:
        UserError: a space without latency units, or a bad batch / repeat count.
    """
    for name, value in (("batch_size", batch_size), ("repeats", repeats)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise UserError(f"--{name}={value} is invalid; expected a positive integer.")
    if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 0:
        raise UserError(f"--warmup={warmup} is invalid; expected a non-negative integer.")
    units = space.latency_units()
    if not units:
        raise UserError(
            f"search space {space.name!r} exposes no latency units (SearchSpace.latency_units), so no latency "
            "table can be measured for it; constrain FLOPs or params instead."
        )
    overhead = call_overhead_ms(batch_size, units[0].input_shape, warmup, repeats)
    fixed, blocks = overhead, {}
    groups = _groups(space)
    start = time.perf_counter()
    for n, unit in enumerate(units):
        ms = max(0.0, time_callable(_compiled(unit.build(), unit.input_shape, batch_size, n), warmup, repeats)
                 - overhead)
        if unit.block:
            blocks.setdefault(unit.block, {})[_key(space, groups[unit.block], unit.values)] = round(ms, 6)
        else:
            fixed += ms
        if log and (n + 1) % 10 == 0:
            log(f"  timed {n + 1}/{len(units)} pieces ({time.perf_counter() - start:.0f}s)")
    import tensorflow as tf

    return {
        "kind": KIND, "version": VERSION, "space": space.to_config(), "space_name": space.name,
        "image_shape": list(space.image_shape) if hasattr(space, "image_shape") else None,
        "batch_size": batch_size, "device": device_name(), "warmup": warmup, "repeats": repeats,
        "statistic": "median", "unit": "ms", "call_overhead_ms": round(overhead, 6),
        "fixed_ms": round(fixed, 6), "blocks": blocks, "tensorflow": tf.__version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def write_table(path: str, table: dict[str, Any]) -> None:
    """Writes the table atomically (a reader sees the old file or the new, never half)."""
    from tf_oneshot.io_utils import atomic_write_text

    atomic_write_text(path, json.dumps(table, indent=1, sort_keys=True) + "\n")


def measure_end_to_end(space: Any, arch: Hashable, batch_size: int = 1, warmup: int = WARMUP,
                       repeats: int = REPEATS) -> float:
    """Median milliseconds of the stand-alone network of `arch`, run whole (the table's reference)."""
    model = space.build_standalone(arch, ghost_batch_size=None)
    return time_callable(_compiled(model, space.image_shape, batch_size, 0), warmup, repeats)


def compare(space: Any, table: LatencyTable, archs: Sequence[Hashable], batch_size: int = 1,
            warmup: int = WARMUP, repeats: int = REPEATS) -> list[dict[str, Any]]:
    """Table sum against the measured end-to-end latency of each architecture.

    Returns:
        One dict per architecture: architecture, table_ms, measured_ms,
        ratio (table / measured).
    """
    out = []
    for arch in archs:
        measured = measure_end_to_end(space, arch, batch_size, warmup, repeats)
        predicted = table.latency_ms(space, arch)
        out.append({"architecture": str(arch), "table_ms": predicted, "measured_ms": measured,
                    "ratio": predicted / measured if measured > 0 else math.inf})
    return out
