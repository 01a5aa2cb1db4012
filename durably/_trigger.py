"""Triggering runs: validating what a trigger asks for, and creating the runs.

Everything is validated before anything is written (a batch's errors say ``at index
i``); a batch of several runs is invisible until it commits, and undone if an item
fails, so it is all-or-nothing even across a crash.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

import orjson
import pydantic

from . import _records as records
from ._codec import safe_detail
from ._errors import DurablyError, NotFoundError, ValidationError
from ._events import RunCoalescedEvent, RunTriggerEvent
from ._ids import new_id
from ._job import COALESCE_VALUES, BatchItem
from ._models import LABEL_KEY, TriggerResult
from ._readmodel import to_run
from ._records import RunRecord, RunState
from ._registry import RegisteredJob
from ._retry import seconds
from ._runtime import Runtime

log = logging.getLogger("durably")


def check_text(value: str, what: str) -> None:
    """Refuse a string that cannot be stored (lone surrogates).

    Raises:
        ValidationError: naming ``what``.
    """
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValidationError(f"{what} is not valid unicode") from exc


def validate_labels(rt: Runtime, labels: Mapping[str, str] | None, where: str) -> dict[str, str]:
    """Labels of a trigger, checked against the instance's labels model (if any).

    Raises:
        ValidationError: a bad key or value, or labels the model refuses.
    """
    given = dict(labels or {})
    schema = rt.options.labels
    if schema is not None:
        try:
            model = schema.model_validate(given)
        except pydantic.ValidationError as exc:
            raise ValidationError(f"labels{where}: Invalid input: {safe_detail(exc)}") from None
        given = {k: v for k, v in model.model_dump(mode="json").items() if v is not None}
    for key, value in given.items():
        if not isinstance(key, str) or not LABEL_KEY.match(key):
            raise ValidationError(
                f'Invalid label key "{key}"{where}: must contain only alphanumeric '
                "characters, dashes, underscores, dots, and slashes"
            )
        if not isinstance(value, str):
            raise ValidationError(f'label "{key}"{where} must be a string, got {type(value).__name__}')
        check_text(value, f'label "{key}"{where}')
    return given


def validate_item(rt: Runtime, job: RegisteredJob, item: BatchItem[Any], where: str) -> RunRecord:
    """Check every option of one trigger (a schedule's too) and encode its input; the
    record returned has no id or creation time yet.

    Raises:
        ValidationError: naming the option (and ``where``).
    """
    if item.coalesce is not None:
        if not isinstance(item.coalesce, str) or item.coalesce not in COALESCE_VALUES:
            valid = ", ".join(repr(v) for v in COALESCE_VALUES)
            raise ValidationError(f"Invalid coalesce value{where}: {item.coalesce!r}. Valid values: {valid}")
        if item.concurrency_key is None:
            raise ValidationError(f"coalesce requires concurrency_key{where}")
    for opt, value in (("idempotency_key", item.idempotency_key), ("concurrency_key", item.concurrency_key)):
        if value is not None and (not isinstance(value, str) or not value):
            raise ValidationError(f"{opt}{where} must be a non-empty string, got {value!r}")
        if isinstance(value, str):
            check_text(value, f"{opt}{where}")
    codec = job.input_codec
    raw = item.input
    if (
        isinstance(raw, pydantic.BaseModel)
        and codec.adapter is not None
        and isinstance(codec.tp, type)
        and not isinstance(raw, codec.tp)
    ):
        raw = raw.model_dump()
    data, _ = codec.encode(raw, f"Invalid input{where}")  # messages never quote values
    wake_at = _start_time(rt, item, where)
    return RunRecord(
        id="",
        job_name=job.name,
        input=orjson.loads(data),
        labels=validate_labels(rt, item.labels, where),
        idempotency_key=item.idempotency_key,
        concurrency_key=item.concurrency_key,
        created_at="",
        wake_at=wake_at,
    )


def _start_time(rt: Runtime, item: BatchItem[Any], where: str) -> str | None:
    """The start time of a delayed trigger (``delay`` or ``run_at``), as stored.

    Raises:
        ValidationError: both given, a negative delay, or a naive ``run_at``.
    """
    if item.delay is None and item.run_at is None:
        return None
    if item.delay is not None and item.run_at is not None:
        raise ValidationError(f"give delay or run_at{where}, not both")
    if item.run_at is not None:
        when = item.run_at
        if not isinstance(when, datetime) or when.tzinfo is None or when.utcoffset() is None:
            raise ValidationError(f"run_at{where} must be an aware datetime (with a time zone), got {when!r}")
        return records.iso(when)
    return records.iso(rt.clock() + timedelta(seconds=seconds(item.delay, f"delay{where}")))


def trigger(
    rt: Runtime,
    job: RegisteredJob,
    items: Sequence[BatchItem[Any]],
    *,
    batch: bool,
    parent_id: str | None = None,
    resumed_from: str | None = None,
    replayed: Sequence[dict[str, Any]] = (),
) -> list[TriggerResult[Any]]:
    """Create (or find, by their keys) one run per item; emit the events; wake workers.

    ``resumed_from`` and ``replayed`` (one item only): the run resumes that ended run,
    starting from these checkpoints (``Durably.resume``).

    Raises:
        ValidationError: an item is invalid (nothing was written).
        ConflictError: a pending run holds an item's concurrency key (nothing is kept).
    """
    if not items:
        return []
    checked = [
        validate_item(rt, job, item, f" at index {i}" if batch else "") for i, item in enumerate(items)
    ]
    store = rt.store
    results: list[TriggerResult[Any]] = []
    created: list[RunState] = []
    # A batch of several runs is invisible until committed, so even a crash half-way
    # leaves none of it (all-or-nothing); an exception undoes it at once.
    batch_id = new_id() if batch and len(items) > 1 else None
    store.open_batch(batch_id)
    try:
        for item, template in zip(items, checked, strict=True):
            record = RunRecord(
                id=new_id(),
                job_name=template.job_name,
                input=template.input,
                labels=template.labels,
                idempotency_key=template.idempotency_key,
                concurrency_key=template.concurrency_key,
                created_at=records.iso(rt.clock()),
                batch=batch_id,
                wake_at=template.wake_at,
                parent_id=parent_id,
                resumed_from=resumed_from,
            )
            state, disposition = store.create_run(
                record,
                coalesce=item.coalesce == "skip",
                queue=item.coalesce == "queue",
                replayed=replayed,
            )
            if disposition == "created":
                created.append(state)
            run = to_run(store, state, job.output_codec)
            fields = {f: getattr(run, f) for f in run.__dataclass_fields__}
            results.append(TriggerResult(**fields, disposition=disposition))  # type: ignore[arg-type]
        if batch_id is not None and created:
            store.commit_batch(batch_id)
    except BaseException:
        for state in created:  # all-or-nothing: undo what this batch created
            _discard(rt, state)
        raise
    finally:
        store.open_batch(None)
    for res, template in zip(results, checked, strict=True):
        if res.disposition == "created":
            rt.emitter.emit(
                RunTriggerEvent(run_id=res.id, job_name=res.job_name, labels=res.labels, input=res.input)
            )
        elif res.disposition == "coalesced":
            rt.emitter.emit(
                RunCoalescedEvent(
                    run_id=res.id,
                    job_name=res.job_name,
                    labels=res.labels,
                    skipped_input=template.input,
                    skipped_labels=template.labels,
                )
            )
    rt.wake.set()
    return results


def _discard(rt: Runtime, state: RunState) -> None:
    try:
        ended = rt.store.end(state, 0, records.ending("cancelled", reason="batch rolled back"))
        rt.store.delete(ended or state)
    except DurablyError as exc:
        log.warning("could not roll back run %s: %s", state.run_id, exc)


def invoker(rt: Runtime, parent: RunState) -> Any:
    """What ``step.invoke`` calls in an execution of ``parent``: trigger (or find again,
    by an idempotency key of the parent and the step) one child run."""

    def invoke(
        job: Any, payload: Any, labels: Mapping[str, str] | None, key: str | None, step_name: str
    ) -> tuple[Any, str, RunState | None]:
        name = getattr(job, "name", None)
        registered = rt.registry.get(name) if isinstance(name, str) else None
        if registered is None:
            raise NotFoundError(
                f"step.invoke {step_name!r}: job {name!r} is not registered with this Durably"
            )
        item = BatchItem(
            input=payload,
            idempotency_key=f"{parent.run_id}/{step_name}",
            concurrency_key=key,
            labels=labels,
        )
        result = trigger(rt, registered, [item], batch=False, parent_id=parent.run_id)[0]
        return registered.output_codec, result.id, rt.store.load(result.id)

    return invoke
