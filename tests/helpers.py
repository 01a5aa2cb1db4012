"""Helpers for the behaviour suite: waiting on conditions, test jobs, snapshots of a
root, and the store below an instance. Child processes: ``apps.children``."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Literal, TypeVar

from apps.children import REPO_ROOT, TESTS_DIR
from pydantic import BaseModel

import durably
from durably import Durably
from durably._durably import runtime_of
from durably._store import FileStore

T = TypeVar("T")
__all__ = [
    "REPO_ROOT",
    "TESTS_DIR",
    "Payload",
    "Started",
    "blocking_job",
    "collect_in_thread",
    "event_types",
    "run_dir_of",
    "status_of",
    "store_of",
    "tree",
    "wait_until",
]


def wait_until(
    predicate: Callable[[], T | Literal[False] | None], timeout: float = 10.0, interval: float = 0.01
) -> T:
    """Poll `predicate` until it returns a truthy value, and return that value.

    Raises AssertionError when `timeout` seconds pass first. This waits on a condition,
    never on a fixed time.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"condition not met within {timeout} s: {predicate!r}")
        time.sleep(interval)


def tree(path: Path) -> dict[str, tuple[int, int, int, int]]:
    """Every entry under ``path`` (links not followed): size, mtime, ctime (a chmod
    changes it) and inode, to show that something wrote nothing."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(path):
        for name in dirnames + filenames:
            st = os.lstat(os.path.join(dirpath, name))
            out[os.path.relpath(os.path.join(dirpath, name), path)] = (
                st.st_size,
                st.st_mtime_ns,
                st.st_ctime_ns,
                st.st_ino,
            )
    return out


def collect_in_thread(iterable: Iterable[Any]) -> tuple[threading.Thread, list[Any]]:
    """Consume `iterable` in a daemon thread; return the thread and the growing list."""
    items: list[Any] = []

    def consume() -> None:
        for item in iterable:
            items.append(item)

    thread = threading.Thread(target=consume, daemon=True)
    thread.start()
    return thread, items


def event_types(events: Iterable[Any]) -> list[str]:
    """The `type` of each event, in order."""
    return [event.type for event in events]


# --- job builders shared by several test files ------------------------------------------


class Payload(BaseModel):
    """A small input model for test jobs."""

    value: str = ""


class Started:
    """Records which runs a blocking job has started, in order, and lets tests wait."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.values: list[str] = []
        self.active = 0
        self.max_active = 0
        self.log: list[str] = []

    def enter(self, value: str) -> None:
        with self._lock:
            self.values.append(value)
            self.active += 1
            self.max_active = max(self.max_active, self.active)
            self.log.append(f"start:{value}")

    def leave(self, value: str) -> None:
        with self._lock:
            self.active -= 1
            self.log.append(f"end:{value}")

    def count(self) -> int:
        with self._lock:
            return len(self.values)


def blocking_job(
    name: str, gate: threading.Event, started: Started | None = None
) -> durably.JobDefinition[Any, Any]:
    """A job whose single step `wait` blocks until `gate` is set, then returns the value."""

    def run(step: durably.Step, payload: Payload) -> str:
        def wait() -> str:
            if started is not None:
                started.enter(payload.value)
            try:
                if not gate.wait(30):
                    raise RuntimeError("test gate was never released")
            finally:
                if started is not None:
                    started.leave(payload.value)
            return payload.value

        return step.run("wait", wait)

    return durably.define_job(name=name, input=Payload, output=str, run=run)


def status_of(instance: durably.Durably, run_id: str) -> str | None:
    """The run's status as a plain string, or None when it does not exist."""
    run = instance.get_run(run_id)
    return None if run is None else str(run.status.value)


def store_of(d: Durably) -> FileStore:
    """The file store below an instance (for tests that damage or inspect files)."""
    store = runtime_of(d).store
    assert isinstance(store, FileStore)
    return store


def run_dir_of(d: Durably, run_id: str) -> str:
    """The directory of a run."""
    return store_of(d).layout.run_dir(run_id)
