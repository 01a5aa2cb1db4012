"""``Durably``: the facade over one root directory."""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import pydantic

from . import _files as files
from ._codec import safe_detail
from ._errors import (
    CancelledError,
    ConflictError,
    DurablyError,
    NotFoundError,
    RunFailedError,
    ValidationError,
    WaitTimeoutError,
)
from ._events import (
    Emitter,
    Event,
    RunCancelEvent,
    RunCoalescedEvent,
    RunDeleteEvent,
    RunTriggerEvent,
)
from ._ids import id_time_ms, new_id
from ._job import BatchItem, JobDefinition, JobHandle
from ._models import LogEntry, Progress, Run, RunStatus, StepRecord, TriggerResult
from ._store import TERMINAL_KINDS, Claim, RunState, Store, now_iso, parse_time
from ._tail import RunTail
from ._worker import LeaseKeeper, WorkerLoop, run_claim

I = TypeVar("I")  # noqa: E741
O = TypeVar("O")  # noqa: E741

log = logging.getLogger("durably")

_LABEL_KEY = re.compile(r"^[A-Za-z0-9\-_./]+$")
_DURATION = re.compile(r"^(\d+)([dhm])$")


def _parse_retain(value: timedelta | str | None) -> timedelta | None:
    if value is None or isinstance(value, timedelta):
        if isinstance(value, timedelta) and value <= timedelta(0):
            raise ValidationError("retain_runs must be positive")
        return value
    if isinstance(value, str):
        m = _DURATION.match(value)
        if m:
            n = int(m.group(1))
            return {"d": timedelta(days=n), "h": timedelta(hours=n), "m": timedelta(minutes=n)}[m.group(2)]
    raise ValidationError(
        f"Invalid duration format for retain_runs: {value!r} (use a timedelta or '<int>d|h|m')")


