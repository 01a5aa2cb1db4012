"""The monitor's own view of runs, steps and logs.

The monitor reads everything through durably's public API and copies what it shows into the
small frozen records below, so the rest of the package never depends on the exact shape of the
core's objects. This module is the one place that knows those field names (SPEC §5).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from durably import RunStatus


@dataclass(frozen=True, slots=True)
class RunRow:
    """One run as the list shows it (no input or output: those are read on demand)."""

    id: str
    job: str
    status: RunStatus | None
    """`None` means durably reports the run as incomplete or still syncing."""
    labels: tuple[tuple[str, str], ...] = ()
    created_at: datetime | None = None
    started_at: datetime | None = None
    completed_at: datetime | None = None
    updated_at: datetime | None = None
    progress_current: float | None = None
    progress_total: float | None = None
    progress_message: str | None = None
    error: str | None = None
    completed_steps: int = 0
    waiting_for: str | None = None
    wake_at: datetime | None = None
    parent_id: str | None = None
    parent_step: str | None = None
    """For a child run (`step.invoke`): the parent's step that invoked it."""
    interrupted: bool = False
    """Leased, but its owner is gone (`Run.interrupted`): it waits for a worker."""
    resumed_from: str | None = None
    """The ended run this run resumes (`Durably.resume`): it replays that run's checkpoints."""

    @property
    def is_terminal(self) -> bool:
        """True for completed, failed and cancelled runs."""
        return self.status in _TERMINAL

    @property
    def label_text(self) -> str:
        """Labels as `k=v` pairs separated by spaces."""
        return " ".join(f"{k}={v}" for k, v in self.labels)

    def duration(self, now: datetime) -> float | None:
        """Seconds from start to completion (or to `now` while running); None if not started."""
        if self.started_at is None:
            return None
        if self.interrupted:  # its clock stopped with its owner
            now = self.updated_at or self.started_at
        end = self.completed_at or (None if self.is_terminal else now)
        if end is None:
            end = self.updated_at or self.started_at
        return max(0.0, (end - self.started_at).total_seconds())


@dataclass(frozen=True, slots=True)
class RunDetail:
    """A run with everything the detail screen shows."""

    row: RunRow
    input: Any = None
    output: Any = None
    idempotency_key: str | None = None
    concurrency_key: str | None = None
    lease_generation: int = 0
    lease_owner: str | None = None
    failed_step: str | None = None
    error_traceback: str | None = None
    steps: tuple[StepRow, ...] = ()
    logs: tuple[LogRow, ...] = ()


@dataclass(frozen=True, slots=True)
class StepRow:
    """One step checkpoint of a run."""

    name: str
    index: int
    status: str
    output: Any = None
    error: str | None = None
    traceback: str | None = None
    started_at: datetime | None = None
    completed_at: datetime | None = None
    attempt: int = 1
    """1, 2, … for the attempts of a retried step (each attempt is its own row)."""

    @property
    def duration(self) -> float | None:
        """Seconds the step took, when both ends are known."""
        if self.started_at is None or self.completed_at is None:
            return None
        return max(0.0, (self.completed_at - self.started_at).total_seconds())


@dataclass(frozen=True, slots=True)
class LogRow:
    """One log line written by a run."""

    level: str
    message: str
    step: str | None = None
    at: datetime | None = None
    data: Any = field(default=None, compare=False)


_TERMINAL = frozenset({RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.CANCELLED})


def _status(value: object) -> RunStatus | None:
    if isinstance(value, RunStatus):
        return value
    try:
        return RunStatus(str(value))
    except ValueError:
        return None


def _when(value: object) -> datetime | None:
    if isinstance(value, datetime):
        return value if value.tzinfo is not None else value.replace(tzinfo=UTC)
    if isinstance(value, int | float):
        return datetime.fromtimestamp(value, UTC)
    if isinstance(value, str) and value:
        try:
            return _when(datetime.fromisoformat(value))
        except ValueError:
            return None
    return None


def _labels(value: object) -> tuple[tuple[str, str], ...]:
    if isinstance(value, Mapping):
        return tuple(sorted((str(k), str(v)) for k, v in value.items()))
    return ()


def _number(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) else None


def _text(value: object) -> str | None:
    return None if value is None else str(value)


@dataclass(frozen=True, slots=True)
class WorkerRow:
    """One live `durably worker` process (`durably.WorkerInfo`)."""

    host: str
    pid: int
    jobs: tuple[str, ...] = ()
    running: tuple[str, ...] = ()
    """Ids of the runs it has in flight."""
    started_at: datetime | None = None
    seen_at: datetime | None = None
    """Its last heartbeat."""


def worker_from(info: Any) -> WorkerRow:
    """Copy a `durably.WorkerInfo` into a `WorkerRow`."""
    return WorkerRow(
        host=str(getattr(info, "host", "?")),
        pid=int(getattr(info, "pid", 0) or 0),
        jobs=tuple(str(j) for j in getattr(info, "jobs", ()) or ()),
        running=tuple(str(r) for r in getattr(info, "running", ()) or ()),
        started_at=_when(getattr(info, "started_at", None)),
        seen_at=_when(getattr(info, "seen_at", None)),
    )


