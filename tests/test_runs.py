"""Runs (docs/api.md: Reading runs, Waiting, Managing runs, Run): fields, queries,
waiting, cancel, retrigger, delete, purge, retention and the clean-up of `tmp/`."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from apps import second_process
from apps.children import finish
from apps.cli_app import FailIn
from helpers import Payload, Started, blocking_job, status_of, wait_until
from pydantic import BaseModel

import durably
from durably import (
    CancelledError,
    ConflictError,
    Durably,
    NotFoundError,
    RunFailedError,
    RunStatus,
    Step,
    WaitTimeoutError,
    define_job,
)

Factory = Callable[..., Durably]


class In(BaseModel):
    name: str = "x"


class Out(BaseModel):
    greeting: str


def _greet(step: Step, payload: In) -> Out:
    text = step.run("compose", lambda: f"hello {payload.name}")
    step.run("second", lambda: 2)
    return Out(greeting=text)


GREET = define_job(name="greet", input=In, output=Out, run=_greet)


def _explode() -> None:
    raise RuntimeError("Intentional failure")


def _fail(step: Step, payload: In) -> None:
    step.run("kept", lambda: "checkpoint")
    step.run("explode", _explode)


FAIL = define_job(name="fail", input=In, run=_fail)
OTHER = define_job(name="other", input=In, run=lambda step, payload: None)


def _aware_utc(value: datetime | None) -> bool:
    return value is not None and value.utcoffset() == timedelta(0)


def _completed(d: Durably, **trigger: Any) -> durably.Run[Any]:
    handle = d.register(GREET)
    result = handle.trigger(In(name=trigger.pop("name", "x")), **trigger)
    d.process_until_idle()
    run = d.get_run(result.id)
    assert run is not None
    assert run.status == "completed", run.error
    return run


def _failed(d: Durably, **trigger: Any) -> durably.Run[Any]:
    result = d.register(FAIL).trigger(In(), **trigger)
    d.process_until_idle()
    run = d.get_run(result.id)
    assert run is not None
    assert run.status == "failed"
    return run


def _cancelled(d: Durably, **trigger: Any) -> durably.Run[Any]:
    result = d.register(GREET).trigger(In(), **trigger)
    d.cancel(result.id)
    run = d.get_run(result.id)
    assert run is not None
    return run


MAKE_TERMINAL = {"completed": _completed, "failed": _failed, "cancelled": _cancelled}


class TestRunStatus:
    def test_members_are_strings(self) -> None:
        """RunStatus is a str enum with the six documented values (SPEC §2, §9)."""
        assert {s.name: s.value for s in RunStatus} == {
            "PENDING": "pending",
            "WAITING": "waiting",
            "LEASED": "leased",
            "COMPLETED": "completed",
            "FAILED": "failed",
            "CANCELLED": "cancelled",
        }
        assert all(isinstance(s, str) for s in RunStatus)
        assert RunStatus("completed") is RunStatus.COMPLETED


class TestRunFields:
    def test_new_run_fields(self, d: Durably) -> None:
        """A pending run has its input, keys, labels and creation times, and nothing else yet."""
        result = d.register(GREET).trigger(
            In(name="n"), idempotency_key="i", concurrency_key="c", labels={"l": "v"}
        )
        run = d.get_run(result.id)

        assert run is not None
        assert isinstance(run, durably.Run)
        assert isinstance(run.id, str)
        assert run.id == result.id
        assert run.job_name == "greet"
        assert run.status is RunStatus.PENDING
        assert run.input == {"name": "n"}
        assert run.labels == {"l": "v"}
        assert (run.idempotency_key, run.concurrency_key) == ("i", "c")
        assert (run.output, run.error, run.progress) == (None, None, None)
        assert (run.lease_generation, run.completed_step_count) == (0, 0)
        assert _aware_utc(run.created_at)
        assert _aware_utc(run.updated_at)
        assert (run.started_at, run.completed_at) == (None, None)
        assert (run.is_terminal, run.is_active) == (False, True)

    def test_completed_run_fields(self, d: Durably) -> None:
        """A completed run has its output, step count, first lease and all its times."""
        before = datetime.now(UTC)
        run = _completed(d, name="y")

        assert run.status is RunStatus.COMPLETED
        assert run.output == {"greeting": "hello y"}
        assert run.error is None
        assert run.completed_step_count == 2
        assert run.lease_generation == 1
        assert all(_aware_utc(t) for t in (run.created_at, run.started_at, run.completed_at, run.updated_at))
        assert run.started_at is not None
        assert run.completed_at is not None
        assert before - timedelta(milliseconds=1) <= run.created_at <= run.started_at
        assert run.started_at <= run.completed_at <= run.updated_at
        assert (run.is_terminal, run.is_active) == (True, False)

    def test_failed_run_fields(self, d: Durably) -> None:
        """A failed run carries the error message and its completion time."""
        run = _failed(d)

        assert run.status is RunStatus.FAILED
        assert "Intentional failure" in (run.error or "")
        assert run.output is None
        assert run.completed_step_count == 1
        assert _aware_utc(run.completed_at)
        assert (run.is_terminal, run.is_active) == (True, False)

    def test_cancelled_run_is_terminal(self, d: Durably) -> None:
        """A cancelled run is terminal and not active."""
        run = _cancelled(d)

        assert run.status is RunStatus.CANCELLED
        assert (run.is_terminal, run.is_active) == (True, False)

    def test_leased_run_is_active(self, durably_factory: Factory, gates: Any) -> None:
        """A leased run is active, has started, and holds its first lease generation."""
        gate, started = gates(), Started()
        d = durably_factory(jobs=[blocking_job("block", gate, started)])
        result = d.jobs["block"].trigger(Payload(value="v"))
        d.start()
        wait_until(lambda: started.count() == 1)

        run = d.get_run(result.id)
        assert run is not None
        assert run.status is RunStatus.LEASED
        assert (run.is_terminal, run.is_active) == (False, True)
        assert run.lease_generation == 1
        assert _aware_utc(run.started_at)
        assert run.completed_at is None
        gate.set()

    def test_progress_is_a_progress_object(self, d: Durably) -> None:
        """`Run.progress` is a `Progress` with `current`, `total` and `message`."""

        def job(step: Step, payload: In) -> None:
            step.progress(3, 4, "almost")

        result = d.register(define_job(name="p", input=In, run=job)).trigger(In())
        d.process_until_idle()

        run = d.get_run(result.id)
        assert run is not None
        assert isinstance(run.progress, durably.Progress)
        assert (run.progress.current, run.progress.total, run.progress.message) == (3, 4, "almost")

    def test_output_is_typed_through_the_handle_and_plain_through_durably(self, d: Durably) -> None:
        """The handle returns the output model; `Durably.get_run(s)` return plain JSON data."""
        run = _completed(d, name="z")
        handle = d.register(GREET)

        typed = handle.get_run(run.id)
        assert typed is not None
        assert typed.output == Out(greeting="hello z")
        assert d.get_run(run.id).output == {"greeting": "hello z"}  # type: ignore[union-attr]
        assert [r.output for r in d.get_runs()] == [{"greeting": "hello z"}]

    def test_ids_sort_by_creation(self, d: Durably) -> None:
        """Run ids sort in creation order, even for runs created in the same millisecond."""
        handle = d.register(GREET)
        ids = [handle.trigger(In()).id for _ in range(50)]
        ids += [r.id for r in handle.batch_trigger([In()] * 50)]

        assert sorted(ids) == ids
        assert len(set(ids)) == 100


class TestGetRuns:
    def test_get_run_of_unknown_id_is_none(self, d: Durably) -> None:
        """`get_run` returns None for an unknown id."""
        assert d.get_run("does-not-exist") is None

    def test_newest_first_even_within_one_millisecond(self, d: Durably) -> None:
        """`get_runs` lists newest first; runs from one millisecond in reverse creation order."""
        handle = d.register(GREET)
        ids = [handle.trigger(In()).id for _ in range(30)]
        ids += [r.id for r in handle.batch_trigger([In()] * 30)]

        assert [r.id for r in d.get_runs()] == list(reversed(ids))

    def test_spans_all_jobs(self, d: Durably) -> None:
        """Without filters, runs of every job are listed."""
        a = d.register(GREET).trigger(In())
        b = d.register(OTHER).trigger(In())

        assert [r.id for r in d.get_runs()] == [b.id, a.id]

    def test_status_filter_takes_one_value_or_a_list(self, d: Durably) -> None:
        """`status` filters by one status or by any of a list of statuses."""
        done = _completed(d)
        failed = _failed(d)
        pending = d.register(OTHER).trigger(In())

        assert [r.id for r in d.get_runs(status="completed")] == [done.id]
        assert [r.id for r in d.get_runs(status=RunStatus.PENDING)] == [pending.id]
        assert [r.id for r in d.get_runs(status=["failed", "completed"])] == [failed.id, done.id]
        assert d.get_runs(status="cancelled") == []

    def test_job_name_filter_takes_one_value_or_a_list(self, d: Durably) -> None:
        """`job_name` filters by one job or by any of a list of jobs."""
        a = d.register(GREET).trigger(In())
        b = d.register(OTHER).trigger(In())
        c = d.register(FAIL).trigger(In())

        assert [r.id for r in d.get_runs(job_name="other")] == [b.id]
        assert [r.id for r in d.get_runs(job_name=["greet", "fail"])] == [c.id, a.id]
        assert d.get_runs(job_name="nobody") == []

    def test_labels_filter_requires_every_label_to_match(self, d: Durably) -> None:
        """`labels` keeps runs whose labels contain every given pair."""
        handle = d.register(GREET)
        both = handle.trigger(In(), labels={"team": "a", "app.io/env": "prod"})
        team_only = handle.trigger(In(), labels={"team": "a", "app.io/env": "dev"})
        handle.trigger(In(), labels={"team": "b"})
        handle.trigger(In())

        assert [r.id for r in d.get_runs(labels={"team": "a"})] == [team_only.id, both.id]
        assert [r.id for r in d.get_runs(labels={"team": "a", "app.io/env": "prod"})] == [both.id]
        assert d.get_runs(labels={"team": "c"}) == []

    def test_limit_and_offset_paginate(self, d: Durably) -> None:
        """`limit` and `offset` page through the newest-first list."""
        handle = d.register(GREET)
        ids = [handle.trigger(In(name=str(i))).id for i in range(5)]
        newest_first = list(reversed(ids))

        assert [r.id for r in d.get_runs(limit=3)] == newest_first[:3]
        assert [r.id for r in d.get_runs(offset=2)] == newest_first[2:]
        assert [r.id for r in d.get_runs(limit=2, offset=2)] == newest_first[2:4]
        assert d.get_runs(offset=10) == []
        assert d.get_runs(limit=0) == []

    def test_filters_combine_with_each_other_and_pagination(self, d: Durably) -> None:
        """Filters combine (AND) and pagination applies to the filtered list."""
        greet = d.register(GREET)
        other = d.register(OTHER)
        wanted = [greet.trigger(In(), labels={"k": "v"}).id for _ in range(3)]
        other.trigger(In(), labels={"k": "v"})
        greet.trigger(In(), labels={"k": "w"})

        got = d.get_runs(job_name="greet", labels={"k": "v"}, status="pending", limit=2, offset=1)

        assert [r.id for r in got] == [wanted[1], wanted[0]]


class TestStepsAndLogs:
    def test_get_steps_lists_step_records_in_execution_order(self, durably_factory: Factory) -> None:
        """`get_steps` returns StepRecords (name, index, status, output, times) in order."""
        d = durably_factory(preserve_steps=True)
        run = _completed(d, name="q")

        steps = d.get_steps(run.id)

        assert all(isinstance(s, durably.StepRecord) for s in steps)
        assert [(s.name, s.index, s.status, s.output, s.error) for s in steps] == [
            ("compose", 0, "completed", "hello q", None),
            ("second", 1, "completed", 2, None),
        ]
        for s in steps:
            assert _aware_utc(s.started_at)
            assert _aware_utc(s.completed_at)
            assert s.started_at is not None
            assert s.completed_at is not None
            assert s.started_at <= s.completed_at

    def test_get_steps_of_a_run_without_steps_is_empty(self, d: Durably) -> None:
        """A pending run has no step records."""
        result = d.register(GREET).trigger(In())

        assert d.get_steps(result.id) == []

    def test_get_logs_returns_log_entries_in_order(self, d: Durably) -> None:
        """`get_logs` returns LogEntry objects in the order they were written."""

        def job(step: Step, payload: In) -> None:
            step.log.info("one")
            step.run("s", lambda: step.log.warn("two", data={"n": 2}))
            step.log.error("three")

        result = d.register(define_job(name="logger", input=In, run=job)).trigger(In())
        d.process_until_idle()

        logs = d.get_logs(result.id)
        assert all(isinstance(log, durably.LogEntry) for log in logs)
        assert [(log.level, log.message, log.step_name, log.data) for log in logs] == [
            ("info", "one", None, None),
            ("warn", "two", "s", {"n": 2}),
            ("error", "three", None, None),
        ]


class TestWaitForRun:
    def test_returns_the_completed_run(self, d: Durably) -> None:
        """`wait_for_run` returns the completed Run."""
        result = d.register(GREET).trigger(In(name="w"))
        d.start()

        run = d.wait_for_run(result.id, timeout=10)

        assert isinstance(run, durably.Run)
        assert run.status == "completed"
        assert run.output == {"greeting": "hello w"}

    def test_failed_run_raises_run_failed_error(self, d: Durably) -> None:
        """A failed run raises RunFailedError carrying `run_id` and `error`."""
        result = d.register(FAIL).trigger(In())
        d.start()

        with pytest.raises(RunFailedError) as info:
            d.wait_for_run(result.id, timeout=10)

        assert info.value.run_id == result.id
        assert "Intentional failure" in info.value.error

    def test_cancelled_run_raises_cancelled_error(self, d: Durably) -> None:
        """A cancelled run raises CancelledError."""
        result = d.register(GREET).trigger(In())
        d.cancel(result.id)

        with pytest.raises(CancelledError):
            d.wait_for_run(result.id, timeout=10)

    def test_unknown_run_raises_not_found(self, d: Durably) -> None:
        """An unknown run id raises NotFoundError."""
        with pytest.raises(NotFoundError):
            d.wait_for_run("no-such-run", timeout=1)

    def test_timeout_raises_wait_timeout_error_and_the_run_continues(self, d: Durably) -> None:
        """A timeout raises WaitTimeoutError (a TimeoutError); the run is untouched."""
        result = d.register(GREET).trigger(In())

        with pytest.raises(WaitTimeoutError) as info:
            d.wait_for_run(result.id, timeout=0.1)

        assert isinstance(info.value, TimeoutError)
        assert str(info.value).startswith("wait_for_run timed out after 0.1s")  # the Python name
        assert "waitForRun" not in str(info.value)
        assert status_of(d, result.id) == "pending"
        assert d.process_until_idle() == 1
        assert status_of(d, result.id) == "completed"

    @pytest.mark.parametrize("outcome", ["completed", "failed", "cancelled"])
    def test_terminal_runs_settle_at_once_and_repeatably(self, d: Durably, outcome: str) -> None:
        """Waiting on an already terminal run settles from storage, the same way every time."""
        run = MAKE_TERMINAL[outcome](d)
        expected: type[BaseException] | None = {
            "completed": None,
            "failed": RunFailedError,
            "cancelled": CancelledError,
        }[outcome]

        for _ in range(2):
            if expected is None:
                assert d.wait_for_run(run.id, timeout=5).id == run.id
            else:
                with pytest.raises(expected):
                    d.wait_for_run(run.id, timeout=5)

    def test_on_progress_and_on_log_see_live_events(self, d: Durably) -> None:
        """`on_progress` and `on_log` are called with the run's live progress and logs."""
        got_progress, got_log = threading.Event(), threading.Event()

        def job(step: Step, payload: In) -> None:
            # Repeat until the waiter has seen one: it only sees events after it subscribed.
            for i in range(1, 2000):
                step.progress(i, None, "tick")
                if got_progress.wait(0.01):
                    break
            for _ in range(2000):
                step.log.info("hello", data={"a": 1})
                if got_log.wait(0.01):
                    break

        progress: list[Any] = []
        logs: list[Any] = []

        def on_progress(p: Any) -> None:
            progress.append(p)
            got_progress.set()

        def on_log(entry: Any) -> None:
            logs.append(entry)
            got_log.set()

        result = d.register(define_job(name="chatty", input=In, run=job)).trigger(In())
        d.start()
        run = d.wait_for_run(result.id, timeout=30, on_progress=on_progress, on_log=on_log)

        assert run.status == "completed"
        progress = [getattr(p, "progress", p) for p in progress]
        assert progress
        assert all(p.message == "tick" and p.total is None for p in progress)
        assert [p.current for p in progress] == sorted(p.current for p in progress)
        assert logs
        assert all((e.level, e.message, e.data) == ("info", "hello", {"a": 1}) for e in logs)

    @pytest.mark.slow
    def test_sees_completion_by_another_process(
        self, d: Durably, root: Path, tmp_path: Path, spawn: Any
    ) -> None:
        """`wait_for_run` returns the run when another process executes it."""
        other = second_process.make(root)
        try:
            result = other.jobs["echo"].trigger(second_process.WorkIn(workdir=str(tmp_path), value="v"))
            child = spawn(["process", str(root)])

            run = d.wait_for_run(result.id, timeout=60)

            assert run.status == "completed"
            assert run.output is not None
            assert run.output["echo"] == "v"
            assert run.output["pid"] == child.pid
            code, _, err = finish(child)
            assert code == 0, err
        finally:
            other.stop()

    @pytest.mark.slow
    def test_progress_written_by_another_process_is_visible(
        self, d: Durably, root: Path, tmp_path: Path, spawn: Any
    ) -> None:
        """Progress reported by a run executing in another process is readable here."""
        other = second_process.make(root)
        try:
            result = other.jobs["gated"].trigger(second_process.WorkIn(workdir=str(tmp_path)))
            child = spawn(["process", str(root)])

            def progressed() -> Any:
                run = d.get_run(result.id)
                return run is not None and run.progress is not None and run.progress.current > 0

            wait_until(progressed, timeout=30)
            assert status_of(d, result.id) == "leased"
            (tmp_path / "gate").touch()

            assert d.wait_for_run(result.id, timeout=60).output == {"ok": True}
            code, _, err = finish(child)
            assert code == 0, err
        finally:
            other.stop()

    @pytest.mark.slow
    def test_sees_failure_by_another_process(
        self, d: Durably, root: Path, tmp_path: Path, spawn: Any
    ) -> None:
        """`wait_for_run` raises RunFailedError when another process fails the run."""
        other = second_process.make(root)
        try:
            result = other.jobs["fail"].trigger(FailIn(message="exploded in child"))
            child = spawn(["process", str(root)])

            with pytest.raises(RunFailedError) as info:
                d.wait_for_run(result.id, timeout=60)

            assert "exploded in child" in info.value.error
            code, _, err = finish(child)
            assert code == 0, err
        finally:
            other.stop()


