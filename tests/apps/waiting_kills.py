"""Jobs that wait, run by real ``durably worker`` processes that SIGKILL themselves at one
chosen point of a wait (tests/test_waiting_crash.py).

One job per kind of wait: ``napper`` sleeps, ``retrier`` retries a step that fails once,
``waiter`` waits for a signal, ``parent`` invokes ``kid``. The instance uses a clock of
its own (the system's time, but not the default clock), so every wait, however short,
releases the worker: the run's wait state is published and its marker moves to
``wait/``, as for a wait of days. Every step body appends a line to ``$WAITK_EVENTS``
(``O_SYNC``: it survives the kill), so the test counts executions.

A worker process started with ``$WAITK_KILL`` set installs ``killhook`` and SIGKILLs
itself on entering the first file-system call that matches that point (``POINTS``) for
the run ``$WAITK_RUN``, after creating ``$WAITK_ONCE``; a process started when that file
exists (the supervisor's replacement for the killed one) does not kill. Nothing of this
is in durably: the hook wraps the ``os`` functions durably calls.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pydantic

from durably import Durably, JobDefinition, Retry, define_job

from . import killhook
from .common import append_line


class In(pydantic.BaseModel):
    n: int = 21


class WallClock:
    """The system's time through a clock of the instance's own: every wait releases the
    worker (with the default clock, waits of up to 2 s are spent inside it)."""

    def now(self) -> datetime:
        return datetime.now(UTC)


def event(line: str) -> None:
    append_line(os.environ["WAITK_EVENTS"], line)


def events() -> list[str]:
    try:
        with open(os.environ["WAITK_EVENTS"]) as f:
            return f.read().splitlines()
    except FileNotFoundError:
        return []


@define_job(name="napper", input=In, output=str)
def napper(step: Any, p: In) -> str:
    step.run("a", lambda: event("napper a"))
    step.sleep("nap", 0.2)
    step.run("b", lambda: event("napper b"))
    return "rested"


def _flaky() -> int:
    first = "retrier attempt" not in events()
    event("retrier attempt")
    if first:
        raise RuntimeError("the first attempt fails")
    return 7


@define_job(name="retrier", input=In, output=int)
def retrier(step: Any, p: In) -> int:
    value = int(step.run("flaky", _flaky, retry=Retry(2, delay=0.2, jitter=False)))
    step.run("after", lambda: event("retrier after"))
    return value


@define_job(name="waiter", input=In, output=dict)
def waiter(step: Any, p: In) -> dict[str, Any]:
    step.run("a", lambda: event("waiter a"))
    data = step.wait_for_signal("go")
    step.run("got", lambda: event(f"waiter got {json.dumps(data, sort_keys=True)}"))
    return {"data": data}


@define_job(name="kid", input=In, output=int)
def kid(step: Any, p: In) -> int:
    def work() -> int:
        event("kid work")
        return p.n * 2

    return int(step.run("work", work))


@define_job(name="parent", input=In, output=int)
def parent(step: Any, p: In) -> int:
    doubled = int(step.invoke("child", kid, {"n": p.n}))
    step.run("after", lambda: event("parent after"))
    return doubled


JOBS: list[JobDefinition[Any, Any]] = [napper, retrier, waiter, kid, parent]
EXPECTED_EVENTS: dict[str, list[str]] = {
    "napper": ["napper a", "napper b"],
    "retrier": ["retrier attempt", "retrier attempt", "retrier after"],
    "waiter": ["waiter a", 'waiter got {"by": "test"}'],
    "parent": ["kid work", "parent after"],
}
"""Every step body's executions, in order, when each completed step ran once."""
OUTPUTS: dict[str, Any] = {"napper": "rested", "retrier": 7, "waiter": {"data": {"by": "test"}}, "parent": 42}


# -- kill points ---------------------------------------------------------------------------


def _in(path: str, *parts: str) -> bool:
    return os.path.dirname(path) == os.path.join(os.environ["WAITK_ROOT"], *parts)


