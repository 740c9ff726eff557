"""Channel-number search of Single Path One-Shot (SPOS, Guo et al. 2019, §3.3, §4, Figure 3b, Table 4).

§4: "for each building block, we search the number of 'mid channels'
(output channels of the first 1x1 conv in each building block) varying
from 0.2x to 1.6x (with stride 0.2)", 8 choices per block, on the baseline
structure "all choice_3" under FLOPs <= 330M. Two spaces:

- `spos_channels`: every block's candidate is fixed (`blocks`, default all
  "3", Table 4's "choice_3 + channel search"; give a block-search result,
  e.g. `blocks=3/5/x/...`, for its "block search + channel search", the
  pipeline §4 found slightly better) and its mid width is searched: 8^20;
- `spos_blocks_channels`: the "combined search space" of §4, candidate and
  mid width per block, two decisions of one choice block (they mutate and
  cross over together, §3.4): (4 x 8)^20 = 32^20.

The mid width of choice_x is that of all three of its 1x1 convs' inputs
after the first (SPOS's Xception block has one `mid_channels`). A block's
default mid width is half its output (`BlockLayout.mid`); multiplier k/5
gives floor(mid * k / 5) channels, truncated as SPOS's official code does
(`int(mid * scale)`; Table 2: 6, 12, 19, 25, 32, 38, 44, 51 in stage 1;
exact in the others), which must be 8 distinct positive widths, so the size
counts distinct networks.

Figure 3b preallocates the widest weights and slices the first c channels
for each batch. One traced graph on TPU needs static shapes instead, so the
supernet holds the widest (1.6x) weights and masks the channels past c
(`model.py`, `masked_bn.py`); the stand-alone network is the sliced one and
takes the leading sub-tensors of the supernet's weights.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

from tf_oneshot.errors import UserError
from tf_oneshot.search_spaces.base import Architecture
from tf_oneshot.search_spaces.decisions import OneOf
from tf_oneshot.search_spaces.spos_blocks.space import CHOICES, BlockLayout, SposBlocksSpace

# §4: 0.2x to 1.6x in steps of 0.2, as literals so that they print as written.
MULTIPLIERS = (0.2, 0.4, 0.6, 0.8, 1.0, 1.2, 1.4, 1.6)
_GRID = ", ".join(map(str, MULTIPLIERS))


def on_grid(value: Any) -> float | None:
    """The grid multiplier equal to `value` (a number or its text, within 1e-9), else None."""
    if isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return next((m for m in MULTIPLIERS if abs(m - number) < 1e-9), None)


def mid_width(mid: int, multiplier: float) -> int:
    """floor(mid * multiplier) for a grid multiplier k / 5, as SPOS's code truncates, in integers (no float error)."""
    k = MULTIPLIERS.index(multiplier) + 1
    return (2 * mid * k) // 10


class Multiplier(OneOf):
    """A block's mid-channel multiplier: a `OneOf` that also reads "1", "0.60" or 0.6000000000000001."""

    def parse(self, text: str) -> Any:
        return self.check(text)

    def check(self, value: Any) -> Any:
        found = on_grid(value)
        if found is None or found not in self.options:
            raise UserError(f"{self.name}: channel multiplier {value!r} is not one of "
                            f"{', '.join(map(str, self.options))} (SPOS §3.3: 0.2x to 1.6x, step 0.2).")
        return found


def _multipliers(value: Any) -> tuple[float, ...]:
    """The searched multipliers from a tuple, a number, or "0.6:1.0:1.4" (--space_args)."""
    items = [v for v in value.replace("/", ":").split(":") if v.strip()] if isinstance(value, str) else value
    if isinstance(items, (int, float)) and not isinstance(items, bool):
        items = [items]
    try:
        items = list(items)
    except TypeError:
        items = [items]
    found = [on_grid(v) for v in items]
    if not found or None in found:
        bad = items[found.index(None)] if found else value
        raise UserError(f"multipliers={bad!r} is off SPOS §3.3's grid; expected values among {_GRID}, "
                        "e.g. multipliers=0.6:1.0:1.4.")
    return tuple(m for m in MULTIPLIERS if m in found)


