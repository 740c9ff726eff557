"""KerasTuner's face of tf_oneshot: oracles that propose architectures, a tuner that scores them.

- `OneShotOracle` (oracle.py): random, evolutionary or NAO search behind
  KerasTuner's `Oracle` contract;
- `OneShotTuner` (tuner.py): each trial's architecture scored with the
  shared weights of a trained one-shot model;
- `IteratedOneShotOracle` (iterated.py): NAO-V2's iterated loop, training
  between pools on the chief.
"""

from tf_oneshot.tuner.iterated import IteratedOneShotOracle
from tf_oneshot.tuner.oracle import (
    CHECKPOINT_STEP,
    OBJECTIVE,
    OneShotOracle,
    declare_hyperparameters,
)
from tf_oneshot.tuner.tuner import OneShotTuner

__all__ = [
    "CHECKPOINT_STEP",
    "OBJECTIVE",
    "IteratedOneShotOracle",
    "OneShotOracle",
    "OneShotTuner",
    "declare_hyperparameters",
]
