"""Events (docs/api.md: Listening to events, Events): `on()` listeners, event order and
payloads, `subscribe(run_id)`."""

from __future__ import annotations

import threading
import typing
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from apps import second_process
from apps.children import finish
from helpers import collect_in_thread, event_types, wait_until
from pydantic import BaseModel

import durably
from durably import Durably, Step, define_job

Factory = Callable[..., Durably]

EVENT_TYPES = [
    "run:trigger",
    "run:coalesced",
    "run:leased",
    "run:lease-renewed",
    "run:complete",
    "run:fail",
    "run:cancel",
    "run:delete",
    "run:progress",
    "step:start",
    "step:complete",
    "step:fail",
    "step:cancel",
    "log:write",
    "worker:error",
]


class In(BaseModel):
    value: int = 1


def _one_step(step: Step, payload: In) -> dict[str, int]:
    step.progress(0, 1, "starting")
    step.log.info("before the step")

    def s1() -> int:
        step.log.warn("inside s1", data={"k": "v"})
        return 7

    value = step.run("s1", s1)
    step.progress(1, 1, "done")
    return {"value": value}


ONE_STEP = define_job(name="one-step", input=In, run=_one_step)


def _boom() -> None:
    raise RuntimeError("step exploded")


def _failing(step: Step, payload: In) -> None:
    step.run("ok", lambda: 1)
    step.run("bad", _boom)


FAILING = define_job(name="failing", input=In, run=_failing)


class Recorder:
    """Collects every event emitted by an instance, in emission order."""

    def __init__(self, d: Durably) -> None:
        self.events: list[Any] = []
        self._lock = threading.Lock()
        self.unsubscribers = [d.on(kind, self._add) for kind in EVENT_TYPES]

    def _add(self, event: Any) -> None:
        with self._lock:
            self.events.append(event)

    def types(self) -> list[str]:
        with self._lock:
            return event_types(self.events)

    def of(self, kind: str) -> list[Any]:
        with self._lock:
            return [e for e in self.events if e.type == kind]


class TestOn:
    def test_listener_receives_only_its_event_type(self, d: Durably) -> None:
        """A listener registered for one type receives only events of that type."""
        triggers: list[Any] = []
        d.on("run:trigger", triggers.append)
        handle = d.register(ONE_STEP)

        result = handle.trigger(In())
        d.process_until_idle()

        assert [(e.type, e.run_id) for e in triggers] == [("run:trigger", result.id)]

    def test_every_listener_of_a_type_is_called(self, d: Durably) -> None:
        """Several listeners on one type are each called."""
        first: list[Any] = []
        second: list[Any] = []
        d.on("run:trigger", first.append)
        d.on("run:trigger", second.append)

        d.register(ONE_STEP).trigger(In())

        assert len(first) == len(second) == 1

    def test_unsubscribe_stops_delivery(self, d: Durably) -> None:
        """After calling the function returned by `on()`, the listener is not called again."""
        seen: list[Any] = []
        unsubscribe = d.on("run:trigger", seen.append)
        handle = d.register(ONE_STEP)
        handle.trigger(In())

        unsubscribe()
        handle.trigger(In())

        assert len(seen) == 1

    def test_listener_that_raises_is_reported_and_never_breaks_the_worker(self, d: Durably) -> None:
        """A raising listener yields `worker:error`; the run and other listeners carry on."""
        errors: list[Any] = []
        others: list[Any] = []
        d.on("worker:error", errors.append)

        def bad(event: Any) -> None:
            raise RuntimeError("listener blew up")

        for kind in ("run:leased", "step:start", "step:complete", "run:complete"):
            d.on(kind, bad)
        d.on("run:complete", others.append)
        result = d.register(ONE_STEP).trigger(In())

        d.process_until_idle()

        run = d.get_run(result.id)
        assert run is not None
        assert run.status == "completed", run.error
        assert run.output == {"value": 7}
        assert len(others) == 1
        assert errors
        assert all(e.type == "worker:error" for e in errors)
        assert any("listener blew up" in str(e.error) for e in errors)

    def test_worker_error_listener_that_raises_does_not_loop_or_break(self, d: Durably) -> None:
        """A raising `worker:error` listener neither recurses forever nor breaks the run."""
        calls: list[Any] = []

        def bad_error_listener(event: Any) -> None:
            calls.append(event)
            raise RuntimeError("the error listener failed too")

        d.on("worker:error", bad_error_listener)
        d.on("step:complete", lambda event: 1 / 0)
        result = d.register(ONE_STEP).trigger(In())

        d.process_until_idle()

        assert d.get_run(result.id).status == "completed"  # type: ignore[union-attr]
        assert 1 <= len(calls) <= 2

    def test_listener_that_raises_on_trigger_does_not_break_the_trigger(self, d: Durably) -> None:
        """A `run:trigger` listener that raises is reported; the trigger still succeeds."""
        errors: list[Any] = []
        d.on("worker:error", errors.append)
        d.on("run:trigger", lambda event: 1 / 0)

        result = d.register(ONE_STEP).trigger(In())

        assert result.disposition == "created"
        assert d.get_run(result.id) is not None
        assert len(errors) == 1

    def test_listener_that_raises_in_a_background_worker_is_reported(self, d: Durably) -> None:
        """In a started worker, a raising listener is reported and the run still completes."""
        errors: list[Any] = []
        d.on("worker:error", errors.append)
        d.on("step:complete", lambda event: 1 / 0)
        result = d.register(ONE_STEP).trigger(In())
        d.start()

        run = d.wait_for_run(result.id, timeout=10)

        assert run.status == "completed"
        wait_until(lambda: errors)


