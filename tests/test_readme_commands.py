"""Every `tf-oneshot ...` command in README.md's code blocks runs as written, at tiny scale.

`TF_ONESHOT_TINY=1` (read once, in `tf_oneshot/commands/cli.py`; the caps are
`tf_oneshot.commands.flags.TINY`) shrinks the steps, image counts and
architecture counts a command declares, and nothing else. The commands of one
code block run in order in one temporary directory, so a train comes before
its search and retrain; `gs://B` is a local folder there.

Data this machine cannot have (ImageNet, a Cloud TPU) must end its command
with one line naming it; the later commands of that block must still accept
their flags and recipe, and stop on the input the blocked command would have
written ("... does not exist") with one line.
"""

import os
import pathlib
import re
import shlex

import pytest

from tf_oneshot.commands import cli

ROOT = pathlib.Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
# What the machine cannot have: the one-line errors that name it.
MISSING = re.compile(r"Dataset imagenet2012 is not prepared|no TPU 'local' could be reached")
# A command whose input a blocked command would have written.
NO_INPUT = re.compile(r"does not exist")
# The one command too costly even at tiny scale: the ground truth trains each of darts64's 64
# children for each of 10 seeds; one (child, seed) pair of the 640 runs here, the same code.
# The block's `insights` then stops on the incomplete ground truth, its one line checked.
ONE_PAIR = {"groundtruth": ["--shard=0/640"]}
INCOMPLETE = re.compile(r"ground truth|ground_truth")


def readme_blocks() -> list[list[list[str]]]:
    """The `tf-oneshot` commands of each code block of README.md, as argument lists after the program."""
    blocks, current, fenced, inside, pending = [], [], False, False, ""
    for line in README.read_text().splitlines():
        if line.startswith("```"):
            if inside and current:
                blocks.append(current)
            fenced = not fenced  # a shell block (no language, sh, bash) is read; python is not
            inside, current = fenced and line.strip() in ("```", "```sh", "```bash"), []
            continue
        if not inside:
            continue
        text = pending + line.strip()
        if text.endswith("\\"):
            pending = text[:-1] + " "
            continue
        pending = ""
        text = text.removeprefix("$ ")
        if text.startswith("tf-oneshot "):
            current.append(shlex.split(text, comments=True)[1:])
    return blocks


BLOCKS = readme_blocks()


def test_the_readme_has_the_commands_this_test_runs():
    commands = [c[0] for block in BLOCKS for c in block]
    assert {"space", "train", "search", "retrain", "analyze", "demo", "nas", "groundtruth", "insights"} <= set(
        commands)
    retrains = [c for block in BLOCKS for c in block if c[0] == "retrain"]
    assert all(any(a.startswith("--results=") for a in c) for c in retrains)


@pytest.mark.slow
@pytest.mark.parametrize("block", BLOCKS, ids=[f"{i}-{'-'.join(c[0] for c in b)}" for i, b in enumerate(BLOCKS)])
def test_readme_block_runs_at_tiny_scale(block, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TF_ONESHOT_TINY", "1")
    monkeypatch.chdir(tmp_path)
    for folder in ("flags", "examples"):
        os.symlink(ROOT / folder, tmp_path / folder)
    blocked = None
    for args in block:
        args = [a.replace("gs://B", str(tmp_path / "gs_B")) for a in args] + ONE_PAIR.get(args[0], [])
        rc = cli.main(["tf-oneshot", *args])
        err = capsys.readouterr().err
        shown = f"tf-oneshot {shlex.join(args)}"
        if rc == 0:
            continue
        last = err.strip().splitlines()[-1] if err.strip() else ""
        assert last.startswith("tf-oneshot: error: "), f"{shown}: exit {rc} without a one-line error:\n{err}"
        if MISSING.search(last):
            blocked = blocked or shown
        elif blocked and NO_INPUT.search(last):
            pass  # its input comes from the blocked command
        elif args[0] == "insights" and INCOMPLETE.search(last):
            pass  # one ground-truth pair of 640 (ONE_PAIR)
        else:
            pytest.fail(f"{shown}: exit {rc}: {last}")
