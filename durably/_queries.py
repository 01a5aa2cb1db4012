"""Reading runs through the API: ``get_run``, ``get_runs``, ``get_steps``, ``get_logs``."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

from ._codec import Codec
from ._errors import DurablyError, NotFoundError, ValidationError
from ._models import LABEL_KEY, LogEntry, Run, RunStatus, StepRecord
from ._readmodel import interrupted_at, to_logs, to_run, to_steps
from ._records import RunState
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
) -> list[Run[Any]]:
    """Runs newest first, filtered; reads only as many runs as the page needs.

    Raises:
        ValidationError: a bad filter, limit or offset.
    """
    statuses = _as_set(status, lambda s: RunStatus(s).value, "status")
    jobs = _as_set(job_name, str, "job_name")
    want_labels = dict(labels or {})
    for key in want_labels:
        if not LABEL_KEY.match(key):
            raise ValidationError(f'Invalid label key "{key}"')
    for name, value in (("limit", limit), ("offset", offset)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
            raise ValidationError(f"{name} must be a non-negative integer, got {value!r}")
    skip = offset or 0
    out: list[Run[Any]] = []
    if limit == 0:
        return out
    for run_id in store.run_ids():
        try:
            state = store.load(run_id)
        except DurablyError as exc:
            log.warning("skipping run %s: %s", run_id, exc)
            continue
        if state is None or not _matches(state, statuses, jobs, want_labels, parent_id):
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