def _blocks(value: Any, num_blocks: int) -> tuple[str, ...]:
    """One candidate per block from "3", 3, "3:5:x:..." or "3/5/x/..." (a spos_blocks string)."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    items = [v.strip() for v in value.replace("/", ":").split(":") if v.strip()] if isinstance(value, str) \
        else [str(v) for v in value]
    if len(items) == 1:
        items *= num_blocks
    bad = [v for v in items if v not in CHOICES]
    if bad or len(items) != num_blocks:
        raise UserError(f"blocks={value!r} is invalid; expected one of {', '.join(CHOICES)} for every block, or "
                        f"{num_blocks} of them separated by ':' or '/', e.g. blocks=3 or blocks="
                        f"{'/'.join(CHOICES[i % 4] for i in range(num_blocks))}.")
    return tuple(items)


@dataclasses.dataclass(frozen=True)
class _ChannelSearchSpace(SposBlocksSpace):
    """The part both channel-number spaces share: the multipliers and the mid widths they give.

    Args:
        multipliers: the searched multipliers of each block's mid width, a
            subset of §4's grid (default all 8; "0.6:1.0:1.4" via --space_args).
    """

    multipliers: tuple[float, ...] = MULTIPLIERS

    searches_channels: ClassVar[bool] = True
    # The latency table times one unit per candidate of a block (SPOS §3.4); these
    # spaces also choose each block's width, which the table does not hold.
    latency: ClassVar[str | None] = None

    def __post_init__(self) -> None:
        super().__post_init__()
        object.__setattr__(self, "multipliers", _multipliers(self.multipliers))
        for block in self.layout():
            widths = [mid_width(block.mid, m) for m in self.multipliers]
            if len(set(widths)) != len(widths) or min(widths) < 1:
                raise UserError(
                    f"block {block.index} has {block.mid} mid channels, too few for {len(widths)} distinct widths "
                    f"{self.multipliers} (got {widths}); widen its stage to at least 10 channels or search fewer "
                    "multipliers."
                )

    def mid_widths(self, block: BlockLayout) -> tuple[int, ...]:
        """The widths of the searched multipliers, ascending; the supernet holds the last."""
        return tuple(mid_width(block.mid, m) for m in self.multipliers)

    def _channel_decision(self, index: int) -> Multiplier:
        return Multiplier(f"channels{index}", self.multipliers, group=f"block{index}")


@dataclasses.dataclass(frozen=True)
class SposChannelsSpace(_ChannelSearchSpace):
    """SPOS §3.3 / Table 4: the mid width of each block, the candidates fixed (8^20).

    Args:
        blocks: the candidate of every block: one of "3", "5", "7", "x" for
            all (default "3": Table 4's "all choice_3" baseline), or one per
            block ("3/5/x/..." a spos_blocks architecture, or "3:5:x:...").
        multipliers, and the fields of `SposBlocksSpace`.
    """

    blocks: tuple[str, ...] | str = "3"

    name: ClassVar[str] = "spos_channels"
    searches_blocks: ClassVar[bool] = False

    def __post_init__(self) -> None:
        super().__post_init__()
        object.__setattr__(self, "blocks", _blocks(self.blocks, self.num_blocks))

    def decisions(self) -> tuple[OneOf, ...]:
        """One multiplier per block ("channels0" ... "channels19")."""
        return tuple(self._channel_decision(i) for i in range(self.num_blocks))

    def block_candidates(self, index: int) -> tuple[str, ...]:
        return (self.blocks[index],)

    def block_parts(self, arch: Architecture) -> tuple[tuple[str, int], ...]:
        values = self.values_of(self.validate(arch))
        return tuple((c, mid_width(b.mid, m)) for c, m, b in zip(self.blocks, values, self.layout()))

    def uniform(self, multiplier: float = 1.0) -> Architecture:  # type: ignore[override]
        """The architecture with `multiplier` in every block (1.0: the fixed-candidate network itself)."""
        return self.from_values([multiplier] * self.num_blocks)


@dataclasses.dataclass(frozen=True)
class SposBlocksChannelsSpace(_ChannelSearchSpace):
    """SPOS §4 / Table 4's combined space: candidate and mid width of each block ((4 x 8)^20 = 32^20).

    An architecture string alternates them: "3/1.0/x/0.4/...".
    """

    name: ClassVar[str] = "spos_blocks_channels"

    def decisions(self) -> tuple[OneOf, ...]:
        """"block{i}" then "channels{i}", one choice block: mutation and crossover move them together."""
        out: list[OneOf] = []
        for i in range(self.num_blocks):
            out += [OneOf(f"block{i}", CHOICES, group=f"block{i}"), self._channel_decision(i)]
        return tuple(out)

    def block_parts(self, arch: Architecture) -> tuple[tuple[str, int], ...]:
        values = self.values_of(self.validate(arch))
        return tuple((values[2 * b.index], mid_width(b.mid, values[2 * b.index + 1])) for b in self.layout())

    def uniform(self, choice: str, multiplier: float = 1.0) -> Architecture:  # type: ignore[override]
        """`choice` with `multiplier` in every block (Table 3's "all choice_*" at 1.0)."""
        return self.from_values([choice, multiplier] * self.num_blocks)

