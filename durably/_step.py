"""``Step``: what a job function receives; checkpoints, progress, logs and cancellation."""

from __future__ import annotations

import asyncio
import inspect
import threading
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar, cast, overload

import orjson

from . import _entries as entries
from . import _records as records
from ._codec import codec_for, return_type
from ._errors import ValidationError, describe, format_traceback
from ._events import (
    LogWriteEvent,
    RunProgressEvent,
    StepCancelEvent,
    StepCompleteEvent,
    StepFailEvent,
    StepStartEvent,
)
from ._execution import SHORT_WAIT, Execution
from ._models import Progress
from ._retry import Retry, as_retry
from ._step_waits import WaitingSteps

T = TypeVar("T")


class StepLog:
    """``step.log``: persisted log lines, attributed to the step they were written in."""

    def __init__(self, write: Callable[[str, str, Any], None]) -> None:
        self._write = write

    def info(self, message: str, data: Any = None) -> None:
        """Write an ``info`` line."""
        self._write("info", message, data)

    def warn(self, message: str, data: Any = None) -> None:
        """Write a ``warn`` line."""
        self._write("warn", message, data)

    def error(self, message: str, data: Any = None) -> None:
        """Write an ``error`` line."""
        self._write("error", message, data)


class Step(WaitingSteps):
    """The first argument of a job function.

    Attributes:
        run_id: The id of the run being executed.
        signal: A ``threading.Event`` set when the run is cancelled or the lease is lost.
        log: ``log.info|warn|error(message, data=None)``.
    """

    def __init__(self, execution: Execution) -> None:
        self._ex = execution
        self.run_id: str = execution.run_id
        self.signal: threading.Event = execution.signal
        self.log = StepLog(self._write_log)
        self._names: set[str] = set()
        self._current: str | None = None

    # -- checkpoints ------------------------------------------------------------------

    def run(
        self, name: str, fn: Callable[[], T], *, returns: Any = None, retry: Retry | int | None = None
    ) -> T:
        """Run ``fn`` once and checkpoint its value, or return the checkpointed value.

        In an ``async def`` job, ``await`` the result; ``fn`` may be sync or async (for
        type checkers, an async ``fn`` returns its awaitable, which ``await`` unwraps).

        Args:
            name: The step's name, unique within one execution of the run.
            fn: A function of no arguments.
            returns: The value's type; defaults to ``fn``'s return annotation, else the
                value must be plain JSON data.
            retry: A ``Retry`` (an int: that many attempts); None: the job's ``retry``,
                else one attempt. Between attempts the run waits (holding no worker
                unless the wait is short), and each attempt is a ``StepRecord``.

        Returns:
            The value, equal and of the same type on first execution and on replay.

        Raises:
            ValidationError: a duplicate or invalid name, or a value that cannot be stored.
            CancelledError: the run was cancelled. LeaseLostError: another worker owns it.
            TypeError: an async ``fn`` in a sync job.
            Exception: whatever ``fn`` raised (the step is recorded as failed); with
                ``retry``, the last attempt's exception once the attempts are used up.
        """
        self._begin(name)
        policy = as_retry(retry, f"retry of step {name!r}") if retry is not None else self._ex.retry
        if self._ex.is_async:
            return self._run_async(name, fn, returns, policy)  # type: ignore[return-value]
        if inspect.iscoroutinefunction(fn):
            raise TypeError(
                f"step {name!r}: fn is an async function but job {self._ex.job_name!r} is "
                "sync; make the job `async def` and `await step.run(...)`"
            )
        replayed = self._replay(name, fn, returns)
        if replayed is not _MISSING:
            return cast("T", replayed)
        attempt, pause = self._next_attempt(name, policy)
        while True:
            self._pause(pause)
            index, started = self._start(name, attempt)
            try:
                value = fn()
                if inspect.isawaitable(value):
                    if inspect.iscoroutine(value):
                        value.close()
                    raise TypeError(
                        f"step {name!r}: fn returned an awaitable but job {self._ex.job_name!r} "
                        "is sync; make the job `async def` and `await step.run(...)`"
                    )
            except BaseException as exc:
                again = self._fail(name, index, started, exc, attempt, policy)
                if again is None:
                    raise
                attempt, pause = attempt + 1, again
                continue
            return cast("T", self._commit(name, index, started, value, returns, fn, attempt))

    async def _run_async(self, name: str, fn: Callable[[], Any], returns: Any, policy: Retry | None) -> Any:
        replayed = self._replay(name, fn, returns)
        if replayed is not _MISSING:
            return replayed
        attempt, pause = self._next_attempt(name, policy)
        while True:
            await self._pause_async(pause)
            index, started = self._start(name, attempt)
            try:
                value = fn()
                if inspect.isawaitable(value):
                    value = await value
            except BaseException as exc:
                again = self._fail(name, index, started, exc, attempt, policy)
                if again is None:
                    raise
                attempt, pause = attempt + 1, again
                continue
            return self._commit(name, index, started, value, returns, fn, attempt)

    def _next_attempt(self, name: str, policy: Retry | None) -> tuple[int, float]:
        """The attempt to run now (after the failed attempts of earlier executions that
        scheduled another), and the seconds to wait first; waits the run if the next
        attempt's time is not near.

        Raises:
            Suspended: the run now waits for the next attempt's time.
        """
        ex = self._ex
        failed = 0
        until = None
        for entry in reversed(ex.failures.get(name, [])):
            if entry.until is None:
                break  # an earlier sequence of attempts that gave up
            failed += 1
            until = until or records.parse_time(entry.until)
        if not failed or until is None:
            return 1, 0.0
        attempt = failed + 1
        remaining = (until - ex.now()).total_seconds()
        if remaining > 0 and not (ex.real_clock and remaining <= SHORT_WAIT):
            ex.suspend(self._retry_line(name, attempt, policy), wake_at=until)
        return attempt, max(0.0, remaining)

    @staticmethod
    def _retry_line(name: str, attempt: int, policy: Retry | None) -> str:
        of = policy.max_attempts if policy is not None else attempt
        return f"retry {name} (attempt {attempt} of {of})"

    def _pause(self, seconds: float) -> None:
        """Wait in the worker (a short wait); a cancel or a lost lease ends it at once."""
        if seconds > 0 and self._ex.signal.wait(seconds):
            raise self._ex.abort_error()
        if seconds > 0:
            self.raise_if_aborted()

    async def _pause_async(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            if self._ex.signal.is_set():
                raise self._ex.abort_error()
            await asyncio.sleep(min(left, 0.05))
        if seconds > 0:
            self.raise_if_aborted()

    def _begin(self, name: str) -> None:
        if not isinstance(name, str):
            raise ValidationError(f"step name must be a string, got {name!r}")
        try:
            name.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise ValidationError(f"step name {name!r} is not valid unicode") from exc
        if name in self._names:
            raise ValidationError(
                f"step name {name!r} was already used in this execution of run "
                f"{self.run_id}; step names must be unique",
                run_id=self.run_id,
                step=name,
            )
        self._names.add(name)
        if name in self._ex.replay:
            if self.signal.is_set():  # replay costs no system call; the keeper sets it
                raise self._ex.abort_error()
        else:
            self.raise_if_aborted()

    def _replay(self, name: str, fn: Callable[[], Any], returns: Any) -> Any:
        rec = self._ex.replay.get(name)
        if rec is None:
            return _MISSING
        codec = codec_for(returns if returns is not None else return_type(fn))
        value = codec.decode(rec.output, f"step {name!r}")
        self._ex.index += 1
        return value

    def _start(self, name: str, attempt: int = 1) -> tuple[int, float]:
        ex = self._ex
        index = ex.index
        started = ex.now().timestamp()
        self._current = name
        ex.append(entries.step_started(name, index, ex.now_iso(), attempt=attempt), sync=False)
        ex.emit(StepStartEvent, step_name=name, step_index=index)
        return index, started

    def _fail(
        self,
        name: str,
        index: int,
        started: float,
        exc: BaseException,
        attempt: int = 1,
        policy: Retry | None = None,
    ) -> float | None:
        """Record a step that raised. Returns the seconds to wait in the worker before the
        next attempt, or None when there is none (the exception goes on up).

        Raises:
            Suspended: another attempt is due later; the run waits for it.
        """
        ex = self._ex
        self._current = None
        ex.detect_fence()
        if ex.store_error is not None and ex.failed_by_store(exc):
            return None  # the store failed under the step: nothing to record, it stays resumable
        if ex.abort_reason is not None:
            ex.append(entries.step_cancelled(name, index, ex.now_iso(), attempt=attempt), sync=False)
            ex.emit(StepCancelEvent, step_name=name, step_index=index)
            return None
        again = policy is not None and attempt < policy.max_attempts and policy.retries(exc)
        wait = policy.wait_before(attempt + 1) if again and policy is not None else 0.0
        now = ex.now()
        until = records.iso_epoch(now.timestamp() + wait) if again else None
        message = describe(exc)
        tb = format_traceback(exc)
        ex.failed_step = None if again else name
        # A failed attempt retried after a short wait in the worker is not synced on its
        # own: the next attempt's record (its commit, or its failure) syncs the journal
        # up to it. A power loss meanwhile only forgets an attempt that did not succeed,
        # as a crash in the middle of it would, and it runs again.
        in_worker = again and wait <= SHORT_WAIT and ex.real_clock
        ex.append(
            entries.step_failed(
                name,
                index,
                records.iso_epoch(started),
                records.iso(now),
                error=message,
                error_type=type(exc).__name__,
                traceback=tb,
                attempt=attempt,
                until=until,
            ),
            sync=ex.fsync and not in_worker,
        )
        ex.emit(StepFailEvent, step_name=name, step_index=index, error=message)
        if not again:
            return None
        if wait > SHORT_WAIT or not ex.real_clock:
            ex.suspend(
                self._retry_line(name, attempt + 1, policy),
                wake_at=records.parse_time(until),
            )
        return wait

    def _commit(
        self,
        name: str,
        index: int,
        started: float,
        value: Any,
        returns: Any,
        fn: Callable[[], Any],
        attempt: int = 1,
    ) -> Any:
        ex = self._ex
        codec = codec_for(returns if returns is not None else return_type(fn))
        try:
            data, back = codec.encode(value, f"step {name!r}")
        except ValidationError as exc:
            exc.run_id, exc.step = self.run_id, name
            self._fail(name, index, started, exc, attempt)
            raise
        if ex.signal.is_set() or ex.lease.fenced():
            # Aborted while fn ran: the value is returned but never checkpointed; the
            # next step.run raises (docs/api.md: "the next step.run raises CancelledError").
            ex.detect_fence()
            self._fail(name, index, started, ex.abort_error(), attempt)
            return back
        ex.append(
            entries.step_completed(
                name, index, records.iso_epoch(started), ex.now_iso(), orjson.Fragment(data), attempt=attempt
            ),
            sync=ex.fsync,
        )
        self._current = None
        ex.index += 1
        ex.completed += 1
        ex.emit(
            StepCompleteEvent,
            step_name=name,
            step_index=index,
            output=back,
            duration=ex.now().timestamp() - started,
        )
        return back

    # -- progress, logs, cancellation -----------------------------------------------

    def progress(self, current: float, total: float | None = None, message: str | None = None) -> None:
        """Report progress; persisted with the run and visible to other processes at once."""
        progress = Progress(current=current, total=total, message=message)
        self._ex.progress = progress
        self._ex.append(entries.progress_set(current, total, message, self._ex.now_iso()), sync=False)
        self._ex.emit(RunProgressEvent, progress=progress)

    def _write_log(self, level: str, message: str, data: Any) -> None:
        """Persist and emit a log line. Outside steps, the job function runs again from
        the top at every execution (after a wait or a crash): a line an earlier execution
        wrote at this position (the index of the next step; the n-th line there) is
        neither written nor emitted again."""
        ex = self._ex
        position = None
        if self._current is None:
            position = ex.index
            written = ex.logged.get(position, 0)
            if written:
                ex.logged[position] = written - 1
                return
        try:
            encoded = orjson.Fragment(orjson.dumps(data))
        except (TypeError, orjson.JSONEncodeError):
            encoded = orjson.Fragment(orjson.dumps(repr(data)))
        ex.append(
            entries.log_written(self._current, level, str(message), encoded, ex.now_iso(), position=position),
            sync=False,
        )
        ex.emit(LogWriteEvent, step_name=self._current, level=level, message=str(message), data=data)

    def is_aborted(self) -> bool:
        """True once the run was cancelled or the lease was lost."""
        return self.signal.is_set()

    def raise_if_aborted(self) -> None:
        """Raise CancelledError or LeaseLostError if the run was aborted; else nothing."""
        self._ex.detect_fence()
        if self.signal.is_set():
            raise self._ex.abort_error()


_MISSING: Any = object()


class AsyncStep(Step):
    """The first argument of an ``async def`` job: a :class:`Step` whose ``run`` is awaited.

    At run time an async job receives an ``AsyncStep``; annotate it so, and type checkers
    accept ``await step.run(name, fn)`` whether ``fn`` is sync or async (with ``Step``,
    only an async ``fn`` type-checks there).
    """

    if TYPE_CHECKING:

        @overload  # type: ignore[override]
        def run(
            self,
            name: str,
            fn: Callable[[], Awaitable[T]],
            *,
            returns: Any = None,
            retry: Retry | int | None = None,
        ) -> Awaitable[T]: ...
        @overload
        def run(
            self, name: str, fn: Callable[[], T], *, returns: Any = None, retry: Retry | int | None = None
        ) -> Awaitable[T]: ...
        def run(
            self, name: str, fn: Callable[[], Any], *, returns: Any = None, retry: Retry | int | None = None
        ) -> Any:
            """Like :meth:`Step.run`; ``await`` the result."""
