"""The public API used the way users write it; `mypy --strict` must accept this file.

Checked by tests/test_typing.py. Never executed: everything runs inside functions.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any, assert_type

from pydantic import BaseModel

from durably import (
    BatchItem,
    Durably,
    JobDefinition,
    JobHandle,
    LogEntry,
    Run,
    RunStatus,
    Step,
    StepRecord,
    TriggerAndWaitResult,
    TriggerResult,
    define_job,
)


class SyncIn(BaseModel):
    org_id: str
    force: bool = False


class SyncOut(BaseModel):
    synced_count: int
    errors: list[str]


def fetch_users(org_id: str) -> list[dict[str, str]]:
    return [{"id": org_id}]


@define_job(name="sync-users", input=SyncIn, output=SyncOut)
def sync_users(step: Step, payload: SyncIn) -> SyncOut:
    users = step.run("fetch-users", lambda: fetch_users(payload.org_id))
    assert_type(users, list[dict[str, str]])
    count = step.run("count", lambda: len(users))
    assert_type(count, int)
    step.progress(1, 2, "half")
    step.log.info("synced", data={"count": count})
    return SyncOut(synced_count=count, errors=[])


assert_type(sync_users, JobDefinition[SyncIn, SyncOut])


def _call_form(step: Step, payload: SyncIn) -> SyncOut:
    return SyncOut(synced_count=0, errors=[])


call_form = define_job(name="call-form", input=SyncIn, output=SyncOut, run=_call_form)
assert_type(call_form, JobDefinition[SyncIn, SyncOut])


def _sum(step: Step, payload: dict[str, int]) -> int:
    return sum(payload.values())


adapter_job = define_job(name="adapter", input=dict[str, int], output=int, run=_sum)
assert_type(adapter_job, JobDefinition[dict[str, int], int])


def use_adapter_job(durably: Durably) -> None:
    handle = durably.register(adapter_job)
    assert_type(handle, JobHandle[dict[str, int], int])
    assert_type(handle.trigger_and_wait({"a": 1}).output, int)


def use_handle(durably: Durably) -> None:
    handle = durably.register(sync_users)
    assert_type(handle, JobHandle[SyncIn, SyncOut])

    result = handle.trigger(SyncIn(org_id="acme"), idempotency_key="k", labels={"a": "b"})
    assert_type(result, TriggerResult[SyncOut])
    assert_type(result.id, str)
    handle.trigger({"org_id": "acme"})

    waited = handle.trigger_and_wait(SyncIn(org_id="acme"), timeout=5.0)
    assert_type(waited, TriggerAndWaitResult[SyncOut])
    assert_type(waited.output, SyncOut)
    assert_type(waited.id, str)

    run = handle.get_run(result.id)
    assert_type(run, Run[SyncOut] | None)
    if run is not None:
        assert_type(run.output, SyncOut | None)
        assert_type(run.status, RunStatus)
        assert_type(run.is_terminal, bool)

    assert_type(handle.get_runs(), list[Run[SyncOut]])
    since = datetime.now(UTC) - timedelta(hours=1)
    assert_type(handle.get_runs(created_after=since, created_before=datetime.now(UTC)), list[Run[SyncOut]])
    batch = handle.batch_trigger([SyncIn(org_id="a"), BatchItem(SyncIn(org_id="b"), idempotency_key="k")])
    assert_type(batch, list[TriggerResult[SyncOut]])


def use_durably(durably: Durably) -> None:
    with Durably(".durably", jobs=[sync_users], max_concurrent_runs=2) as other:
        other.start()
    assert_type(durably.get_steps("id"), list[StepRecord])
    assert_type(durably.get_logs("id"), list[LogEntry])
    assert_type(durably.process_one(), bool)
    assert_type(durably.process_until_idle(max_runs=3), int)
    assert_type(durably.purge_runs(older_than=durably_cutoff()), int)
    runs = durably.get_runs(status=["completed", "failed"], job_name="sync-users", limit=5)
    for any_run in runs:
        assert_type(any_run.id, str)
    resumed = durably.resume("id", from_step="fetch-users")
    assert_type(resumed.resumed_from, str | None)
    assert_type(durably.get_runs(created_after=datetime.now(UTC) - timedelta(hours=2)), list[Run[Any]])
    unsubscribe = durably.on("run:complete", lambda event: None)
    unsubscribe()


def durably_cutoff() -> timedelta:
    return timedelta(days=30)


async def async_job(step: Step, payload: SyncIn) -> SyncOut:
    return SyncOut(synced_count=0, errors=[])


async_defn = define_job(name="async", input=SyncIn, output=SyncOut, run=async_job)