def _cancellable_job(reached: threading.Event, record: dict[str, Any]) -> Any:
    def job(step: Step, payload: In) -> None:
        def wait() -> bool:
            reached.set()
            record["signal"] = step.signal.wait(10)
            record["aborted"] = step.is_aborted()
            try:
                step.raise_if_aborted()
            except CancelledError:
                record["raise_if_aborted"] = "CancelledError"
            return True

        try:
            # The cancelled step's result is not stored, so `run` itself may raise here.
            step.run("wait", wait)
            step.run("after", lambda: record.setdefault("after-ran", True))
        except CancelledError:
            record["next"] = "CancelledError"
            raise
        finally:
            record.setdefault("next", "returned")

    return define_job(name="cancellable", input=In, run=job)


class TestCancel:
    def test_cancelling_a_pending_run_is_immediate_and_it_never_runs(self, d: Durably) -> None:
        """A pending run becomes cancelled at once and is never claimed."""
        result = d.register(GREET).trigger(In())

        d.cancel(result.id)

        run = d.get_run(result.id)
        assert run is not None
        assert run.status == "cancelled"
        assert _aware_utc(run.completed_at)
        assert d.process_until_idle() == 0
        assert status_of(d, result.id) == "cancelled"

    def test_cancelling_a_leased_run_sets_its_signal_and_stops_the_next_step(self, d: Durably) -> None:
        """A leased run is cancelled at once; its signal is set; the next step raises."""
        reached, record = threading.Event(), dict[str, Any]()
        handle = d.register(_cancellable_job(reached, record))
        result = handle.trigger(In())
        d.start()
        assert reached.wait(10)

        d.cancel(result.id)

        assert status_of(d, result.id) == "cancelled"
        d.stop(timeout=30)
        assert record["signal"] is True
        assert record["aborted"] is True
        assert record["raise_if_aborted"] == "CancelledError"
        assert record["next"] == "CancelledError"
        assert "after-ran" not in record
        run = d.get_run(result.id)
        assert run is not None
        assert run.status == "cancelled"

    def test_a_job_that_swallows_the_cancellation_never_overwrites_it(self, d: Durably) -> None:
        """A job that catches the CancelledError and returns normally leaves the run cancelled."""
        reached = threading.Event()
        swallowed: list[BaseException] = []

        def job(step: Step, payload: In) -> str:
            def wait() -> None:
                reached.set()
                step.signal.wait(10)

            for name in ("wait", "after"):
                try:
                    step.run(name, wait)
                except Exception as exc:  # noqa: BLE001 - the point of the test
                    swallowed.append(exc)
            return "finished anyway"

        result = d.register(define_job(name="stubborn", input=In, run=job)).trigger(In())
        d.start()
        assert reached.wait(10)

        d.cancel(result.id)
        d.stop(timeout=30)

        run = d.get_run(result.id)
        assert run is not None
        assert run.status == "cancelled"
        assert run.output is None
        assert swallowed
        assert all(isinstance(exc, CancelledError) for exc in swallowed)

    @pytest.mark.parametrize("outcome", ["completed", "failed", "cancelled"])
    def test_cancelling_a_terminal_run_conflicts(self, d: Durably, outcome: str) -> None:
        """Cancelling a completed, failed or cancelled run raises ConflictError."""
        run = MAKE_TERMINAL[outcome](d)

        with pytest.raises(ConflictError):
            d.cancel(run.id)
        assert status_of(d, run.id) == outcome

    def test_cancelling_an_unknown_run_is_not_found(self, d: Durably) -> None:
        """Cancelling an unknown id raises NotFoundError."""
        with pytest.raises(NotFoundError):
            d.cancel("no-such-run")

    @pytest.mark.slow
    def test_cancel_reaches_a_step_running_in_another_process(
        self, d: Durably, root: Path, tmp_path: Path, spawn: Any
    ) -> None:
        """Cancelling here sets the signal of the step executing in another process."""
        other = second_process.make(root)
        try:
            result = other.jobs["cancellable"].trigger(second_process.WorkIn(workdir=str(tmp_path)))
            child = spawn(["process", str(root)])
            wait_until((tmp_path / "waiting").exists, timeout=30)

            d.cancel(result.id)

            assert status_of(d, result.id) == "cancelled"
            wait_until((tmp_path / "next-step").exists, timeout=30)
            assert (tmp_path / "signal").read_text() == "True"
            assert (tmp_path / "next-step").read_text() == "CancelledError"
            code, _, err = finish(child)
            assert code == 0, err
            assert status_of(d, result.id) == "cancelled"
        finally:
            other.stop()