EVENT_CLASSES = {
    "run:trigger": "RunTriggerEvent",
    "run:coalesced": "RunCoalescedEvent",
    "run:leased": "RunLeasedEvent",
    "run:lease-renewed": "RunLeaseRenewedEvent",
    "run:complete": "RunCompleteEvent",
    "run:fail": "RunFailEvent",
    "run:cancel": "RunCancelEvent",
    "run:delete": "RunDeleteEvent",
    "run:progress": "RunProgressEvent",
    "step:start": "StepStartEvent",
    "step:complete": "StepCompleteEvent",
    "step:fail": "StepFailEvent",
    "step:cancel": "StepCancelEvent",
    "log:write": "LogWriteEvent",
    "worker:error": "WorkerErrorEvent",
}


class TestEventClasses:
    def test_every_event_type_has_a_public_class(self) -> None:
        """Each of the 15 event types has its own public class deriving from `Event`."""
        assert set(EVENT_CLASSES) == set(EVENT_TYPES)
        classes = [getattr(durably, name) for name in EVENT_CLASSES.values()]
        assert all(issubclass(cls, durably.Event) for cls in classes)
        assert len(set(classes)) == len(classes)

    @pytest.mark.parametrize(
        ("kind", "fields"),
        [
            ("run:trigger", {"input"}),
            ("run:coalesced", {"skipped_input", "skipped_labels"}),
            ("run:leased", {"input", "lease_owner", "lease_expires_at"}),
            ("run:lease-renewed", {"lease_owner", "lease_expires_at"}),
            ("run:complete", {"output", "duration"}),
            ("run:fail", {"error", "failed_step_name"}),
            ("run:cancel", set()),
            ("run:delete", set()),
            ("run:progress", {"progress"}),
            ("step:start", {"step_name", "step_index"}),
            ("step:complete", {"step_name", "step_index", "output", "duration"}),
            ("step:fail", {"step_name", "step_index", "error"}),
            ("step:cancel", {"step_name", "step_index"}),
            ("log:write", {"step_name", "level", "message", "data"}),
            ("worker:error", {"error", "context"}),
        ],
    )
    def test_event_classes_have_the_originals_fields_in_snake_case(self, kind: str, fields: set[str]) -> None:
        """Each event class declares the common fields plus its type's own, in snake_case."""
        cls = getattr(durably, EVENT_CLASSES[kind])
        declared = set(typing.get_type_hints(cls))
        common = {"type", "run_id", "job_name", "labels", "sequence", "timestamp"}

        assert common | fields <= declared

    def test_emitted_events_are_instances_of_their_class(self, d: Durably) -> None:
        """An emitted event is an instance of the class of its type."""
        recorder = Recorder(d)
        d.register(ONE_STEP).trigger(In())
        d.register(FAILING).trigger(In())
        d.process_until_idle()

        assert recorder.events
        for event in recorder.events:
            assert type(event) is getattr(durably, EVENT_CLASSES[event.type]), event.type


