"""A user's space on the command line: checked when `train` starts, read back on a rerun, bad input in one line.

Issue 19, items 1, 7 and 8: each case ends with exit 2 and one line on
stderr (no traceback), or, for a rerun on a user's model_dir, resumes it
without --space.
"""

import importlib
import json
import os
import textwrap

import pytest

from tf_oneshot.commands import cli

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SPEC = os.path.join(ROOT, "examples", "residual_chain.py") + ":ResidualChainSpace"
TINY = ["--dataset=digits", "--batch_size=8", "--ghost_batch_size=4", "--log_every=1", "--checkpoint_every=1"]


def _user_file(tmp_path, body, name="user_space.py"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(f"""
        import dataclasses
        import sys
        from typing import ClassVar

        from tf_oneshot import OneShotModel, get_space, layers

        Base = type(get_space({SPEC!r}))
        example = sys.modules[Base.__module__]
    """) + textwrap.dedent(body))
    return str(path)


def _error(capsys, argv):
    code = cli.main(["tf-oneshot", *argv])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("tf-oneshot: error: ") and "\n" not in err, err
    return err


def test_train_refuses_a_space_whose_layers_the_checkpoint_misses(tmp_path, capsys):
    # Ordinary Keras style: blocks in a list, no layers.track_layers. Training would save the
    # blocks only as optimizer slots and `search` would score their initial weights.
    path = _user_file(tmp_path, """
        class ListOneShot(example.ResidualChainOneShot):
            def __init__(self, space, ghost_batch_size, skip_inactive=True, **kwargs):
                OneShotModel.__init__(self, space, ghost_batch_size, skip_inactive, **kwargs)
                self.stem = layers.conv(space.width, 3, "stem_conv")
                self.blocks = [example.ResidualBlock(i, space.width, ghost_batch_size)
                               for i in range(space.num_blocks)]
                self.head = layers.track_layers(self, "head", example.head_layers(ghost_batch_size))
                self.classifier = example.keras.layers.Dense(space.num_classes, name="classifier")

        @dataclasses.dataclass(frozen=True)
        class Listed(Base):
            name: ClassVar[str] = "listed"

            def build_oneshot(self, ghost_batch_size, skip_inactive=True):
                return ListOneShot.create(self, ghost_batch_size, skip_inactive)
    """)
    model_dir = tmp_path / "m"
    err = _error(capsys, ["train", f"--space={path}:Listed", f"--model_dir={model_dir}", "--train_steps=1", *TINY])
    assert "'listed' fails its contract: checkpoint: " in err and "track_layers" in err
    assert not (model_dir / "checkpoints").exists()


def test_a_rerun_on_a_user_space_reads_the_space_back(tmp_path, capsys):
    model_dir = str(tmp_path / "m")
    first = ["train", f"--model_dir={model_dir}", *TINY]
    assert cli.main(["tf-oneshot", *first, f"--space={SPEC}", "--space_args=width=4", "--train_steps=1"]) == 0
    assert "space check  residual_chain: round trips, build, checkpoint, counts, masked l2 passed in " \
        in capsys.readouterr().out  # the quick check ran, and says so
    assert cli.main(["tf-oneshot", *first, "--train_steps=2"]) == 0  # no --space: the recorded one
    with open(os.path.join(model_dir, "config.json")) as f:
        assert json.load(f)["space"]["width"] == 4
    assert os.path.exists(os.path.join(model_dir, "checkpoints", "ckpt-2.index"))
    capsys.readouterr()
    err = _error(capsys, ["train", f"--model_dir={model_dir}", "--space=bender_cell", "--train_steps=3", *TINY])
    assert "asks for bender_cell" in err  # naming another space still refuses the model_dir


def test_a_syntax_error_in_a_space_file_is_one_line(tmp_path, capsys):
    path = tmp_path / "broken.py"
    path.write_text("import dataclasses\n\nclass Mine(:\n    pass\n")
    err = _error(capsys, ["space", f"--space={path}:Mine"])
    assert f"{path} line 3 is not Python" in err and "fix the file" in err


def test_a_space_file_that_raises_on_import_is_one_line(tmp_path, capsys):
    path = tmp_path / "raises.py"
    path.write_text("import dataclasses\nundefined_name\n")
    err = _error(capsys, ["space", f"--space={path}:Mine"])
    assert "raised NameError: name 'undefined_name' is not defined" in err


def test_a_model_dir_that_is_a_file_is_one_line(tmp_path, capsys):
    path = tmp_path / "afile"
    path.write_text("not a directory")
    err = _error(capsys, ["train", f"--model_dir={path}", "--train_steps=1", *TINY])
    assert f"--model_dir={path} is a file; give a directory" in err


@pytest.mark.parametrize(("args", "expected"), [
    ("width=abc", "width='abc' is not an int; give e.g. --space_args=width=8"),
    ("width=2.5", "width=2.5"),  # a float where an int is due: the space's own check names it
])
def test_space_args_are_converted_with_the_field_type_or_refused(args, expected, capsys):
    err = _error(capsys, ["space", f"--space={SPEC}", f"--space_args={args}"])
    assert expected in err


def test_an_unknown_space_args_field_is_called_a_field_not_a_flag(capsys):
    err = _error(capsys, ["space", f"--space={SPEC}", "--space_args=width=4,depth=3"])
    assert err.startswith("tf-oneshot: error: the --space_args field 'depth' does not apply to --space=")
    assert err.endswith("its fields are image_shape, num_classes, num_blocks, width.")


def test_space_args_convert_to_the_field_type(capsys):
    assert cli.main(["tf-oneshot", "space", f"--space={SPEC}", "--space_args=width=16", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["config"]["width"] == 16


def test_a_space_class_without_dataclass_is_one_line(tmp_path, capsys):
    path = _user_file(tmp_path, """
        class Mine(Base):
            name: ClassVar[str] = "mine"
            depth: int = 3
    """)
    err = _error(capsys, ["space", f"--space={path}:Mine"])
    assert "Mine is not a dataclass; decorate it with @dataclasses.dataclass(frozen=True)" in err


def test_the_guides_commands_take_the_flags_they_show_and_it_has_a_smoke_run():
    # docs/spaces.md is what a new user writes a space from: each command it shows must run as written.
    with open(os.path.join(ROOT, "docs", "spaces.md")) as f:
        lines = [line.split() for line in f if line.startswith("tf-oneshot ")]
    for command, *args in (line[1:] for line in lines):
        known = importlib.import_module(f"tf_oneshot.commands.{command}").FLAG_NAMES
        unknown = [a for a in args if a.split("=")[0].removeprefix("--") not in known]
        assert not unknown, (command, unknown)
    smoke = [line for line in lines if "--model_dir=/tmp/smoke" in line]
    assert [line[1] for line in smoke] == ["train", "search", "retrain"]
    assert "--train_steps=30" in smoke[0] and "--pool=2" in smoke[2]
