"""Misuses of the public API that `mypy` must reject (checked by tests/test_typing.py).

Each `# E: <id>` comment marks a line where an error is expected; lines sharing an id
are alternatives (mypy may report a decorator mismatch on either line). No other line
may have an error.
"""

from __future__ import annotations

from pydantic import BaseModel

from durably import Durably, Step, define_job


class SyncIn(BaseModel):
    org_id: str


class SyncOut(BaseModel):
    synced_count: int


class OtherIn(BaseModel):
    name: str


@define_job(name="sync-users", input=SyncIn, output=SyncOut)
def sync_users(step: Step, payload: SyncIn) -> SyncOut:
    return SyncOut(synced_count=1)


def wrong_input_model(durably: Durably) -> None:
    handle = durably.register(sync_users)
    handle.trigger(OtherIn(name="x"))  # E: wrong-input-model


def wrong_output_attribute(durably: Durably) -> None:
    result = durably.register(sync_users).trigger_and_wait(SyncIn(org_id="a"))
    result.output.no_such_field  # E: wrong-output-attribute  # noqa: B018


@define_job(name="bad-return", input=SyncIn, output=SyncOut)  # E: run-returns-wrong-type
def bad_return(step: Step, payload: SyncIn) -> int:  # E: run-returns-wrong-type
    return 1


def _takes_other(step: Step, payload: OtherIn) -> SyncOut:
    return SyncOut(synced_count=0)


mismatched = define_job(  # E: run-takes-wrong-input
    name="m",
    input=SyncIn,
    output=SyncOut,
    run=_takes_other,  # E: run-takes-wrong-input
)