class TestRetrigger:
    @pytest.mark.parametrize("outcome", ["completed", "failed", "cancelled"])
    def test_creates_a_new_pending_run_with_the_same_input_labels_and_key(
        self, d: Durably, outcome: str
    ) -> None:
        """`retrigger` of a terminal run makes a new pending run with its input/labels/key."""
        old = MAKE_TERMINAL[outcome](d, idempotency_key="idem", concurrency_key="ck", labels={"team": "t"})

        new = d.retrigger(old.id)

        assert isinstance(new, durably.Run)
        assert new.id != old.id
        assert new.status == "pending"
        assert (new.job_name, new.input, new.labels, new.concurrency_key) == (
            old.job_name,
            old.input,
            {"team": "t"},
            "ck",
        )
        assert new.idempotency_key != "idem"
        assert status_of(d, old.id) == outcome

    def test_retrigger_emits_run_trigger_for_the_new_run(self, d: Durably) -> None:
        """`retrigger` emits `run:trigger` for the new run."""
        old = _completed(d)
        seen: list[Any] = []
        d.on("run:trigger", seen.append)

        new = d.retrigger(old.id)

        assert [(e.type, e.run_id) for e in seen] == [("run:trigger", new.id)]

    def test_retrigger_revalidates_the_input(self, durably_factory: Factory) -> None:
        """The stored input is validated again against the job's current input model."""

        class Strict(BaseModel):
            name: int

        first = durably_factory()
        old = _completed(first, name="not-a-number")
        second = durably_factory(
            jobs=[define_job(name="greet", input=Strict, run=lambda step, payload: None)]
        )

        with pytest.raises(durably.ValidationError):
            second.retrigger(old.id)
        assert [r.id for r in second.get_runs()] == [old.id]

    def test_retriggered_run_executes_from_scratch(self, d: Durably) -> None:
        """The new run executes normally and completes with its own output."""
        old = _completed(d, name="again")

        new = d.retrigger(old.id)
        d.process_until_idle()

        run = d.get_run(new.id)
        assert run is not None
        assert run.status == "completed"
        assert run.output == {"greeting": "hello again"}
        assert run.completed_step_count == 2

    def test_retriggering_a_pending_run_conflicts(self, d: Durably) -> None:
        """Only terminal runs can be retriggered: a pending run raises ConflictError."""
        result = d.register(GREET).trigger(In())

        with pytest.raises(ConflictError):
            d.retrigger(result.id)

    def test_retriggering_a_leased_run_conflicts(self, durably_factory: Factory, gates: Any) -> None:
        """Only terminal runs can be retriggered: a leased run raises ConflictError."""
        gate, started = gates(), Started()
        d = durably_factory(jobs=[blocking_job("block", gate, started)])
        result = d.jobs["block"].trigger(Payload())
        d.start()
        wait_until(lambda: started.count() == 1)

        with pytest.raises(ConflictError):
            d.retrigger(result.id)
        gate.set()

    def test_retriggering_an_unknown_run_is_not_found(self, d: Durably) -> None:
        """An unknown id raises NotFoundError."""
        with pytest.raises(NotFoundError):
            d.retrigger("no-such-run")


