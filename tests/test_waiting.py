"""Runs that wait (SPEC §9, §13): delayed runs, retries, durable sleep, signals, child
runs and job timeouts, driven by a ManualClock (no sleeps)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pydantic
import pytest

import durably
from durably import (
    ConflictError,
    Durably,
    NotFoundError,
    Retry,
    RunFailedError,
    RunStatus,
    ValidationError,
    WaitTimeoutError,
    define_job,
)
from durably.testing import ManualClock

START = datetime(2026, 1, 1, tzinfo=UTC)


class In(pydantic.BaseModel):
    n: int = 0


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(START)


def make(tmp_path: Path, clock: ManualClock, *jobs: Any) -> Durably:
    return Durably(tmp_path / "root", jobs=list(jobs), clock=clock, fsync=False)


def status(d: Durably, run_id: str) -> str:
    run = d.get_run(run_id)
    assert run is not None
    return run.status.value


# -- delayed runs ------------------------------------------------------------------------


@define_job(name="plain", input=In, output=int)
def plain(step: Any, p: In) -> int:
    return int(step.run("double", lambda: p.n * 2))


class TestDelayedRuns:
    def test_a_delayed_run_waits_then_starts(self, tmp_path: Path, clock: ManualClock) -> None:
        d = make(tmp_path, clock, plain)
        run = d.register(plain).trigger({"n": 2}, delay=90)
        assert run.status is RunStatus.WAITING
        got = d.get_run(run.id)
        assert got is not None
        assert got.waiting_for == "start"
        assert got.wake_at == START + timedelta(seconds=90)
        assert got.is_active
        assert not got.is_terminal
        assert d.process_until_idle() == 0
        assert [r.id for r in d.get_runs(status="waiting")] == [run.id]
        clock.advance(90)
        assert d.process_until_idle() == 1
        done = d.get_run(run.id)
        assert done is not None
        assert done.output == 4
        assert done.wake_at is None

    def test_run_at_in_the_past_starts_at_once(self, tmp_path: Path, clock: ManualClock) -> None:
        d = make(tmp_path, clock, plain)
        run = d.register(plain).trigger({"n": 1}, run_at=START - timedelta(days=1))
        assert d.process_until_idle() == 1
        assert status(d, run.id) == "completed"

    @pytest.mark.parametrize(
        ("kwargs", "words"),
        [
            ({"delay": -1}, "negative"),
            ({"run_at": datetime(2026, 1, 2)}, "aware"),
            ({"delay": 1, "run_at": START}, "not both"),
            ({"delay": "soon"}, "delay"),
        ],
    )
    def test_bad_start_times_are_refused_and_nothing_is_written(
        self, tmp_path: Path, clock: ManualClock, kwargs: dict[str, Any], words: str
    ) -> None:
        d = make(tmp_path, clock, plain)
        with pytest.raises(ValidationError, match=words):
            d.register(plain).trigger({}, **kwargs)
        assert d.get_runs() == []

    def test_a_delayed_keyed_run_is_the_keys_pending_run(self, tmp_path: Path, clock: ManualClock) -> None:
        d = make(tmp_path, clock, plain)
        h = d.register(plain)
        first = h.trigger({"n": 1}, concurrency_key="k", delay=60)
        with pytest.raises(ConflictError):
            h.trigger({"n": 2}, concurrency_key="k")
        assert h.trigger({"n": 3}, concurrency_key="k", coalesce="skip").id == first.id

    def test_cancel_of_a_waiting_run_is_immediate(self, tmp_path: Path, clock: ManualClock) -> None:
        d = make(tmp_path, clock, plain)
        run = d.register(plain).trigger({}, delay=60)
        d.cancel(run.id)
        assert status(d, run.id) == "cancelled"
        clock.advance(61)
        assert d.process_until_idle() == 0


# -- retries -------------------------------------------------------------------------------

calls: dict[str, int] = {}


def flaky(key: str, fails: int, exc: type[Exception] = RuntimeError) -> int:
    calls[key] = calls.get(key, 0) + 1
    if calls[key] <= fails:
        raise exc(f"attempt {calls[key]} failed")
    return calls[key]


@define_job(name="retrying", input=In, output=int)
def retrying(step: Any, p: In) -> int:
    return int(step.run("call", lambda: flaky("retrying", p.n), retry=Retry(3, delay=30, jitter=False)))


@define_job(name="job-retry", input=In, output=int, retry=2)
def job_retry(step: Any, p: In) -> int:
    return int(step.run("call", lambda: flaky("job-retry", p.n)))


@define_job(name="give-up", input=In, output=int)
def give_up(step: Any, p: In) -> int:
    policy = Retry(5, delay=1, give_up_on=(KeyError,))
    return int(step.run("call", lambda: flaky("give-up", 9, KeyError), retry=policy))


class TestRetries:
    def setup_method(self) -> None:
        calls.clear()

    def test_each_attempt_is_a_step_record_and_the_run_waits_between(
        self, tmp_path: Path, clock: ManualClock
    ) -> None:
        d = make(tmp_path, clock, retrying)
        run = d.register(retrying).trigger({"n": 2})
        d.process_until_idle()
        got = d.get_run(run.id)
        assert got is not None
        assert got.status is RunStatus.WAITING
        assert got.waiting_for == "retry call (attempt 2 of 3)"
        assert got.wake_at == START + timedelta(seconds=30)
        clock.advance(29)
        d.process_until_idle()
        assert calls["retrying"] == 1  # not before its time
        clock.advance(1)
        d.process_until_idle()
        again = d.get_run(run.id)
        assert again is not None
        assert again.waiting_for == "retry call (attempt 3 of 3)"
        assert again.wake_at == START + timedelta(seconds=30 + 60)  # backoff 2
        clock.advance(60)
        d.process_until_idle()
        done = d.get_run(run.id)
        assert done is not None
        assert done.status is RunStatus.COMPLETED
        assert done.output == 3
        steps = d.get_steps(run.id)
        assert [(s.status, s.attempt) for s in steps] == [("failed", 1), ("failed", 2), ("completed", 3)]
        assert steps[0].error is not None
        assert "attempt 1 failed" in steps[0].error

    def test_used_up_attempts_fail_the_run_with_the_last_error(
        self, tmp_path: Path, clock: ManualClock
    ) -> None:
        d = make(tmp_path, clock, retrying)
        run = d.register(retrying).trigger({"n": 9})
        for _ in range(3):
            d.process_until_idle()
            clock.advance(3600)
        got = d.get_run(run.id)
        assert got is not None
        assert got.status is RunStatus.FAILED
        assert got.error is not None
        assert "attempt 3 failed" in got.error
        assert got.failed_step_name == "call"
        assert calls["retrying"] == 3

    def test_the_jobs_retry_is_every_steps_default(self, tmp_path: Path, clock: ManualClock) -> None:
        d = make(tmp_path, clock, job_retry)
        run = d.register(job_retry).trigger({"n": 1})
        d.process_until_idle()
        clock.advance(3600)
        d.process_until_idle()
        assert status(d, run.id) == "completed"
        assert calls["job-retry"] == 2

    def test_give_up_on_is_not_retried(self, tmp_path: Path, clock: ManualClock) -> None:
        d = make(tmp_path, clock, give_up)
        run = d.register(give_up).trigger({})
        d.process_until_idle()
        assert status(d, run.id) == "failed"
        assert calls["give-up"] == 1

    def test_short_waits_are_spent_in_the_worker_with_the_system_clock(self, tmp_path: Path) -> None:
        @define_job(name="quick", input=In, output=int)
        def quick(step: Any, p: In) -> int:
            return int(step.run("call", lambda: flaky("quick", 2), retry=Retry(3, delay=0.01, jitter=False)))

        d = Durably(tmp_path / "root", jobs=[quick], fsync=False)
        run = d.register(quick).trigger({})
        assert d.process_one()
        assert status(d, run.id) == "completed"
        assert [s.attempt for s in d.get_steps(run.id)] == [1, 2, 3]

    @pytest.mark.parametrize(
        "kwargs",
        [
            {"max_attempts": 0},
            {"delay": -1},
            {"backoff": 0.5},
            {"max_delay": float("nan")},
            {"retry_on": (1,)},
        ],
    )
    def test_nonsense_retry_values_are_refused(self, kwargs: dict[str, Any]) -> None:
        with pytest.raises(ValidationError, match="Retry"):
            Retry(**kwargs)

    def test_a_bad_retry_option_is_refused(self) -> None:
        with pytest.raises(ValidationError, match="retry"):
            define_job(name="x", input=In, retry="often", run=lambda step, p: None)  # type: ignore[call-overload]


# -- sleep -------------------------------------------------------------------------------

ran: list[str] = []


@define_job(name="sleeper", input=In, output=str)
def sleeper(step: Any, p: In) -> str:
    step.run("before", lambda: ran.append("before"))
    step.sleep("nap", timedelta(days=30))
    step.sleep("zero", 0)
    step.sleep_until("past", START - timedelta(days=1))
    step.run("after", lambda: ran.append("after"))
    return "woke"


@define_job(name="async-sleeper", input=In, output=str)
async def async_sleeper(step: Any, p: In) -> str:
    await step.run("before", lambda: ran.append("before"))
    await step.sleep("nap", 3600)
    return "woke"


class TestSleep:
    def setup_method(self) -> None:
        ran.clear()

    def test_a_thirty_day_sleep_holds_no_worker_and_replays_once(
        self, tmp_path: Path, clock: ManualClock
    ) -> None:
        d = make(tmp_path, clock, sleeper)
        run = d.register(sleeper).trigger({})
        d.process_until_idle()
        got = d.get_run(run.id)
        assert got is not None
        assert got.status is RunStatus.WAITING
        assert got.waiting_for == "sleep nap"
        assert got.wake_at == START + timedelta(days=30)
        assert got.lease_owner is None
        assert [s.status for s in d.get_steps(run.id)] == ["completed", "running"]
        clock.advance(timedelta(days=30))
        d.process_until_idle()
        done = d.get_run(run.id)
        assert done is not None
        assert done.output == "woke"
        assert ran == ["before", "after"]  # "before" replayed, not run again
        assert [(s.name, s.status) for s in d.get_steps(run.id)] == [
            ("before", "completed"),
            ("nap", "completed"),
            ("zero", "completed"),
            ("past", "completed"),
            ("after", "completed"),
        ]

    def test_async_jobs_await_sleep(self, tmp_path: Path, clock: ManualClock) -> None:
        d = make(tmp_path, clock, async_sleeper)
        run = d.register(async_sleeper).trigger({})
        d.process_until_idle()
        assert status(d, run.id) == "waiting"
        clock.advance(3600)
        d.process_until_idle()
        assert status(d, run.id) == "completed"

    def test_a_naive_sleep_until_is_refused(self, tmp_path: Path, clock: ManualClock) -> None:
        @define_job(name="naive", input=In)
        def naive(step: Any, p: In) -> None:
            step.sleep_until("x", datetime(2026, 1, 2))

        d = make(tmp_path, clock, naive)
        run = d.register(naive).trigger({})
        d.process_until_idle()
        got = d.get_run(run.id)
        assert got is not None
        assert got.status is RunStatus.FAILED
        assert got.error is not None
        assert "aware" in got.error

    def test_events_say_when_a_run_waits(self, tmp_path: Path, clock: ManualClock) -> None:
        d = make(tmp_path, clock, sleeper)
        seen: list[Any] = []
        d.on("run:wait", seen.append)
        d.register(sleeper).trigger({})
        d.process_until_idle()
        assert [(e.waiting_for, e.wake_at) for e in seen] == [("sleep nap", START + timedelta(days=30))]


# -- logs outside steps -----------------------------------------------------------------

chatty_calls: list[str] = []


def _flaky_once() -> int:
    chatty_calls.append("flaky")
    if chatty_calls.count("flaky") == 1:
        raise RuntimeError("first attempt fails")
    return 2


@define_job(name="chatty", input=In, output=int)
def chatty(step: Any, p: In) -> int:
    step.log.info("starting", data={"n": p.n})
    a = int(step.run("a", lambda: p.n + 1))
    step.log.info("between")
    step.sleep("nap", 60)
    step.log.warn("after the nap")
    b = int(step.run("flaky", _flaky_once, retry=Retry(2, delay=5, jitter=False)))
    step.log.info("got", data=step.wait_for_signal("go"))
    if p.n == 1:
        step.log.info("before the crash")
        raise KeyboardInterrupt  # the worker process dies here (the run stays leased)
    step.log.error("done")
    return a + b


class TestLogsOutsideSteps:
    def setup_method(self) -> None:
        chatty_calls.clear()

    def test_each_log_line_outside_steps_is_written_once_across_waits(
        self, tmp_path: Path, clock: ManualClock
    ) -> None:
        """Every wake replays the job function from the top; the log lines it writes
        between steps before the point where the last execution stopped were written by
        that execution already, and are neither written nor emitted again."""
        d = make(tmp_path, clock, chatty)
        seen: list[str] = []
        d.on("log:write", lambda e: seen.append(e.message))
        run = d.register(chatty).trigger({"n": 0})
        d.process_until_idle()  # to the sleep
        clock.advance(60)
        d.process_until_idle()  # to the retry's wait
        clock.advance(5)
        d.process_until_idle()  # to the signal
        d.signal(run.id, "go", {"by": "ana"})
        d.process_until_idle()
        assert status(d, run.id) == "completed"
        expected = ["starting", "between", "after the nap", "got", "done"]
        assert [entry.message for entry in d.get_logs(run.id)] == expected
        assert seen == expected
        assert [(e.level, e.data) for e in d.get_logs(run.id)][::4] == [("info", {"n": 0}), ("error", None)]

    def test_a_log_line_written_before_a_crash_is_not_written_again(
        self, tmp_path: Path, clock: ManualClock
    ) -> None:
        """A worker that dies between a log line and the next step: the next execution
        replays up to there and does not write the line again (nor the earlier ones)."""
        d = make(tmp_path, clock, chatty)
        run = d.register(chatty).trigger({"n": 1})
        d.signal(run.id, "go", "early")
        d.process_until_idle()
        clock.advance(60)
        d.process_until_idle()
        clock.advance(5)
        with pytest.raises(KeyboardInterrupt):
            d.process_until_idle()  # dies after "before the crash"
        assert status(d, run.id) == "leased"
        with pytest.raises(KeyboardInterrupt):
            d.process_until_idle()  # a new execution (its owner is gone) dies there again
        messages = [entry.message for entry in d.get_logs(run.id)]
        assert messages == ["starting", "between", "after the nap", "got", "before the crash"]


# -- signals -----------------------------------------------------------------------------


class Approval(pydantic.BaseModel):
    by: str


@define_job(name="approve", input=In, output=str)
def approve(step: Any, p: In) -> str:
    ok = step.wait_for_signal("approval", returns=Approval)
    return str(ok.by)


@define_job(name="approve-timeout", input=In, output=str)
def approve_timeout(step: Any, p: In) -> str:
    try:
        step.wait_for_signal("approval", timeout=60)
    except WaitTimeoutError:
        return step.run("timed-out", lambda: "timed out")  # type: ignore[no-any-return]
    return "approved"


class TestSignals:
    def test_a_signal_wakes_its_waiter_with_its_data(self, tmp_path: Path, clock: ManualClock) -> None:
        d = make(tmp_path, clock, approve)
        events: list[Any] = []
        d.on("run:signal", events.append)
        run = d.register(approve).trigger({})
        d.process_until_idle()
        got = d.get_run(run.id)
        assert got is not None
        assert got.waiting_for == "signal approval"
        assert got.wake_at is None
        d.signal(run.id, "approval", {"by": "ana"})
        assert [e.name for e in events] == ["approval"]
        d.process_until_idle()
        done = d.get_run(run.id)
        assert done is not None
        assert done.output == "ana"

    def test_a_signal_sent_before_the_wait_is_kept(self, tmp_path: Path, clock: ManualClock) -> None:
        d = make(tmp_path, clock, approve)
        run = d.register(approve).trigger({})
        d.signal(run.id, "approval", {"by": "early"})
        d.process_until_idle()
        done = d.get_run(run.id)
        assert done is not None
        assert done.output == "early"

    def test_each_name_is_delivered_once_and_ended_runs_refuse(
        self, tmp_path: Path, clock: ManualClock
    ) -> None:
        d = make(tmp_path, clock, approve)
        run = d.register(approve).trigger({})
        d.signal(run.id, "approval", {"by": "a"})
        with pytest.raises(ConflictError, match="already sent"):
            d.signal(run.id, "approval", {"by": "b"})
        d.process_until_idle()
        with pytest.raises(ConflictError):
            d.signal(run.id, "other")
        with pytest.raises(NotFoundError):
            d.signal("01J00000000000000000000000", "approval")

    def test_sending_a_signal_again_wakes_a_waiter_its_first_sender_left_asleep(
        self, tmp_path: Path, clock: ManualClock, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """The sender died between publishing the signal and waking the waiter (its
        marker stays in wait/, found by the sweep of waits within a minute): sending it
        again is refused, as a signal is delivered once, and wakes the waiter at once."""
        from durably._waits import WaitIndex  # noqa: PLC0415

        d = make(tmp_path, clock, approve)
        run = d.register(approve).trigger({})
        d.process_until_idle()  # waits; this idle instance swept its waits already
        real_unpark = WaitIndex.unpark
        with monkeypatch.context() as m:
            m.setattr(WaitIndex, "unpark", lambda self, state: False)  # the sender dies here
            d.signal(run.id, "approval", {"by": "ana"})
        assert WaitIndex.unpark is real_unpark
        d.process_until_idle()
        assert status(d, run.id) == "waiting"  # until a sweep
        with pytest.raises(ConflictError, match="already sent"):
            d.signal(run.id, "approval", {"by": "bob"})
        d.process_until_idle()
        done = d.get_run(run.id)
        assert done is not None
        assert done.output == "ana"

    def test_a_damaged_signal_file_is_not_a_delivered_signal(
        self, tmp_path: Path, clock: ManualClock
    ) -> None:
        """A signal file that does not read (torn, or damaged) wakes nobody: workers used
        to claim the run, find no signal, wait again and be woken again, forever."""
        from helpers import run_dir_of  # noqa: PLC0415

        from durably._layout import signal_name  # noqa: PLC0415

        d = make(tmp_path, clock, approve)
        run = d.register(approve).trigger({})
        d.process_until_idle()
        Path(run_dir_of(d, run.id), signal_name("approval")).write_bytes(b'{"v": 1, "na')
        with pytest.raises(ConflictError):  # its file is there (doctor reports it corrupt)
            d.signal(run.id, "approval", {"by": "ana"})
        assert d.process_until_idle(max_runs=5) <= 1
        assert status(d, run.id) == "waiting"

    @pytest.mark.parametrize(
        ("name", "data", "words"),
        [
            ("é" * 1000, None, "at most"),
            ("", None, "non-empty"),
            ("ok", float("nan"), "signal"),
            ("ok", object(), "signal"),
        ],
    )
    def test_bad_signals_are_refused_and_nothing_is_written(
        self, tmp_path: Path, clock: ManualClock, name: str, data: Any, words: str
    ) -> None:
        d = make(tmp_path, clock, approve)
        run = d.register(approve).trigger({})
        with pytest.raises(ValidationError, match=words):
            d.signal(run.id, name, data)
        d.signal(run.id, "approval", {"by": "after"})  # nothing of the bad one was kept

    def test_a_timeout_raises_and_a_replay_raises_it_again(self, tmp_path: Path, clock: ManualClock) -> None:
        d = make(tmp_path, clock, approve_timeout)
        run = d.register(approve_timeout).trigger({})
        d.process_until_idle()
        got = d.get_run(run.id)
        assert got is not None
        assert got.wake_at == START + timedelta(seconds=60)
        clock.advance(60)
        d.process_until_idle()
        done = d.get_run(run.id)
        assert done is not None
        assert done.output == "timed out"
        assert [(s.name, s.status) for s in d.get_steps(run.id)] == [
            ("approval", "failed"),
            ("timed-out", "completed"),
        ]


# -- child runs ---------------------------------------------------------------------------


@define_job(name="child", input=In, output=int)
def child(step: Any, p: In) -> int:
    if p.n < 0:
        raise ValueError("negative")
    return int(step.run("double", lambda: p.n * 2))


@define_job(name="parent", input=In, output=int)
def parent(step: Any, p: In) -> int:
    try:
        return int(step.invoke("kid", child, {"n": p.n}))
    except RunFailedError as exc:
        failed_id = exc.run_id
        return step.run("failed", lambda: -1 if failed_id else 0)  # type: ignore[no-any-return]


@define_job(name="own-key", input=In)
def own_key(step: Any, p: In) -> None:
    step.invoke("kid", child, {"n": 1}, concurrency_key="k")


@define_job(name="unregistered", input=In)
def unregistered(step: Any, p: In) -> None:
    step.invoke("kid", plain, {"n": 1})


class TestChildRuns:
    def test_a_parent_waits_for_its_child_and_gets_its_output(
        self, tmp_path: Path, clock: ManualClock
    ) -> None:
        d = make(tmp_path, clock, parent, child)
        run = d.register(parent).trigger({"n": 5})
        d.process_until_idle()
        done = d.get_run(run.id)
        assert done is not None
        assert done.output == 10
        kids = d.get_runs(parent_id=run.id)
        assert len(kids) == 1
        assert kids[0].parent_id == run.id
        assert kids[0].output == 10
        assert [r.id for r in d.get_runs(job_name="child")] == [kids[0].id]  # exactly one child
        handle = d.register(child)
        assert [r.id for r in handle.get_runs(parent_id=run.id)] == [kids[0].id]
        assert handle.get_runs(parent_id=kids[0].id) == []
        assert handle.get_runs(parent_id=run.id)[0].output == 10  # typed by the handle

    def test_a_waiting_parent_says_which_child(self, tmp_path: Path, clock: ManualClock) -> None:
        d = make(tmp_path, clock, parent, child)
        run = d.register(parent).trigger({"n": 5})
        assert d.process_one()  # the parent only: it triggers the child and waits
        kid = d.get_runs(parent_id=run.id)[0]
        got = d.get_run(run.id)
        assert got is not None
        assert got.status is RunStatus.WAITING
        assert got.waiting_for == f"child {kid.id}"

    def test_a_failed_child_raises_in_the_parent(self, tmp_path: Path, clock: ManualClock) -> None:
        d = make(tmp_path, clock, parent, child)
        run = d.register(parent).trigger({"n": -1})
        d.process_until_idle()
        done = d.get_run(run.id)
        assert done is not None
        assert done.output == -1

    def test_cancelling_a_parent_cancels_its_active_children(
        self, tmp_path: Path, clock: ManualClock
    ) -> None:
        d = make(tmp_path, clock, parent, child)
        run = d.register(parent).trigger({"n": 5})
        assert d.process_one()
        kid = d.get_runs(parent_id=run.id)[0]
        d.cancel(run.id)
        assert status(d, kid.id) == "cancelled"

    def test_the_parents_own_key_and_unregistered_jobs_are_refused(
        self, tmp_path: Path, clock: ManualClock
    ) -> None:
        d = make(tmp_path, clock, own_key, unregistered, child)
        a = d.register(own_key).trigger({}, concurrency_key="k")
        b = d.register(unregistered).trigger({})
        d.process_until_idle()
        ra, rb = d.get_run(a.id), d.get_run(b.id)
        assert ra is not None
        assert ra.error is not None
        assert "concurrency key" in ra.error
        assert rb is not None
        assert rb.error is not None
        assert "not registered" in rb.error
        assert d.get_runs(job_name="child") == []


# -- keys, timeouts, clocks ---------------------------------------------------------------


@define_job(name="keyed-sleeper", input=In)
def keyed_sleeper(step: Any, p: In) -> None:
    step.sleep("nap", 3600)


@define_job(name="slow", input=In, timeout=600)
def slow(step: Any, p: In) -> None:
    step.sleep("nap", timedelta(hours=1))


class TestKeysTimeoutsClocks:
    def test_a_waiting_run_keeps_its_concurrency_key(self, tmp_path: Path, clock: ManualClock) -> None:
        d = make(tmp_path, clock, keyed_sleeper, plain)
        a = d.register(keyed_sleeper).trigger({}, concurrency_key="k")
        d.process_until_idle()
        b = d.register(plain).trigger({}, concurrency_key="k")
        d.process_until_idle()
        assert status(d, a.id) == "waiting"
        assert status(d, b.id) == "pending"  # the key is held by the sleeping run
        clock.advance(3600)
        d.process_until_idle()
        assert status(d, a.id) == "completed"
        assert status(d, b.id) == "completed"

    def test_a_waiting_run_fails_at_its_timeout(self, tmp_path: Path, clock: ManualClock) -> None:
        d = make(tmp_path, clock, slow)
        run = d.register(slow).trigger({})
        d.process_until_idle()
        got = d.get_run(run.id)
        assert got is not None
        assert got.wake_at == START + timedelta(seconds=600)
        clock.advance(600)
        d.process_until_idle()
        done = d.get_run(run.id)
        assert done is not None
        assert done.status is RunStatus.FAILED
        assert done.error == "Run timed out after 600s"

    def test_a_clock_that_returns_naive_times_is_refused(self, tmp_path: Path) -> None:
        class Naive:
            def now(self) -> datetime:
                return datetime(2026, 1, 1)

        with pytest.raises(ValidationError, match="aware"):
            Durably(tmp_path, clock=Naive())
        with pytest.raises(ValidationError, match="now"):
            Durably(tmp_path, clock=object())

    def test_manual_clock_refuses_naive_and_negative(self) -> None:
        with pytest.raises(ValidationError):
            ManualClock(datetime(2026, 1, 1))
        with pytest.raises(ValidationError):
            ManualClock(START).advance(-1)

    def test_times_recorded_come_from_the_clock(self, tmp_path: Path, clock: ManualClock) -> None:
        d = make(tmp_path, clock, plain)
        run = d.register(plain).trigger({"n": 1})
        d.process_until_idle()
        got = d.get_run(run.id)
        assert got is not None
        assert got.created_at == START
        assert got.completed_at == START
        assert all(s.started_at == START for s in d.get_steps(run.id))

    def test_public_names(self) -> None:
        assert {"RunWaitEvent", "RunSignalEvent", "Retry"} <= set(durably.__all__)
        assert RunStatus.WAITING.value == "waiting"
        assert not RunStatus.WAITING.is_terminal


class TestCommandLine:
    """The CLI on runs that wait: `trigger --delay/--run-at`, `show`, `runs --status
    waiting` and `signal`, each a real `durably` process."""

    APP = "apps.waiting_jobs:sleepy"

    def test_a_delayed_run_reads_as_waiting_to_start(self, tmp_path: Path) -> None:
        from cli_harness import durably_cli  # noqa: PLC0415

        root = tmp_path / "root"
        made = durably_cli("trigger", self.APP, "approve", "--delay", "2h", "--root", root)
        assert made.returncode == 0, made.stderr
        run_id = made.stdout.strip()
        shown = durably_cli("show", run_id, "--root", root)
        assert shown.returncode == 0, shown.stderr
        assert f"{run_id}  approve  waiting" in shown.stdout
        assert "waits for   start until" in shown.stdout
        listed = durably_cli("runs", "--status", "waiting", "--root", root)
        assert run_id in listed.stdout
        assert listed.stdout.splitlines()[1].split()[2] == "waiting"
        assert run_id not in durably_cli("runs", "--status", "pending", "--root", root).stdout
        naive = durably_cli("trigger", self.APP, "approve", "--run-at", "2030-01-01T10:00", "--root", root)
        assert naive.returncode != 0
        assert "time zone" in naive.stderr

    def test_show_and_signal_a_run_that_waits_for_a_signal(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        from apps.waiting_jobs import approve  # noqa: PLC0415
        from cli_harness import durably_cli  # noqa: PLC0415

        monkeypatch.setenv("WAIT_EVENTS", str(tmp_path / "events"))
        root = tmp_path / "root"
        d = Durably(root, jobs=[approve])
        run = d.register(approve).trigger({})
        assert d.process_one()
        shown = durably_cli("show", run.id, "--root", root)
        assert shown.returncode == 0, shown.stderr
        assert "waits for   signal go" in shown.stdout
        sent = durably_cli("signal", run.id, "go", "--data", '{"by": "cli"}', "--root", root)
        assert sent.returncode == 0, sent.stderr
        again = durably_cli("signal", run.id, "go", "--data", "1", "--root", root)
        assert again.returncode != 0
        assert "already sent" in again.stderr
        assert d.process_one()
        done = d.get_run(run.id)
        assert done is not None
        assert done.output == {"data": {"by": "cli"}}
        assert f"{run.id}  approve  completed" in durably_cli("show", run.id, "--root", root).stdout
