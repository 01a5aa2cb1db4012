"""The state of one claimed run while this process executes it: what ``Step`` changes.

An :class:`Execution` holds the lease, the replay map read once at the claim, the
counters a step advances, and the abort state (a cancel, or a lease lost to another
worker) that the lease keeper and the steps set. The driver (``_driver.py``) creates
one per claim and ends the run; ``Step`` (``_step.py``) reads and changes it.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from ._entries import ProgressSet, StepEnded
from ._errors import CancelledError, DurablyError, LeaseLostError, StoreError
from ._events import Emitter, Event
from ._models import Progress
from ._readmodel import progress_of
from ._records import ClaimState, EndState, ReleaseState
from ._store import Lease, Store

ABORT_REASONS = ("cancelled", "lease-lost", "ended")
"""Why an execution stops early: cancelled, claimed by another worker, ended by another
process (a run timeout)."""


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

    def __init__(self, store: Store, emitter: Emitter, lease: Lease, *, is_async: bool) -> None:
        self.store = store
        self.emitter = emitter
        self.lease = lease
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
        for _gen, entry in store.journal(lease.state).entries:
            if isinstance(entry, StepEnded):
                if entry.status == "completed":
                    self.replay.setdefault(entry.name, entry)
            elif isinstance(entry, ProgressSet):
                self.progress = progress_of(entry)

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
            elif isinstance(fence, EndState) and fence.kind == "cancelled":
                self.abort("cancelled")
            else:
                self.abort("ended")

    def abort_error(self) -> DurablyError:
        """The error a step raises once the run is aborted."""
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