class TestDeleteRun:
    @pytest.mark.parametrize("outcome", ["completed", "failed", "cancelled"])
    def test_removes_every_file_of_the_run(self, durably_factory: Factory, root: Path, outcome: str) -> None:
        """Deleting a terminal run removes it and all its data from the root."""
        d = durably_factory(preserve_steps=True)
        marker = "marker-7f3a9c-in-the-input"
        run = MAKE_TERMINAL[outcome](d, name=marker) if outcome == "completed" else None
        if run is None:
            job: durably.JobDefinition[In, Any] = FAIL if outcome == "failed" else GREET
            handle = d.register(job)
            result = handle.trigger(In(name=marker))
            if outcome == "failed":
                d.process_until_idle()
            else:
                d.cancel(result.id)
            run = d.get_run(result.id)
        assert run is not None

        d.delete_run(run.id)

        assert d.get_run(run.id) is None
        assert run.id not in [r.id for r in d.get_runs()]
        for path in root.rglob("*"):
            assert run.id not in str(path.relative_to(root)), path
            if path.is_file():
                assert marker.encode() not in path.read_bytes(), path

    def test_frees_the_idempotency_key(self, d: Durably) -> None:
        """After deletion, the run's idempotency key creates a new run."""
        old = _completed(d, idempotency_key="once")

        d.delete_run(old.id)
        again = d.register(GREET).trigger(In(), idempotency_key="once")

        assert again.disposition == "created"
        assert again.id != old.id

    def test_deleting_a_pending_run_conflicts(self, d: Durably) -> None:
        """Only terminal runs can be deleted: a pending run raises ConflictError."""
        result = d.register(GREET).trigger(In())

        with pytest.raises(ConflictError):
            d.delete_run(result.id)
        assert status_of(d, result.id) == "pending"

    def test_deleting_a_leased_run_conflicts(self, durably_factory: Factory, gates: Any) -> None:
        """Only terminal runs can be deleted: a leased run raises ConflictError."""
        gate, started = gates(), Started()
        d = durably_factory(jobs=[blocking_job("block", gate, started)])
        result = d.jobs["block"].trigger(Payload())
        d.start()
        wait_until(lambda: started.count() == 1)

        with pytest.raises(ConflictError):
            d.delete_run(result.id)
        gate.set()
        d.wait_for_run(result.id, timeout=10)

    def test_deleting_an_unknown_run_is_not_found(self, d: Durably) -> None:
        """An unknown id raises NotFoundError."""
        with pytest.raises(NotFoundError):
            d.delete_run("no-such-run")


