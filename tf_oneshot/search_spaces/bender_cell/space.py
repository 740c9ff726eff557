"""The cell search space of Bender et al. 2018, §3.1 and Figure 3.

A network is a stem, `num_cells` identical cells in `num_stacks` stacks
separated by stride-2 reductions that double the filters, global pooling and a
classifier. Each cell has `num_blocks` choice blocks. Block i concatenates any
non-empty subset of its 2+i inputs (the two previous cells' outputs and the
earlier blocks of the cell), applies BN-ReLU-Conv1x1 to a fixed width, then
sums one or two of seven ops. The cell output concatenates every block and
projects it back with BN-ReLU-Conv1x1.

The paper is silent on the stem, the reductions and the cell output; our
choices (a 3x3 stem conv, a BN-ReLU-Conv3x3 stride-2 reduction on each of the
two cell inputs, a 1x1 projection of the concatenated blocks) land the all-on
model within a few percent of the paper's Table 1 "All On" counts.

An architecture is a frozen value: `CellArchitecture(blocks=(Block(inputs,
ops), ...))`. Its string form lists, per block, the input digits, a colon and
the op digits, blocks separated by "/", e.g. "01:25/2:0/013:46/04:3".
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np

from tf_oneshot.errors import UserError
from tf_oneshot.search_spaces.base import Cost, SearchSpace
from tf_oneshot.search_spaces.decisions import SubsetOf

# Bender et al. 2018, §3.1: the menu of seven operations.
OP_NAMES = (
    "identity",
    "sep3x3_pair",
    "sep5x5_pair",
    "sep7x7_pair",
    "conv1x7_7x1",
    "maxpool3x3",
    "avgpool3x3",
)
NUM_OPS = len(OP_NAMES)
SEPARABLE_KERNELS = {1: 3, 2: 5, 3: 7}  # op index -> kernel size of the pair
CONV_1X7_7X1 = 4
MAX_OPS_PER_BLOCK = 2
MAX_BLOCKS = 8  # keeps every input index a single digit in the string form
# Bender et al. 2018, §3.1: one or two of seven ops, C(7,1) + C(7,2) = 28.
OP_COMBINATIONS = tuple(
    combo
    for n in range(1, MAX_OPS_PER_BLOCK + 1)
    for combo in itertools.combinations(range(NUM_OPS), n)
)


@dataclasses.dataclass(frozen=True)
class Block:
    """One choice block: its active inputs and ops, both sorted tuples."""

    inputs: tuple[int, ...]
    ops: tuple[int, ...]

    def __str__(self) -> str:
        return "".join(map(str, self.inputs)) + ":" + "".join(map(str, self.ops))


@dataclasses.dataclass(frozen=True)
class CellArchitecture:
    """A cell: one `Block` per choice block. Immutable and hashable."""

    blocks: tuple[Block, ...]

    def __str__(self) -> str:
        return "/".join(str(block) for block in self.blocks)


@dataclasses.dataclass(frozen=True)
class CellSpace(SearchSpace):
    """Bender et al. 2018 cell space plus the network that stacks the cells.

    Args:
        num_blocks: choice blocks per cell (`N_choice`, 4 in the paper).
        filters: F, the filters of the stem and of the first stack.
        num_cells: cells in the network (6 for CIFAR-10, 8 for ImageNet).
        num_stacks: stacks of cells; each later stack halves the resolution
            and doubles the filters.
        stem_stride: 1 (CIFAR-sized inputs), 2 or 4 (ImageNet-sized inputs).
        image_shape: (height, width, channels) of the inputs.
        num_classes: classifier outputs.
    """

    num_blocks: int = 4
    filters: int = 16
    num_cells: int = 6
    num_stacks: int = 3
    stem_stride: int = 1
    image_shape: tuple[int, int, int] = (32, 32, 3)
    num_classes: int = 10

    name: ClassVar[str] = "bender_cell"
    # Bender et al. 2018, §3.2: the one-shot model trains with path dropout.
    default_sampler: ClassVar[str] = "path_dropout"
    network: ClassVar[str] = "tf_oneshot.search_spaces.bender_cell.network"

    def __post_init__(self) -> None:
        object.__setattr__(self, "image_shape", tuple(int(d) for d in self.image_shape))
        checks = [
            (1 <= self.num_blocks <= MAX_BLOCKS, "num_blocks", f"1..{MAX_BLOCKS}"),
            (self.filters >= 1, "filters", "a positive integer"),
            (self.num_cells >= 1, "num_cells", "a positive integer"),
            (self.num_stacks >= 1, "num_stacks", "a positive integer"),
            (self.stem_stride in (1, 2, 4), "stem_stride", "1, 2 or 4"),
            (self.num_classes >= 2, "num_classes", "at least 2"),
            (
                len(self.image_shape) == 3 and min(self.image_shape) >= 1,
                "image_shape",
                "(height, width, channels) of positive sizes",
            ),
        ]
        for ok, field, expected in checks:
            if not ok:
                raise UserError(
                    f"{field}={getattr(self, field)!r} is invalid; expected {expected}."
                )
        if self.num_cells < self.num_stacks:
            raise UserError(
                f"num_cells={self.num_cells} is fewer than num_stacks={self.num_stacks}; "
                "every stack needs at least one cell."
            )

    # ----------------------------------------------------------------- layout
    def num_inputs(self, block: int) -> int:
        """Candidate inputs of block `block`: 2 previous cells + earlier blocks."""
        return 2 + block

    def cells_per_stack(self) -> tuple[int, ...]:
        """Splits the cells evenly over the stacks, earlier stacks first."""
        base, extra = divmod(self.num_cells, self.num_stacks)
        return tuple(base + (s < extra) for s in range(self.num_stacks))

    def stack_filters(self) -> tuple[int, ...]:
        """Filters of each stack: F doubled at every reduction."""
        return tuple(self.filters * 2**s for s in range(self.num_stacks))

    # ------------------------------------------------------------- decisions
    def decisions(self) -> tuple[SubsetOf, ...]:
        """Per choice block: its inputs (any non-empty subset) and its one or two ops (§3.1)."""
        out = []
        for i in range(self.num_blocks):
            group = f"block{i}"
            out.append(SubsetOf(f"block{i}_inputs", tuple(range(self.num_inputs(i))), 1, None, group))
            out.append(SubsetOf(f"block{i}_ops", tuple(range(NUM_OPS)), 1, MAX_OPS_PER_BLOCK, group))
        return tuple(out)

    def values_of(self, arch: CellArchitecture) -> tuple:
        """(inputs, ops) of every block, flattened in `decisions()` order."""
        return tuple(v for b in self.validate(arch).blocks for v in (b.inputs, b.ops))

    def from_values(self, values: Sequence) -> CellArchitecture:
        if len(values) != 2 * self.num_blocks:
            raise UserError(f"expected {2 * self.num_blocks} decision values, got {len(values)}.")
        return CellArchitecture(tuple(
            self._check_block(i, values[2 * i], values[2 * i + 1]) for i in range(self.num_blocks)
        ))

    # ------------------------------------------------------------------ size
    def size(self) -> int:
        """(2^2-1)(2^3-1)...(2^(N+1)-1) * 28^N cells (Bender et al. 2018, §3.1)."""
        inputs = math.prod(2 ** self.num_inputs(i) - 1 for i in range(self.num_blocks))
        return inputs * len(OP_COMBINATIONS) ** self.num_blocks

    # ------------------------------------------------------- sample / validate
    def sample(self, rng: np.random.Generator) -> CellArchitecture:
        """Draws uniformly: each block's input subset and op combination."""
        blocks = []
        for i in range(self.num_blocks):
            subset = int(rng.integers(1, 2 ** self.num_inputs(i)))
            inputs = tuple(j for j in range(self.num_inputs(i)) if subset >> j & 1)
            ops = OP_COMBINATIONS[int(rng.integers(len(OP_COMBINATIONS)))]
            blocks.append(Block(inputs, ops))
        return CellArchitecture(tuple(blocks))

    def validate(self, arch: Any) -> CellArchitecture:
        """Returns `arch` if it belongs to this space, else raises UserError."""
        if not isinstance(arch, CellArchitecture):
            raise UserError(
                f"expected a CellArchitecture, got {type(arch).__name__}; "
                "parse strings with space.parse()."
            )
        if len(arch.blocks) != self.num_blocks:
            raise UserError(
                f"architecture has {len(arch.blocks)} blocks; this space needs "
                f"{self.num_blocks} (num_blocks)."
            )
        for i, block in enumerate(arch.blocks):
            self._check_block(i, block.inputs, block.ops)
        return arch

    def _check_block(self, i: int, inputs: Any, ops: Any) -> Block:
        n = self.num_inputs(i)
        inputs, ops = tuple(inputs), tuple(ops)
        if not all(isinstance(v, (int, np.integer)) for v in inputs + ops):
            raise UserError(f"block {i}: inputs and ops must be integers.")
        if not inputs:
            raise UserError(f"block {i}: needs at least one input (any of 0..{n - 1}), got none.")
        if len(set(inputs)) != len(inputs) or len(set(ops)) != len(ops):
            raise UserError(f"block {i}: inputs and ops must not repeat.")
        bad = [j for j in inputs if not 0 <= j < n]
        if bad:
            raise UserError(f"block {i}: input {bad[0]} out of range; block {i} takes inputs 0..{n - 1}.")
        if not 1 <= len(ops) <= MAX_OPS_PER_BLOCK:
            raise UserError(f"block {i}: needs 1 or 2 distinct ops, got {len(ops)}.")
        bad = [k for k in ops if not 0 <= k < NUM_OPS]
        if bad:
            raise UserError(f"block {i}: op {bad[0]} out of range; ops are 0..{NUM_OPS - 1}.")
        return Block(tuple(sorted(int(j) for j in inputs)), tuple(sorted(int(k) for k in ops)))

    # ---------------------------------------------------------- string / JSON
    def parse(self, text: str) -> CellArchitecture:
        """Parses "01:25/2:0/..." (inputs ':' ops per block, '/' between blocks)."""
        if not isinstance(text, str) or not text.strip():
            raise UserError("architecture string is empty; expected e.g. "
                            f"'{self.example()}'.")
        parts = text.strip().split("/")
        if len(parts) != self.num_blocks:
            raise UserError(
                f"architecture {text!r} has {len(parts)} blocks; this space needs "
                f"{self.num_blocks}, e.g. '{self.example()}'."
            )
        blocks = []
        for i, part in enumerate(parts):
            fields = part.split(":")
            if len(fields) != 2 or not all(f.isdigit() or not f for f in fields):
                raise UserError(
                    f"block {i}: {part!r} is malformed; expected input digits, ':', op digits "
                    "(e.g. '01:25')."
                )
            blocks.append(self._check_block(i, map(int, fields[0]), map(int, fields[1])))
        return CellArchitecture(tuple(blocks))

    def example(self) -> str:
        """A fixed valid architecture string, for messages and `space`."""
        return str(self.sample(np.random.default_rng(0)))

    def to_json(self, arch: CellArchitecture) -> dict:
        self.validate(arch)
        return {
            "space": self.name,
            "blocks": [{"inputs": list(b.inputs), "ops": list(b.ops)} for b in arch.blocks],
        }

    def from_json(self, obj: Any) -> CellArchitecture:
        if not isinstance(obj, dict) or not isinstance(obj.get("blocks"), list):
            raise UserError("architecture JSON must be an object with a 'blocks' list.")
        if obj.get("space", self.name) != self.name:
            raise UserError(
                f"architecture is from search space {obj.get('space')!r}; expected {self.name!r}."
            )
        if len(obj["blocks"]) != self.num_blocks:
            raise UserError(
                f"architecture has {len(obj['blocks'])} blocks; this space needs {self.num_blocks}."
            )
        blocks = []
        for i, b in enumerate(obj["blocks"]):
            if not isinstance(b, dict) or set(b) != {"inputs", "ops"}:
                raise UserError(f"block {i}: expected an object with keys 'inputs' and 'ops'.")
            if not isinstance(b["inputs"], list) or not isinstance(b["ops"], list):
                raise UserError(f"block {i}: 'inputs' and 'ops' must be lists of integers.")
            blocks.append(self._check_block(i, b["inputs"], b["ops"]))
        return CellArchitecture(tuple(blocks))

    # ------------------------------------------------------------------ masks
    def mask_shapes(self) -> dict[str, tuple[int, int]]:
        return {
            "input_mask": (self.num_blocks, self.num_blocks + 1),
            "op_mask": (self.num_blocks, NUM_OPS),
        }

    def encode(self, arch: CellArchitecture) -> dict[str, np.ndarray]:
        """Masks for the one-shot model: 1 where a path is active."""
        self.validate(arch)
        shapes = self.mask_shapes()
        input_mask = np.zeros(shapes["input_mask"], np.float32)
        op_mask = np.zeros(shapes["op_mask"], np.float32)
        for i, block in enumerate(arch.blocks):
            input_mask[i, list(block.inputs)] = 1.0
            op_mask[i, list(block.ops)] = 1.0
        return {"input_mask": input_mask, "op_mask": op_mask}

    def all_on_masks(self) -> dict[str, np.ndarray]:
        shapes = self.mask_shapes()
        input_mask = np.zeros(shapes["input_mask"], np.float32)
        for i in range(self.num_blocks):
            input_mask[i, : self.num_inputs(i)] = 1.0
        return {"input_mask": input_mask, "op_mask": np.ones(shapes["op_mask"], np.float32)}

    def dropout_masks(self) -> tuple[str, ...]:
        """Both masks: a block's inputs and its ops are nodes with several paths (§3.2)."""
        return ("input_mask", "op_mask")

    def skip_masks(self) -> tuple[str, ...]:
        """Only ops are skipped when off: a dropped input is a zeroed channel slice."""
        return ("op_mask",)

    def decode(self, masks: dict[str, np.ndarray]) -> CellArchitecture:
        """Inverse of `encode` for masks of one architecture."""
        blocks = []
        for i in range(self.num_blocks):
            inputs = np.flatnonzero(np.asarray(masks["input_mask"])[i] > 0.5)
            ops = np.flatnonzero(np.asarray(masks["op_mask"])[i] > 0.5)
            blocks.append(self._check_block(i, inputs.tolist(), ops.tolist()))
        return CellArchitecture(tuple(blocks))

    # --------------------------------------------------------------- counting
    def count(self, arch: CellArchitecture) -> Cost:
        """Params and multiply-adds of the stand-alone model for `arch` (equal to `count_blocks`).

        Which cells reach the output depends only on whether the cells read
        their older and previous cell (`cell_reads`): a cell nobody reads is
        not part of the stand-alone model. For each of those three read
        patterns the cost is a sum over choice blocks of terms that depend only
        on the block's number of inputs and its ops (every cell repeats the
        same blocks), so a table of those terms counts ~10x faster than
        `count_blocks` and gives exact bounds (`cost_bounds`).
        """
        (params, flops), table = self._cost_tables()[self.cell_reads(self.validate(arch))]
        for terms, block in zip(table, arch.blocks):
            dp, df = terms[(len(block.inputs), block.ops)]
            params += dp
            flops += df
        return Cost(params=params, flops=flops)

    # (reads older, reads previous): block 0 reads one of its two inputs at least.
    READ_PATTERNS: ClassVar[tuple] = ((True, False), (False, True), (True, True))

    def _cost_tables(self) -> dict:
        tables = self.__dict__.get("_cost_tables_cache")
        if tables is None:
            tables = {reads: self._cost_table(reads) for reads in self.READ_PATTERNS}
            object.__setattr__(self, "_cost_tables_cache", tables)
        return tables

    def _cost_table(self, reads: tuple[bool, bool]) -> tuple[tuple[int, int], list[dict]]:
        """(base cost, per-block {(num inputs, ops): cost term}) for one read pattern.

        Only the block sizes that pattern allows are listed: a cell that reads
        one of its two inputs has blocks of at most 2+i-1 inputs, and block 0
        of a single-block cell that reads both takes both.
        """
        ref_blocks = [((0,), (0,))] * self.num_blocks
        ref = self.count_blocks(ref_blocks, reads)
        table = []
        for i in range(self.num_blocks):
            most = self.num_inputs(i) - (not all(reads))
            fewest = 2 if all(reads) and self.num_blocks == 1 else 1
            terms = {}
            for k in range(fewest, most + 1):
                for ops in OP_COMBINATIONS:
                    blocks = list(ref_blocks)
                    blocks[i] = (tuple(range(k)), ops)
                    cost = self.count_blocks(blocks, reads)
                    terms[(k, ops)] = (cost.params - ref.params, cost.flops - ref.flops)
            table.append(terms)
        return (ref.params, ref.flops), table

    def cost_bounds(self) -> dict[str, tuple[int, int]]:
        """Exact least and greatest params and multiply-adds, from the cost tables."""
        bounds = {}
        for m, metric in enumerate(("params", "flops")):
            lows, highs = [], []
            for base, table in self._cost_tables().values():
                lows.append(base[m] + sum(min(t[m] for t in terms.values()) for terms in table))
                highs.append(base[m] + sum(max(t[m] for t in terms.values()) for terms in table))
            bounds[metric] = (min(lows), max(highs))
        return bounds

    def count_oneshot(self) -> Cost:
        """Params and multiply-adds of the all-on one-shot model (Table 1 "All On")."""
        return self.count_blocks(
            [(tuple(range(self.num_inputs(i))), tuple(range(NUM_OPS))) for i in range(self.num_blocks)]
        )

    def cell_reads(self, arch: CellArchitecture) -> tuple[bool, bool]:
        """Whether the cells read their older (input 0) and previous (input 1) cell."""
        return (any(0 in b.inputs for b in arch.blocks), any(1 in b.inputs for b in arch.blocks))

    def count_blocks(
        self,
        blocks: list[tuple[tuple[int, ...], tuple[int, ...]]],
        reads: tuple[bool, bool] | None = None,
    ) -> Cost:
        """Params and multiply-adds for (inputs, ops) per block, without validation.

        Args:
            blocks: one (inputs, ops) pair per choice block.
            reads: whether cells read their older and previous cell; by default
                derived from the blocks. Which cells reach the output depends only
                on it, so for a fixed `reads` the cost is a sum of per-block terms
                (the table of `search.constraints.CostModel`).
        """
        # Mirrors the layers of tf_oneshot.standalone / oneshot_model exactly:
        # every BN holds 4 weights per channel, convs have no bias. A Keras
        # functional model holds only layers that reach its output, so a cell
        # or reduction whose output no later block reads is not counted.
        height, width, channels = self.image_shape
        units: list[list] = []  # [params, flops, ids of the units it reads]

        def add(params: int, flops: int, reads: list[int]) -> int:
            units.append([params, flops, reads])
            return len(units) - 1

        def conv_cost(kh, kw, c_in, c_out, h, w):
            return kh * kw * c_in * c_out, h * w * kh * kw * c_in * c_out

        stride = 1 if self.stem_stride == 1 else 2
        height, width = -(-height // stride), -(-width // stride)
        p, f = conv_cost(3, 3, channels, self.filters, height, width)
        if self.stem_stride == 4:
            height, width = -(-height // 2), -(-width // 2)
            p2, f2 = conv_cost(3, 3, self.filters, self.filters, height, width)
            p, f = p + 4 * self.filters + p2, f + f2
        older = previous = add(p, f, [])
        if reads is None:
            reads = (any(0 in inputs for inputs, _ in blocks), any(1 in inputs for inputs, _ in blocks))
        reads_older, reads_previous = reads
        c_prev = self.filters
        for c, n_cells in zip(self.stack_filters(), self.cells_per_stack()):
            if c != c_prev:  # a reduction of each cell input
                height, width = -(-height // 2), -(-width // 2)
                p, f = conv_cost(3, 3, c_prev, c, height, width)
                older = add(p + 4 * c_prev, f, [older])
                previous = add(p + 4 * c_prev, f, [previous])
            for _ in range(n_cells):
                params = flops = 0
                for inputs, ops in blocks:
                    k = len(inputs)
                    p, f = conv_cost(1, 1, k * c, c, height, width)
                    params, flops = params + 4 * k * c + p, flops + f
                    for op in ops:
                        if op in SEPARABLE_KERNELS:
                            kk = SEPARABLE_KERNELS[op] ** 2
                            params += 2 * (4 * c + kk * c + c * c)
                            flops += 2 * height * width * (kk * c + c * c)
                        elif op == CONV_1X7_7X1:
                            p, f = conv_cost(1, 7, c, c, height, width)
                            params, flops = params + 2 * (4 * c + p), flops + 2 * f
                p, f = conv_cost(1, 1, self.num_blocks * c, c, height, width)
                params, flops = params + 4 * self.num_blocks * c + p, flops + f
                reads = [older] * reads_older + [previous] * reads_previous
                older, previous = previous, add(params, flops, reads)
            c_prev = c
        head = add(4 * c_prev + c_prev * self.num_classes + self.num_classes,
                   c_prev * self.num_classes, [previous])
        reached, todo = set(), [head]
        while todo:
            unit = todo.pop()
            if unit not in reached:
                reached.add(unit)
                todo.extend(units[unit][2])
        return Cost(
            params=sum(units[u][0] for u in reached), flops=sum(units[u][1] for u in reached)
        )

    # ------------------------------------------------------------- protocol
    def describe_scale(self) -> str:
        return f"F={self.filters}"

    def build_all_on(self, ghost_batch_size: int | None = None, name: str = "all_on") -> Any:
        """Table 1's "All On" network as a plain functional model (benchmark baseline)."""
        return self._network("build_all_on()").build_all_on_model(self, ghost_batch_size, name)

    # ------------------------------------------------------------------ config
    def to_config(self) -> dict:
        config = dataclasses.asdict(self)
        config["image_shape"] = list(self.image_shape)
        return {"space": self.name, **config}