class TestEventOrder:
    def test_one_step_run_emits_events_in_order(self, d: Durably) -> None:
        """A one-step run with progress and logs emits the documented sequence of events."""
        recorder = Recorder(d)
        d.register(ONE_STEP).trigger(In())

        d.process_until_idle()

        assert recorder.types() == [
            "run:trigger",
            "run:leased",
            "run:progress",
            "log:write",
            "step:start",
            "log:write",
            "step:complete",
            "run:progress",
            "run:complete",
        ]

    def test_sequence_increases_with_every_event(self, d: Durably) -> None:
        """Each event's `sequence` is larger than the previous one's."""
        recorder = Recorder(d)
        d.register(ONE_STEP).trigger(In())
        d.process_until_idle()

        sequences = [e.sequence for e in recorder.events]
        assert all(isinstance(s, int) for s in sequences)
        assert sequences == sorted(sequences)
        assert len(set(sequences)) == len(sequences)

    def test_failing_run_emits_step_fail_then_run_fail(self, d: Durably) -> None:
        """A failing step emits `step:fail` and then `run:fail`."""
        recorder = Recorder(d)
        d.register(FAILING).trigger(In())

        d.process_until_idle()

        assert recorder.types() == [
            "run:trigger",
            "run:leased",
            "step:start",
            "step:complete",
            "step:start",
            "step:fail",
            "run:fail",
        ]


