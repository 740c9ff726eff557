"""Typed, validated configuration of one-shot training: one value per concern.

absl flags are parsed once in the CLI into these frozen dataclasses; library
code reads only them. A `TrainConfig` composes the data (`DataConfig`), the
search space (`search_spaces.space_config.SpaceConfig`), the sampling rule
(`SamplerConfig`) and the optimizer (`OptimizerConfig`) with the run's own
fields, and each validates its own fields with one-line messages that say
what is wrong and what would be right. Configs build nothing: the space is
built by `search_spaces.space_config.build_space`.

The command line, records and the config.json of older runs spell a config
with flat names (`batch_size`, `filters`, `min_flops`, ...): `TrainConfig`
takes them, routing each to its concern, and `to_flat` gives them back.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from tf_oneshot.errors import UserError, require_positive
from tf_oneshot.search_spaces import space_config
from tf_oneshot.search_spaces.constraints import Constraints
from tf_oneshot.search_spaces.space_config import SpaceConfig

DROPOUT_SCHEDULES = ("linear", "constant")
ALL_DROPPED_RULES = ("zero", "keep_one")
LR_SCHEDULES = ("cosine", "linear", "constant")
PATH_PER = ("step", "replica", "ghost_batch")
MIXED_PRECISION = ("none", "bfloat16", "float16")
CONSTRAINT_FIELDS = tuple(f.name for f in dataclasses.fields(Constraints))
# The flat names that fix the shape of the one-shot model's weights: a
# model_dir trained with other values cannot be resumed or scored with this config.
ARCHITECTURE_FIELDS = ("dataset", *space_config.FLAT_NAMES)


def _check_choices(config: Any, choices: tuple[tuple[str, tuple[str, ...]], ...]) -> None:
    for name, allowed in choices:
        if getattr(config, name) not in allowed:
            raise UserError(f"--{name}={getattr(config, name)} is invalid; choose one of "
                            f"{', '.join(allowed)}.")


def _largest_divisor(n: int, at_most: int) -> int:
    return max(d for d in range(1, min(n, at_most) + 1) if n % d == 0)


class SameNames:
    """A concern whose fields keep their own names in flags, records and JSON."""

    @classmethod
    def from_flat(cls, flat: Mapping[str, Any]) -> Any:
        return cls(**{f.name: flat[f.name] for f in dataclasses.fields(cls) if f.name in flat})

    def to_flat(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> dict[str, Any]:
        return self.to_flat()

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> Any:
        return cls.from_flat(obj)


@dataclasses.dataclass(frozen=True)
class DataConfig(SameNames):
    """The training data and how a global batch splits into ghost batches (Bender et al. 2018, §3.2)."""

    dataset: str = "digits"
    data_dir: str | None = None
    batch_size: int = 64
    ghost_batch_size: int = 32

    def __post_init__(self) -> None:
        require_positive("batch_size", self.batch_size)
        require_positive("ghost_batch_size", self.ghost_batch_size)
        if self.batch_size % self.ghost_batch_size:
            raise UserError(
                f"--ghost_batch_size={self.ghost_batch_size} does not divide "
                f"--batch_size={self.batch_size}; choose a divisor, e.g. "
                f"--ghost_batch_size={_largest_divisor(self.batch_size, self.ghost_batch_size)}."
            )

    @property
    def num_ghosts(self) -> int:
        """Ghost batches per global batch (Bender et al. 2018, §3.2)."""
        return self.batch_size // self.ghost_batch_size



@dataclasses.dataclass(frozen=True)
class SamplerConfig:
    """How training picks the paths of each ghost batch (`tf_oneshot.training.samplers`).

    Args:
        name: the sampling rule; None: the space's default.
        dropout_rate, dropout_schedule, all_dropped: path dropout's r, its
            ramp and the rule when all paths of a node drop (Bender et al. 2018, §3.2).
        skip_threshold: skip (tf.cond) the ops dropped in every ghost batch
            of a replica once their expected share reaches this
            (trainer.skips_pay); 0.25 is where skipping broke even on CPU
            (benchmarks/train_step.py).
        order_seed: seed of the child order, None: the run's seed ("Deeper
            insights" §3.2, Table 1: instances that differ in weight seed only keep it fixed).
        constraints: the cost range of the "uniform_constraint" sampler (SPOS §3.2-3.4).
        path_per: where the architectures of a step differ: "step" (one for
            every replica and ghost batch, SPOS §3.2 Eq. 8), "replica" or
            "ghost_batch" (Bender et al. 2018, §3.2); None: the sampler's own
            (`samplers.resolve_path_per`: step for uniform and uniform_constraint).
    """

    name: str | None = None
    dropout_rate: float = 0.1
    dropout_schedule: str = "linear"
    all_dropped: str = "zero"
    skip_threshold: float = 0.25
    order_seed: int | None = None
    constraints: Constraints = Constraints()
    path_per: str | None = None

    def __post_init__(self) -> None:
        if self.path_per is not None:
            _check_choices(self, (("path_per", PATH_PER),))
        if not 0.0 < self.dropout_rate < 1.0:
            raise UserError(
                f"--dropout_rate={self.dropout_rate} is invalid; r must lie strictly between 0 and 1 "
                "(Bender et al. 2018 use 0.1)."
            )
        _check_choices(self, (("dropout_schedule", DROPOUT_SCHEDULES), ("all_dropped", ALL_DROPPED_RULES)))
        if not 0.0 <= self.skip_threshold <= 1.0:
            raise UserError(
                f"--skip_threshold={self.skip_threshold} is invalid; expected a fraction in [0, 1] "
                "(0: always skip ops dropped in every ghost batch, 1: never)."
            )
        seed = self.order_seed
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or seed < 0):
            raise UserError(f"--order_seed={seed} is invalid; expected a non-negative integer.")

    @classmethod
    def from_flat(cls, flat: Mapping[str, Any]) -> SamplerConfig:
        """From flat names: --sampler, the path-dropout flags and the constraint flags."""
        own = {f.name for f in dataclasses.fields(cls)} - {"name", "constraints"}
        fields = {name: flat[name] for name in own if name in flat}
        if "sampler" in flat:
            fields["name"] = flat["sampler"]
        constraints = Constraints(**{name: flat[name] for name in CONSTRAINT_FIELDS if name in flat})
        return cls(constraints=constraints, **fields)

    def to_flat(self) -> dict[str, Any]:
        out = {("sampler" if k == "name" else k): v for k, v in dataclasses.asdict(self).items()}
        constraints = out.pop("constraints")
        return {**out, **constraints}

    def to_json(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "constraints": self.constraints.to_json()}

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> SamplerConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        fields = {k: v for k, v in obj.items() if k in known}
        return cls(**{**fields, "constraints": Constraints(**fields.get("constraints", {}))})


@dataclasses.dataclass(frozen=True)
class OptimizerConfig(SameNames):
    """SGD with momentum, a learning-rate schedule and L2 on active paths (Bender et al. 2018, §3.2, §4.1).

    Used for the one-shot model and for the stand-alone training of children.
    `nesterov` (Bender et al. §4.1) or plain momentum ("Deeper insights"
    App. A.1); the decay ends at `end_learning_rate` (App. A.1: 0.025 to
    0.001); `bn_momentum` is the momentum of every batch norm's moving
    statistics (Keras' 0.99 by default).
    """

    learning_rate: float = 0.1
    lr_schedule: str = "cosine"
    momentum: float = 0.9
    weight_decay: float = 1e-4
    nesterov: bool = True
    end_learning_rate: float = 0.0
    bn_momentum: float = 0.99

    def __post_init__(self) -> None:
        _check_choices(self, (("lr_schedule", LR_SCHEDULES),))
        if self.learning_rate <= 0 or self.weight_decay < 0 or not 0 <= self.momentum < 1:
            raise UserError(
                "--learning_rate must be > 0, --weight_decay >= 0 and --momentum in [0, 1); got "
                f"{self.learning_rate}, {self.weight_decay}, {self.momentum}."
            )
        if not 0 <= self.end_learning_rate <= self.learning_rate:
            raise UserError(f"--end_learning_rate={self.end_learning_rate} is invalid; expected a rate from 0 to "
                            f"--learning_rate={self.learning_rate}.")
        if not 0 <= self.bn_momentum < 1:
            raise UserError(f"--bn_momentum={self.bn_momentum} is invalid; expected a value in [0, 1), e.g. 0.99.")


# Each concern: its class and the flat names it takes.
CONCERNS: dict[str, type] = {
    "data": DataConfig, "space": SpaceConfig, "sampler": SamplerConfig, "optimizer": OptimizerConfig,
}
FLAT_BY_CONCERN: dict[str, tuple[str, ...]] = {
    "data": tuple(f.name for f in dataclasses.fields(DataConfig)),
    "space": space_config.FLAT_NAMES,
    "sampler": ("sampler", "dropout_rate", "dropout_schedule", "all_dropped", "skip_threshold", "order_seed",
                "path_per", *CONSTRAINT_FIELDS),
    "optimizer": tuple(f.name for f in dataclasses.fields(OptimizerConfig)),
}
CONCERN_OF = {name: concern for concern, names in FLAT_BY_CONCERN.items() for name in names}


@dataclasses.dataclass(frozen=True, init=False)
class TrainConfig:
    """Everything that defines a one-shot training run: its concerns and the run's own fields.

    Takes the concerns as values (`data=DataConfig(...)`) or any of their
    fields by flat name (`batch_size=64`, `filters=8`, `max_flops=...`, as
    the command line spells them), or both (the flat names then change the
    value given). Defaults follow Bender et al. 2018, §4.1 (CIFAR-10):
    learning rate 0.1, Nesterov momentum 0.9, ghost batches of 32, r = 0.1
    ramped linearly.
    """

    data: DataConfig = DataConfig()
    space: SpaceConfig = SpaceConfig()
    sampler: SamplerConfig = SamplerConfig()
    optimizer: OptimizerConfig = OptimizerConfig()
    train_steps: int = 10_000
    seed: int = 0
    steps_per_loop: int = 1
    checkpoint_every: int = 100
    log_every: int = 50
    keep_checkpoints: int = 3
    jit_compile: bool = False
    mixed_precision: str = "none"
    eval_batches: int = 4
    # Validation under the sampler's architectures every this many steps, for
    # TensorBoard's validation curve (0: only at the end). 1,000 gives ten
    # points over the default 10,000 steps and matches the flagfiles'
    # checkpoint interval, at eval_batches forward batches per point (<1% of
    # the training steps it follows).
    eval_every: int = 1000

    def __init__(self, data: DataConfig | None = None, space: SpaceConfig | str | None = None,
                 sampler: SamplerConfig | str | None = None, optimizer: OptimizerConfig | None = None,
                 **fields: Any) -> None:
        given = {"data": data, "space": space, "sampler": sampler, "optimizer": optimizer}
        changes = {**{k: v for k, v in given.items() if v is not None}, **fields}
        concerns: dict[str, Any] = {}
        run: dict[str, Any] = {}
        self._assign(concerns, run, _route(changes, concerns, run))

    def _assign(self, concerns: dict[str, Any], run: dict[str, Any], flat: dict[str, dict[str, Any]]) -> None:
        for concern, cls in CONCERNS.items():
            value = concerns.get(concern) or cls()
            if flat[concern]:
                value = cls.from_flat({**value.to_flat(), **flat[concern]})
            object.__setattr__(self, concern, value)
        for f in dataclasses.fields(self):
            if f.name in _RUN_FIELDS:
                object.__setattr__(self, f.name, run.get(f.name, f.default))
        self.__post_init__()

    def __post_init__(self) -> None:
        for name in ("train_steps", "steps_per_loop", "checkpoint_every", "log_every", "keep_checkpoints"):
            require_positive(name, getattr(self, name))
        _check_choices(self, (("mixed_precision", MIXED_PRECISION),))
        if isinstance(self.eval_every, bool) or not isinstance(self.eval_every, int) or self.eval_every < 0:
            raise UserError(f"--eval_every={self.eval_every} is invalid; expected a number of steps, e.g. 1000, "
                            "or 0 to validate only at the end.")

    @property
    def sampler_seed(self) -> int:
        """The seed of the child order: the sampler's `order_seed`, else the run's `seed`."""
        return self.seed if self.sampler.order_seed is None else self.sampler.order_seed

    def to_flat(self) -> dict[str, Any]:
        """Every field by its flat name, as flags and the records of training settings spell them."""
        out = {}
        for concern in CONCERNS:
            out.update(getattr(self, concern).to_flat())
        return {**out, **{name: getattr(self, name) for name in _RUN_FIELDS}}

    def to_json(self) -> dict[str, Any]:
        run = {name: getattr(self, name) for name in _RUN_FIELDS}
        return {**{concern: getattr(self, concern).to_json() for concern in CONCERNS}, **run}

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> TrainConfig:
        """From `to_json`, or the flat object of runs written before configs had concerns."""
        known = {*CONCERNS, *CONCERN_OF, *_RUN_FIELDS}
        fields = {k: v for k, v in obj.items() if k in known}
        for concern, concern_cls in CONCERNS.items():
            if isinstance(fields.get(concern), Mapping):
                fields[concern] = concern_cls.from_json(fields[concern])
        return cls(**fields)

    def replace(self, **changes: Any) -> TrainConfig:
        """This config with fields changed: concerns as values, or any field by its flat name."""
        concerns = {concern: getattr(self, concern) for concern in CONCERNS}
        run = {name: getattr(self, name) for name in _RUN_FIELDS}
        new = object.__new__(TrainConfig)
        new._assign(concerns, run, _route(changes, concerns, run))
        return new

    def architecture_differences(self, other: TrainConfig) -> list[str]:
        """Names the architecture fields where `other` differs, as 'name=a (not b)'."""
        mine, theirs = self.to_flat(), other.to_flat()
        return [
            f"{name}={theirs[name]} (this run asks for {mine[name]})"
            for name in ARCHITECTURE_FIELDS
            if mine[name] != theirs[name]
        ]


_RUN_FIELDS = tuple(f.name for f in dataclasses.fields(TrainConfig) if f.name not in CONCERNS)


def _route(changes: Mapping[str, Any], concerns: dict[str, Any],
           run: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Sorts `changes` into concern values and run fields (updated in place) and flat names, by concern.

    "space" and "sampler" name both a concern and a flat field (the space's
    spec, the sampler's name): a string or None is the flat field.
    """
    flat: dict[str, dict[str, Any]] = {concern: {} for concern in CONCERNS}
    for name, value in changes.items():
        if name in CONCERNS and isinstance(value, CONCERNS[name]):
            concerns[name] = value
        elif name in CONCERN_OF:
            flat[CONCERN_OF[name]][name] = value
        elif name in _RUN_FIELDS:
            run[name] = value
        else:
            raise TypeError(f"TrainConfig got an unexpected keyword argument {name!r}.")
    return flat
