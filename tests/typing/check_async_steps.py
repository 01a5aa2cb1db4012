"""An `async def` job as docs/api.md (Step) writes it: `await step.run(...)` with async and sync `fn`,
its step annotated `AsyncStep` (what an async job receives).

Checked by tests/test_typing.py. Never executed.
"""

from __future__ import annotations

from typing import assert_type

from pydantic import BaseModel

from durably import AsyncStep, JobDefinition, define_job


class SyncIn(BaseModel):
    org_id: str


class SyncOut(BaseModel):
    synced_count: int


async def fetch_count(org_id: str) -> int:
    return len(org_id)


async def async_job(step: AsyncStep, payload: SyncIn) -> SyncOut:
    from_async = await step.run("async-fn", lambda: fetch_count(payload.org_id))
    assert_type(from_async, int)
    from_sync = await step.run("sync-fn", lambda: len(payload.org_id))
    assert_type(from_sync, int)
    return SyncOut(synced_count=from_async + from_sync)


async_defn = define_job(name="async", input=SyncIn, output=SyncOut, run=async_job)
assert_type(async_defn, JobDefinition[SyncIn, SyncOut])
