"""Job handles: what ``Durably.register`` returns, to trigger a job and read its runs."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, Generic, TypeVar

from . import _queries as queries
from ._job import BatchItem, Coalesce, JobDefinition
from ._models import LogEntry, Progress, Run, RunStatus, TriggerAndWaitResult, TriggerResult
from ._registry import RegisteredJob
from ._runtime import Runtime
from ._tail import wait_for
from ._trigger import trigger

I = TypeVar("I")  # noqa: E741 - input type, named as in the original
O = TypeVar("O")  # noqa: E741 - output type


class JobHandle(Generic[I, O]):
    """A registered job: trigger it and read its runs (outputs typed as ``O``)."""

    def __init__(self, runtime: Runtime, job: RegisteredJob) -> None:
        self._rt = runtime
        self._job = job
        self.definition: JobDefinition[I, O] = job.definition
        self.name = job.name

    def trigger(
        self,
        input: I | Mapping[str, Any],
        *,
        idempotency_key: str | None = None,
        concurrency_key: str | None = None,
        coalesce: Coalesce | None = None,
        labels: Mapping[str, str] | None = None,
        delay: float | timedelta | None = None,
        run_at: datetime | None = None,
    ) -> TriggerResult[O]:
        """Create a pending run (or find the one its keys point to); with ``delay``
        (seconds or a ``timedelta``) or ``run_at`` (an aware datetime), a run that waits
        until then before it starts.

        A concurrency key allows one pending run per job and key. While one is pending
        (or waits to start), ``coalesce=None`` raises ``ConflictError``, ``"skip"``
        returns that run (``coalesced``), and ``"queue"`` creates another pending run
        behind the key's latest one: runs queued on a key start one at a time, in
        trigger order, each after the one before it ended.

        Returns:
            The run, with ``disposition`` ``created``, ``idempotent`` or ``coalesced``.

        Raises:
            ValidationError: invalid input, labels or options (fields are named), e.g. a
                ``coalesce`` other than ``"skip"`` or ``"queue"``, or without a concurrency key.
            ConflictError: a pending run holds the concurrency key and ``coalesce`` is unset.
        """
        item = BatchItem(input, idempotency_key, concurrency_key, coalesce, labels, delay, run_at)
        return trigger(self._rt, self._job, [item], batch=False)[0]

    def trigger_and_wait(
        self,
        input: I | Mapping[str, Any],
        *,
        timeout: float | None = None,
        on_progress: Callable[[Progress], object] | None = None,
        on_log: Callable[[LogEntry], object] | None = None,
        idempotency_key: str | None = None,
        concurrency_key: str | None = None,
        coalesce: Coalesce | None = None,
        labels: Mapping[str, str] | None = None,
        delay: float | timedelta | None = None,
        run_at: datetime | None = None,
    ) -> TriggerAndWaitResult[O]:
        """Trigger, then wait for the run to end (executed by any worker, any process).

        Raises:
            RunFailedError: the run failed. CancelledError: it was cancelled.
            WaitTimeoutError: ``timeout`` seconds passed (the run goes on).
        """
        result = self.trigger(
            input,
            idempotency_key=idempotency_key,
            concurrency_key=concurrency_key,
            coalesce=coalesce,
            labels=labels,
            delay=delay,
            run_at=run_at,
        )
        run = wait_for(
            self._rt.store,
            result.id,
            timeout=timeout,
            on_progress=on_progress,
            on_log=on_log,
            output=self._job.output_codec,
        )
        return TriggerAndWaitResult(
            id=run.id,
            output=run.output,  # type: ignore[arg-type]
            disposition=result.disposition,
        )

    def batch_trigger(self, items: Sequence[I | Mapping[str, Any] | BatchItem[I]]) -> list[TriggerResult[O]]:
        """Trigger many runs: all items are validated first, then created all-or-nothing.

        Raises:
            ValidationError: an item is invalid; the message says ``at index i``.
            ConflictError: an item conflicts; no run of the batch is kept.
        """
        batch = [it if isinstance(it, BatchItem) else BatchItem(it) for it in items]
        return trigger(self._rt, self._job, batch, batch=True)

    def get_run(self, run_id: str) -> Run[O] | None:
        """This job's run with that id, or None (also None for another job's run)."""
        return queries.get_run(self._rt.store, run_id, job_name=self.name, output=self._job.output_codec)

    def get_runs(
        self,
        *,
        status: RunStatus | str | Sequence[RunStatus | str] | None = None,
        labels: Mapping[str, str] | None = None,
        limit: int | None = None,
        offset: int | None = None,
        created_after: datetime | None = None,
        created_before: datetime | None = None,
        parent_id: str | None = None,
    ) -> list[Run[O]]:
        """This job's runs, newest first, filtered like :meth:`Durably.get_runs`."""
        return queries.get_runs(
            self._rt.store,
            status=status,
            job_name=self.name,
            labels=labels,
            limit=limit,
            offset=offset,
            output=self._job.output_codec,
            created_after=created_after,
            created_before=created_before,
            parent_id=parent_id,
        )

    def __repr__(self) -> str:
        return f"<JobHandle {self.name!r}>"
