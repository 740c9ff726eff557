"""The 64-child search space of "Deeper insights into weight sharing in NAS" (§3.1, Figure 1, App. A.1).

The network ("Deeper insights", App. A.1) is a stem of two convolutions that
expand the image to `stem_filters` (48) channels, then `num_cells` (4) cells
of one shared structure, then batch norm, ReLU, global average pooling and a
dense classifier. A cell (§3.1) starts with x0 = BN-ReLU-Conv1x1 of the
previous cell's output to `filters` (16) channels, then computes two nodes

    x1 = O_(0,1)(x0),    x2 = O_(0,2)(x0) + O_(1,2)(x1),

each edge op one of four, so 4^3 = 64 children, named by three digits in
[1, 4] giving O_(0,1), O_(0,2), O_(1,2) (e.g. "124"). No cell changes the
resolution: the paper names no reduction cell, and says the cells "stack".

Two things the text leaves to Figure 1, which we do not have:

- The four ops. We take DARTS' (Liu et al. 2019, on which §3.1 builds the
  space): 1 = sep_conv_3x3, 2 = sep_conv_5x5, 3 = max_pool_3x3,
  4 = skip_connect. Two parametric ops of different sizes and two free ones
  give children of clearly different cost and accuracy, which a ranking study
  needs. As in DARTS, a separable conv is applied twice; every conv is
  BN-ReLU-Conv without bias (Bender et al. 2018, §3.2).
  Pooling has stride 1 and "same" padding, so every op keeps [N, H, W, filters].
- The cell output. §3.1 says the sum of the nodes, App. A.1 says their
  concatenation, "32 channels in our settings". Only concatenation gives 32
  from nodes of 16, so the output concatenates x1 and x2 (2 * filters channels).

The stem is conv3x3 (image -> stem_filters) then BN-ReLU-Conv3x3
(stem_filters -> stem_filters): "the first 2 conv layers ... expand the
3-channel image into 48 channels". `stem_stride` 2 or 4 puts stride 2 on the
first or on both stem convs, for 224-pixel inputs.

Costs are arithmetic (`count_parts`) and equal `count_params()` of the Keras
models: every batch norm holds 4 weights per channel, convs have no bias, and
multiply-adds count convolutions and the classifier only.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any, ClassVar

from tf_oneshot.errors import UserError
from tf_oneshot.search_spaces.base import Architecture, Cost, SearchSpace
from tf_oneshot.search_spaces.decisions import OneOf

# The four ops of an edge, by digit 1..4 (module docstring: DARTS' ops, Figure 1 unavailable).
OP_NAMES = ("sep_conv_3x3", "sep_conv_5x5", "max_pool_3x3", "skip_connect")
OPS = (1, 2, 3, 4)
SEPARABLE_KERNELS = {1: 3, 2: 5}  # op digit -> kernel size of its separable conv pair
MAX_POOL, SKIP_CONNECT = 3, 4
# §3.1: the edges (i, j) of a two-node cell, in the order of the three digits.
EDGES = ((0, 1), (0, 2), (1, 2))
EDGE_KEYS = tuple(f"edge_{i}{j}" for i, j in EDGES)


@dataclasses.dataclass(frozen=True)
class Darts64Space(SearchSpace):
    """The down-scaled DARTS-like space of "Deeper insights", §3.1 and App. A.1.

    Args:
        stem_filters: channels of the two stem convolutions (48 in App. A.1).
        filters: channels of x0 and of each node (16); a cell outputs twice that.
        num_cells: stacked cells of the same structure (4).
        stem_stride: 1 (CIFAR-sized inputs), 2 or 4 (ImageNet-sized inputs).
        image_shape: (height, width, channels) of the inputs.
        num_classes: classifier outputs.
    """

    stem_filters: int = 48
    filters: int = 16
    num_cells: int = 4
    stem_stride: int = 1
    image_shape: tuple[int, int, int] = (32, 32, 3)
    num_classes: int = 10

    name: ClassVar[str] = "darts64"
    # §3.1: "we uniformly generate child models. Each mini-batch trains one child model".
    default_sampler: ClassVar[str] = "uniform"
    network: ClassVar[str] = "tf_oneshot.search_spaces.darts64.network"

    def __post_init__(self) -> None:
        try:
            object.__setattr__(self, "image_shape", tuple(int(d) for d in self.image_shape))
        except (TypeError, ValueError):
            raise UserError(
                f"image_shape={self.image_shape!r} is invalid; expected (height, width, channels)."
            ) from None

        def positive(value: Any) -> bool:
            return isinstance(value, int) and not isinstance(value, bool) and value >= 1

        checks = [
            (positive(self.stem_filters), "stem_filters", "a positive integer"),
            (positive(self.filters), "filters", "a positive integer"),
            (positive(self.num_cells), "num_cells", "a positive integer"),
            (self.stem_stride in (1, 2, 4) and not isinstance(self.stem_stride, bool), "stem_stride", "1, 2 or 4"),
            (positive(self.num_classes) and self.num_classes >= 2, "num_classes", "an integer of at least 2"),
            (len(self.image_shape) == 3 and min(self.image_shape) >= 1, "image_shape",
             "(height, width, channels) of positive sizes"),
        ]
        for ok, field, expected in checks:
            if not ok:
                raise UserError(f"{field}={getattr(self, field)!r} is invalid; expected {expected}.")

    # ------------------------------------------------------------- decisions
    def decisions(self) -> tuple[OneOf, ...]:
        """One op per edge (§3.1); each edge is its own choice block for mutation and crossover."""
        return tuple(OneOf(key, OPS, group=key) for key in EDGE_KEYS)

    def from_values(self, values: Sequence) -> Architecture:
        """The child with these op digits; its string form is the three digits (§3.1)."""
        decisions = self._decisions
        if len(values) != len(decisions):
            raise UserError(f"expected {len(decisions)} op digits (one per edge), got {len(values)}.")
        values = tuple(d.check(v) for d, v in zip(decisions, values))
        return Architecture(values, text="".join(str(v) for v in values))

    def parse(self, text: str) -> Architecture:
        """Parses a child's name: three digits in 1-4 for O_(0,1), O_(0,2), O_(1,2) (§3.1)."""
        if not isinstance(text, str) or not text.strip():
            raise UserError(f"architecture string is empty; {self.name} names a child by 3 digits in 1-4, "
                            "e.g. '124'.")
        text = text.strip()
        if len(text) != len(EDGES):
            raise UserError(f"architecture {text!r} has {len(text)} characters; {self.name} names a child by "
                            f"3 digits in 1-4 (ops of edges 01, 02, 12), e.g. '124'.")
        for (i, j), char in zip(EDGES, text):
            if char not in "1234":
                raise UserError(f"architecture {text!r}: edge {i}{j} op {char!r} is not a digit in 1-4 "
                                f"({', '.join(f'{k}={n}' for k, n in zip(OPS, OP_NAMES))}).")
        return self.from_values([int(c) for c in text])

    def example(self) -> str:
        return "124"

    def op_name(self, op: int) -> str:
        """The name of op digit `op` (1..4)."""
        return OP_NAMES[op - 1]

    # ------------------------------------------------------------------ cost
    def resolutions(self) -> tuple[tuple[int, int], tuple[int, int]]:
        """(height, width) after the first and after the second stem conv ("same" padding)."""
        height, width = self.image_shape[:2]
        first = 1 if self.stem_stride == 1 else 2
        second = 2 if self.stem_stride == 4 else 1
        h1, w1 = -(-height // first), -(-width // first)
        return (h1, w1), (-(-h1 // second), -(-w1 // second))

    def op_cost(self, op: int) -> tuple[int, int]:
        """(params, multiply-adds) of op digit `op` on one edge of one cell."""
        if op in SEPARABLE_KERNELS:
            c, kk = self.filters, SEPARABLE_KERNELS[op] ** 2
            (_, (h, w)) = self.resolutions()
            # Two BN-ReLU-SepConv units: BN 4c, depthwise kk*c, pointwise c*c.
            return 2 * (4 * c + kk * c + c * c), 2 * h * w * (kk * c + c * c)
        return 0, 0  # max pooling and the identity have no weights and no multiply-adds

    def count_parts(self, edge_ops: Sequence[Sequence[int]]) -> Cost:
        """Params and multiply-adds of the network with these ops on edges 01, 02, 12 (no validation)."""
        channels = self.image_shape[2]
        s, c = self.stem_filters, self.filters
        (h1, w1), (h, w) = self.resolutions()
        params = 9 * channels * s + 4 * s + 9 * s * s  # conv3x3, then BN-ReLU-Conv3x3
        flops = h1 * w1 * 9 * channels * s + h * w * 9 * s * s
        per_cell = [0, 0]
        for ops in edge_ops:
            for op in ops:
                p, f = self.op_cost(op)
                per_cell[0] += p
                per_cell[1] += f
        for k in range(self.num_cells):
            c_in = s if k == 0 else 2 * c
            params += 4 * c_in + c_in * c + per_cell[0]  # x0: BN-ReLU-Conv1x1, then the edges
            flops += h * w * c_in * c + per_cell[1]
        params += 4 * 2 * c + 2 * c * self.num_classes + self.num_classes  # head BN and classifier
        flops += 2 * c * self.num_classes
        return Cost(params=params, flops=flops)

    def count(self, arch: Architecture) -> Cost:
        """Params and multiply-adds of the stand-alone child, equal to its Keras model's."""
        return self.count_parts([(op,) for op in self.values_of(self.validate(arch))])

    def count_oneshot(self) -> Cost:
        """Params and multiply-adds of the one-shot model with all four ops on every edge."""
        return self.count_parts([OPS] * len(EDGES))

    # ------------------------------------------------------------- protocol
    def sharing_segments(self) -> int:
        """Segments partial sharing copies ("Deeper insights" §4.2-4.3): the stem, each cell, the head.

        Prefix sharing with k shared cells shares the first 1 + k segments.
        """
        return self.num_cells + 2

    def describe_scale(self) -> str:
        return f"F={self.filters}"
