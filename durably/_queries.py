"""Reading runs through the API: ``get_run``, ``get_runs``, ``get_steps``, ``get_logs``."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from ._codec import Codec
from ._errors import DurablyError, NotFoundError, ValidationError
from ._ids import id_time_ms, time_prefix
from ._models import LABEL_KEY, LogEntry, Run, RunStatus, StepRecord
from ._readmodel import interrupted_at, to_logs, to_run, to_steps
from ._records import RunState, parse_time
from ._store import Store

log = logging.getLogger("durably")


def load(store: Store, run_id: object) -> RunState | None:
    """A run's state, or None.

    Raises:
        ValidationError: ``run_id`` is not a string.
    """
    if not isinstance(run_id, str):
        raise ValidationError(f"run id must be a string, got {type(run_id).__name__}")
    return store.load(run_id)


def require(store: Store, run_id: object) -> RunState:
    """A run's state.

    Raises:
        NotFoundError: no such run.
    """
    state = load(store, run_id)
    if state is None:
        raise NotFoundError(f"Run not found: {run_id}", run_id=str(run_id))
    return state


def get_run(
    store: Store, run_id: str, *, job_name: str | None = None, output: Codec | None = None
) -> Run[Any] | None:
    """The run with that id (None also for another job's run when ``job_name`` is given)."""
    state = load(store, run_id)
    if state is None or (job_name is not None and state.record.job_name != job_name):
        return None
    return to_run(store, state, output)


def _as_set(value: Any, conv: Callable[[Any], str], what: str) -> set[str]:
    if value is None:
        return set()
    items = [value] if isinstance(value, str | RunStatus) else list(value)
    try:
        return {conv(v) for v in items}
    except ValueError as exc:
        raise ValidationError(f"invalid {what} filter: {value!r}") from exc


def _matches(
    state: RunState, statuses: set[str], jobs: set[str], labels: dict[str, str], parent_id: str | None
) -> bool:
    rec = state.record
    if parent_id is not None and rec.parent_id != parent_id:
        return False
    if jobs and rec.job_name not in jobs:
        return False
    if statuses and state.status not in statuses:
        return False
    return all(rec.labels.get(k) == v for k, v in labels.items())


_SLACK_MS = 1000
"""How far a run's ``created_at`` may be from its id's time (both read the clock at its
trigger, one after the other): the shards listed for a time window reach this far."""


def _bound(value: object, name: str, slack: int) -> tuple[datetime | None, str | None]:
    """A ``created_after``/``created_before`` bound, and the id time prefix that bounds
    the shards to list (``slack`` ms further out).

    Raises:
        ValidationError: not an aware datetime.
    """
    if value is None:
        return None, None
    if not isinstance(value, datetime) or value.tzinfo is None or value.utcoffset() is None:
        raise ValidationError(f"{name} must be an aware datetime (with a time zone), got {value!r}")
    return value, time_prefix(int(value.timestamp() * 1000) + slack)


def _created_within(state: RunState, after: datetime | None, before: datetime | None) -> bool:
    if after is None and before is None:
        return True
    created = parse_time(state.record.created_at)
    if created is None:
        created = datetime.fromtimestamp(id_time_ms(state.run_id) / 1000, UTC)
    return (after is None or created >= after) and (before is None or created < before)


def _check_page(limit: object, offset: object) -> None:
    for name, value in (("limit", limit), ("offset", offset)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
            raise ValidationError(f"{name} must be a non-negative integer, got {value!r}")


def get_runs(
    store: Store,
    *,
    status: Any,
    job_name: Any,
    labels: Mapping[str, str] | None,
    limit: int | None,
    offset: int | None,
    output: Codec | None = None,
    parent_id: str | None = None,
    created_after: datetime | None = None,
    created_before: datetime | None = None,
) -> list[Run[Any]]:
    """Runs newest first, filtered; reads only as many runs as the page needs, and only
    the shards of the ``created_after`` (inclusive) to ``created_before`` (exclusive)
    window (run ids, and so shards, sort by creation time).

    Raises:
        ValidationError: a bad filter, limit or offset.
    """
    statuses = _as_set(status, lambda s: RunStatus(s).value, "status")
    jobs = _as_set(job_name, str, "job_name")
    want_labels = dict(labels or {})
    for key in want_labels:
        if not LABEL_KEY.match(key):
            raise ValidationError(f'Invalid label key "{key}"')
    _check_page(limit, offset)
    after, low = _bound(created_after, "created_after", -_SLACK_MS)
    before, high = _bound(created_before, "created_before", _SLACK_MS)
    skip = offset or 0
    out: list[Run[Any]] = []
    if limit == 0:
        return out
    for run_id in store.run_ids(after=low, before=high):
        try:
            state = store.load(run_id)
        except DurablyError as exc:
            log.warning("skipping run %s: %s", run_id, exc)
            continue
        if state is None or not _matches(state, statuses, jobs, want_labels, parent_id):
            continue
        if not _created_within(state, after, before):
            continue
        if skip:
            skip -= 1
            continue
        try:
            out.append(to_run(store, state, output))
        except (DurablyError, KeyError, ValueError) as exc:
            log.warning("skipping run %s: %s", run_id, exc)
            continue
        if limit is not None and len(out) >= limit:
            break
    return out


def get_steps(store: Store, run_id: str) -> list[StepRecord]:
    """Every step attempt of a run, in execution order.

    Raises:
        NotFoundError: no such run.
    """
    state = require(store, run_id)
    return to_steps(state, store.journal(state), interrupted_at(store, state))


def get_logs(store: Store, run_id: str) -> list[LogEntry]:
    """A run's log lines in the order they were written.

    Raises:
        NotFoundError: no such run.
    """
    state = require(store, run_id)
    return to_logs(run_id, store.journal(state))
