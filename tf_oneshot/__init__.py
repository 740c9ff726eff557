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
    OP_NAMES,
    Block,
    CellArchitecture,
    CellSpace,
    Cost,
    SearchSpace,
    get_space,
)

__version__ = "0.1.0"

_LAZY = {
    "TrainConfig": "tf_oneshot.config",
    "train": "tf_oneshot.trainer",
    "load_oneshot": "tf_oneshot.trainer",
    "get_strategy": "tf_oneshot.distribute",
    "OneShotModel": "tf_oneshot.oneshot_model",
    "build_standalone_model": "tf_oneshot.standalone",
    "build_all_on_model": "tf_oneshot.standalone",
    "GhostBatchNormalization": "tf_oneshot.layers.ghost_batch_norm",
    "PathDropout": "tf_oneshot.layers.path_dropout",
    "ChoiceBlock": "tf_oneshot.layers.choice_block",
    "dataset_info": "tf_oneshot.data",
    "make_dataset": "tf_oneshot.data",
    "OneShotOracle": "tf_oneshot.tuner",
    "OneShotTuner": "tf_oneshot.tuner",
    "run_search": "tf_oneshot.search.driver",
    "retrain": "tf_oneshot.retrain",
    "analyze": "tf_oneshot.analysis.report",
    "rank_metrics": "tf_oneshot.analysis.rank_metrics",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'tf_oneshot' has no attribute {name!r}")


__all__ = [
    "OP_NAMES",
    "Block",
    "CellArchitecture",
    "CellSpace",
    "Cost",
    "SearchSpace",
    "UserError",
    "get_space",
    *_LAZY,
]
