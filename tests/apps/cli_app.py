"""The app the CLI and `durably worker` tests run: `apps.cli_app:durably` (the default
root, so `--root` or `$DURABLY_ROOT` decides).

Step functions record each call by appending one line to a per-run file opened with
O_APPEND (`record`), so a test can count how many times each step really ran, across
processes and crashes. Jobs that wait do so on files appearing in their `workdir`.
The `fail` job is also the one `apps.second_process` registers.
"""

from __future__ import annotations

import os
import time
from functools import partial
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from durably import Durably, Step, define_job

from . import common
from .common import append_line

# A lease this long proves that resuming a killed worker's run never waits for it.
LEASE = 3600.0


def record(path: Path, line: str) -> None:
    """Append one line atomically (O_APPEND: concurrent writers never interleave)."""
    append_line(path, line, sync=False)


def wait_for_file(path: Path, timeout: float = 120.0) -> None:
    """Block until `path` exists (the test opens a gate by creating it)."""
    if not common.wait_for_file(path, timeout):
        raise RuntimeError(f"gate {path.name} never opened")


class AddIn(BaseModel):
    a: int
    b: int


class AddOut(BaseModel):
    sum: int


def _add(step: Step, payload: AddIn) -> AddOut:
    step.log.info("adding", data={"a": payload.a, "b": payload.b})
    step.progress(1, 2, "half way")
    total = step.run("add", lambda: payload.a + payload.b)
    step.progress(2, 2, "done")
    step.log.warn("added")
    return AddOut(sum=total)


ADD = define_job(name="add", input=AddIn, output=AddOut, run=_add)


class FailIn(BaseModel):
    message: str = "boom"


def _boom(message: str) -> None:
    raise RuntimeError(message)


def _fail(step: Step, payload: FailIn) -> None:
    step.log.error("about to fail")
    step.run("explode", lambda: _boom(payload.message))


FAIL = define_job(name="fail", input=FailIn, run=_fail)


class StepsIn(BaseModel):
    workdir: str
    n: int = 10
    gate: str | None = None  # wait for this file before the first step
    work: int = 0  # CPU work per step (loop iterations)


def _spin(n: int) -> int:
    acc = 0
    for i in range(n):
        acc = (acc * 31 + i) % 1_000_003
    return acc


def _steps(step: Step, payload: StepsIn) -> dict[str, Any]:
    wd = Path(payload.workdir)
    calls = wd / f"calls-{step.run_id}"
    if payload.gate:
        wait_for_file(wd / payload.gate)
    total = 0

    def one(i: int) -> int:
        record(calls, f"step-{i} {os.getpid()}")
        if payload.work:
            _spin(payload.work)
        return i * i

    for i in range(payload.n):
        total += step.run(f"step-{i}", partial(one, i))
    return {"total": total, "n": payload.n}


STEPS = define_job(name="steps", input=StepsIn, run=_steps)


class GateIn(BaseModel):
    workdir: str
    name: str


def _gated(step: Step, payload: GateIn) -> dict[str, int]:
    """Announce `started-<name>` (with the pid), wait for `open-<name>`, then finish."""
    wd = Path(payload.workdir)

    def wait() -> int:
        record(wd / f"calls-{payload.name}", f"wait {os.getpid()}")
        (wd / f"started-{payload.name}").write_text(str(os.getpid()))
        wait_for_file(wd / f"open-{payload.name}")
        return os.getpid()

    def after_wait() -> int:
        record(wd / f"calls-{payload.name}", "after")
        return 1

    pid = step.run("wait", wait)
    after = step.run("after", after_wait)
    return {"pid": pid, "after": after}


GATED = define_job(name="gated", input=GateIn, run=_gated)


def _polite(step: Step, payload: GateIn) -> None:
    """Poll `step.signal`; record the time it was seen set."""
    wd = Path(payload.workdir)

    def poll() -> bool:
        (wd / f"started-{payload.name}").write_text(str(os.getpid()))
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if step.signal.wait(0.01):
                (wd / f"saw-signal-{payload.name}").write_text(repr(time.time()))
                return True
        return False

    step.run("poll", poll)
    step.run("after", lambda: record(wd / f"calls-{payload.name}", "after"))


POLITE = define_job(name="polite", input=GateIn, run=_polite)


def _stubborn(step: Step, payload: GateIn) -> None:
    """Ignore cancellation: block on a gate that never opens in the test."""
    wd = Path(payload.workdir)

    def ignore() -> None:
        (wd / f"started-{payload.name}").write_text(str(os.getpid()))
        wait_for_file(wd / f"open-{payload.name}", timeout=600)

    step.run("ignore", ignore)


STUBBORN = define_job(name="stubborn", input=GateIn, run=_stubborn)

durably = Durably(
    jobs=[ADD, FAIL, STEPS, GATED, POLITE, STUBBORN],
    fsync=False,
    polling_interval=0.05,
    lease_duration=LEASE,
    lease_renew_interval=1.0,
)

not_durably = {"a": "dict"}


class CrashIn(BaseModel):
    workdir: str


def _crash(step: Step, payload: CrashIn) -> None:
    """Kill the process in every execution (a crash loop), counting the attempts."""

    def die() -> None:
        record(Path(payload.workdir) / "crashes", str(os.getpid()))
        os._exit(3)

    step.run("die", die)


CRASH = define_job(name="crash", input=CrashIn, run=_crash)
durably.register(CRASH)
