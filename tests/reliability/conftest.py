"""The reliability suite: every test here is marked ``reliability`` and ``slow``.

Run it alone with ``python -m pytest -m reliability``; see ``relhelpers.py`` for the
tools, mounts and the fault server, ``tests/apps/`` for the child processes, and
docs/reliability.md for what each test enforces.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from .relhelpers import HERE, FaultServer, need_libfiu


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
