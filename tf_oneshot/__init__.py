"""tf_oneshot: one-shot neural architecture search for Keras 3 / TensorFlow 2.

Bender et al., "Understanding and Simplifying One-Shot Architecture Search"
(ICML 2018), with the sampling, search and analysis of the papers that
followed it. The public API, used by the tests as a user would:

    space = tf_oneshot.CellSpace(filters=16, num_cells=6)
    arch = space.parse("01:25/2:0/013:46/04:3")
    tf_oneshot.train(tf_oneshot.TrainConfig(dataset="digits"), "runs/x")
    oracle = tf_oneshot.OneShotOracle("runs/x", algorithm="evolution", max_trials=100)

Names that need TensorFlow load on first use, so `import tf_oneshot` and the
search spaces stay cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

from tf_oneshot.errors import UserError
from tf_oneshot.search_spaces import (
    Architecture,
    Cost,
    OneOf,
    SearchSpace,
    SubsetOf,
    get_space,
    register,
    space_from_config,
)

__version__ = "0.1.0"

_LAZY = {
    # The built-in cell space of Bender et al. 2018, under its old names.
    "CellSpace": "tf_oneshot.search_spaces.bender_cell",
    "CellArchitecture": "tf_oneshot.search_spaces.bender_cell",
    "Block": "tf_oneshot.search_spaces.bender_cell",
    "OP_NAMES": "tf_oneshot.search_spaces.bender_cell",
    "TrainConfig": "tf_oneshot.config",
    "train": "tf_oneshot.trainer",
    "load_oneshot": "tf_oneshot.trainer",
    "get_strategy": "tf_oneshot.distribute",
    "OneShotModel": "tf_oneshot.oneshot_model",
    "GhostBatchNormalization": "tf_oneshot.layers.ghost_batch_norm",
    "PathDropout": "tf_oneshot.layers.path_dropout",
    "layers": "tf_oneshot.layers",
    "dataset_info": "tf_oneshot.data",
    "make_dataset": "tf_oneshot.data",
    "OneShotOracle": "tf_oneshot.tuner",
    "OneShotTuner": "tf_oneshot.tuner",
    "IteratedOneShotOracle": "tf_oneshot.tuner_nas",
    "run_search": "tf_oneshot.search.driver",
    "retrain": "tf_oneshot.retrain",
    "analyze": "tf_oneshot.analysis.report",
    "rank_metrics": "tf_oneshot.analysis.rank_metrics",
}


def __getattr__(name: str) -> Any:
    if name == "layers":
        return importlib.import_module("tf_oneshot.layers")
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'tf_oneshot' has no attribute {name!r}")


__all__ = [
    "Architecture",
    "Cost",
    "OneOf",
    "SearchSpace",
    "SubsetOf",
    "UserError",
    "get_space",
    "register",
    "space_from_config",
    *_LAZY,
]
