"""The space contract as a check a user runs (`tf_oneshot.search_spaces.check`, `tf-oneshot space --check`).

A user's space is checked, not trusted: the failures that used to be silent
(weights a checkpoint does not reach, a `count()` that is off, a one-shot
model that is not its children) each end with one line naming the fix. The
broken spaces here are examples/residual_chain.py with one thing wrong.
"""

import dataclasses
import os
import sys
import textwrap
from typing import ClassVar

import keras
import pytest
import tensorflow as tf

from tf_oneshot import Cost, OneShotModel, UserError, get_space, layers
from tf_oneshot.commands import cli
from tf_oneshot.search_spaces import register, space_class
from tf_oneshot.search_spaces.check import check_space

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SPEC = os.path.join(ROOT, "examples", "residual_chain.py") + ":ResidualChainSpace"
Base = space_class(SPEC)
OneShot = sys.modules[Base.__module__].ResidualChainOneShot
Block = sys.modules[Base.__module__].ResidualBlock


def _space_building(oneshot_class, space_name):
    """A registered residual_chain space whose one-shot model is `oneshot_class`."""

    class Space(Base):
        name: ClassVar[str] = space_name

        def build_oneshot(self, ghost_batch_size, skip_inactive=True):
            return oneshot_class.create(self, ghost_batch_size, skip_inactive)

    return register(dataclasses.dataclass(frozen=True)(Space))


class UntrackedOneShot(OneShot):
    """Its blocks in a plain list, ordinary Keras style, without `layers.track_layers`."""

    def __init__(self, space, ghost_batch_size, skip_inactive=True, **kwargs):
        OneShotModel.__init__(self, space, ghost_batch_size, skip_inactive, **kwargs)
        self.stem = layers.conv(space.width, 3, "stem_conv")
        self.blocks = [Block(i, space.width, ghost_batch_size) for i in range(space.num_blocks)]
        self.head = layers.track_layers(self, "head", [layers.normalization(ghost_batch_size, "head_bn")])
        self.classifier = keras.layers.Dense(space.num_classes, name="classifier")


