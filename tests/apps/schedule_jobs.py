"""A scheduled job run by real ``durably worker`` processes that share a clock
(tests/test_schedules_processes.py).

``FileClock`` reads the time (epoch seconds) from the file named by ``$SCHED_CLOCK``, so
the test moves the time of every worker process at once by writing that file. The job
``tick`` has one step, which appends ``"<run id> <idempotency key> <pid>"`` to
``$SCHED_EVENTS`` (``O_SYNC``: it survives a SIGKILL), so the test counts executions.

A worker process started with ``$SCHED_KILL`` set installs ``killhook`` and SIGKILLs
itself on entering the first file-system call that matches that point (``POINTS``) of
firing the tick ``$SCHED_TICK`` (ISO UTC, as stored), after creating ``$SCHED_ONCE``; a
process started when that file exists does not kill. With ``$SCHED_HOST`` set, the
process poses as a worker of that other host (``common.pose_as_other_host``). Nothing of
this is in durably.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pydantic

from durably import Durably, define_job
from durably._layout import name_hash

from . import killhook
from .common import append_line, pose_as_other_host

SCHEDULE = "every-minute"


class FileClock:
    """The time written in a file, shared by every process that reads it (the system's
    time while the variable is not set)."""

    def __init__(self, path_var: str = "SCHED_CLOCK") -> None:
        self.path_var = path_var

    def now(self) -> datetime:
        path = os.environ.get(self.path_var)
        if not path:  # imported by the test before it set the clock up
            return datetime.now(UTC)
        with open(path) as f:
            return datetime.fromtimestamp(float(f.read()), UTC)


def set_time(path: str | os.PathLike[str], moment: datetime) -> None:
    """Move the shared clock (atomically: a reader sees the old time or the new one)."""
    tmp = f"{os.fspath(path)}.tmp"
    with open(tmp, "w") as f:
        f.write(repr(moment.timestamp()))
    killhook.REAL["replace"](tmp, path)


class In(pydantic.BaseModel):
    pass


def _tick(step: Any, payload: In) -> str:
    run = durably.get_run(step.run_id)
    key = run.idempotency_key if run is not None else None
    step.run("record", lambda: append_line(os.environ["SCHED_EVENTS"], f"{step.run_id} {key} {os.getpid()}"))
    return str(key)


tick = define_job(name="tick", input=In, output=str, run=_tick)


# -- kill points ---------------------------------------------------------------------------


def _tick_iso() -> str:
    return os.environ["SCHED_TICK"]


def _fired_body(data: bytes) -> bool:
    return b'"run_id"' in data and f'"tick":"{_tick_iso()}"'.encode() in data


def _read(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError:
        return b""


def _key() -> str:
    return f"{SCHEDULE}@{_tick_iso()[:19]}Z"


def _before_the_key(call: str, args: tuple[Any, ...], kw: dict[str, Any]) -> bool:
    # the tick's idempotency key is about to be published (linked): nothing of its run exists
    if call != "link":
        return False
    return killhook.paths_of(call, args, kw)[1].endswith(os.sep + name_hash("tick", _key()) + ".json")


def _before_the_run(call: str, args: tuple[Any, ...], kw: dict[str, Any]) -> bool:
    # the key is published; the run's run.json is created, not written yet (the key names
    # a run that never appeared)
    return call == "write" and _key().encode() in bytes(args[1])


def _fired_temp(call: str, args: tuple[Any, ...], kw: dict[str, Any]) -> bool:
    # the run exists; the new .fired record's temp file is being written
    return call == "write" and _fired_body(bytes(args[1]))


def _fired_rename(call: str, args: tuple[Any, ...], kw: dict[str, Any]) -> bool:
    # the run exists, the new fired record is written to its temp file, not renamed
    if call not in ("rename", "replace"):
        return False
    src, dst = killhook.paths_of(call, args, kw)
    return _is_fired(dst) and _fired_body(_read(src))


def _is_fired(path: str) -> bool:
    return os.path.dirname(path) == os.path.join(os.environ["SCHED_ROOT"], "schedules", "fired")


_renamed: list[bool] = []


def _after_fired_rename(call: str, args: tuple[Any, ...], kw: dict[str, Any]) -> bool:
    # the fired record is replaced (it is never synced): killed at the next call after it
    if _renamed:
        return True
    if call in ("rename", "replace") and _fired_rename(call, args, kw):
        _renamed.append(True)
    return False


POINTS: dict[str, killhook.Predicate] = {
    "before-the-key-is-published": _before_the_key,
    "before-the-run-record-is-written": _before_the_run,
    "while-the-fired-record-is-written": _fired_temp,
    "before-the-fired-record-is-renamed": _fired_rename,
    "after-the-fired-record-is-renamed": _after_fired_rename,
}


def _once(predicate: killhook.Predicate) -> killhook.Predicate:
    def match(call: str, args: tuple[Any, ...], kw: dict[str, Any]) -> bool:
        if not predicate(call, args, kw):
            return False
        try:  # O_EXCL: only the first process to get here dies (open is not hooked)
            os.close(os.open(os.environ["SCHED_ONCE"], os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        except FileExistsError:
            return False
        return True

    return match


def _arm_from_environment() -> None:
    point = os.environ.get("SCHED_KILL")
    if not point or os.path.exists(os.environ["SCHED_ONCE"]):
        return
    killhook.install()
    chosen: Callable[..., bool] = POINTS[point]
    killhook.kill_when(_once(chosen))


_arm_from_environment()
if os.environ.get("SCHED_HOST"):  # a worker of another "host" (a second view of the root)
    pose_as_other_host(os.environ["SCHED_HOST"])
durably = Durably(
    jobs=[tick],
    polling_interval=0.05,
    fsync=os.environ.get("SCHED_FSYNC") == "1",
    clock=FileClock(),
)
