"""Which search space a run trains, as a value: the space, its own arguments and its weight sharing.

The search space is data (STYLE.md, habit 2), and so is the choice of one: a
`SpaceConfig` names a registered space or a user's "module:Attribute", the
fields of that space it sets (`filters`, `num_cells`, a user space's `width`,
...: the space's arguments, not config fields, since only some spaces have
them) and the partial weight sharing of "Deeper insights" §4.2-4.3. It builds
nothing; `build_space` builds the space it names for a dataset.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from tf_oneshot.errors import UserError, require_positive
from tf_oneshot.search_spaces import DEFAULT_SPACE, SearchSpace, get_space, space_class, space_fields
from tf_oneshot.search_spaces.sharing import GROUPINGS, SHARING_MODES, apply_sharing

# Space arguments the command line also spells as named flags (--filters=8 is
# --space_args=filters=8); a space that has no such field refuses them.
NAMED_ARGS = ("filters", "num_cells", "num_blocks", "num_stacks", "stem_stride")
POSITIVE_ARGS = ("filters", "num_cells", "num_blocks", "num_stacks")
# Arguments the dataset sets, never the user.
DATASET_ARGS = ("image_shape", "num_classes")
SHARING_FIELDS = ("sharing", "sharing_groups", "sharing_grouping", "sharing_prefix", "sharing_seed")
# The flat names of this config in flags, records and config.json of older runs.
FLAT_NAMES = ("space", "space_args", *NAMED_ARGS, *SHARING_FIELDS)


@dataclasses.dataclass(frozen=True)
class SpaceConfig:
    """The search space of a run and how its weights are shared.

    Args:
        spec: a registered space name, or "module:Attribute" / "file.py:Attribute".
        args: the space's own fields this run sets (None: the space's
            default; stem_stride: the dataset's suggestion), a mapping or
            (name, value) pairs, kept sorted by name so order never matters.
        sharing: "full", "group" (`sharing_groups` copies; children grouped
            "random"ly from `sharing_seed` or by "similarity") or "prefix" (the
            stem and the first `sharing_prefix` cells shared, the rest a copy
            per child), "Deeper insights" §4.2-4.3.
    """

    spec: str = DEFAULT_SPACE
    args: tuple[tuple[str, Any], ...] = ()
    sharing: str = "full"
    sharing_groups: int = 1
    sharing_grouping: str = "random"
    sharing_prefix: int = 0
    sharing_seed: int = 0

    def __post_init__(self) -> None:
        pairs = self.args.items() if isinstance(self.args, Mapping) else self.args
        object.__setattr__(self, "args", tuple(sorted((str(k), v) for k, v in pairs)))
        options = self.options
        for name in POSITIVE_ARGS:
            if name in options:
                require_positive(name, options[name])
        if options.get("stem_stride", 1) not in (1, 2, 4):
            raise UserError(f"--stem_stride={options['stem_stride']} is invalid; choose 1, 2 or 4.")
        self._check_sharing()

    def _check_sharing(self) -> None:
        if self.sharing not in SHARING_MODES:
            raise UserError(f"--sharing={self.sharing} is invalid; choose one of {', '.join(SHARING_MODES)}.")
        if self.sharing_grouping not in GROUPINGS:
            raise UserError(f"--sharing_grouping={self.sharing_grouping} is invalid; choose one of "
                            f"{', '.join(GROUPINGS)}.")
        for name, low in (("sharing_groups", 1), ("sharing_prefix", 0), ("sharing_seed", 0)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise UserError(f"--{name}={value} is invalid; expected an integer >= {low}.")

    @property
    def options(self) -> dict[str, Any]:
        """The space's arguments this config sets, by name."""
        return dict(self.args)

    @classmethod
    def from_flat(cls, flat: Mapping[str, Any]) -> SpaceConfig:
        """From flat names (`FLAT_NAMES`): --space, --space_args and the named flags that spell its entries.

        Raises:
            UserError: an argument set both by --space_args and by its named flag.
        """
        options = {name: flat[name] for name in NAMED_ARGS if flat.get(name) is not None}
        for name, value in parse_space_args(flat.get("space_args")).items():
            if name in options:
                raise UserError(f"--space_args sets {name} and so does --{name}; keep one.")
            options[name] = value
        fields = {name: flat[name] for name in SHARING_FIELDS if name in flat}
        return cls(spec=flat.get("space") or DEFAULT_SPACE, args=options, **fields)

    def to_flat(self) -> dict[str, Any]:
        """The flat names of records and flags; the inverse of `from_flat`."""
        options = self.options
        rest = {k: v for k, v in options.items() if k not in NAMED_ARGS}
        return {
            "space": self.spec,
            **{name: options.get(name) for name in NAMED_ARGS},
            "space_args": ",".join(f"{k}={v}" for k, v in rest.items()) or None,
            **{name: getattr(self, name) for name in SHARING_FIELDS},
        }

    def to_json(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "args": self.options}

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> SpaceConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in obj.items() if k in known})


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


def for_space(config: SpaceConfig, spec: str) -> SpaceConfig:
    """`config` on the space `spec`, without the named arguments (`NAMED_ARGS`) that space does not take."""
    fields = space_fields(space_class(spec))
    return dataclasses.replace(config, spec=spec,
                               args={k: v for k, v in config.args if k in fields or k not in NAMED_ARGS})


def build_space(config: SpaceConfig, image_shape: tuple[int, int, int], num_classes: int,
                stem_stride: int = 1) -> SearchSpace:
    """The search space `config` names, for a dataset's images and classes, with its weight sharing.

    `stem_stride` is the dataset's suggestion (`DatasetInfo.stem_stride`),
    used where the space has a stem stride and `config` does not set it.

    Raises:
        UserError: an unknown space, or an argument the space does not take.
    """
    fields = space_fields(space_class(config.spec))
    options = config.options
    unknown = [k for k in options if k not in fields]
    if unknown:
        given = f"--{unknown[0]}" if unknown[0] in NAMED_ARGS else f"the --space_args field {unknown[0]!r}"
        raise UserError(f"{given} does not apply to --space={config.spec}; its fields are {', '.join(fields)}.")
    fixed = [k for k in DATASET_ARGS if k in options]
    if fixed:
        raise UserError(f"--space_args={fixed[0]}=... is set by the dataset; choose --dataset "
                        "(or --image_size where the command takes it) instead.")
    if "stem_stride" in fields:
        options.setdefault("stem_stride", stem_stride)
    space = get_space(config.spec, image_shape=tuple(image_shape), num_classes=num_classes, **options)
    return with_sharing(space, config)


def with_sharing(space: SearchSpace, config: SpaceConfig) -> SearchSpace:
    """`space` with `config`'s partial weight sharing ("Deeper insights" §4.2-4.3); itself for full sharing."""
    return apply_sharing(space, config.sharing, config.sharing_groups, config.sharing_grouping, config.sharing_prefix,
                         config.sharing_seed)


__all__ = ["FLAT_NAMES", "NAMED_ARGS", "SpaceConfig", "build_space", "for_space", "parse_space_args", "with_sharing"]
