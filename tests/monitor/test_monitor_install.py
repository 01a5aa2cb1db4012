"""The monitor installs as `durably_monitor`, never as a top-level `monitor`."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest

import durably_monitor

REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / "monitor"


def editable_checkout() -> Path | None:
    """The checkout `durably` is installed from in editable mode, if it is."""
    try:
        text = metadata.distribution("durably").read_text("direct_url.json")
    except metadata.PackageNotFoundError:
        return None
    if not text:
        return None
    info = json.loads(text)
    if not info.get("dir_info", {}).get("editable"):
        return None
    return Path(unquote(urlparse(info["url"]).path)).resolve()


class TestInstalledName:
    def test_the_package_is_durably_monitor(self) -> None:
        """The tests import the monitor by its installed name, and it is this checkout's folder."""
        assert durably_monitor.__name__ == "durably_monitor"
        assert Path(durably_monitor.__file__).resolve().parent == PACKAGE.resolve()

    def test_the_package_never_imports_itself_by_a_name(self) -> None:
        """Inside the package every import of its own modules is relative (works under any name)."""
        for path in sorted(PACKAGE.glob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                names = []
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                for name in names:
                    top = name.split(".")[0]
                    assert top not in {"monitor", "durably_monitor"}, f"{path.name} imports {name}"

    def test_an_editable_install_serves_the_live_folder(self) -> None:
        """`pip install -e .` makes `import durably_monitor` load this checkout's monitor/ folder
        in a fresh interpreter (the wheel's `sources` rename, done by hatch_build.py's finder)."""
        checkout = editable_checkout()
        if checkout != REPO.resolve():
            if os.environ.get("CI") == "true":  # CI installs this clone with `pip install -e`
                pytest.fail(f"durably is not installed editable from {REPO} (but from {checkout})")
            pytest.skip(f"durably is installed editable from {checkout}, not this checkout")
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        code = "import durably_monitor; print(durably_monitor.__file__)"
        out = subprocess.run(
            [sys.executable, "-c", code], cwd="/", env=env, capture_output=True, text=True, check=True
        )
        assert Path(out.stdout.strip()).resolve() == (PACKAGE / "__init__.py").resolve()
