"""The folder order is a contract that import-linter checks (setup.cfg, [importlinter]).

`./dev test` runs `lint-imports` on the package. These tests show that the
contracts would catch what they forbid: a copy of the package with one
upward import, or one import circle inside a space's folder, fails them.
"""

import os
import shutil
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LINT = [sys.executable, "-c", "import sys; from importlinter.cli import lint_imports_command; "
        "sys.exit(lint_imports_command())"]


def _lint(root: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": root}
    return subprocess.run([*LINT, "--config", os.path.join(root, "setup.cfg"), "--no-cache"], cwd=root, env=env,
                          capture_output=True, text=True, timeout=300)


def _copy(tmp_path) -> str:
    root = str(tmp_path / "copy")
    shutil.copytree(os.path.join(ROOT, "tf_oneshot"), os.path.join(root, "tf_oneshot"),
                    ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(os.path.join(ROOT, "setup.cfg"), root)
    return root


def _add_import(root: str, module: str, line: str) -> None:
    with open(os.path.join(root, *module.split(".")) + ".py", "a") as f:
        f.write(f"\n{line}\n")


def test_the_package_keeps_its_contracts(tmp_path):
    result = _lint(_copy(tmp_path))
    assert result.returncode == 0, result.stdout[-3000:]
    assert "BROKEN" not in result.stdout and "KEPT" in result.stdout


@pytest.mark.parametrize("module, line, expected", [
    # a layer importing one above it
    ("tf_oneshot.layers.common", "from tf_oneshot.training import data  # noqa", "tf_oneshot.layers.common ->"),
    ("tf_oneshot.training.tasks", "from tf_oneshot.search import selection  # noqa", "tf_oneshot.training.tasks ->"),
    # a space's data importing its network, even lazily inside a function
    ("tf_oneshot.search_spaces.darts64.space",
     "def _network():\n    from tf_oneshot.search_spaces.darts64 import model  # noqa\n    return model",
     ".space -> .model"),
])
def test_an_upward_import_or_a_circle_breaks_a_contract(tmp_path, module, line, expected):
    root = _copy(tmp_path)
    _add_import(root, module, line)
    result = _lint(root)
    assert result.returncode != 0, result.stdout[-3000:]
    assert "BROKEN" in result.stdout and expected in result.stdout, result.stdout[-3000:]
