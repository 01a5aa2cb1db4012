"""The background worker of ``Durably.start()``: claims runs and executes up to N at a time.

Like a ``durably worker`` process, it keeps a heartbeat record in ``workers/`` (listed by
``durably workers``) and a doorbell that wakes it when another process makes a run
claimable; on a read-only root it has neither.
"""

from __future__ import annotations

import contextlib
import threading
import time

from . import _doorbell as doorbell
from . import _workers as workers
from ._driver import claim_next, run_claim
from ._errors import DurablyError
from ._events import WorkerErrorEvent
from ._manage import idle_maintenance
from ._runtime import Runtime
from ._store import Lease


class WorkerLoop:
    """One claiming thread, and one thread per run in flight."""

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._loop, name="durably-worker", daemon=True)
        self._slots: set[threading.Thread] = set()
        self._running: set[str] = set()
        self._lock = threading.Lock()
        self.bell = doorbell.Doorbell(rt.root)
        self.heartbeat = workers.Heartbeat(rt.root, rt.registry.names(), tag=rt.owner)
        self.presence = threading.Thread(target=self._presence, name="durably-presence", daemon=True)

    def start(self) -> None:
        """Start claiming."""
        if not self.rt.store.is_read_only():
            self.presence.start()
        self.thread.start()

    def _beat(self) -> None:
        with self._lock:
            running = sorted(self._running)
        with contextlib.suppress(DurablyError):  # a view for people: never stops the worker
            self.heartbeat.beat(running)

    def _presence(self) -> None:
        """Refresh the heartbeat, and turn rings of the doorbell into wake-ups."""
        next_beat = 0.0
        while not self.stopping.is_set():
            if self.bell.fd < 0 and time.monotonic() >= next_beat:
                self.bell.open()  # fails (polling only) until the root exists
                if self.stopping.is_set():
                    break
            if self.bell.fd >= 0:
                if self.bell.wait(max(0.0, next_beat - time.monotonic())):
                    self.rt.wake.set()
            else:
                self.stopping.wait(max(0.0, next_beat - time.monotonic()))
            if time.monotonic() >= next_beat and not self.stopping.is_set():
                self._beat()
                next_beat = time.monotonic() + workers.BEAT_INTERVAL

    def stop(self, timeout: float | None) -> None:
        """Stop claiming; wait for runs in flight (up to ``timeout`` seconds)."""
        self.stopping.set()
        self.rt.wake.set()
        self.bell.ring_self()
        deadline = None if timeout is None else time.monotonic() + timeout
        self.thread.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
        with self._lock:
            slots = list(self._slots)
        for t in slots:
            t.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
        if self.presence.is_alive():
            self.presence.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
        if not self.presence.is_alive():
            self.bell.close()
            self.heartbeat.remove()

    def _loop(self) -> None:
        rt = self.rt
        size = rt.options.max_concurrent_runs
        while not self.stopping.is_set():
            rt.wake.clear()
            claimed = False
            try:
                while self._free_slots() > 0 and not self.stopping.is_set():
                    lease = claim_next(rt)
                    if lease is None:
                        break
                    claimed = True
                    self._spawn(lease)
                if not claimed and self._free_slots() == size:
                    idle_maintenance(rt)
            except Exception as exc:  # noqa: BLE001 - keep serving; report and back off
                rt.emitter.emit(
                    WorkerErrorEvent(
                        run_id=None,
                        job_name=None,
                        labels={},
                        error=f"{type(exc).__name__}: {exc}",
                        context="worker",
                    )
                )
                self.stopping.wait(min(rt.options.polling_interval, 1.0))
            if not claimed:
                rt.wake.wait(rt.options.polling_interval)

    def _free_slots(self) -> int:
        with self._lock:
            self._slots = {t for t in self._slots if t.is_alive()}
            return self.rt.options.max_concurrent_runs - len(self._slots)

    def _spawn(self, lease: Lease) -> None:
        def target() -> None:
            with self._lock:
                self._running.add(lease.run_id)
            try:
                run_claim(self.rt, lease)
            except Exception as exc:  # noqa: BLE001
                self.rt.emitter.emit(
                    WorkerErrorEvent(
                        run_id=lease.run_id,
                        job_name=None,
                        labels={},
                        error=f"{type(exc).__name__}: {exc}",
                        context="execution",
                    )
                )
            finally:
                with self._lock:
                    self._running.discard(lease.run_id)

        t = threading.Thread(target=target, name=f"durably-run-{lease.run_id}", daemon=True)
        with self._lock:
            self._slots.add(t)
        t.start()
