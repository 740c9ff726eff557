"""Partial weight sharing: group sharing and prefix sharing ("Deeper insights", §4.2-4.3).

Full weight sharing trains every child on one copy of the super-net's
weights. "Deeper insights into weight sharing" (Zhang et al. 2020) lowers the
degree of sharing in two ways, both handled here as configurations of the
same one-shot model:

- group sharing (§4.2): the children are split into m groups, each with its
  own copy of every weight; m = 1 is full sharing, m = #children no sharing.
  The groups are random (§4.2.1) or contiguous slices of the children sorted
  lexicographically, "111 to 124, 131 to 144, ..." for m = 8 (§4.2.2,
  grouping by similarity);
- prefix sharing (§4.3): one copy of the "backbone" (the stem and the first
  k cells) for all children, and the rest, the last cells and the
  classifier head, a copy per child. k = 0 shares only the stem.

Both are a *copy assignment*: the network is cut into segments (a space that
supports sharing says how many: `sharing_segments()`, e.g. stem, cells,
head); the first `shared_segments` have one copy, the others `copies`
copies, and each child reads the copy `assignment[child]`. The copy enters
the model as one more mask, a one-hot `copy` row per ghost batch, so one
traced function still serves every child and every copy (TPU-shaped: static
shapes; a copy no ghost batch uses is skipped with tf.cond).

`SharedSpace` wraps a space so that everything that encodes children
(samplers, scorer, tuner) adds that mask without knowing about sharing.

Cost: the traced graph holds every copy, so tracing time and graph size grow
linearly with the copies. Measured on a 2-core CPU under heavy load (load
average 8-15, 8x8x1 inputs, the paper's widths, batch 64 in 2 ghost batches
of 2 children): full sharing traced in 116 s and stepped in 113 ms; m = 8
groups traced in 903 s and stepped in 708 ms. Prefix sharing with k = 0
holds 64 copies of the cells: use one child per step (batch = ghost batch,
§3.1: "each mini-batch trains one child model") and expect a long trace.
Partial sharing needs a sampler that draws whole children (uniform, cyclic,
shuffled), never path dropout.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Hashable, Sequence
from typing import Any

import numpy as np

from tf_oneshot.errors import UserError
from tf_oneshot.search_spaces.base import SearchSpace, SpaceView

SHARING_MODES = ("full", "group", "prefix")
GROUPINGS = ("random", "similarity")
COPY_KEY = "copy"


@dataclasses.dataclass(frozen=True)
class SharingPlan:
    """Which copy of the weights each child reads.

    Args:
        mode: "group" or "prefix".
        copies: copies of each unshared segment.
        shared_segments: leading segments with a single copy (0: none).
        children: the children's string forms, in the space's enumeration order.
        assignment: the copy (0..copies-1) of each child, same order.
    """

    mode: str
    copies: int
    shared_segments: int
    children: tuple[str, ...]
    assignment: tuple[int, ...]

    def copy_of(self, arch: Hashable) -> int:
        """The copy `arch` reads and trains."""
        index = self.__dict__.get("_index")
        if index is None:
            index = {c: i for i, c in enumerate(self.children)}
            object.__setattr__(self, "_index", index)
        try:
            return self.assignment[index[str(arch)]]
        except KeyError:
            raise UserError(f"architecture {arch} is not one of the {len(self.children)} children this "
                            "sharing plan assigns to copies.") from None

    def groups(self) -> list[list[str]]:
        """The children of each copy, in enumeration order."""
        out: list[list[str]] = [[] for _ in range(self.copies)]
        for child, copy in zip(self.children, self.assignment):
            out[copy].append(child)
        return out


def group_assignment(num_children: int, groups: int, grouping: str, seed: int = 0,
                     order: Sequence[int] | None = None) -> list[int]:
    """The group of each child: m near-equal slices of a child order.

    §4.2.2 slices the lexicographically sorted children (`order` gives each
    child's position in that sort; None: the children are already sorted);
    §4.2.1 slices a random permutation drawn from `seed`. Slice j holds the
    positions [j * n / m, (j + 1) * n / m), so sizes differ by at most one.

    Raises:
        UserError: an unknown grouping or a group count outside 1..num_children.
    """
    if grouping not in GROUPINGS:
        raise UserError(f"--sharing_grouping={grouping} is unknown; choose one of {', '.join(GROUPINGS)}.")
    if isinstance(groups, bool) or not isinstance(groups, int) or not 1 <= groups <= num_children:
        raise UserError(f"--sharing_groups={groups} is invalid; expected 1..{num_children} (the number of "
                        "children: m = 1 is full sharing, m = #children no sharing).")
    if grouping == "similarity":
        position = np.arange(num_children) if order is None else np.asarray(order)
    else:
        position = np.random.default_rng([int(seed), 4_2]).permutation(num_children)
    return [int(p) * groups // num_children for p in position]


def make_plan(space: SearchSpace, mode: str, groups: int = 1, grouping: str = "random", prefix: int = 0,
              seed: int = 0) -> SharingPlan | None:
    """The copy assignment of `mode` for an enumerable space (None for full sharing).

    Raises:
        UserError: a space whose model cannot hold copies, one too large to
            enumerate, or a bad mode, group count or prefix.
    """
    if mode not in SHARING_MODES:
        raise UserError(f"--sharing={mode} is unknown; choose one of {', '.join(SHARING_MODES)}.")
    if mode == "full":
        return None
    segments = space.sharing_segments()
    if segments is None:
        raise UserError(f"--sharing={mode} needs a space whose one-shot model can hold copies of its weights "
                        f"(it declares sharing_segments()); {space.name!r} does not.")
    children = [str(a) for a in space.enumerate()]
    if mode == "group":
        order = np.argsort(np.argsort(children, kind="stable"), kind="stable")  # lexicographic position
        assignment = group_assignment(len(children), groups, grouping, seed, order)
        return SharingPlan("group", groups, 0, tuple(children), tuple(assignment))
    cells = segments - 2  # the stem and the head are not cells
    if isinstance(prefix, bool) or not isinstance(prefix, int) or not 0 <= prefix <= cells:
        raise UserError(f"--sharing_prefix={prefix} is invalid; expected 0..{cells} shared cells "
                        "(0: only the stem is shared, §4.3).")
    return SharingPlan("prefix", len(children), 1 + prefix, tuple(children), tuple(range(len(children))))


@dataclasses.dataclass(frozen=True)
class SharedSpace(SpaceView):
    """`base` whose one-shot model holds copies of its weights (`plan`), read through a `copy` mask.

    Everything but the masks and the one-shot model is `base`'s: the same
    children, costs and stand-alone models. Its config is `base`'s; the
    training config records the sharing flags and rebuilds the plan.
    """

    base: SearchSpace
    plan: SharingPlan

    def build_oneshot(self, ghost_batch_size: int, skip_inactive: bool = True,
                      sharing: SharingPlan | None = None) -> Any:
        """`base`'s one-shot model with the copies of `plan` (a plan given here too must be the same)."""
        if sharing is not None and sharing != self.plan:
            raise UserError("this space already shares its weights by its own plan; build it with sharing=None.")
        return self.base.build_oneshot(ghost_batch_size, skip_inactive, sharing=self.plan)

    def inherit_weights(self, oneshot: Any, standalone: Any, arch: Hashable, copy: int | None = None) -> None:
        """The child's weights from its own copy (§4.2-4.3); `copy` None (or the plan's) reads it from the plan."""
        arch = self.validate(arch)
        own = self.plan.copy_of(arch)
        if copy not in (None, own):
            raise UserError(f"architecture {arch} reads copy {own} of the weights under this plan, not copy {copy}.")
        self.base.inherit_weights(oneshot, standalone, arch, copy=own)

    def mask_shapes(self) -> dict[str, tuple[int, ...]]:
        return {**self.base.mask_shapes(), COPY_KEY: (self.plan.copies,)}

    def encode(self, arch: Hashable) -> dict[str, np.ndarray]:
        one_hot = np.zeros(self.plan.copies, np.float32)
        one_hot[self.plan.copy_of(arch)] = 1.0
        return {**self.base.encode(arch), COPY_KEY: one_hot}

    def all_on_masks(self) -> dict[str, np.ndarray]:
        # "All on" averages the copies' outputs: with one copy, the plain all-on network.
        return {**self.base.all_on_masks(), COPY_KEY: np.full(self.plan.copies, 1.0 / self.plan.copies, np.float32)}


def apply_sharing(space: SearchSpace, mode: str, groups: int = 1, grouping: str = "random", prefix: int = 0,
                  seed: int = 0) -> SearchSpace:
    """`space` itself for full sharing, else a `SharedSpace` with the plan of `make_plan`."""
    plan = make_plan(space, mode, groups, grouping, prefix, seed)
    return space if plan is None else SharedSpace(space, plan)


def budget_factor(space: SearchSpace) -> int:
    """How many times --train_steps a supernet of `space` trains, so that each group gets them all.

    "Deeper insights" §4.2: each group is "trained independently ... for 200
    epochs", the budget of full sharing. One graph (TPU-shaped) holds the m
    copies, so one run trains them in turn: m x train_steps steps, of which
    each group, drawing one child per step, receives train_steps (exactly
    with --sampler=cyclic|shuffled and --path_per=step, in expectation with
    uniform draws). Prefix sharing (§4.3) keeps the run's steps: the paper
    sets its longer budget (2,000 epochs) itself.
    """
    plan = getattr(space, "plan", None)
    return plan.copies if isinstance(plan, SharingPlan) and plan.mode == "group" else 1


def describe(plan: SharingPlan | None) -> str:
    """A few words for logs and tables."""
    if plan is None:
        return "full sharing"
    if plan.mode == "group":
        return f"group sharing, m={plan.copies}"
    return f"prefix sharing, k={plan.shared_segments - 1}"


__all__ = ["COPY_KEY", "GROUPINGS", "SHARING_MODES", "SharedSpace", "SharingPlan", "apply_sharing", "describe",
           "group_assignment", "make_plan"]
