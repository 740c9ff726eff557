"""The space contract: every registered space, and the example user space, through every stage.

A new space gets all of this by appearing in SPACES: string and JSON round
trips, exact size (by enumeration where small), counts equal to the Keras
models', one trace for 50 architectures, an XLA-compiled train step under one more
sampler (the samplers in turn over the spaces), scoring, random and
evolutionary search, a KerasTuner trial and stand-alone retraining.
"""

import os

import keras_tuner
import numpy as np
import pytest

import tf_oneshot
from tf_oneshot.search import Evolution, RandomSearch, ResultsFile, run_search
from tf_oneshot.search.scorer import OneShotScorer
from tf_oneshot.search_spaces import check, get_space
from tf_oneshot.training import trainer
from tf_oneshot.training.config import TrainConfig

EXAMPLES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples")
EXAMPLE = os.path.join(EXAMPLES, "mobile_chain.py") + ":MobileChainSpace"
RESIDUAL = os.path.join(EXAMPLES, "residual_chain.py") + ":ResidualChainSpace"
# name or spec -> space options small enough for seconds on the embedded 8x8 digits.
SPACES = {
    "bender_cell": {"filters": 4, "num_cells": 2, "num_stacks": 2, "num_blocks": 2},
    "darts64": {"filters": 4, "num_cells": 2},
    # Fields without a named flag go through --space_args, so tuples are written "a:b:c";
    # stem_stride 1 is what the digits suggest (the space's default, 4, is Table 2's at 224 px).
    "spos_blocks": {"stage_blocks": "1:2", "channels": "4:8:12:16", "stem_stride": 1},
    # One block per stage: a block with an identity shortcut and one with a projection.
    "spos_quant_resnet18": {"stage_blocks": "1:1", "channels": "4:4:8", "stem_stride": 1},
    # spos_quant_resnet34 differs from resnet18 only in its default stage_blocks, so at these
    # options it is the same network: tests/test_spos_quant.py checks its own sizes and counts.
    # One choice block of mid width 5, the narrowest with 8 distinct widths (0.2x-1.6x): the pipeline
    # is the same for any number of blocks, and tests/test_spos_channels.py covers every kind of block.
    "spos_channels": {"stage_blocks": "1", "channels": "4:10:16", "stem_stride": 1},
    "spos_blocks_channels": {"stage_blocks": "1", "channels": "4:10:16", "stem_stride": 1},
    EXAMPLE: {},
    RESIDUAL: {"num_blocks": 2, "width": 4},  # the worked example of docs/spaces.md
}
IDS = ["bender_cell", "darts64", "spos_blocks", "spos_quant_resnet18", "spos_channels", "spos_blocks_channels", "example",
       "residual_chain"]
SAMPLERS = ("path_dropout", "uniform", "proportional", "uniform_constraint")


def tiny_space(spec):
    return get_space(spec, image_shape=(8, 8, 1), num_classes=10, **SPACES[spec])


def tiny_config(spec, **changes):
    named = ("filters", "num_cells", "num_stacks", "num_blocks", "stem_stride")
    options = {k: v for k, v in SPACES[spec].items() if k in named}
    space_args = ",".join(f"{k}={v}" for k, v in SPACES[spec].items() if k not in named) or None
    return TrainConfig(
        dataset="digits", space=spec, batch_size=32, ghost_batch_size=16, train_steps=3,
        checkpoint_every=3, log_every=3, eval_batches=1, space_args=space_args, **options,
    ).replace(**changes)


@pytest.fixture(scope="module", params=list(SPACES), ids=IDS)
def trained(request, tmp_path_factory):
    spec = request.param
    path = str(tmp_path_factory.mktemp("contract") / "model")
    result = trainer.train(tiny_config(spec), path, log=lambda s: None)
    return spec, path, result


# ----------------------------------------------------------- TF-free parts
@pytest.mark.parametrize("spec", list(SPACES), ids=IDS)
def test_round_trips_size_and_counts(spec):
    # The same checks a user runs on their own space (`tf-oneshot space --check`).
    space = tiny_space(spec)
    rng = np.random.default_rng(0)
    archs = [space.sample(rng) for _ in range(20)]
    assert check.check_round_trips(space, archs) is None
    for arch in archs:
        assert space.mutate(arch, rng, 1.0) != arch
    sizes = np.prod([d.size() for d in space.decisions()])
    assert space.size() == sizes
    if space.size() <= 5000:
        assert len(set(space.enumerate())) == space.size()
    oneshot = space.build_oneshot(16)
    assert check.check_checkpoint(oneshot) is None
    assert check.check_counts(space, oneshot, archs[:3], 16) is None
    assert check.check_masked_l2(space, oneshot, archs[:3], 16) is None


