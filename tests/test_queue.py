"""Queueing on a concurrency key (SPEC §14, docs/concepts.md): `coalesce="queue"` creates
another pending run behind the key's latest one; the runs of a key then start one at a
time, in trigger order, each after the one before it ended; runs that wait (§9), cancel
and delete keep that order; other keys and unkeyed runs never wait for a queue; and a
claim pass never reads the runs queued behind a busy key. The same across processes:
tests/test_queue_processes.py."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from helpers import status_of, store_of, wait_until
from pydantic import BaseModel

import durably
import durably._trigger
from durably import BatchItem, ConflictError, Durably, Step, ValidationError, define_job
from durably._ids import new_id
from durably.testing import ManualClock

Factory = Callable[..., Durably]


class In(BaseModel):
    n: int = 0
    key: str = "k"


class Log:
    """What the jobs did, in order, across the threads of one test: `start:<n>`, `end:<n>`."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.lines: list[str] = []
        self.gates: dict[int, threading.Event] = {}

    def add(self, line: str) -> None:
        with self.lock:
            self.lines.append(line)

    def starts(self) -> list[int]:
        with self.lock:
            return [int(line.split(":")[1]) for line in self.lines if line.startswith("start:")]


LOG = Log()


def _work(step: Step, p: In) -> int:
    def body() -> int:
        LOG.add(f"start:{p.n}")
        gate = LOG.gates.get(p.n)
        if gate is not None and not gate.wait(30):
            raise RuntimeError("test gate was never released")
        LOG.add(f"end:{p.n}")
        return p.n

    return int(step.run("work", body))


WORK = define_job(name="work", input=In, output=int, run=_work)
OTHER = define_job(name="other", input=In, output=int, run=_work)


def _sleeper(step: Step, p: In) -> int:
    step.run("before", lambda: LOG.add(f"start:{p.n}"))
    step.sleep("nap", 60)
    step.run("after", lambda: LOG.add(f"end:{p.n}"))
    return p.n


SLEEPER = define_job(name="sleeper", input=In, output=int, run=_sleeper)


@pytest.fixture(autouse=True)
def _fresh_log() -> Any:
    LOG.lines.clear()
    LOG.gates.clear()
    yield
    for gate in LOG.gates.values():
        gate.set()


def gate(n: int) -> threading.Event:
    """Make run ``n``'s step block until the returned event is set."""
    LOG.gates[n] = threading.Event()
    return LOG.gates[n]


def no_overlap(lines: list[str]) -> bool:
    """Every start is followed by its own end before the next start."""
    return (
        all(
            a.startswith("start:") and b == "end:" + a.split(":")[1]
            for a, b in zip(lines[::2], lines[1::2], strict=False)
        )
        and len(lines) % 2 == 0
    )


@pytest.fixture
def work(d: Durably) -> durably.JobHandle[In, int]:
    return d.register(WORK)


def queue(handle: durably.JobHandle[In, int], n: int, key: str = "k", **options: Any) -> str:
    return handle.trigger(In(n=n, key=key), concurrency_key=key, coalesce="queue", **options).id


