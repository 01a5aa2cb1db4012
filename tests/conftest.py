"""Shared fixtures of the whole suite: a fresh root, auto-stopped instances, gates,
child processes (``spawn``, ``zygote``), and the figures printed after the run."""

from __future__ import annotations

import atexit
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from apps.children import Zygote, start_python
from helpers import REPO_ROOT

import durably

_DEFAULT_ROOT: Any = object()


def _import_this_checkouts_monitor() -> None:
    """Make `import durably_monitor` load this checkout's `monitor/` folder, here and in children.

    An install serves the package `durably_monitor` from some checkout's `monitor/` folder
    (a wheel: a copy; `pip install -e .`: the live folder). Tests run from another checkout (a
    worktree with PYTHONPATH pointing at it, as for `durably`) must test their own folder.
    """
    folder = (REPO_ROOT / "monitor").resolve()
    spec = importlib.util.find_spec("durably_monitor")
    if spec is not None and spec.origin and Path(spec.origin).resolve().parent == folder:
        return
    links = Path(tempfile.mkdtemp(prefix="durably-monitor-"))
    atexit.register(shutil.rmtree, links, True)
    (links / "durably_monitor").symlink_to(folder, target_is_directory=True)
    sys.path.insert(0, str(links))
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(links), os.environ.get("PYTHONPATH")]))


_import_this_checkouts_monitor()


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A fresh durably root directory (not created yet) for one test."""
    return tmp_path / "root"


class Gates:
    """Makes `threading.Event`s that jobs wait on; all are set before instances stop."""

    def __init__(self) -> None:
        self._made: list[threading.Event] = []

    def __call__(self) -> threading.Event:
        event = threading.Event()
        self._made.append(event)
        return event

    def release_all(self) -> None:
        for event in self._made:
            event.set()


@pytest.fixture
def gates() -> Iterator[Gates]:
    """Make gates (`threading.Event`) for jobs to block on; released at teardown."""
    made = Gates()
    yield made
    made.release_all()


@pytest.fixture
def durably_factory(root: Path, gates: Gates) -> Iterator[Callable[..., durably.Durably]]:
    """Make fast `Durably` instances on the test's root; every one is stopped at teardown.

    Pass ``root_dir=None`` to use the default root, or any other path to override it.
    """
    instances: list[durably.Durably] = []

    def make(*, root_dir: Any = _DEFAULT_ROOT, **options: Any) -> durably.Durably:
        options.setdefault("fsync", False)
        options.setdefault("polling_interval", 0.05)
        where = root if root_dir is _DEFAULT_ROOT else root_dir
        instance = durably.Durably(where, **options)
        instances.append(instance)
        return instance

    yield make
    # Let any job still blocked on a test gate finish before stopping its worker.
    gates.release_all()
    for instance in reversed(instances):
        instance.stop(timeout=30)


@pytest.fixture
def spawn() -> Iterator[Callable[..., subprocess.Popen[str]]]:
    """Start `apps.second_process` children (`apps.children.start_python`); any still
    running are killed."""
    children: list[subprocess.Popen[str]] = []

    def start(args: list[str], **extra_env: str) -> subprocess.Popen[str]:
        child = start_python(args, **extra_env)
        children.append(child)
        return child

    yield start
    for child in children:
        if child.returncode is None:
            child.kill()
            child.communicate()


@pytest.fixture
def zygote(tmp_path: Path) -> Iterator[Zygote]:
    """A fork server (``apps.zygote``) for one test; children still alive at the end are
    killed. Its children run ``apps.<module>:<function>``."""
    z = Zygote(tmp_path / "zygote.log")
    yield z
    z.close()


@pytest.fixture
def d(durably_factory: Callable[..., durably.Durably]) -> durably.Durably:
    """One default instance on the test's root."""
    return durably_factory()


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Print what the crash, race, fault and hostile-input suites exercised: each test
    module may count its cases in a module-level ``STATS`` (or ``FAULT_CASES``) dict."""
    figures = {}
    for name, module in sorted(sys.modules.items()):
        if not name.rpartition(".")[2].startswith("test_"):
            continue
        for attr in ("FAULT_CASES", "STATS"):
            value = getattr(module, attr, None)
            if isinstance(value, dict) and any(value.values()):
                figures[f"{name}.{attr}"] = value
    if figures:
        terminalreporter.write_sep("-", "reliability figures")
        for key, value in figures.items():
            terminalreporter.write_line(f"{key}: {value}")
