"""The records users read: runs, their status, steps, logs and progress."""

from __future__ import annotations

import dataclasses
import enum
import re
from datetime import datetime
from typing import Any, Generic, Literal, TypeVar

O = TypeVar("O")  # noqa: E741 - the output type parameter, named as in the original

Disposition = Literal["created", "idempotent", "coalesced"]
StepStatus = Literal["running", "completed", "failed", "cancelled"]
LogLevel = Literal["info", "warn", "error"]

LABEL_KEY = re.compile(r"^[A-Za-z0-9\-_./]+$")
"""What a label key may hold (as in the original)."""


class RunStatus(enum.StrEnum):
    """Where a run is in its life. Terminal statuses never change again."""

    PENDING = "pending"  # triggered, waiting for a worker to claim it
    WAITING = "waiting"  # waits for a time, a signal or a child run, holding no worker
    LEASED = "leased"  # claimed by a worker, which is executing it (or died holding it)
    COMPLETED = "completed"  # the job returned; ``output`` holds its value
    FAILED = "failed"  # the job raised; ``error`` holds the message
    CANCELLED = "cancelled"  # cancelled before it ended

    @property
    def is_terminal(self) -> bool:
        """True for completed, failed and cancelled."""
        return self in _TERMINAL


_TERMINAL = frozenset({RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.CANCELLED})


@dataclasses.dataclass(frozen=True, slots=True)
class Progress:
    """A run's latest reported progress (``step.progress(current, total, message)``)."""

    current: float
    total: float | None = None
    message: str | None = None


@dataclasses.dataclass(frozen=True, kw_only=True)
class Run(Generic[O]):
    """A snapshot of one run.

    ``output`` is an ``O`` when read through a job handle, plain JSON data when read
    through :meth:`Durably.get_run`. Timestamps are aware UTC datetimes.
    """

    id: str
    job_name: str
    status: RunStatus
    input: Any
    labels: dict[str, str]
    output: O | None
    error: str | None
    progress: Progress | None
    idempotency_key: str | None
    concurrency_key: str | None
    lease_generation: int
    completed_step_count: int
    created_at: datetime
    started_at: datetime | None
    completed_at: datetime | None
    updated_at: datetime
    lease_owner: str | None = None
    lease_expires_at: datetime | None = None
    failed_step_name: str | None = None
    wake_at: datetime | None = None
    waiting_for: str | None = None
    parent_id: str | None = None
    error_traceback: str | None = None
    resumed_from: str | None = None
    """The ended run whose checkpoints this run replays (``Durably.resume``)."""
    interrupted: bool = False
    """A leased run whose owner is gone (died, or stopped renewing its lease): it waits
    for a worker to resume it from its checkpoints. Its status stays ``leased``."""

    @property
    def is_terminal(self) -> bool:
        """True once the run is completed, failed or cancelled."""
        return self.status.is_terminal

    @property
    def is_active(self) -> bool:
        """True while the run is pending, waiting or leased."""
        return not self.status.is_terminal


@dataclasses.dataclass(frozen=True, kw_only=True)
class Schedule:
    """A cron schedule of a job (``Durably.schedule``). Times are aware UTC datetimes;
    ``next_run_at`` is None while paused, ``last_run_at`` is the tick of the last run fired."""

    name: str
    job_name: str
    cron: str
    timezone: str
    input: Any
    labels: dict[str, str]
    paused: bool
    next_run_at: datetime | None
    last_run_id: str | None
    last_run_at: datetime | None
    created_at: datetime
    concurrency_key: str | None = None
    coalesce: str | None = None
    catch_up: str = "latest"


@dataclasses.dataclass(frozen=True, kw_only=True)
class TriggerResult(Run[O]):
    """The run a trigger created or found, and how: ``created``, ``idempotent`` or ``coalesced``."""

    disposition: Disposition = "created"


@dataclasses.dataclass(frozen=True, kw_only=True)
class TriggerAndWaitResult(Generic[O]):
    """What :meth:`JobHandle.trigger_and_wait` returns."""

    id: str
    output: O
    disposition: Disposition


@dataclasses.dataclass(frozen=True, kw_only=True)
class StepRecord:
    """One attempt of one step, in execution order.

    ``status`` is ``completed``, ``failed``, ``cancelled``, or ``running`` for a step in
    flight (or interrupted by a crash, until the run is resumed: then ``error`` says so
    and ``completed_at`` is its owner's last sign of life; a step that waits — a sleep,
    a signal, a child run — is ``running`` while it waits). ``attempt`` counts the
    attempts of a retried step (1, 2, …).
    """

    name: str
    index: int
    status: StepStatus
    output: Any
    error: str | None
    traceback: str | None
    started_at: datetime
    completed_at: datetime | None
    generation: int = 0
    attempt: int = 1

    @property
    def duration(self) -> float | None:
        """Seconds from start to end, or None while running."""
        if self.completed_at is None:
            return None
        return (self.completed_at - self.started_at).total_seconds()


@dataclasses.dataclass(frozen=True, kw_only=True)
class LogEntry:
    """One log line written with ``step.log``; ``step_name`` is the step it was written in."""

    run_id: str
    step_name: str | None
    level: LogLevel
    message: str
    data: Any
    created_at: datetime
