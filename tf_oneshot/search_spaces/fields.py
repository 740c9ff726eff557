"""Checks of the fields that the staged image-classification spaces share.

The single-path ShuffleNetV2 space (SPOS Table 2) and the quantized ResNet
spaces (SPOS §3.3) describe their networks with the same fields: width
multiplier, input shape, classes, stem stride, blocks per stage and channels. A bad value is one `UserError`
line naming the field and what it should be (the package's rule for bad
input), whichever space it was given to.
"""

from __future__ import annotations

from typing import Any

from tf_oneshot.errors import UserError


def tuple_of_ints(value: Any, field: str) -> tuple[int, ...]:
    """A tuple of ints from a tuple, a list, an int, or "4:4:8:4" (--space_args has no commas to spare)."""
    if isinstance(value, str):
        value = [v for v in value.replace(" ", ":").split(":") if v]
    elif isinstance(value, int) and not isinstance(value, bool):
        value = [value]
    try:
        out = tuple(int(v) for v in value)
        if any(isinstance(v, bool) or float(v) != int(v) for v in value):
            raise ValueError
    except (TypeError, ValueError):
        raise UserError(f"{field}={value!r} is invalid; expected integers, e.g. {field}=4:4:8:4.") from None
    return out


def normalize_network_fields(space: Any, extra_channels: int, channels_meaning: str) -> None:
    """Normalizes (frozen dataclass) and checks the shared fields of `space`.

    Args:
        space: a frozen dataclass with the fields width_multiplier,
            image_shape, num_classes, stem_stride, stage_blocks, channels.
        extra_channels: channels entries beyond one per stage (1: the stem;
            2: the stem and a last conv).
        channels_meaning: what the channels entries are, for the error line.

    Raises:
        UserError: naming the first bad field and what it should be.
    """
    try:
        object.__setattr__(space, "image_shape", tuple(int(d) for d in space.image_shape))
    except (TypeError, ValueError):
        raise UserError(f"image_shape={space.image_shape!r} is invalid; expected (height, width, channels).") from None
    object.__setattr__(space, "stage_blocks", tuple_of_ints(space.stage_blocks, "stage_blocks"))
    object.__setattr__(space, "channels", tuple_of_ints(space.channels, "channels"))
    m = space.width_multiplier
    if isinstance(m, bool) or not isinstance(m, (int, float)) or not m > 0:
        raise UserError(f"width_multiplier={m!r} is invalid; expected a positive number.")
    object.__setattr__(space, "width_multiplier", float(m))

    def positive(value: Any) -> bool:
        return isinstance(value, int) and not isinstance(value, bool) and value >= 1

    slots = len(space.stage_blocks) + extra_channels
    checks = [
        (len(space.image_shape) == 3 and min(space.image_shape) >= 1, "image_shape",
         "(height, width, channels) of positive sizes"),
        (positive(space.num_classes) and space.num_classes >= 2, "num_classes", "an integer of at least 2"),
        (space.stem_stride in (1, 2, 4) and not isinstance(space.stem_stride, bool), "stem_stride", "1, 2 or 4"),
        (len(space.stage_blocks) >= 1 and all(b >= 1 for b in space.stage_blocks), "stage_blocks",
         "at least one stage of at least one block"),
        (len(space.channels) == slots and all(c >= 1 for c in space.channels), "channels",
         f"{slots} positive integers ({channels_meaning})"),
    ]
    for ok, field, expected in checks:
        if not ok:
            raise UserError(f"{field}={getattr(space, field)!r} is invalid; expected {expected}.")
