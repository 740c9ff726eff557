"""The results file and the search loop: kill at any moment, rerun, nothing lost or scored twice."""

import json
import os

import pytest

from tf_oneshot.errors import UserError
from tf_oneshot.io_utils import read_jsonl
from tf_oneshot.search import Evolution, RandomSearch, ResultsFile, run_search
from tf_oneshot.search_spaces import CellSpace

SPACE = CellSpace(filters=8, num_cells=2, num_stacks=2, num_blocks=3, image_shape=(8, 8, 1))


def fake_score(arch):
    value = sum(len(b.inputs) * 0.05 + 0.1 * max(b.ops) / 6 for b in arch.blocks)
    return {"oneshot_accuracy": round(value / 2, 6), "loss": round(2 - value, 6)}


class Scorer:
    """Fake batch scorer that records every architecture it scores and can 'die'."""

    def __init__(self, die_after_calls=None):
        self.calls = 0
        self.scored = []
        self.die_after = die_after_calls

    def __call__(self, archs):
        if self.die_after is not None and self.calls >= self.die_after:
            raise KeyboardInterrupt
        self.calls += 1
        self.scored += list(archs)
        return [fake_score(a) for a in archs]


def identity(algorithm="random", seed=0):
    return {
        "space": SPACE.to_config(), "checkpoint_step": 10, "bn_mode": "batch", "algorithm": algorithm,
        "seed": seed, "constraints": {"max_params": None}, "options": {},
    }


def make(kind, n, seed=0):
    if kind == "random":
        return RandomSearch(SPACE, n, seed=seed)
    return Evolution(SPACE, n, seed=seed, population_size=10, num_parents=3)


def run(path, kind, n, scorer, batch=4):
    results = ResultsFile(str(path), SPACE, identity(kind))
    return run_search(make(kind, n), scorer, results, batch_size=batch, log=lambda s: None)


def test_lines_hold_the_documented_fields(tmp_path):
    path = tmp_path / "r.jsonl"
    summary = run(path, "evolution", 25, Scorer())
    lines = read_jsonl(str(path))
    assert summary["scored"] == 25 and len(lines) == 25
    first = lines[0]
    for key in ("architecture", "oneshot_accuracy", "loss", "params", "flops", "seconds", "generation", "space"):
        assert key in first
    arch = SPACE.parse(first["architecture"])
    assert first["params"] == SPACE.count(arch).params and first["flops"] == SPACE.count(arch).flops
    assert first["space"]["space"] == "bender_cell"
    assert [r["generation"] for r in lines] == [0] * 10 + [1] * 10 + [2] * 5
    assert summary["best"][0][1] == max(r["oneshot_accuracy"] for r in lines)


@pytest.mark.parametrize("kind", ["random", "evolution"])
def test_kill_and_rerun_finishes_without_rescoring(tmp_path, kind):
    reference = tmp_path / "ref.jsonl"
    run(reference, kind, 37, Scorer(), batch=3)
    path = tmp_path / "r.jsonl"
    first = Scorer(die_after_calls=4)
    with pytest.raises(KeyboardInterrupt):
        run(path, kind, 37, first, batch=3)
    done = len(first.scored)
    assert done == {"random": 12, "evolution": 10}[kind]  # a generation's last batch may be short
    assert len(read_jsonl(str(path))) == done
    # A torn last line (killed mid-write) is dropped and cut.
    with open(path, "a") as f:
        f.write('{"architecture": "01:2')
    second = Scorer()
    summary = run(path, kind, 37, second, batch=5)
    assert summary == {**summary, "scored": 37 - done, "cached": done, "total": 37}
    assert not set(first.scored) & set(second.scored)
    lines = read_jsonl(str(path))
    assert len(lines) == 37 == len({r["architecture"] for r in lines})
    # Deterministic given the seed: the same architectures (and generations) as an
    # uninterrupted run.
    ref = {r["architecture"]: r["generation"] for r in read_jsonl(str(reference))}
    assert {r["architecture"]: r["generation"] for r in lines} == ref
    # A third run has nothing left to do.
    third = Scorer()
    assert run(path, kind, 37, third)["scored"] == 0 and third.calls == 0


def test_a_larger_budget_continues_the_same_run(tmp_path):
    path = tmp_path / "r.jsonl"
    run(path, "random", 10, Scorer())
    more = Scorer()
    run(path, "random", 16, more)
    assert len(more.scored) == 6
    ref = tmp_path / "ref.jsonl"
    run(ref, "random", 16, Scorer())
    assert [r["architecture"] for r in read_jsonl(str(path))] == [r["architecture"] for r in read_jsonl(str(ref))]


