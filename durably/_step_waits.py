"""The steps that wait: ``step.sleep``, ``step.sleep_until``, ``step.wait_for_signal`` and
``step.invoke``.

Each is a named step. Its start is journaled (with when the wait is over, if it has a
time) and synced; then the run waits holding no worker (``Execution.suspend``) and a
later execution, on any worker, replays up to it and finds the wait over: the step's
outcome is then checkpointed like any step's, so a replay returns (or raises) the same.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import orjson

from . import _entries as entries
from . import _records as records
from ._codec import codec_for
from ._errors import RunFailedError, ValidationError, WaitTimeoutError
from ._events import StepCompleteEvent, StepStartEvent
from ._execution import SHORT_WAIT, Execution
from ._retry import seconds

if TYPE_CHECKING:
    from collections.abc import Callable


def _aware(when: object, what: str) -> datetime:
    if not isinstance(when, datetime):
        raise ValidationError(f"{what} must be a datetime, got {type(when).__name__}")
    if when.tzinfo is None or when.utcoffset() is None:
        raise ValidationError(f"{what} must be an aware datetime (with a time zone), got a naive one")
    return when


class WaitingSteps:
    """The waiting steps of :class:`~durably._step.Step` (a mixin: ``Step`` provides
    ``_ex``, ``_begin``, ``_pause`` and ``_pause_async``)."""

    _ex: Execution
    run_id: str

    if TYPE_CHECKING:
        _begin: Callable[[str], None]
        _pause: Callable[[float], None]
        _pause_async: Callable[[float], Any]

    # -- sleep ------------------------------------------------------------------------

    def sleep(self, name: str, duration: float | timedelta) -> Any:
        """Sleep for ``duration`` (seconds or a ``timedelta``) as a durable step: the run
        waits holding no worker, and a crash loses nothing. In an ``async def`` job,
        ``await`` it.

        Raises:
            ValidationError: a negative or non-numeric duration, or a duplicate name.
        """
        delay = seconds(duration, f"duration of step.sleep {name!r}")
        return self._sleep(name, lambda now: now + timedelta(seconds=delay))

    def sleep_until(self, name: str, when: datetime) -> Any:
        """Sleep until ``when`` (an aware datetime) as a durable step; a time in the past
        returns at once. In an ``async def`` job, ``await`` it.

        Raises:
            ValidationError: a naive datetime, or a duplicate name.
        """
        moment = _aware(when, f"when of step.sleep_until {name!r}")
        return self._sleep(name, lambda _now: moment)

    def _sleep(self, name: str, until_of: Callable[[datetime], datetime]) -> Any:
        self._begin(name)
        ex = self._ex
        pause = self._plan_sleep(name, until_of)
        if ex.is_async:
            return self._finish_async(name, pause)
        if pause is not None:
            self._pause(pause)
            self._done(name, None)
        return None

    async def _finish_async(self, name: str, pause: float | None) -> None:
        if pause is not None:
            await self._pause_async(pause)
            self._done(name, None)

    def _plan_sleep(self, name: str, until_of: Callable[[datetime], datetime]) -> float | None:
        """None if the sleep is over and checkpointed (a replay); else the seconds to wait
        in the worker before checkpointing it. Suspends the run for a long wait."""
        ex = self._ex
        if name in ex.replay:
            ex.index += 1
            return None
        started = ex.waits.get(name)
        now = ex.now()
        until = records.parse_time(started.until) if started is not None else None
        if until is None:
            until = until_of(now)
            self._start_wait(name, until)
        remaining = (until - now).total_seconds()
        if remaining > 0 and not (ex.real_clock and remaining <= SHORT_WAIT):
            ex.suspend(f"sleep {name}", wake_at=until)
        return max(0.0, remaining)

    def _start_wait(self, name: str, until: datetime | None) -> None:
        """Journal (and sync) the start of a waiting step: it fixes when the wait ends."""
        ex = self._ex
        at = ex.now_iso()
        entry = entries.step_started(
            name, ex.index, at, until=None if until is None else records.iso(until), waits=True
        )
        ex.append(entry, sync=ex.fsync)
        ex.waits[name] = entries.StepStarted(entry)
        ex.emit(StepStartEvent, step_name=name, step_index=ex.index)

    def _done(self, name: str, output: Any, back: Any = None) -> Any:
        """Checkpoint a waiting step's outcome (``output`` is what is stored)."""
        ex = self._ex
        started = ex.waits.get(name)
        begun = started.at if started is not None else ex.now_iso()
        data = orjson.dumps(output)
        ex.append(
            entries.step_completed(name, ex.index, begun, ex.now_iso(), orjson.Fragment(data)), sync=ex.fsync
        )
        ex.emit(StepCompleteEvent, step_name=name, step_index=ex.index, output=back, duration=0.0)
        ex.index += 1
        ex.completed += 1
        return back

    def _failed(self, name: str, exc: Exception) -> None:
        """Checkpoint a waiting step's failure (a timeout, a failed child): a replay raises
        it again."""
        ex = self._ex
        started = ex.waits.get(name)
        begun = started.at if started is not None else ex.now_iso()
        ex.append(
            entries.step_failed(
                name,
                ex.index,
                begun,
                ex.now_iso(),
                error=str(exc),
                error_type=type(exc).__name__,
                traceback="",
            ),
            sync=ex.fsync,
        )
        ex.index += 1

    def _replayed_failure(self, name: str, kind: type[Exception]) -> str | None:
        for entry in self._ex.failures.get(name, []):
            if entry.error_type == kind.__name__:
                return entry.error or ""
        return None

    # -- signals -----------------------------------------------------------------------

    def wait_for_signal(
        self, name: str, *, timeout: float | timedelta | None = None, returns: Any = None
    ) -> Any:
        """Wait for the signal ``name`` sent to this run (``durably.signal(run_id, name,
        data)``) and return its data (validated as ``returns`` if given); the run waits
        holding no worker. A signal sent earlier is returned at once. In an ``async def``
        job, ``await`` it.

        Raises:
            WaitTimeoutError: ``timeout`` passed first (a replay raises it again).
            ValidationError: a duplicate name, a bad timeout, or data ``returns`` refuses.
        """
        limit = None if timeout is None else seconds(timeout, f"timeout of wait_for_signal {name!r}")
        self._begin(name)
        value = self._signal_value(name, limit, returns)
        if self._ex.is_async:

            async def done() -> Any:
                return value

            return done()
        return value

    def _signal_value(self, name: str, limit: float | None, returns: Any) -> Any:
        ex = self._ex
        codec = codec_for(returns)
        if name in ex.replay:
            ex.index += 1
            return codec.decode(ex.replay[name].output, f"signal {name!r}")
        timed_out = self._replayed_failure(name, WaitTimeoutError)
        if timed_out is not None:
            ex.index += 1
            raise WaitTimeoutError(timed_out, run_id=self.run_id)
        started = ex.waits.get(name)
        now = ex.now()
        if started is None:
            until = None if limit is None else now + timedelta(seconds=limit)
            self._start_wait(name, until)
        else:
            until = records.parse_time(started.until)
        signal = ex.store.read_signal(self.run_id, name)
        if signal is not None:
            value = codec.decode(signal.data, f"data of signal {name!r}")
            return self._done(name, signal.data, value)
        if until is not None and now >= until:
            exc = WaitTimeoutError(
                f"signal {name!r} did not arrive within {limit or 0:g}s", run_id=self.run_id
            )
            self._failed(name, exc)
            raise exc
        return ex.suspend(f"signal {name}", wake_at=until, signal=name)

    # -- child runs --------------------------------------------------------------------

    def invoke(
        self,
        name: str,
        job: Any,
        input: Any,
        *,
        labels: dict[str, str] | None = None,
        concurrency_key: str | None = None,
    ) -> Any:
        """Trigger one child run of ``job`` (exactly once per run and step name, across
        crashes), wait for it holding no worker, and return its output (typed as the
        child job's output). In an ``async def`` job, ``await`` it.

        Raises:
            RunFailedError: the child failed or was cancelled (``run_id`` is the child's).
            NotFoundError: ``job`` is not registered with this instance.
            ValidationError: the parent's own concurrency key, or an invalid input.
        """
        self._begin(name)
        value = self._child_value(name, job, input, labels, concurrency_key)
        if self._ex.is_async:

            async def done() -> Any:
                return value

            return done()
        return value

    def _child_value(
        self, name: str, job: Any, payload: Any, labels: dict[str, str] | None, concurrency_key: str | None
    ) -> Any:
        ex = self._ex
        own_key = ex.lease.state.record.concurrency_key
        if concurrency_key is not None and concurrency_key == own_key:
            raise ValidationError(
                f"step.invoke {name!r}: the child cannot use its parent's concurrency key "
                f"{concurrency_key!r} (it could never run while the parent holds it)"
            )
        if ex.invoker is None:
            raise ValidationError("step.invoke needs a Durably instance that executes this run")
        output_codec, child_id, child = ex.invoker(job, payload, labels, concurrency_key, name)
        if name in ex.replay:
            ex.index += 1
            return output_codec.decode(ex.replay[name].output, f"output of child run {child_id}")
        failed = self._replayed_failure(name, RunFailedError)
        if failed is not None:
            ex.index += 1
            raise RunFailedError(child_id, failed)
        if name not in ex.waits:
            ex.append(entries.child_invoked(name, child_id, ex.now_iso()), sync=False)
            self._start_wait(name, None)
        if child is not None and child.is_terminal:
            end = child.end
            if end is not None and end.kind == "completed":
                value = output_codec.decode(end.output, f"output of child run {child_id}")
                return self._done(name, end.output, value)
            why = end.error if end is not None and end.error else (end.kind if end else "ended")
            exc = RunFailedError(child_id, f"child run {child_id} {child.status}: {why}")
            self._failed(name, exc)
            raise exc
        return ex.suspend(f"child {child_id}", wake_at=None, child=child_id)