class TestTrigger:
    def test_queue_creates_another_pending_run_behind_the_pending_one(
        self, d: Durably, work: durably.JobHandle[In, int]
    ) -> None:
        """Each queued trigger creates a pending run ("created", `run:trigger`), however
        many of the key are pending already."""
        seen: list[Any] = []
        d.on("run:trigger", seen.append)

        results = [work.trigger(In(n=n), concurrency_key="k", coalesce="queue") for n in range(3)]

        assert [r.disposition for r in results] == ["created"] * 3
        assert len({r.id for r in results}) == 3
        assert [status_of(d, r.id) for r in results] == ["pending"] * 3
        assert [e.run_id for e in seen] == [r.id for r in results]

    def test_without_coalesce_a_second_pending_run_still_conflicts(
        self, d: Durably, work: durably.JobHandle[In, int]
    ) -> None:
        """Behind a queue, a trigger without `coalesce` still raises ConflictError (the
        message names both ways out), and creates nothing."""
        queue(work, 0)
        queue(work, 1)

        with pytest.raises(ConflictError, match=r'coalesce="skip".*coalesce="queue"'):
            work.trigger(In(n=2), concurrency_key="k")
        assert len(d.get_runs()) == 2

    def test_skip_returns_the_latest_pending_run_of_the_queue(
        self, d: Durably, work: durably.JobHandle[In, int]
    ) -> None:
        """`coalesce="skip"` returns the key's latest pending run: the last of the queue,
        the one that starts last (so it sees what the skipped trigger asked for)."""
        queue(work, 0)
        last = queue(work, 1)

        skipped = work.trigger(In(n=2), concurrency_key="k", coalesce="skip")

        assert (skipped.id, skipped.disposition) == (last, "coalesced")
        assert len(d.get_runs()) == 2

    def test_queue_without_a_concurrency_key_is_invalid(
        self, d: Durably, work: durably.JobHandle[In, int]
    ) -> None:
        """`coalesce="queue"` without a concurrency key raises ValidationError; nothing is
        written."""
        with pytest.raises(ValidationError, match="coalesce requires concurrency_key"):
            work.trigger(In(), coalesce="queue")
        assert d.get_runs() == []

    def test_an_idempotency_key_still_finds_its_run(
        self, d: Durably, work: durably.JobHandle[In, int]
    ) -> None:
        """A queued trigger with the idempotency key of a queued run returns that run
        ("idempotent"), not a new one behind the queue."""
        first = work.trigger(In(n=0), idempotency_key="i", concurrency_key="k", coalesce="queue")
        queue(work, 1)

        again = work.trigger(In(n=9), idempotency_key="i", concurrency_key="k", coalesce="queue")

        assert (again.id, again.disposition) == (first.id, "idempotent")
        assert len(d.get_runs()) == 2

    def test_a_batch_fans_out_behind_one_key(self, d: Durably, work: durably.JobHandle[In, int]) -> None:
        """Twelve batch items sharing a key (the thumbnails of the issue) are all created,
        and all run, one at a time, in the order of the batch."""
        results = work.batch_trigger(
            [BatchItem(In(n=n), concurrency_key="sku", coalesce="queue") for n in range(12)]
        )

        assert [r.disposition for r in results] == ["created"] * 12
        assert d.process_until_idle() == 12
        assert LOG.starts() == list(range(12))
        assert no_overlap(LOG.lines)

    def test_trigger_and_wait_queues_and_returns_once_its_turn_came(self, durably_factory: Factory) -> None:
        """`trigger_and_wait(coalesce="queue")` waits for its run, which starts only after
        the key's running run ended."""
        d = durably_factory(jobs=[WORK], max_concurrent_runs=2)
        work = d.register(WORK)
        first_gate = gate(0)
        first = queue(work, 0)
        d.start()
        wait_until(lambda: LOG.starts() == [0])
        out: list[Any] = []
        waiter = threading.Thread(
            target=lambda: out.append(
                work.trigger_and_wait(In(n=1), concurrency_key="k", coalesce="queue", timeout=30)
            )
        )
        waiter.start()
        wait_until(lambda: len(d.get_runs()) == 2)
        assert waiter.is_alive()
        assert LOG.starts() == [0]

        first_gate.set()
        waiter.join(30)

        assert (out[0].output, out[0].disposition) == (1, "created")
        assert status_of(d, first) == "completed"
        assert LOG.lines == ["start:0", "end:0", "start:1", "end:1"]