class TestPurgeRuns:
    def test_purges_terminal_runs_completed_before_the_cutoff(self, d: Durably) -> None:
        """`purge_runs(older_than=datetime)` deletes terminal runs completed before it."""
        done, failed, cancelled = _completed(d), _failed(d), _cancelled(d)
        pending = d.register(OTHER).trigger(In())

        count = d.purge_runs(older_than=datetime.now(UTC) + timedelta(seconds=5))

        assert count == 3
        assert [r.id for r in d.get_runs()] == [pending.id]
        for run in (done, failed, cancelled):
            assert d.get_run(run.id) is None

    def test_keeps_runs_completed_after_the_cutoff(self, d: Durably) -> None:
        """Runs completed more recently than `older_than` are kept."""
        done = _completed(d)

        assert d.purge_runs(older_than=timedelta(days=1)) == 0
        assert d.purge_runs(older_than=datetime.now(UTC) - timedelta(hours=1)) == 0
        assert d.get_run(done.id) is not None

    def test_limit_caps_the_number_purged(self, d: Durably) -> None:
        """`limit` caps how many runs one call deletes."""
        for _ in range(3):
            _completed(d)
        cutoff = datetime.now(UTC) + timedelta(seconds=5)

        assert d.purge_runs(older_than=cutoff, limit=2) == 2
        assert len(d.get_runs()) == 1
        assert d.purge_runs(older_than=cutoff) == 1
        assert d.get_runs() == []

    def test_never_purges_active_runs(self, d: Durably) -> None:
        """Pending runs are never purged."""
        pending = d.register(GREET).trigger(In())

        assert d.purge_runs(older_than=datetime.now(UTC) + timedelta(days=1)) == 0
        assert d.get_run(pending.id) is not None

    def test_purge_frees_idempotency_keys(self, d: Durably) -> None:
        """A purged run's idempotency key creates a new run."""
        old = _completed(d, idempotency_key="k")
        d.purge_runs(older_than=datetime.now(UTC) + timedelta(seconds=5))

        again = d.register(GREET).trigger(In(), idempotency_key="k")

        assert again.disposition == "created"
        assert again.id != old.id


