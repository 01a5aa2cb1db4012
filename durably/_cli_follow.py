"""Following runs and workers from the command line: ``trigger --wait``, ``logs --follow``
and ``durably workers``."""

from __future__ import annotations

import sys
import time
from datetime import UTC, datetime
from typing import Any

from . import _workers as workers
from ._cli_output import ProgressBar, cell_width, fit, json_text, log_line, num, one_line, span, when
from ._durably import Durably, runtime_of
from ._errors import NotFoundError
from ._models import LogEntry, RunStatus
from ._tail import RunTail

NO_WORKER_AFTER = 3.0
"""Seconds ``trigger --wait`` waits for a pending run before it looks for a live worker."""


def wait(durably: Durably, run_id: str, timeout: float | None, *, app: str) -> int:
    """Follow a run to its end from its first record, so a fast run still shows its logs.

    A run still pending after :data:`NO_WORKER_AFTER` seconds with no live worker serving
    its job gets a warning; Ctrl-C stops waiting (the run goes on) and says how to follow it.
    """
    bar = ProgressBar(sys.stderr)
    tail = RunTail(runtime_of(durably).store, run_id)
    tail.seen = 0
    started = time.monotonic()
    deadline = None if timeout is None else started + timeout
    looked = False
    try:
        while True:
            state = tail.poll(on_progress=bar.progress, on_log=bar.log)
            if state is None:
                raise NotFoundError(f"Run not found: {run_id} (deleted while waiting)", run_id=run_id)
            if state.status in ("completed", "failed", "cancelled"):
                break
            if not looked and time.monotonic() - started >= NO_WORKER_AFTER:
                looked = True
                if state.status == "pending":
                    _warn_without_worker(durably, state.record.job_name, app)
            if deadline is not None and time.monotonic() >= deadline:
                print(
                    f"durably: run {run_id} is still {state.status} after {num(timeout or 0)}s",
                    file=sys.stderr,
                )
                return 1
            time.sleep(0.05)
    except KeyboardInterrupt:
        bar.close()
        print(
            f"\ndurably: stopped waiting; run {run_id} goes on. Follow it with: "
            f"durably logs {run_id} --follow --root {durably.root}",
            file=sys.stderr,
        )
        return 130
    finally:
        bar.close()
    run = durably.get_run(run_id)
    if run is None:
        raise NotFoundError(f"Run not found: {run_id} (deleted while waiting)", run_id=run_id)
    if run.status is not RunStatus.COMPLETED:
        return ended(durably, run_id, "durably")
    print(json_text(run.output), flush=True)
    return 0


def _warn_without_worker(durably: Durably, job_name: str, app: str) -> None:
    if workers.serving(durably.root, job_name):
        return
    print(
        f"durably: no live worker serves job {job_name!r} on {durably.root}; the run waits "
        f"until one starts (durably worker {app} --root {durably.root})",
        file=sys.stderr,
        flush=True,
    )


def follow_logs(durably: Durably, run_id: str) -> int:
    """``durably logs --follow``: print logs as any process writes them, then the end."""
    durably.get_logs(run_id)  # NotFoundError for an unknown run
    tail = RunTail(runtime_of(durably).store, run_id)
    tail.seen = 0

    def show(entry: LogEntry) -> None:
        print(log_line(entry), flush=True)

    while True:
        state = tail.poll(on_log=show)
        if state is None:
            print(f"durably logs: run {run_id} was deleted", file=sys.stderr)
            return 1
        if state.status in ("completed", "failed", "cancelled"):
            return ended(durably, run_id, "durably logs")
        time.sleep(0.2)


def ended(durably: Durably, run_id: str, prog: str) -> int:
    """Say how a followed run ended, on stderr; 0 only when it completed."""
    run = durably.get_run(run_id)
    if run is None:
        print(f"{prog}: run {run_id} was deleted", file=sys.stderr)
        return 1
    if run.status is RunStatus.FAILED:
        print(f"{prog}: run {run_id} failed: {one_line(run.error or '')}", file=sys.stderr)
        return 1
    if run.status is RunStatus.CANCELLED:
        print(f"{prog}: run {run_id} was cancelled", file=sys.stderr)
        return 1
    print(f"{prog}: run {run_id} completed", file=sys.stderr)
    return 0


def print_workers(durably: Durably, *, as_json: bool) -> int:
    """``durably workers``: the live worker processes of a root."""
    live = durably.get_workers()
    if as_json:
        print(json_text([w.as_dict() for w in live], indent=True))
        return 0
    if not live:
        print("no live workers", file=sys.stderr)
        return 0
    now = datetime.now(UTC)
    rows: list[tuple[Any, ...]] = [
        (
            w.host,
            w.pid,
            when(w.started_at),
            span((now - w.seen_at).total_seconds()) + " ago",
            " ".join(w.running) or "-",
            ", ".join(w.jobs),
        )
        for w in live
    ]
    heads = ("HOST", "PID", "STARTED", "SEEN", "RUNNING", "JOBS")
    widths = [max(len(h), *(cell_width(str(row[i])) for row in rows)) for i, h in enumerate(heads)]
    print("  ".join(h.ljust(w) for h, w in zip(heads, widths, strict=True)).rstrip())
    for row in rows:
        print("  ".join(fit(str(c), w) for c, w in zip(row, widths, strict=True)).rstrip())
    return 0