class TestOrder:
    def test_runs_of_a_key_never_overlap_and_start_in_trigger_order(self, durably_factory: Factory) -> None:
        """With four runs executing at a time, the queued runs of each of two keys still
        run one at a time, in trigger order; the keys run beside each other."""
        d = durably_factory(jobs=[WORK], max_concurrent_runs=4)
        work = d.register(WORK)
        ids = [queue(work, n, key="ab"[n % 2]) for n in range(12)]
        d.start()

        wait_until(lambda: all(status_of(d, i) == "completed" for i in ids), timeout=30)

        lines_a = [line for line in LOG.lines if int(line.split(":")[1]) % 2 == 0]
        lines_b = [line for line in LOG.lines if int(line.split(":")[1]) % 2 == 1]
        assert no_overlap(lines_a)
        assert no_overlap(lines_b)
        assert [n for n in LOG.starts() if n % 2 == 0] == [0, 2, 4, 6, 8, 10]
        assert [n for n in LOG.starts() if n % 2 == 1] == [1, 3, 5, 7, 9, 11]

    def test_trigger_order_holds_when_ids_sort_the_other_way(
        self, d: Durably, work: durably.JobHandle[In, int], monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Runs queued in one order whose ids sort in the other (two triggers raced for
        the key, or two hosts' clocks differ) start in trigger order, and one
        `process_until_idle()` runs them all (the claimer goes to the run ahead)."""
        ids = sorted((new_id() for _ in range(4)), reverse=True)
        monkeypatch.setattr(durably._trigger, "new_id", lambda: ids.pop(0))
        triggered = [queue(work, n) for n in range(4)]
        monkeypatch.undo()
        assert triggered == sorted(triggered, reverse=True)

        assert d.process_until_idle() == 4
        assert LOG.starts() == [0, 1, 2, 3]

    def test_other_keys_and_unkeyed_runs_are_not_held_up_by_a_busy_queue(
        self, durably_factory: Factory, root: Path
    ) -> None:
        """While a key's first run executes in a worker, another instance on the root runs
        every run of other keys and without a key, and none queued on the busy key."""
        busy_gate = gate(0)
        executing = durably_factory(jobs=[WORK])
        busy = [queue(executing.register(WORK), n, key="busy") for n in range(5)]
        executing.start()
        wait_until(lambda: LOG.starts() == [0])
        d = durably_factory(jobs=[WORK])
        work = d.register(WORK)
        others = [queue(work, n, key="other") for n in (10, 11)] + [work.trigger(In(n=12)).id]

        assert d.process_until_idle() == 3

        assert all(status_of(d, i) == "completed" for i in others)
        assert [status_of(d, i) for i in busy] == ["leased"] + ["pending"] * 4
        busy_gate.set()
        wait_until(lambda: all(status_of(d, i) == "completed" for i in busy))
        assert [n for n in LOG.starts() if n < 10] == [0, 1, 2, 3, 4]

    def test_a_claim_reads_none_of_the_runs_queued_on_a_busy_key(
        self, durably_factory: Factory, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """With 200 runs queued behind a key's executing run, claiming an unkeyed run reads
        the records of at most three runs besides the one it claims (the key's first
        queued run and the run ahead of it), not the 200."""
        busy_gate = gate(0)
        executing = durably_factory(jobs=[WORK])
        handle = executing.register(WORK)
        handle.batch_trigger(
            [BatchItem(In(n=n), concurrency_key="busy", coalesce="queue") for n in range(201)]
        )
        executing.start()
        wait_until(lambda: LOG.starts() == [0])
        d = durably_factory(jobs=[WORK])
        unkeyed = d.register(WORK).trigger(In(n=999)).id
        runs = store_of(d).runs
        loaded: list[str] = []
        real_load = runs.load

        def load(run_id: str) -> Any:
            loaded.append(run_id)
            return real_load(run_id)

        monkeypatch.setattr(runs, "load", load)

        assert d.process_one()

        assert status_of(d, unkeyed) == "completed"
        assert len({i for i in loaded if i != unkeyed}) <= 3
        busy_gate.set()


class TestWaitingRuns:
    @pytest.fixture
    def clock(self) -> ManualClock:
        return ManualClock(datetime(2026, 1, 1, tzinfo=UTC))

    def test_a_delayed_run_is_the_pending_run_and_the_queue_waits_for_it(
        self, durably_factory: Factory, clock: ManualClock
    ) -> None:
        """A run waiting to start holds the key as its pending run (a plain trigger
        conflicts), and a run queued behind it waits for it, even when its own start
        time comes first."""
        d = durably_factory(jobs=[WORK], clock=clock)
        work = d.register(WORK)
        late = queue(work, 0, delay=timedelta(hours=1))
        with pytest.raises(ConflictError):
            work.trigger(In(n=1), concurrency_key="k")
        behind = queue(work, 1)

        assert d.process_until_idle() == 0
        assert status_of(d, behind) == "pending"
        clock.advance(timedelta(hours=1))
        assert d.process_until_idle() == 2

        assert status_of(d, late) == "completed"
        assert LOG.lines == ["start:0", "end:0", "start:1", "end:1"]

    def test_a_started_run_that_sleeps_keeps_the_key_and_the_queue_waits(
        self, durably_factory: Factory, clock: ManualClock
    ) -> None:
        """A run that started and sleeps keeps its key: the runs queued behind it start
        only after it woke and ended, in their order."""
        d = durably_factory(jobs=[SLEEPER], clock=clock)
        sleeper = d.register(SLEEPER)
        ids = [sleeper.trigger(In(n=n), concurrency_key="k", coalesce="queue").id for n in range(3)]

        d.process_until_idle()
        assert [status_of(d, i) for i in ids] == ["waiting", "pending", "pending"]
        for _ in range(3):
            clock.advance(timedelta(minutes=1))
            d.process_until_idle()

        assert [status_of(d, i) for i in ids] == ["completed"] * 3
        assert LOG.lines == ["start:0", "end:0", "start:1", "end:1", "start:2", "end:2"]

    def test_a_run_cancelled_in_the_queue_does_not_let_the_runs_behind_it_overtake(
        self, durably_factory: Factory, clock: ManualClock
    ) -> None:
        """Runs queued behind a cancelled run still wait for the runs ahead of it (here a
        delayed first run); once every run behind the first is cancelled, the first is
        the key's pending run again (a plain trigger conflicts, "skip" returns it)."""
        d = durably_factory(jobs=[WORK], clock=clock)
        work = d.register(WORK)
        first = queue(work, 0, delay=timedelta(hours=1))
        ids = [queue(work, n) for n in (1, 2)]

        d.cancel(ids[0])
        assert d.process_until_idle() == 0
        assert status_of(d, ids[1]) == "pending"
        d.cancel(ids[1])
        with pytest.raises(ConflictError):
            work.trigger(In(n=3), concurrency_key="k")
        assert work.trigger(In(n=3), concurrency_key="k", coalesce="skip").id == first
        last = queue(work, 4)

        clock.advance(timedelta(hours=1))
        assert d.process_until_idle() == 2
        assert LOG.starts() == [0, 4]
        assert status_of(d, last) == "completed"

    def test_a_cancelled_link_is_deleted_only_once_the_runs_ahead_of_it_ended(
        self, durably_factory: Factory, clock: ManualClock
    ) -> None:
        """Deleting a run cancelled in the middle of a queue would let the runs behind it
        overtake the runs ahead: it raises ConflictError (and purging skips it) until
        those ended; then it is deleted like any ended run."""
        d = durably_factory(jobs=[WORK], clock=clock)
        work = d.register(WORK)
        queue(work, 0, delay=timedelta(hours=1))
        link, behind = queue(work, 1), queue(work, 2)
        d.cancel(link)

        with pytest.raises(ConflictError, match="queued behind"):
            d.delete_run(link)
        assert d.purge_runs(older_than=timedelta(0)) == 0
        assert d.process_until_idle() == 0
        clock.advance(timedelta(hours=1))
        assert d.process_until_idle() == 2

        d.delete_run(link)
        assert d.get_run(link) is None
        assert status_of(d, behind) == "completed"
        assert LOG.starts() == [0, 2]


class TestCancelAndDelete:
    def test_cancelling_the_pending_head_lets_the_next_run_go(
        self, d: Durably, work: durably.JobHandle[In, int]
    ) -> None:
        """A cancelled first run never runs; the next one of the queue does, then the rest."""
        ids = [queue(work, n) for n in range(3)]

        d.cancel(ids[0])

        assert d.process_until_idle() == 2
        assert LOG.starts() == [1, 2]

    def test_cancelling_a_run_in_the_middle_keeps_the_order_of_the_others(
        self, d: Durably, work: durably.JobHandle[In, int]
    ) -> None:
        """A cancelled run in the middle of a queue is left out; the others keep their order."""
        ids = [queue(work, n) for n in range(4)]

        d.cancel(ids[2])

        assert d.process_until_idle() == 3
        assert LOG.starts() == [0, 1, 3]

    def test_deleting_the_cancelled_head_lets_the_next_run_go(
        self, d: Durably, work: durably.JobHandle[In, int]
    ) -> None:
        """A queue whose first run was cancelled and deleted runs on."""
        ids = [queue(work, n) for n in range(2)]
        d.cancel(ids[0])
        d.delete_run(ids[0])

        assert d.process_until_idle() == 1
        assert LOG.starts() == [1]

    def test_cancelling_the_executing_head_lets_the_next_go_once_it_stopped(
        self, durably_factory: Factory
    ) -> None:
        """The next run of a queue starts after the cancelled run's execution stopped
        (its step returned), not while it still runs."""
        d = durably_factory(jobs=[WORK], max_concurrent_runs=2)
        work = d.register(WORK)
        head_gate = gate(0)
        ids = [queue(work, n) for n in range(2)]
        d.start()
        wait_until(lambda: LOG.starts() == [0])

        d.cancel(ids[0])
        assert status_of(d, ids[0]) == "cancelled"
        assert LOG.starts() == [0]
        head_gate.set()

        wait_until(lambda: status_of(d, ids[1]) == "completed")
        assert LOG.lines == ["start:0", "end:0", "start:1", "end:1"]

    def test_a_plain_run_of_another_job_with_the_key_waits_for_the_executing_one(
        self, durably_factory: Factory
    ) -> None:
        """Queues are per job and key, exclusion per key: a run of another job with the
        same key is created at once (its own pending run) but never overlaps the queue's
        executing run."""
        d = durably_factory(jobs=[WORK, OTHER], max_concurrent_runs=2)
        head_gate = gate(0)
        queue(d.register(WORK), 0)
        other = d.register(OTHER).trigger(In(n=1), concurrency_key="k")
        assert other.disposition == "created"
        d.start()
        wait_until(lambda: LOG.starts() == [0])
        assert status_of(d, other.id) == "pending"

        head_gate.set()

        wait_until(lambda: status_of(d, other.id) == "completed")
        assert LOG.lines == ["start:0", "end:0", "start:1", "end:1"]
