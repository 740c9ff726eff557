"""Nothing outside a space's own folder names that space or its ops (the package is a library).

The registry (`search_spaces/__init__.py`) and the public API
(`tf_oneshot/__init__.py`, the old names of the cell space) are the two
places allowed to name a built-in space.
"""

import ast
import pathlib
import re

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
