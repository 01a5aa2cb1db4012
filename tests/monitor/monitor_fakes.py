"""An in-memory stand-in for `durably.Durably`'s read API, with fixed data for snapshots.

It mirrors the SPEC's public objects (Run, StepRecord, LogEntry) closely enough for the
monitor, which only ever reads those fields through its adapter (`monitor._model`).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from durably import ConflictError, NotFoundError, RunStatus, ValidationError

NOW = datetime(2026, 11, 28, 18, 30, 0, tzinfo=UTC)


def frozen_clock() -> datetime:
    """The clock every monitor test uses."""
    return NOW


@dataclass(frozen=True)
class FakeProgress:
    current: float
    total: float | None = None
    message: str | None = None


@dataclass(frozen=True)
class FakeRun:
    id: str
    job_name: str
    status: RunStatus
    input: Any = None
    labels: dict[str, str] = field(default_factory=dict)
    output: Any = None
    error: str | None = None
    progress: FakeProgress | None = None
    idempotency_key: str | None = None
    concurrency_key: str | None = None
    lease_generation: int = 0
    completed_step_count: int = 0
    created_at: datetime = NOW
    started_at: datetime | None = None
    completed_at: datetime | None = None
    updated_at: datetime = NOW
    interrupted: bool = False
    error_traceback: str | None = None
    failed_step_name: str | None = None
    lease_owner: str | None = None
    waiting_for: str | None = None
    wake_at: datetime | None = None
    parent_id: str | None = None
    resumed_from: str | None = None


@dataclass(frozen=True)
class FakeStep:
    name: str
    index: int
    status: str
    output: Any = None
    error: str | None = None
    traceback: str | None = None
    started_at: datetime | None = None
    completed_at: datetime | None = None
    attempt: int = 1


@dataclass(frozen=True)
class FakeWorker:
    host: str
    pid: int
    jobs: tuple[str, ...] = ()
    running: tuple[str, ...] = ()
    started_at: datetime = NOW
    seen_at: datetime = NOW


@dataclass(frozen=True)
class FakeSchedule:
    name: str
    job_name: str
    cron: str
    timezone: str = "UTC"
    input: Any = None
    labels: dict[str, str] = field(default_factory=dict)
    paused: bool = False
    next_run_at: datetime | None = None
    last_run_id: str | None = None
    last_run_at: datetime | None = None
    created_at: datetime = NOW


@dataclass(frozen=True)
class FakeLog:
    level: str
    message: str
    step_name: str | None = None
    data: Any = None
    created_at: datetime = NOW


class FakeDurably:
    """Runs in memory; `changes()` reports every id touched through `touch()`."""

    def __init__(self, runs: list[FakeRun] | None = None, *, read_only: bool = False) -> None:
        self.runs: dict[str, FakeRun] = {r.id: r for r in runs or []}
        self.steps: dict[str, list[FakeStep]] = {}
        self.logs: dict[str, list[FakeLog]] = {}
        self.feed: list[str] = []
        self.read_only = read_only
        self.calls: list[tuple[str, str]] = []
        self.lock = threading.Lock()
        self.feed_broken = False
        self._next = 0
        self.workers: list[FakeWorker] = []
        self.signals: dict[tuple[str, str], Any] = {}
        self.resumed: list[tuple[str, str | None]] = []
        """(run id, from_step) of every resume."""
        self.schedules: dict[str, FakeSchedule] = {}

    # helpers for tests
    def put(self, run: FakeRun) -> None:
        with self.lock:
            self.runs[run.id] = run
            self.feed.append(run.id)

    def update(self, run_id: str, **changes: Any) -> None:
        self.put(replace(self.runs[run_id], **changes))

    # the read API
    def is_read_only(self) -> bool:
        return self.read_only

    def get_runs(self, *, limit: int | None = None, offset: int | None = None, **_: Any) -> list[FakeRun]:
        with self.lock:
            runs = sorted(self.runs.values(), key=lambda r: r.id, reverse=True)
        start = offset or 0
        return runs[start : None if limit is None else start + limit]

    def get_run(self, run_id: str) -> FakeRun | None:
        with self.lock:
            return self.runs.get(run_id)

    def get_steps(self, run_id: str) -> list[FakeStep]:
        return list(self.steps.get(run_id, []))

    def get_logs(self, run_id: str) -> list[FakeLog]:
        return list(self.logs.get(run_id, []))

    def get_schedules(self) -> list[FakeSchedule]:
        with self.lock:
            return [self.schedules[name] for name in sorted(self.schedules)]

    def pause_schedule(self, name: str) -> None:
        """Like `Durably.pause_schedule`: no next tick while paused."""
        self.calls.append(("pause_schedule", name))
        with self.lock:
            if name not in self.schedules:
                raise NotFoundError(f"No schedule named {name!r}")
            self.schedules[name] = replace(self.schedules[name], paused=True, next_run_at=None)

    def resume_schedule(self, name: str) -> None:
        """Like `Durably.resume_schedule`: the next tick comes back (here: in an hour)."""
        self.calls.append(("resume_schedule", name))
        with self.lock:
            if name not in self.schedules:
                raise NotFoundError(f"No schedule named {name!r}")
            later = NOW + timedelta(hours=1)
            self.schedules[name] = replace(self.schedules[name], paused=False, next_run_at=later)

    def get_workers(self) -> list[FakeWorker]:
        with self.lock:
            return list(self.workers)

    def changes(self, cursor: str | None = None) -> tuple[list[str] | None, str]:
        with self.lock:
            end = len(self.feed)
            if cursor is None:
                return [], str(end)
            if self.feed_broken:
                self.feed_broken = False
                return None, str(end)
            return list(dict.fromkeys(self.feed[int(cursor) : end])), str(end)

    # actions
    def cancel(self, run_id: str) -> None:
        self.calls.append(("cancel", run_id))
        run = self.runs.get(run_id)
        if run is None:
            raise NotFoundError(run_id)
        if run.status in (RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.CANCELLED):
            raise ConflictError(f"run {run_id} is {run.status.value}")
        self.update(run_id, status=RunStatus.CANCELLED, completed_at=NOW)

    def signal(self, run_id: str, name: str, data: Any = None) -> None:
        """Like `Durably.signal`: once per name; a run waiting for it wakes (here: completes)."""
        self.calls.append(("signal", run_id))
        run = self.runs.get(run_id)
        if run is None:
            raise NotFoundError(f"Run not found: {run_id}", run_id=run_id)
        if run.status in (RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.CANCELLED):
            raise ConflictError(f"run {run_id} is {run.status.value}", run_id=run_id)
        if (run_id, name) in self.signals:
            raise ConflictError(f"signal {name!r} was already sent to run {run_id}", run_id=run_id)
        self.signals[(run_id, name)] = data
        if run.waiting_for == f"signal {name}":
            self.update(run_id, status=RunStatus.PENDING, waiting_for=None, wake_at=None)

    def delete_run(self, run_id: str) -> None:
        self.calls.append(("delete", run_id))
        with self.lock:
            del self.runs[run_id]
            self.feed.append(run_id)

    def retrigger(self, run_id: str) -> FakeRun:
        self.calls.append(("retrigger", run_id))
        old = self.runs[run_id]
        new = FakeRun(
            id=old.id[:-1] + "Z",
            job_name=old.job_name,
            status=RunStatus.PENDING,
            input=old.input,
            labels=old.labels,
            created_at=NOW,
            updated_at=NOW,
        )
        self.put(new)
        return new

    def resume(self, run_id: str, *, from_step: str | None = None) -> FakeRun:
        """Like `Durably.resume`: ended runs only (a completed one only from a step), a step
        the run executed; the new run's id ends in R, then S, T, … for later ones."""
        self.calls.append(("resume", run_id))
        old = self.runs.get(run_id)
        if old is None:
            raise NotFoundError(f"Run not found: {run_id}", run_id=run_id)
        if old.status not in (RunStatus.FAILED, RunStatus.CANCELLED, RunStatus.COMPLETED):
            raise ConflictError(f"run {run_id} is {old.status.value}: only ended runs resume", run_id=run_id)
        if old.status is RunStatus.COMPLETED and from_step is None:
            raise ConflictError(f"run {run_id} completed: resume it from a step", run_id=run_id)
        names = [s.name for s in self.steps.get(run_id, [])]
        if from_step is not None and from_step not in names:
            raise ValidationError(f"run {run_id} never executed step {from_step!r}", run_id=run_id)
        self.resumed.append((run_id, from_step))
        suffix = "RSTUVWXY"[sum(1 for r in self.runs.values() if r.resumed_from == run_id)]
        new = FakeRun(
            id=old.id[:-1] + suffix,
            job_name=old.job_name,
            status=RunStatus.PENDING,
            input=old.input,
            labels=old.labels,
            resumed_from=run_id,
            created_at=NOW,
            updated_at=NOW,
        )
        self.put(new)
        return new


