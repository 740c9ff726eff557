"""A base revision checked out next to this tree, for benchmarks that compare the two in one run."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@contextlib.contextmanager
def base_tree(revision: str, prefix: str) -> Iterator[tuple[str, str]]:
    """(a detached git worktree of `revision`, a scratch folder), both removed on exit."""
    scratch = tempfile.mkdtemp(prefix=prefix)
    tree = os.path.join(scratch, "base")
    subprocess.run(["git", "-C", ROOT, "worktree", "add", "--detach", tree, revision], check=True,
                   capture_output=True)
    try:
        yield tree, scratch
    finally:
        subprocess.run(["git", "-C", ROOT, "worktree", "remove", "--force", tree], check=False)
        shutil.rmtree(scratch, ignore_errors=True)


def only_this_tree() -> None:
    """Drops the editable install's import hook, so `tf_oneshot` comes wholly from PYTHONPATH's tree.

    `pip install -e` maps every `tf_oneshot.*` name to this checkout: without
    this, a base revision's worker importing a module that the base lacks
    (say `tf_oneshot.training`) would silently get this tree's. Without a
    PYTHONPATH (a worker run by hand) the tree is this one, as the hook gave.
    """
    sys.meta_path[:] = [f for f in sys.meta_path if not str(getattr(f, "__module__", "")).startswith("__editable__")]
    if not os.environ.get("PYTHONPATH"):
        sys.path.insert(0, ROOT)