class TestPayloads:
    @pytest.fixture
    def recorded(self, d: Durably) -> tuple[Recorder, str]:
        recorder = Recorder(d)
        result = d.register(ONE_STEP).trigger(In(value=3), labels={"team": "core"})
        d.process_until_idle()
        return recorder, result.id

    def test_every_event_names_its_run_job_and_labels(self, recorded: tuple[Recorder, str]) -> None:
        """Run events carry `type`, `run_id`, `job_name`, `labels`, `sequence`, `timestamp`."""
        recorder, run_id = recorded

        for event in recorder.events:
            assert event.run_id == run_id, event.type
            assert event.job_name == "one-step", event.type
            assert event.labels == {"team": "core"}, event.type
            assert isinstance(event.sequence, int)
            assert event.timestamp is not None

    def test_timestamps_are_emission_times_in_order(self, d: Durably) -> None:
        """Event timestamps are aware UTC times of emission, non-decreasing in order."""
        recorder = Recorder(d)
        before = datetime.now(UTC) - timedelta(milliseconds=1)
        d.register(ONE_STEP).trigger(In())
        d.process_until_idle()
        after = datetime.now(UTC)

        stamps = [event.timestamp for event in recorder.events]
        assert all(isinstance(s, datetime) and s.utcoffset() == timedelta(0) for s in stamps)
        assert stamps == sorted(stamps)
        assert before <= stamps[0]
        assert stamps[-1] <= after

    def test_run_trigger_carries_the_input(self, recorded: tuple[Recorder, str]) -> None:
        """`run:trigger` carries the validated input."""
        recorder, _ = recorded
        (event,) = recorder.of("run:trigger")
        value = event.input
        value = value.model_dump() if isinstance(value, BaseModel) else value
        assert value == {"value": 3}

    def test_step_events_carry_step_name_and_index(self, recorded: tuple[Recorder, str]) -> None:
        """`step:start`/`step:complete` carry `step_name`, `step_index`; complete adds output."""
        recorder, _ = recorded
        (start,) = recorder.of("step:start")
        (complete,) = recorder.of("step:complete")

        assert (start.step_name, start.step_index) == ("s1", 0)
        assert (complete.step_name, complete.step_index, complete.output) == ("s1", 0, 7)
        assert isinstance(complete.duration, float)
        assert complete.duration >= 0

    def test_run_complete_carries_output_and_duration_in_seconds(
        self, recorded: tuple[Recorder, str]
    ) -> None:
        """`run:complete` carries the output and a duration in seconds."""
        recorder, _ = recorded
        (event,) = recorder.of("run:complete")

        assert event.output == {"value": 7}
        assert isinstance(event.duration, float)
        assert event.duration >= 0

    def test_run_progress_carries_progress(self, recorded: tuple[Recorder, str]) -> None:
        """`run:progress` carries `progress` with current, total and message."""
        recorder, _ = recorded
        progress = [e.progress for e in recorder.of("run:progress")]

        assert [(p.current, p.total, p.message) for p in progress] == [
            (0, 1, "starting"),
            (1, 1, "done"),
        ]

    def test_log_write_carries_level_message_data_and_step_name(self, recorded: tuple[Recorder, str]) -> None:
        """`log:write` carries `level`, `message`, `data` and the current `step_name`."""
        recorder, _ = recorded
        logs = recorder.of("log:write")

        assert [(e.level, e.message, e.data, e.step_name) for e in logs] == [
            ("info", "before the step", None, None),
            ("warn", "inside s1", {"k": "v"}, "s1"),
        ]

    def test_failure_events_carry_the_error(self, d: Durably) -> None:
        """`step:fail` and `run:fail` carry the error message; `run:fail` names the step."""
        recorder = Recorder(d)
        d.register(FAILING).trigger(In())
        d.process_until_idle()

        (step_fail,) = recorder.of("step:fail")
        (run_fail,) = recorder.of("run:fail")
        assert (step_fail.step_name, step_fail.step_index) == ("bad", 1)
        assert "step exploded" in str(step_fail.error)
        assert "step exploded" in str(run_fail.error)
        assert run_fail.failed_step_name == "bad"

    def test_run_coalesced_carries_the_skipped_input(self, d: Durably) -> None:
        """`run:coalesced` names the existing run and carries the skipped input and labels."""
        handle = d.register(ONE_STEP)
        first = handle.trigger(In(value=1), concurrency_key="c", labels={"a": "1"})
        recorder = Recorder(d)

        handle.trigger(In(value=2), concurrency_key="c", coalesce="skip", labels={"b": "2"})

        (event,) = recorder.of("run:coalesced")
        skipped = event.skipped_input
        skipped = skipped.model_dump() if isinstance(skipped, BaseModel) else skipped
        assert event.run_id == first.id
        assert event.labels == {"a": "1"}
        assert skipped == {"value": 2}
        assert event.skipped_labels == {"b": "2"}

    def test_cancel_and_delete_emit_events(self, d: Durably) -> None:
        """`cancel` emits `run:cancel` and `delete_run` emits `run:delete`."""
        result = d.register(ONE_STEP).trigger(In(), labels={"x": "y"})
        recorder = Recorder(d)

        d.cancel(result.id)
        d.delete_run(result.id)

        assert [(e.type, e.run_id, e.labels) for e in recorder.events] == [
            ("run:cancel", result.id, {"x": "y"}),
            ("run:delete", result.id, {"x": "y"}),
        ]

    def test_step_in_flight_when_cancelled_emits_step_cancel(self, d: Durably) -> None:
        """A step that returns after its run was cancelled emits `step:cancel`, not complete."""
        reached = threading.Event()

        def job(step: Step, payload: In) -> None:
            def wait() -> None:
                reached.set()
                step.signal.wait(10)

            step.run("waiting", wait)

        result = d.register(define_job(name="cancel-me", input=In, run=job)).trigger(In())
        recorder = Recorder(d)
        d.start()
        assert reached.wait(10)

        d.cancel(result.id)
        d.stop(timeout=30)

        types = recorder.types()
        assert "step:cancel" in types
        assert "step:complete" not in types
        assert "run:complete" not in types
        (cancel,) = recorder.of("step:cancel")
        assert (cancel.step_name, cancel.step_index) == ("waiting", 0)

    def test_lease_renewal_emits_run_lease_renewed(self, durably_factory: Factory) -> None:
        """While a run executes, each lease renewal emits `run:lease-renewed`."""
        d = durably_factory(lease_duration=2.0, lease_renew_interval=0.05)
        renewed = threading.Event()
        d.on("run:lease-renewed", lambda event: renewed.set())

        def job(step: Step, payload: In) -> bool:
            return step.run("until-renewed", lambda: renewed.wait(10))

        handle = d.register(define_job(name="long", input=In, run=job))
        result = handle.trigger(In())
        recorder = Recorder(d)
        d.process_until_idle()

        run = d.get_run(result.id)
        assert run is not None
        assert run.status == "completed"
        assert run.output is True
        (first, *_) = recorder.of("run:lease-renewed")
        assert (first.run_id, first.job_name) == (result.id, "long")


