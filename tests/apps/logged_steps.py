"""A job whose step executions are logged (``logged-steps``), and a worker process that
retries store errors: the lease, fault and hostile-input tests watch them.

``worker`` runs in a child: forked by the fork server (``zygote``), or started as
``python -m apps.call apps.logged_steps:worker JSON-KWARGS`` (under ``strace``, which
cannot attach to a forked child without root). Step executions are logged with
``O_APPEND|O_SYNC`` lines in ``WORKDIR/exec.log`` (``who run_id k``), so they survive a
SIGKILL. ``apps.probe`` runs every entry point over a root made with ``make``.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from pydantic import BaseModel

import durably
from durably import Step, define_job

from .common import append_line, pose_as_other_host

WORKDIR = ""  # set by each child: executions are logged there
WHO = "?"
GATE_WHO = ""  # the worker whose step 1 waits for WORKDIR/gate (hold=True runs only)


class StepsIn(BaseModel):
    """Input of ``logged-steps``: ``steps`` steps returning ``value_of(k, secret)``."""

    steps: int = 3
    secret: str = ""
    hold: bool = False  # step 1 of worker GATE_WHO waits for WORKDIR/gate


def log_line(name: str, line: str) -> None:
    append_line(os.path.join(WORKDIR, name), line)


def value_of(k: int, secret: str) -> dict[str, Any]:
    return {"k": k, "secret": secret}


def _logged_steps(step: Step, payload: StepsIn) -> dict[str, Any]:
    total = 0
    for k in range(payload.steps):

        def body(k: int = k) -> dict[str, Any]:
            if WORKDIR:
                log_line("exec.log", f"{WHO} {step.run_id} {k}")
                if payload.hold and k == 1 and WHO == GATE_WHO:
                    log_line("exec.log", f"{WHO} blocked {step.run_id}")
                    deadline = time.monotonic() + 60
                    while not os.path.exists(os.path.join(WORKDIR, "gate")) and time.monotonic() < deadline:
                        time.sleep(0.005)
            return value_of(k, payload.secret)

        value = step.run(f"s{k}", body)
        total += value["k"]
    return {"sum": total}


JOB = define_job(name="logged-steps", input=StepsIn, run=_logged_steps)


def expected(steps: int) -> dict[str, Any]:
    return {"sum": sum(range(steps))}


def make(root: str, **options: Any) -> durably.Durably:
    options.setdefault("fsync", True)
    options.setdefault("polling_interval", 0.02)
    options.setdefault("preserve_steps", True)
    return durably.Durably(root, jobs=[JOB], **options)


def executions(workdir: str | Path) -> list[tuple[str, str, int]]:
    """(who, run id, k) of every step execution logged in ``workdir``."""
    path = Path(workdir, "exec.log")
    out = []
    if path.exists():
        for line in path.read_text().splitlines():
            parts = line.split()
            if len(parts) == 3 and parts[2].isdigit():
                out.append((parts[0], parts[1], int(parts[2])))
    return out


def worker(
    root: str,
    workdir: str,
    who: str,
    stop: str,
    lease: float = 30.0,
    renew: float | None = None,
    host: str | None = None,
    gate_who: str = "",
) -> None:
    """Process runs until ``stop`` exists and nothing is claimable; record worker errors.

    ``host``: pose as a worker on another host (its own host name, and record locks no
    other process of this machine sees): only the files keep the two apart.
    """
    global WORKDIR, WHO, GATE_WHO
    WORKDIR, WHO, GATE_WHO = workdir, who, gate_who
    if host is not None:
        pose_as_other_host(host)
    d = make(root, lease_duration=lease, lease_renew_interval=renew or lease / 5)
    errors_path = Path(workdir, f"errors-{who}.log")

    def on_error(ev: Any) -> None:
        with errors_path.open("a") as f:
            f.write(f"{ev.context}\t{ev.error}\n")

    d.on("worker:error", on_error)
    claimed = 0
    while True:
        try:
            ran = d.process_one()
        except durably.DurablyError as exc:  # a fault met by the claim or the end: retry
            on_error(type("Ev", (), {"context": "process_one", "error": str(exc)})())
            ran = False
        claimed += ran
        if not ran:
            if os.path.exists(stop) and not d.process_until_idle():
                break
            time.sleep(0.005)
    Path(workdir, f"claimed-{who}").write_text(str(claimed))
