"""Trace the file-system calls of an operation and check that, whenever durably
acknowledges something (a trigger or ``step.run`` returns, a run ends), everything it
wrote is on disk: each written file was fsynced after its last write, and each name it
created, linked, renamed or made (mkdir) was made durable by an fsync of its directory.

Temp files that were unlinked again, lock files (no content) and the change feed (a
hint, written without fsync by design) carry no obligation.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from durably._durably import runtime_of

from . import crash_jobs, killhook
from .crash_jobs import Tag, make

TRACE: list[tuple[str, str]] = []
_REAL_OPEN = os.open


def _fd_path(fd: int) -> str:
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return f"fd:{fd}"


def _install() -> None:
    def op_open(path: Any, flags: int, *args: Any, **kwargs: Any) -> int:
        full = killhook.full_path(path, kwargs.get("dir_fd"))
        existed = os.path.lexists(full) if isinstance(path, str) else True
        fd = _REAL_OPEN(path, flags, *args, **kwargs)
        if flags & os.O_CREAT and not existed:
            TRACE.append(("create", full))
        return fd

    def by_fd(name: str) -> Any:
        real = killhook.REAL[name]

        def traced(fd: int, *args: Any, **kwargs: Any) -> Any:
            TRACE.append((name, _fd_path(fd)))
            return real(fd, *args, **kwargs)

        return traced

    def by_dst(name: str) -> Any:
        real = killhook.REAL[name]

        def traced(src: Any, dst: Any, *args: Any, **kwargs: Any) -> Any:
            src_path = killhook.full_path(src, kwargs.get("src_dir_fd"))
            dst_path = killhook.full_path(dst, kwargs.get("dst_dir_fd"))
            result = real(src, dst, *args, **kwargs)
            if name != "link":  # the source name is gone; its obligations move to dst
                TRACE.append(("moved-from", src_path))
            TRACE.append((name, dst_path))
            return result

        return traced

    os.open = op_open
    for name in ("write", "fsync", "fdatasync"):
        setattr(os, name, by_fd(name))
    for name in ("link", "rename", "replace"):
        setattr(os, name, by_dst(name))
    real_mkdir = killhook.REAL["mkdir"]
    real_unlink = killhook.REAL["unlink"]

    def mkdir(path: Any, *args: Any, **kwargs: Any) -> None:
        full = killhook.full_path(path, kwargs.get("dir_fd"))
        real_mkdir(path, *args, **kwargs)
        TRACE.append(("mkdir", full))

    def unlink(path: Any, *args: Any, **kwargs: Any) -> None:
        full = killhook.full_path(path, kwargs.get("dir_fd"))
        real_unlink(path, *args, **kwargs)
        TRACE.append(("unlink", full))

    os.mkdir = mkdir
    os.unlink = unlink


def violations(trace: list[list[str]], root: str) -> list[str]:
    """What was acknowledged before being durable, for each ``ack`` entry of the trace."""
    root = os.path.realpath(root)
    dirty_data: dict[str, int] = {}  # file -> index of its unsynced write
    dirty_names: dict[str, int] = {}  # name -> index where it was made
    out = []
    moved: tuple[int | None, int | None] = (None, None)
    for i, (op, arg) in enumerate(trace):
        if op == "ack":
            gone = {p for o, p in trace[:i] if o == "unlink"}
            for path, j in sorted(dirty_data.items()):
                if path not in gone:
                    out.append(f"ack {arg!r}: write #{j} to {os.path.relpath(path, root)} never fsynced")
            for path, j in sorted(dirty_names.items()):
                if path not in gone:
                    out.append(
                        f"ack {arg!r}: name {os.path.relpath(path, root)} (#{j} "
                        f"{trace[j][0]}) never made durable by a directory fsync"
                    )
            continue
        if not arg.startswith(root + os.sep):
            continue
        rel = os.path.relpath(arg, root)
        if (
            rel.startswith("feed" + os.sep)
            or rel.startswith("locks" + os.sep)
            or os.path.basename(arg) == "lock"
        ):
            continue
        if op == "write":
            dirty_data.setdefault(arg, i)
        elif op in ("fsync", "fdatasync"):
            dirty_data.pop(arg, None)
            for path in [p for p in dirty_names if os.path.dirname(p) == arg]:
                dirty_names.pop(path)
        elif op == "moved-from":
            moved = (dirty_data.pop(arg, None), dirty_names.pop(arg, None))
        elif op in ("create", "mkdir", "link", "rename", "replace"):
            dirty_names[arg] = i
            if op != "link" and moved[0] is not None:
                dirty_data[arg] = moved[0]
            moved = (None, None)
        elif op == "unlink":
            dirty_data.pop(arg, None)
            dirty_names.pop(arg, None)
    return out


def trace_workload(root: str, result: str, fsync: bool) -> None:
    """Trigger a keyed 3-step run and execute it, recording acks among the traced calls."""
    crash_jobs.WORKDIR = os.path.dirname(result)
    d = make(root, fsync=fsync, preserve_steps=True)
    runtime_of(d).store.ensure_ready()
    handle = d.get_job("steps")
    assert handle is not None
    d.on("step:complete", lambda e: TRACE.append(("ack", f"step.run {e.step_name}")))
    d.on("run:complete", lambda e: TRACE.append(("ack", "run end")))
    _install()
    handle.trigger(Tag(steps=3), idempotency_key="k", concurrency_key="c")
    TRACE.append(("ack", "trigger"))
    d.process_one()
    TRACE.append(("ack", "process_one"))
    pending = handle.trigger(Tag(steps=1), concurrency_key="c")
    TRACE.append(("ack", "second trigger"))
    d.cancel(pending.id)
    TRACE.append(("ack", "cancel"))
    d.retrigger(pending.id)
    TRACE.append(("ack", "retrigger"))
    for name in killhook.HOOKED:
        setattr(os, name, killhook.REAL[name])
    os.open = _REAL_OPEN
    Path(result).write_text(json.dumps(TRACE))