class TestSubscribe:
    def test_yields_the_runs_events_and_ends_after_completion(self, d: Durably) -> None:
        """`subscribe(run_id)` yields the run's events and ends after `run:complete`."""
        seen_one = threading.Event()

        def job(step: Step, payload: In) -> str:
            # Keep reporting until the subscriber has seen an event.
            for i in range(2000):
                step.progress(i)
                if seen_one.wait(0.01):
                    break
            return step.run("after", lambda: "done")

        handle = d.register(define_job(name="sub", input=In, run=job))
        other = d.register(ONE_STEP).trigger(In())
        result = handle.trigger(In())

        def events() -> Any:
            for event in d.subscribe(result.id):
                seen_one.set()
                yield event

        thread, got = collect_in_thread(events())
        d.start()
        thread.join(30)

        assert not thread.is_alive()
        types = event_types(got)
        assert types[-1] == "run:complete"
        assert "step:complete" in types
        assert all(e.run_id == result.id for e in got)
        assert other.id not in {e.run_id for e in got}

    @pytest.mark.parametrize(
        ("outcome", "terminal"),
        [("completed", "run:complete"), ("failed", "run:fail"), ("cancelled", "run:cancel")],
    )
    def test_subscription_to_a_finished_run_ends(self, d: Durably, outcome: str, terminal: str) -> None:
        """Subscribing to a terminal run ends, its last event being the terminal one."""
        handle = d.register(FAILING if outcome == "failed" else ONE_STEP)
        result = handle.trigger(In())
        if outcome == "cancelled":
            d.cancel(result.id)
        else:
            d.process_until_idle()

        thread, got = collect_in_thread(d.subscribe(result.id))
        thread.join(10)

        assert not thread.is_alive()
        assert event_types(got)[-1] == terminal

    @pytest.mark.slow
    def test_sees_events_written_by_another_process(
        self, d: Durably, root: Path, tmp_path: Path, spawn: Any
    ) -> None:
        """`subscribe` yields events of a run that another process executes, then ends."""
        other = second_process.make(root)
        try:
            result = other.jobs["gated"].trigger(second_process.WorkIn(workdir=str(tmp_path)))
            gate = tmp_path / "gate"

            def events() -> Any:
                for event in d.subscribe(result.id):
                    if event.type == "run:progress":
                        gate.touch()
                    yield event

            thread, got = collect_in_thread(events())
            child = spawn(["process", str(root)])
            thread.join(60)
            code, _, err = finish(child)

            assert code == 0, err
            assert not thread.is_alive()
            types = event_types(got)
            assert "run:progress" in types
            assert types[-1] == "run:complete"
            step_events = [(e.type, e.step_name) for e in got if e.type.startswith("step:")]
            assert ("step:complete", "after-gate") in step_events
        finally:
            other.stop()
