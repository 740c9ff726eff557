"""Nothing outside a space's own folder names that space or its ops (the package is a library).

The registry (`search_spaces/__init__.py`) and the public API
(`tf_oneshot/__init__.py`, the old names of the cell space) are the two
places allowed to name a built-in space.
"""

import ast
import json
import pathlib
import re
import subprocess
import sys

import pytest

import tf_oneshot
from tf_oneshot.search_spaces import BUILTIN

PACKAGE = pathlib.Path(tf_oneshot.__file__).parent
ALLOWED = {PACKAGE / "search_spaces" / "__init__.py", PACKAGE / "__init__.py"}
# Op names that are also plain words of the package (an identity function, record identity).
GENERIC = {"identity"}


def _names_of(folder: pathlib.Path, space_name: str) -> set[str]:
    """The space's name, folder name, public identifiers and op names."""
    init = ast.parse((folder / "__init__.py").read_text())
    names = {space_name, folder.name}
    for node in ast.walk(init):
        if isinstance(node, ast.Assign) and any(getattr(t, "id", "") == "__all__" for t in node.targets):
            names |= {e.value for e in node.value.elts}
    ops = re.search(r"^OP_NAMES = \((.*?)\)", (folder / "space.py").read_text(), re.S | re.M)
    if ops:
        names |= set(re.findall(r'"([^"]+)"', ops.group(1)))
    return names - GENERIC


def test_no_module_outside_a_space_names_it():
    spaces = {}
    for name, spec in BUILTIN.items():
        folder = PACKAGE / "search_spaces" / spec.split(":")[0].rsplit(".", 1)[-1]
        spaces.setdefault(folder, set()).update(_names_of(folder, name))  # several spaces may share a folder
    # Generic identifiers several spaces export (e.g. OP_NAMES) name no one space.
    counts = {}
    for names in spaces.values():
        for n in names:
            counts[n] = counts.get(n, 0) + 1
    violations = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path in ALLOWED:
            continue
        text = path.read_text()
        for folder, names in spaces.items():
            if folder in path.parents:
                continue
            for n in names:
                if counts[n] == 1 and re.search(rf"(?<![\w.]){re.escape(n)}(?!\w)", text):
                    violations.append(f"{path.relative_to(PACKAGE)} names {n!r} of {folder.name}")
    assert not violations, "\n".join(violations)


def test_the_check_catches_a_violation(tmp_path):
    text = "from tf_oneshot.search_spaces.bender_cell import CellSpace\n"
    names = _names_of(PACKAGE / "search_spaces" / "bender_cell", "bender_cell")
    assert any(re.search(rf"(?<![\w.]){re.escape(n)}(?!\w)", text) for n in names)


# ------------------------------------------- a space's data imports no network
FOLDERS = sorted({spec.split(":")[0] for spec in BUILTIN.values()})
# What a space's data may import: the standard library, numpy, these TensorFlow-free
# modules, and other data of its own folder (checked the same way).
PURE = {"tf_oneshot.errors", "tf_oneshot.search_spaces.base", "tf_oneshot.search_spaces.decisions",
        "tf_oneshot.search_spaces.fields"}


def _file(module: str) -> pathlib.Path | None:
    path = PACKAGE.parent / module.replace(".", "/")
    if (path / "__init__.py").exists():
        return path / "__init__.py"
    return path.with_suffix(".py") if path.with_suffix(".py").exists() else None


def _imported(text: str) -> set[str]:
    """Every module a source imports, at any depth (inside functions too, as import-linter counts).

    `from a.b import c` counts as a.b.c where c is a module. The package uses
    absolute imports only; a relative one is reported as ".".
    """
    names = set()
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = "." if node.level else node.module
            names.add(base)
            names |= {f"{base}.{a.name}" for a in node.names if not node.level and _file(f"{base}.{a.name}")}
    return names


def _impure_imports(package: str) -> list[str]:
    todo, seen, bad = [f"{package}.space"], set(), []
    while todo:
        module = todo.pop()
        if module in seen:
            continue
        seen.add(module)
        for name in _imported(_file(module).read_text()):
            if name.startswith(package + "."):
                todo.append(name)
            elif name.split(".")[0] in ("tf_oneshot", "tensorflow", "keras", "importlib", ".") and name not in PURE:
                bad.append(f"{module} imports {name}")
    return bad


@pytest.mark.parametrize("package", FOLDERS)
def test_a_space_module_imports_no_network_code_even_inside_functions(package):
    """`space.py` and all it imports are data: the space's model imports the space, never the reverse."""
    bad = _impure_imports(package)
    assert not bad, "\n".join(bad)


def test_the_import_check_sees_an_import_inside_a_function():
    text = "def build_oneshot(self):\n    from tf_oneshot.search_spaces.darts64.model import Darts64OneShotModel\n"
    assert "tf_oneshot.search_spaces.darts64.model" in _imported(text)
    space = _file("tf_oneshot.search_spaces.darts64.space").read_text()
    assert "tf_oneshot.search_spaces.darts64.model" not in _imported(space)


@pytest.mark.parametrize("package", FOLDERS)
def test_importing_a_space_loads_neither_its_networks_nor_tensorflow(package):
    code = f"import json, sys; import {package}.space; print(json.dumps(sorted(sys.modules)))"
    loaded = set(json.loads(subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                                           text=True).stdout))
    folder = _file(package).parent
    network = {f"{package}.{p.stem}" for p in folder.glob("*.py") if p.stem in ("network", "model", "standalone")}
    assert len(network) == 3 and not network & loaded, network & loaded
    assert "tensorflow" not in loaded and "keras" not in loaded
