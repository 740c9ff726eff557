"""Training-free proxies (tf_oneshot.search.proxies): values, seeding, the scorer interface."""

import math

import numpy as np
import pytest

from tf_oneshot.errors import UserError
from tf_oneshot.search import proxies
from tf_oneshot.search_spaces import get_space
from tf_oneshot.search_spaces.darts64 import Darts64Space

TINY = Darts64Space(stem_filters=6, filters=4, num_cells=2, image_shape=(8, 8, 1), num_classes=3)


def _batch(n=8):
    rng = np.random.default_rng(0)
    return rng.normal(size=(n, 8, 8, 1)).astype(np.float32), rng.integers(0, 3, n)


def test_cost_proxies_are_the_space_arithmetic():
    archs = list(TINY.enumerate())[:5]
    values = proxies.proxy_values(TINY, archs, ["params", "flops"])
    assert values["params"].tolist() == [TINY.count(a).params for a in archs]
    assert values["flops"].tolist() == [TINY.count(a).flops for a in archs]


def test_model_proxies_are_finite_seeded_and_differ_between_children():
    archs = list(TINY.enumerate())[:3]
    images, labels = _batch()
    first = proxies.proxy_values(TINY, archs, proxies.MODEL_PROXIES, images, labels, seed=1)
    again = proxies.proxy_values(TINY, archs, proxies.MODEL_PROXIES, images, labels, seed=1)
    for name in proxies.MODEL_PROXIES:
        assert np.isfinite(first[name]).all(), name
        np.testing.assert_allclose(first[name], again[name], rtol=1e-5)
    assert len(set(first["synflow"].round(6).tolist())) > 1
    assert (first["grad_norm"] > 0).all() and (first["snip"] > 0).all()


def test_synflow_restores_the_weights_and_equals_the_linear_case():
    import keras

    # One dense layer without bias: R = sum_j sum_i |w_ij|, dR/dw = sign(w) -> score = sum |w|.
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, use_bias=False)])
    weights = np.array([[1.0, -2.0], [0.5, 3.0], [-1.0, 0.0]], np.float32)
    model.layers[0].kernel.assign(weights)
    assert math.isclose(proxies.synflow(model, (3,)), np.abs(weights).sum(), rel_tol=1e-6)
    np.testing.assert_array_equal(model.layers[0].kernel.numpy(), weights)


def test_data_proxies_need_a_minibatch_and_names_are_checked():
    arch = next(iter(TINY.enumerate()))
    with pytest.raises(UserError, match="minibatch"):
        proxies.proxy_values(TINY, [arch], ["snip"])
    with pytest.raises(UserError, match="unknown; choose from params"):
        proxies.check_proxies(["zico"])


def test_proxy_scorer_has_the_scorer_interface():
    images, labels = _batch()
    scorer = proxies.ProxyScorer(TINY, "jacob_cov", images, labels, step=7)
    archs = list(TINY.enumerate())[:2]
    scores = scorer.score(archs)
    assert [set(s) for s in scores] == [{"oneshot_accuracy", "loss", "jacob_cov"}] * 2
    assert scores[0]["oneshot_accuracy"] == scores[0]["jacob_cov"]
    assert scorer.options["scorer"] == "jacob_cov" and scorer.step == 7 and scorer.archs_per_call == 1


def test_proxies_run_on_the_bender_cell_space():
    space = get_space("bender_cell", filters=4, num_cells=1, num_stacks=1, image_shape=(8, 8, 1), num_classes=3)
    rng = np.random.default_rng(0)
    images, labels = _batch(4)
    values = proxies.proxy_values(space, [space.sample(rng)], proxies.PROXIES, images, labels)
    assert all(np.isfinite(v).all() for v in values.values())


def test_flags_name_every_proxy():
    from absl import flags as absl_flags

    from tf_oneshot.commands import flags  # noqa: F401  (defines the flags)

    assert absl_flags.FLAGS["scorer"].parser.enum_values == ["oneshot", *proxies.PROXIES]
    assert set(absl_flags.FLAGS["proxies"].default) <= set(proxies.PROXIES)


def test_search_by_a_proxy_writes_its_own_lines(oneshot_model_dir, tmp_path, capsys):
    from tf_oneshot.commands import cli
    from tf_oneshot.io_utils import read_jsonl

    results = str(tmp_path / "r.jsonl")
    flags = ["tf-oneshot", "search", f"--model_dir={oneshot_model_dir}", f"--results={results}", "--seed=2"]
    assert cli.main([*flags, "--scorer=params", "--num_architectures=4"]) == 0
    lines = read_jsonl(results)
    assert len(lines) == 4 and all(r["oneshot_accuracy"] == r["params"] == r["params"] for r in lines)
    assert {r["options"]["scorer"] for r in lines} == {"params"}
    capsys.readouterr()
    assert cli.main([*flags, "--scorer=snip", "--num_architectures=2", "--kl"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "tf-oneshot: error: --scorer=snip is training-free; drop --kl (options of the one-shot scorer)."
    # The same file holds another search's lines: refused, one line.
    assert cli.main([*flags, "--scorer=snip", "--num_architectures=2"]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
    assert cli.main([*flags[:-2], f"--results={tmp_path / 's.jsonl'}", "--scorer=snip",
                     "--num_architectures=2"]) == 0
    assert all(r["snip"] > 0 for r in read_jsonl(str(tmp_path / "s.jsonl")))
