"""The small interface every search space implements.

A search space is plain data (a frozen dataclass): it samples, validates,
serializes, counts, mutates and crosses over architectures, turns them into
mask tensors for the one-shot model, and builds models. Search algorithms see
only this interface, so they never touch TensorFlow (DESIGN.md).
"""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import Hashable
from typing import Any

import numpy as np


@dataclasses.dataclass(frozen=True)
class Cost:
    """Size of a network: Keras parameter count and multiply-adds per image."""

    params: int
    flops: int


class SearchSpace(abc.ABC):
    """Interface shared by all search spaces (Bender cell space, SPOS, ...)."""

    name: str = ""

    @abc.abstractmethod
    def size(self) -> int:
        """Number of distinct architectures (an exact integer)."""

    @abc.abstractmethod
    def sample(self, rng: np.random.Generator) -> Hashable:
        """Draws one architecture uniformly at random."""

    @abc.abstractmethod
    def parse(self, text: str) -> Hashable:
        """Parses the compact string form; raises UserError naming the bad part."""

    @abc.abstractmethod
    def from_json(self, obj: Any) -> Hashable:
        """Parses the JSON form; raises UserError naming the bad part."""

    @abc.abstractmethod
    def to_json(self, arch: Hashable) -> dict:
        """Returns the JSON form (round-trips exactly through from_json)."""

    @abc.abstractmethod
    def encode(self, arch: Hashable) -> dict[str, np.ndarray]:
        """Returns the architecture as mask arrays for the one-shot model."""

    @abc.abstractmethod
    def all_on_masks(self) -> dict[str, np.ndarray]:
        """Masks with every path of the one-shot model on (the "All On" net)."""

    @abc.abstractmethod
    def count(self, arch: Hashable) -> Cost:
        """Parameters and multiply-adds of the stand-alone model, by arithmetic."""

    @abc.abstractmethod
    def count_oneshot(self) -> Cost:
        """Parameters and multiply-adds of the all-on one-shot model."""

    @abc.abstractmethod
    def mutate(
        self, arch: Hashable, rng: np.random.Generator, prob: float
    ) -> Hashable:
        """Resamples each choice with probability `prob` (SPOS §3.4)."""

    @abc.abstractmethod
    def crossover(
        self, a: Hashable, b: Hashable, rng: np.random.Generator
    ) -> Hashable:
        """Takes each choice from one parent at random (SPOS §3.4)."""

    @abc.abstractmethod
    def to_config(self) -> dict:
        """JSON-able dict that `from_config` turns back into an equal space."""
