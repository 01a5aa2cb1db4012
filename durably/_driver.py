"""Driving claims: find the next claimable run, execute its job, record its end.

The end is published as the run's next state (fenced by the generation): a cancel or a
takeover published first means this execution's end is refused, and it stops.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import threading
import time
from typing import Any, Literal

import orjson

from . import _records as records
from ._errors import StoreError, ValidationError, describe, format_traceback, is_store_failure
from ._events import RunCompleteEvent, RunFailEvent, RunLeasedEvent, WorkerErrorEvent
from ._execution import Execution, Suspended
from ._readmodel import progress_dict
from ._records import EndState, RunState
from ._registry import RegisteredJob
from ._runtime import Runtime
from ._scheduling import fire_due
from ._step import AsyncStep, Step
from ._store import Lease
from ._trigger import invoker

log = logging.getLogger("durably")


def claim_next(rt: Runtime) -> Lease | None:
    """Claim the oldest claimable run of a registered job (None: nothing to do).

    A queued run that cannot be read (damaged, or from a newer format) is skipped with
    one warning; it never stops the worker. While the store fails (a full disk), nothing
    is claimed for a while (``Runtime.store_failed``).
    """
    if not rt.registry or time.monotonic() < rt.backoff_until:
        return None
    store = rt.store
    store.ensure_ready()
    fire_schedules(rt)
    blocked: set[str] = set()
    for entry in store.queued(blocked):  # a blocked key's or queue's runs: left out
        job = rt.registry.by_hash(entry.job_hash)
        if job is None or rt.keeper.get(entry.run_id) is not None:
            continue
        try:
            lease = store.try_claim(entry, rt.owner, rt.options.lease_duration, blocked)
        except StoreError as exc:
            if is_store_failure(exc):  # a full or failing disk: report, back off, retry later
                rt.store_failed()
                rt.emitter.emit(
                    WorkerErrorEvent(
                        run_id=entry.run_id, job_name=job.name, labels={}, error=str(exc), context="claim"
                    )
                )
                return None
            if entry.run_id not in rt.skipped:  # damaged or newer-format file: skip, never crash
                rt.skipped.add(entry.run_id)
                log.warning("skipping run %s: %s", entry.run_id, exc)
            continue
        if lease is None:
            continue
        if lease.state.record.job_name != job.name:  # a job-hash collision
            lease.release()
            continue
        return lease
    return None


def fire_schedules(rt: Runtime) -> None:
    """Fire the due ticks of schedules before claiming (their runs are claimable at once).
    A store that fails is reported and backs claims off, as a failed claim does."""
    try:
        fire_due(rt)
    except StoreError as exc:
        if is_store_failure(exc):
            rt.store_failed()
        rt.emitter.emit(
            WorkerErrorEvent(run_id=None, job_name=None, labels={}, error=str(exc), context="schedule")
        )


def run_claim(rt: Runtime, lease: Lease) -> None:
    """Execute a claim in the current thread, then release it."""
    job = rt.registry.get(lease.state.record.job_name)
    try:
        if job is None:  # job hash collision or a definition removed meanwhile
            return
        ex = Execution(
            rt.store,
            rt.emitter,
            lease,
            is_async=job.is_async,
            clock=rt.clock,
            real_clock=rt.real_clock,
            retry=job.definition.retry,
            timeout=job.definition.timeout,
            invoker=invoker(rt, lease.state),
        )
        rt.keeper.add(ex)
        try:
            Driver(rt, ex, job).execute()
        finally:
            rt.keeper.remove(ex)
    finally:
        lease.release()
        rt.wake.set()


class Driver:
    """Executes one claimed run to its end."""

    def __init__(self, rt: Runtime, ex: Execution, job: RegisteredJob) -> None:
        self.rt = rt
        self.ex = ex
        self.job = job

    def execute(self) -> None:
        """Run the job to its end and record that end (fenced by the generation)."""
        ex, job, lease = self.ex, self.job, self.ex.lease
        claim = lease.state.claim
        at = records.parse_time(claim.at) if claim else None
        ex.emit(
            RunLeasedEvent,
            input=lease.state.record.input,
            lease_owner=lease.owner,
            lease_expires_at=at and at.fromtimestamp(at.timestamp() + lease.lease_duration, at.tzinfo),
            lease_generation=lease.gen,
        )
        started = time.time()
        step: Any = AsyncStep(ex) if ex.is_async else Step(ex)  # the job's annotation
        if ex.deadline is not None and ex.now() >= ex.deadline:  # timed out while it waited
            self._end_failed(ex.timeout_message(), None)
            return
        try:
            value = self._call(step)
        except Suspended:
            self.rt.wake.set()  # a wait already over (a signal sent meanwhile) is claimed at once
            return
        except BaseException as exc:  # noqa: BLE001 - _raised re-raises what is not the job's failure
            self._raised(exc)
            return
        ex.detect_fence()
        if ex.abort_reason is not None:
            self._aborted()
            return
        try:
            data, output = job.output_codec.encode(value, f"output of job {ex.job_name!r}")
        except ValidationError as exc:
            self._end_failed(f"Invalid output: {exc}", exc)
            return
        store = self.rt.store
        ended = self._end(
            records.ending(
                "completed",
                output=orjson.Fragment(data),
                steps=ex.completed_count,
                progress=progress_dict(ex.progress),
                owner=lease.owner,
            )
        )
        if ended is None:
            self._lost_end("run-completion", f"Lease lost before completing run {ex.run_id}")
            return
        if ended is not False:
            ex.emit(RunCompleteEvent, output=output, duration=time.time() - started)
            store.compact(ended, keep_outputs=self.rt.options.preserve_steps)

    def _call(self, step: Any) -> Any:
        """Call the job function (an async one on an event loop)."""
        ex, job = self.ex, self.job
        payload = job.input_codec.decode(ex.lease.state.record.input, "input")
        if ex.is_async:
            return _run_coroutine(job.definition.run(step, payload))
        value = job.definition.run(step, payload)
        if inspect.isawaitable(value):
            if inspect.iscoroutine(value):
                value.close()
            raise TypeError(f"job {ex.job_name!r} returned an awaitable from a sync run")
        return value

    def _raised(self, exc: BaseException) -> None:
        """The job raised: fail the run, unless the execution was aborted (a cancel, a
        lost lease, a wait published) or the store failed under it (resumable)."""
        ex = self.ex
        ex.detect_fence()
        if ex.abort_reason == "waiting":
            return
        if ex.abort_reason is not None:
            self._aborted()
            return
        if not isinstance(exc, Exception):
            # KeyboardInterrupt, SystemExit: this process is going away, not the job
            # failing. The run stays leased; the kernel drops our lock when we exit
            # and the next worker resumes it from its checkpoints.
            raise exc
        if ex.store_error is not None and ex.failed_by_store(exc):
            self._store_failed(ex.store_error)  # not the job's failure: resumable
            return
        self._end_failed(describe(exc), exc)

    def _end(self, end: EndState) -> RunState | Literal[False] | None:
        """Publish the run's end (None: another writer decided first). A store that fails
        (a full disk) leaves the run leased and resumable: False, reported and backed off."""
        lease = self.ex.lease
        try:
            ended = self.rt.store.end(lease.state, lease.gen, end)
        except StoreError as exc:
            self._store_failed(exc)
            return False
        self.rt.store_worked()
        return ended

    def _end_failed(self, message: str, exc: BaseException | None) -> None:
        ex = self.ex
        tb = None if exc is None else format_traceback(exc)
        ended = self._end(
            records.ending(
                "failed",
                error=message,
                failed_step=ex.failed_step,
                traceback=tb,
                steps=ex.completed_count,
                progress=progress_dict(ex.progress),
                owner=ex.lease.owner,
            )
        )
        if ended is None:
            self._lost_end("run-failure", f"Lease lost before recording failure for run {ex.run_id}")
            return
        if ended is not False:
            ex.emit(RunFailEvent, error=message, failed_step_name=ex.failed_step)

    def _store_failed(self, exc: StoreError) -> None:
        """The store failed under this execution: not the job's failure. The run stays
        resumable (a worker resumes it once the store works again); the error is
        reported as ``worker:error`` and this instance backs off before its next claim."""
        ex = self.ex
        self.rt.store_failed()
        self.rt.emitter.emit(
            WorkerErrorEvent(
                run_id=ex.run_id, job_name=ex.job_name, labels=ex.labels, error=str(exc), context="store"
            )
        )

    def _lost_end(self, context: str, message: str) -> None:
        ex = self.ex
        ex.detect_fence()
        if ex.abort_reason == "cancelled":
            return
        self.rt.emitter.emit(
            WorkerErrorEvent(
                run_id=ex.run_id, job_name=ex.job_name, labels=ex.labels, error=message, context=context
            )
        )

    def _aborted(self) -> None:
        ex = self.ex
        if ex.abort_reason == "lease-lost":
            self.rt.emitter.emit(
                WorkerErrorEvent(
                    run_id=ex.run_id,
                    job_name=ex.job_name,
                    labels=ex.labels,
                    error=f"Lease lost for run {ex.run_id}; another worker owns it",
                    context="lease-renewal",
                )
            )


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