def test_malformed_architecture_line_is_one_clear_error(tmp_path):
    path = tmp_path / "r.jsonl"
    run(path, "random", 5, Scorer())
    lines = path.read_text().splitlines()
    bad = json.loads(lines[2])
    bad["architecture"] = "01:9/2:0/013:46"
    lines[2] = json.dumps(bad)
    path.write_text("\n".join(lines) + "\n")
    before = path.read_text()
    with pytest.raises(UserError, match=r"r.jsonl line 3: malformed architecture '01:9/2:0/013:46'"):
        run(path, "random", 5, Scorer())
    assert path.read_text() == before  # nothing lost


def test_lines_of_another_search_are_refused(tmp_path):
    path = tmp_path / "r.jsonl"
    run(path, "random", 3, Scorer())
    results = ResultsFile(str(path), SPACE, identity("random", seed=1))
    with pytest.raises(UserError, match="line 1 was written with another setting, seed=0 \\(this run: 1\\); rerun "
                                        "with the same flags or pass a new --results file"):
        results.load()
    path.write_text('{"architecture": "0:1/0:1/0:1", "oneshot_accuracy": "high"}\n')
    with pytest.raises(UserError, match="line 1 has oneshot_accuracy='high'"):
        ResultsFile(str(path), SPACE, identity()).load()


def test_remote_results_are_written_in_batches_and_at_the_end(monkeypatch):
    # A GCS object cannot be appended to: each write rewrites it. TF's ram://
    # file system stands in for GCS (any path with a scheme is treated so).
    from tf_oneshot import record_file

    writes = []
    real = record_file.append_jsonl_lines
    monkeypatch.setattr(record_file, "append_jsonl_lines",
                        lambda path, lines: (writes.append(len(lines)), real(path, lines)))
    path = "ram://search_results/remote.jsonl"
    results = ResultsFile(path, SPACE, identity())
    scorer = Scorer(die_after_calls=4)
    with pytest.raises(KeyboardInterrupt):  # killed mid-search: the buffered lines still land
        run_search(RandomSearch(SPACE, 40, seed=0), scorer, results, batch_size=5, log=lambda s: None)
    assert writes == [20] and len(read_jsonl(path)) == 20
    results = ResultsFile(path, SPACE, identity(), flush_seconds=0.0)  # every line is due at once
    summary = run_search(RandomSearch(SPACE, 40, seed=0), Scorer(), results, batch_size=5, log=lambda s: None)
    assert summary["cached"] == 20 and summary["scored"] == 20
    assert writes[1:] == [1] * 20
    lines = read_jsonl(path)
    assert len(lines) == 40 == len({r["architecture"] for r in lines})


def test_progress_prints_each_count_once(tmp_path):
    """Issue 19 item 10: the last progress line was printed twice (the loop's, then the final one)."""
    lines = []
    results = ResultsFile(str(tmp_path / "r.jsonl"), SPACE, identity("random"))
    run_search(make("random", 4), Scorer(), results, batch_size=4, log=lines.append, progress_every=0.0)
    shown = [line for line in lines if "architectures (" in line]
    assert len(shown) == len(set(line.split(" architectures")[0] for line in shown)) == 1, shown
    assert shown[-1].startswith("4/4 architectures (100.0%)")


def test_search_summaries_hold_each_score_the_best_so_far_and_a_histogram(tmp_path):
    import tensorflow as tf

    from tf_oneshot.search.runner import write_search_summaries

    write_search_summaries(str(tmp_path), [0.2, 0.5, 0.3])
    values: dict[str, list] = {}
    for f in os.listdir(tmp_path):
        for e in tf.compat.v1.train.summary_iterator(os.path.join(tmp_path, f)):
            for v in e.summary.value:
                values.setdefault(v.tag, []).append((e.step, v))
    def scalars(tag):
        return [(s, round(float(tf.make_ndarray(v.tensor)), 4)) for s, v in values[tag]]

    assert scalars("search/best_so_far") == [(0, 0.2), (1, 0.5), (2, 0.5)]
    assert [v for _, v in scalars("search/score")] == [0.2, 0.5, 0.3]
    (step, hist), = values["search/scores"]
    assert step == 2 and hist.metadata.plugin_data.plugin_name == "histograms"
