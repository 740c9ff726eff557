"""The interface every search space implements, most of it derived from its decisions.

A search space is plain data: a frozen dataclass whose fields size the
network (`image_shape`, `num_classes`, widths ...) and whose `decisions()`
name the choices an architecture makes (`OneOf`, `SubsetOf`). From the
decisions alone this class derives the exact size, uniform sampling,
enumeration, per-choice-block mutation and crossover (SPOS §3.4), the string
and JSON forms, the KerasTuner hyperparameters, the masks that carry an
architecture into the one-shot model as tensors, and restriction to a
sub-space. A space adds only what is its own:

- `count(arch)` and `count_oneshot()`: parameters and multiply-adds by
  arithmetic, equal to the Keras models' (the contract tests check it);
- its networks: the masked one-shot model (`build_oneshot`, a
  `tf_oneshot.OneShotModel`), the stand-alone model of one architecture
  (`build_standalone`) and the copy of shared weights from one to the other
  (`inherit_weights`).

Where the networks live. The space is data and imports no network code,
not even inside a function (TuNAS: the model imports the space, never the
reverse), so search algorithms and `tf-oneshot space` never load
TensorFlow and a space's folder has no import circle. A space names the
module that builds its networks in the class attribute `network` (a dotted
module name); this class imports it by name when a network is first asked
for, checks the arguments once for every space, and calls the module's
functions

    build_oneshot(space, ghost_batch_size, skip_inactive, sharing) -> OneShotModel
    build_standalone_model(space, arch, ghost_batch_size, name) -> keras.Model
    copy_oneshot_weights(oneshot, standalone, arch[, copy]) -> None

(`copy` is passed only when it is not 0, which only a space declaring
`sharing_segments()` accepts). A module name rather than a class or a
registry keeps the dependency one-way with nothing to register: the network
module imports the space, the space only spells the module's name, and
import-linter sees no edge from `space.py` to the network. The names are
those of the stand-alone builders the network modules already had, so
`network.py` adds only `build_oneshot` and no second wrapper of each.
A space written in one file (examples/mobile_chain.py) may instead override
`build_oneshot`, `build_standalone` and `inherit_weights` directly. The
latency pieces (SPOS §3.4) are found the same way, through `latency`.

A user's guide to this contract is docs/spaces.md, and
`tf_oneshot.search_spaces.check` runs it on any space (`tf-oneshot space
--check`; the quick part when `tf-oneshot train` starts on a user's space).

Optional capabilities are declared here with defaults, never probed:
`sharing_segments()` (None: the one-shot model cannot hold copies of its
weights, "Deeper insights" §4.2-4.3), `latency_units()` (None: no latency
table), `describe_scale()` (how logs name the network's width). The wrappers
`RestrictedSpace` and `sharing.SharedSpace` forward all of it through one
base, `SpaceView`.
"""

from __future__ import annotations

import abc
import dataclasses
import importlib
import itertools
import math
from collections.abc import Callable, Hashable, Iterator, Mapping, Sequence
from types import ModuleType
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from tf_oneshot.errors import UserError
from tf_oneshot.search_spaces.decisions import Decision, OneOf, SubsetOf

if TYPE_CHECKING:
    from tf_oneshot.search_spaces.sharing import SharingPlan

# Spaces up to this size can be enumerated (ground truth, exact cost bounds).
ENUMERATION_LIMIT = 100_000


@dataclasses.dataclass(frozen=True)
class Cost:
    """Size of a network: Keras parameter count and multiply-adds per image.

    `bitops` (SPOS §3.3, mixed precision) is None for full-precision spaces.
    """

    params: int
    flops: int
    bitops: int | None = None


