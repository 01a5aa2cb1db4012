"""Resuming and forking ended runs: a new run that replays an ended run's checkpoints.

The new run's ``replay.jsonl`` holds copies of the original's completed checkpoints, so
the original is never changed and may be deleted afterwards. The copies are written
before the new run's ``run.json``: a resume interrupted at any point leaves either no
new run or a complete one (``Lifecycle.create``). A replayed value is decoded by the
same codec as in any replay, so it is equal and of the same type as the first time.
"""

from __future__ import annotations

from typing import Any

from ._entries import Entry, StepEnded, StepStarted
from ._errors import ConflictError, NotFoundError, ValidationError
from ._job import BatchItem
from ._models import Run
from ._queries import get_run, require
from ._runtime import Runtime
from ._trigger import check_text, trigger


def checkpoints(entries: list[tuple[int, Entry]], run_id: str, from_step: str | None) -> list[StepEnded]:
    """The completed checkpoints a resume of a run replays (first one of each name):
    all of them, or those written before the first step named ``from_step`` began.

    Raises:
        ValidationError: the run never executed a step named ``from_step``.
    """
    stop = len(entries)
    if from_step is not None:
        for i, (_gen, entry) in enumerate(entries):
            if isinstance(entry, StepStarted | StepEnded) and entry.name == from_step:
                stop = i
                break
        else:
            raise ValidationError(
                f"Cannot resume run {run_id} from step {from_step!r}: "
                "the run never executed a step of that name",
                run_id=run_id,
                step=from_step,
            )
    seen: set[str] = set()
    out: list[StepEnded] = []
    for _gen, entry in entries[:stop]:
        if isinstance(entry, StepEnded) and entry.status == "completed" and entry.name not in seen:
            seen.add(entry.name)
            out.append(entry)
    return out


def resume(rt: Runtime, run_id: str, *, from_step: str | None = None) -> Run[Any]:
    """A new pending run of an ended run's job, input, labels and concurrency key that
    replays its completed checkpoints (those before ``from_step``, if given).

    Raises:
        NotFoundError: no such run, or its job is not registered here.
        ConflictError: the run has not ended; it completed and no ``from_step`` is given,
            or its checkpoints were dropped (``preserve_steps=False``); a pending run holds
            its concurrency key.
        ValidationError: a bad ``from_step``, one the run never executed, or an input
            that no longer matches the job's schema. Nothing is written.
    """
    if from_step is not None:
        if not isinstance(from_step, str) or not from_step:
            raise ValidationError(f"from_step must be a non-empty string, got {from_step!r}")
        check_text(from_step, "from_step")
    state = require(rt.store, run_id)
    rec = state.record
    job = rt.registry.get(rec.job_name)
    if job is None:
        raise NotFoundError(
            f"Cannot resume run {run_id}: its job {rec.job_name!r} is not registered with this Durably",
            run_id=run_id,
        )
    if not state.is_terminal:
        raise ConflictError(
            f"Cannot resume {state.status} run {run_id}: only an ended run can be resumed", run_id=run_id
        )
    if state.status == "completed" and from_step is None:
        raise ConflictError(
            f"Cannot resume completed run {run_id} without from_step: name the step to run again",
            run_id=run_id,
        )
    entries = rt.store.journal(state).entries
    if any(isinstance(e, StepEnded) and e.dropped for _g, e in entries):
        raise ConflictError(
            f"Cannot resume run {run_id}: its checkpoints were dropped when it completed "
            "(preserve_steps=False)",
            run_id=run_id,
        )
    replayed = checkpoints(entries, run_id, from_step)
    item = BatchItem(rec.input, None, rec.concurrency_key, None, rec.labels)
    try:
        result = trigger(
            rt, job, [item], batch=False, resumed_from=run_id, replayed=[e.raw for e in replayed]
        )[0]
    except ValidationError as exc:
        raise ValidationError(f"Cannot resume run {run_id}: {exc}", run_id=run_id) from exc
    return get_run(rt.store, result.id) or result