class TestRetainRuns:
    def test_recent_terminal_runs_survive_idle_maintenance(self, durably_factory: Factory) -> None:
        """With `retain_runs="1d"`, a just-completed run is kept after idle maintenance."""
        d = durably_factory(retain_runs="1d")
        run = _completed(d)

        d.process_until_idle()

        assert d.get_run(run.id) is not None

    def test_older_terminal_runs_are_purged_during_idle_maintenance(self, durably_factory: Factory) -> None:
        """Terminal runs older than `retain_runs` are purged when a worker goes idle."""
        d = durably_factory()
        done, failed = _completed(d), _failed(d)
        pending = d.register(OTHER).trigger(In(), concurrency_key="stay")
        d.cancel(pending.id)
        waiting = d.register(GREET).trigger(In(), concurrency_key="pending-one")
        keeper = durably_factory(retain_runs=timedelta(microseconds=1))

        def purged() -> bool:
            keeper.process_until_idle()
            return all(keeper.get_run(r.id) is None for r in (done, failed))

        wait_until(purged)
        assert keeper.get_run(pending.id) is None
        assert status_of(keeper, waiting.id) == "pending"

    def test_started_worker_purges_old_runs_when_idle(self, durably_factory: Factory) -> None:
        """A background worker purges terminal runs past `retain_runs` in idle maintenance."""
        d = durably_factory(retain_runs=timedelta(microseconds=1))
        handle = d.register(GREET)
        ids = [handle.trigger(In()).id for _ in range(3)]
        d.start()

        wait_until(lambda: all(d.get_run(i) is None for i in ids))
        assert d.get_runs() == []