@dataclasses.dataclass(frozen=True)
class LatencyUnit:
    """One runnable piece of a network at its position (SPOS §3.4, latency lookup table).

    `tf-oneshot latency` times each unit on the current device; an
    architecture's latency is then the sum of the units of its choices plus
    the fixed units. This holds when a choice block's cost depends on its
    own decisions only, as in a single-path supernet.

    Attributes:
        block: the choice block (decision `block`) it implements, or "" for a
            part every architecture has (stem, head).
        values: the block's decision values it implements, in `decisions()`
            order; () for a fixed part.
        build: makes a fresh callable (a Keras layer or model) of the piece,
            images or features [batch, *input_shape] -> features.
        input_shape: its per-example input shape at this position.
    """

    block: str
    values: tuple
    build: Callable[[], Callable]
    input_shape: tuple[int, ...]


@dataclasses.dataclass(frozen=True)
class Architecture:
    """An architecture of a decision-described space: one value per decision.

    Equal and hashable by its values; `str()` gives the space's string form.
    """

    values: tuple
    text: str = dataclasses.field(default="", compare=False, repr=False)

    def __str__(self) -> str:
        return self.text


class SearchSpace(abc.ABC):
    """Interface shared by every search space (the built-in ones and yours).

    Subclasses are frozen dataclasses (decorated themselves: their fields are
    the space's arguments) with at least the fields `image_shape` and
    `num_classes`, and the class attribute `name`. A space with a
    `stem_stride` field receives the dataset's suggestion (4 for 224-pixel
    ImageNet images, 1 otherwise) unless the user sets it. Other fields are
    set with the generic flag `--space_args=name=value,...` (or the named
    flags `--filters`, `--num_cells`, ... where a space has such fields).
    """

    name: ClassVar[str] = ""
    # The sampling rule `tf-oneshot train` uses unless --sampler says otherwise.
    default_sampler: ClassVar[str] = "uniform"
    # Dotted name of the module whose functions build this space's networks
    # (module docstring); None for a space that overrides the build methods.
    network: ClassVar[str | None] = None
    # Dotted name of the module whose `latency_units(space)` gives the pieces
    # a latency lookup table times (SPOS §3.4); None: the space has none.
    latency: ClassVar[str | None] = None

    @property
    def default_bn_mode(self) -> str:
        """The scorer's batch-norm mode unless --bn_mode says otherwise.

        A single-path supernet (a space trained by sampling whole
        architectures) recomputes each candidate's statistics before scoring
        it (SPOS §3.4: "the statistics of all the BN operations are
        recalculated"); a path-dropout model uses batch statistics (Bender et
        al. 2018, §3.2). Override with a class attribute.
        """
        return "recalibrate" if self.default_sampler in ("uniform", "uniform_constraint") else "batch"

    # ------------------------------------------------- what a space provides
    @abc.abstractmethod
    def decisions(self) -> tuple[Decision, ...]:
        """The named, independent choices of an architecture, in a fixed order."""

    @abc.abstractmethod
    def count(self, arch: Hashable) -> Cost:
        """Parameters and multiply-adds of the stand-alone model, by arithmetic."""

    @abc.abstractmethod
    def count_oneshot(self) -> Cost:
        """Parameters and multiply-adds of the one-shot model with every path on."""

    def build_oneshot(self, ghost_batch_size: int, skip_inactive: bool = True,
                      sharing: SharingPlan | None = None) -> Any:
        """The masked one-shot model (a `tf_oneshot.OneShotModel`), weights created.

        Args:
            ghost_batch_size: examples per ghost batch; each carries one
                architecture (Bender et al. 2018, §3.2).
            skip_inactive: skip with tf.cond the candidates off in every ghost batch.
            sharing: a `tf_oneshot.search_spaces.sharing.SharingPlan` giving
                the model copies of its weights ("Deeper insights" §4.2-4.3);
                None for full sharing.

        Raises:
            UserError: a sharing plan for a space whose model cannot hold copies.
            NotImplementedError: a space that names no `network` module.
        """
        if sharing is not None:
            self._require_sharing("sharing plan")
        return self._network("build_oneshot()").build_oneshot(self, ghost_batch_size, skip_inactive, sharing)

    def build_fused(self, children: int, ghost_batch_size: int) -> Any:
        """K = `children` independent children in one network, each with its own weights (HFTA, Wang et al. 2021).

        The network module's `build_fused(oneshot, children)` mirrors this
        space's fully shared one-shot model; `tf_oneshot.training.child.FusedChildren`
        trains it.

        Raises:
            UserError: a space whose network module has no fused network.
        """
        network = self._network("build_fused()")
        if not hasattr(network, "build_fused"):
            raise UserError(f"search space {self.name!r} has no fused network (its module {self.network} "
                            f"defines no build_fused); use --method=masked.")
        return network.build_fused(self.build_oneshot(ghost_batch_size), children)

    def build_standalone(self, arch: Hashable, ghost_batch_size: int | None = None,
                         name: str = "standalone") -> Any:
        """The stand-alone Keras model of `arch` (images -> logits).

        Args:
            arch: an architecture of this space.
            ghost_batch_size: ghost batch norms of this size evaluating with
                moving statistics; None uses plain Keras batch norm.
            name: the model's name.

        Raises:
            UserError: if `arch` is not an architecture of this space.
        """
        network = self._network("build_standalone()")
        return network.build_standalone_model(self, self.validate(arch), ghost_batch_size, name)

    def inherit_weights(self, oneshot: Any, standalone: Any, arch: Hashable, copy: int = 0) -> None:
        """Copies `arch`'s shared weights from a one-shot model into its stand-alone model.

        Fine-tuning children from the shared weights ("Deeper insights",
        §3.3) and the one-shot/stand-alone equality tests need it.

        Args:
            oneshot: this space's one-shot model.
            standalone: `build_standalone(arch, ...)`.
            arch: the architecture.
            copy: the copy of the weights `arch` reads under partial sharing
                ("Deeper insights" §4.2-4.3); 0 under full sharing.

        Raises:
            UserError: a copy other than 0 for a space whose model holds one.
        """
        arch = self.validate(arch)
        if copy != 0:
            self._require_sharing(f"copy={copy!r} of the weights")
        extra = {} if copy == 0 else {"copy": copy}
        self._network("inherit_weights()").copy_oneshot_weights(oneshot, standalone, arch, **extra)

    def sharing_segments(self) -> int | None:
        """Segments partial sharing cuts the one-shot model into ("Deeper insights", §4.2-4.3).

        A space whose model can hold copies of its weights (its network's
        `build_oneshot` takes a sharing plan) returns the number of segments:
        the stem, each cell, the head, so that prefix sharing of k cells shares
        the first 1 + k. None (the default): the model holds one copy only.
        """
        return None

    def describe_scale(self) -> str:
        """A few words naming the network's width in logs (e.g. "F=16", Bender et al. 2018 §4.1); "" for none."""
        return ""

    def _network(self, method: str) -> ModuleType:
        """The module named by `network`, imported on first use (`method` names the caller in errors)."""
        return self._named_module(self.network, "network", method)

    def _named_module(self, module: str | None, attribute: str, instead: str) -> ModuleType:
        if not module:
            raise NotImplementedError(
                f"search space {self.name or type(self).__name__!r} names no {attribute} module (class attribute "
                f"`{attribute}`) and does not override {instead}."
            )
        return importlib.import_module(module)

    def _require_sharing(self, what: str) -> None:
        if self.sharing_segments() is None:
            raise UserError(
                f"search space {self.name!r} cannot hold copies of its weights (its sharing_segments() is None), "
                f"so it takes no {what}; use --sharing=full."
            )

    # ------------------------------- architecture values (override together)
    def values_of(self, arch: Hashable) -> tuple:
        """The decision values of `arch`, in `decisions()` order."""
        if not isinstance(arch, Architecture):
            raise UserError(
                f"expected an architecture of {self.name!r}, got {type(arch).__name__}; "
                "parse strings with space.parse()."
            )
        return arch.values

    def from_values(self, values: Sequence) -> Hashable:
        """The architecture with these decision values (UserError naming a bad one)."""
        decisions = self._decisions
        if len(values) != len(decisions):
            raise UserError(f"expected {len(decisions)} decision values, got {len(values)}.")
        values = tuple(d.check(v) for d, v in zip(decisions, values))
        return Architecture(values, "/".join(d.format(v) for d, v in zip(decisions, values)))

    def choices(self, arch: Hashable) -> dict[str, Any]:
        """The decision values of `arch` by decision name."""
        return {d.name: v for d, v in zip(self._decisions, self.values_of(arch))}

    # ----------------------------------------------------------------- size
    @property
    def _decisions(self) -> tuple[Decision, ...]:
        cache = self.__dict__.get("_decisions_cache")
        if cache is None:
            cache = tuple(self.decisions())
            names = [d.name for d in cache]
            if len(set(names)) != len(names):
                raise ValueError(f"{type(self).__name__}.decisions() repeats a name: {names}")
            object.__setattr__(self, "_decisions_cache", cache)
        return cache

    def size(self) -> int:
        """Number of distinct architectures (an exact integer)."""
        return math.prod(d.size() for d in self._decisions)

    def enumerate(self, limit: int = ENUMERATION_LIMIT) -> Iterator[Hashable]:
        """Every architecture, in a fixed order.

        Raises:
            UserError: if the space holds more than `limit` architectures.
        """
        if self.size() > limit:
            raise UserError(
                f"search space {self.name!r} holds {self.size():,} architectures; only spaces of at "
                f"most {limit:,} can be enumerated."
            )
        for values in itertools.product(*(d.values() for d in self._decisions)):
            yield self.from_values(values)

    # ------------------------------------------------------------- sampling
    def sample(self, rng: np.random.Generator) -> Hashable:
        """Draws one architecture uniformly (decisions are independent)."""
        values = []
        for d in self._decisions:
            choices = d.values()
            values.append(choices[int(rng.integers(len(choices)))])
        return self.from_values(values)

    def _groups(self) -> dict[str, list[int]]:
        groups: dict[str, list[int]] = {}
        for i, d in enumerate(self._decisions):
            groups.setdefault(d.block, []).append(i)
        return groups

    def mutate(self, arch: Hashable, rng: np.random.Generator, prob: float) -> Hashable:
        """Mutates every choice block with probability `prob` (SPOS §3.4).

        A block that mutates takes new values for its decisions, drawn
        uniformly among those that differ from its current ones, so a
        mutation always changes the block.
        """
        values = list(self.values_of(arch))
        decisions = self._decisions
        for indices in self._groups().values():
            if rng.random() >= prob:
                continue
            if math.prod(decisions[i].size() for i in indices) < 2:
                continue
            old = [values[i] for i in indices]
            while True:
                new = [decisions[i].values()[int(rng.integers(decisions[i].size()))] for i in indices]
                if new != old:
                    break
            for i, v in zip(indices, new):
                values[i] = v
        return self.from_values(values)

    def crossover(self, a: Hashable, b: Hashable, rng: np.random.Generator) -> Hashable:
        """Takes every choice block from either parent (SPOS §3.4)."""
        va, vb = list(self.values_of(a)), self.values_of(b)
        for indices in self._groups().values():
            if rng.random() < 0.5:
                for i in indices:
                    va[i] = vb[i]
        return self.from_values(va)

    # -------------------------------------------------------- string / JSON
    def parse(self, text: str) -> Hashable:
        """Parses the string form (UserError naming the bad part)."""
        decisions = self._decisions
        if not isinstance(text, str) or not text.strip():
            raise UserError(f"architecture string is empty; expected e.g. '{self.example()}'.")
        parts = text.strip().split("/")
        if len(parts) != len(decisions):
            raise UserError(
                f"architecture {text!r} has {len(parts)} parts; {self.name} needs {len(decisions)} "
                f"separated by '/', e.g. '{self.example()}'."
            )
        return self.from_values([d.parse(p) for d, p in zip(decisions, parts)])

    def example(self) -> str:
        """A fixed valid architecture string, for messages and `tf-oneshot space`."""
        return str(self.sample(np.random.default_rng(0)))

    def validate(self, arch: Any) -> Hashable:
        """Returns `arch` if it belongs to this space, else raises UserError."""
        return self.from_values(self.values_of(arch))

    def to_json(self, arch: Hashable) -> dict:
        """The JSON form: {"space": name, decision name: value, ...}."""
        values = self.values_of(self.validate(arch))
        return {"space": self.name, **{d.name: d.to_json(v) for d, v in zip(self._decisions, values)}}

    def from_json(self, obj: Any) -> Hashable:
        """Inverse of `to_json`."""
        if not isinstance(obj, dict):
            raise UserError("architecture JSON must be an object.")
        if obj.get("space", self.name) != self.name:
            raise UserError(f"architecture is from search space {obj.get('space')!r}; expected {self.name!r}.")
        missing = [d.name for d in self._decisions if d.name not in obj]
        if missing:
            raise UserError(f"architecture JSON lacks decision {missing[0]!r}.")
        return self.from_values([d.from_json(obj[d.name]) for d in self._decisions])

    # ------------------------------------------------------------ KerasTuner
    def hyperparameter_values(self, arch: Hashable) -> dict[str, str]:
        """One string per decision: the values of the KerasTuner `Choice`s."""
        values = self.values_of(self.validate(arch))
        return {d.name: d.format(v) for d, v in zip(self._decisions, values)}

    def from_hyperparameter_values(self, values: Mapping[str, Any]) -> Hashable:
        """Inverse of `hyperparameter_values` (UserError naming a missing or bad value)."""
        try:
            return self.from_values([d.parse(str(values[d.name])) for d in self._decisions])
        except KeyError as e:
            raise UserError(f"trial hyperparameters lack {e.args[0]!r}; not a trial of {self.name!r}.") from None

    # ----------------------------------------------------------------- masks
    def mask_shapes(self) -> dict[str, tuple[int, ...]]:
        """Name and static shape of every mask the one-shot model reads (one architecture)."""
        return {d.name: (len(d.options),) for d in self._decisions}

    def encode(self, arch: Hashable) -> dict[str, np.ndarray]:
        """The architecture as masks: per decision, 1.0 on its chosen options."""
        values = self.values_of(self.validate(arch))
        return {d.name: np.asarray(d.multi_hot(v), np.float32) for d, v in zip(self._decisions, values)}

    def encode_batch(self, archs: Sequence[Hashable]) -> dict[str, np.ndarray]:
        """Masks of several architectures stacked on a leading (ghost batch) axis."""
        encoded = [self.encode(a) for a in archs]
        return {key: np.stack([e[key] for e in encoded]) for key in encoded[0]}

    def all_on_masks(self) -> dict[str, np.ndarray]:
        """Every path of the one-shot model on (Bender et al. 2018's "All On")."""
        return {key: np.ones(shape, np.float32) for key, shape in self.mask_shapes().items()}

    def dropout_masks(self) -> tuple[str, ...]:
        """Masks whose rows are nodes with several incoming paths (path dropout acts on them)."""
        return tuple(d.name for d in self._decisions if isinstance(d, SubsetOf))

    def skip_masks(self) -> tuple[str, ...]:
        """Masks whose off entries the one-shot model skips computing (op skipping pays on them)."""
        return tuple(self.mask_shapes())

    # ------------------------------------------------------------------ cost
    def cost_bounds(self) -> dict[str, tuple[int, int]] | None:
        """Exact least and greatest cost over the space, or None if unknown.

        Enumerable spaces get exact bounds by enumeration; others may override.
        """
        if self.size() > 4096:
            return None
        costs = [self.count(a) for a in self.enumerate()]
        bounds = {m: (min(getattr(c, m) for c in costs), max(getattr(c, m) for c in costs))
                  for m in ("params", "flops")}
        if all(c.bitops is not None for c in costs):
            bounds["bitops"] = (min(c.bitops for c in costs), max(c.bitops for c in costs))
        return bounds

    def latency_units(self) -> list[LatencyUnit] | None:
        """The runnable pieces a latency lookup table times (SPOS §3.4); None if unsupported.

        Optional. A space names a module in `latency` whose function
        `latency_units(space)` returns the units or None (a space may share
        that module with others and refuse the ones it does not know), or
        overrides this method. Each choice block needs one unit per
        combination of its decisions' values, plus the fixed units ("" block).
        """
        if self.latency is None:
            return None
        return self._named_module(self.latency, "latency", "latency_units()").latency_units(self)

    # ------------------------------------------------------------- sub-space
    def restrict(self, allowed: Mapping[str, Sequence]) -> RestrictedSpace:
        """The sub-space where decision `name` only takes the values `allowed[name]`.

        Masks, models and costs stay those of this space, so a model trained on
        the full space scores the sub-space's architectures.
        """
        by_name = {d.name: d for d in self._decisions}
        narrowed = []
        for name, values in allowed.items():
            if name not in by_name:
                raise UserError(f"{self.name} has no decision {name!r}; it has {', '.join(by_name)}.")
            checked = tuple(dict.fromkeys(by_name[name].check(v) for v in values))
            if not checked:
                raise UserError(f"restricting {name!r} to no value leaves an empty space.")
            narrowed.append((name, checked))
        return RestrictedSpace(self, tuple(narrowed))

    # ---------------------------------------------------------------- config
    def to_config(self) -> dict:
        """JSON-able dict that `space_from_config` turns back into an equal space."""
        config = {"space": self.name, **_jsonable(dataclasses.asdict(self))}
        # The class's own spec, not one inherited from the loaded space it subclasses.
        spec = vars(type(self)).get("_tf_oneshot_spec")
        if spec:
            config["class"] = spec
        return config

    @classmethod
    def from_config(cls, config: Mapping) -> SearchSpace:
        config = {k: v for k, v in config.items() if k not in ("space", "class")}
        return cls(**{k: _tuples(v) for k, v in config.items()})


