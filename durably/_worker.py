"""Executing runs: one execution per claim, the lease keeper, and the worker loop."""

from __future__ import annotations

import asyncio
import inspect
import threading
import time
import traceback
from typing import TYPE_CHECKING, Any

import orjson

from ._errors import CancelledError, DurablyError, LeaseLostError, ValidationError
from ._events import (
    Event,
    RunCompleteEvent,
    RunFailEvent,
    RunLeasedEvent,
    RunLeaseRenewedEvent,
    WorkerErrorEvent,
)
from ._models import Progress
from ._step import AsyncStep, Step
from ._store import Claim, parse_time

if TYPE_CHECKING:
    from ._durably import Durably
    from ._job import JobHandle


class Execution:
    """The state of one claimed run while this process executes it."""

    def __init__(self, durably: Durably, claim: Claim, handle: JobHandle[Any, Any]) -> None:
        self.durably = durably
        self.claim = claim
        self.handle = handle
        self.run_id = claim.run_id
        self.job_name = handle.name
        self.labels: dict[str, str] = dict(claim.state.record.get("labels") or {})
        self.fsync = durably._store.sync
        self.signal = threading.Event()
        self.abort_reason: str | None = None
        self.is_async = inspect.iscoroutinefunction(handle.definition.run)
        self.index = 0
        self.completed = 0
        self.failed_step: str | None = None
        self.progress: Progress | None = None
        self.last_renew = time.monotonic()
        self.replay: dict[str, dict[str, Any]] = {}
        for _gen, rec in durably._store.journal(claim.state).records:
            kind = rec.get("k")
            if kind == "done":
                self.replay.setdefault(rec["s"], rec)
            elif kind == "p":
                self.progress = Progress(rec.get("c", 0), rec.get("n"), rec.get("m"))
        self.completed = 0

    def append(self, record: dict[str, Any], *, sync: bool) -> None:
        """Write to this generation's journal, then nudge watchers through the feed."""
        self.claim.append(record, sync=sync)
        self.durably._store.notify(self.run_id, throttle=0.2)

    def emit(self, cls: type[Event], **fields: Any) -> None:
        """Emit an event of this run to this process's listeners."""
        emitter = self.durably._emitter
        if not emitter.wants(str(cls.__dataclass_fields__["type"].default)):
            emitter.skip()
            return
        emitter.emit(cls(run_id=self.run_id, job_name=self.job_name, labels=self.labels, **fields))

    def abort(self, reason: str) -> None:
        """Mark the run aborted (``cancelled`` or ``lease-lost``) and set the signal."""
        if self.abort_reason is None:
            self.abort_reason = reason
        self.signal.set()

    def detect_fence(self) -> None:
        """Look for a state published after our claim (cancel, or a newer claim)."""
        if self.abort_reason is None and self.claim.fenced():
            nxt = self.claim.next_state() or {}
            kind = nxt.get("kind")
            self.abort({"cancelled": "cancelled", "claim": "lease-lost"}.get(str(kind), "ended"))

    def abort_error(self) -> DurablyError:
        """The error a step raises once the run is aborted."""
        if self.abort_reason == "lease-lost":
            return LeaseLostError(self.run_id)
        if self.abort_reason == "ended":
            return LeaseLostError(self.run_id, f"Run {self.run_id} was ended by another process")
        return CancelledError(self.run_id)

    # -- running ------------------------------------------------------------------------

    def execute(self) -> None:
        """Run the job to its end and record that end (fenced by the generation)."""
        store = self.durably._store
        state = self.claim.state
        head = state.head or {}
        expires = parse_time(head.get("at"))
        self.emit(RunLeasedEvent, input=state.record.get("input"), lease_owner=self.claim.owner,
                  lease_expires_at=expires and expires.fromtimestamp(
                      expires.timestamp() + self.claim.lease_duration, expires.tzinfo),
                  lease_generation=self.claim.gen)
        started = time.time()
        step: Any = AsyncStep(self) if self.is_async else Step(self)  # the job's annotation
        try:
            payload = self.handle._input_codec.decode(state.record.get("input"), "input")
            if self.is_async:
                value = _run_coroutine(self.handle.definition.run(step, payload))
            else:
                value = self.handle.definition.run(step, payload)
                if inspect.isawaitable(value):
                    if inspect.iscoroutine(value):
                        value.close()
                    raise TypeError(f"job {self.job_name!r} returned an awaitable from a sync run")
        except BaseException as exc:
            self.detect_fence()
            if self.abort_reason is not None:
                self._aborted()
                return
            if not isinstance(exc, Exception):
                # KeyboardInterrupt, SystemExit: this process is going away, not the job
                # failing. The run stays leased; the kernel drops our lock when we exit
                # and the next worker resumes it from its checkpoints.
                raise
            self._end_failed(_message(exc), exc)
            return
        self.detect_fence()
        if self.abort_reason is not None:
            self._aborted()
            return
        try:
            data, output = self.handle._output_codec.encode(value, f"output of job {self.job_name!r}")
        except ValidationError as exc:
            self._end_failed(f"Invalid output: {exc}", exc)
            return
        ended = store.end(state, self.claim.gen, {
            "kind": "completed", "output": _fragment(data), "steps": self._completed_count(),
            "progress": _progress_dict(self.progress)})
        if ended is None:
            self._lost_end("run-completion", f"Lease lost before completing run {self.run_id}")
            return
        self.emit(RunCompleteEvent, output=output, duration=time.time() - started)
        store.compact(ended, keep_outputs=self.durably._preserve_steps)

    def _completed_count(self) -> int:
        return len(self.replay) + self.completed

    def _end_failed(self, message: str, exc: BaseException) -> None:
        store = self.durably._store
        tb = "".join(traceback.format_exception(exc))
        ended = store.end(self.claim.state, self.claim.gen, {
            "kind": "failed", "error": message, "failed_step": self.failed_step,
            "traceback": tb, "steps": self._completed_count(),
            "progress": _progress_dict(self.progress)})
        if ended is None:
            self._lost_end("run-failure", f"Lease lost before recording failure for run {self.run_id}")
            return
        self.emit(RunFailEvent, error=message, failed_step_name=self.failed_step)

    def _lost_end(self, context: str, message: str) -> None:
        self.detect_fence()
        if self.abort_reason == "cancelled":
            return
        self.durably._emitter.emit(WorkerErrorEvent(run_id=self.run_id, job_name=self.job_name,
                                                    labels=self.labels, error=message,
                                                    context=context))

    def _aborted(self) -> None:
        if self.abort_reason == "lease-lost":
            self.durably._emitter.emit(WorkerErrorEvent(
                run_id=self.run_id, job_name=self.job_name, labels=self.labels,
                error=f"Lease lost for run {self.run_id}; another worker owns it",
                context="lease-renewal"))


