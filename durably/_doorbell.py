"""Doorbells: how one process tells the idle workers of its host that a run woke up.

A worker polls for runs every ``polling_interval``. When a run that waits for a signal
or a child becomes claimable because of another process (``durably signal`` from a
shell, a child run ending in another worker), waiting for that poll would delay it for
no reason. So each worker process keeps a FIFO, ``workers/<host hash>.<pid>.<tag>.bell``,
and waits on it instead of sleeping; :func:`ring` writes one byte to each bell of this
host, and the worker looks for runs at once.

A bell is a hint, never the only way a run is found: a filesystem without FIFOs, a
bell that cannot be opened or a worker on another host simply wait for the next poll.
Only FIFOs are written to (a regular file planted under a bell's name is left alone),
and a bell whose process is gone is removed by the next :func:`ring` that finds it.
"""

from __future__ import annotations

import contextlib
import errno
import os
import select
import stat
import uuid

from . import _files as files
from . import _locks as locks
from ._errors import StoreError
from ._layout import Layout, key_hash

SUFFIX = ".bell"
_OPEN = os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC


def _prefix() -> str:
    return f"{key_hash(locks.HOST)}."


class Doorbell:
    """This process's bell (one per worker loop: several ``Durably`` instances of one
    process each have their own)."""

    def __init__(self, root: str) -> None:
        self.layout = Layout(root)
        self.name = f"{_prefix()}{os.getpid()}.{uuid.uuid4().hex[:8]}{SUFFIX}"
        self.fd = -1

    def open(self) -> bool:
        """Create the bell; False (and polling only) when the root cannot have one."""
        try:
            with files.opened_dir(self.layout.root, self.layout.workers, create=True) as dir_fd:
                os.mkfifo(self.name, 0o600, dir_fd=dir_fd)
                # Read and write: the bell never reads end-of-file when no writer is open,
                # and this process can ring it itself to stop waiting.
                self.fd = os.open(self.name, os.O_RDWR | _OPEN, dir_fd=dir_fd)
        except (OSError, StoreError):
            self.close()
            return False
        return True

    def wait(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for a ring; True if rung (the rings are drained)."""
        if self.fd < 0:
            return False
        try:
            ready, _, _ = select.select([self.fd], [], [], timeout)
            if not ready:
                return False
            while os.read(self.fd, 4096):
                pass
        except BlockingIOError:
            pass
        except OSError:
            return False
        return True

    def ring_self(self) -> None:
        """End a :meth:`wait` of this process at once (from a signal handler too)."""
        if self.fd >= 0:
            with contextlib.suppress(OSError):
                os.write(self.fd, b"!")

    def close(self) -> None:
        """Remove the bell."""
        if self.fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self.fd)
            self.fd = -1
        with contextlib.suppress(OSError, StoreError):
            files.remove_path(self.layout.root, os.path.join(self.layout.workers, self.name))


def ring(root: str) -> int:
    """Ring every bell of this host's workers; return how many were rung. Never raises:
    a bell is a hint."""
    layout = Layout(root)
    prefix, rung = _prefix(), 0
    for name in files.list_dir(layout.workers):
        if not (name.startswith(prefix) and name.endswith(SUFFIX)):
            continue
        path = os.path.join(layout.workers, name)
        try:
            fd = os.open(path, os.O_WRONLY | _OPEN)
        except OSError as exc:
            if exc.errno == errno.ENXIO and not _owner_alive(name):
                with contextlib.suppress(OSError, StoreError):
                    files.remove_path(layout.root, path)  # nobody reads it any more
            continue
        try:
            if stat.S_ISFIFO(os.fstat(fd).st_mode):
                with contextlib.suppress(BlockingIOError):  # full: rung already
                    os.write(fd, b"!")
                rung += 1
        except OSError:
            pass
        finally:
            os.close(fd)
    return rung


def is_bell(rel: str) -> bool:
    """Whether a path relative to the root names a doorbell (``workers/<…>.bell``)."""
    parts = rel.split(os.sep)
    return len(parts) == 2 and parts[0] == "workers" and parts[1].endswith(SUFFIX)


def _owner_alive(name: str) -> bool:
    """Whether the process a bell of this host names exists."""
    try:
        os.kill(int(name.split(".")[1]), 0)
    except (ValueError, IndexError, ProcessLookupError):
        return False
    except PermissionError:
        return True
    return True