class SpaceView(SearchSpace):
    """Another space (`base`) seen differently: whatever a subclass does not override is `base`'s.

    The wrappers `RestrictedSpace` and `sharing.SharedSpace` are views; this
    class forwards the whole interface once, protocol methods included, so a
    wrapped space keeps its networks, costs and capabilities. Subclasses are
    frozen dataclasses whose first field is `base`.
    """

    base: SearchSpace

    @property
    def name(self) -> str:  # type: ignore[override]
        return self.base.name

    @property
    def default_sampler(self) -> str:  # type: ignore[override]
        return self.base.default_sampler

    @property
    def default_bn_mode(self) -> str:
        return self.base.default_bn_mode

    @property
    def network(self) -> str | None:  # type: ignore[override]
        return self.base.network

    @property
    def latency(self) -> str | None:  # type: ignore[override]
        return self.base.latency

    def __getattr__(self, attr: str) -> Any:
        # The base space's own fields and helpers (`filters`, `layout()` ...).
        if attr.startswith("__") or attr in getattr(type(self), "__dataclass_fields__", {}):
            raise AttributeError(attr)
        return getattr(self.base, attr)

    def decisions(self) -> tuple[Decision, ...]:
        return self.base.decisions()

    def values_of(self, arch: Hashable) -> tuple:
        return self.base.values_of(arch)

    def from_values(self, values: Sequence) -> Hashable:
        return self.base.from_values(values)

    def parse(self, text: str) -> Hashable:
        return self.base.parse(text)

    def from_json(self, obj: Any) -> Hashable:
        return self.base.from_json(obj)

    def count(self, arch: Hashable) -> Cost:
        return self.base.count(arch)

    def count_oneshot(self) -> Cost:
        return self.base.count_oneshot()

    def build_oneshot(self, ghost_batch_size: int, skip_inactive: bool = True,
                      sharing: SharingPlan | None = None) -> Any:
        # A space overriding build_oneshot without `sharing` still works unshared.
        extra = {} if sharing is None else {"sharing": sharing}
        return self.base.build_oneshot(ghost_batch_size, skip_inactive, **extra)

    def build_standalone(self, arch: Hashable, ghost_batch_size: int | None = None, name: str = "standalone") -> Any:
        return self.base.build_standalone(self.validate(arch), ghost_batch_size, name)

    def inherit_weights(self, oneshot: Any, standalone: Any, arch: Hashable, copy: int = 0) -> None:
        extra = {} if copy == 0 else {"copy": copy}
        self.base.inherit_weights(oneshot, standalone, self.validate(arch), **extra)

    def sharing_segments(self) -> int | None:
        return self.base.sharing_segments()

    def describe_scale(self) -> str:
        return self.base.describe_scale()

    def mask_shapes(self) -> dict[str, tuple[int, ...]]:
        return self.base.mask_shapes()

    def encode(self, arch: Hashable) -> dict[str, np.ndarray]:
        return self.base.encode(self.validate(arch))

    def all_on_masks(self) -> dict[str, np.ndarray]:
        return self.base.all_on_masks()

    def dropout_masks(self) -> tuple[str, ...]:
        return self.base.dropout_masks()

    def skip_masks(self) -> tuple[str, ...]:
        return self.base.skip_masks()

    def latency_units(self) -> list[LatencyUnit] | None:
        return self.base.latency_units()

    def to_config(self) -> dict:
        return self.base.to_config()


