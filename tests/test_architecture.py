"""The layering of `durably/` stays as docs/architecture.md draws it."""

from __future__ import annotations

import ast
import importlib
import re
from pathlib import Path

import pytest
from helpers import REPO_ROOT

PACKAGE = REPO_ROOT / "durably"
DOC = REPO_ROOT / "docs" / "architecture.md"
MAX_MODULE_LINES = 600
MAX_CLASS_LINES = 400


def _module_table() -> list[tuple[str, set[str]]]:
    """(module, allowed imports) for each row of the module table, in table order."""
    rows = []
    for line in DOC.read_text().splitlines():
        m = re.match(r"^\| `(_?_?\w+)\.py` \| .* \| (.*) \|$", line)
        if m:
            allowed = set(re.findall(r"`(\w+)`", m.group(2)))
            rows.append((m.group(1), allowed))
    return rows


def _imports(path: Path) -> set[str]:
    """The sibling modules a module of the package imports (relative imports), also under
    ``TYPE_CHECKING``."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            if node.module:
                found.add(node.module.split(".")[0])
            else:
                found.update(
                    a.name if a.name.startswith("_") and a.name != "__version__" else "__init__"
                    for a in node.names
                )
    return found


class TestLayers:
    def test_every_module_of_the_package_is_in_the_table(self) -> None:
        """docs/architecture.md's module table lists every module of durably/, once."""
        table = [name for name, _ in _module_table()]
        assert len(table) == len(set(table))
        assert sorted(table) == sorted(p.stem for p in PACKAGE.glob("*.py"))

    def test_each_module_imports_only_what_its_row_allows(self) -> None:
        """A module imports no sibling that its row of the table does not name."""
        for name, allowed in _module_table():
            extra = _imports(PACKAGE / f"{name}.py") - allowed
            assert not extra, f"{name}.py imports {sorted(extra)}, not allowed by docs/architecture.md"

    def test_every_arrow_points_down_the_layers(self) -> None:
        """Each module's allowed imports come earlier in the table: no import circle."""
        seen: set[str] = set()
        for name, allowed in _module_table():
            later = allowed - seen
            assert not later, f"{name}.py may import {sorted(later)}, which come later in the table"
            seen.add(name)


def _code_names() -> list[str]:
    text = DOC.read_text()
    section = text[text.index("## Invariants and where they hold") :]
    names = []
    for line in section.splitlines():
        if line.startswith("| ") and not line.startswith("| invariant"):
            names += re.findall(r"`(_\w+(?:\.\w+)+)`", line.rsplit("|", 2)[-2])
    return names


@pytest.mark.parametrize("name", _code_names())
def test_every_code_name_of_the_invariant_table_exists(name: str) -> None:
    """The invariant table names code that exists (`module.attribute[.attribute]`)."""
    module, *attrs = name.split(".")
    obj: object = importlib.import_module(f"durably.{module}")
    for attr in attrs:
        assert hasattr(obj, attr), f"docs/architecture.md names {name}, which does not exist"
        obj = getattr(obj, attr)


@pytest.mark.parametrize(
    "path",
    sorted([*PACKAGE.glob("*.py"), *(REPO_ROOT / "monitor").glob("*.py")]),
    ids=lambda p: f"{p.parent.name}/{p.name}",
)
def test_modules_and_classes_stay_small(path: Path) -> None:
    """No module of the core or the monitor is over ~600 lines, and no class over ~400."""
    text = path.read_text()
    assert text.count("\n") <= MAX_MODULE_LINES, f"{path.name} has {text.count(chr(10))} lines"
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.ClassDef):
            size = (node.end_lineno or node.lineno) - node.lineno + 1
            assert size <= MAX_CLASS_LINES, f"class {node.name} of {path.name} has {size} lines"
