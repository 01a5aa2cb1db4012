"""Worker heartbeats: one small record per live worker process in ``workers/``.

Each ``durably worker`` process writes ``workers/<host hash>.<pid>.json`` when it is
ready and replaces it (temp file + rename: readers never see half a record) every
:data:`BEAT_INTERVAL` seconds with the runs it has in flight; it removes it when it exits
cleanly. A record is stale, and not listed, when its process is gone on this host or it
was not refreshed for :data:`STALE_AFTER` seconds (a host that died, a process killed
with SIGKILL elsewhere); the next worker to start removes stale records. The records
are a view for people (``durably workers``, the warning of ``trigger --wait``, the
monitor); no claim or lease depends on them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import time
from datetime import datetime
from typing import Any

from . import _doorbell as doorbell
from . import _files as files
from . import _locks as locks
from . import _records as records
from ._errors import StoreError
from ._layout import Layout, key_hash

BEAT_INTERVAL = 5.0
"""Seconds between two refreshes of a worker's record."""
STALE_AFTER = 30.0
"""A record not refreshed for this long belongs to a worker that is gone."""


@dataclasses.dataclass(frozen=True, slots=True)
class WorkerInfo:
    """One worker process as its heartbeat record describes it."""

    host: str
    pid: int
    jobs: tuple[str, ...]
    running: tuple[str, ...]
    """Ids of the runs it has in flight."""
    started_at: datetime
    seen_at: datetime
    """Its last heartbeat."""
    name: str
    """The record's file name in ``workers/``."""

    def as_dict(self) -> dict[str, Any]:
        """The worker as a JSON object."""
        return {
            "host": self.host,
            "pid": self.pid,
            "jobs": list(self.jobs),
            "running": list(self.running),
            "started_at": self.started_at,
            "seen_at": self.seen_at,
        }


def record_name(host: str, pid: int, tag: str = "") -> str:
    """The file name of a worker's record (host names are hashed, never paths; ``tag``
    tells apart the in-process workers of one process)."""
    return f"{key_hash(host)}.{pid}{'.' + tag if tag else ''}.json"


class Heartbeat:
    """The record of this process in ``workers/``: written, refreshed, removed."""

    def __init__(self, root: str, jobs: list[str], tag: str = "") -> None:
        self.layout = Layout(root)
        self.jobs = sorted(jobs)
        self.pid = os.getpid()
        self.started_at = records.now_iso()
        self.path = os.path.join(self.layout.workers, record_name(locks.HOST, self.pid, tag))

    def beat(self, running: list[str]) -> None:
        """Write the record with the runs in flight (atomically: temp file + rename).

        Raises:
            StoreError: the record could not be written.
        """
        body = records.dumps(
            {
                "v": 1,
                "host": locks.HOST,
                "pid": self.pid,
                "jobs": self.jobs,
                "running": running,
                "started_at": self.started_at,
                "at": records.now_iso(),
            }
        )
        try:
            with files.opened_dirs(self.layout.root, self.layout.tmp, self.layout.workers, create=True) as (
                tmp_fd,
                dir_fd,
            ):
                files.replace_file(tmp_fd, dir_fd, os.path.basename(self.path), body, sync=False)
        except OSError as exc:
            raise files.wrap_os_error(exc, "write the worker record", self.path) from exc

    def sweep(self) -> int:
        """Remove the records of workers that are gone (see :func:`is_live`) and of
        anything in ``workers/`` that is not a worker record or a doorbell (which
        ``_doorbell`` owns, and which must never be read: a FIFO); return how many."""
        removed = 0
        for name in files.list_dir(self.layout.workers):
            if name.endswith(doorbell.SUFFIX):
                continue
            path = os.path.join(self.layout.workers, name)
            try:
                info = parse(name, records.read_json(path))
            except StoreError:
                info = None
            if info is not None and (is_live(info) or info.pid == self.pid):
                continue
            with contextlib.suppress(StoreError):
                removed += files.remove_path(self.layout.root, path)
        return removed

    def remove(self) -> None:
        """Remove the record (a clean exit); quiet when it cannot be removed."""
        with contextlib.suppress(StoreError):
            files.remove_path(self.layout.root, self.path)


def _pid_alive(pid: int) -> bool:
    """Whether process ``pid`` of this host exists and is not a zombie (a SIGKILLed worker
    whose supervisor died too may stay one when nothing reaps it)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    try:  # Linux: the state after the command name; not a file of the root
        fd = os.open(f"/proc/{pid}/stat", os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return True
    try:
        fields = os.read(fd, 4096).rsplit(b")", 1)[-1].split()
    except OSError:
        return True
    finally:
        os.close(fd)
    return not fields or fields[0] not in (b"Z", b"X")


def parse(name: str, data: dict[str, Any] | None) -> WorkerInfo | None:
    """A worker record, or None when it is not one."""
    if data is None:
        return None
    started, seen = records.parse_time(data.get("started_at")), records.parse_time(data.get("at"))
    host, pid = data.get("host"), data.get("pid")
    jobs, running = data.get("jobs"), data.get("running")
    if not isinstance(host, str) or not isinstance(pid, int) or started is None or seen is None:
        return None
    if not isinstance(jobs, list) or not isinstance(running, list):
        return None
    return WorkerInfo(
        host=host,
        pid=pid,
        jobs=tuple(str(j) for j in jobs),
        running=tuple(str(r) for r in running),
        started_at=started,
        seen_at=seen,
        name=name,
    )


def is_live(info: WorkerInfo, now: float | None = None) -> bool:
    """Whether a worker record belongs to a live worker (see the module docstring)."""
    now = time.time() if now is None else now
    if now - info.seen_at.timestamp() > STALE_AFTER:
        return False
    return info.host != locks.HOST or _pid_alive(info.pid)


def live_workers(root: str, now: float | None = None) -> list[WorkerInfo]:
    """The live workers of a root, oldest first (stale records are left out)."""
    layout = Layout(root)
    out = []
    for name in files.list_dir(layout.workers):
        if not name.endswith(".json"):
            continue
        try:
            data = records.read_json(os.path.join(layout.workers, name))
        except StoreError:
            continue  # damaged or replaced meanwhile: not a worker to list
        info = parse(name, data)
        if info is not None and is_live(info, now):
            out.append(info)
    return sorted(out, key=lambda w: (w.started_at, w.host, w.pid))


def serving(root: str, job_name: str) -> list[WorkerInfo]:
    """The live workers that have ``job_name`` registered."""
    return [w for w in live_workers(root) if job_name in w.jobs]
