"""Mixed-precision quantization search on ResNet-18/34 (SPOS, Guo et al. 2019, §3.3, Figure 3c, §4, Table 6).

§4 "Application: Mixed-Precision Quantization": only the res-blocks are
searched and quantized; the first convolution and the classifier stay in
float. Every basic block (He et al. 2016: two 3x3 convolutions and a
shortcut) chooses

- its (weight bits, activation bits) among (1,2), (2,2), (1,4), (2,4),
  (3,4), (4,4), "the same bit widths for the two convolutions";
- its "bottleneck channels", the output channels of its first convolution,
  among 0.5x, 1.0x and 1.5x of the block's output channels,

so a block has 3 x 6 = 18 choices and the space holds 18^N architectures
(N = 8 for ResNet-18, 16 for ResNet-34). PACT (Choi et al. 2018) quantizes
the activations and DoReFa (Zhou et al. 2016) the weights
(`tf_oneshot.layers.quantize`).

The network (ImageNet, `stem_stride` 4): 7x7 conv, 64 channels, stride 2,
BN, ReLU, 3x3 max pool stride 2 (float) -> stages of 64, 128, 256, 512
channels, 2/2/2/2 (ResNet-18) or 3/4/6/3 (ResNet-34) blocks, the first block
of stages 2-4 with stride 2 -> global average pooling -> fc (float). A
block, at activation bits a and weight bits w:

    q = PACT_a(x)          (clip to [0, alpha_1], a-bit uniform)
    h = BN(conv3x3_w(q))   (mid channels, the block's stride)
    y = BN(conv3x3_w(PACT_a(h)))   (PACT replaces the ReLU)
    out = ReLU(y + shortcut),  shortcut = x, or BN(conv1x1_w(q)) with stride
          where the shape changes (ResNet's projection, quantized with the block).

The identity shortcut carries the float x, as in the usual quantized ResNets
(the residual sum is not a convolution input). Where the paper is silent we
chose: the projection is part of the res-block, so it is quantized and
counted (Table 6's figures count it, below); each PACT layer has one clipping level alpha shared by the choices.
Small images (`stem_stride` 1: CIFAR-10, the 8x8 digits) get the usual
CIFAR stem, a 3x3 conv with stride 1 and no pooling (2: the same, stride 2);
`width_multiplier` scales every channel count, the stem's included.

Costs (arithmetic, equal to the Keras models'): params count every Keras
weight (a BN holds 4 per channel, a PACT layer its alpha); multiply-adds
count every convolution and the classifier. BitOps (§4, Table 6) are, per
quantized convolution, multiply-adds x weight bits x activation bits,
summed over the res-blocks (projections included); the float stem and
classifier are left out, not counted as 32 x 32: they are the same in every
architecture, so they change no ranking under a constraint, and the stem
alone would add 118M x 1024 = 121G. This reproduces Table 6 exactly once
its "G" is read as 2^30: the res-blocks at 224 pixels are 1,695,547,392
(ResNet-18) and 3,545,235,456 (ResNet-34) multiply-adds, so kWkA is k^2
times that: 2W2A, 3W3A, 4W4A = 6.32G, 14.21G, 25.27G and 13.21G, 29.72G,
52.83G, Table 6's baselines to the digit.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import ClassVar

from tf_oneshot.errors import UserError
from tf_oneshot.search_spaces.base import Architecture, Cost, SearchSpace
from tf_oneshot.search_spaces.decisions import OneOf
from tf_oneshot.search_spaces.fields import normalize_network_fields

# §4: (weight bits, activation bits) of a block, and their option labels.
BIT_PAIRS = ((1, 2), (2, 2), (1, 4), (2, 4), (3, 4), (4, 4))
BIT_LABELS = tuple(f"w{w}a{a}" for w, a in BIT_PAIRS)
# §4: bottleneck channels, k times the block's output channels.
CHANNEL_MULTIPLIERS = (0.5, 1.0, 1.5)

RESNET18_BLOCKS = (2, 2, 2, 2)
RESNET34_BLOCKS = (3, 4, 6, 3)
RESNET_CHANNELS = (64, 64, 128, 256, 512)  # stem, then one per stage


@dataclasses.dataclass(frozen=True)
class BlockLayout:
    """Where one basic block sits: index, stage, stride, channels, spatial sizes."""

    index: int
    stage: int
    stride: int
    in_channels: int
    out_channels: int
    in_size: tuple[int, int]
    out_size: tuple[int, int]

    @property
    def projection(self) -> bool:
        """A 1x1 projection shortcut where the shape changes (ResNet's option B)."""
        return self.stride != 1 or self.in_channels != self.out_channels

    @property
    def mids(self) -> tuple[int, ...]:
        """The bottleneck widths of CHANNEL_MULTIPLIERS (half up), in option order."""
        return tuple(max(1, int(m * self.out_channels + 0.5)) for m in CHANNEL_MULTIPLIERS)

    @property
    def max_mid(self) -> int:
        """The one-shot model's width: weights are preallocated at 1.5x (SPOS §3.3)."""
        return max(self.mids)


def _same(size: int, stride: int) -> int:
    return -(-size // stride)


def bit_pair(label: str) -> tuple[int, int]:
    """(weight bits, activation bits) of an option label ("w2a4" -> (2, 4))."""
    return BIT_PAIRS[BIT_LABELS.index(label)]


def bit_label(pair: Sequence[int]) -> str:
    """The option label of a (weight bits, activation bits) pair.

    Raises:
        UserError: for a pair outside SPOS §4's set.
    """
    try:
        pair = tuple(int(b) for b in pair)
    except (TypeError, ValueError):
        pair = None
    if pair not in BIT_PAIRS:
        raise UserError(f"bit-width pair {pair!r} is not in SPOS's set; (weight bits, activation bits) must be "
                        f"one of {', '.join(f'({w},{a})' for w, a in BIT_PAIRS)}.")
    return BIT_LABELS[BIT_PAIRS.index(pair)]


@dataclasses.dataclass(frozen=True)
class SposQuantSpace(SearchSpace):
    """SPOS's mixed-precision space over a ResNet's basic blocks (§3.3, §4, Table 6).

    Use `SposQuantResNet18Space` or `SposQuantResNet34Space`; they differ in
    `stage_blocks` only.

    Args:
        width_multiplier: scales every channel count (1.0: ResNet's 64-512).
        image_shape: (height, width, channels) of the inputs (ImageNet: 224x224x3).
        num_classes: classifier outputs (1000 for ImageNet).
        stem_stride: 4 (ImageNet: 7x7 conv stride 2 and max pool), 2 or 1 (a 3x3 conv with that stride).
        stage_blocks: basic blocks per stage.
        channels: stem, then one per stage (ResNet: 64, 64, 128, 256, 512).
    """

    width_multiplier: float = 1.0
    image_shape: tuple[int, int, int] = (224, 224, 3)
    num_classes: int = 1000
    stem_stride: int = 4
    stage_blocks: tuple[int, ...] = RESNET18_BLOCKS
    channels: tuple[int, ...] = RESNET_CHANNELS

    name: ClassVar[str] = ""
    # §3.3: "for each choice block feature bit width and weight bit width are randomly sampled".
    default_sampler: ClassVar[str] = "uniform"
    network: ClassVar[str] = "tf_oneshot.search_spaces.spos_quant.network"

    def __post_init__(self) -> None:
        normalize_network_fields(self, extra_channels=1, channels_meaning="stem, then one per stage")
        if any(len(set(b.mids)) < len(b.mids) for b in self.layout()):
            raise UserError(f"stage channels {self.stage_channels} are too narrow: 0.5x, 1.0x and 1.5x must give "
                            "distinct bottleneck widths; use at least 2 channels per stage.")

    # ---------------------------------------------------------------- layout
    @property
    def stage_channels(self) -> tuple[int, ...]:
        """Output channels of each stage, scaled by `width_multiplier`."""
        return self._scaled()[1:]

    @property
    def stem_channels(self) -> int:
        """The stem's channels, scaled with the stages (ResNet's stem is as wide as stage 1)."""
        return self._scaled()[0]

    def _scaled(self) -> tuple[int, ...]:
        m = self.width_multiplier
        return tuple(c if m == 1.0 else max(1, round(c * m)) for c in self.channels)

    @property
    def stem_kernel(self) -> int:
        return 7 if self.stem_stride == 4 else 3

    @property
    def stem_conv_stride(self) -> int:
        return min(self.stem_stride, 2)

    @property
    def stem_pool(self) -> bool:
        """ImageNet's 3x3 max pool with stride 2 after the stem conv."""
        return self.stem_stride == 4

    def stem_size(self) -> tuple[int, int]:
        """(height, width) after the stem conv (before the pool)."""
        h, w = self.image_shape[:2]
        return _same(h, self.stem_conv_stride), _same(w, self.stem_conv_stride)

    def layout(self) -> tuple[BlockLayout, ...]:
        """Every basic block's place, channels and sizes, in order (cached: the space is frozen)."""
        cache = self.__dict__.get("_layout_cache")
        if cache is not None:
            return cache
        size = self.stem_size()
        if self.stem_pool:
            size = (_same(size[0], 2), _same(size[1], 2))
        blocks, c_in = [], self.stem_channels
        for stage, (repeat, c_out) in enumerate(zip(self.stage_blocks, self.stage_channels)):
            for j in range(repeat):
                stride = 2 if j == 0 and stage > 0 else 1
                out_size = (_same(size[0], stride), _same(size[1], stride))
                blocks.append(BlockLayout(len(blocks), stage, stride, c_in, c_out, size, out_size))
                size, c_in = out_size, c_out
        cache = tuple(blocks)
        object.__setattr__(self, "_layout_cache", cache)
        return cache

    @property
    def num_blocks(self) -> int:
        return sum(self.stage_blocks)

    # ------------------------------------------------------------- decisions
    def decisions(self) -> tuple[OneOf, ...]:
        """Per block, "block{i}_bits" and "block{i}_channels", one choice block for mutation (SPOS §3.4)."""
        out = []
        for i in range(self.num_blocks):
            out.append(OneOf(f"block{i}_bits", BIT_LABELS, group=f"block{i}"))
            out.append(OneOf(f"block{i}_channels", CHANNEL_MULTIPLIERS, group=f"block{i}"))
        return tuple(out)

    def block_choices(self, arch: Architecture) -> list[tuple[tuple[int, int], float]]:
        """Per block, ((weight bits, activation bits), channel multiplier)."""
        values = self.values_of(self.validate(arch))
        return [(bit_pair(values[2 * i]), values[2 * i + 1]) for i in range(self.num_blocks)]

    def architecture(self, bits: Sequence[Sequence[int]], channels: Sequence[float]) -> Architecture:
        """The architecture with per-block bit pairs and channel multipliers.

        Raises:
            UserError: for a bit pair outside §4's set, a multiplier off the grid, or wrong lengths.
        """
        if len(bits) != self.num_blocks or len(channels) != self.num_blocks:
            raise UserError(f"{self.name} has {self.num_blocks} blocks; got {len(bits)} bit pairs and "
                            f"{len(channels)} channel multipliers.")
        values = []
        for pair, multiplier in zip(bits, channels):
            values += [bit_label(pair), multiplier]
        return self.from_values(values)

    def uniform(self, bits: Sequence[int] = (4, 4), channels: float = 1.0) -> Architecture:
        """Every block at `bits` and `channels` (Table 6's kWkA baselines: k-bit, 1.0x)."""
        return self.architecture([bits] * self.num_blocks, [channels] * self.num_blocks)

    # ------------------------------------------------------------------ cost
    def fixed_cost(self) -> Cost:
        """The float stem conv (with its BN) and classifier: in every architecture, no BitOps."""
        c_img, c_stem, k = self.image_shape[2], self.stem_channels, self.stem_kernel
        (h, w), c_last = self.stem_size(), self.layout()[-1].out_channels
        params = k * k * c_img * c_stem + 4 * c_stem + c_last * self.num_classes + self.num_classes
        flops = h * w * k * k * c_img * c_stem + c_last * self.num_classes
        return Cost(params=params, flops=flops, bitops=0)

    @staticmethod
    def block_cost(block: BlockLayout, bits: tuple[int, int], mid: int) -> Cost:
        """Params, multiply-adds and BitOps of one basic block at `bits` with `mid` bottleneck channels.

        BitOps = multiply-adds x weight bits x activation bits of its quantized
        convolutions (two 3x3 and the projection, if any).
        """
        (ho, wo), c_in, c_out = block.out_size, block.in_channels, block.out_channels
        params = 9 * c_in * mid + 4 * mid + 9 * mid * c_out + 4 * c_out + 2  # two PACT alphas
        flops = ho * wo * (9 * c_in * mid + 9 * mid * c_out)
        if block.projection:
            params += c_in * c_out + 4 * c_out
            flops += ho * wo * c_in * c_out
        return Cost(params=params, flops=flops, bitops=flops * bits[0] * bits[1])

    def _sum(self, parts: Sequence[Cost]) -> Cost:
        fixed = self.fixed_cost()
        return Cost(params=fixed.params + sum(c.params for c in parts),
                    flops=fixed.flops + sum(c.flops for c in parts),
                    bitops=sum(c.bitops for c in parts))

    def count(self, arch: Architecture) -> Cost:
        """Params, multiply-adds and BitOps of the stand-alone network (equal to its Keras model's)."""
        return self._sum([self.block_cost(b, bits, b.mids[CHANNEL_MULTIPLIERS.index(m)])
                          for b, (bits, m) in zip(self.layout(), self.block_choices(arch))])

    def count_oneshot(self) -> Cost:
        """The one-shot model's params (weights at 1.5x), and the costs of the path all-on masks run (1.5x, 4W4A)."""
        return self._sum([self.block_cost(b, BIT_PAIRS[-1], b.max_mid) for b in self.layout()])

    def cost_bounds(self) -> dict[str, tuple[int, int]]:
        """Exact without enumeration: blocks add their costs independently, so min and max add up."""
        fixed = self.fixed_cost()
        bounds = {}
        for metric in ("params", "flops", "bitops"):
            low = high = getattr(fixed, metric)
            for block in self.layout():
                values = [getattr(self.block_cost(block, bits, mid), metric) for bits in BIT_PAIRS for mid in block.mids]
                low, high = low + min(values), high + max(values)
            bounds[metric] = (low, high)
        return bounds

    def skip_masks(self) -> tuple[str, ...]:
        """None: every block runs in every architecture; choices select bit widths and channels."""
        return ()


@dataclasses.dataclass(frozen=True)
class SposQuantResNet18Space(SposQuantSpace):
    """SPOS §4's ResNet-18 quantization space: 8 basic blocks, 18^8 architectures."""

    stage_blocks: tuple[int, ...] = RESNET18_BLOCKS
    name: ClassVar[str] = "spos_quant_resnet18"


@dataclasses.dataclass(frozen=True)
class SposQuantResNet34Space(SposQuantSpace):
    """SPOS §4's ResNet-34 quantization space: 16 basic blocks, 18^16 architectures."""

    stage_blocks: tuple[int, ...] = RESNET34_BLOCKS
    name: ClassVar[str] = "spos_quant_resnet34"