# ------------------------------------------------------------ the pipeline
def test_training_scoring_one_trace(trained):
    spec, path, result = trained
    assert result["step"] == 3 and np.isfinite(result["loss"]) and 0.0 <= result["val_accuracy"] <= 1.0
    scorer = OneShotScorer.from_model_dir(path, archs_per_pass=2, validation_examples=64)
    rng = np.random.default_rng(1)
    archs = [scorer.space.sample(rng) for _ in range(50)]
    scores = scorer.score(archs)
    assert len(scores) == 50 and all(0.0 <= s["oneshot_accuracy"] <= 1.0 for s in scores)
    assert scorer.tracing_count() == 1  # one graph for every architecture


def test_random_and_evolution_search(trained, tmp_path):
    spec, path, _ = trained
    scorer = OneShotScorer.from_model_dir(path, archs_per_pass=2, validation_examples=64)
    space = scorer.space
    for algorithm in (RandomSearch(space, 6, seed=0),
                      Evolution(space, 8, seed=0, population_size=4, num_parents=2)):
        identity = {"space": space.to_config(), "checkpoint_step": scorer.step, "bn_mode": "batch",
                    "algorithm": algorithm.name, "seed": 0, "constraints": {}, "options": {}}
        results = ResultsFile(str(tmp_path / f"{algorithm.name}.jsonl"), space, identity)
        summary = run_search(algorithm, scorer.score, results, batch_size=2, log=lambda s: None)
        assert summary["total"] == algorithm.num_architectures and len(results.load()) == summary["total"]


def test_tuner_trial(trained, tmp_path):
    spec, path, _ = trained
    oracle = tf_oneshot.OneShotOracle(path, algorithm="random", max_trials=2, seed=0)
    tuner = tf_oneshot.OneShotTuner(oracle, path, directory=str(tmp_path), project_name="p",
                                    scorer_kwargs={"validation_examples": 64})
    tuner.search(verbose=0)
    best = tuner.get_best_architectures(1)[0]
    assert best == oracle.space.validate(best)
    assert isinstance(oracle.get_best_trials(1)[0].score, float)


def test_retrain_one_architecture(trained, tmp_path):
    spec, path, _ = trained
    from tf_oneshot.training.retrain import Candidate, retrain

    space = tiny_space(spec)
    arch = space.sample(np.random.default_rng(3))
    config = tiny_config(spec, train_steps=2, log_every=2)
    summary = retrain([Candidate(arch)], space, config, [0], str(tmp_path / "r.jsonl"),
                      log=lambda s: None, recalibration_images=32)
    assert summary.trained == ((str(arch), 0),)
    record = summary.records[0]
    assert record["params"] == space.count(arch).params and 0.0 <= record["validation_accuracy"] <= 1.0


def rotation() -> list[tuple[str, str]]:
    """(space, sampler) pairs: each space once, the samplers in turn, so every sampler meets
    several spaces (and every space one sampler beside its default, trained by `trained`) at a
    CI cost linear in the number of spaces, not their product with the samplers."""
    return [(spec, SAMPLERS[i % len(SAMPLERS)]) for i, spec in enumerate(SPACES)]


@pytest.mark.slow
@pytest.mark.parametrize(("spec", "sampler"), rotation(), ids=[f"{i}-{s}" for i, (_, s) in zip(IDS, rotation())])
def test_a_few_xla_steps_under_another_sampler(spec, sampler, tmp_path):
    changes = {"sampler": sampler, "train_steps": 2, "checkpoint_every": 2, "log_every": 2, "jit_compile": True}
    if sampler == "uniform_constraint":
        space = tiny_space(spec)
        low, high = space.cost_bounds()["flops"] if space.cost_bounds() else (0, space.count_oneshot().flops)
        changes["max_flops"] = int((low + high) / 2)
    result = trainer.train(tiny_config(spec, **changes), str(tmp_path / "m"), log=lambda s: None)
    assert result["step"] == 2 and np.isfinite(result["loss"])


def test_keras_tuner_sees_every_decision():
    for spec in SPACES:
        space = tiny_space(spec)
        hp = keras_tuner.HyperParameters()
        from tf_oneshot.tuner import declare_hyperparameters

        declare_hyperparameters(space, hp)
        assert [h.name for h in hp.space] == [d.name for d in space.decisions()]
        assert np.prod([len(h.values) for h in hp.space]) == space.size()
