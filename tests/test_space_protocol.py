"""The space protocol of `search_spaces/base.py`: networks found by module name, optional capabilities declared.

A space names the module that builds its networks (`network`); the base
checks the arguments once and calls that module's functions. This file's own
module serves as a fake network, so the mechanism is tested without
TensorFlow. Optional capabilities (`sharing_segments`, `latency_units`,
`describe_scale`) have defaults in the base, and the views (`restrict`,
`SharedSpace`) forward them.
"""

import dataclasses
from typing import ClassVar

import pytest

from tf_oneshot.errors import UserError
from tf_oneshot.search_spaces import get_space
from tf_oneshot.search_spaces.base import Cost, SearchSpace
from tf_oneshot.search_spaces.decisions import OneOf
from tf_oneshot.search_spaces.sharing import SharedSpace, SharingPlan, make_plan

CALLS = []  # what the fake network module (this file) was asked to do


def build_oneshot(space, ghost_batch_size, skip_inactive, sharing):
    CALLS.append(("build_oneshot", ghost_batch_size, skip_inactive, sharing))
    return "oneshot"


def build_standalone_model(space, arch, ghost_batch_size, name):
    CALLS.append(("build_standalone_model", str(arch), ghost_batch_size, name))
    return "standalone"


def copy_oneshot_weights(oneshot, standalone, arch, **copy):
    CALLS.append(("copy_oneshot_weights", str(arch), copy))


@dataclasses.dataclass(frozen=True)
class Plain(SearchSpace):
    """Two decisions, costs by arithmetic, nothing optional."""

    image_shape: tuple = (4, 4, 1)
    num_classes: int = 2

    name: ClassVar[str] = "plain"

    def decisions(self):
        return (OneOf("a", (1, 2)), OneOf("b", (1, 2, 3)))

    def count(self, arch):
        return Cost(sum(self.values_of(self.validate(arch))), 0)

    def count_oneshot(self):
        return Cost(5, 0)


@dataclasses.dataclass(frozen=True)
class Networked(Plain):
    """`Plain` whose networks this test module builds."""

    name: ClassVar[str] = "networked"
    network: ClassVar[str] = __name__


@dataclasses.dataclass(frozen=True)
class Sharable(Networked):
    """`Networked` whose one-shot model can hold copies: stem, one cell, head."""

    name: ClassVar[str] = "sharable"

    def sharing_segments(self):
        return 3


@dataclasses.dataclass(frozen=True)
class Overriding(Plain):
    """A space in one file: it builds its networks itself, with the signature of older spaces."""

    name: ClassVar[str] = "overriding"

    def build_oneshot(self, ghost_batch_size, skip_inactive=True):
        return "own", ghost_batch_size, skip_inactive


@pytest.fixture(autouse=True)
def _calls():
    CALLS.clear()
    yield


def test_the_optional_capabilities_default_to_none():
    space = Plain()
    assert space.sharing_segments() is None
    assert space.latency_units() is None
    assert space.describe_scale() == ""
    with pytest.raises(NotImplementedError, match="names no network module .*`network`"):
        space.build_oneshot(2)


def test_the_network_module_is_called_with_checked_arguments():
    space = Networked()
    arch = space.parse("2/3")
    assert space.build_oneshot(4) == "oneshot"
    assert space.build_standalone(arch, 4, name="child") == "standalone"
    space.inherit_weights("oneshot", "standalone", arch)
    assert CALLS == [("build_oneshot", 4, True, None), ("build_standalone_model", "2/3", 4, "child"),
                     ("copy_oneshot_weights", "2/3", {})]
    with pytest.raises(UserError, match="expected an architecture of 'networked'"):
        space.build_standalone("2/3")
    assert len(CALLS) == 3  # a bad architecture never reaches the network


@pytest.mark.parametrize("call", [
    lambda space: space.build_oneshot(4, sharing=SharingPlan("group", 2, 0, ("1/1",), (1,))),
    lambda space: space.inherit_weights("oneshot", "standalone", space.parse("1/1"), copy=1),
], ids=["sharing plan", "copy"])
def test_a_space_without_sharing_refuses_copies_in_one_line(call):
    with pytest.raises(UserError, match=r"cannot hold copies .*sharing_segments\(\) is None") as info:
        call(Networked())
    assert "\n" not in str(info.value) and not CALLS


@pytest.mark.parametrize("name", ["bender_cell", "spos_blocks", "spos_quant_resnet18"])
def test_the_built_in_spaces_without_sharing_refuse_a_plan_before_building(name):
    space = get_space(name)
    plan = make_plan(get_space("darts64"), "group", groups=2)
    with pytest.raises(UserError, match=f"{name!r} cannot hold copies") as info:
        space.build_oneshot(4, sharing=plan)
    assert "\n" not in str(info.value)
    with pytest.raises(UserError, match="takes no copy=2 of the weights"):
        space.inherit_weights(None, None, space.parse(space.example()), copy=2)


def test_a_sharable_space_passes_the_plan_and_the_copy():
    space = Sharable()
    plan = make_plan(space, "group", groups=2, grouping="similarity")
    shared = SharedSpace(space, plan)
    assert shared.build_oneshot(4) == "oneshot" and CALLS[-1] == ("build_oneshot", 4, True, plan)
    last = space.parse("2/3")
    shared.inherit_weights("oneshot", "standalone", last)
    assert CALLS[-1] == ("copy_oneshot_weights", "2/3", {"copy": 1})
    shared.inherit_weights("oneshot", "standalone", space.parse("1/1"))
    assert CALLS[-1] == ("copy_oneshot_weights", "1/1", {})  # copy 0: the plain call
    with pytest.raises(UserError, match="reads copy 1 .*not copy 0"):
        shared.inherit_weights("oneshot", "standalone", last, copy=0)


def test_views_forward_the_protocol():
    darts = get_space("darts64", filters=8)
    sub = darts.restrict({"edge_01": (1, 2)})
    assert sub.sharing_segments() == darts.sharing_segments() == 6
    assert sub.describe_scale() == darts.describe_scale() == "F=8"
    assert sub.default_bn_mode == darts.default_bn_mode
    spos = get_space("spos_blocks", stage_blocks=(1, 1), channels=(4, 8, 12, 16), image_shape=(8, 8, 1))
    assert get_space("spos_channels").latency_units() is None  # its widths are not in the table
    assert spos.latency is not None and spos.restrict({"block0": ("3",)}).latency == spos.latency
    shared = SharedSpace(Sharable(), make_plan(Sharable(), "prefix", prefix=1))
    assert shared.sharing_segments() == 3 and shared.describe_scale() == ""
    # A view of a space whose own build_oneshot takes no `sharing` (examples/mobile_chain.py) still builds it.
    assert Overriding().restrict({"a": (1,)}).build_oneshot(2) == ("own", 2, True)
