"""A base revision checked out next to this tree, for benchmarks that compare the two in one run."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
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
