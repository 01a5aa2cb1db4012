"""What the child apps share: event lines that survive a SIGKILL, gates, another host.

Children log what they did (a step's execution, a gate reached) by appending one line
to a file with ``O_APPEND``: concurrent writers never interleave, and the order of the
lines is the order of the events, across processes (one machine, one file). The write
goes through the real ``os.write``, so ``killhook`` never counts it as durably's.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from . import killhook


def append_line(path: str | Path, line: str, *, sync: bool = True) -> None:
    """Append one line to ``path`` (``O_SYNC`` unless ``sync=False``: it survives a
    SIGKILL either way, and a power cut too with ``O_SYNC``)."""
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | (os.O_SYNC if sync else 0)
    fd = os.open(path, flags, 0o600)
    try:
        killhook.REAL["write"](fd, line.encode() + b"\n")
    finally:
        os.close(fd)


def wait_for_file(path: str | Path, timeout: float = 120.0) -> bool:
    """Block until ``path`` exists (the test opens a gate by creating it); False if it
    did not within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.005)
    return True


def pose_as_other_host(name: str) -> None:
    """Make this process look like a worker on host ``name`` sharing the root.

    The store compares ``head["host"]`` with ``durably._locks.HOST``; and another host's
    kernel does not share our record locks, so lock paths are mapped to this host's own
    files (cross-host exclusion must come from the files, not from locks).
    """
    from durably import _locks  # noqa: PLC0415

    _locks.HOST = name
    # lock() is left alone: it calls the mapped try_lock. The notes beside a lock are
    # mapped with it (each "host" keeps its own).
    for fn_name in ("try_lock", "unlock", "held_here", "is_locked_elsewhere", "read_note", "write_note"):
        real = getattr(_locks, fn_name)

        def mapped(path: str, *args: Any, _real: Any = real, **kwargs: Any) -> Any:
            return _real(f"{path}@{name}", *args, **kwargs)

        setattr(_locks, fn_name, mapped)
