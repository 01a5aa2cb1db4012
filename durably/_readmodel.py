"""The read model: turning a run's records into what users read — :class:`Run`,
:class:`StepRecord`, :class:`LogEntry`, :class:`Progress`.

Everything here is a pure function of what the store read (a run's state and its journal
view), so every reader (the API, ``RunTail``, the CLI, the monitor) shows the same thing.
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from typing import Any

from ._codec import Codec
from ._entries import LogWritten, ProgressSet, StepEnded, StepStarted
from ._errors import StoreError
from ._ids import id_time_ms
from ._journals import JournalView
from ._models import LogEntry, Progress, Run, RunStatus, StepRecord
from ._records import RunState, parse_time
from ._store import Store

INTERRUPTED = "interrupted: the worker stopped during this step"


def progress_of(entry: ProgressSet) -> Progress:
    """A progress entry as users read it."""
    return Progress(entry.current, entry.total, entry.message)


def progress_from(data: dict[str, Any] | None) -> Progress | None:
    """The progress an end state kept."""
    if data is None:
        return None
    return Progress(data.get("current", 0), data.get("total"), data.get("message"))


def progress_dict(progress: Progress | None) -> dict[str, Any] | None:
    """Progress as an end state keeps it."""
    if progress is None:
        return None
    return {"current": progress.current, "total": progress.total, "message": progress.message}


def log_entry(run_id: str, entry: LogWritten) -> LogEntry:
    """A log entry as users read it."""
    return LogEntry(
        run_id=run_id,
        step_name=entry.step,
        level=entry.level,  # type: ignore[arg-type]
        message=entry.message,
        data=entry.data,
        created_at=parse_time(entry.at) or datetime.now(UTC),
    )


@dataclasses.dataclass(frozen=True, slots=True)
class Summary:
    """What a run's journal says so far: completed steps, the last progress, last write."""

    completed: int
    progress: Progress | None
    mtime: float


def summarize(view: JournalView) -> Summary:
    """The :class:`Summary` of a journal view."""
    done: set[str] = set()
    progress = None
    for _, entry in view.entries:
        if isinstance(entry, StepEnded):
            if entry.status == "completed":
                done.add(entry.name)
        elif isinstance(entry, ProgressSet):
            progress = progress_of(entry)
    return Summary(len(done), progress, view.mtime)


def step_in_flight(view: JournalView) -> str | None:
    """The step that started and has not ended, if any."""
    in_flight = None
    for _, entry in view.entries:
        if isinstance(entry, StepStarted):
            in_flight = entry.name
        elif isinstance(entry, StepEnded) and entry.name == in_flight:
            in_flight = None
    return in_flight


def owner_alive(store: Store, state: RunState) -> bool:
    """Whether a leased run's owner still executes it (True when that cannot be told,
    e.g. on a root this process cannot write)."""
    if state.claim is None:
        return False
    try:
        return store.owner_alive(state)
    except StoreError:
        return True


def interrupted_at(store: Store, state: RunState) -> datetime | None:
    """When the owner of a leased run whose owner is gone last showed a sign of life (its
    claim or its last heartbeat); None while it lives, or for a run not leased."""
    claim = state.claim
    if claim is None or owner_alive(store, state):
        return None
    beat = store.lease_expiry(state) - claim.lease
    return datetime.fromtimestamp(beat, UTC)


