"""Stratified sampling, One-Shot Top and One-Shot Small (Bender et al. 2018, §4.1)."""

import numpy as np

from tf_oneshot.search import selection


def records(n=100):
    # Architecture i: accuracy i/100, params decreasing with i for even i.
    return [
        {"architecture": f"a{i:03d}", "oneshot_accuracy": i / 100, "params": (1000 - i) if i % 2 == 0 else 5000 + i}
        for i in range(n)
    ]


def test_buckets_are_equal_width_accuracy_ranges():
    b = selection.buckets(records(), 4)
    assert [len(x) for x in b] == [25, 25, 25, 25]
    assert max(r["oneshot_accuracy"] for r in b[0]) == 0.24
    assert min(r["oneshot_accuracy"] for r in b[3]) == 0.75


def test_stratified_sample_takes_per_bucket_and_is_seeded():
    picked = selection.stratified_sample(records(), num_buckets=10, per_bucket=4, seed=0)
    assert len(picked) == 40
    per = np.bincount([int(r["oneshot_accuracy"] * 10) for r in picked], minlength=10)
    assert per.tolist() == [4] * 10
    assert picked == selection.stratified_sample(records(), 10, 4, seed=0)
    assert picked != selection.stratified_sample(records(), 10, 4, seed=1)
    # A bucket with fewer records gives all of them.
    skewed = records(10) + [{"architecture": "z", "oneshot_accuracy": 5.0, "params": 1}]
    assert len(selection.stratified_sample(skewed, num_buckets=2, per_bucket=4)) == 5


def test_oneshot_top_best_k_or_stratified_from_pool():
    top = selection.oneshot_top(records(), k=3)
    assert [r["architecture"] for r in top] == ["a099", "a098", "a097"]
    # §4.1: "From the top 100 ... a stratified sample of 10".
    pooled = selection.oneshot_top(records(), k=5, pool=50, seed=0)
    accs = [r["oneshot_accuracy"] for r in pooled]
    assert len(pooled) == 5 and accs == sorted(accs, reverse=True)
    assert min(accs) >= 0.5 and min(accs) < 0.6 and max(accs) >= 0.9  # spread over the pool


def test_oneshot_small_smallest_above_the_percentile():
    small = selection.oneshot_small(records(), k=3, percentile=90)
    # Threshold: the 90th percentile of 0.00..0.99 is 0.891; eligible 0.90..0.99.
    assert selection.accuracy_threshold(records(), 90) == np.percentile(np.arange(100) / 100, 90)
    assert [r["architecture"] for r in small] == ["a098", "a096", "a094"]
    assert [r["params"] for r in small] == [902, 904, 906]
