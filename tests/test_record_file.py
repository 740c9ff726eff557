"""The resumable record file every long job keeps its finished work in (tf_oneshot.record_file)."""

import json

import pytest

from tf_oneshot.errors import UserError
from tf_oneshot.record_file import RecordFile


def _file(path, **kwargs):
    options = dict(kind="tf_oneshot.test", identity={"space": "s", "steps": 10}, key=lambda r: (r["arch"], r["seed"]),
                   what="a test record", fix="pass a new --results file")
    options.update(kwargs)
    return RecordFile(str(path), **options)


def test_appended_lines_carry_kind_and_identity_and_come_back_by_key(tmp_path):
    records = _file(tmp_path / "r.jsonl")
    line = records.append({"arch": "a", "seed": 0, "accuracy": 0.5})
    assert line == {"arch": "a", "seed": 0, "accuracy": 0.5, "space": "s", "steps": 10, "kind": "tf_oneshot.test"}
    records.append({"arch": "a", "seed": 1, "accuracy": 0.6})
    records.append({"arch": "a", "seed": 0, "accuracy": 0.9})  # a repeat keeps the first line
    again = _file(tmp_path / "r.jsonl")
    assert again.done() == {("a", 0), ("a", 1)}
    assert again.load()[("a", 0)]["accuracy"] == 0.5
    assert [r["accuracy"] for r in again.records()] == [0.5, 0.6, 0.9]


def test_a_torn_last_line_is_dropped_and_cut_before_the_next_append(tmp_path):
    path = tmp_path / "r.jsonl"
    records = _file(path)
    records.append({"arch": "a", "seed": 0})
    with open(path, "a") as f:
        f.write('{"arch": "b", "se')  # a kill mid-write
    assert _file(path).done() == {("a", 0)}
    records.append({"arch": "c", "seed": 0})
    lines = path.read_text().splitlines()
    assert [json.loads(x)["arch"] for x in lines] == ["a", "c"]


def test_lines_of_another_kind_or_setting_are_refused_with_one_line(tmp_path):
    path = tmp_path / "r.jsonl"
    _file(path).append({"arch": "a", "seed": 0})
    with pytest.raises(UserError) as info:
        _file(path, identity={"space": "s", "steps": 20}).load()
    message = str(info.value)
    assert "line 1" in message and "steps=10 (this run: 20)" in message and "pass a new --results file" in message
    assert "\n" not in message
    with pytest.raises(UserError, match="is not a test record"):
        _file(path, kind="tf_oneshot.other").load()


def test_a_line_of_another_search_space_is_named_so_before_other_settings(tmp_path):
    path = tmp_path / "r.jsonl"
    space = {"space": "darts64", "filters": 4, "num_cells": 1}
    _file(path, identity={"space": space, "steps": 10}).append({"arch": "a", "seed": 0})
    other = {"space": "darts64", "filters": 8, "num_cells": 1}
    with pytest.raises(UserError) as info:
        _file(path, identity={"space": other, "steps": 20}).load()
    assert str(info.value) == (f"{path} line 1 is a test record of another search space, darts64 (filters=4) "
                               "(this run: darts64 (filters=8)); pass a new --results file.")


def test_normalize_reads_lines_of_an_older_version_and_check_validates_them(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_text(json.dumps({"kind": "tf_oneshot.test", "arch": "a", "seed": 0, "space": "s"}) + "\n")
    records = _file(path, normalize=lambda r: {"steps": 10, **r})  # lines from before `steps` was recorded
    assert records.done() == {("a", 0)}

    def check(record, where):
        if not isinstance(record.get("accuracy"), float):
            raise UserError(f"{where} has no accuracy")

    with pytest.raises(UserError, match="line 1 has no accuracy"):
        _file(path, normalize=lambda r: {"steps": 10, **r}, check=check).load()


def test_files_without_a_kind_check_their_identity_only(tmp_path):
    records = _file(tmp_path / "r.jsonl", kind=None)
    assert "kind" not in records.append({"arch": "a", "seed": 0})
    assert _file(tmp_path / "r.jsonl", kind=None).done() == {("a", 0)}


def test_remote_lines_are_batched_until_flush(tmp_path, monkeypatch):
    import tf_oneshot.record_file as module

    written = []
    monkeypatch.setattr(module, "append_jsonl_lines", lambda path, lines: written.append(list(lines)))
    records = _file("gs://bucket/r.jsonl", flush_seconds=3600.0)
    records.append({"arch": "a", "seed": 0})
    records.append({"arch": "b", "seed": 0})
    assert written == []
    records.flush()
    assert [[line["arch"] for line in batch] for batch in written] == [["a", "b"]]