@dataclass(frozen=True, slots=True)
class ScheduleRow:
    """One cron schedule of the root (`durably.Schedule`)."""

    name: str
    job: str
    cron: str
    timezone: str = "UTC"
    paused: bool = False
    next_run_at: datetime | None = None
    """The next tick (None while paused)."""
    last_run_id: str | None = None
    last_run_at: datetime | None = None
    """The tick of the last run fired."""
    created_at: datetime | None = None


def schedule_from(schedule: Any) -> ScheduleRow:
    """Copy a `durably.Schedule` into a `ScheduleRow`."""
    return ScheduleRow(
        name=str(getattr(schedule, "name", "?")),
        job=str(getattr(schedule, "job_name", "?")),
        cron=str(getattr(schedule, "cron", "")),
        timezone=str(getattr(schedule, "timezone", "UTC")),
        paused=bool(getattr(schedule, "paused", False)),
        next_run_at=_when(getattr(schedule, "next_run_at", None)),
        last_run_id=_text(getattr(schedule, "last_run_id", None)),
        last_run_at=_when(getattr(schedule, "last_run_at", None)),
        created_at=_when(getattr(schedule, "created_at", None)),
    )


def _parent_step(parent_id: str | None, idempotency_key: str | None) -> str | None:
    """A child run's idempotency key is `<parent id>/<step name>` (SPEC §9)."""
    if parent_id is None or idempotency_key is None:
        return None
    prefix = f"{parent_id}/"
    return idempotency_key[len(prefix) :] if idempotency_key.startswith(prefix) else None


def row_from_run(run: Any) -> RunRow:
    """Copy a `durably.Run` (or anything with its fields) into a `RunRow`."""
    progress = getattr(run, "progress", None)
    parent_id = _text(getattr(run, "parent_id", None))
    return RunRow(
        id=str(run.id),
        job=str(getattr(run, "job_name", "?")),
        status=_status(getattr(run, "status", None)),
        labels=_labels(getattr(run, "labels", None)),
        created_at=_when(getattr(run, "created_at", None)),
        started_at=_when(getattr(run, "started_at", None)),
        completed_at=_when(getattr(run, "completed_at", None)),
        updated_at=_when(getattr(run, "updated_at", None)),
        progress_current=_number(getattr(progress, "current", None)),
        progress_total=_number(getattr(progress, "total", None)),
        progress_message=_text(getattr(progress, "message", None)),
        error=_text(getattr(run, "error", None)),
        completed_steps=int(getattr(run, "completed_step_count", 0) or 0),
        waiting_for=_text(getattr(run, "waiting_for", None)),
        wake_at=_when(getattr(run, "wake_at", None)),
        parent_id=parent_id,
        parent_step=_parent_step(parent_id, _text(getattr(run, "idempotency_key", None))),
        interrupted=bool(getattr(run, "interrupted", False)),
        resumed_from=_text(getattr(run, "resumed_from", None)),
    )


def detail_from(run: Any, steps: list[Any], logs: list[Any]) -> RunDetail:
    """Build a `RunDetail` from a run, its `StepRecord`s and its `LogEntry`s."""
    return RunDetail(
        row=row_from_run(run),
        input=getattr(run, "input", None),
        output=getattr(run, "output", None),
        idempotency_key=_text(getattr(run, "idempotency_key", None)),
        concurrency_key=_text(getattr(run, "concurrency_key", None)),
        lease_generation=int(getattr(run, "lease_generation", 0) or 0),
        lease_owner=_text(getattr(run, "lease_owner", None)),
        failed_step=_text(getattr(run, "failed_step_name", None)),
        error_traceback=_text(getattr(run, "error_traceback", None)),
        steps=tuple(step_from(s, i) for i, s in enumerate(steps)),
        logs=tuple(log_from(entry) for entry in logs),
    )


def step_from(step: Any, position: int = 0) -> StepRow:
    """Copy a `durably.StepRecord` into a `StepRow`."""
    status = getattr(step, "status", "?")
    return StepRow(
        name=str(getattr(step, "name", "?")),
        index=int(getattr(step, "index", position)),
        status=str(getattr(status, "value", status)),
        output=getattr(step, "output", None),
        error=_text(getattr(step, "error", None)),
        traceback=_text(getattr(step, "traceback", None)),
        started_at=_when(getattr(step, "started_at", None)),
        completed_at=_when(getattr(step, "completed_at", None)),
        attempt=int(getattr(step, "attempt", 1) or 1),
    )


def log_from(entry: Any) -> LogRow:
    """Copy a `durably.LogEntry` into a `LogRow` (timestamp field names vary by version)."""
    at = None
    for name in ("created_at", "timestamp", "at", "time"):
        at = _when(getattr(entry, name, None))
        if at is not None:
            break
    level = getattr(entry, "level", "info")
    return LogRow(
        level=str(getattr(level, "value", level)),
        message=str(getattr(entry, "message", "")),
        step=_text(getattr(entry, "step_name", None)),
        at=at,
        data=getattr(entry, "data", None),
    )