class LeaseKeeper:
    """One thread per instance: renews leases and notices cancels and fencing.

    Every ``tick`` it checks, for each run this process executes, whether the next state
    file exists (one ``stat``): if so the run was cancelled or claimed by another worker,
    and its signal is set (within a second, in any process of the host or another host
    sharing the root). Every ``lease_renew_interval`` it touches the journal: the
    heartbeat that keeps the lease alive for other hosts.
    """

    tick = 0.2

    def __init__(self, durably: Durably) -> None:
        self.durably = durably
        self.active: dict[str, Execution] = {}
        self.lock = threading.Lock()
        self.thread: threading.Thread | None = None
        self.wake = threading.Event()

    def add(self, ex: Execution) -> None:
        """Watch an execution; starts the thread on first use."""
        with self.lock:
            self.active[ex.run_id] = ex
            if self.thread is None or not self.thread.is_alive():
                self.thread = threading.Thread(target=self._loop, name="durably-lease-keeper",
                                               daemon=True)
                self.thread.start()

    def remove(self, ex: Execution) -> None:
        """Stop watching an execution."""
        with self.lock:
            self.active.pop(ex.run_id, None)

    def get(self, run_id: str) -> Execution | None:
        """The execution of ``run_id`` in this process, if any."""
        with self.lock:
            return self.active.get(run_id)

    def _loop(self) -> None:
        while True:
            with self.lock:
                executions = list(self.active.values())
                if not executions:
                    self.thread = None
                    return
            for ex in executions:
                try:
                    self._check(ex)
                except Exception as exc:  # noqa: BLE001 - report and keep renewing
                    self.durably._emitter.emit(WorkerErrorEvent(
                        run_id=ex.run_id, job_name=ex.job_name, labels=ex.labels,
                        error=f"{type(exc).__name__}: {exc}", context="lease-renewal"))
            self.wake.wait(self.tick)

    def _check(self, ex: Execution) -> None:
        if ex.signal.is_set():
            return
        ex.detect_fence()
        if ex.abort_reason == "lease-lost":
            self.durably._emitter.emit(WorkerErrorEvent(
                run_id=ex.run_id, job_name=ex.job_name, labels=ex.labels,
                error=f"Lease renewal lost ownership for run {ex.run_id}", context="lease-renewal"))
            return
        if ex.abort_reason is not None:
            return
        now = time.monotonic()
        if now - ex.last_renew >= self.durably._lease_renew_interval:
            ex.claim.journal.touch()
            ex.last_renew = now
            expires = time.time() + ex.claim.lease_duration
            from datetime import UTC, datetime  # noqa: PLC0415

            ex.emit(RunLeaseRenewedEvent, lease_owner=ex.claim.owner,
                    lease_expires_at=datetime.fromtimestamp(expires, UTC))


