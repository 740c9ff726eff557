"""Figures are real PNGs of the asked size; analyze writes a report with the measured metrics."""

import json
import os

import matplotlib.image
import numpy as np
import pytest

from tf_oneshot.analysis import (
    accuracy_then_loss,
    analyze,
    kendall_tau,
    plot_kl_vs_accuracy,
    plot_oneshot_histogram,
    plot_oneshot_vs_standalone,
    plot_search_progress,
    plots,
    rank_metrics,
)
from tf_oneshot.analysis.plots import evolution_progress
from tf_oneshot.analysis.report import BOOTSTRAP_RESAMPLES
from tf_oneshot.errors import UserError
from tf_oneshot.io_utils import append_jsonl
from tf_oneshot.search_spaces import CellSpace

SPACE = CellSpace(num_blocks=2, filters=4, num_cells=2, num_stacks=1, image_shape=(8, 8, 1))


def _png_shape(path):
    with open(path, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    return matplotlib.image.imread(path).shape


def test_plots_are_pngs_of_the_requested_size(tmp_path):
    rng = np.random.default_rng(0)
    acc = rng.random(30)
    paths = [
        plot_oneshot_vs_standalone(acc[:8], acc[8:16], str(tmp_path / "a.png"),
                                   standalone_std=acc[16:24] / 10, size=(640, 480)),
        plot_oneshot_histogram(acc, str(tmp_path / "b.png"), size=(500, 300)),
        plot_kl_vs_accuracy(acc, acc[::-1], str(tmp_path / "c.png"), size=(320, 240)),
        plot_search_progress(acc[:20], [0] * 5 + [1] * 5, acc[20:], str(tmp_path / "d.png"),
                             size=(800, 600)),
    ]
    shapes = [_png_shape(p) for p in paths]
    assert [s[:2] for s in shapes] == [(480, 640), (300, 500), (240, 320), (600, 800)]
    # Something was drawn: not a blank canvas.
    assert all(matplotlib.image.imread(p)[..., :3].std() > 0.05 for p in paths)
    assert sorted(os.listdir(tmp_path)) == ["a.png", "b.png", "c.png", "d.png"]  # no temp files


def test_evolution_progress_counts_and_best_so_far():
    counts, best, within = evolution_progress([0, 0, 1, 1, 2], [0.5, 0.7, 0.6, 0.65, 0.9])
    assert counts.tolist() == [2, 4, 5]
    assert best.tolist() == [0.7, 0.7, 0.9]
    assert within.tolist() == [0.7, 0.65, 0.9]


def _search_line(space, arch, accuracy, algorithm, generation, rng, step=400):
    cost = space.count(arch)
    # As tf_oneshot.search.results writes them: the search's identity on every line.
    return {
        "architecture": str(arch), "oneshot_accuracy": accuracy, "loss": 1.0,
        "params": cost.params, "flops": cost.flops, "seconds": 0.1, "kl": float(rng.random()),
        "generation": generation, "space": space.to_config(), "checkpoint_step": step,
        "bn_mode": "batch", "algorithm": algorithm, "seed": 0, "constraints": {}, "options": {},
    }


def _write_results(tmp_path, space=SPACE, retrain_archs=6, seeds=(0, 1)):
    """A random search of 20, an evolution of 4 generations of 5, a retrain of 6 x seeds."""
    rng = np.random.default_rng(1)
    random_file = str(tmp_path / "random.jsonl")
    evolution_file = str(tmp_path / "evolution.jsonl")
    retrain = str(tmp_path / "retrain.jsonl")
    scores = {}
    for i in range(40):
        arch = space.sample(rng)
        accuracy = float(0.3 + 0.6 * rng.random())
        scores.setdefault(str(arch), accuracy)
        if i < 20:
            append_jsonl(random_file, _search_line(space, arch, accuracy, "random", None, rng))
        else:
            line = _search_line(space, arch, accuracy, "evolution", (i - 20) // 5, rng)
            append_jsonl(evolution_file, line)
    chosen = list(scores)[:retrain_archs]
    standalone = {}
    for k, arch in enumerate(chosen):
        for seed in seeds:
            acc = 0.8 + 0.01 * k + 0.001 * seed
            standalone.setdefault(arch, []).append(acc)
            append_jsonl(retrain, {
                "architecture": arch, "seed": seed, "validation_accuracy": acc,
                "test_accuracy": acc - 0.01, "params": 100, "flops": 1000,
                "oneshot_accuracy": scores[arch], "space": space.to_config(),
            })
    expected = rank_metrics([scores[a] for a in chosen], [np.mean(standalone[a]) for a in chosen])
    return [random_file, evolution_file], retrain, expected, chosen


def test_analyze_writes_report_with_the_measured_metrics(tmp_path):
    search, retrain, expected, chosen = _write_results(tmp_path)
    out = str(tmp_path / "analysis")
    lines = []
    result = analyze(search, retrain, out, log=lines.append)
    assert result.metrics.num_architectures == 6
    assert result.metrics.kendall_tau == pytest.approx(expected.kendall_tau)
    assert result.metrics.spearman_rho == pytest.approx(expected.spearman_rho)
    assert result.metrics.pairwise_accuracy == pytest.approx(expected.pairwise_accuracy)
    assert result.best_architecture == chosen[-1]  # highest stand-alone mean by construction
    assert result.num_architectures_scored == 40
    assert set(result.plots) == {"oneshot_vs_standalone", "oneshot_histogram",
                                 "kl_vs_accuracy", "search_progress"}
    for p in result.plots.values():
        assert _png_shape(p)[:2] == (600, 800)
    report = open(os.path.join(out, "report.md")).read()
    for needle in ("Kendall tau", "Spearman rho", "pairwise accuracy",
                   f"{expected.kendall_tau:.3f}", f"{expected.spearman_rho:.3f}",
                   f"{expected.pairwise_accuracy:.3f}", "![", "oneshot_vs_standalone.png",
                   chosen[0]):
        assert needle in report, needle
    saved = json.load(open(os.path.join(out, "analysis.json")))
    assert saved["kendall_tau"] == pytest.approx(expected.kendall_tau)
    assert saved["plots"]["search_progress"] == "search_progress.png"
    assert len(saved["architectures"]) == 6
    assert any("Kendall tau" in line for line in lines)


def test_analyze_refuses_an_earlier_run_and_loses_nothing(tmp_path):
    search, retrain, _, _ = _write_results(tmp_path)
    out = str(tmp_path / "analysis")
    analyze(search, retrain, out, log=lambda s: None)
    before = open(os.path.join(out, "report.md")).read()
    with pytest.raises(UserError, match="holds an earlier run.*new directory.*--overwrite"):
        analyze(search, None, out, log=lambda s: None)
    assert open(os.path.join(out, "report.md")).read() == before
    again = analyze(search, None, out, overwrite=True, log=lambda s: None)
    assert "oneshot_vs_standalone" not in again.plots


def test_analyze_rejects_bad_inputs(tmp_path):
    search, retrain, _, _ = _write_results(tmp_path)
    out = str(tmp_path / "out")
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(UserError, match="empty"):
        analyze(str(empty), None, out)
    with pytest.raises(UserError, match="nothing to analyze"):
        analyze(None, None, out)
    with pytest.raises(UserError, match="does not exist"):
        analyze(str(tmp_path / "missing.jsonl"), None, out)
    other = CellSpace(num_blocks=3, filters=4, num_cells=2, num_stacks=1, image_shape=(8, 8, 1))
    other_dir = tmp_path / "other"
    other_dir.mkdir()
    _, other_retrain, _, _ = _write_results(other_dir, space=other)
    with pytest.raises(UserError, match="different search spaces"):
        analyze(search, other_retrain, out)
    with pytest.raises(UserError, match="different search spaces"):
        analyze([search[0], str(other_dir / "evolution.jsonl")], None, out)
    mixed = str(tmp_path / "mixed.jsonl")
    for line in open(search[0]).readlines()[:2] + open(other_dir / "random.jsonl").readlines()[:2]:
        with open(mixed, "a") as f:
            f.write(line)
    with pytest.raises(UserError, match="mixes results of 2 search spaces"):
        analyze(mixed, None, out)
    later = str(tmp_path / "later.jsonl")
    append_jsonl(later, _search_line(SPACE, SPACE.sample(np.random.default_rng(5)), 0.5, "evolution",
                                     0, np.random.default_rng(5), step=800))
    with pytest.raises(UserError, match="checkpoint_step=400.*checkpoint_step=800.*not comparable"):
        analyze([search[0], later], None, out)
    assert not os.path.exists(out)  # nothing was written on the way to an error
    # A torn last line (a kill mid-append) is dropped, not an error.
    with open(retrain, "a") as f:
        f.write('{"architecture": "01:2')
    assert analyze(search, retrain, out, log=lambda s: None).metrics.num_architectures == 6


def test_full_train_results_are_ranked_on_the_test_split_and_the_report_says_so(tmp_path):
    """`retrain --full_train` leaves no validation split: analyze ranks by test accuracy (§3.4)."""
    search, retrain, _, chosen = _write_results(tmp_path)
    full = str(tmp_path / "full.jsonl")
    test_acc = {}
    for line in (json.loads(x) for x in open(retrain)):
        # Test accuracies rank the architectures in the reverse order of the validation ones.
        test_acc.setdefault(line["architecture"], []).append(0.9 - 0.01 * chosen.index(line["architecture"])
                                                             - 0.001 * line["seed"])
        append_jsonl(full, {**line, "validation_accuracy": None, "validation_examples": 0, "full_train": True,
                            "test_accuracy": test_acc[line["architecture"]][-1]})
    scores = {}
    for path in search:
        for line in map(json.loads, open(path)):
            scores.setdefault(line["architecture"], line["oneshot_accuracy"])
    expected = rank_metrics([scores[a] for a in chosen], [np.mean(test_acc[a]) for a in chosen])
    out = str(tmp_path / "analysis")
    lines = []
    result = analyze(search, full, out, log=lines.append)
    assert result.standalone_split == "test"
    assert result.metrics.kendall_tau == pytest.approx(expected.kendall_tau)
    assert result.best_architecture == chosen[0]  # best on test, worst on validation
    report = open(os.path.join(out, "report.md")).read()
    assert "Stand-alone accuracy is the **test** accuracy" in report and "--full_train" in report
    assert "stand-alone test acc. (mean ± std)" in report
    saved = json.load(open(os.path.join(out, "analysis.json")))
    assert saved["standalone_split"] == "test"
    assert saved["architectures"][0]["standalone_validation_mean"] is None
    assert any("train + validation" in line and "test accuracies" in line for line in lines)
    # One results file holds one kind of run.
    mixed = str(tmp_path / "mixed.jsonl")
    for line in open(retrain).readlines()[:2] + open(full).readlines()[:2]:
        with open(mixed, "a") as f:
            f.write(line)
    with pytest.raises(UserError, match="mixes runs trained on train \\+ validation"):
        analyze(search, mixed, str(tmp_path / "other"))


def _tied_retrain(tmp_path, search, chosen, with_loss):
    """Retrain lines of `chosen` whose mean accuracies take 3 values; losses (if any) all differ."""
    scores = {}
    for path in search:
        for line in map(json.loads, open(path)):
            scores.setdefault(line["architecture"], line["oneshot_accuracy"])
    path = str(tmp_path / f"tied_{with_loss}.jsonl")
    accuracy, loss = {}, {}
    for k, arch in enumerate(chosen):
        for seed in (0, 1):
            acc = (290 + k % 3) / 300  # the few distinct values a 300-image split gives
            value = 0.2 - 0.01 * k + 0.001 * seed
            accuracy.setdefault(arch, []).append(acc)
            loss.setdefault(arch, []).append(value)
            line = {"architecture": arch, "seed": seed, "validation_accuracy": acc, "test_accuracy": acc,
                    "params": 100, "flops": 1000, "oneshot_accuracy": scores[arch], "space": SPACE.to_config()}
            append_jsonl(path, {**line, "validation_loss": value} if with_loss else line)
    mean = lambda d: [float(np.mean(d[a])) for a in chosen]  # noqa: E731
    return path, [scores[a] for a in chosen], mean(accuracy), mean(loss)


def test_analyze_breaks_accuracy_ties_by_loss_and_reports_the_interval(tmp_path):
    search, _, _, chosen = _write_results(tmp_path, retrain_archs=9)
    tied, oneshot, acc, loss = _tied_retrain(tmp_path, search, chosen, with_loss=True)
    out = str(tmp_path / "analysis")
    lines = []
    result = analyze(search, tied, out, log=lines.append)
    ranking = accuracy_then_loss(acc, loss)
    assert len(set(ranking.tolist())) == 9  # the losses separate every accuracy tie
    # The interval resamples architectures in the order analyze holds them (by one-shot accuracy).
    order = [chosen.index(j.architecture) for j in result.joined]
    expected = rank_metrics(np.array(oneshot)[order], ranking[order], n_resamples=BOOTSTRAP_RESAMPLES)
    assert result.metrics.kendall_tau == pytest.approx(expected.kendall_tau)
    assert result.metrics.kendall_tau_ci == pytest.approx(expected.kendall_tau_ci)
    assert result.metrics.kendall_tau_ci[0] <= result.metrics.kendall_tau <= result.metrics.kendall_tau_ci[1]
    assert result.accuracy_kendall_tau == pytest.approx(kendall_tau(oneshot, acc))
    assert (result.distinct_accuracies, result.distinct_standalone, result.tied_pairs) == (3, 9, 0)
    assert result.standalone_losses == pytest.approx(dict(zip(chosen, loss)))
    saved = json.load(open(os.path.join(out, "analysis.json")))
    assert saved["kendall_tau_ci"] == pytest.approx(list(expected.kendall_tau_ci))
    assert saved["standalone_measure"] == "mean validation accuracy, ties broken by mean validation loss"
    assert (saved["distinct_standalone_accuracies"], saved["tied_standalone_pairs"]) == (3, 0)
    report = open(os.path.join(out, "report.md")).read()
    low, high = expected.kendall_tau_ci
    assert f"{expected.kendall_tau:.3f} [{low:.3f}, {high:.3f}]" in report
    assert "| distinct stand-alone accuracies / ranking values | 3 / 9 |" in report
    assert "ties broken by mean validation loss" in report
    assert any("0 tied pairs" in line and "Kendall tau" in line for line in lines)

    # Without recorded losses the ranking is the accuracy, ties and all, and the report counts them.
    plain, _, _, _ = _tied_retrain(tmp_path, search, chosen, with_loss=False)
    result = analyze(search, plain, str(tmp_path / "plain"), log=lambda s: None)
    assert result.metrics.kendall_tau == pytest.approx(kendall_tau(oneshot, acc))
    assert (result.distinct_accuracies, result.distinct_standalone, result.tied_pairs) == (3, 3, 9)
    assert result.standalone_losses == {}
    assert "| tied pairs in the stand-alone ranking | 9 of 36 |" in open(tmp_path / "plain" / "report.md").read()


def test_analyze_ranks_by_the_loss_when_asked_and_says_so(tmp_path):
    search, _, _, chosen = _write_results(tmp_path, retrain_archs=9)
    tied, oneshot, acc, loss = _tied_retrain(tmp_path, search, chosen, with_loss=True)
    out = str(tmp_path / "by_loss")
    result = analyze(search, tied, out, log=lambda s: None, rank_by="loss")
    order = [chosen.index(j.architecture) for j in result.joined]
    expected = rank_metrics(np.array(oneshot)[order], -np.array(loss)[order], n_resamples=BOOTSTRAP_RESAMPLES)
    assert result.metrics.kendall_tau == pytest.approx(expected.kendall_tau)
    assert result.metrics.kendall_tau != pytest.approx(analyze(search, tied, str(tmp_path / "acc"), log=lambda s: None,
                                                               rank_by="accuracy").metrics.kendall_tau)
    assert result.accuracy_kendall_tau == pytest.approx(kendall_tau(oneshot, acc))  # still reported beside it
    saved = json.load(open(os.path.join(out, "analysis.json")))
    assert saved["standalone_measure"] == "mean validation loss (lower first)"
    assert "ranked by their mean loss" in open(os.path.join(out, "report.md")).read()
    # Lines without losses cannot be ranked by them: one line, nothing written.
    plain, _, _, _ = _tied_retrain(tmp_path, search, chosen, with_loss=False)
    with pytest.raises(UserError, match="rank_by=loss needs the validation loss"):
        analyze(search, plain, str(tmp_path / "refused"), log=lambda s: None, rank_by="loss")
    assert not os.path.exists(tmp_path / "refused" / "analysis.json")


def test_analyze_reports_the_training_free_baselines_beside_the_one_shot_ranking(tmp_path):
    from tf_oneshot.analysis.rank_metrics import partial_kendall_tau

    rng = np.random.default_rng(5)
    retrain, archs = str(tmp_path / "retrain.jsonl"), []
    params = [100, 300, 200, 500, 400, 600]
    for k, p in enumerate(params):
        arch = str(SPACE.sample(rng))
        archs.append(arch)
        append_jsonl(retrain, {"architecture": arch, "seed": 0, "validation_accuracy": 0.8 + 0.01 * k,
                               "test_accuracy": 0.7, "params": p, "flops": 10 * (7 - k),
                               "oneshot_accuracy": 0.5 + 0.01 * ((k * 5) % 6), "space": SPACE.to_config()})
    proxy = {a: float(i) for i, a in enumerate(archs)}  # agrees with stand-alone exactly
    result = analyze(None, retrain, str(tmp_path / "out"), log=lambda line: None, proxies={"snip": proxy})
    standalone = [0.8 + 0.01 * k for k in range(6)]
    oneshot = [0.5 + 0.01 * ((k * 5) % 6) for k in range(6)]
    assert result.baselines["params"].kendall_tau == pytest.approx(kendall_tau(params, standalone))
    assert result.baselines["flops"].kendall_tau == pytest.approx(-1.0)
    assert result.baselines["snip"].kendall_tau == pytest.approx(1.0)
    assert result.baselines["params"].kendall_tau_ci[0] <= result.baselines["params"].kendall_tau
    assert result.partial_taus["oneshot"] == pytest.approx(partial_kendall_tau(oneshot, standalone, params))
    assert np.isnan(result.partial_taus["params"])
    report = open(result.report).read()
    assert "## Beside the training-free baselines" in report and "| snip | 1.000" in report
    saved = json.load(open(os.path.join(str(tmp_path / "out"), "analysis.json")))
    assert saved["baselines"]["params"]["partial_tau_params"] is None
    assert saved["partial_tau_params"] == pytest.approx(result.partial_taus["oneshot"])


def test_report_shows_no_spread_over_one_seed(tmp_path):
    """Issue 19 item 10: one seed printed "± 0.0000", a spread that was never measured."""
    search, retrain, _, _ = _write_results(tmp_path, seeds=(0,))
    out = str(tmp_path / "analysis")
    analyze(search, retrain, out, log=lambda s: None)
    rows = [line for line in open(os.path.join(out, "report.md")) if line.startswith("| `")]
    assert rows and all("±" not in row and "(1 seed)" in row for row in rows)
    (tmp_path / "two").mkdir()
    search2, retrain2, _, _ = _write_results(tmp_path / "two", seeds=(0, 1))
    analyze(search2, retrain2, str(tmp_path / "two_out"), log=lambda s: None)
    rows = [line for line in open(os.path.join(str(tmp_path / "two_out"), "report.md")) if line.startswith("| `")]
    assert rows and all(" ± " in row for row in rows)


def test_scored_counts_say_what_they_count(tmp_path, monkeypatch):
    # Issue 19 item 10: screen 300 / report 280 / plot 300. The screens count each search's
    # lines (200 + 100); the report counted distinct architectures (evolution re-scored some
    # random search had scored); the histogram every line. Now each says which.
    rng = np.random.default_rng(3)
    archs = [SPACE.sample(rng) for _ in range(8)]
    files = [str(tmp_path / "random.jsonl"), str(tmp_path / "evolution.jsonl")]
    for arch in archs[:6]:
        append_jsonl(files[0], _search_line(SPACE, arch, 0.5, "random", None, rng))
    for arch in archs[4:]:  # two architectures both searches scored
        append_jsonl(files[1], _search_line(SPACE, arch, 0.5, "evolution", 0, rng))
    titles = {}
    real = plots.plot_oneshot_histogram
    monkeypatch.setattr(plots, "plot_oneshot_histogram",
                        lambda acc, path, **kw: titles.update(n=len(acc), **kw) or real(acc, path, **kw))
    result = analyze(files, None, str(tmp_path / "out"), log=lambda _: None)
    assert (result.num_architectures_scored, result.num_scores) == (8, 10)
    assert titles == {"n": 10, "distinct": 8}
    report = open(os.path.join(tmp_path, "out", "report.md")).read()
    assert "| architectures scored with the one-shot model | 8 distinct (10 scores in 2 file(s)" in report
    assert json.load(open(os.path.join(tmp_path, "out", "analysis.json")))["num_scores"] == 10
