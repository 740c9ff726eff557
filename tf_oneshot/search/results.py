"""The results file of a search: one JSON line per scored architecture.

Every line is complete on its own (architecture string, one-shot accuracy and
loss, params, multiply-adds, seconds, the space, and what produced it) and is
never rewritten. It is a `tf_oneshot.record_file.RecordFile` without a `kind`
field: appends are fsync'd, a torn last line is dropped on reading and cut
before the next append, and on GCS lines are written in batches (at the end
too, SIGTERM included), so killing a search loses at most the line being
written (locally) or one batch window (remotely).

A search restarted over its results file reads the lines back as a cache: the
algorithm replays its seeded proposals and every architecture already in the
file is told its recorded score instead of being scored again (§3.3 scores
are deterministic for a fixed checkpoint and evaluation set). Lines from
another search (another checkpoint, BN mode, algorithm, seed or constraints)
would make the scores incomparable, so they are refused with one clear line.
"""

from __future__ import annotations

import math
from collections.abc import Hashable
from typing import Any

from tf_oneshot.errors import UserError
from tf_oneshot.record_file import REMOTE_FLUSH_SECONDS, RecordFile
from tf_oneshot.search_spaces import SearchSpace

# Fields that must be equal on every line of one results file: they fix what
# a score means (IDENTITY) or which architectures the search proposes.
IDENTITY_FIELDS = ("space", "checkpoint_step", "bn_mode", "algorithm", "seed", "constraints", "options")
REQUIRED_NUMBERS = ("oneshot_accuracy", "loss", "params", "flops")


class ResultsFile(RecordFile):
    """Reads and appends the JSON-lines results of one search, keyed by architecture.

    Args:
        path: the file (local or gs://).
        space: parses and validates the architecture strings.
        identity: the values of `IDENTITY_FIELDS` for this search; every line
            written carries them, every line read must match them.
        flush_seconds: the longest wait between remote writes.
    """

    def __init__(self, path: str, space: SearchSpace, identity: dict[str, Any],
                 flush_seconds: float = REMOTE_FLUSH_SECONDS):
        missing = [f for f in IDENTITY_FIELDS if f not in identity]
        if missing:
            raise ValueError(f"identity lacks {missing}.")
        super().__init__(path, kind=None, identity={f: identity[f] for f in IDENTITY_FIELDS},
                         key=self._architecture, what="a `tf-oneshot search` results line",
                         fix="rerun with the same flags or pass a new --results file", flush_seconds=flush_seconds)
        self.space = space
        self._parsed: dict[str, Hashable] = {}  # architectures parsed by `check_line`, until keyed

    def check_line(self, record: dict, where: str) -> None:
        """UserError unless `record` is a results line (checked first: a file of another kind says so) of this search.

        Raises:
            UserError: no architecture string, a malformed architecture or
                number, or a line of another search.
        """
        text = record.get("architecture")
        if not isinstance(text, str):
            raise UserError(f"{where} has no architecture string; is it a `tf-oneshot search` results file?")
        try:
            self._parsed[text] = self.space.parse(text)
        except UserError as e:
            raise UserError(f"{where}: malformed architecture {text!r}: {e}") from None
        for key in REQUIRED_NUMBERS:
            value = record.get(key)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise UserError(f"{where} has {key}={value!r}; expected a finite number.")
        super().check_line(record, where)

    def load(self) -> dict[Hashable, dict]:
        """{architecture: its first line}, for every finished line (UserError naming the first bad one)."""
        try:
            return super().load()
        finally:
            self._parsed.clear()

    def _architecture(self, record: dict) -> Hashable:
        # Parsing costs ~0.2 ms a line: a 20,000-line file is parsed once, in check_line.
        text = record["architecture"]
        return self._parsed[text] if text in self._parsed else self.space.parse(text)
