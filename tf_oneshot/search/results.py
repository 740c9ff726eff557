"""The results file of a search: one JSON line per scored architecture.

Every line is complete on its own (architecture string, one-shot accuracy and
loss, params, multiply-adds, seconds, the space, and what produced it), is
appended with flush+fsync (`io_utils.append_jsonl`), and is never rewritten:
killing a search loses at most the line being written. A torn last line is
dropped on reading and cut before the next append. On GCS, where an append
rewrites the whole object, lines are written in batches at most
REMOTE_FLUSH_SECONDS apart and at the end (SIGTERM included), so 20,000 lines
cost tens of rewrites, not 20,000; a SIGKILL there loses at most that window.

A search restarted over its results file reads the lines back as a cache: the
algorithm replays its seeded proposals and every architecture already in the
file is told its recorded score instead of being scored again (§3.3 scores
are deterministic for a fixed checkpoint and evaluation set). Lines from
another search (another checkpoint, BN mode, algorithm, seed or constraints)
would make the scores incomparable, so they are refused with one clear line.
"""

from __future__ import annotations

import math
import time
from collections.abc import Hashable
from typing import Any

from tf_oneshot.errors import UserError
from tf_oneshot.io_utils import append_jsonl, append_jsonl_lines, is_local, read_jsonl
from tf_oneshot.search_spaces import SearchSpace

# Fields that must be equal on every line of one results file: they fix what
# a score means (IDENTITY) or which architectures the search proposes.
IDENTITY_FIELDS = ("space", "checkpoint_step", "bn_mode", "algorithm", "seed", "constraints", "options")
REQUIRED_NUMBERS = ("oneshot_accuracy", "loss", "params", "flops")
REMOTE_FLUSH_SECONDS = 30.0


class ResultsFile:
    """Reads and appends the JSON-lines results of one search.

    Args:
        path: the file (local or gs://).
        space: parses and validates the architecture strings.
        identity: the values of `IDENTITY_FIELDS` for this search; every line
            written carries them, every line read must match them.
    """

    def __init__(self, path: str, space: SearchSpace, identity: dict[str, Any]):
        missing = [f for f in IDENTITY_FIELDS if f not in identity]
        if missing:
            raise ValueError(f"identity lacks {missing}.")
        self.path = path
        self.space = space
        self.identity = {f: identity[f] for f in IDENTITY_FIELDS}
        self._pending: list[dict[str, Any]] = []  # remote lines not yet written
        self._flushed = time.monotonic()

    def load(self) -> dict[Hashable, dict]:
        """Returns {architecture: record} of the finished lines.

        Raises:
            UserError: a line that is not JSON (other than a torn last line), a
                malformed architecture or number, or a line from another search.
        """
        records: dict[Hashable, dict] = {}
        for number, record in enumerate(read_jsonl(self.path), start=1):
            where = f"{self.path} line {number}"
            text = record.get("architecture")
            if not isinstance(text, str):
                raise UserError(f"{where} has no architecture string; is it a `tf-oneshot search` results file?")
            try:
                arch = self.space.parse(text)
            except UserError as e:
                raise UserError(f"{where}: malformed architecture {text!r}: {e}") from None
            for key in REQUIRED_NUMBERS:
                value = record.get(key)
                if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                    raise UserError(f"{where} has {key}={value!r}; expected a finite number.")
            for field in IDENTITY_FIELDS:
                if record.get(field) != self.identity[field]:
                    raise UserError(
                        f"{where} was written by another search ({field}={_short(record.get(field))}, "
                        f"this run has {_short(self.identity[field])}); rerun with the same flags or "
                        "pass a new --results file."
                    )
            records.setdefault(arch, record)  # a duplicate line keeps the first score
        return records

    def append(self, record: dict[str, Any]) -> dict[str, Any]:
        """Appends one finished record (identity fields added); returns it."""
        line = {**record, **self.identity}
        if is_local(self.path):
            append_jsonl(self.path, line)
        else:
            self._pending.append(line)
            if time.monotonic() - self._flushed >= REMOTE_FLUSH_SECONDS:
                self.flush()
        return line

    def flush(self) -> None:
        """Writes the lines still buffered for a remote file (a no-op for local files)."""
        if self._pending:
            append_jsonl_lines(self.path, self._pending)
            self._pending = []
        self._flushed = time.monotonic()


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