def to_run(store: Store, state: RunState, output: Codec | None = None) -> Run[Any]:
    """A run as users read it; ``output`` decodes a completed run's output (a job
    handle's type), else it is plain JSON data."""
    rec = state.record
    status = RunStatus(state.status)
    created = parse_time(rec.created_at) or datetime.fromtimestamp(id_time_ms(state.run_id) / 1000, UTC)
    value = error = failed_step = error_traceback = None
    interrupted = False
    lease_owner = lease_expires = None
    progress = None
    head = state.head
    updated = (parse_time(head.at) if head else None) or created
    end = state.end
    if end is not None:
        count = end.steps
        progress = progress_from(end.progress)
        value, error, failed_step = end.output, end.error, end.failed_step
        error_traceback = end.traceback
        if end.kind == "cancelled" and state.generation:
            # a cancel is decided from outside: the journal holds what the run reached
            summary = summarize(store.journal(state))
            count = summary.completed
            progress = progress if progress is not None else summary.progress
    else:
        replays = state.generation or rec.resumed_from is not None
        summary = summarize(store.journal(state)) if replays else Summary(0, None, 0.0)
        count, progress = summary.completed, summary.progress
        if summary.mtime:
            updated = max(updated, datetime.fromtimestamp(summary.mtime, UTC))
        claim = state.claim
        if claim is not None:
            lease_owner = claim.owner
            lease_expires = datetime.fromtimestamp(store.lease_expiry(state), UTC)
            interrupted = not owner_alive(store, state)
    if value is not None and output is not None and status is RunStatus.COMPLETED:
        value = output.decode(value, "output")
    return Run(
        id=state.run_id,
        job_name=rec.job_name,
        status=status,
        input=rec.input,
        labels=dict(rec.labels),
        output=value,
        error=error,
        progress=progress,
        idempotency_key=rec.idempotency_key,
        concurrency_key=rec.concurrency_key,
        lease_generation=state.generation,
        completed_step_count=count,
        created_at=created,
        started_at=parse_time(state.started_at),
        completed_at=parse_time(end.at) if end is not None else None,
        updated_at=updated,
        lease_owner=lease_owner,
        lease_expires_at=lease_expires,
        failed_step_name=failed_step,
        wake_at=parse_time(state.wake_at) if status is RunStatus.WAITING else None,
        waiting_for=waiting_for(state),
        parent_id=rec.parent_id,
        error_traceback=error_traceback,
        resumed_from=rec.resumed_from,
        interrupted=interrupted,
    )


def waiting_for(state: RunState) -> str | None:
    """What a waiting run waits for, in one line (None if it does not wait)."""
    if state.wait is not None:
        return state.wait.waiting_for
    return "start" if state.status == "waiting" else None


def _step(entry: StepStarted | StepEnded, gen: int, start: StepStarted | None = None) -> StepRecord:
    if isinstance(entry, StepStarted):
        return StepRecord(
            name=entry.name,
            index=entry.index,
            status="running",
            output=None,
            error=None,
            traceback=None,
            started_at=parse_time(entry.at) or datetime.now(UTC),
            completed_at=None,
            generation=gen,
            attempt=entry.attempt,
        )
    started = parse_time(entry.started_at or (start.at if start else None) or entry.at)
    return StepRecord(
        name=entry.name,
        index=entry.index,
        status=entry.status,
        output=entry.output if entry.status == "completed" else None,
        error=entry.error,
        traceback=entry.traceback,
        started_at=started or datetime.now(UTC),
        completed_at=parse_time(entry.at),
        generation=gen,
        attempt=entry.attempt,
    )


def to_steps(state: RunState, view: JournalView, owner_gone_at: datetime | None = None) -> list[StepRecord]:
    """Every step attempt of a run, in execution order (replayed steps appear once).

    A step still running in an older generation, in a run whose lease was taken away, or
    in an ended run, was cut short: its worker died (or was stopped) before the step ended.
    ``owner_gone_at`` (from :func:`interrupted_at`): the current owner is gone; its step
    in flight stays ``running`` until the run is resumed, and ends there.
    """
    steps: list[StepRecord] = []
    open_steps: dict[str, tuple[int, StepStarted, int]] = {}
    waits: set[int] = set()  # steps that wait: not cut short when their execution stopped
    for gen, entry in view.entries:
        if isinstance(entry, StepStarted):
            open_steps[entry.name] = (gen, entry, len(steps))
            if entry.waits:
                waits.add(len(steps))
            steps.append(_step(entry, gen))
        elif isinstance(entry, StepEnded):
            started = open_steps.pop(entry.name, None)
            record = _step(entry, gen, started[1] if started else None)
            # A step that waited ends in a later execution than the one it started in.
            if started is not None and (started[0] == gen or started[1].waits):
                steps[started[2]] = record
            else:
                steps.append(record)
    terminal = state.is_terminal
    current = state.generation if state.claim is not None else state.generation + 1
    cancelled = state.status == "cancelled"
    end = state.end
    ended_at = parse_time(end.at) if end is not None else None
    for i, s in enumerate(steps):
        if s.status == "running" and (terminal or (s.generation < current and i not in waits)):
            steps[i] = dataclasses.replace(
                s,
                status="cancelled" if cancelled else "failed",
                error=None if cancelled else INTERRUPTED,
                completed_at=ended_at if terminal else None,
            )
        elif s.status == "running" and owner_gone_at is not None and s.generation == state.generation:
            stopped = max(owner_gone_at, s.started_at)
            steps[i] = dataclasses.replace(s, error=INTERRUPTED, completed_at=stopped)
    return steps


def to_logs(run_id: str, view: JournalView) -> list[LogEntry]:
    """A run's log lines in the order they were written."""
    return [log_entry(run_id, e) for _, e in view.entries if isinstance(e, LogWritten)]