def ago(**kw: float) -> datetime:
    return NOW - timedelta(**kw)


TRACEBACK = """Traceback (most recent call last):
  File "jobs/sync.py", line 31, in sync_users
    step.run(f"sync-{user['id']}", lambda: db.upsert_user(user))
  File "jobs/db.py", line 12, in upsert_user
    raise ConnectionError("database is read-only")
ConnectionError: database is read-only
"""


def sample() -> FakeDurably:
    """Fixed, varied data: one run of every status, progress, labels, a failure with steps."""
    runs = [
        FakeRun(
            "01JDQ0000000000000000000A1",
            "sync-users",
            RunStatus.COMPLETED,
            input={"org_id": "acme"},
            output={"synced_count": 42, "errors": []},
            labels={"org": "acme"},
            completed_step_count=43,
            lease_generation=1,
            created_at=ago(minutes=25),
            started_at=ago(minutes=25),
            completed_at=ago(minutes=24, seconds=48),
            updated_at=ago(minutes=24, seconds=48),
        ),
        FakeRun(
            "01JDQ0000000000000000000A2",
            "sync-users",
            RunStatus.FAILED,
            input={"org_id": "globex"},
            labels={"org": "globex"},
            error="ConnectionError: database is read-only",
            completed_step_count=3,
            lease_generation=1,
            created_at=ago(minutes=12),
            started_at=ago(minutes=12),
            completed_at=ago(minutes=11, seconds=30),
            updated_at=ago(minutes=11, seconds=30),
        ),
        FakeRun(
            "01JDQ0000000000000000000A3",
            "send-report",
            RunStatus.CANCELLED,
            input={"week": 47},
            created_at=ago(minutes=9),
            started_at=ago(minutes=9),
            completed_at=ago(minutes=8),
            updated_at=ago(minutes=8),
            lease_generation=1,
        ),
        FakeRun(
            "01JDQ0000000000000000000A4",
            "resize-images",
            RunStatus.LEASED,
            input={"bucket": "photos"},
            labels={"tenant": "t1", "env": "prod"},
            progress=FakeProgress(37, 120, "resizing IMG_0037.jpg"),
            completed_step_count=37,
            lease_generation=1,
            created_at=ago(minutes=3),
            started_at=ago(minutes=2, seconds=30),
            updated_at=NOW,
        ),
        FakeRun(
            "01JDQ0000000000000000000A5",
            "send-report",
            RunStatus.PENDING,
            input={"week": 48},
            concurrency_key="reports",
            idempotency_key="week-48",
            created_at=ago(seconds=40),
            updated_at=ago(seconds=40),
        ),
        FakeRun(
            "01JDQ0000000000000000000A6",
            "resize-images",
            RunStatus.COMPLETED,
            input={"bucket": "avatars"},
            output={"resized": 8},
            labels={"tenant": "t2"},
            progress=FakeProgress(8, 8, "done"),
            completed_step_count=8,
            lease_generation=2,
            created_at=ago(minutes=2),
            started_at=ago(minutes=1, seconds=50),
            completed_at=ago(seconds=5),
            updated_at=ago(seconds=5),
        ),
    ]
    fake = FakeDurably(runs)
    failed = "01JDQ0000000000000000000A2"
    fake.steps[failed] = [
        FakeStep(
            "fetch-users",
            0,
            "completed",
            output=[{"id": 1}, {"id": 2}, {"id": 3}],
            started_at=ago(minutes=12),
            completed_at=ago(minutes=11, seconds=58),
        ),
        FakeStep(
            "sync-1",
            1,
            "completed",
            output=None,
            started_at=ago(minutes=11, seconds=58),
            completed_at=ago(minutes=11, seconds=50),
        ),
        FakeStep(
            "sync-2",
            2,
            "completed",
            output=None,
            started_at=ago(minutes=11, seconds=50),
            completed_at=ago(minutes=11, seconds=40),
        ),
        FakeStep(
            "sync-3",
            3,
            "failed",
            error="ConnectionError: database is read-only",
            traceback=TRACEBACK,
            started_at=ago(minutes=11, seconds=40),
            completed_at=ago(minutes=11, seconds=30),
        ),
    ]
    fake.logs[failed] = [
        FakeLog("info", "fetched 3 users", "fetch-users", created_at=ago(minutes=11, seconds=58)),
        FakeLog("info", "synced user 1", "sync-1", created_at=ago(minutes=11, seconds=50)),
        FakeLog("warn", "user 2 has no email", "sync-2", {"user": 2}, created_at=ago(minutes=11, seconds=45)),
        FakeLog("error", "upsert failed for user 3", "sync-3", created_at=ago(minutes=11, seconds=30)),
    ]
    return fake