@register
@dataclasses.dataclass(frozen=True)
class HalfCount(Base):
    name: ClassVar[str] = "test_half_count"

    def count(self, arch):
        full = super().count(arch)
        return Cost(full.params // 2, full.flops)


@register
@dataclasses.dataclass(frozen=True)
class NoInheritance(Base):
    name: ClassVar[str] = "test_no_inheritance"

    def inherit_weights(self, oneshot, standalone, arch):
        pass  # the child keeps its own random weights: not what the one-shot model computes


class NoDecayOneShot(OneShot):
    def masked_l2(self, masks):
        return tf.constant(0.0)  # runs, and training would have no weight decay at all


class DecayAllOneShot(OneShot):
    def masked_l2(self, masks):
        return super().masked_l2(self.space.all_on_masks())  # shrinks the paths the step does not use


@register
@dataclasses.dataclass(frozen=True)
class Unbuilt(Base):
    name: ClassVar[str] = "test_unbuilt"

    def build_oneshot(self, ghost_batch_size, skip_inactive=True):
        return OneShot(self, ghost_batch_size, skip_inactive)  # the constructor, not .create(...)


class MisspeltOneShot(OneShot):
    def forward(self, images, masks, training=None, skip_inactive=True):
        return super().forward(images, {**masks, "block0_kernel": masks["block0_kernels"]}, training, skip_inactive)


Untracked = _space_building(UntrackedOneShot, "test_untracked")
NoDecay = _space_building(NoDecayOneShot, "test_no_decay")
DecayAll = _space_building(DecayAllOneShot, "test_decay_all")
Misspelt = _space_building(MisspeltOneShot, "test_misspelt")


def _problems(space, **kwargs):
    report = check_space(space, **kwargs)
    return {r.name: r.problem for r in report.results if not r.ok}, report


def test_the_examples_pass_every_check():
    for spec in (SPEC, os.path.join(ROOT, "examples", "mobile_chain.py") + ":MobileChainSpace"):
        problems, report = _problems(get_space(spec))
        assert not problems and [r.name for r in report.results] == [
            "round trips", "build", "checkpoint", "counts", "masked l2", "one-shot equals stand-alone", "one trace"]


def test_layers_kept_in_a_list_are_caught_naming_track_layers():
    problems, report = _problems(Untracked(), quick=True)
    assert list(problems) == ["checkpoint"]
    assert "not reachable from tf.train.Checkpoint" in problems["checkpoint"]
    assert "track_layers" in problems["checkpoint"] and "\n" not in problems["checkpoint"]
    with pytest.raises(UserError, match="'test_untracked' fails its contract: checkpoint: "):
        report.raise_first()


def test_a_count_of_half_the_parameters_is_caught():
    problems, _ = _problems(HalfCount(), quick=True)
    assert list(problems) == ["counts"]
    assert "parameters but its stand-alone model has" in problems["counts"]
    assert "a batch norm holds 4 per channel" in problems["counts"]


def test_a_masked_l2_of_zero_is_caught():
    problems, _ = _problems(NoDecay(), quick=True)
    assert list(problems) == ["masked l2"]
    assert "less than the sum of squares of its stand-alone model's kernels" in problems["masked l2"]
    assert "weighted_sum_of_squares" in problems["masked l2"] and "\n" not in problems["masked l2"]


def test_a_masked_l2_of_unused_paths_is_caught():
    """Bender et al. §3.2: L2 on the active paths only; the check was a lower bound before issue 19."""
    problems, _ = _problems(DecayAll(), quick=True)
    assert list(problems) == ["masked l2"]
    assert "more than the sum of squares of its stand-alone model's kernels" in problems["masked l2"]
    assert "decays weights the architecture does not use" in problems["masked l2"]


def test_a_one_shot_model_that_is_not_its_children_is_caught():
    problems, _ = _problems(NoInheritance())
    assert list(problems) == ["one-shot equals stand-alone"]
    problem = problems["one-shot equals stand-alone"]
    assert "logits differ from its stand-alone model's" in problem and "\n" not in problem
    # The causes a new user met, named: a path left out of forward, widths changing between stages.
    assert "a path of the stand-alone model (a shortcut, a second layer) missing from forward" in problem
    assert "the weight copy must slice the next layer's input side too" in problem
    assert "a shared weight inherit_weights does not copy" in problem


def test_a_one_shot_model_built_without_create_is_one_line_naming_create():
    problems, report = _problems(Unbuilt())
    assert problems == {"build": "build_oneshot returned a model with no variables; return "
                                 "ResidualChainOneShot.create(self, ghost_batch_size, skip_inactive), which calls it "
                                 "once on all-on inputs, not the constructor."}
    assert [r.name for r in report.results] == ["round trips", "build"]  # nothing else runs on it


def test_a_misspelt_decision_name_in_forward_is_one_line_listing_the_names():
    problems, _ = _problems(Misspelt(num_blocks=2), quick=True)
    assert problems == {"build": "build_oneshot(2) raised KeyError 'block0_kernels': no mask has that name; forward "
                                 "must read masks by decision name, one of: block0_kernel, block0_width, "
                                 "block1_kernel, block1_width."}


def test_a_space_whose_code_raises_is_one_line_not_a_traceback():
    @register
    @dataclasses.dataclass(frozen=True)
    class Broken(Base):
        name: ClassVar[str] = "test_broken"

        def build_oneshot(self, ghost_batch_size, skip_inactive=True):
            raise RuntimeError("forgot something\nsecond line")

    problems, _ = _problems(Broken())
    assert problems == {"build": "build_oneshot(2) raised RuntimeError: forgot something; it must return a "
                                 "built OneShotModel."}


def _user_file(tmp_path, body):
    path = tmp_path / "user_space.py"
    path.write_text(textwrap.dedent(f"""
        import dataclasses
        from typing import ClassVar
        from tf_oneshot import Cost, get_space

        Base = type(get_space({SPEC!r}))
    """) + textwrap.dedent(body))
    return f"{path}:Mine"


def test_space_check_command_passes_and_fails_in_one_line(tmp_path, capsys):
    assert cli.main(["tf-oneshot", "space", f"--space={SPEC}", "--check", "--image_size=8", "--channels=1"]) == 0
    out = capsys.readouterr().out
    assert "check  one trace" in out and "FAILED" not in out
    spec = _user_file(tmp_path, """
        @dataclasses.dataclass(frozen=True)
        class Mine(Base):
            name: ClassVar[str] = "mine"

            def count(self, arch):
                return Cost(super().count(arch).params // 2, 0)
    """)
    assert cli.main(["tf-oneshot", "space", f"--space={spec}", "--check", "--image_size=8", "--channels=1"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("tf-oneshot: error: search space 'mine' fails its contract: counts: count(")
    assert "\n" not in err
