"""Typed, validated configuration of one-shot training.

absl flags are parsed once in the CLI into this frozen dataclass; library code
reads only the dataclass. Validation happens here, with one-line messages that
say what is wrong and what would be right.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from tf_oneshot.errors import UserError
from tf_oneshot.search_spaces import DEFAULT_SPACE, get_space, space_class, space_fields

# Flags that set a field of the search space (None: the space's default); a
# space that has no such field refuses the flag.
SPACE_OPTION_FIELDS = ("filters", "num_cells", "num_blocks", "num_stacks", "stem_stride")
# Fields that fix the shape of the one-shot model's weights: a model_dir trained
# with other values cannot be resumed or scored with this config.
# Partial weight sharing ("Deeper insights", §4.2-4.3, `tf_oneshot.search_spaces.sharing`):
# the copies of the weights and which child reads which.
SHARING_FIELDS = ("sharing", "sharing_groups", "sharing_grouping", "sharing_prefix", "sharing_seed")
ARCHITECTURE_FIELDS = ("dataset", "space", "space_args", *SPACE_OPTION_FIELDS, *SHARING_FIELDS)
CONSTRAINT_FIELDS = ("min_params", "max_params", "min_flops", "max_flops", "min_bitops", "max_bitops",
                     "min_latency_ms", "max_latency_ms", "latency_table")
DROPOUT_SCHEDULES = ("linear", "constant")
ALL_DROPPED_RULES = ("zero", "keep_one")
LR_SCHEDULES = ("cosine", "linear", "constant")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a one-shot training run.

    Defaults follow Bender et al. 2018, §4.1 (CIFAR-10): learning rate 0.1,
    Nesterov momentum 0.9, ghost batches of 32, r = 0.1 ramped linearly.
    """

    dataset: str = "digits"
    data_dir: str | None = None
    # The search space: a registered name or "module:Attribute" / "file.py:Attribute".
    space: str = DEFAULT_SPACE
    # Space fields (None: the space's default; stem_stride: the dataset's suggestion).
    filters: int | None = None
    num_cells: int | None = None
    num_blocks: int | None = None
    num_stacks: int | None = None
    stem_stride: int | None = None
    # Any other space fields, "name=value,name=value" (e.g. "width=32" for the example space).
    space_args: str | None = None
    # The sampling rule (tf_oneshot.training.samplers; None: the space's default).
    sampler: str | None = None
    # The FLOPs / params range of the "uniform_constraint" sampler (SPOS §3.2).
    min_params: int | None = None
    max_params: int | None = None
    min_flops: int | None = None
    max_flops: int | None = None
    # ... and its BitOps (SPOS §3.3) and table latency (SPOS §3.4) ranges.
    min_bitops: int | None = None
    max_bitops: int | None = None
    min_latency_ms: float | None = None
    max_latency_ms: float | None = None
    latency_table: str | None = None
    train_steps: int = 10_000
    batch_size: int = 64
    ghost_batch_size: int = 32
    dropout_rate: float = 0.1
    dropout_schedule: str = "linear"
    all_dropped: str = "zero"
    learning_rate: float = 0.1
    lr_schedule: str = "cosine"
    momentum: float = 0.9
    weight_decay: float = 1e-4
    seed: int = 0
    steps_per_loop: int = 1
    checkpoint_every: int = 100
    log_every: int = 50
    keep_checkpoints: int = 3
    jit_compile: bool = False
    # Skip (tf.cond) the ops dropped in every ghost batch of a replica once the
    # expected share of such ops reaches this (trainer.skips_pay); 0.25 is
    # where skipping broke even on CPU (benchmarks/train_step.py).
    skip_threshold: float = 0.25
    mixed_precision: str = "none"
    eval_batches: int = 4
    # Partial weight sharing ("Deeper insights", §4.2-4.3): "full", "group"
    # (m = sharing_groups copies; children grouped "random"ly from
    # sharing_seed or by "similarity") or "prefix" (the stem and the first
    # sharing_prefix cells shared, the rest a copy per child).
    sharing: str = "full"
    sharing_groups: int = 1
    sharing_grouping: str = "random"
    sharing_prefix: int = 0
    sharing_seed: int = 0
    # Seed of the child order (the sampler), None: `seed`. "Deeper insights"
    # §3.2, Table 1: instances that differ in weight seed only keep it fixed.
    order_seed: int | None = None

    def __post_init__(self) -> None:
        positive = (
            "train_steps", "batch_size", "ghost_batch_size", "steps_per_loop", "checkpoint_every",
            "log_every", "keep_checkpoints",
        )
        optional = ("filters", "num_cells", "num_blocks", "num_stacks")
        for name in positive + optional:
            value = getattr(self, name)
            if name in optional and value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise UserError(f"--{name}={value} is invalid; it must be a positive integer.")
        self.constraints()  # validates the ranges (tf_oneshot.search.constraints.Constraints)
        if not 0.0 < self.dropout_rate < 1.0:
            raise UserError(
                f"--dropout_rate={self.dropout_rate} is invalid; r must lie strictly between 0 and 1 "
                "(Bender et al. 2018 use 0.1)."
            )
        if self.batch_size % self.ghost_batch_size:
            raise UserError(
                f"--ghost_batch_size={self.ghost_batch_size} does not divide "
                f"--batch_size={self.batch_size}; choose a divisor, e.g. "
                f"--ghost_batch_size={_largest_divisor(self.batch_size, self.ghost_batch_size)}."
            )
        choices = (
            ("dropout_schedule", DROPOUT_SCHEDULES),
            ("all_dropped", ALL_DROPPED_RULES),
            ("lr_schedule", LR_SCHEDULES),
            ("mixed_precision", ("none", "bfloat16", "float16")),
        )
        for name, allowed in choices:
            if getattr(self, name) not in allowed:
                raise UserError(
                    f"--{name}={getattr(self, name)} is invalid; choose one of {', '.join(allowed)}."
                )
        if self.learning_rate <= 0 or self.weight_decay < 0 or not 0 <= self.momentum < 1:
            raise UserError(
                "--learning_rate must be > 0, --weight_decay >= 0 and --momentum in [0, 1); got "
                f"{self.learning_rate}, {self.weight_decay}, {self.momentum}."
            )
        if not 0.0 <= self.skip_threshold <= 1.0:
            raise UserError(
                f"--skip_threshold={self.skip_threshold} is invalid; expected a fraction in [0, 1] "
                "(0: always skip ops dropped in every ghost batch, 1: never)."
            )
        self._check_sharing()
        if self.stem_stride not in (None, 1, 2, 4):
            raise UserError(f"--stem_stride={self.stem_stride} is invalid; choose 1, 2 or 4.")

    def _check_sharing(self) -> None:
        from tf_oneshot.search_spaces.sharing import GROUPINGS, SHARING_MODES

        if self.sharing not in SHARING_MODES:
            raise UserError(f"--sharing={self.sharing} is invalid; choose one of {', '.join(SHARING_MODES)}.")
        if self.sharing_grouping not in GROUPINGS:
            raise UserError(f"--sharing_grouping={self.sharing_grouping} is invalid; choose one of "
                            f"{', '.join(GROUPINGS)}.")
        for name, low in (("sharing_groups", 1), ("sharing_prefix", 0), ("sharing_seed", 0)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise UserError(f"--{name}={value} is invalid; expected an integer >= {low}.")
        if self.order_seed is not None and (isinstance(self.order_seed, bool) or not isinstance(self.order_seed, int)
                                            or self.order_seed < 0):
            raise UserError(f"--order_seed={self.order_seed} is invalid; expected a non-negative integer.")

    @property
    def sampler_seed(self) -> int:
        """The seed of the child order: `order_seed`, else `seed`."""
        return self.seed if self.order_seed is None else self.order_seed

    @property
    def num_ghosts(self) -> int:
        """Ghost batches per global batch (Bender et al. 2018, §3.2)."""
        return self.batch_size // self.ghost_batch_size

    def space_options(self) -> dict[str, Any]:
        """The space fields this config sets (named flags and --space_args)."""
        options = {f: getattr(self, f) for f in SPACE_OPTION_FIELDS if getattr(self, f) is not None}
        for name, value in parse_space_args(self.space_args).items():
            if name in options:
                raise UserError(f"--space_args sets {name} and so does --{name}; keep one.")
            options[name] = value
        return options

    def make_space(self, image_shape: tuple[int, int, int], num_classes: int, stem_stride: int = 1) -> Any:
        """The search space and network this config trains on a dataset.

        Raises:
            UserError: an unknown space, or a space flag the space does not take.
        """
        fields = space_fields(space_class(self.space))
        options = self.space_options()
        unknown = [k for k in options if k not in fields]
        if unknown:
            raise UserError(
                f"--{unknown[0]} does not apply to --space={self.space}; its fields are {', '.join(fields)}."
            )
        fixed = [k for k in ("image_shape", "num_classes") if k in options]
        if fixed:
            raise UserError(f"--space_args={fixed[0]}=... is set by the dataset; choose --dataset "
                            "(or --image_size where the command takes it) instead.")
        if "stem_stride" in fields:
            options.setdefault("stem_stride", stem_stride)
        space = get_space(self.space, image_shape=tuple(image_shape), num_classes=num_classes, **options)
        return self.shared(space)

    def shared(self, space: Any) -> Any:
        """`space` with this config's partial weight sharing (`tf_oneshot.search_spaces.sharing`); itself for full sharing."""
        from tf_oneshot.search_spaces.sharing import apply_sharing

        return apply_sharing(space, self.sharing, self.sharing_groups, self.sharing_grouping, self.sharing_prefix,
                             self.sharing_seed)

    def for_space(self, spec: str) -> TrainConfig:
        """This config on another search space, keeping only the space fields it takes."""
        fields = space_fields(space_class(spec))
        return self.replace(space=spec, **{f: None for f in SPACE_OPTION_FIELDS if f not in fields})

    def constraints(self) -> Any:
        """The sampler's cost range as `tf_oneshot.search.Constraints`."""
        from tf_oneshot.search_spaces.constraints import Constraints

        return Constraints(**{f: getattr(self, f) for f in CONSTRAINT_FIELDS})

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in obj.items() if k in known})

    def replace(self, **changes: Any) -> TrainConfig:
        return dataclasses.replace(self, **changes)

    def architecture_differences(self, other: TrainConfig) -> list[str]:
        """Names the architecture fields where `other` differs, as 'name=a (not b)'."""
        return [
            f"{name}={getattr(other, name)} (this run asks for {getattr(self, name)})"
            for name in ARCHITECTURE_FIELDS
            if getattr(self, name) != getattr(other, name)
        ]


def _largest_divisor(n: int, at_most: int) -> int:
    return max(d for d in range(1, min(n, at_most) + 1) if n % d == 0)


def parse_space_args(text: str | None) -> dict[str, Any]:
    """"width=32,num_blocks=3" -> {"width": 32, "num_blocks": 3} (ints, floats, else strings)."""
    out: dict[str, Any] = {}
    for item in filter(None, (part.strip() for part in (text or "").split(","))):
        name, sep, value = item.partition("=")
        if not sep or not name.strip().isidentifier():
            raise UserError(f"--space_args={text} is malformed at {item!r}; expected name=value,name=value.")
        for kind in (int, float):
            try:
                out[name.strip()] = kind(value)
                break
            except ValueError:
                continue
        else:
            out[name.strip()] = value.strip()
    return out