class TestTempCleanUp:
    def test_orphan_temp_files_are_swept_by_an_idle_worker(self, durably_factory: Factory) -> None:
        """Plan case C7: temp files and deleted-run leftovers a crash left in ``tmp/`` more than an hour
        ago are removed by an idle worker, also without ``retain_runs``; a young temp file
        (a publish in flight in another process) is left alone, and nothing in tmp/ ever
        reads as a run or a step."""
        d = durably_factory()
        handle = d.register(define_job(name="sweep", input=In, run=lambda step, p: None))
        run_id = handle.trigger(In()).id
        tmp = Path(d.root) / "tmp"
        old = time.time() - 7200
        (tmp / "123-deadbeef0000.tmp").write_bytes(b'{"v":1,"kind":"claim"}')
        trash = tmp / f"del-{run_id}-0000"
        (trash / "s.1").parent.mkdir()
        (trash / "s.1").write_bytes(b"{}")
        (tmp / "456-young.tmp").write_bytes(b"{}")
        for p in (tmp / "123-deadbeef0000.tmp", trash / "s.1", trash):
            os.utime(p, (old, old))
        assert d.process_until_idle() == 1
        assert sorted(os.listdir(tmp)) == ["456-young.tmp"]
        assert [r.id for r in d.get_runs()] == [run_id]


