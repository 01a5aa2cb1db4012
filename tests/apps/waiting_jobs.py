"""Jobs that wait, for the crash tests of tests/test_waiting_crash.py: a parent that
sleeps in the worker, waits for a signal and invokes a child whose step blocks on a
gate. Every step body appends a line to ``$WAIT_EVENTS`` (it survives a SIGKILL)."""

from __future__ import annotations

import os
from typing import Any

import pydantic

from durably import Durably, define_job

from .common import append_line, wait_for_file


class In(pydantic.BaseModel):
    n: int = 0


def event(line: str) -> None:
    append_line(os.environ["WAIT_EVENTS"], line)


@define_job(name="kid", input=In, output=int)
def kid(step: Any, p: In) -> int:
    def work() -> int:
        event("kid")
        wait_for_file(os.environ["WAIT_GATE"])
        return p.n * 2

    return int(step.run("work", work))


@define_job(name="waiter", input=In, output=dict)
def waiter(step: Any, p: In) -> dict[str, Any]:
    step.run("a", lambda: event("a"))
    step.sleep("nap", 1.5)  # short: spent in the worker
    step.run("b", lambda: event("b"))
    approval = step.wait_for_signal("go")
    doubled = step.invoke("child", kid, {"n": 21})
    step.run("c", lambda: event("c"))
    return {"approval": approval, "doubled": doubled}


durably = Durably(jobs=[waiter, kid], polling_interval=0.05, fsync=True)


@define_job(name="approve", input=In, output=dict)
def approve(step: Any, p: In) -> dict[str, Any]:
    data = step.wait_for_signal("go")
    step.run("after", lambda: event("after"))
    return {"data": data}


sleepy = Durably(jobs=[approve], polling_interval=600, fsync=False)
"""Polls every ten minutes: only a doorbell wakes it in time (tests/test_doorbell.py)."""
