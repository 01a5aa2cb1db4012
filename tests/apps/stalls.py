"""Child side of the stalled-owner, cross-host key, damaged-record and store-error tests
(``test_rel_stalled_owners.py``, ``test_rel_damaged_records.py``, ``test_rel_store_errors.py``).

Children are forked by the fork server (``zygote``) and run ``worker``. Step bodies
append one line per event to ``WORKDIR/exec.log`` with ``O_APPEND|O_SYNC`` (``who run_id
k start|end``): the order of the lines is the order of the events, across processes and
hosts (one machine, one file).
Worker A may stop itself (SIGSTOP) inside a step, between two steps, or at the publish of
the run's end; the test resumes it with SIGCONT.
"""

from __future__ import annotations

import errno
import os
import signal
import time
from functools import partial
from pathlib import Path
from typing import Any

from pydantic import BaseModel

import durably
from durably import Step, define_job

from . import fault_server
from .common import append_line, wait_for_file

WORKDIR = ""  # set by each child: its events are logged there
WHO = "?"
STOP: dict[str, str] = {}
ARMED: list[int] = []


class StallIn(BaseModel):
    steps: int = 4
    stop_at: int = -1  # the step where worker A stops itself (see ``stop``)
    stop: str = ""  # "in": inside the body; "between": after it returned; "end": at the end
    watch_signal: bool = False  # after SIGCONT, log whether step.signal gets set (10 s)
    ignore_at: int = -1  # this step ignores step.signal: it runs on for ``hold`` seconds
    hold: float = 0.0  # ... after WORKDIR/cancelled exists
    gate_at: int = -1  # this step waits for WORKDIR/gate
    delay: float = 0.0  # every step body sleeps this long
    size: int = 0  # bytes of padding in each step's value
    eio_at: int = -1  # under fiu-run: the checkpoint write of this step fails once with EIO


def log_line(name: str, line: str) -> None:
    if not WORKDIR:  # the test process itself: nothing to log
        return
    append_line(os.path.join(WORKDIR, name), line)


def events(workdir: str | Path) -> list[tuple[str, str, int, str]]:
    """(who, run id, k, "start" or "end") of every step event logged in ``workdir``."""
    path = Path(workdir, "exec.log")
    out = []
    for line in path.read_text().splitlines() if path.exists() else []:
        who, run_id, k, what = line.split()
        out.append((who, run_id, int(k), what))
    return out


def _wait_file(name: str, timeout: float = 60.0) -> None:
    wait_for_file(os.path.join(WORKDIR, name), timeout)


def _stop_self(where: str) -> None:
    log_line("stopped", where)
    os.kill(os.getpid(), signal.SIGSTOP)


def _watch_signal(step: Step) -> None:
    log_line("signal.log", f"{WHO} {step.signal.wait(10)}")


def _body(step: Step, p: StallIn, k: int) -> dict[str, Any]:
    log_line("exec.log", f"{WHO} {step.run_id} {k} start")
    if WHO == "A" and p.stop == "in" and k == p.stop_at:
        _stop_self("in")
        if p.watch_signal:
            _watch_signal(step)
    if k == p.ignore_at:
        _wait_file("cancelled")
        deadline = time.monotonic() + p.hold
        while time.monotonic() < deadline:  # step.signal is ignored on purpose
            time.sleep(0.01)
    if k == p.gate_at:
        log_line("exec.log", f"{WHO} {step.run_id} {k} blocked")
        _wait_file("gate")
    if p.delay:
        time.sleep(p.delay)
    log_line("exec.log", f"{WHO} {step.run_id} {k} end")
    if k == p.eio_at and not ARMED:
        ARMED.append(k)  # the next write() of this thread: the append of this checkpoint
        fault_server.fiu_fail_nth("posix/io/rw/write", 1, errno.EIO, main_only=True)
    return {"v": f"{WHO}-{k}", "pad": "x" * p.size}


def _stall_job(step: Step, p: StallIn) -> dict[str, Any]:
    values = []
    for k in range(p.steps):
        if WHO == "A" and p.stop == "between" and k == p.stop_at + 1:
            _stop_self("between")
            if p.watch_signal:
                _watch_signal(step)
        try:
            values.append(step.run(f"s{k}", partial(_body, step, p, k))["v"])
        except BaseException as exc:
            log_line("raised.log", f"{WHO} s{k} {type(exc).__name__}")
            raise
    if WHO == "A" and p.stop == "end":
        STOP["at"] = "end"  # the next state file this process links: the run's end
    return {"values": values, "by": WHO}


STALL = define_job(name="stall", input=StallIn, run=_stall_job)
STALL_B = define_job(name="stall-b", input=StallIn, run=_stall_job)
JOBS = {"stall": STALL, "stall-b": STALL_B}


def expected_steps(steps: int) -> list[str]:
    return [f"s{k}" for k in range(steps)]


def make(root: str, jobs: list[str] | None = None, **options: Any) -> durably.Durably:
    options.setdefault("fsync", False)
    options.setdefault("polling_interval", 0.02)
    options.setdefault("preserve_steps", True)
    return durably.Durably(root, jobs=[JOBS[j] for j in (jobs or list(JOBS))], **options)


def _install_end_stop() -> None:
    """SIGSTOP this process on entering the ``link()`` of a state file once armed."""
    real = os.link

    def link(src: Any, dst: Any, *args: Any, **kwargs: Any) -> None:
        if STOP.get("at") == "end" and os.path.basename(os.fspath(dst)).startswith("s."):
            STOP.clear()
            _stop_self("end")
        real(src, dst, *args, **kwargs)

    os.link = link


def worker(
    root: str,
    workdir: str,
    who: str,
    lease: float,
    renew: float,
    once: bool = False,
    host: str | None = None,
    jobs: list[str] | None = None,
    preserve_steps: bool = True,
    fsync: bool = False,
) -> None:
    """Execute runs: with ``once``, until one was claimed and executed (or the attempt
    raised); else until
    ``WORKDIR/stop`` exists and nothing is claimable. ``host``: pose as a worker of that
    host (through its own bindfs view of the root, so no record lock is shared).
    Worker errors are appended to ``errors-<who>.log``."""
    global WORKDIR, WHO
    WORKDIR, WHO = workdir, who
    if host is not None:
        import durably._locks  # noqa: PLC0415 - as fault_server.work does

        durably._locks.HOST = host
    _install_end_stop()
    d = make(
        root,
        jobs,
        lease_duration=lease,
        lease_renew_interval=renew,
        preserve_steps=preserve_steps,
        fsync=fsync,
    )
    d.on("worker:error", lambda ev: log_line(f"errors-{who}.log", f"{ev.error}".replace("\n", " ")))
    Path(workdir, f"ready-{who}").write_text("1")
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            ran = d.process_one()
        except durably.DurablyError as exc:  # a claim or an end met a store error: retry
            log_line(f"errors-{who}.log", f"process_one: {exc}".replace("\n", " "))
            if once:
                break
            ran = False
        if ran and once:
            break
        if not ran:
            if not once and os.path.exists(os.path.join(workdir, "stop")) and not d.process_until_idle():
                break
            time.sleep(0.01)
    Path(workdir, f"done-{who}").write_text("1")
