"""Managing runs: cancel, fail from outside (timeouts), retrigger, delete, purge, and the
idle maintenance a worker does."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from . import _records as records
from ._codec import codec_for
from ._errors import ConflictError, DurablyError, NotFoundError, ValidationError
from ._events import RunCancelEvent, RunDeleteEvent, RunFailEvent, RunSignalEvent, WorkerErrorEvent
from ._ids import id_time_ms
from ._job import BatchItem
from ._models import Run
from ._queries import get_run, load, require
from ._readmodel import step_in_flight
from ._records import RunState
from ._runtime import Runtime
from ._trigger import check_text, trigger

MAINTENANCE_INTERVAL = 60.0
"""Seconds between two rounds of idle maintenance of one instance."""


def _emit_end(rt: Runtime, cls: type[RunCancelEvent] | type[RunDeleteEvent], state: RunState) -> None:
    rt.emitter.emit(
        cls(run_id=state.run_id, job_name=state.record.job_name, labels=dict(state.record.labels))
    )


def cancel(rt: Runtime, run_id: str) -> None:
    """Cancel a pending or leased run at once; its executing step's signal is set.

    Raises:
        NotFoundError: no such run. ConflictError: the run already ended.
    """
    if load(rt.store, run_id) is None:
        raise NotFoundError(f"Run not found: {run_id}", run_id=str(run_id))
    state = rt.store.cancel(run_id)
    ex = rt.keeper.get(run_id)
    if ex is not None:
        ex.abort("cancelled")
    _emit_end(rt, RunCancelEvent, state)


def fail_run(rt: Runtime, run_id: str, error: str) -> bool:
    """End a pending or leased run as failed from outside its owner (run timeouts).

    The owner is fenced like a cancel: its next step or end is refused. Returns False if
    the run had already ended.
    """
    while True:
        state = load(rt.store, run_id)
        if state is None or state.is_terminal:
            return False
        in_flight = step_in_flight(rt.store.journal(state))
        ended = rt.store.end(
            state, state.generation, records.ending("failed", error=error, failed_step=in_flight)
        )
        if ended is not None:
            ex = rt.keeper.get(run_id)
            if ex is not None:
                ex.abort("ended")
            rt.emitter.emit(
                RunFailEvent(
                    run_id=run_id,
                    job_name=state.record.job_name,
                    labels=dict(state.record.labels),
                    error=error,
                    failed_step_name=in_flight,
                )
            )
            return True


def retrigger(rt: Runtime, run_id: str) -> Run[Any]:
    """Start a new pending run with an ended run's input, labels and concurrency key.

    Raises:
        NotFoundError: no such run, or its job is not registered here.
        ConflictError: the run has not ended, or a pending run holds its key.
        ValidationError: its input no longer matches the job's schema.
    """
    state = require(rt.store, run_id)
    if not state.is_terminal:
        raise ConflictError(f"Cannot retrigger {state.status} run: {run_id}", run_id=run_id)
    rec = state.record
    job = rt.registry.get(rec.job_name)
    if job is None:
        raise NotFoundError(f"Unknown job: {rec.job_name}", run_id=run_id)
    try:
        result = trigger(
            rt, job, [BatchItem(rec.input, None, rec.concurrency_key, None, rec.labels)], batch=False
        )[0]
    except ValidationError as exc:
        raise ValidationError(f"Cannot retrigger run {run_id}: {exc}", run_id=run_id) from exc
    return get_run(rt.store, result.id) or result


def delete_run(rt: Runtime, run_id: str) -> None:
    """Delete an ended run: every file of it, and free its idempotency key.

    Raises:
        NotFoundError: no such run. ConflictError: the run has not ended, or it is a
            cancelled link of a queue whose runs ahead have not ended.
    """
    state = require(rt.store, run_id)
    if not state.is_terminal:
        raise ConflictError(f"Cannot delete {state.status} run: {run_id}", run_id=run_id)
    ahead = _queued_ahead(rt, state)
    if ahead is not None:
        raise ConflictError(
            f"Cannot delete run {run_id} yet: it was cancelled while queued behind run {ahead.run_id} "
            f"({ahead.status}), and the runs queued behind it must keep waiting for that one; "
            "delete it once that run has ended",
            run_id=run_id,
        )
    rt.store.delete(state)
    _emit_end(rt, RunDeleteEvent, state)


def _queued_ahead(rt: Runtime, state: RunState) -> RunState | None:
    """A run still ahead of a queued run that ended without starting: its record is the
    link that keeps the runs behind it waiting, so it stays until that run ended."""
    if state.record.after is None or state.generation:
        return None
    return rt.store.queue_ahead(state)


def purge_runs(rt: Runtime, *, older_than: datetime | timedelta, limit: int = 500) -> int:
    """Delete ended runs whose ``completed_at`` is older than ``older_than``; return how many.

    Raises:
        ValidationError: a bad ``older_than`` or ``limit``.
    """
    if isinstance(older_than, timedelta):
        cutoff = datetime.now(UTC) - older_than
    elif isinstance(older_than, datetime):
        cutoff = older_than if older_than.tzinfo else older_than.replace(tzinfo=UTC)
    else:
        raise ValidationError("older_than must be a datetime or a timedelta")
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
        raise ValidationError(f"limit must be a non-negative integer, got {limit!r}")
    deleted = 0
    for run_id in rt.store.run_ids(newest_first=False):
        if deleted >= limit or id_time_ms(run_id) / 1000 > cutoff.timestamp():
            break
        try:
            state = rt.store.load(run_id)
        except DurablyError:
            continue
        end = None if state is None else state.end
        if state is None or end is None:
            continue
        ended = records.parse_time(end.at)
        if ended is None or ended >= cutoff or _queued_ahead(rt, state) is not None:
            continue  # (a link of a queue that still waits: purged once it is not)
        rt.store.delete(state)
        deleted += 1
        _emit_end(rt, RunDeleteEvent, state)
    return deleted


MAX_SIGNAL_NAME = 255
"""The longest signal name (a step name, but also a line users type)."""


def idle_maintenance(rt: Runtime) -> None:
    """At most once a minute when idle: sweep temp files a crash left in ``tmp/``
    (whatever ``retain_runs`` says), then purge old runs if ``retain_runs`` is set."""
    if rt.last_maintenance and time.monotonic() - rt.last_maintenance < MAINTENANCE_INTERVAL:
        return
    rt.last_maintenance = time.monotonic()
    try:
        rt.store.sweep_tmp()
        rt.store.sweep_waits()
        if rt.options.retain_runs is not None:
            purge_runs(rt, older_than=rt.options.retain_runs, limit=100)
    except DurablyError as exc:
        rt.emitter.emit(
            WorkerErrorEvent(
                run_id=None, job_name=None, labels={}, error=str(exc), context="idle-maintenance"
            )
        )


def signal(rt: Runtime, run_id: str, name: str, data: Any) -> None:
    """Deliver a signal (see ``Durably.signal``); emits ``run:signal``."""
    if not isinstance(name, str) or not name:
        raise ValidationError(f"signal name must be a non-empty string, got {name!r}")
    check_text(name, "signal name")
    if len(name) > MAX_SIGNAL_NAME:
        raise ValidationError(
            f"signal name is {len(name)} characters long; at most {MAX_SIGNAL_NAME} are allowed"
        )
    encoded, _ = codec_for(None).encode(data, f"data of signal {name!r}")
    state = rt.store.signal(run_id, name, orjson.Fragment(encoded))
    rt.emitter.emit(
        RunSignalEvent(
            run_id=run_id, job_name=state.record.job_name, labels=dict(state.record.labels), name=name
        )
    )
    rt.wake.set()