def _run_file(path: str, name: str) -> bool:
    """``path`` is file ``name`` of the run under test."""
    return path.endswith(os.path.join(os.sep, os.environ["WAITK_RUN"], name))


def _publish_wait(call: str, args: tuple[Any, ...], kw: dict[str, Any]) -> bool:
    # s.1 is the first claim; the first wait of each job is s.2
    return call == "link" and _run_file(killhook.paths_of(call, args, kw)[1], "s.2")


def _park(call: str, args: tuple[Any, ...], kw: dict[str, Any]) -> bool:
    if call != "rename":
        return False
    src = killhook.paths_of(call, args, kw)[0]
    return _in(src, "queue") and os.path.basename(src).startswith(os.environ["WAITK_RUN"])


def _wake(prefix: str) -> killhook.Predicate:
    def match(call: str, args: tuple[Any, ...], kw: dict[str, Any]) -> bool:
        if call != "rename":
            return False
        src = os.path.basename(killhook.paths_of(call, args, kw)[0])
        rest = src.split(".", 1)
        return (
            _in(killhook.paths_of(call, args, kw)[0], "wait")
            and (rest[0] == "~") == (prefix == "~")
            and len(rest) == 2
            and rest[1].startswith(os.environ["WAITK_RUN"])
        )

    return match


def _first_write(name: str, kind: bytes | None = None) -> killhook.Predicate:
    def match(call: str, args: tuple[Any, ...], kw: dict[str, Any]) -> bool:
        return (
            call == "write"
            and _run_file(killhook.paths_of(call, args, kw)[0], name)
            and (kind is None or kind in bytes(args[1]))
        )

    return match


def _child_run_json(call: str, args: tuple[Any, ...], kw: dict[str, Any]) -> bool:
    path = killhook.paths_of(call, args, kw)[0]
    return call == "write" and path.endswith(os.sep + "run.json") and not _run_file(path, "run.json")


def _child_marker(call: str, args: tuple[Any, ...], kw: dict[str, Any]) -> bool:
    if call != "unlink":
        return False
    path = killhook.paths_of(call, args, kw)[0]
    return _in(path, "queue") and not os.path.basename(path).startswith(os.environ["WAITK_RUN"])


POINTS: dict[str, killhook.Predicate] = {
    # the wait's start is journaled and synced; its state is not published yet
    "before-the-wait-is-published": _publish_wait,
    # the wait state is published; the marker is still in queue/ (not moved to wait/)
    "between-the-wait-and-the-marker-move": _park,
    # the wait's time came: the marker is not moved back to queue/ yet
    "as-the-time-comes": _wake("time"),
    # claimed again after the wait, before the waiting step's outcome is checkpointed
    "after-the-wake-before-the-checkpoint": _first_write("j.2"),
    # the child's key is bound and its run.json created, not yet written
    "while-the-child-is-created": _child_run_json,
    # the child run exists; the parent has not journaled that it invoked it
    "after-the-child-is-created": _first_write("j.1", b'"k":"child"'),
    # the child's end is published; its queue marker is not removed, the parent not woken
    "after-the-child-ended": _child_marker,
    # the child ended and its marker is gone; the parent's marker is still in wait/
    "before-the-parent-is-woken": _wake("~"),
}


def _once(predicate: killhook.Predicate) -> killhook.Predicate:
    def match(call: str, args: tuple[Any, ...], kw: dict[str, Any]) -> bool:
        if not predicate(call, args, kw):
            return False
        try:  # O_EXCL: only the first process to get here dies (open is not hooked)
            os.close(os.open(os.environ["WAITK_ONCE"], os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        except FileExistsError:
            return False
        return True

    return match


def _arm_from_environment() -> None:
    point = os.environ.get("WAITK_KILL")
    if not point or os.path.exists(os.environ["WAITK_ONCE"]):
        return
    killhook.install()
    chosen: Callable[..., bool] = POINTS[point]
    killhook.kill_when(_once(chosen))


_arm_from_environment()
durably = Durably(jobs=JOBS, polling_interval=0.05, fsync=True, clock=WallClock())
