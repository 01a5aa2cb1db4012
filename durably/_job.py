"""Job definitions (``define_job``) and the handles ``Durably.register`` returns."""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Generic, Literal, TypeVar, overload

from ._codec import codec_for
from ._errors import ValidationError
from ._models import Run, TriggerAndWaitResult, TriggerResult

if TYPE_CHECKING:
    from ._durably import Durably
    from ._events import Event
    from ._models import LogEntry, Progress, RunStatus
    from ._step import AsyncStep

I = TypeVar("I")  # noqa: E741 - input type, named as in the original
O = TypeVar("O")  # noqa: E741 - output type

RunFn = Callable[["AsyncStep", I], "O | Awaitable[O]"]


@dataclasses.dataclass(frozen=True, eq=False)
class JobDefinition(Generic[I, O]):
    """A job: a name, an input schema, an optional output schema and the function to run.

    Identity matters: registering the same definition object twice returns the same
    handle; another definition under a registered name is a conflict.
    """

    name: str
    input: Any
    output: Any
    run: Callable[[AsyncStep, I], O | Awaitable[O]]


@overload
def define_job(
    *, name: str, input: type[I], output: type[O], run: Callable[[AsyncStep, I], O | Awaitable[O]]
) -> JobDefinition[I, O]: ...
@overload
def define_job(
    *, name: str, input: type[I], output: None = None,
    run: Callable[[AsyncStep, I], object],
) -> JobDefinition[I, None]: ...
@overload
def define_job(
    *, name: str, input: type[I], output: type[O], run: None = None
) -> Callable[[Callable[[AsyncStep, I], O | Awaitable[O]]], JobDefinition[I, O]]: ...
@overload
def define_job(
    *, name: str, input: type[I], output: None = None, run: None = None
) -> Callable[[Callable[[AsyncStep, I], object]], JobDefinition[I, None]]: ...
def define_job(
    *, name: str, input: Any, output: Any = None, run: Any = None
) -> Any:
    """Define a job; with ``run=None``, return a decorator that takes the function.

    Args:
        name: The job's unique name (any characters; it is data, not a path).
        input: A pydantic model or any type a pydantic ``TypeAdapter`` accepts.
        output: The same for the job's return value, or None (any JSON data).
        run: ``def run(step, payload)`` or ``async def``; omit to use as a decorator.

    Returns:
        A :class:`JobDefinition`, or a decorator producing one. Nothing is registered.

    Raises:
        ValidationError: the name is not a non-empty string, or ``run`` is not callable.
    """
    if not isinstance(name, str) or not name:
        raise ValidationError(f"job name must be a non-empty string, got {name!r}")
    try:
        name.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValidationError(f"job name {name!r} is not valid unicode") from exc

    def make(fn: Any) -> JobDefinition[Any, Any]:
        if not callable(fn):
            raise ValidationError(f"run of job {name!r} must be callable, got {fn!r}")
        return JobDefinition(name=name, input=input, output=output, run=fn)

    return make if run is None else make(run)


@dataclasses.dataclass(frozen=True)
class BatchItem(Generic[I]):
    """One item of :meth:`JobHandle.batch_trigger` with its own trigger options."""

    input: I | Mapping[str, Any]
    idempotency_key: str | None = None
    concurrency_key: str | None = None
    coalesce: Literal["skip"] | None = None
    labels: Mapping[str, str] | None = None


class JobHandle(Generic[I, O]):
    """A registered job: trigger it and read its runs (outputs typed as ``O``)."""

    def __init__(self, durably: Durably, definition: JobDefinition[I, O]) -> None:
        self._durably = durably
        self.definition = definition
        self.name = definition.name
        self._input_codec = codec_for(definition.input)
        self._output_codec = codec_for(definition.output)

    def trigger(
        self,
        input: I | Mapping[str, Any],
        *,
        idempotency_key: str | None = None,
        concurrency_key: str | None = None,
        coalesce: Literal["skip"] | None = None,
        labels: Mapping[str, str] | None = None,
    ) -> TriggerResult[O]:
        """Create a pending run (or find the one its keys point to).

        Returns:
            The run, with ``disposition`` ``created``, ``idempotent`` or ``coalesced``.

        Raises:
            ValidationError: invalid input, labels or options (fields are named).
            ConflictError: a pending run holds the concurrency key and ``coalesce`` is unset.
        """
        return self._durably._trigger(self, [BatchItem(input, idempotency_key, concurrency_key,
                                                       coalesce, labels)], batch=False)[0]

    def trigger_and_wait(
        self,
        input: I | Mapping[str, Any],
        *,
        timeout: float | None = None,
        on_progress: Callable[[Progress], object] | None = None,
        on_log: Callable[[LogEntry], object] | None = None,
        idempotency_key: str | None = None,
        concurrency_key: str | None = None,
        coalesce: Literal["skip"] | None = None,
        labels: Mapping[str, str] | None = None,
    ) -> TriggerAndWaitResult[O]:
        """Trigger, then wait for the run to end (executed by any worker, any process).

        Raises:
            RunFailedError: the run failed. CancelledError: it was cancelled.
            WaitTimeoutError: ``timeout`` seconds passed (the run goes on).
        """
        result = self.trigger(input, idempotency_key=idempotency_key,
                              concurrency_key=concurrency_key, coalesce=coalesce, labels=labels)
        run = self._durably._wait(result.id, timeout=timeout, on_progress=on_progress,
                                  on_log=on_log, handle=self)
        return TriggerAndWaitResult(id=run.id, output=run.output,  # type: ignore[arg-type]
                                    disposition=result.disposition)

    def batch_trigger(
        self, items: Sequence[I | Mapping[str, Any] | BatchItem[I]]
    ) -> list[TriggerResult[O]]:
        """Trigger many runs: all items are validated first, then created all-or-nothing.

        Raises:
            ValidationError: an item is invalid; the message says ``at index i``.
            ConflictError: an item conflicts; no run of the batch is kept.
        """
        batch = [it if isinstance(it, BatchItem) else BatchItem(it) for it in items]
        return self._durably._trigger(self, batch, batch=True)

    def get_run(self, run_id: str) -> Run[O] | None:
        """This job's run with that id, or None (also None for another job's run)."""
        return self._durably._get_run(run_id, handle=self)

    def get_runs(
        self,
        *,
        status: RunStatus | str | Sequence[RunStatus | str] | None = None,
        labels: Mapping[str, str] | None = None,
        limit: int | None = None,
        offset: int | None = None,
    ) -> list[Run[O]]:
        """This job's runs, newest first, filtered like :meth:`Durably.get_runs`."""
        return self._durably._get_runs(status=status, job_name=self.name, labels=labels,
                                       limit=limit, offset=offset, handle=self)

    def __repr__(self) -> str:
        return f"<JobHandle {self.name!r}>"


EventListener = Callable[["Event"], object]
