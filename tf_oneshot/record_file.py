"""The resumable record file: one JSON line per finished unit of work, written once for every job.

A search, a retraining, a ground truth, a fine-tuning and NAO-V2's iterated
loop each run for hours and must survive a kill at any moment. Each keeps
what it finished in one of these files, and a rerun reads it back:

- every line carries the file's `kind` (when it has one) and the `identity`
  fields that fix what its numbers mean (the space, the checkpoint step, the
  training setting ...); a line of another kind or identity is refused with
  one line naming the field, so results of two settings are never mixed (a
  line of another search space, the `space` field, is named as such first,
  with the fields of the space that differ);
- `key(record)` names the unit of work, and `done()` the finished ones, so a
  rerun skips them;
- appends are flushed and fsync'd, so a finished line is never lost; a torn
  last line (a kill mid-write) is dropped on reading and cut before the next
  append (`io_utils.append_jsonl_lines`);
- on a remote file system (gs://), where an append rewrites the whole
  object, lines are written in batches at most `flush_seconds` apart and on
  `flush()` (SIGTERM included), so 20,000 lines cost tens of rewrites.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable, Iterable, Mapping
from typing import Any

from tf_oneshot.errors import UserError
from tf_oneshot.io_utils import append_jsonl_lines, is_local, read_jsonl

REMOTE_FLUSH_SECONDS = 30.0


class RecordFile:
    """Reads, checks and appends the JSON lines of one job's finished work.

    Args:
        path: the file (local or gs://).
        kind: the `kind` field every line carries ("tf_oneshot.retrain" ...),
            or None for files whose lines have none (search results).
        identity: field -> value that every line must carry unchanged.
        key: the unit of work a line finishes (default: the whole line is its
            own key: nothing is skipped).
        what: what a line is, for messages ("a `tf-oneshot retrain` result").
        fix: what the user should do about a refused line.
        normalize: maps a line read back to the form compared against the
            identity (lines written by an older version).
        check: further checks of a line read back, `check(record, where)`
            raising UserError (numbers, architecture strings ...).
        flush_seconds: the longest wait between remote writes.
    """

    def __init__(
        self,
        path: str,
        kind: str | None,
        identity: Mapping[str, Any],
        key: Callable[[dict], Hashable] | None = None,
        what: str = "a record of this job",
        fix: str = "rerun with the same settings or pass a new file",
        normalize: Callable[[dict], dict] | None = None,
        check: Callable[[dict, str], None] | None = None,
        flush_seconds: float = REMOTE_FLUSH_SECONDS,
    ) -> None:
        self.path = path
        self.kind = kind
        self.identity = dict(identity)
        self.key = key
        self.what = what
        self.fix = fix
        self.normalize = normalize or (lambda record: record)
        self.check = check
        self.flush_seconds = flush_seconds
        self._pending: list[dict[str, Any]] = []  # remote lines not yet written
        self._flushed = time.monotonic()

    # ------------------------------------------------------------------ read
    def records(self) -> list[dict]:
        """Every line, in file order, each checked (UserError naming the first bad line)."""
        out = []
        for number, record in enumerate(read_jsonl(self.path), start=1):
            self.check_line(record, f"{self.path} line {number}")
            out.append(record)
        return out

    def check_line(self, record: dict, where: str) -> None:
        """UserError unless `record` is of this file's kind and identity and passes `check`."""
        if self.kind is not None and record.get("kind") != self.kind:
            raise UserError(f"{where} is not {self.what}; {self.fix}.")
        seen = self.normalize(record)
        if "space" in self.identity and seen.get("space") != self.identity["space"]:
            theirs, ours = _space_difference(seen.get("space"), self.identity["space"])
            raise UserError(f"{where} is {self.what} of another search space, {theirs} (this run: {ours}); "
                            f"{self.fix}.")
        changed = [f"{field}={_short(seen.get(field))} (this run: {_short(value)})"
                   for field, value in self.identity.items() if seen.get(field) != value]
        if changed:
            raise UserError(f"{where} was written with another setting, {', '.join(changed[:3])}; {self.fix}.")
        if self.check is not None:
            self.check(record, where)

    def load(self) -> dict[Hashable, dict]:
        """{key: the first line of that key}, for every finished unit of work."""
        out: dict[Hashable, dict] = {}
        for record in self.records():
            out.setdefault(self._key(record), record)
        return out

    def done(self) -> set[Hashable]:
        """The keys of the finished units of work."""
        return set(self.load())

    def _key(self, record: dict) -> Hashable:
        return self.key(record) if self.key is not None else id(record)

    # ----------------------------------------------------------------- write
    def append(self, record: Mapping[str, Any]) -> dict[str, Any]:
        """Appends one finished record, with this file's kind and identity fields; returns the line."""
        line = {**record, **self.identity}
        if self.kind is not None:
            line["kind"] = self.kind
        self.append_lines([line])
        return line

    def append_lines(self, lines: Iterable[dict[str, Any]]) -> None:
        """Appends whole lines as they are (fsync'd locally, batched remotely)."""
        lines = list(lines)
        if is_local(self.path):
            append_jsonl_lines(self.path, lines)
            return
        self._pending += lines
        if time.monotonic() - self._flushed >= self.flush_seconds:
            self.flush()

    def flush(self) -> None:
        """Writes the lines still buffered for a remote file (a no-op for local files)."""
        if self._pending:
            append_jsonl_lines(self.path, self._pending)
            self._pending = []
        self._flushed = time.monotonic()


def _space_difference(theirs: Any, ours: Any) -> tuple[str, str]:
    """Short forms of two space configs ("cell (filters=4)"), naming only the fields that differ."""
    if not (isinstance(theirs, dict) and isinstance(ours, dict)):
        return _short(theirs), _short(ours)
    fields = [f for f in dict.fromkeys([*theirs, *ours]) if f != "space" and theirs.get(f) != ours.get(f)]

    def form(config: dict) -> str:
        return f"{config.get('space')} ({', '.join(f'{f}={_short(config.get(f))}' for f in fields)})"

    return form(theirs), form(ours)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
