"""Steps (docs/api.md: Step; docs/concepts.md: Steps): checkpoints, replay, value fidelity,
names, progress, logs, async."""

from __future__ import annotations

import asyncio
import pickle
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from functools import partial
from typing import Any

import pytest
from apps import second_process
from apps.children import finish, start_python
from helpers import wait_until
from pydantic import BaseModel

from durably import AsyncStep, Durably, Step, ValidationError, define_job

Factory = Callable[..., Durably]


class In(BaseModel):
    value: int = 1


class Point(BaseModel):
    x: int
    y: int


WHEN = datetime(2024, 5, 6, 7, 8, 9, 654321, tzinfo=UTC)


def run_job(d: Durably, run: Callable[..., Any], *, name: str = "job", **trigger: Any) -> Any:
    """Register `run` as a job, trigger it once, process until idle, return the stored Run."""
    handle = d.register(define_job(name=name, input=In, run=run))
    result = handle.trigger(In(), **trigger)
    d.process_until_idle()
    stored = d.get_run(result.id)
    assert stored is not None
    return stored


class TestStepRun:
    def test_an_async_job_receives_an_async_step_and_a_sync_job_a_step(self, d: Durably) -> None:
        """An ``async def`` job gets an ``AsyncStep`` (so ``step: AsyncStep`` is honest and
        type-checks ``await step.run(name, sync_fn)``); a sync job gets a plain ``Step``."""
        seen: list[tuple[str, int]] = []

        async def async_job(step: AsyncStep, payload: In) -> None:
            seen.append((type(step).__name__, await step.run("sync-fn", lambda: 1)))

        def sync_job(step: Step, payload: In) -> None:
            seen.append((type(step).__name__, step.run("sync-fn", lambda: 2)))

        assert run_job(d, async_job, name="a").status == "completed"
        assert run_job(d, sync_job, name="s").status == "completed"
        assert seen == [("AsyncStep", 1), ("Step", 2)]

    def test_calls_fn_without_arguments_and_returns_its_value(self, d: Durably) -> None:
        """`step.run(name, fn)` calls `fn()` once, with no arguments, and returns its value."""
        seen: list[Any] = []
        calls: list[int] = []

        def fn() -> int:
            calls.append(1)
            return 42

        def job(step: Step, payload: In) -> None:
            seen.append(step.run("answer", fn))

        run = run_job(d, job)

        assert run.status == "completed", run.error
        assert seen == [42]
        assert calls == [1]

    def test_writes_a_completed_checkpoint_per_step(self, durably_factory: Factory) -> None:
        """Each step becomes a completed StepRecord with its name, index and output."""
        d = durably_factory(preserve_steps=True)

        def job(step: Step, payload: In) -> None:
            step.run("first", lambda: "one")
            step.run("second", lambda: {"two": 2})

        run = run_job(d, job)
        steps = d.get_steps(run.id)

        assert [(s.name, s.index, s.status, s.output) for s in steps] == [
            ("first", 0, "completed", "one"),
            ("second", 1, "completed", {"two": 2}),
        ]
        assert run.completed_step_count == 2

    def test_step_context_exposes_run_id_and_an_unset_signal(self, d: Durably) -> None:
        """`step.run_id` is the run's id; `signal` is an unset threading.Event while running."""
        seen: dict[str, Any] = {}

        def job(step: Step, payload: In) -> None:
            seen["run_id"] = step.run_id
            seen["signal"] = step.signal
            seen["was_set"] = step.signal.is_set()
            seen["aborted"] = step.is_aborted()
            step.raise_if_aborted()

        run = run_job(d, job)

        assert run.status == "completed", run.error
        assert seen["run_id"] == run.id
        assert isinstance(seen["signal"], threading.Event)
        assert seen["was_set"] is False
        assert seen["aborted"] is False


