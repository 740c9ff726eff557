"""tf_oneshot: one-shot neural architecture search for Keras 3 / TensorFlow 2.

Bender et al., "Understanding and Simplifying One-Shot Architecture Search"
(ICML 2018), with the sampling, search and analysis of the papers that
followed it. The public API, used by the tests as a user would:

    space = tf_oneshot.CellSpace(filters=16, num_cells=6)
    arch = space.parse("01:25/2:0/013:46/04:3")
    tf_oneshot.train(tf_oneshot.TrainConfig(dataset="digits"), "runs/x")
    summary = tf_oneshot.search("runs/x", algorithm="evolution", num_architectures=1000)
    oracle = tf_oneshot.OneShotOracle("runs/x", algorithm="evolution", max_trials=100)

Names that need TensorFlow load on first use, so `import tf_oneshot` and the
search spaces stay cheap.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
import warnings
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
    "TrainConfig": "tf_oneshot.training.config",
    "DataConfig": "tf_oneshot.training.config",
    "SamplerConfig": "tf_oneshot.training.config",
    "OptimizerConfig": "tf_oneshot.training.config",
    "SpaceConfig": "tf_oneshot.search_spaces.space_config",
    "build_space": "tf_oneshot.search_spaces.space_config",
    "train": "tf_oneshot.training.trainer",
    "load_oneshot": "tf_oneshot.training.trainer",
    "get_strategy": "tf_oneshot.training.distribute",
    "OneShotModel": "tf_oneshot.search_spaces.supernet",
    "GhostBatchNormalization": "tf_oneshot.layers.ghost_batch_norm",
    "PathDropout": "tf_oneshot.layers.path_dropout",
    "layers": "tf_oneshot.layers",
    "dataset_info": "tf_oneshot.training.data",
    "make_dataset": "tf_oneshot.training.data",
    "OneShotOracle": "tf_oneshot.tuner",
    "OneShotTuner": "tf_oneshot.tuner",
    "IteratedOneShotOracle": "tf_oneshot.tuner.iterated",
    "search": "tf_oneshot.search",  # the subpackage, callable: runs a search (tf_oneshot.search.run)
    "run_search": "tf_oneshot.search.driver",
    "retrain": "tf_oneshot.training.retrain",
    "inherited_child": "tf_oneshot.training.finetune",
    "analyze": "tf_oneshot.analysis.report",
    "rank_metrics": "tf_oneshot.analysis.rank_metrics",
}


# Modules that sat at the top of the package before it had one folder per
# layer: an old import path still works, with a DeprecationWarning naming the new one.
MOVED = {
    "tf_oneshot.cli": "tf_oneshot.commands.cli",
    "tf_oneshot.config": "tf_oneshot.training.config",
    "tf_oneshot.data": "tf_oneshot.training.data",
    "tf_oneshot.distribute": "tf_oneshot.training.distribute",
    "tf_oneshot.finetune": "tf_oneshot.training.finetune",
    "tf_oneshot.groundtruth": "tf_oneshot.training.groundtruth",
    "tf_oneshot.latency": "tf_oneshot.search_spaces.latency",
    "tf_oneshot.model_dir": "tf_oneshot.training.model_dir",
    "tf_oneshot.nao": "tf_oneshot.search.nao",
    "tf_oneshot.nas": "tf_oneshot.search.nas",
    "tf_oneshot.oneshot_model": "tf_oneshot.search_spaces.supernet",
    "tf_oneshot.preemption": "tf_oneshot.training.preemption",
    "tf_oneshot.retrain": "tf_oneshot.training.retrain",
    "tf_oneshot.samplers": "tf_oneshot.training.samplers",
    "tf_oneshot.search.constraints": "tf_oneshot.search_spaces.constraints",
    "tf_oneshot.sharing": "tf_oneshot.search_spaces.sharing",
    "tf_oneshot.snapshots": "tf_oneshot.search.snapshots",
    "tf_oneshot.strategy_loop": "tf_oneshot.training.strategy_loop",
    "tf_oneshot.tasks": "tf_oneshot.training.tasks",
    "tf_oneshot.trainer": "tf_oneshot.training.trainer",
    "tf_oneshot.tuner_nas": "tf_oneshot.tuner.iterated",
}


class _MovedModules(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Imports a moved module under its old name: the new module itself, with a DeprecationWarning."""

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> Any:
        if name not in MOVED:
            return None
        return importlib.machinery.ModuleSpec(name, self)

    def create_module(self, spec: Any) -> Any:
        warnings.warn(f"{spec.name} moved to {MOVED[spec.name]}; import it from there.", DeprecationWarning,
                      stacklevel=3)
        module = importlib.import_module(MOVED[spec.name])
        spec.loader_state = module.__spec__  # the import machinery sets the old name's spec on the module
        return module

    def exec_module(self, module: Any) -> None:
        """Nothing to run: gives the module its own spec back."""
        module.__spec__ = module.__spec__.loader_state


if not any(isinstance(finder, _MovedModules) for finder in sys.meta_path):
    sys.meta_path.append(_MovedModules())


class _RegisterLayersWithKeras(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Imports `tf_oneshot.layers` once Keras and TensorFlow have loaded, so exports load after `import tf_oneshot`.

    A `.keras` file names its layers as "tf_oneshot>GhostBatchNormalization";
    Keras finds them only once their module has run its
    `register_keras_serializable`. `import tf_oneshot` stays free of
    TensorFlow, so the registration waits for the user's own `import keras`
    (or `import tensorflow`, which imports Keras while it loads): this finder
    lets each of the two load as usual, then registers the layers when both
    are done, and removes itself.
    """

    WATCHED = ("keras", "tensorflow")

    def __init__(self) -> None:
        self.loading: set[str] = set()
        self.loaders: dict[str, Any] = {}

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> Any:
        if name not in self.WATCHED or name in self.loading:
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is None or spec.loader is None:
            return None
        self.loaders[name] = spec.loader
        spec.loader = self
        return spec

    def create_module(self, spec: Any) -> Any:
        return self.loaders[spec.name].create_module(spec)

    def exec_module(self, module: Any) -> None:
        """Runs the module's own loader, then registers the layers once both modules are done."""
        name, loader = module.__name__, self.loaders.pop(module.__name__)
        module.__loader__ = module.__spec__.loader = loader  # the module keeps its real loader
        self.loading.add(name)
        try:
            loader.exec_module(module)
        finally:
            self.loading.discard(name)
        if not self.loading and all(m in sys.modules for m in self.WATCHED):
            sys.meta_path.remove(self)
            importlib.import_module("tf_oneshot.layers")


if "keras" in sys.modules and "tensorflow" in sys.modules:
    importlib.import_module("tf_oneshot.layers")  # Keras is here already: register now
elif not any(isinstance(finder, _RegisterLayersWithKeras) for finder in sys.meta_path):
    sys.meta_path.insert(0, _RegisterLayersWithKeras())


def __getattr__(name: str) -> Any:
    if name in ("layers", "search"):  # subpackages
        return importlib.import_module(f"tf_oneshot.{name}")
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