def _positive(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0 \
            or value == float("inf"):
        raise ValidationError(f"{name} must be a positive finite number, got {value!r}")
    return float(value)


class Durably:
    """Jobs, runs and workers over one root directory of plain files.

    Args:
        root: The root directory (default ``$DURABLY_ROOT`` or ``.durably``). Creating an
            instance does no I/O; the root is created on the first write.
        jobs: Job definitions to register at once.
        polling_interval: Seconds an idle worker waits before looking for runs again.
        max_concurrent_runs: Runs ``start()`` executes at a time (1..1000).
        lease_duration: Seconds a lease lasts without renewal (matters across hosts;
            on one host a dead worker's runs are resumed at once).
        lease_renew_interval: Seconds between renewals; less than ``lease_duration``.
        preserve_steps: Keep step outputs after a run completes.
        retain_runs: Purge terminal runs older than this (``timedelta`` or ``"30d"``).
        labels: A pydantic model that labels given to a trigger must satisfy.
        fsync: Make every state change survive power loss (False: process crashes only).

    Raises:
        ValidationError: an option is out of range.
    """

    def __init__(
        self,
        root: str | os.PathLike[str] | None = None,
        *,
        jobs: Iterable[JobDefinition[Any, Any]] = (),
        polling_interval: float = 1.0,
        max_concurrent_runs: int = 1,
        lease_duration: float = 30.0,
        lease_renew_interval: float = 5.0,
        preserve_steps: bool = False,
        retain_runs: timedelta | str | None = None,
        labels: type[pydantic.BaseModel] | None = None,
        fsync: bool = True,
    ) -> None:
        if isinstance(max_concurrent_runs, bool) or not isinstance(max_concurrent_runs, int) \
                or not 1 <= max_concurrent_runs <= 1000:
            raise ValidationError("max_concurrent_runs must be between 1 and 1000")
        self._polling_interval = _positive("polling_interval", polling_interval)
        self._lease_duration = _positive("lease_duration", lease_duration)
        self._lease_renew_interval = _positive("lease_renew_interval", lease_renew_interval)
        if self._lease_renew_interval >= self._lease_duration:
            raise ValidationError("lease_renew_interval must be less than lease_duration")
        self._retain_runs = _parse_retain(retain_runs)
        if labels is not None and not (isinstance(labels, type) and issubclass(labels, pydantic.BaseModel)):
            raise ValidationError("labels must be a pydantic model class")
        self._labels_schema = labels
        self._max_concurrent_runs = max_concurrent_runs
        self._preserve_steps = bool(preserve_steps)
        if root is None:
            root = os.environ.get("DURABLY_ROOT") or ".durably"
        self.root = os.path.abspath(os.fspath(root))
        self._store = Store(self.root, fsync=bool(fsync))
        self._emitter = Emitter()
        self._handles: dict[str, JobHandle[Any, Any]] = {}
        self._by_hash: dict[str, JobHandle[Any, Any]] = {}
        self._registry_lock = threading.Lock()
        self._keeper = LeaseKeeper(self)
        self._worker: WorkerLoop | None = None
        self._wake = threading.Event()
        self._owner = f"worker_{uuid.uuid4().hex[:12]}"
        self._last_purge = 0.0
        self._skipped: set[str] = set()  # queued runs that cannot be read (warned once)
        for definition in jobs:
            self.register(definition)

    # -- jobs ---------------------------------------------------------------------------

    def register(self, definition: JobDefinition[I, O]) -> JobHandle[I, O]:
        """Register a job and return its handle (the same handle for the same definition).

        Raises:
            ConflictError: another definition is registered under this name.
        """
        with self._registry_lock:
            existing = self._handles.get(definition.name)
            if existing is not None:
                if existing.definition is definition:
                    return existing
                raise ConflictError(
                    f'Job "{definition.name}" is already registered with a different definition')
            handle: JobHandle[I, O] = JobHandle(self, definition)
            self._handles[definition.name] = handle
            self._by_hash[files.name_hash(definition.name)[:16]] = handle
            return handle

    def get_job(self, name: str) -> JobHandle[Any, Any] | None:
        """The handle of a registered job, or None."""
        return self._handles.get(name)

    @property
    def jobs(self) -> dict[str, JobHandle[Any, Any]]:
        """Registered jobs by name (a copy)."""
        return dict(self._handles)

    # -- triggering ---------------------------------------------------------------------

    def _validate_item(self, handle: JobHandle[Any, Any], item: BatchItem[Any],
                       where: str) -> dict[str, Any]:
        if item.coalesce is not None:
            if item.coalesce != "skip":
                raise ValidationError(
                    f"Invalid coalesce value{where}: {item.coalesce!r}. Valid values: 'skip'")
            if item.concurrency_key is None:
                raise ValidationError(f"coalesce requires concurrency_key{where}")
        for opt, value in (("idempotency_key", item.idempotency_key),
                           ("concurrency_key", item.concurrency_key)):
            if value is not None and (not isinstance(value, str) or not value):
                raise ValidationError(f"{opt}{where} must be a non-empty string, got {value!r}")
            if isinstance(value, str):
                _check_text(value, f"{opt}{where}")
        codec = handle._input_codec
        raw = item.input
        if isinstance(raw, pydantic.BaseModel) and codec.adapter is not None \
                and isinstance(codec.tp, type) and not isinstance(raw, codec.tp):
            raw = raw.model_dump()
        data, _ = codec.encode(raw, f"Invalid input{where}")  # messages never quote values
        labels = self._validate_labels(item.labels, where)
        return {
            "v": files.FORMAT_VERSION, "id": "", "job_name": handle.name,
            "input": files.loads(data), "labels": labels,
            "idempotency_key": item.idempotency_key, "concurrency_key": item.concurrency_key,
            "created_at": "",
        }

    def _validate_labels(self, labels: Mapping[str, str] | None, where: str) -> dict[str, str]:
        given = dict(labels or {})
        if self._labels_schema is not None:
            try:
                model = self._labels_schema.model_validate(given)
            except pydantic.ValidationError as exc:
                raise ValidationError(f"labels{where}: Invalid input: {safe_detail(exc)}") from None
            given = {k: v for k, v in model.model_dump(mode="json").items() if v is not None}
        for key, value in given.items():
            if not isinstance(key, str) or not _LABEL_KEY.match(key):
                raise ValidationError(
                    f'Invalid label key "{key}"{where}: must contain only alphanumeric '
                    "characters, dashes, underscores, dots, and slashes")
            if not isinstance(value, str):
                raise ValidationError(f'label "{key}"{where} must be a string, got {type(value).__name__}')
            _check_text(value, f'label "{key}"{where}')
        return given

    def _trigger(self, handle: JobHandle[I, O], items: Sequence[BatchItem[Any]],
                 *, batch: bool) -> list[TriggerResult[O]]:
        if not items:
            return []
        records = [self._validate_item(handle, item, f" at index {i}" if batch else "")
                   for i, item in enumerate(items)]
        results: list[TriggerResult[O]] = []
        created: list[RunState] = []
        # A batch of several runs is invisible until committed, so even a crash half-way
        # leaves none of it (all-or-nothing); an exception undoes it at once.
        batch_id = new_id() if batch and len(items) > 1 else None
        self._store.open_batch(batch_id)
        try:
            for item, record in zip(items, records, strict=True):
                record["id"] = new_id()
                record["created_at"] = now_iso()
                if batch_id is not None:
                    record["batch"] = batch_id
                state, disposition = self._store.create_run(record, coalesce=item.coalesce == "skip")
                if disposition == "created":
                    created.append(state)
                results.append(self._result(state, disposition, handle, record))
            if batch_id is not None and created:
                self._store.commit_batch(batch_id)
        except BaseException:
            for state in created:  # all-or-nothing: undo what this batch created
                self._discard(state)
            raise
        finally:
            self._store.open_batch(None)
        for res, record in zip(results, records, strict=True):
            if res.disposition == "created":
                self._emitter.emit(RunTriggerEvent(run_id=res.id, job_name=res.job_name,
                                                   labels=res.labels, input=res.input))
            elif res.disposition == "coalesced":
                self._emitter.emit(RunCoalescedEvent(
                    run_id=res.id, job_name=res.job_name, labels=res.labels,
                    skipped_input=record["input"], skipped_labels=record["labels"]))
        self._wake.set()
        return results

    def _discard(self, state: RunState) -> None:
        try:
            ended = self._store.end(state, 0, {"kind": "cancelled", "reason": "batch rolled back"})
            self._store.delete(ended or state)
        except DurablyError as exc:
            log.warning("could not roll back run %s: %s", state.run_id, exc)

    def _result(self, state: RunState, disposition: str, handle: JobHandle[Any, Any],
                record: dict[str, Any]) -> TriggerResult[Any]:
        run = self._to_run(state, handle)
        fields = {f: getattr(run, f) for f in run.__dataclass_fields__}
        return TriggerResult(**fields, disposition=disposition)  # type: ignore[arg-type]

    # -- reading ------------------------------------------------------------------------

    def _to_run(self, state: RunState, handle: JobHandle[Any, Any] | None = None) -> Run[Any]:
        rec = state.record
        head = state.head or {}
        status = RunStatus(state.status)
        created = parse_time(rec.get("created_at")) or datetime.fromtimestamp(
            id_time_ms(state.run_id) / 1000, UTC)
        output = error = failed_step = None
        lease_owner = lease_expires = None
        progress = None
        updated = parse_time(head.get("at")) or created
        if status.is_terminal:
            count = int(head.get("steps", 0) or 0)
            progress = _progress(head.get("progress"))
            output = head.get("output")
            error = head.get("error")
            failed_step = head.get("failed_step")
            if head.get("kind") == "cancelled" and state.generation:
                count = self._journal_summary(state)[0]
        else:
            count, progress, mtime = self._journal_summary(state)
            if mtime:
                updated = max(updated, datetime.fromtimestamp(mtime, UTC))
            if status is RunStatus.LEASED:
                lease_owner = head.get("owner")
                lease_expires = datetime.fromtimestamp(self._store.lease_expiry(state), UTC)
        if output is not None and handle is not None and status is RunStatus.COMPLETED:
            output = handle._output_codec.decode(output, "output")
        return Run(
            id=state.run_id, job_name=rec["job_name"], status=status, input=rec.get("input"),
            labels=dict(rec.get("labels") or {}), output=output, error=error, progress=progress,
            idempotency_key=rec.get("idempotency_key"), concurrency_key=rec.get("concurrency_key"),
            lease_generation=state.generation, completed_step_count=count, created_at=created,
            started_at=parse_time(head.get("started_at")),
            completed_at=parse_time(head.get("at")) if status.is_terminal else None,
            updated_at=updated, lease_owner=lease_owner, lease_expires_at=lease_expires,
            failed_step_name=failed_step,
        )

    def _journal_summary(self, state: RunState) -> tuple[int, Progress | None, float]:
        if not state.generation:
            return 0, None, 0.0
        view = self._store.journal(state)
        done: set[str] = set()
        progress = None
        for _, rec in view.records:
            kind = rec.get("k")
            if kind == "done":
                done.add(rec["s"])
            elif kind == "p":
                progress = Progress(rec.get("c", 0), rec.get("n"), rec.get("m"))
        return len(done), progress, view.mtime

    def _load(self, run_id: str) -> RunState | None:
        if not isinstance(run_id, str):
            raise ValidationError(f"run id must be a string, got {type(run_id).__name__}")
        return self._store.load(run_id)

    def get_run(self, run_id: str) -> Run[Any] | None:
        """The run with that id (output as plain JSON data), or None.

        Raises:
            StoreError: a file of the run is unreadable or from a newer format.
        """
        return self._get_run(run_id)

    def _get_run(self, run_id: str, handle: JobHandle[Any, Any] | None = None) -> Run[Any] | None:
        state = self._load(run_id)
        if state is None or (handle is not None and state.record["job_name"] != handle.name):
            return None
        return self._to_run(state, handle)

    def get_runs(
        self,
        *,
        status: RunStatus | str | Sequence[RunStatus | str] | None = None,
        job_name: str | Sequence[str] | None = None,
        labels: Mapping[str, str] | None = None,
        limit: int | None = None,
        offset: int | None = None,
    ) -> list[Run[Any]]:
        """Runs newest first (ids sort by creation, so ties within a millisecond too).

        Reads only as many runs as the page needs (runs are sharded by creation time).
        A run whose files are damaged is skipped with a warning on the ``durably`` logger.

        Args:
            status: One status or several (any of them matches).
            job_name: One job name or several.
            labels: Every given label must match.
            limit: At most this many runs. offset: Skip this many matches first.
        """
        return self._get_runs(status=status, job_name=job_name, labels=labels,
                              limit=limit, offset=offset)

    def _get_runs(self, *, status: Any, job_name: Any, labels: Mapping[str, str] | None,
                  limit: int | None, offset: int | None,
                  handle: JobHandle[Any, Any] | None = None) -> list[Run[Any]]:
        statuses = _as_set(status, lambda s: RunStatus(s).value, "status")
        jobs = _as_set(job_name, str, "job_name")
        want_labels = dict(labels or {})
        for key in want_labels:
            if not _LABEL_KEY.match(key):
                raise ValidationError(f'Invalid label key "{key}"')
        for name, value in (("limit", limit), ("offset", offset)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
                raise ValidationError(f"{name} must be a non-negative integer, got {value!r}")
        skip = offset or 0
        out: list[Run[Any]] = []
        if limit == 0:
            return out
        for run_id in self._store.run_ids():
            try:
                state = self._store.load(run_id)
            except DurablyError as exc:
                log.warning("skipping run %s: %s", run_id, exc)
                continue
            if state is None or not _matches(state, statuses, jobs, want_labels):
                continue
            if skip:
                skip -= 1
                continue
            try:
                out.append(self._to_run(state, handle))
            except (DurablyError, KeyError, ValueError) as exc:
                log.warning("skipping run %s: %s", run_id, exc)
                continue
            if limit is not None and len(out) >= limit:
                break
        return out

    def get_steps(self, run_id: str) -> list[StepRecord]:
        """Every step attempt of a run, in execution order (replayed steps appear once).

        Raises:
            NotFoundError: no such run.
        """
        state = self._require(run_id)
        steps: list[StepRecord] = []
        open_steps: dict[str, tuple[int, dict[str, Any], int]] = {}
        terminal = state.status in TERMINAL_KINDS
        cancelled = state.status == "cancelled"
        for gen, rec in self._store.journal(state).records:
            kind = rec.get("k")
            if kind == "start":
                open_steps[rec["s"]] = (gen, rec, len(steps))
                steps.append(_step(rec, gen, "running"))
            elif kind in ("done", "fail", "cancel"):
                status = {"done": "completed", "fail": "failed", "cancel": "cancelled"}[kind]
                started = open_steps.pop(rec["s"], None)
                record = _step(rec, gen, status, started[1] if started else None)
                if started is not None and started[0] == gen:
                    steps[started[2]] = record
                else:
                    steps.append(record)
        ended_at = parse_time((state.head or {}).get("at"))
        for i, s in enumerate(steps):
            # A step still "running" in an older generation, or in an ended run, was cut
            # short: its worker died (or was stopped) before the step ended.
            if s.status == "running" and (terminal or s.generation < state.generation):
                steps[i] = dataclasses.replace(
                    s, status="cancelled" if cancelled else "failed",
                    error=None if cancelled else "interrupted: the worker stopped during this step",
                    completed_at=ended_at if terminal else None)
        return steps

    def get_logs(self, run_id: str) -> list[LogEntry]:
        """The run's log lines in the order they were written.

        Raises:
            NotFoundError: no such run.
        """
        state = self._require(run_id)
        return [_log(run_id, rec) for _, rec in self._store.journal(state).records
                if rec.get("k") == "log"]

    def _require(self, run_id: str) -> RunState:
        state = self._load(run_id)
        if state is None:
            raise NotFoundError(f"Run not found: {run_id}", run_id=str(run_id))
        return state

    # -- waiting and watching -----------------------------------------------------------

    def wait_for_run(
        self,
        run_id: str,
        *,
        timeout: float | None = None,
        on_progress: Callable[[Progress], object] | None = None,
        on_log: Callable[[LogEntry], object] | None = None,
    ) -> Run[Any]:
        """Wait until a run ends, whichever process executes it; return it if completed.

        ``on_progress`` and ``on_log`` see progress and logs written after the wait began.

        Raises:
            NotFoundError: no such run (or it was deleted while waiting).
            RunFailedError: the run failed. CancelledError: it was cancelled.
            WaitTimeoutError: ``timeout`` seconds passed; the run goes on.
        """
        return self._wait(run_id, timeout=timeout, on_progress=on_progress, on_log=on_log)

    def _wait(self, run_id: str, *, timeout: float | None,
              on_progress: Callable[[Progress], object] | None,
              on_log: Callable[[LogEntry], object] | None,
              handle: JobHandle[Any, Any] | None = None) -> Run[Any]:
        if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, int | float)
                                    or not 0 <= timeout < float("inf")):
            raise ValidationError(f"timeout must be a non-negative number of seconds, got {timeout!r}")
        deadline = None if timeout is None else time.monotonic() + timeout
        tail = RunTail(self, run_id)
        while True:
            state = tail.poll(on_progress=on_progress, on_log=on_log)
            if state is None:
                raise NotFoundError(f"Run not found: {run_id}", run_id=run_id)
            if state.status in TERMINAL_KINDS:
                run = self._to_run(state, handle)
                if run.status is RunStatus.COMPLETED:
                    return run
                if run.status is RunStatus.CANCELLED:
                    raise CancelledError(run_id)
                raise RunFailedError(run_id, run.error)
            if deadline is not None and time.monotonic() >= deadline:
                raise WaitTimeoutError(f"waitForRun timeout after {timeout}s: run {run_id} is "
                                       f"still {state.status}", run_id=run_id)
            wait = 0.05 if deadline is None else min(0.05, max(0.0, deadline - time.monotonic()))
            time.sleep(wait)

    def subscribe(self, run_id: str, *, poll_interval: float = 0.05) -> Iterator[Event]:
        """Iterate over a run's events as any process writes them.

        Starts with the run's current state (``run:leased``/``run:progress`` for a
        running run, the end event for an ended one), then yields new step, log,
        progress and state events, and stops after the terminal event or ``run:delete``.
        """
        return RunTail(self, run_id).events(poll_interval)

    def changes(self, cursor: str | None = None) -> tuple[list[str] | None, str]:
        """Run ids that changed since ``cursor``, and the cursor to pass next time.

        ``cursor=None`` gives ``([], cursor at the end)``. The list is None when the
        feed cannot tell (rotated or damaged): reload everything. The feed is a hint
        written without fsync; watchers should still refresh active runs now and then.
        """
        return self._store.changes(cursor)

    def is_read_only(self) -> bool:
        """True when this process cannot write the root (a synced copy, a read-only mount)."""
        return self._store.is_read_only()

    # -- events -------------------------------------------------------------------------

    def on(self, event_type: str, listener: Callable[[Any], object]) -> Callable[[], None]:
        """Call ``listener`` with each event of ``event_type`` emitted in this process.

        Returns:
            A function that unsubscribes the listener.
        """
        return self._emitter.on(event_type, listener)

    # -- managing runs ------------------------------------------------------------------

    def cancel(self, run_id: str) -> None:
        """Cancel a pending or leased run at once; its executing step's signal is set.

        Raises:
            NotFoundError: no such run. ConflictError: the run already ended.
        """
        if self._load(run_id) is None:
            raise NotFoundError(f"Run not found: {run_id}", run_id=str(run_id))
        state = self._store.cancel(run_id)
        ex = self._keeper.get(run_id)
        if ex is not None:
            ex.abort("cancelled")
        self._emitter.emit(RunCancelEvent(run_id=run_id, job_name=state.record["job_name"],
                                          labels=dict(state.record.get("labels") or {})))

    def _fail_run(self, run_id: str, error: str) -> bool:
        """End a pending or leased run as failed from outside its owner (run timeouts).

        The owner is fenced like a cancel: its next step or end is refused. Returns
        False if the run had already ended.
        """
        while True:
            state = self._load(run_id)
            if state is None or state.status in TERMINAL_KINDS:
                return False
            in_flight = None
            for _, rec in self._store.journal(state).records:
                if rec.get("k") == "start":
                    in_flight = rec.get("s")
                elif rec.get("k") in ("done", "fail", "cancel") and rec.get("s") == in_flight:
                    in_flight = None
            ended = self._store.end(state, state.generation, {
                "kind": "failed", "error": error, "failed_step": in_flight})
            if ended is not None:
                ex = self._keeper.get(run_id)
                if ex is not None:
                    ex.abort("ended")
                from ._events import RunFailEvent  # noqa: PLC0415

                self._emitter.emit(RunFailEvent(
                    run_id=run_id, job_name=state.record["job_name"],
                    labels=dict(state.record.get("labels") or {}), error=error,
                    failed_step_name=in_flight))
                return True

    def retrigger(self, run_id: str) -> Run[Any]:
        """Start a new pending run with an ended run's input, labels and concurrency key.

        Raises:
            NotFoundError: no such run, or its job is not registered here.
            ConflictError: the run has not ended, or a pending run holds its key.
            ValidationError: its input no longer matches the job's schema.
        """
        state = self._require(run_id)
        if state.status not in TERMINAL_KINDS:
            raise ConflictError(f"Cannot retrigger {state.status} run: {run_id}", run_id=run_id)
        rec = state.record
        handle = self._handles.get(rec["job_name"])
        if handle is None:
            raise NotFoundError(f"Unknown job: {rec['job_name']}", run_id=run_id)
        try:
            result = self._trigger(handle, [BatchItem(rec.get("input"), None, rec.get("concurrency_key"),
                                                      None, rec.get("labels"))], batch=False)[0]
        except ValidationError as exc:
            raise ValidationError(f"Cannot retrigger run {run_id}: {exc}", run_id=run_id) from exc
        return self._get_run(result.id) or result

    def delete_run(self, run_id: str) -> None:
        """Delete an ended run: every file of it, and free its idempotency key.

        Raises:
            NotFoundError: no such run. ConflictError: the run has not ended.
        """
        state = self._require(run_id)
        if state.status not in TERMINAL_KINDS:
            raise ConflictError(f"Cannot delete {state.status} run: {run_id}", run_id=run_id)
        self._store.delete(state)
        self._emitter.emit(RunDeleteEvent(run_id=run_id, job_name=state.record["job_name"],
                                          labels=dict(state.record.get("labels") or {})))

    def purge_runs(self, *, older_than: datetime | timedelta, limit: int = 500) -> int:
        """Delete ended runs whose ``completed_at`` is older than ``older_than``.

        Returns:
            How many runs were deleted (each emits ``run:delete``).
        """
        if isinstance(older_than, timedelta):
            cutoff = datetime.now(UTC) - older_than
        elif isinstance(older_than, datetime):
            cutoff = older_than if older_than.tzinfo else older_than.replace(tzinfo=UTC)
        else:
            raise ValidationError("older_than must be a datetime or a timedelta")
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
            raise ValidationError(f"limit must be a non-negative integer, got {limit!r}")
        deleted = 0
        for run_id in self._store.run_ids(newest_first=False):
            if deleted >= limit or id_time_ms(run_id) / 1000 > cutoff.timestamp():
                break
            try:
                state = self._store.load(run_id)
            except DurablyError:
                continue
            if state is None or state.status not in TERMINAL_KINDS:
                continue
            ended = parse_time((state.head or {}).get("at"))
            if ended is None or ended >= cutoff:
                continue
            self._store.delete(state)
            deleted += 1
            self._emitter.emit(RunDeleteEvent(run_id=run_id, job_name=state.record["job_name"],
                                              labels=dict(state.record.get("labels") or {})))
        return deleted

    # -- workers ------------------------------------------------------------------------

    def _handle_for_claim(self, claim: Claim) -> JobHandle[Any, Any] | None:
        return self._handles.get(claim.state.record["job_name"])

    def _claim_next(self) -> Claim | None:
        if not self._by_hash:
            return None
        self._store.ensure_ready()
        blocked: set[str] = set()
        for run_id, job_hash, key_hash in self._store.queued():
            handle = self._by_hash.get(job_hash)
            if handle is None or self._keeper.get(run_id) is not None:
                continue
            try:
                claim = self._store.try_claim(run_id, key_hash, self._owner,
                                              self._lease_duration, blocked)
            except files.StoreError as exc:  # damaged or newer-format file: skip, never crash
                if run_id not in self._skipped:
                    self._skipped.add(run_id)
                    log.warning("skipping run %s: %s", run_id, exc)
                continue
            if claim is None:
                continue
            if claim.state.record["job_name"] != handle.name:
                claim.release()
                continue
            return claim
        return None

    def process_one(self) -> bool:
        """Claim and execute at most one run in this thread; True if one ran."""
        claim = self._claim_next()
        if claim is None:
            return False
        run_claim(self, claim)
        return True

    def process_until_idle(self, max_runs: int | None = None) -> int:
        """Execute runs one by one until none is claimable (or ``max_runs``); return the count."""
        count = 0
        while max_runs is None or count < max_runs:
            if not self.process_one():
                self._idle_maintenance()
                break
            count += 1
        return count

    def _idle_maintenance(self) -> None:
        """At most once a minute when idle: sweep temp files a crash left in ``tmp/``
        (whatever ``retain_runs`` says), then purge old runs if ``retain_runs`` is set."""
        if self._last_purge and time.monotonic() - self._last_purge < 60:
            return
        self._last_purge = time.monotonic()
        try:
            self._store.sweep_tmp()
            if self._retain_runs is not None:
                self.purge_runs(older_than=self._retain_runs, limit=100)
        except DurablyError as exc:
            from ._events import WorkerErrorEvent  # noqa: PLC0415

            self._emitter.emit(WorkerErrorEvent(run_id=None, job_name=None, labels={},
                                                error=str(exc), context="idle-maintenance"))

    def start(self) -> None:
        """Start a background worker in this process (no-op if it runs already)."""
        if self._worker is not None and self._worker.thread.is_alive():
            return
        self._worker = WorkerLoop(self)
        self._worker.start()

    def stop(self, timeout: float | None = None) -> None:
        """Stop claiming and wait for runs in flight (no-op if not started)."""
        worker, self._worker = self._worker, None
        if worker is not None:
            worker.stop(timeout)

    def __enter__(self) -> Durably:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"<Durably root={self.root!r} jobs={sorted(self._handles)}>"