def schedules_sample() -> FakeDurably:
    """`sample()` with three schedules: one whose last run failed, one paused, one that has
    not fired yet."""
    fake = sample()
    for schedule in (
        FakeSchedule(
            "nightly-sync",
            "sync-users",
            "30 2 * * *",
            "Europe/Berlin",
            next_run_at=NOW + timedelta(hours=7, minutes=3, seconds=12),
            last_run_id="01JDQ0000000000000000000A2",
            last_run_at=ago(minutes=12),
        ),
        FakeSchedule(
            "weekly-report",
            "send-report",
            "0 8 * * MON",
            paused=True,
            last_run_id="01JDQ0000000000000000000A3",
            last_run_at=ago(minutes=9),
        ),
        FakeSchedule("every-5m", "resize-images", "*/5 * * * *", next_run_at=ahead(minutes=3, seconds=12)),
    ):
        fake.schedules[schedule.name] = schedule
    return fake


SIGNAL = "01JDQ0000000000000000000W1"
SLEEP = "01JDQ0000000000000000000W2"
RETRY = "01JDQ0000000000000000000W3"
DELAYED = "01JDQ0000000000000000000W4"
PARENT = "01JDQ0000000000000000000W5"
CHILD_DONE = "01JDQ0000000000000000000W6"
CHILD = "01JDQ0000000000000000000W7"
RETRIED_OK = "01JDQ0000000000000000000W8"
EXPORTING = "01JDQ0000000000000000000W9"