@dataclasses.dataclass(frozen=True)
class RestrictedSpace(SpaceView):
    """A sub-space of `base` (see `SearchSpace.restrict`)."""

    base: SearchSpace
    allowed: tuple[tuple[str, tuple], ...]

    def decisions(self) -> tuple[Decision, ...]:
        allowed = dict(self.allowed)
        out = []
        for d in self.base.decisions():
            if d.name not in allowed:
                out.append(d)
            elif isinstance(d, OneOf):
                out.append(OneOf(d.name, allowed[d.name], d.group))
            else:
                out.append(_Listed(d.name, allowed[d.name], d))
        return tuple(out)

    def from_values(self, values: Sequence) -> Hashable:
        arch = self.base.from_values(values)
        for d, v in zip(self._decisions, self.base.values_of(arch)):
            d.check(v)
        return arch

    def parse(self, text: str) -> Hashable:
        return self.validate(self.base.parse(text))

    def from_json(self, obj: Any) -> Hashable:
        return self.validate(self.base.from_json(obj))

    def to_config(self) -> dict:
        return {**self.base.to_config(), "restricted_to": [[n, list(map(_jsonable, v))] for n, v in self.allowed]}


@dataclasses.dataclass(frozen=True)
class _Listed:
    """A decision restricted to an explicit list of values (a restricted `SubsetOf`)."""

    name: str
    listed: tuple
    full: SubsetOf

    group = property(lambda self: self.full.group)
    block = property(lambda self: self.full.block)
    options = property(lambda self: self.full.options)

    def values(self) -> tuple:
        return self.listed

    def size(self) -> int:
        return len(self.listed)

    def format(self, value: Any) -> str:
        return self.full.format(value)

    def parse(self, text: str) -> Any:
        return self.check(self.full.parse(text))

    def check(self, value: Any) -> Any:
        value = self.full.check(value)
        if value not in self.listed:
            raise UserError(f"{self.name}: {self.full.format(value)!r} is outside the restricted sub-space.")
        return value

    def to_json(self, value: Any) -> Any:
        return self.full.to_json(value)

    def from_json(self, obj: Any) -> Any:
        return self.check(self.full.from_json(obj))

    def multi_hot(self, value: Any) -> list[float]:
        return self.full.multi_hot(value)


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (tuple, list)):
        return [_jsonable(v) for v in value]
    return value


def _tuples(value: Any) -> Any:
    if isinstance(value, list):
        return tuple(_tuples(v) for v in value)
    return value
