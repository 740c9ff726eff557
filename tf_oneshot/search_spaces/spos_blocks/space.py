"""The building-block space of Single Path One-Shot (SPOS, Guo et al. 2019, §3.2, §4, Table 2, Figure 3a).

The supernet (Table 2) is a ShuffleNetV2 (Ma et al. 2018) whose 20 units are
choice blocks, in stages of 4, 4, 8 and 4:

    input 224x224x3 -> 3x3 conv, 16 channels, stride 2 (BN, ReLU)
    -> stage 1: 4 blocks, 64 channels  (first block stride 2: 56x56)
    -> stage 2: 4 blocks, 160 channels (28x28)
    -> stage 3: 8 blocks, 320 channels (14x14)
    -> stage 4: 4 blocks, 640 channels (7x7)
    -> 1x1 conv to 1024 (BN, ReLU) -> global average pooling -> fc.

Table 2 lists no max pooling: the first block takes the stem's 112x112 map.
Each block picks one of four candidates (§4: "choice_3", "choice_5",
"choice_7", "choice_x"), so the space holds exactly 4^20 architectures.
A block is a ShuffleNetV2 unit (Figure 3a):

- the first block of a stage feeds its whole input to two branches and
  concatenates them: a projection (kxk depthwise with the stage's stride,
  BN, 1x1 conv, BN, ReLU) that keeps the input's channels, and the main
  branch, which outputs the rest of the stage's channels;
- every other block splits its channels in two halves, passes one through
  and feeds the other to the main branch;
- both end with concatenation and a channel shuffle (2 groups).

The main branch of choice_k is 1x1 conv-BN-ReLU, kxk depthwise (stride)-BN,
1x1 conv-BN-ReLU; that of choice_x is three (3x3 depthwise-BN, 1x1
conv-BN-ReLU) units, the first depthwise with the stride. The paper leaves
three details to the SPOS code, which we follow: a first block's projection
belongs to the candidate (kernel k; 3 for choice_x); its main branch outputs
the stage's channels minus its input's (16 + 48 = 64 in block 0); the main
branch's middle width is half the block's output ("mid channels", §3.3).
Convolutions have no bias; batch norm follows every convolution, ReLU only
the 1x1 ones (ShuffleNetV2's placement, not Bender et al.'s BN-ReLU-Conv).
The fc has a bias and no dropout before it, as in the other spaces (Table 2
lists neither; the SPOS code has dropout 0.1 and no bias).

Sizes. `width_multiplier` scales the four stages' channels (rounded to an
even number, which the channel split needs); the stem (16) and the last
conv (1024) stay, as in ShuffleNetV2's narrower models. `stage_blocks` and
`channels` (stem, one per stage, last conv) shrink the layout for tests.
`stem_stride` is the stride from the image to the first stage's resolution,
the meaning every space gives it (the datasets suggest 4 for 224-pixel
ImageNet, 1 for CIFAR-10 and the 8x8 digits):

- 4: Table 2 (stem conv stride 2, first block stride 2);
- 2: stem conv stride 2, first block stride 1;
- 1: both stride 1, so small images keep their resolution in stage 1
  (CIFAR-10: stages at 32, 16, 8, 4 pixels; digits: 8, 4, 2, 1).

Later stages always open with stride 2; "same" padding rounds sizes up.

Costs are arithmetic and equal the Keras models' (tests): a batch norm holds
4 weights per channel; multiply-adds count convolutions, depthwise
convolutions and the classifier. Per block they equal the per-candidate
FLOPs table of public SPOS supernet code (e.g. 13,396,992 for choice_3 in
block 0). At
Table 2's widths and 224 pixels, "all choice_3" is 295.8M multiply-adds
(3.18M Keras parameters), 8.7% below Table 3's 324M; all choice_5, choice_7
and choice_x are 313.7M, 340.4M and 358.8M (Table 3: 321M, 327M, 326M). §4
explains the gap: for those baselines "we adjust the channels to meet the
constraint" (FLOPs <= 330M), so Table 3's networks are not Table 2's widths.
width_multiplier=1.05 (stages of 68, 168, 336, 672 channels) brings all
choice_3 to 324.0M. The space spans 270.4M-398.6M (`cost_bounds`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import ClassVar

from tf_oneshot.errors import UserError
from tf_oneshot.search_spaces.base import Architecture, Cost, SearchSpace
from tf_oneshot.search_spaces.decisions import OneOf
from tf_oneshot.search_spaces.fields import normalize_network_fields

# A block's value is its candidate's suffix; OP_NAMES are SPOS's names (§4, Table 3).
CHOICES = ("3", "5", "7", "x")
OP_NAMES = ("choice_3", "choice_5", "choice_7", "choice_x")
# Depthwise kernel of each candidate (choice_x: three 3x3 depthwise convs).
KERNELS = {"3": 3, "5": 5, "7": 7, "x": 3}
XCEPTION = "x"
# Table 2: blocks per stage; channels of the stem, the four stages and the last conv.
TABLE2_STAGE_BLOCKS = (4, 4, 8, 4)
TABLE2_CHANNELS = (16, 64, 160, 320, 640, 1024)


@dataclasses.dataclass(frozen=True)
class BlockLayout:
    """Where a choice block sits and what it sees; every candidate of it shares this.

    `first` blocks open a stage (both branches, the stage's stride); the
    others split their input (stride 1).
    """

    index: int
    stage: int
    first: bool
    stride: int
    in_channels: int
    out_channels: int
    in_size: tuple[int, int]
    out_size: tuple[int, int]

    @property
    def kept(self) -> int:
        """Channels of the branch that is not searched: the projection, or the half passed through."""
        return self.in_channels if self.first else self.in_channels // 2

    @property
    def main_in(self) -> int:
        return self.in_channels if self.first else self.in_channels // 2

    @property
    def main_out(self) -> int:
        return self.out_channels - self.kept

    @property
    def mid(self) -> int:
        """Width inside the main branch: half the block's output (SPOS §3.3 "mid channels")."""
        return self.out_channels // 2


def _same(size: int, stride: int) -> int:
    return -(-size // stride)


@dataclasses.dataclass(frozen=True)
class SposBlocksSpace(SearchSpace):
    """SPOS's building-block space: 20 ShuffleNetV2 choice blocks of 4 candidates (§3.2, Table 2).

    Args:
        width_multiplier: scales the stages' channels (1.0: Table 2).
        image_shape: (height, width, channels) of the inputs (Table 2: 224x224x3).
        num_classes: classifier outputs (1000 for ImageNet).
        stem_stride: 4 (Table 2), 2, or 1 for small images (module docstring).
        stage_blocks: choice blocks per stage (Table 2: 4, 4, 8, 4).
        channels: stem, then one per stage, then the last 1x1 conv
            (Table 2: 16, 64, 160, 320, 640, 1024).
    """

    width_multiplier: float = 1.0
    image_shape: tuple[int, int, int] = (224, 224, 3)
    num_classes: int = 1000
    stem_stride: int = 4
    stage_blocks: tuple[int, ...] = TABLE2_STAGE_BLOCKS
    channels: tuple[int, ...] = TABLE2_CHANNELS

    name: ClassVar[str] = "spos_blocks"
    # §3.2: the supernet trains under uniform single-path sampling.
    default_sampler: ClassVar[str] = "uniform"
    network: ClassVar[str] = "tf_oneshot.search_spaces.spos_blocks.network"
    latency: ClassVar[str | None] = "tf_oneshot.search_spaces.spos_blocks.latency"

    def __post_init__(self) -> None:
        normalize_network_fields(self, extra_channels=2, channels_meaning="stem, one per stage, last conv")
        previous = self.channels[0]
        for stage, c in enumerate(self.stage_channels, start=1):
            if c % 2 or c <= previous:
                raise UserError(
                    f"stage {stage} has {c} channels (channels={self.channels}, width_multiplier="
                    f"{self.width_multiplier}); a ShuffleNetV2 stage needs an even number above its "
                    f"{previous} input channels."
                )
            previous = c

    # ---------------------------------------------------------------- layout
    @property
    def stage_channels(self) -> tuple[int, ...]:
        """Output channels of each stage, scaled by `width_multiplier` to an even number."""
        m = self.width_multiplier
        return tuple(c if m == 1.0 else max(2, 2 * round(c * m / 2)) for c in self.channels[1:-1])

    @property
    def stem_conv_stride(self) -> int:
        return min(self.stem_stride, 2)

    def stem_size(self) -> tuple[int, int]:
        """(height, width) after the stem conv."""
        h, w = self.image_shape[:2]
        return _same(h, self.stem_conv_stride), _same(w, self.stem_conv_stride)

    def layout(self) -> tuple[BlockLayout, ...]:
        """Every choice block's place, channels and sizes, in order (cached: the space is frozen)."""
        cache = self.__dict__.get("_layout_cache")
        if cache is not None:
            return cache
        blocks = []
        size, c_in = self.stem_size(), self.channels[0]
        for stage, (repeat, c_out) in enumerate(zip(self.stage_blocks, self.stage_channels)):
            for j in range(repeat):
                first = j == 0
                stride = (self.stem_stride // self.stem_conv_stride if stage == 0 else 2) if first else 1
                out_size = (_same(size[0], stride), _same(size[1], stride))
                blocks.append(BlockLayout(len(blocks), stage, first, stride, c_in, c_out, size, out_size))
                size, c_in = out_size, c_out
        cache = tuple(blocks)
        object.__setattr__(self, "_layout_cache", cache)
        return cache

    @property
    def num_blocks(self) -> int:
        return sum(self.stage_blocks)

    # ------------------------------------------------------------- decisions
    def decisions(self) -> tuple[OneOf, ...]:
        """One candidate per block ("block0" ... "block19"); each block mutates alone (SPOS §3.4)."""
        return tuple(OneOf(f"block{i}", CHOICES) for i in range(self.num_blocks))

    # What the supernet holds and how an architecture picks from it. The
    # channel-number spaces (`channels.py`, SPOS §3.3) override these four;
    # the models and the cost arithmetic read only them.
    searches_blocks: ClassVar[bool] = True  # masks "block{i}" [4] pick the candidate
    searches_channels: ClassVar[bool] = False  # masks "channels{i}" pick the mid width

    def block_candidates(self, index: int) -> tuple[str, ...]:
        """The candidates the supernet holds in block `index` (here all four)."""
        return CHOICES

    def mid_widths(self, block: BlockLayout) -> tuple[int, ...]:
        """The main branch's middle widths the supernet offers in `block`, ascending (here one)."""
        return (block.mid,)

    def block_parts(self, arch: Architecture) -> tuple[tuple[str, int], ...]:
        """(candidate, middle width) of every block of `arch`."""
        return tuple((c, block.mid) for c, block in zip(self.values_of(self.validate(arch)), self.layout()))

    def skip_masks(self) -> tuple[str, ...]:
        """The candidate masks: a candidate off in every ghost batch is skipped (tf.cond)."""
        return tuple(f"block{i}" for i in range(self.num_blocks)) if self.searches_blocks else ()

    def op_name(self, choice: str) -> str:
        """SPOS's name of a block value ("3" -> "choice_3")."""
        return OP_NAMES[CHOICES.index(choice)]

    # ------------------------------------------------------------------ cost
    def fixed_cost(self) -> Cost:
        """Stem conv, last 1x1 conv and classifier: in every architecture."""
        c_img, c_stem, c_last = self.image_shape[2], self.channels[0], self.channels[-1]
        (h, w), last = self.stem_size(), self.layout()[-1]
        (hf, wf), c_final = last.out_size, last.out_channels
        params = 9 * c_img * c_stem + 4 * c_stem + c_final * c_last + 4 * c_last
        params += c_last * self.num_classes + self.num_classes
        flops = h * w * 9 * c_img * c_stem + hf * wf * c_final * c_last + c_last * self.num_classes
        return Cost(params=params, flops=flops)

    @staticmethod
    def candidate_cost(block: BlockLayout, choice: str, mid: int | None = None) -> Cost:
        """Params and multiply-adds of one candidate of one block (its projection included).

        `mid` overrides the main branch's middle width (SPOS §3.3's channel search).
        """
        (h, w), (ho, wo) = block.in_size, block.out_size
        c_in, c_out, mid = block.main_in, block.main_out, block.mid if mid is None else mid
        if choice == XCEPTION:
            # Three (3x3 depthwise-BN, 1x1 conv-BN) units, all at the output size.
            params = 13 * c_in + c_in * mid + 4 * mid + 2 * (13 * mid) + mid * mid + 4 * mid + mid * c_out + 4 * c_out
            flops = ho * wo * (9 * c_in + c_in * mid + 2 * 9 * mid + mid * mid + mid * c_out)
        elif choice in KERNELS:
            kk = KERNELS[choice] ** 2
            params = c_in * mid + 4 * mid + kk * mid + 4 * mid + mid * c_out + 4 * c_out
            flops = h * w * c_in * mid + ho * wo * (kk * mid + mid * c_out)  # the 1x1 before the stride
        else:
            raise ValueError(f"choice must be one of {CHOICES}. Received: choice={choice!r}")
        if block.first:
            # Projection: kxk depthwise (stride)-BN, 1x1 conv-BN-ReLU, keeping the input's channels.
            kk, c = KERNELS[choice] ** 2, block.in_channels
            params += kk * c + 4 * c + c * c + 4 * c
            flops += ho * wo * (kk * c + c * c)
        return Cost(params=params, flops=flops)

    def count_parts(self, parts: Sequence[Sequence[tuple[str, int]]]) -> Cost:
        """Cost of the network holding, in block i, the (candidate, middle width) pairs `parts[i]`."""
        fixed = self.fixed_cost()
        params, flops = fixed.params, fixed.flops
        for block, pairs in zip(self.layout(), parts, strict=True):
            for choice, mid in pairs:
                cost = self.candidate_cost(block, choice, mid)
                params += cost.params
                flops += cost.flops
        return Cost(params=params, flops=flops)

    def count(self, arch: Architecture) -> Cost:
        """Params and multiply-adds of the stand-alone network, equal to its Keras model's."""
        return self.count_parts([(part,) for part in self.block_parts(arch)])

    def count_oneshot(self) -> Cost:
        """Params and multiply-adds of the supernet with every candidate on at its widest."""
        return self.count_parts([[(c, self.mid_widths(block)[-1]) for c in self.block_candidates(block.index)]
                                 for block in self.layout()])

    def cost_bounds(self) -> dict[str, tuple[int, int]]:
        """Exact without enumeration: blocks add their costs independently, so min and max add up."""
        fixed = self.fixed_cost()
        bounds = {}
        for metric in ("params", "flops"):
            low = high = getattr(fixed, metric)
            for block in self.layout():
                values = [getattr(self.candidate_cost(block, c, mid), metric)
                          for c in self.block_candidates(block.index) for mid in self.mid_widths(block)]
                low, high = low + min(values), high + max(values)
            bounds[metric] = (low, high)
        return bounds

    def uniform(self, choice: str) -> Architecture:
        """The architecture with `choice` in every block (Table 3's "all choice_*")."""
        return self.from_values([choice] * self.num_blocks)
