"""The state of one claimed run while this process executes it: what ``Step`` changes.

An :class:`Execution` holds the lease, the replay map read once at the claim, the
counters a step advances, and the abort state (a cancel, or a lease lost to another
worker) that the lease keeper and the steps set. The driver (``_driver.py``) creates
one per claim and ends the run; ``Step`` (``_step.py``) reads and changes it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any, NoReturn

from . import _records as records
from ._entries import LogWritten, ProgressSet, StepEnded, StepStarted
from ._errors import CancelledError, DurablyError, LeaseLostError, StoreError
from ._events import Emitter, Event, RunWaitEvent
from ._models import Progress
from ._readmodel import progress_dict, progress_of
from ._records import ClaimState, Clock, EndState, ReleaseState, RunState, WaitState, system_clock
from ._store import Lease, Store

ABORT_REASONS = ("cancelled", "lease-lost", "ended", "waiting")
"""Why an execution stops early: cancelled, claimed by another worker, ended by another
process (a run timeout), or it published a wait (the run goes on after it)."""

SHORT_WAIT = 2.0
"""Waits up to this long (real time) are spent in the worker rather than releasing it."""


class Suspended(BaseException):
    """Raised through a job when its run started waiting: this execution stops here, and a
    later one (any worker) continues after the wait. Not an ``Exception``, so a job's
    ``except Exception`` does not swallow it."""


ChildInvoker = Callable[..., tuple[Any, str, RunState | None]]
"""Triggers (or finds again) a child run: ``(job, input, labels, concurrency_key,
step name) -> (the child job's output codec, child id, child state)``; the driver provides it."""


class Execution:
    """One claimed run being executed in this process.

    Attributes:
        replay: Completed checkpoints by step name (first one wins), read at the claim.
        index: The index the next step gets (replayed steps count).
        completed: Steps completed in this execution (not replayed).
        failed_step: The step whose exception failed the run, if any.
        progress: The last progress reported (replayed from the journal).
        signal: Set when the run is aborted (what ``step.signal`` is).
        abort_reason: One of :data:`ABORT_REASONS` once aborted.
    """

    def __init__(
        self,
        store: Store,
        emitter: Emitter,
        lease: Lease,
        *,
        is_async: bool,
        clock: Clock = system_clock,
        real_clock: bool = True,
        retry: Any = None,
        timeout: float | None = None,
        invoker: ChildInvoker | None = None,
    ) -> None:
        self.store = store
        self.emitter = emitter
        self.lease = lease
        self.clock = clock
        self.real_clock = real_clock
        """True with the system clock: short waits may be spent in the worker."""
        self.retry = retry
        """The job's default ``Retry`` (None: one attempt)."""
        self.invoker = invoker
        started = records.parse_time(lease.state.started_at)
        self.deadline: datetime | None = (
            None if timeout is None or started is None else started + timedelta(seconds=timeout)
        )
        self.timeout = timeout
        self.run_id = lease.run_id
        record = lease.state.record
        self.job_name = record.job_name
        self.labels: dict[str, str] = dict(record.labels)
        self.fsync = store.fsync
        self.is_async = is_async
        self.signal = threading.Event()
        self.abort_reason: str | None = None
        self.store_error: StoreError | None = None
        self.index = 0
        self.completed = 0
        self.failed_step: str | None = None
        self.progress: Progress | None = None
        self.last_renew = time.monotonic()
        self.replay: dict[str, StepEnded] = {}
        self.failures: dict[str, list[StepEnded]] = {}
        """Failed attempts of each step not completed (a retry's earlier attempts)."""
        self.waits: dict[str, StepStarted] = {}
        """The start of each step that waits (a sleep, a signal, a child), by name."""
        self.logged: dict[int, int] = {}
        """Log lines earlier executions wrote outside steps, by position (the index of the
        step that came next): a replay passing there writes them again only beyond that."""
        for _gen, entry in store.journal(lease.state).entries:
            if isinstance(entry, StepEnded):
                if entry.status == "completed":
                    self.replay.setdefault(entry.name, entry)
                elif entry.status == "failed":
                    self.failures.setdefault(entry.name, []).append(entry)
            elif isinstance(entry, StepStarted):
                if entry.waits:
                    self.waits[entry.name] = entry
            elif isinstance(entry, ProgressSet):
                self.progress = progress_of(entry)
            elif isinstance(entry, LogWritten) and entry.position is not None:
                self.logged[entry.position] = self.logged.get(entry.position, 0) + 1

    def now(self) -> datetime:
        """The instance's clock."""
        return self.clock()

    def now_iso(self) -> str:
        """The instance's clock, as stored."""
        return records.iso(self.clock())

    def suspend(
        self,
        waiting_for: str,
        *,
        wake_at: datetime | None,
        signal: str | None = None,
        child: str | None = None,
    ) -> NoReturn:
        """Publish that the run waits (until ``wake_at``, for ``signal`` or ``child``; the
        job's timeout, if sooner, wakes it too) and stop this execution.

        Raises:
            Suspended: always, once the wait is published.
            CancelledError, LeaseLostError: another writer decided the run's next state.
            StoreError: the wait could not be published (the run stays resumable).
        """
        if self.deadline is not None and (wake_at is None or self.deadline < wake_at):
            wake_at = self.deadline
        wait = records.waiting(
            waiting_for, wake_at=None if wake_at is None else records.iso(wake_at), signal=signal, child=child
        )
        try:
            waiting = self.store.wait(self.lease.state, self.lease.gen, wait)
        except StoreError as exc:
            self.store_error = exc
            raise
        if waiting is None:
            self.detect_fence()
            raise self.abort_error()
        self.abort("waiting")
        self.emit(RunWaitEvent, waiting_for=waiting_for, wake_at=wake_at)
        raise Suspended(waiting_for)

    def time_out(self) -> bool:
        """End the run as failed if its job's timeout has passed (from the lease keeper,
        while a step runs: its owner is fenced, and its next step raises). True if it did."""
        if self.deadline is None or self.abort_reason is not None or self.now() < self.deadline:
            return False
        end = records.ending(
            "failed",
            error=self.timeout_message(),
            steps=self.completed_count,
            progress=progress_dict(self.progress),
        )
        if self.store.end(self.lease.state, self.lease.gen, end) is None:
            self.detect_fence()
            return False
        self.abort("ended")
        return True

    def timeout_message(self) -> str:
        """The error of a run that timed out."""
        return f"Run timed out after {round(self.timeout or 0)}s"

    @property
    def completed_count(self) -> int:
        """Completed steps of the run: replayed ones and those of this execution."""
        return len(self.replay) + self.completed

    def append(self, entry: dict[str, Any], *, sync: bool) -> None:
        """Write to this generation's journal, then nudge watchers through the feed.

        Raises:
            StoreError: the store failed (the entry is not written). It is remembered: if
                it ends the execution, the run is left resumable, not failed.
        """
        try:
            self.lease.append(entry, sync=sync)
        except StoreError as exc:
            self.store_error = exc
            raise
        self.store.notify(self.run_id, throttle=0.2)

    def emit(self, cls: type[Event], **fields: Any) -> None:
        """Emit an event of this run to this process's listeners (built only if wanted)."""
        if not self.emitter.wants(str(cls.__dataclass_fields__["type"].default)):
            self.emitter.skip()
            return
        self.emitter.emit(cls(run_id=self.run_id, job_name=self.job_name, labels=self.labels, **fields))

    def abort(self, reason: str) -> None:
        """Mark the run aborted (one of :data:`ABORT_REASONS`) and set the signal."""
        if self.abort_reason is None:
            self.abort_reason = reason
        self.signal.set()

    def detect_fence(self) -> None:
        """Look for a state published after our claim (a cancel, or a newer claim)."""
        if self.abort_reason is None and self.lease.fenced():
            fence = self.lease.fence()
            if isinstance(fence, ClaimState | ReleaseState):
                self.abort("lease-lost")
            elif isinstance(fence, WaitState):
                self.abort("waiting")
            elif isinstance(fence, EndState) and fence.kind == "cancelled":
                self.abort("cancelled")
            else:
                self.abort("ended")

    def abort_error(self) -> DurablyError | Suspended:
        """The error a step raises once the run is aborted."""
        if self.abort_reason == "waiting":
            return Suspended("the run waits")
        if self.abort_reason == "lease-lost":
            return LeaseLostError(self.run_id)
        if self.abort_reason == "ended":
            return LeaseLostError(self.run_id, f"Run {self.run_id} was ended by another process")
        return CancelledError(self.run_id)

    def failed_by_store(self, exc: BaseException) -> bool:
        """Whether ``exc``, which ended the job, is (or was raised because of) a failure of
        the store under this execution, rather than the job's own error."""
        seen: set[int] = set()
        cause: BaseException | None = exc
        while cause is not None and id(cause) not in seen:
            if cause is self.store_error:
                return True
            seen.add(id(cause))
            cause = cause.__cause__ or cause.__context__
        return False