def ahead(**kw: float) -> datetime:
    return NOW + timedelta(**kw)


def waiting_sample() -> FakeDurably:
    """Runs that wait (SPEC §9): for a signal, in a sleep, between two attempts, to start,
    for a child run; a parent with two children; a retried run that completed; two workers."""
    started = ago(minutes=5)

    def waits(run_id: str, job: str, waiting_for: str, wake_at: datetime | None, **kw: Any) -> FakeRun:
        fields: dict[str, Any] = {
            "input": {"order_id": "o-17"},
            "lease_generation": 1,
            "created_at": started,
            "started_at": started,
            "updated_at": ago(minutes=1),
            **kw,
        }
        return FakeRun(run_id, job, RunStatus.WAITING, waiting_for=waiting_for, wake_at=wake_at, **fields)

    runs = [
        waits(SIGNAL, "approve-order", "signal approval", ahead(days=7), completed_step_count=1),
        waits(SLEEP, "nightly-report", "sleep cool-off", ahead(hours=2), completed_step_count=1),
        waits(RETRY, "fetch-prices", "retry download (attempt 2 of 5)", ahead(seconds=30)),
        waits(DELAYED, "approve-order", "start", ahead(hours=2), started_at=None, lease_generation=0),
        waits(PARENT, "resize-batch", f"child {CHILD}", None, completed_step_count=1),
        FakeRun(
            CHILD_DONE,
            "resize-image",
            RunStatus.COMPLETED,
            parent_id=PARENT,
            idempotency_key=f"{PARENT}/image-0",
            output="a.jpg@2x",
            completed_step_count=1,
            created_at=ago(minutes=4),
            started_at=ago(minutes=4),
            completed_at=ago(minutes=3),
            updated_at=ago(minutes=3),
        ),
        waits(
            CHILD,
            "resize-image",
            "sleep wait-for-gpu",
            ahead(minutes=45),
            parent_id=PARENT,
            idempotency_key=f"{PARENT}/image-1",
            created_at=ago(minutes=3),
            started_at=ago(minutes=3),
        ),
        FakeRun(
            RETRIED_OK,
            "fetch-prices",
            RunStatus.COMPLETED,
            output="ok",
            completed_step_count=1,
            lease_generation=2,
            created_at=ago(minutes=2),
            started_at=ago(minutes=2),
            completed_at=ago(minutes=1),
            updated_at=ago(minutes=1),
        ),
        FakeRun(
            EXPORTING,
            "slow-export",
            RunStatus.LEASED,
            lease_generation=1,
            lease_owner="vm-1:4242",
            created_at=ago(minutes=1),
            started_at=ago(minutes=1),
            updated_at=NOW,
        ),
    ]
    fake = FakeDurably(runs)
    fake.steps[SIGNAL] = [
        FakeStep("quote", 0, "completed", 119.4, started_at=started, completed_at=started),
        FakeStep("approval", 1, "running", started_at=started),
    ]
    fake.steps[SLEEP] = [
        FakeStep("collect", 0, "completed", 3, started_at=started, completed_at=ago(minutes=4)),
        FakeStep("cool-off", 1, "running", started_at=ago(minutes=4)),
    ]
    error = "ConnectionError: https://prices.example/eu: 503 Service Unavailable"
    fake.steps[RETRY] = [
        FakeStep(
            "download",
            0,
            "failed",
            error=error,
            traceback=TRACEBACK,
            started_at=started,
            completed_at=started,
        ),
    ]
    fake.steps[PARENT] = [
        FakeStep("image-0", 0, "completed", "a.jpg@2x", started_at=started, completed_at=ago(minutes=3)),
        FakeStep("image-1", 1, "running", started_at=ago(minutes=3)),
    ]
    fake.steps[CHILD] = [FakeStep("wait-for-gpu", 0, "running", started_at=ago(minutes=3))]
    fake.steps[RETRIED_OK] = [
        FakeStep(
            "download",
            0,
            "failed",
            error="TimeoutError: read timed out",
            started_at=ago(minutes=2),
            completed_at=ago(minutes=2),
        ),
        FakeStep(
            "download",
            0,
            "completed",
            "ok",
            started_at=ago(minutes=1),
            completed_at=ago(minutes=1),
            attempt=2,
        ),
    ]
    fake.workers = [
        FakeWorker(
            "vm-1", 4242, ("approve-order", "slow-export"), (EXPORTING,), ago(hours=1), ago(seconds=3)
        ),
        FakeWorker("vm-2", 977, ("resize-batch", "resize-image"), (), ago(minutes=20), ago(seconds=1)),
    ]
    return fake
