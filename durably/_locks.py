"""Same-host locks: POSIX record locks (``lockf``) with an in-process registry.

Why ``lockf`` and not ``flock`` (which the filelock package uses): a record lock belongs
to the *process*, so the kernel drops it when the process dies (the exact, instant
liveness signal the design asks for) and a child the job forks never inherits it, so a
job's long-lived subprocess cannot keep a dead worker's run locked. Record locks are
shared by all threads of a process and are dropped when *any* descriptor of the file is
closed, so every lock path is opened at most once per process, through this registry,
and stays open while any lock on it is held. A lock covers one byte of its file: a run's
``lock`` holds one lock per lease generation (byte ``g``), so the owner of a new
generation never waits for the owner of an old one, which may be alive but stalled.
Lock files are never unlinked while a root is in use. Locks never give cross-host
exclusion: that comes from publish-once files and generation checks (see _store.py).
Lock files are opened below the root through directory descriptors (``files.open_below``),
so a lock directory replaced by a symlink is refused, never followed.
"""

from __future__ import annotations

import errno
import fcntl
import os
import socket
import threading
import time

from ._errors import StoreError
from ._files import open_below, own_only, write_all

_O_FLAGS = os.O_RDWR | os.O_CREAT

HOST = socket.gethostname()
"""This machine, as records name it: a lock is proof of liveness only on the host that
took it (read at each use, so a test can pose as another host)."""

_registry_lock = threading.Lock()
_held: dict[str, tuple[int, set[int]]] = {}
"""Lock files this process has open: path -> (descriptor, bytes locked)."""


def _open(path: str, root: str) -> int:
    try:
        fd = open_below(root, path, _O_FLAGS)
    except OSError as exc:
        reason = os.strerror(exc.errno or 0)
        raise StoreError(f"cannot open lock file {path}: {reason}", path=path) from exc
    own_only(fd, 0o600)
    return fd


def try_lock(path: str, *, root: str, offset: int = 0) -> bool:
    """Take the lock on byte ``offset`` of the file at ``path`` (below ``root``) without
    waiting; False if any holder has it (even us)."""
    with _registry_lock:
        entry = _held.get(path)
        if entry is not None and offset in entry[1]:
            return False
        fd = entry[0] if entry is not None else _open(path, root)
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, offset)
        except OSError as exc:
            if entry is None:
                os.close(fd)
            if exc.errno in (errno.EACCES, errno.EAGAIN):
                return False
            raise StoreError(f"cannot lock {path}: {os.strerror(exc.errno or 0)}", path=path) from exc
        if entry is None:
            _held[path] = (fd, {offset})
        else:
            entry[1].add(offset)
        return True


def lock(path: str, *, root: str, timeout: float = 30.0) -> None:
    """Take the lock at ``path`` (below ``root``), waiting up to ``timeout`` seconds.

    Raises:
        StoreError: still held after ``timeout`` (a stopped process may hold it).
    """
    deadline = time.monotonic() + timeout
    delay = 0.0005
    while not try_lock(path, root=root):
        if time.monotonic() > deadline:
            raise StoreError(
                f"lock {path} is still held after {timeout:.0f}s; a stopped process may hold it",
                path=path,
            )
        time.sleep(delay)
        delay = min(delay * 2, 0.02)


def unlock(path: str, offset: int = 0) -> None:
    """Release a lock this process holds (no-op otherwise); the file is closed with the last."""
    with _registry_lock:
        entry = _held.get(path)
        if entry is None or offset not in entry[1]:
            return
        fd, offsets = entry
        offsets.discard(offset)
        if offsets:
            fcntl.lockf(fd, fcntl.LOCK_UN, 1, offset)
            return
        del _held[path]
    os.close(fd)


def write_note(path: str, data: bytes) -> None:
    """Replace the contents of a lock file this process holds (a copy of a small record
    kept beside the lock: readers read it with ``_files.read_bytes``). Not synced: the
    record it copies is the durable one.

    Raises:
        StoreError: the lock is not held, or the file cannot be written.
    """
    with _registry_lock:
        entry = _held.get(path)
        if entry is None:
            raise StoreError(f"cannot write lock file {path}: the lock is not held", path=path)
        try:
            os.ftruncate(entry[0], 0)
            os.lseek(entry[0], 0, os.SEEK_SET)
            write_all(entry[0], data)
        except OSError as exc:
            raise StoreError(
                f"cannot write lock file {path}: {os.strerror(exc.errno or 0)}", path=path
            ) from exc


def read_note(path: str) -> bytes:
    """The contents of a lock file this process holds, read through its own descriptor:
    opening and closing another descriptor of the file would drop this process's locks
    on it. (At most a small record; see :func:`write_note`.)

    Raises:
        StoreError: the lock is not held, or the file cannot be read.
    """
    with _registry_lock:
        entry = _held.get(path)
        if entry is None:
            raise StoreError(f"cannot read lock file {path}: the lock is not held", path=path)
        try:
            return os.pread(entry[0], 1 << 16, 0)
        except OSError as exc:
            reason = os.strerror(exc.errno or 0)
            raise StoreError(f"cannot read lock file {path}: {reason}", path=path) from exc


def held_here(path: str, offset: int | None = None) -> bool:
    """True if this process holds the lock on byte ``offset`` of ``path`` (any byte: None)."""
    with _registry_lock:
        entry = _held.get(path)
        return entry is not None and (offset is None or offset in entry[1])


def is_locked_elsewhere(path: str, *, root: str, offset: int = 0) -> bool:
    """True if another process on this host holds byte ``offset`` of ``path``; probing
    takes no lock we keep."""
    if not os.path.exists(path):
        return False
    if try_lock(path, root=root, offset=offset):
        unlock(path, offset)
        return False
    return not held_here(path, offset)
