"""``Durably``: the facade over one root directory.

Every method delegates to the engine's modules over this instance's
:class:`~durably._runtime.Runtime`; the facade itself holds no logic and no state beyond
the runtime, its job handles and its background worker.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, TypeVar

import pydantic

from . import _manage as manage
from . import _queries as queries
from . import _scheduling as scheduling
from . import _workers as workers
from ._driver import claim_next, run_claim
from ._events import Event
from ._handle import JobHandle
from ._job import Coalesce, JobDefinition
from ._models import LogEntry, Progress, Run, RunStatus, Schedule, StepRecord
from ._options import Options
from ._resume import resume
from ._runtime import Runtime
from ._tail import RunTail, wait_for
from ._worker import WorkerLoop
from ._workers import WorkerInfo

I = TypeVar("I")  # noqa: E741
O = TypeVar("O")  # noqa: E741


class Durably:
    """Jobs, runs and workers over one root directory of plain files.

    Args:
        root: The root directory (default ``$DURABLY_ROOT`` or ``.durably``). Creating an
            instance does no I/O; the root is created on the first write.
        jobs: Job definitions to register at once.
        polling_interval: Seconds an idle worker waits before looking for runs again.
        max_concurrent_runs: Runs ``start()`` executes at a time (1..1000).
        lease_duration: Seconds a lease lasts without renewal (matters across hosts;
            on one host a dead worker's runs are resumed at once).
        lease_renew_interval: Seconds between renewals; less than ``lease_duration``.
        preserve_steps: Keep step outputs after a run completes.
        retain_runs: Purge terminal runs older than this (``timedelta`` or ``"30d"``).
        labels: A pydantic model that labels given to a trigger must satisfy.
        fsync: Make every state change survive power loss (False: process crashes only).
        clock: An object with ``now()`` returning an aware datetime: every time durably
            records or decides (waits, retries, timeouts) comes from it; leases use
            real time. ``durably.testing.ManualClock`` makes a 30-day sleep instant.

    Raises:
        ValidationError: an option is out of range.
    """

    def __init__(
        self,
        root: str | os.PathLike[str] | None = None,
        *,
        jobs: Iterable[JobDefinition[Any, Any]] = (),
        polling_interval: float = 1.0,
        max_concurrent_runs: int = 1,
        lease_duration: float = 30.0,
        lease_renew_interval: float = 5.0,
        preserve_steps: bool = False,
        retain_runs: timedelta | str | None = None,
        labels: type[pydantic.BaseModel] | None = None,
        fsync: bool = True,
        clock: Any = None,
    ) -> None:
        options = Options.validated(
            clock=clock,
            polling_interval=polling_interval,
            max_concurrent_runs=max_concurrent_runs,
            lease_duration=lease_duration,
            lease_renew_interval=lease_renew_interval,
            preserve_steps=preserve_steps,
            retain_runs=retain_runs,
            labels=labels,
            fsync=fsync,
        )
        if root is None:
            root = os.environ.get("DURABLY_ROOT") or ".durably"
        self._rt = Runtime(os.fspath(root), options)
        self.root = self._rt.root
        self._handles: dict[str, JobHandle[Any, Any]] = {}
        self._handles_lock = threading.Lock()
        self._worker: WorkerLoop | None = None
        for definition in jobs:
            self.register(definition)

    # -- jobs ---------------------------------------------------------------------------

    def register(self, definition: JobDefinition[I, O]) -> JobHandle[I, O]:
        """Register a job and return its handle (the same handle for the same definition).

        Raises:
            ConflictError: another definition is registered under this name.
        """
        with self._handles_lock:
            job, _new = self._rt.registry.register(definition)
            handle = self._handles.get(job.name)
            if handle is None:
                handle = self._handles[job.name] = JobHandle(self._rt, job)
            return handle

    def get_job(self, name: str) -> JobHandle[Any, Any] | None:
        """The handle of a registered job, or None."""
        return self._handles.get(name)

    @property
    def jobs(self) -> dict[str, JobHandle[Any, Any]]:
        """Registered jobs by name (a copy)."""
        return dict(self._handles)

    # -- reading ------------------------------------------------------------------------

    def get_run(self, run_id: str) -> Run[Any] | None:
        """The run with that id (output as plain JSON data), or None.

        Raises:
            StoreError: a file of the run is unreadable or from a newer format.
        """
        return queries.get_run(self._rt.store, run_id)

    def get_runs(
        self,
        *,
        status: RunStatus | str | Sequence[RunStatus | str] | None = None,
        job_name: str | Sequence[str] | None = None,
        labels: Mapping[str, str] | None = None,
        limit: int | None = None,
        offset: int | None = None,
        parent_id: str | None = None,
        created_after: datetime | None = None,
        created_before: datetime | None = None,
    ) -> list[Run[Any]]:
        """Runs newest first (ids sort by creation, so ties within a millisecond too).

        Reads only as many runs as the page needs (runs are sharded by creation time).
        A run whose files are damaged is skipped with a warning on the ``durably`` logger.

        Args:
            status: One status or several (any of them matches).
            job_name: One job name or several.
            labels: Every given label must match.
            limit: At most this many runs. offset: Skip this many matches first.
            parent_id: Only the child runs of this run (``step.invoke``).
            created_after: Only runs created at or after this aware datetime.
            created_before: Only runs created before this aware datetime. Only the
                shards of the window are read (ids, and shards, sort by creation time).

        Raises:
            ValidationError: a bad filter (a naive datetime), limit or offset.
        """
        return queries.get_runs(
            self._rt.store,
            status=status,
            job_name=job_name,
            labels=labels,
            limit=limit,
            offset=offset,
            parent_id=parent_id,
            created_after=created_after,
            created_before=created_before,
        )

    def get_steps(self, run_id: str) -> list[StepRecord]:
        """Every step attempt of a run, in execution order (replayed steps appear once).

        Raises:
            NotFoundError: no such run.
        """
        return queries.get_steps(self._rt.store, run_id)

    def get_logs(self, run_id: str) -> list[LogEntry]:
        """The run's log lines in the order they were written.

        Raises:
            NotFoundError: no such run.
        """
        return queries.get_logs(self._rt.store, run_id)

    # -- waiting and watching -----------------------------------------------------------

    def wait_for_run(
        self,
        run_id: str,
        *,
        timeout: float | None = None,
        on_progress: Callable[[Progress], object] | None = None,
        on_log: Callable[[LogEntry], object] | None = None,
    ) -> Run[Any]:
        """Wait until a run ends, whichever process executes it; return it if completed.

        ``on_progress`` and ``on_log`` see progress and logs written after the wait began.

        Raises:
            NotFoundError: no such run (or it was deleted while waiting).
            RunFailedError: the run failed. CancelledError: it was cancelled.
            WaitTimeoutError: ``timeout`` seconds passed; the run goes on.
        """
        return wait_for(self._rt.store, run_id, timeout=timeout, on_progress=on_progress, on_log=on_log)

    def subscribe(self, run_id: str, *, poll_interval: float = 0.05) -> Iterator[Event]:
        """Iterate over a run's events as any process writes them.

        Starts with the run's current state (``run:leased``/``run:progress`` for a
        running run, the end event for an ended one), then yields new step, log,
        progress and state events, and stops after the terminal event or ``run:delete``.
        """
        return RunTail(self._rt.store, run_id).events(poll_interval)

    def changes(self, cursor: str | None = None) -> tuple[list[str] | None, str]:
        """Run ids that changed since ``cursor``, and the cursor to pass next time.

        ``cursor=None`` gives ``([], cursor at the end)``. The list is None when the
        feed cannot tell (rotated or damaged): reload everything. The feed is a hint
        written without fsync; watchers should still refresh active runs now and then.
        """
        return self._rt.store.changes(cursor)

    def is_read_only(self) -> bool:
        """True when this process cannot write the root (a synced copy, a read-only mount)."""
        return self._rt.store.is_read_only()

    def get_workers(self) -> list[WorkerInfo]:
        """The live ``durably worker`` processes of the root, oldest first.

        Read from their heartbeat records in ``workers/`` (a view for people: no claim or
        lease depends on it). A record whose process is gone on this host, or that was not
        refreshed for 30 seconds, is not listed. Only reads: safe on a read-only root.
        A worker started in your own program with :meth:`start` keeps no record.
        """
        return workers.live_workers(self.root)

    # -- events -------------------------------------------------------------------------

    def on(self, event_type: str, listener: Callable[[Any], object]) -> Callable[[], None]:
        """Call ``listener`` with each event of ``event_type`` emitted in this process.

        Returns:
            A function that unsubscribes the listener.
        """
        return self._rt.emitter.on(event_type, listener)

    # -- managing runs ------------------------------------------------------------------

    def signal(self, run_id: str, name: str, data: Any = None) -> None:
        """Send signal ``name`` with ``data`` (plain JSON data) to a run, from any process;
        it wakes the run if it waits for it (``step.wait_for_signal``), else it is kept
        until the run does.

        Raises:
            NotFoundError: no such run.
            ConflictError: the run ended, or a signal of that name was already sent.
            ValidationError: a bad name, or data that cannot be stored.
        """
        manage.signal(self._rt, run_id, name, data)

    def cancel(self, run_id: str) -> None:
        """Cancel a pending or leased run at once; its executing step's signal is set.

        Raises:
            NotFoundError: no such run. ConflictError: the run already ended.
        """
        manage.cancel(self._rt, run_id)

    def retrigger(self, run_id: str) -> Run[Any]:
        """Start a new pending run with an ended run's input, labels and concurrency key.

        Raises:
            NotFoundError: no such run, or its job is not registered here.
            ConflictError: the run has not ended, or a pending run holds its key.
            ValidationError: its input no longer matches the job's schema.
        """
        return manage.retrigger(self._rt, run_id)

    def resume(self, run_id: str, *, from_step: str | None = None) -> Run[Any]:
        """Start a new pending run that replays an ended run's completed checkpoints
        and runs the rest: same job, input (validated again), labels and concurrency key.

        The original is not changed (and may be deleted afterwards); the new run's
        ``resumed_from`` names it.

        Args:
            run_id: A failed or cancelled run; a completed one only with ``from_step``
                and only if its checkpoints were kept (``preserve_steps=True``).
            from_step: Replay only the checkpoints written before the first step of this
                name began; it and every step after it run again (a fork).

        Raises:
            NotFoundError: no such run, or its job is not registered here.
            ConflictError: the run is active; it completed and no ``from_step`` is given,
                or its checkpoints were dropped; a pending run holds its concurrency key.
            ValidationError: the run never executed ``from_step``, or its input no longer
                matches the job's schema. Nothing is written.
        """
        return resume(self._rt, run_id, from_step=from_step)

    def delete_run(self, run_id: str) -> None:
        """Delete an ended run: every file of it, and free its idempotency key.

        Raises:
            NotFoundError: no such run.
            ConflictError: the run has not ended, or it was cancelled while queued on its
                concurrency key and a run ahead of it has not ended yet (the runs queued
                behind it wait for that one through it).
        """
        manage.delete_run(self._rt, run_id)

    def purge_runs(self, *, older_than: datetime | timedelta, limit: int = 500) -> int:
        """Delete ended runs whose ``completed_at`` is older than ``older_than``.

        Returns:
            How many runs were deleted (each emits ``run:delete``).
        """
        return manage.purge_runs(self._rt, older_than=older_than, limit=limit)

    # -- schedules ----------------------------------------------------------------------

    def schedule(
        self,
        name: str,
        job: JobDefinition[Any, Any] | JobHandle[Any, Any],
        cron: str,
        *,
        input: Any = None,
        timezone: str = "UTC",
        labels: Mapping[str, str] | None = None,
        concurrency_key: str | None = None,
        coalesce: Coalesce | None = None,
        catch_up: str = "latest",
    ) -> Schedule:
        """Create or replace a cron schedule of ``job`` (5 fields, or 6 with seconds first,
        read in ``timezone``), stored in the root; the same arguments again change nothing.
        Each tick is one run (idempotency key ``"<name>@<tick UTC>"``) with these trigger
        options; ``catch_up``: ``"latest"``, ``"all"`` or ``"none"`` (SPEC §10).

        Raises:
            ValidationError: a bad name, cron, time zone, catch-up, input or option.
        """
        handle = job if isinstance(job, JobHandle) else self.register(job)
        given = dict(labels) if labels is not None else None
        return scheduling.schedule(
            self._rt,
            name,
            handle.name,
            cron,
            input=input,
            labels=given,
            catch_up=catch_up,
            timezone=timezone,
            concurrency_key=concurrency_key,
            coalesce=coalesce,
        )

    def get_schedules(self) -> list[Schedule]:
        """Every schedule of the root, by name (also those of jobs not registered here)."""
        return scheduling.get_schedules(self._rt)

    def get_schedule(self, name: str) -> Schedule | None:
        """One schedule by name, or None."""
        return scheduling.get_schedule(self._rt, name)

    def pause_schedule(self, name: str) -> None:
        """Stop firing a schedule's ticks (those that fall meanwhile never fire).

        Raises:
            NotFoundError: no schedule of this name."""
        scheduling.set_paused(self._rt, name, True)

    def resume_schedule(self, name: str) -> None:
        """Fire a paused schedule's ticks again, counting from now.

        Raises:
            NotFoundError: no schedule of this name."""
        scheduling.set_paused(self._rt, name, False)

    def unschedule(self, name: str) -> None:
        """Delete a schedule; the runs it fired stay.

        Raises:
            NotFoundError: no schedule of this name."""
        scheduling.unschedule(self._rt, name)

    # -- workers ------------------------------------------------------------------------

    def process_one(self) -> bool:
        """Claim and execute at most one run in this thread; True if one ran."""
        lease = claim_next(self._rt)
        if lease is None:
            return False
        run_claim(self._rt, lease)
        return True

    def process_until_idle(self, max_runs: int | None = None) -> int:
        """Execute runs one by one until none is claimable (or ``max_runs``); return the count.

        When none is claimable, idle maintenance runs (at most once a minute): temp files a
        crash left are swept, and old runs purged if ``retain_runs`` is set.
        """
        count = 0
        while max_runs is None or count < max_runs:
            if not self.process_one():
                manage.idle_maintenance(self._rt)
                break
            count += 1
        return count

    def start(self) -> None:
        """Start a background worker in this process (no-op if it runs already)."""
        if self._worker is not None and self._worker.thread.is_alive():
            return
        self._worker = WorkerLoop(self._rt)
        self._worker.start()

    def stop(self, timeout: float | None = None) -> None:
        """Stop claiming and wait for runs in flight (no-op if not started)."""
        worker, self._worker = self._worker, None
        if worker is not None:
            worker.stop(timeout)

    def __enter__(self) -> Durably:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"<Durably root={self.root!r} jobs={sorted(self._handles)}>"


def runtime_of(durably: Durably) -> Runtime:
    """The runtime below a facade, for durably's own tools (the worker supervisor)."""
    return durably._rt  # noqa: SLF001 - the facade's own module hands out its runtime
