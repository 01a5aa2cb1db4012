"""The reliability suite: every test here is marked ``reliability`` and ``slow``.

Run it alone with ``python -m pytest -m reliability``; see ``relhelpers.py`` for the
tools, mounts and child processes, and docs/reliability.md for what each test enforces.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from relhelpers import HERE, FaultServer, need_libfiu


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in Path(str(item.fspath)).resolve().parents:
            item.add_marker(pytest.mark.reliability)
            item.add_marker(pytest.mark.slow)


@pytest.fixture
def fault_server(tmp_path: Path) -> Iterator[FaultServer]:
    need_libfiu()
    server = FaultServer(tmp_path / "root", tmp_path / "server.log")
    yield server
    server.close()


@pytest.fixture
def inline_server(tmp_path: Path) -> Iterator[FaultServer]:
    """A fault server without a background worker: runs execute in its main thread."""
    need_libfiu()
    server = FaultServer(tmp_path / "root", tmp_path / "server.log", worker=False)
    yield server
    server.close()


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Print what the reliability suite exercised (fault cases, states, examples)."""
    figures = {}
    for name in ("test_rel_faults", "test_rel_model", "test_rel_sync", "test_rel_gaps_input",
                 "test_rel_gaps_faults", "test_rel_gaps_locks"):
        module = sys.modules.get(name)
        for attr in ("FAULT_CASES", "STATS"):
            value = getattr(module, attr, None)
            if value:
                figures[f"{name}.{attr}"] = value
    if figures:
        terminalreporter.write_sep("-", "reliability figures")
        for key, value in figures.items():
            terminalreporter.write_line(f"{key}: {value}")