def run_claim(durably: Durably, claim: Claim) -> None:
    """Execute a claim in the current thread, then release it."""
    handle = durably._handle_for_claim(claim)
    try:
        if handle is None:  # job hash collision or a definition removed meanwhile
            return
        ex = Execution(durably, claim, handle)
        durably._keeper.add(ex)
        try:
            ex.execute()
        finally:
            durably._keeper.remove(ex)
    finally:
        claim.release()
        durably._wake.set()


class WorkerLoop:
    """The background worker of ``Durably.start()``: up to N runs at a time."""

    def __init__(self, durably: Durably) -> None:
        self.durably = durably
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._loop, name="durably-worker", daemon=True)
        self.slots: set[threading.Thread] = set()
        self.lock = threading.Lock()

    def start(self) -> None:
        """Start claiming."""
        self.thread.start()

    def stop(self, timeout: float | None) -> None:
        """Stop claiming; wait for runs in flight (up to ``timeout`` seconds)."""
        self.stopping.set()
        self.durably._wake.set()
        deadline = None if timeout is None else time.monotonic() + timeout
        self.thread.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
        with self.lock:
            slots = list(self.slots)
        for t in slots:
            t.join(None if deadline is None else max(0.0, deadline - time.monotonic()))

    def _loop(self) -> None:
        d = self.durably
        while not self.stopping.is_set():
            d._wake.clear()
            claimed = False
            try:
                while self._free_slots() > 0 and not self.stopping.is_set():
                    claim = d._claim_next()
                    if claim is None:
                        break
                    claimed = True
                    self._spawn(claim)
                if not claimed and self._free_slots() == d._max_concurrent_runs:
                    d._idle_maintenance()
            except Exception as exc:  # noqa: BLE001 - keep serving; report and back off
                d._emitter.emit(WorkerErrorEvent(run_id=None, job_name=None, labels={},
                                                 error=f"{type(exc).__name__}: {exc}",
                                                 context="worker"))
                self.stopping.wait(min(d._polling_interval, 1.0))
            if not claimed:
                d._wake.wait(d._polling_interval)

    def _free_slots(self) -> int:
        with self.lock:
            self.slots = {t for t in self.slots if t.is_alive()}
            return self.durably._max_concurrent_runs - len(self.slots)

    def _spawn(self, claim: Claim) -> None:
        def target() -> None:
            try:
                run_claim(self.durably, claim)
            except Exception as exc:  # noqa: BLE001
                self.durably._emitter.emit(WorkerErrorEvent(
                    run_id=claim.run_id, job_name=None, labels={},
                    error=f"{type(exc).__name__}: {exc}", context="execution"))

        t = threading.Thread(target=target, name=f"durably-run-{claim.run_id}", daemon=True)
        with self.lock:
            self.slots.add(t)
        t.start()


def _run_coroutine(coro: Any) -> Any:
    """Run an async job to completion, also when this thread already runs an event loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = asyncio.run(coro)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the calling thread
            box["error"] = exc

    thread = threading.Thread(target=target, name="durably-async-job")
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    return box["value"]


def _message(exc: BaseException) -> str:
    text = str(exc)
    return text if text else type(exc).__name__


def _progress_dict(p: Progress | None) -> dict[str, Any] | None:
    return None if p is None else {"current": p.current, "total": p.total, "message": p.message}


def _fragment(data: bytes) -> Any:
    return orjson.Fragment(data)

