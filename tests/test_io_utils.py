"""Atomic writes and crash-tolerant JSON lines."""

import json

import pytest

from tf_oneshot.errors import UserError
from tf_oneshot.io_utils import append_jsonl, atomic_write_json, read_json, read_jsonl


def test_atomic_write_replaces_whole_file(tmp_path):
    path = str(tmp_path / "a" / "x.json")
    atomic_write_json(path, {"a": 1})
    atomic_write_json(path, {"a": 2})
    assert read_json(path) == {"a": 2}
    assert [p.name for p in (tmp_path / "a").iterdir()] == ["x.json"]


def test_jsonl_survives_torn_last_line(tmp_path):
    path = str(tmp_path / "r.jsonl")
    append_jsonl(path, {"i": 0})
    append_jsonl(path, {"i": 1})
    with open(path, "a") as f:
        f.write('{"i": 2, "trunc')  # killed mid-write
    assert [r["i"] for r in read_jsonl(path)] == [0, 1]
    append_jsonl(path, {"i": 3})
    assert [r["i"] for r in read_jsonl(path)] == [0, 1, 3]
    assert open(path).read().count("\n") == 3


def test_jsonl_rejects_broken_middle_line(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_text('{"i": 0}\nnot json\n{"i": 2}\n')
    with pytest.raises(UserError, match="line 2 is not valid JSON"):
        read_jsonl(str(path))


def test_read_json_errors_are_one_line(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        read_json(str(tmp_path / "missing.json"))
    bad = tmp_path / "bad.json"
    bad.write_text("{")
    with pytest.raises(UserError, match="not valid JSON") as info:
        read_json(str(bad))
    assert "\n" not in str(info.value)
    assert json.loads('{"ok": 1}')
