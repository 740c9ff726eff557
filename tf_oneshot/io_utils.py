"""Writes that survive a kill at any moment: temp file + rename, fsync'd appends.

Paths may be local or on GCS (`gs://`): `tf.io.gfile` handles both. On GCS a
rename is a copy, which is still all-or-nothing for the reader.
"""

from __future__ import annotations

import json
import os
import uuid
from typing import Any

import tensorflow as tf

from tf_oneshot.errors import UserError


def is_local(path: str) -> bool:
    """Whether `path` is on the local file system (not gs://, ram://, ...)."""
    return "://" not in path


def atomic_write_text(path: str, text: str) -> None:
    """Writes `text` to `path` so that readers see the old or the new file, never half."""
    directory = os.path.dirname(path) or "."
    tf.io.gfile.makedirs(directory)
    tmp = f"{path}.tmp-{uuid.uuid4().hex}"
    if is_local(path):
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    else:
        with tf.io.gfile.GFile(tmp, "w") as f:
            f.write(text)
        tf.io.gfile.rename(tmp, path, overwrite=True)


def atomic_write_json(path: str, obj: Any) -> None:
    """`atomic_write_text` of pretty JSON."""
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def read_json(path: str, what: str = "file") -> Any:
    """Reads a JSON file; UserError naming the file if it is missing or broken."""
    if not tf.io.gfile.exists(path):
        raise UserError(f"{what} {path} does not exist.")
    try:
        with tf.io.gfile.GFile(path, "r") as f:
            return json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{what} {path} is not valid JSON ({e.msg} at line {e.lineno}).") from None


def append_jsonl(path: str, obj: Any) -> None:
    """Appends one JSON line and syncs it, so a finished record is never lost."""
    append_jsonl_lines(path, [obj])


def append_jsonl_lines(path: str, objs: list[Any]) -> None:
    """Appends JSON lines and syncs them.

    If the file ends in a torn line (a kill mid-write), the torn bytes are cut
    first so the new records start on a line of their own. A GCS object cannot
    be appended to, so there the whole file is rewritten atomically: callers
    with many lines batch them (`search.results.ResultsFile`).
    """
    line = "".join(json.dumps(obj, sort_keys=True) + "\n" for obj in objs)
    if not is_local(path):
        old = tf.io.gfile.GFile(path).read() if tf.io.gfile.exists(path) else ""
        atomic_write_text(path, _drop_torn_tail(old) + line)
        return
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "a+b") as f:
        size = f.seek(0, os.SEEK_END)
        if size:
            f.seek(max(0, size - 1))
            if f.read(1) != b"\n":
                f.seek(0)
                data = f.read()
                f.truncate(data.rfind(b"\n") + 1)
                f.seek(0, os.SEEK_END)
        f.write(line.encode("utf-8"))
        f.flush()
        os.fsync(f.fileno())


def _drop_torn_tail(text: str) -> str:
    return text if not text or text.endswith("\n") else text[: text.rfind("\n") + 1]


def read_jsonl(path: str) -> list[dict]:
    """Reads a JSON-lines file; drops a torn last line, rejects a broken middle line."""
    if not tf.io.gfile.exists(path):
        return []
    with tf.io.gfile.GFile(path, "r") as f:
        lines = f.read().split("\n")
    records = []
    last = len(lines) - 1
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            if number - 1 == last:  # no newline after it: a write cut short
                break
            raise UserError(
                f"{path} line {number} is not valid JSON; fix or remove that line."
            ) from None
        if not isinstance(record, dict):
            raise UserError(f"{path} line {number} is not a JSON object.")
        records.append(record)
    return records
