"""SIGKILL this process at the N-th mutating file-system call, or just count them; or
at the first call that matches a predicate (``kill_when``).

The durable primitives call ``os.link``, ``os.rename``, ``os.write``, ``os.fsync``, ...
through the ``os`` module at call time, so wrapping those attributes sees every call
without touching durably. The kill happens on *entering* the N-th call (like
``strace -e inject=...:signal=SIGKILL:when=N``): that call never happens, and nothing
after it (no ``finally``, no ``atexit``) runs.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from typing import Any

HOOKED = ("link", "rename", "replace", "write", "fsync", "fdatasync", "mkdir", "unlink", "rmdir", "utime")

REAL: dict[str, Callable[..., Any]] = {name: getattr(os, name) for name in HOOKED}
_state: dict[str, Any] = {"armed": False, "count": 0, "kill_at": 0, "trace": None, "when": None}
Predicate = Callable[[str, tuple[Any, ...], dict[str, Any]], bool]
"""(call name, its arguments, its keyword arguments) -> kill on entering it?"""


def _wrap(name: str) -> Callable[..., Any]:
    real = REAL[name]

    def hooked(*args: Any, **kwargs: Any) -> Any:
        when = _state["when"]
        if when is not None and when(name, args, kwargs):
            _state["when"] = None
            os.kill(os.getpid(), signal.SIGKILL)
        if _state["armed"]:
            _state["count"] += 1
            if _state["trace"] is not None:
                _state["trace"].append(name)
            if _state["count"] == _state["kill_at"]:
                os.kill(os.getpid(), signal.SIGKILL)
        return real(*args, **kwargs)

    hooked.__name__ = name
    return hooked


def full_path(path: Any, dir_fd: int | None = None) -> str:
    """The absolute path an ``os`` call names: ``path`` relative to ``dir_fd`` when one is
    given (durably reaches the directories of a root through descriptors), else to the
    working directory."""
    name: str = os.fspath(path)
    if dir_fd is None or os.path.isabs(name):
        return os.path.abspath(name)
    return os.path.join(os.readlink(f"/proc/self/fd/{dir_fd}"), name)


def fd_path(fd: int) -> str:
    """The path of an open descriptor ("" if it has none)."""
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return ""


def paths_of(name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> list[str]:
    """The absolute paths a hooked call names: source first (a written or synced
    descriptor's file, a linked or renamed source), then the destination."""
    if name in ("write", "fsync", "fdatasync"):
        return [fd_path(args[0])]
    if name in ("link", "rename", "replace"):
        return [
            full_path(args[0], kwargs.get("src_dir_fd")),
            full_path(args[1], kwargs.get("dst_dir_fd")),
        ]
    return [full_path(args[0], kwargs.get("dir_fd"))] if args else []


def kill_when(predicate: Predicate | None) -> None:
    """SIGKILL this process on entering the first hooked call for which ``predicate``
    is true (None: never); independent of the counting of ``arm``."""
    _state["when"] = predicate


def install() -> None:
    """Replace the ``os`` functions with counting wrappers (disarmed)."""
    for name in HOOKED:
        setattr(os, name, _wrap(name))


def arm(kill_at: int = 0, *, trace: list[str] | None = None) -> None:
    """Start counting from zero; SIGKILL at call ``kill_at`` (0: never)."""
    _state.update(armed=True, count=0, kill_at=kill_at, trace=trace)


def disarm() -> int:
    """Stop counting; return how many calls were counted since ``arm``."""
    _state["armed"] = False
    return int(_state["count"])