class TestPreserveSteps:
    def test_completed_runs_drop_step_outputs_by_default(self, d: Durably) -> None:
        """With `preserve_steps=False`, step outputs are dropped when a run completes."""
        run = _completed(d)

        assert all(s.output is None for s in d.get_steps(run.id))
        assert run.completed_step_count == 2

    def test_preserve_steps_keeps_outputs_of_completed_runs(self, durably_factory: Factory) -> None:
        """With `preserve_steps=True`, a completed run keeps its step outputs."""
        d = durably_factory(preserve_steps=True)
        run = _completed(d, name="k")

        assert [s.output for s in d.get_steps(run.id)] == ["hello k", 2]

    def test_failed_runs_keep_their_checkpoints(self, d: Durably) -> None:
        """A failed run keeps its completed checkpoints even with `preserve_steps=False`."""
        run = _failed(d)

        steps = d.get_steps(run.id)
        assert [(s.name, s.status, s.output) for s in steps] == [
            ("kept", "completed", "checkpoint"),
            ("explode", "failed", None),
        ]

    def test_cancelled_runs_keep_their_checkpoints(self, d: Durably) -> None:
        """A run cancelled mid-run keeps its completed checkpoints with `preserve_steps=False`."""
        reached = threading.Event()

        def job(step: Step, payload: In) -> None:
            step.run("kept", lambda: "checkpoint")

            def wait() -> None:
                reached.set()
                step.signal.wait(10)

            step.run("wait", wait)
            step.run("never", lambda: "x")

        result = d.register(define_job(name="cancel-me", input=In, run=job)).trigger(In())
        d.start()
        assert reached.wait(10)
        d.cancel(result.id)
        d.stop(timeout=30)

        steps = d.get_steps(result.id)
        assert ("kept", "completed", "checkpoint") in [(s.name, s.status, s.output) for s in steps]
        assert "never" not in [s.name for s in steps]


class TestWaitTimeoutZero:
    def test_a_zero_timeout_checks_once(self, durably_factory: Factory) -> None:
        """`timeout=0` raises WaitTimeoutError at once for a pending run and returns an ended one."""
        d = durably_factory(jobs=[GREET])
        handle = d.register(GREET)
        pending = handle.trigger(In())
        with pytest.raises(WaitTimeoutError):
            d.wait_for_run(pending.id, timeout=0)
        d.process_until_idle()
        assert d.wait_for_run(pending.id, timeout=0).status == "completed"
