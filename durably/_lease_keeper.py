"""The lease keeper: one thread per instance that renews leases and notices fencing.

Every :attr:`LeaseKeeper.tick` it checks, for each run this process executes, whether the
next state file exists (one ``stat``): if so the run was cancelled or claimed by another
worker, and its signal is set (within a second, in any process of the host or another
host sharing the root). Every ``lease_renew_interval`` it renews the lease (the
heartbeat other hosts read).
"""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime

from ._events import Emitter, RunLeaseRenewedEvent, WorkerErrorEvent
from ._execution import Execution


class LeaseKeeper:
    """Watches the executions of one instance."""

    tick = 0.2

    def __init__(self, emitter: Emitter, renew_interval: float) -> None:
        self.emitter = emitter
        self.renew_interval = renew_interval
        self._active: dict[str, Execution] = {}
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._wake = threading.Event()

    def add(self, ex: Execution) -> None:
        """Watch an execution; starts the thread on first use."""
        with self._lock:
            self._active[ex.run_id] = ex
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._loop, name="durably-lease-keeper", daemon=True)
                self._thread.start()

    def remove(self, ex: Execution) -> None:
        """Stop watching an execution."""
        with self._lock:
            self._active.pop(ex.run_id, None)

    def get(self, run_id: str) -> Execution | None:
        """The execution of ``run_id`` in this process, if any."""
        with self._lock:
            return self._active.get(run_id)

    def _loop(self) -> None:
        while True:
            with self._lock:
                executions = list(self._active.values())
                if not executions:
                    self._thread = None
                    return
            for ex in executions:
                try:
                    self._check(ex)
                except Exception as exc:  # noqa: BLE001 - report and keep renewing
                    self.emitter.emit(
                        WorkerErrorEvent(
                            run_id=ex.run_id,
                            job_name=ex.job_name,
                            labels=ex.labels,
                            error=f"{type(exc).__name__}: {exc}",
                            context="lease-renewal",
                        )
                    )
            self._wake.wait(self.tick)

    def _check(self, ex: Execution) -> None:
        if not ex.signal.is_set():
            ex.time_out()  # the job's timeout passed: the run fails, the step is fenced
            ex.detect_fence()
            if ex.abort_reason == "lease-lost":
                self.emitter.emit(
                    WorkerErrorEvent(
                        run_id=ex.run_id,
                        job_name=ex.job_name,
                        labels=ex.labels,
                        error=f"Lease renewal lost ownership for run {ex.run_id}",
                        context="lease-renewal",
                    )
                )
        now = time.monotonic()
        if now - ex.last_renew >= self.renew_interval:
            # Also once aborted: while the step in flight still runs, other hosts must
            # see this execution alive (a cancelled run keeps its concurrency key until
            # its execution stopped). Nobody else reads this journal's heartbeat.
            ex.lease.heartbeat()
            ex.last_renew = now
            if ex.abort_reason is None:
                expires = time.time() + ex.lease.lease_duration
                ex.emit(
                    RunLeaseRenewedEvent,
                    lease_owner=ex.lease.owner,
                    lease_expires_at=datetime.fromtimestamp(expires, UTC),
                )
