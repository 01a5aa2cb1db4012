"""Hatchling build hook: an editable install imports the monitor as `durably_monitor` too.

A wheel ships the repository folder `monitor/` as the package `durably_monitor`
(`[tool.hatch.build.targets.wheel.sources]` in pyproject.toml), so the monitor never takes the
common top-level name `monitor` in a user's environment. Hatchling cannot rename a folder in an
editable install: both of its dev modes (the `.pth` path entry and `dev-mode-exact`) refuse a
`sources` rewrite that changes a prefix rather than removing it (editables issue #20). So an
editable install uses `dev-mode-dirs` (a `.pth` path entry for the repository, as before, which
keeps `durably`'s types visible to type checkers), and this hook adds to it a small import
finder that serves `durably_monitor` from the live `monitor/` folder. Standard wheels and sdists
are not touched.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from typing import Any

from hatchling.builders.hooks.plugin.interface import BuildHookInterface

FINDER_MODULE = "_durably_monitor_finder"

FINDER = '''"""Serves `durably_monitor` from {folder!r} (an editable install of durably)."""

import importlib.util
import os
import sys

FOLDER = {folder!r}


class MonitorFinder:
    """Finds the package `durably_monitor`; its modules are then found through `__path__`."""

    @staticmethod
    def find_spec(name, path=None, target=None):
        if name != "durably_monitor" or not os.path.isdir(FOLDER):
            return None
        init = os.path.join(FOLDER, "__init__.py")
        return importlib.util.spec_from_file_location(name, init, submodule_search_locations=[FOLDER])


sys.meta_path.append(MonitorFinder)
'''


class EditableMonitorHook(BuildHookInterface):
    """Adds the `durably_monitor` finder (a module and its `.pth`) to editable wheels."""

    PLUGIN_NAME = "custom"

    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        """Write the finder for this checkout and have hatchling put it in the editable wheel."""
        if self.target_name != "wheel" or version != "editable":
            return
        self._scratch = tempfile.mkdtemp(prefix="durably-editable-")
        folder = os.path.join(os.path.abspath(self.root), "monitor")
        files = {
            f"{FINDER_MODULE}.py": FINDER.format(folder=folder),
            "_durably_monitor.pth": f"import {FINDER_MODULE}\n",
        }
        for name, text in files.items():
            path = os.path.join(self._scratch, name)
            with open(path, "w", encoding="utf-8") as f:
                f.write(text)
            build_data["force_include_editable"][path] = name

    def finalize(self, version: str, build_data: dict[str, Any], artifact_path: str) -> None:
        """Remove the scratch files once the wheel holds them."""
        scratch = getattr(self, "_scratch", None)
        if scratch:
            shutil.rmtree(scratch, ignore_errors=True)
