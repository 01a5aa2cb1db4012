"""Defining jobs with `define_job` (docs/api.md: define_job, JobDefinition)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

import durably
from durably import Durably, Step, define_job


class SyncIn(BaseModel):
    org_id: str
    force: bool = False


class SyncOut(BaseModel):
    synced_count: int
    errors: list[str]


def _sync(step: Step, payload: SyncIn) -> SyncOut:
    count = step.run("count", lambda: len(payload.org_id))
    return SyncOut(synced_count=count, errors=[])


class TestDefineJob:
    def test_call_form_returns_definition_with_its_attributes(self) -> None:
        """`define_job(name=, input=, output=, run=)` returns a JobDefinition exposing them."""
        defn = define_job(name="sync-users", input=SyncIn, output=SyncOut, run=_sync)

        assert isinstance(defn, durably.JobDefinition)
        assert defn.name == "sync-users"
        assert defn.input is SyncIn
        assert defn.output is SyncOut
        assert defn.run is _sync

    def test_decorator_form_returns_definition_wrapping_the_function(self) -> None:
        """With `run=None`, `define_job(...)` is a decorator that yields a JobDefinition."""

        @define_job(name="decorated", input=SyncIn, output=SyncOut)
        def decorated(step: Step, payload: SyncIn) -> SyncOut:
            return SyncOut(synced_count=0, errors=[])

        assert isinstance(decorated, durably.JobDefinition)
        assert decorated.name == "decorated"
        assert decorated.input is SyncIn
        assert decorated.output is SyncOut
        assert callable(decorated.run)

    def test_output_defaults_to_none(self) -> None:
        """A definition made without `output` has `output is None`."""
        defn = define_job(name="no-output", input=SyncIn, run=lambda step, payload: None)

        assert defn.output is None

    def test_has_no_side_effects(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        """Defining a job writes no files and registers it nowhere."""
        monkeypatch.chdir(tmp_path)
        monkeypatch.setenv("DURABLY_ROOT", str(tmp_path / "env-root"))

        define_job(name="side-effect-free", input=SyncIn, output=SyncOut, run=_sync)

        assert os.listdir(tmp_path) == []
        instance = Durably(tmp_path / "root", fsync=False)
        try:
            assert instance.get_job("side-effect-free") is None
            assert dict(instance.jobs) == {}
        finally:
            instance.stop()


class TestJobSchemas:
    def test_pydantic_models_validate_input_and_output(self, d: Durably) -> None:
        """A job with model input/output runs on the validated model and returns its output."""
        handle = d.register(define_job(name="sync", input=SyncIn, output=SyncOut, run=_sync))
        result = handle.trigger({"org_id": "acme"})

        assert d.process_until_idle() == 1
        run = handle.get_run(result.id)
        assert run is not None
        assert run.status == durably.RunStatus.COMPLETED
        assert run.output == SyncOut(synced_count=4, errors=[])

    @pytest.mark.parametrize(
        ("input_type", "payload", "output_type", "expected"),
        [
            (dict[str, int], {"a": 1, "b": 2}, int, 3),
            (list[int], [1, 2, 3], list[int], [3, 2, 1]),
            (int, 5, str, "5"),
        ],
    )
    def test_type_adapter_types_work_as_schemas(
        self, d: Durably, input_type: Any, payload: Any, output_type: Any, expected: Any
    ) -> None:
        """`input`/`output` may be any type a pydantic TypeAdapter accepts."""

        def run(step: Step, value: Any) -> Any:
            if isinstance(value, dict):
                return sum(value.values())
            if isinstance(value, list):
                return list(reversed(value))
            return str(value)

        handle = d.register(define_job(name="adapter", input=input_type, output=output_type, run=run))
        result = handle.trigger(payload)
        d.process_until_idle()

        run_ = handle.get_run(result.id)
        assert run_ is not None
        assert run_.status == "completed", run_.error
        assert run_.output == expected

    def test_job_without_output_schema_completes_with_none(self, d: Durably) -> None:
        """A job without `output` whose function returns None completes with output None."""
        handle = d.register(define_job(name="no-out", input=SyncIn, run=lambda step, payload: None))
        result = handle.trigger(SyncIn(org_id="x"))
        d.process_until_idle()

        run = handle.get_run(result.id)
        assert run is not None
        assert run.status == "completed"
        assert run.output is None

    def test_job_without_output_schema_stores_plain_json_output(self, d: Durably) -> None:
        """A job without `output` may return any plain JSON data, which becomes the output."""
        handle = d.register(
            define_job(name="json-out", input=SyncIn, run=lambda step, payload: {"a": [1, "b"]})
        )
        result = handle.trigger(SyncIn(org_id="x"))
        d.process_until_idle()

        run = handle.get_run(result.id)
        assert run is not None
        assert run.status == "completed", run.error
        assert run.output == {"a": [1, "b"]}

    def test_unstorable_output_fails_the_run(self, d: Durably) -> None:
        """A job whose return value cannot be stored fails with an error naming the type."""
        handle = d.register(define_job(name="set-out", input=SyncIn, run=lambda step, payload: {1, 2}))
        result = handle.trigger(SyncIn(org_id="x"))
        d.process_until_idle()

        run = d.get_run(result.id)
        assert run is not None
        assert run.status == "failed"
        assert "set" in (run.error or "")
        assert d.process_until_idle() == 0

    def test_output_returned_as_mapping_is_validated_into_the_model(self, d: Durably) -> None:
        """A job may return a mapping for its output model; the handle gives back the model."""
        handle = d.register(
            define_job(
                name="mapping-out",
                input=SyncIn,
                output=SyncOut,
                # A mapping for the output model is validated at run time; `run` is typed
                # to return the model itself.
                run=lambda step, payload: {"synced_count": 2, "errors": ["e"]},  # type: ignore[arg-type, return-value]
            )
        )
        result = handle.trigger(SyncIn(org_id="x"))
        d.process_until_idle()

        run = handle.get_run(result.id)
        assert run is not None
        assert run.status == "completed", run.error
        assert run.output == SyncOut(synced_count=2, errors=["e"])

    def test_output_that_does_not_match_the_schema_fails_the_run(self, d: Durably) -> None:
        """A return value that fails the output schema fails the run, naming the output."""
        handle = d.register(
            define_job(
                name="bad-out",
                input=SyncIn,
                output=SyncOut,
                run=lambda step, payload: {"synced_count": "many"},  # type: ignore[arg-type, return-value]
            )
        )
        result = handle.trigger(SyncIn(org_id="x"))
        d.process_until_idle()

        run = d.get_run(result.id)
        assert run is not None
        assert run.status == "failed"
        assert run.error is not None
        assert "output" in run.error.lower()


class TestRunFunctionKinds:
    def test_sync_def_job_runs(self, d: Durably) -> None:
        """`run` may be a plain `def`."""

        def job(step: Step, payload: SyncIn) -> dict[str, str]:
            return {"org": step.run("org", lambda: payload.org_id)}

        handle = d.register(define_job(name="sync-def", input=SyncIn, run=job))
        result = handle.trigger(SyncIn(org_id="acme"))
        d.process_until_idle()

        run = d.get_run(result.id)
        assert run is not None
        assert run.status == "completed", run.error
        assert run.output == {"org": "acme"}

    def test_async_def_job_runs(self, d: Durably) -> None:
        """`run` may be an `async def` that awaits `step.run`."""

        async def job(step: Step, payload: SyncIn) -> dict[str, str]:
            org = await step.run("org", lambda: payload.org_id)  # type: ignore[misc]
            return {"org": org}

        handle = d.register(define_job(name="async-def", input=SyncIn, run=job))
        result = handle.trigger(SyncIn(org_id="acme"))
        d.process_until_idle()

        run = d.get_run(result.id)
        assert run is not None
        assert run.status == "completed", run.error
        assert run.output == {"org": "acme"}
