"""Job definitions: ``define_job``, :class:`JobDefinition` and :class:`BatchItem`."""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Generic, Literal, TypeVar, overload

from ._errors import ValidationError
from ._retry import Retry, as_retry, seconds

if TYPE_CHECKING:
    from ._step import AsyncStep

I = TypeVar("I")  # noqa: E741 - input type, named as in the original
O = TypeVar("O")  # noqa: E741 - output type

Coalesce = Literal["skip", "queue"]
"""What a trigger does when its concurrency key has a pending run: ``"skip"`` returns that
run, ``"queue"`` creates another pending run behind it (``None``: a ``ConflictError``)."""
COALESCE_VALUES: tuple[Coalesce, ...] = ("skip", "queue")


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
    retry: Retry | None = None
    timeout: float | None = None


@overload
def define_job(
    *,
    name: str,
    input: type[I],
    output: type[O],
    run: Callable[[AsyncStep, I], O | Awaitable[O]],
    retry: Retry | int | None = None,
    timeout: float | timedelta | None = None,
) -> JobDefinition[I, O]: ...
@overload
def define_job(
    *,
    name: str,
    input: type[I],
    output: None = None,
    run: Callable[[AsyncStep, I], object],
    retry: Retry | int | None = None,
    timeout: float | timedelta | None = None,
) -> JobDefinition[I, None]: ...
@overload
def define_job(
    *,
    name: str,
    input: type[I],
    output: type[O],
    run: None = None,
    retry: Retry | int | None = None,
    timeout: float | timedelta | None = None,
) -> Callable[[Callable[[AsyncStep, I], O | Awaitable[O]]], JobDefinition[I, O]]: ...
@overload
def define_job(
    *,
    name: str,
    input: type[I],
    output: None = None,
    run: None = None,
    retry: Retry | int | None = None,
    timeout: float | timedelta | None = None,
) -> Callable[[Callable[[AsyncStep, I], object]], JobDefinition[I, None]]: ...
def define_job(
    *, name: str, input: Any, output: Any = None, run: Any = None, retry: Any = None, timeout: Any = None
) -> Any:
    """Define a job; with ``run=None``, return a decorator that takes the function.

    Args:
        name: The job's unique name (any characters; it is data, not a path).
        input: A pydantic model or any type a pydantic ``TypeAdapter`` accepts.
        output: The same for the job's return value, or None (any JSON data).
        run: ``def run(step, payload)`` or ``async def``; omit to use as a decorator.
        retry: The default ``Retry`` of every step (an int: that many attempts).
        timeout: Seconds (or a ``timedelta``) after its first start at which a run that
            has not ended fails (``Run timed out after <n>s``); waits count.

    Returns:
        A :class:`JobDefinition`, or a decorator producing one. Nothing is registered.

    Raises:
        ValidationError: the name is not a non-empty string, ``run`` is not callable, or
            ``retry``/``timeout`` are not valid.
    """
    if not isinstance(name, str) or not name:
        raise ValidationError(f"job name must be a non-empty string, got {name!r}")
    try:
        name.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValidationError(f"job name {name!r} is not valid unicode") from exc
    policy = as_retry(retry, f"retry of job {name!r}")
    limit = None if timeout is None else seconds(timeout, f"timeout of job {name!r}", allow_zero=False)

    def make(fn: Any) -> JobDefinition[Any, Any]:
        if not callable(fn):
            raise ValidationError(f"run of job {name!r} must be callable, got {fn!r}")
        return JobDefinition(name=name, input=input, output=output, run=fn, retry=policy, timeout=limit)

    return make if run is None else make(run)


@dataclasses.dataclass(frozen=True)
class BatchItem(Generic[I]):
    """One item of :meth:`JobHandle.batch_trigger` with its own trigger options (those of
    :meth:`JobHandle.trigger`); a later item may coalesce or queue onto an earlier one."""

    input: I | Mapping[str, Any]
    idempotency_key: str | None = None
    concurrency_key: str | None = None
    coalesce: Coalesce | None = None
    labels: Mapping[str, str] | None = None
    delay: float | timedelta | None = None
    run_at: datetime | None = None
