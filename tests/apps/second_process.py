"""A second process executing runs that the test process triggers and reads: its jobs
and its command line (the multi-process tests of runs, steps and events).

Both the test process and the child import this module as `apps.second_process`, so
the job definitions (and pickled values) are the same on both sides. Children run
`main(["COMMAND", "ROOT", ...])` (`apps.children.start_python`).

Commands: ``process ROOT`` (process runs until idle), ``cancel ROOT RUN_ID``.
"""

from __future__ import annotations

import os
import pickle
import sys
import time
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any
from uuid import UUID

from pydantic import BaseModel

import durably
from durably import Step, define_job

from .cli_app import FAIL  # its step "explode" raises RuntimeError(payload.message)


class WorkIn(BaseModel):
    """Input of the multi-process jobs: a directory for their side files."""

    workdir: str
    value: str = ""


class Point(BaseModel):
    x: int
    y: int
    label: str = "p"


WHEN = datetime(2024, 1, 2, 3, 4, 5, 123456, tzinfo=UTC)


def _touch_count(workdir: Path, name: str) -> None:
    """Append one line to `calls-<name>`: the number of lines is the number of calls."""
    with (workdir / f"calls-{name}").open("a") as f:
        f.write("x\n")


def calls(workdir: Path, name: str) -> int:
    """How many times the step function `name` was called (see `_touch_count`)."""
    path = workdir / f"calls-{name}"
    return len(path.read_text().splitlines()) if path.exists() else 0


def _crash_once(workdir: Path) -> str:
    """Kill this process the first time it is called (hard exit, no cleanup)."""
    marker = workdir / "crashed"
    if not marker.exists():
        marker.write_text("1")
        os._exit(17)
    return "survived"


def _fidelity(step: Step, payload: WorkIn) -> dict[str, Any]:
    wd = Path(payload.workdir)

    def json_value():  # type: ignore[no-untyped-def]
        _touch_count(wd, "json")
        return {"a": [1, 2.5, "x", None, True], "b": {"nested": -3}}

    def annotated_datetime() -> datetime:
        _touch_count(wd, "annotated-datetime")
        return WHEN

    def returns_datetime():  # type: ignore[no-untyped-def]
        _touch_count(wd, "returns-datetime")
        return WHEN

    def model() -> Point:
        _touch_count(wd, "model")
        return Point(x=1, y=2)

    def returns_model():  # type: ignore[no-untyped-def]
        _touch_count(wd, "returns-model")
        return Point(x=3, y=4, label="q")

    def pair() -> tuple[int, str]:
        _touch_count(wd, "tuple")
        return (1, "a")

    def models() -> list[Point]:
        _touch_count(wd, "list-of-models")
        return [Point(x=5, y=6), Point(x=7, y=8)]

    def day() -> date:
        _touch_count(wd, "date")
        return date(2024, 2, 29)

    def uuid() -> UUID:
        _touch_count(wd, "uuid")
        return UUID("12345678-1234-5678-1234-567812345678")

    def decimal() -> Decimal:
        _touch_count(wd, "decimal")
        return Decimal("1.10")

    def none() -> None:
        _touch_count(wd, "none")

    values = {
        "json": step.run("json", json_value),
        "annotated-datetime": step.run("annotated-datetime", annotated_datetime),
        "returns-datetime": step.run("returns-datetime", returns_datetime, returns=datetime),
        "model": step.run("model", model),
        "returns-model": step.run("returns-model", returns_model, returns=Point),
        "tuple": step.run("tuple", pair),
        "list-of-models": step.run("list-of-models", models),
        "date": step.run("date", day),
        "uuid": step.run("uuid", uuid),
        "decimal": step.run("decimal", decimal),
        "none": step.run("none", none),
    }
    execution = len(list(wd.glob("values-*.pkl"))) + 1
    (wd / f"values-{execution}.pkl").write_bytes(pickle.dumps(values))
    step.run("crash", lambda: _crash_once(wd))
    return {"executions": execution}


FIDELITY = define_job(name="fidelity", input=WorkIn, run=_fidelity)


def _echo(step: Step, payload: WorkIn) -> dict[str, Any]:
    value = step.run("echo", lambda: payload.value)
    return {"echo": value, "pid": os.getpid()}


ECHO = define_job(name="echo", input=WorkIn, run=_echo)


def _gated(step: Step, payload: WorkIn) -> dict[str, bool]:
    """Report progress until the file `gate` appears in workdir, then finish one step."""
    gate = Path(payload.workdir) / "gate"
    deadline = time.monotonic() + 60
    i = 0
    while not gate.exists():
        i += 1
        step.progress(i)
        if time.monotonic() > deadline:
            raise RuntimeError("gate never opened")
        time.sleep(0.02)
    step.run("after-gate", lambda: "ok")
    return {"ok": True}


GATED = define_job(name="gated", input=WorkIn, run=_gated)


def _cancellable(step: Step, payload: WorkIn) -> None:
    """Wait on the step signal; record whether it was set and what `step.run` raised."""
    wd = Path(payload.workdir)

    def wait() -> bool:
        (wd / "waiting").write_text("1")
        was_set = step.signal.wait(30)
        (wd / "signal").write_text(str(was_set))
        return was_set

    try:
        # The cancelled step's result is not stored, so `run` itself may raise here.
        step.run("wait", wait)
        step.run("after", lambda: "should not run")
    except durably.CancelledError:
        (wd / "next-step").write_text("CancelledError")
        raise
    (wd / "next-step").write_text("returned")


CANCELLABLE = define_job(name="cancellable", input=WorkIn, run=_cancellable)

ALL_JOBS: list[durably.JobDefinition[Any, Any]] = [FIDELITY, ECHO, FAIL, GATED, CANCELLABLE]


def make(root: str | Path, **options: Any) -> durably.Durably:
    """The instance every process uses for these jobs."""
    options.setdefault("fsync", False)
    options.setdefault("polling_interval", 0.05)
    return durably.Durably(root, jobs=ALL_JOBS, **options)


def main(argv: list[str]) -> None:
    """``COMMAND ROOT [ARGS]``: ``process ROOT`` or ``cancel ROOT RUN_ID``."""
    command, root, *rest = argv
    instance = make(root)
    try:
        if command == "process":
            count = instance.process_until_idle()
            print(count)
        elif command == "cancel":
            instance.cancel(rest[0])
        else:
            sys.exit(f"unknown command {command!r}")
    finally:
        instance.stop()