def _matches(state: RunState, statuses: set[str], jobs: set[str], labels: dict[str, str]) -> bool:
    rec = state.record
    if jobs and rec.get("job_name") not in jobs:
        return False
    if statuses and state.status not in statuses:
        return False
    run_labels = rec.get("labels") or {}
    return all(run_labels.get(k) == v for k, v in labels.items())


def _check_text(value: str, what: str) -> None:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValidationError(f"{what} is not valid unicode") from exc


def _as_set(value: Any, conv: Callable[[Any], str], what: str) -> set[str]:
    if value is None:
        return set()
    items = [value] if isinstance(value, str | RunStatus) else list(value)
    try:
        return {conv(v) for v in items}
    except ValueError as exc:
        raise ValidationError(f"invalid {what} filter: {value!r}") from exc


def _progress(data: Any) -> Progress | None:
    if not isinstance(data, dict):
        return None
    return Progress(data.get("current", 0), data.get("total"), data.get("message"))


def _step(rec: dict[str, Any], gen: int, status: Any, start: dict[str, Any] | None = None) -> StepRecord:
    started = parse_time(rec.get("t0") or (start or {}).get("t") or rec.get("t"))
    return StepRecord(
        name=rec["s"], index=int(rec.get("i", 0)), status=status,
        output=rec.get("o") if status == "completed" else None,
        error=rec.get("e"), traceback=rec.get("tb"),
        started_at=started or datetime.now(UTC),
        completed_at=None if status == "running" else parse_time(rec.get("t")),
        generation=gen,
    )


def _log(run_id: str, rec: dict[str, Any]) -> LogEntry:
    return LogEntry(run_id=run_id, step_name=rec.get("s"), level=rec.get("l", "info"),
                    message=rec.get("m", ""), data=rec.get("d"),
                    created_at=parse_time(rec.get("t")) or datetime.now(UTC))