@pytest.fixture(scope="module")
def crash_resume(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """Run the `fidelity` job in a child that dies after its checkpoints; resume it here."""
    base = tmp_path_factory.mktemp("replay")
    root, workdir = base / "root", base / "work"
    workdir.mkdir()
    d = second_process.make(root)
    try:
        result = d.jobs["fidelity"].trigger(second_process.WorkIn(workdir=str(workdir)))
        code, _, err = finish(start_python(["process", str(root)]))
        assert code == 17, err
        # The dead child's run is claimable at once on the same host.
        wait_until(lambda: d.process_until_idle() == 1)
        run = d.get_run(result.id)
        assert run is not None
        first = pickle.loads((workdir / "values-1.pkl").read_bytes())
        second = pickle.loads((workdir / "values-2.pkl").read_bytes())
        steps = d.get_steps(result.id)
        yield {"run": run, "first": first, "second": second, "workdir": workdir, "steps": steps}
    finally:
        d.stop()


FIDELITY_STEPS = [
    "json",
    "annotated-datetime",
    "returns-datetime",
    "model",
    "returns-model",
    "tuple",
    "list-of-models",
    "date",
    "uuid",
    "decimal",
    "none",
]


@pytest.mark.slow
class TestReplay:
    def test_resumed_run_completes(self, crash_resume: dict[str, Any]) -> None:
        """A run whose worker died mid-run completes when another worker resumes it."""
        run = crash_resume["run"]

        assert run.status == "completed", run.error
        assert run.output == {"executions": 2}

    @pytest.mark.parametrize("name", FIDELITY_STEPS)
    def test_completed_steps_are_not_called_again(self, crash_resume: dict[str, Any], name: str) -> None:
        """On replay a completed step returns its checkpoint without calling `fn`."""
        assert second_process.calls(crash_resume["workdir"], name) == 1

    @pytest.mark.parametrize("name", FIDELITY_STEPS)
    def test_replay_returns_an_equal_value_of_the_same_type(
        self, crash_resume: dict[str, Any], name: str
    ) -> None:
        """First execution and replay return equal values of the same type."""
        first, second = crash_resume["first"][name], crash_resume["second"][name]

        assert type(second) is type(first)
        assert second == first

    @pytest.mark.parametrize(
        ("name", "expected"),
        [
            ("json", {"a": [1, 2.5, "x", None, True], "b": {"nested": -3}}),
            ("annotated-datetime", second_process.WHEN),
            ("returns-datetime", second_process.WHEN),
            ("model", second_process.Point(x=1, y=2)),
            ("returns-model", second_process.Point(x=3, y=4, label="q")),
            ("tuple", (1, "a")),
            ("list-of-models", [second_process.Point(x=5, y=6), second_process.Point(x=7, y=8)]),
            ("none", None),
        ],
    )
    def test_values_have_the_declared_type(
        self, crash_resume: dict[str, Any], name: str, expected: Any
    ) -> None:
        """The type comes from `returns=`, else the annotation, else it is plain JSON data."""
        for execution in ("first", "second"):
            value = crash_resume[execution][name]
            assert type(value) is type(expected), execution
            assert value == expected, execution

    def test_completed_step_count_counts_each_step_once(self, crash_resume: dict[str, Any]) -> None:
        """Replayed steps are not counted twice: every step of the job is counted once."""
        assert crash_resume["run"].completed_step_count == len(FIDELITY_STEPS) + 1

    def test_step_indexes_are_not_inflated_by_replay(self, crash_resume: dict[str, Any]) -> None:
        """After a resume, each completed step keeps its position as its index."""
        completed = [(s.index, s.name) for s in crash_resume["steps"] if s.status == "completed"]

        assert completed == list(enumerate([*FIDELITY_STEPS, "crash"]))

    def test_claim_after_a_crash_increments_the_lease_generation(self, crash_resume: dict[str, Any]) -> None:
        """The resuming claim is the run's second, so `lease_generation` is 2."""
        assert crash_resume["run"].lease_generation == 2


class TestValueFidelityFirstExecution:
    def test_returns_type_is_applied_on_first_execution(self, d: Durably) -> None:
        """With `returns=`, the first execution already returns the declared type."""
        seen: list[Any] = []

        def job(step: Step, payload: In) -> None:
            seen.append(step.run("when", WHEN.isoformat, returns=datetime))
            seen.append(step.run("point", lambda: {"x": 1, "y": 2}, returns=Point))

        run = run_job(d, job)

        assert run.status == "completed", run.error
        assert seen == [WHEN, Point(x=1, y=2)]
        assert [type(v) for v in seen] == [datetime, Point]

    def test_annotation_is_used_when_returns_is_absent(self, d: Durably) -> None:
        """Without `returns=`, `fn`'s return annotation gives the type."""
        seen: list[Any] = []

        def pair() -> tuple[int, int]:
            return (1, 2)

        def job(step: Step, payload: In) -> None:
            seen.append(step.run("pair", pair))

        run = run_job(d, job)

        assert run.status == "completed", run.error
        assert seen == [(1, 2)]
        assert type(seen[0]) is tuple

    def test_plain_json_values_pass_through(self, d: Durably) -> None:
        """Without a type, plain JSON data is returned as the same plain data."""
        seen: list[Any] = []
        data = {"s": "x", "i": 1, "f": 1.5, "b": False, "n": None, "l": [1, "2"]}

        def job(step: Step, payload: In) -> None:
            seen.append(step.run("data", lambda: data))

        run = run_job(d, job)

        assert run.status == "completed", run.error
        assert seen == [data]

    def test_checkpoint_read_back_is_plain_json(self, durably_factory: Factory) -> None:
        """A typed step's checkpoint is stored as JSON data (e.g. a datetime as a string)."""
        d = durably_factory(preserve_steps=True)

        def job(step: Step, payload: In) -> None:
            step.run("point", lambda: Point(x=1, y=2), returns=Point)

        run = run_job(d, job)

        (record,) = d.get_steps(run.id)
        assert record.output == {"x": 1, "y": 2}


class Unstorable:
    """A value that is not JSON data and has no declared type."""


class TestUnstorableValues:
    @pytest.mark.parametrize(
        ("value", "type_name"),
        [
            pytest.param(float("nan"), "float", id="nan"),
            pytest.param(float("inf"), "float", id="inf"),
            pytest.param(2**70, "int", id="int-beyond-64-bits"),
            pytest.param({1, 2}, "set", id="set"),
            pytest.param(object(), "object", id="object"),
            pytest.param(Unstorable(), "Unstorable", id="custom-class"),
            pytest.param({"nested": [float("nan")]}, "", id="nested-nan"),
        ],
    )
    def test_value_that_cannot_be_stored_fails_the_step_naming_step_and_type(
        self, durably_factory: Factory, value: Any, type_name: str
    ) -> None:
        """An unstorable value fails the step and the run at once, naming the step and type."""
        d = durably_factory(preserve_steps=True)
        calls: list[int] = []

        def fn():  # type: ignore[no-untyped-def]
            calls.append(1)
            return value

        def job(step: Step, payload: In) -> None:
            step.run("the-bad-step", fn)

        run = run_job(d, job)

        assert run.status == "failed"
        assert "the-bad-step" in run.error
        assert type_name in run.error
        assert calls == [1]
        assert d.process_until_idle() == 0
        steps = d.get_steps(run.id)
        assert [(s.name, s.status) for s in steps] == [("the-bad-step", "failed")]

    def test_unstorable_value_in_an_async_job_fails_the_step(self, d: Durably) -> None:
        """An async job's unstorable step value fails the run, naming the step and type."""

        async def fn():  # type: ignore[no-untyped-def]
            return {1, 2}

        async def job(step: AsyncStep, payload: In) -> None:
            await step.run("async-bad-step", fn)

        run = run_job(d, job)

        assert run.status == "failed"
        assert "async-bad-step" in run.error
        assert "set" in run.error
        assert d.process_until_idle() == 0


class TestStepNames:
    def test_same_name_twice_in_one_execution_raises_validation_error(self, d: Durably) -> None:
        """Calling `run` twice with one name in one execution raises ValidationError."""
        caught: list[BaseException] = []
        calls: list[str] = []

        def call(name: str, value: int) -> int:
            calls.append(name)
            return value

        def job(step: Step, payload: In) -> None:
            step.run("same", partial(call, "first", 1))
            try:
                step.run("same", partial(call, "second", 2))
            except ValidationError as exc:
                caught.append(exc)

        run = run_job(d, job)

        assert run.status == "completed", run.error
        assert len(caught) == 1
        assert "same" in str(caught[0])
        assert calls == ["first"]

    def test_uncaught_duplicate_name_fails_the_run(self, d: Durably) -> None:
        """An uncaught duplicate-name error fails the run."""

        def job(step: Step, payload: In) -> None:
            step.run("dup", lambda: 1)
            step.run("dup", lambda: 2)

        run = run_job(d, job)

        assert run.status == "failed"
        assert "dup" in run.error

    @pytest.mark.parametrize("name", ["a/b", "../escape", "naïve ünïcode ✓", "with spaces", "x" * 1000, "."])
    def test_step_names_are_data(self, durably_factory: Factory, name: str) -> None:
        """Step names with any characters and up to 1,000 characters work."""
        d = durably_factory(preserve_steps=True)

        def job(step: Step, payload: In) -> str:
            return step.run(name, lambda: "ok")

        run = run_job(d, job)

        assert run.status == "completed", run.error
        assert [s.name for s in d.get_steps(run.id)] == [name]


class TestStepFailure:
    def test_raising_step_fails_the_run_and_records_the_step(self, durably_factory: Factory) -> None:
        """A step that raises fails the run with its message; the step keeps error+traceback."""
        d = durably_factory(preserve_steps=True)
        later: list[int] = []

        def boom() -> None:
            raise RuntimeError("boom goes the step")

        def job(step: Step, payload: In) -> None:
            step.run("ok", lambda: 1)
            step.run("explodes", boom)
            later.append(1)

        run = run_job(d, job)

        assert run.status == "failed"
        assert "boom goes the step" in run.error
        assert run.completed_at is not None
        assert later == []
        steps = d.get_steps(run.id)
        assert [(s.name, s.status) for s in steps] == [("ok", "completed"), ("explodes", "failed")]
        failed = steps[1]
        assert "boom goes the step" in (failed.error or "")
        assert "RuntimeError" in (failed.traceback or "")
        assert "boom" in (failed.traceback or "")

    def test_error_outside_any_step_fails_the_run(self, d: Durably) -> None:
        """An exception raised by the job outside any step fails the run with its message."""

        def job(step: Step, payload: In) -> None:
            raise ValueError("job failed intentionally")

        run = run_job(d, job)

        assert run.status == "failed"
        assert "job failed intentionally" in run.error

    def test_failed_run_is_not_retried(self, d: Durably) -> None:
        """A failed run is terminal: processing again runs nothing."""
        calls: list[int] = []

        def job(step: Step, payload: In) -> None:
            calls.append(1)
            raise ValueError("once")

        run_job(d, job)

        assert d.process_until_idle() == 0
        assert calls == [1]


class TestProgressAndLogs:
    def test_progress_and_logs_are_visible_to_other_readers_mid_run(
        self, durably_factory: Factory, gates: Any
    ) -> None:
        """Progress and logs are persisted while the run is still executing."""
        gate, reached = gates(), threading.Event()
        d = durably_factory()
        reader = durably_factory()

        def job(step: Step, payload: In) -> None:
            step.progress(1, 3, "first third")
            step.log.info("outside any step")

            def inside() -> None:
                step.log.warn("inside the step", data={"k": 1})
                reached.set()
                gate.wait(30)

            step.run("working", inside)

        handle = d.register(define_job(name="job", input=In, run=job))
        result = handle.trigger(In())
        d.start()
        assert reached.wait(10)

        def seen() -> bool:
            run = reader.get_run(result.id)
            return run is not None and run.progress is not None and len(reader.get_logs(result.id)) == 2

        wait_until(seen)
        run = reader.get_run(result.id)
        assert run is not None
        assert run.status == "leased"
        assert run.progress is not None
        assert (run.progress.current, run.progress.total, run.progress.message) == (
            1,
            3,
            "first third",
        )
        logs = reader.get_logs(result.id)
        assert [(log.level, log.message, log.step_name, log.data) for log in logs] == [
            ("info", "outside any step", None, None),
            ("warn", "inside the step", "working", {"k": 1}),
        ]
        gate.set()
        d.wait_for_run(result.id, timeout=10)

    def test_last_progress_and_logs_remain_after_completion(self, d: Durably) -> None:
        """After the run completes, its last progress and all its logs are still readable."""

        def job(step: Step, payload: In) -> None:
            step.progress(1)
            step.run("s1", lambda: step.log.error("in s1"))
            step.progress(2, 2, "done")

        run = run_job(d, job)

        assert run.status == "completed", run.error
        assert (run.progress.current, run.progress.total, run.progress.message) == (2, 2, "done")
        logs = d.get_logs(run.id)
        assert [(log.level, log.message, log.step_name) for log in logs] == [("error", "in s1", "s1")]

    @pytest.mark.parametrize("level", ["info", "warn", "error"])
    def test_log_levels(self, d: Durably, level: str) -> None:
        """`step.log.info|warn|error` record the levels "info", "warn" and "error"."""

        def job(step: Step, payload: In) -> None:
            getattr(step.log, level)(f"a {level} message", data={"level": level})

        run = run_job(d, job)

        (log,) = d.get_logs(run.id)
        assert (log.level, log.message, log.data) == (level, f"a {level} message", {"level": level})

    def test_progress_total_and_message_are_optional(self, d: Durably) -> None:
        """`progress(current)` stores total and message as None."""

        def job(step: Step, payload: In) -> None:
            step.progress(50)

        run = run_job(d, job)

        assert (run.progress.current, run.progress.total, run.progress.message) == (50, None, None)


class TestAsyncJobs:
    def test_async_job_awaits_sync_and_async_step_functions(self, d: Durably) -> None:
        """In an `async def` job, `await step.run(...)` accepts sync and async `fn`."""

        async def fetch() -> int:
            await asyncio.sleep(0)
            return 20

        async def job(step: AsyncStep, payload: In) -> dict[str, int]:
            a = await step.run("sync-fn", lambda: 1)
            b = await step.run("async-fn", fetch)
            return {"total": a + b}

        run = run_job(d, job)

        assert run.status == "completed", run.error
        assert run.output == {"total": 21}
        assert [s.name for s in d.get_steps(run.id)] in (["sync-fn", "async-fn"], [])

    def test_async_job_step_failure_fails_the_run(self, d: Durably) -> None:
        """An async step function that raises fails the async job's run."""

        async def broken() -> None:
            raise RuntimeError("async boom")

        async def job(step: AsyncStep, payload: In) -> None:
            await step.run("broken", broken)

        run = run_job(d, job)

        assert run.status == "failed"
        assert "async boom" in run.error

    def test_async_job_value_fidelity(self, d: Durably) -> None:
        """Async steps apply `returns=` like sync ones."""
        seen: list[Any] = []

        async def job(step: AsyncStep, payload: In) -> None:
            seen.append(await step.run("when", WHEN.isoformat, returns=datetime))

        run = run_job(d, job)

        assert run.status == "completed", run.error
        assert seen == [WHEN]

    def test_async_job_progress_and_logs_are_persisted(self, d: Durably) -> None:
        """An async job's progress and logs (with their step) are persisted like a sync job's."""

        async def job(step: AsyncStep, payload: In) -> None:
            step.progress(1, 1, "one")

            async def inside() -> int:
                step.log.info("in async step")
                return 1

            await step.run("inside", inside)

        run = run_job(d, job)

        assert run.status == "completed", run.error
        assert (run.progress.current, run.progress.total, run.progress.message) == (1, 1, "one")
        logs = d.get_logs(run.id)
        assert [(log.message, log.step_name) for log in logs] == [("in async step", "inside")]

    def test_sync_job_given_async_fn_raises_type_error(self, d: Durably) -> None:
        """A sync job that passes an async `fn` to `step.run` gets a clear TypeError."""
        caught: list[BaseException] = []

        async def fetch() -> int:
            return 1

        def job(step: Step, payload: In) -> None:
            try:
                step.run("async-in-sync", fetch)  # type: ignore[unused-coroutine]  # the misuse tested
            except TypeError as exc:
                caught.append(exc)
                raise

        run = run_job(d, job)

        assert run.status == "failed"
        assert len(caught) == 1
        assert "async" in str(caught[0]).lower()
