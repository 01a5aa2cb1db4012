"""Same-host locks: POSIX record locks (``lockf``) with an in-process registry.

Why ``lockf`` and not ``flock`` (which the filelock package uses): a record lock belongs
to the *process*, so the kernel drops it when the process dies (the exact, instant
liveness signal DESIGN.md asks for) and a child the job forks never inherits it, so a
job's long-lived subprocess cannot keep a dead worker's run locked. Record locks are
shared by all threads of a process and are dropped when *any* descriptor of the file is
closed, so every lock path is opened at most once per process, through this registry.
Lock files are never unlinked while a root is in use. Locks never give cross-host
exclusion: that comes from publish-once files and generation checks (see _store.py).
Lock files are opened below the root through directory descriptors (``files.open_below``),
so a lock directory replaced by a symlink is refused, never followed.
"""

from __future__ import annotations

import errno
import fcntl
import os
import threading
import time

from ._files import StoreError, open_below, own_only

_O_FLAGS = os.O_RDWR | os.O_CREAT

_registry_lock = threading.Lock()
_held: dict[str, int] = {}


def try_lock(path: str, *, root: str) -> bool:
    """Take the lock at ``path`` (below ``root``) without waiting; False if any holder has
    it (even us)."""
    with _registry_lock:
        if path in _held:
            return False
        try:
            fd = open_below(root, path, _O_FLAGS)
        except OSError as exc:
            reason = os.strerror(exc.errno or 0)
            raise StoreError(f"cannot open lock file {path}: {reason}", path=path) from exc
        own_only(fd, 0o600)
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EACCES, errno.EAGAIN):
                return False
            raise StoreError(f"cannot lock {path}: {os.strerror(exc.errno or 0)}", path=path) from exc
        _held[path] = fd
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


def unlock(path: str) -> None:
    """Release a lock this process holds (no-op otherwise)."""
    with _registry_lock:
        fd = _held.pop(path, None)
    if fd is not None:
        os.close(fd)


def held_here(path: str) -> bool:
    """True if this process holds the lock at ``path``."""
    with _registry_lock:
        return path in _held


def is_locked_elsewhere(path: str, *, root: str) -> bool:
    """True if another process on this host holds ``path``; probing takes no lock we keep."""
    if not os.path.exists(path):
        return False
    if try_lock(path, root=root):
        unlock(path)
        return False
    return not held_here(path)
