"""Workers (docs/workers.md, docs/api.md: Workers): start/stop, the context manager,
process_one/process_until_idle, claim order, concurrency limits and keys, registered
jobs, lease generations."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from helpers import Payload, Started, blocking_job, status_of, wait_until
from pydantic import BaseModel

from durably import Durably, Step, WorkerInfo, define_job
from durably._records import iso_epoch, now_iso
from durably._workers import STALE_AFTER, record_name

Factory = Callable[..., Durably]


class In(BaseModel):
    value: str = ""


order: list[str] = []


def _record(step: Step, payload: In) -> str:
    order.append(payload.value)
    return step.run("record", lambda: payload.value)


RECORD = define_job(name="record", input=In, output=str, run=_record)
OTHER = define_job(name="other", input=In, output=str, run=_record)


class TestStartStop:
    def test_started_worker_executes_runs(self, d: Durably) -> None:
        """`start()` runs a background worker that executes pending runs."""
        result = d.register(RECORD).trigger(In(value="bg"))

        d.start()

        assert d.wait_for_run(result.id, timeout=10).output == "bg"

    def test_start_and_stop_are_safe_to_call_twice(self, d: Durably) -> None:
        """Calling `start()` or `stop()` twice is harmless."""
        handle = d.register(RECORD)
        d.start()
        d.start()

        assert d.wait_for_run(handle.trigger(In(value="x")).id, timeout=10).status == "completed"
        d.stop()
        d.stop()

    def test_stop_on_a_never_started_instance_does_nothing(self, d: Durably) -> None:
        """`stop()` on an instance that never started returns without error."""
        d.stop()
        d.stop(timeout=1)

    def test_instance_can_start_again_after_stop(self, d: Durably) -> None:
        """A stopped instance can be started again and executes new runs."""
        handle = d.register(RECORD)
        d.start()
        d.stop()

        d.start()

        assert d.wait_for_run(handle.trigger(In(value="y")).id, timeout=10).status == "completed"

    def test_stop_waits_for_runs_in_flight(self, durably_factory: Factory, gates: Any) -> None:
        """`stop()` returns only after the run in flight has finished."""
        gate, started = gates(), Started()
        d = durably_factory(jobs=[blocking_job("block", gate, started)])
        result = d.jobs["block"].trigger(Payload(value="v"))
        d.start()
        wait_until(lambda: started.count() == 1)

        stopper = threading.Thread(target=d.stop, kwargs={"timeout": 30})
        stopper.start()
        assert stopper.is_alive()  # the run is blocked on the gate, so stop cannot be done
        gate.set()
        stopper.join(30)

        assert not stopper.is_alive()
        assert status_of(d, result.id) == "completed"

    def test_stop_with_a_timeout_returns_while_a_run_is_still_in_flight(
        self, durably_factory: Factory, gates: Any
    ) -> None:
        """`stop(timeout=...)` gives up waiting after the timeout; the run is left in flight."""
        gate, started = gates(), Started()
        d = durably_factory(jobs=[blocking_job("block", gate, started)])
        result = d.jobs["block"].trigger(Payload(value="v"))
        d.start()
        wait_until(lambda: started.count() == 1)

        d.stop(timeout=0.2)

        assert status_of(d, result.id) == "leased"
        gate.set()
        d.stop(timeout=30)

    def test_context_manager_returns_the_instance_and_stops_on_exit(
        self, durably_factory: Factory, gates: Any
    ) -> None:
        """`with Durably(...) as d:` yields the instance and stops it (waiting) on exit."""
        gate, started = gates(), Started()
        d = durably_factory(jobs=[blocking_job("block", gate, started)])
        result = d.jobs["block"].trigger(Payload(value="v"))
        entered: list[Any] = []

        def body() -> None:
            with d as inside:
                entered.append(inside)
                inside.start()
                wait_until(lambda: started.count() == 1)

        thread = threading.Thread(target=body)
        thread.start()
        wait_until(lambda: started.count() == 1)
        gate.set()
        thread.join(30)

        assert not thread.is_alive()
        assert entered == [d]
        assert status_of(d, result.id) == "completed"


class TestProcessOne:
    def test_process_one_executes_one_run_and_returns_true(self, d: Durably) -> None:
        """`process_one()` claims and fully executes one run, returning True."""
        handle = d.register(RECORD)
        first = handle.trigger(In(value="1"))
        second = handle.trigger(In(value="2"))

        assert d.process_one() is True

        assert status_of(d, first.id) == "completed"
        assert status_of(d, second.id) == "pending"

    def test_process_one_returns_false_when_nothing_is_claimable(self, d: Durably) -> None:
        """`process_one()` returns False when there is nothing to run."""
        d.register(RECORD)

        assert d.process_one() is False

    def test_process_until_idle_returns_the_number_of_runs(self, d: Durably) -> None:
        """`process_until_idle()` executes runs until none is left and returns the count."""
        handle = d.register(RECORD)
        ids = [handle.trigger(In(value=str(i))).id for i in range(3)]

        assert d.process_until_idle() == 3
        assert [status_of(d, i) for i in ids] == ["completed"] * 3
        assert d.process_until_idle() == 0

    def test_process_until_idle_honours_max_runs(self, d: Durably) -> None:
        """`process_until_idle(max_runs=n)` executes at most n runs."""
        handle = d.register(RECORD)
        for i in range(3):
            handle.trigger(In(value=str(i)))

        assert d.process_until_idle(max_runs=2) == 2
        assert [r.status for r in d.get_runs()] == ["pending", "completed", "completed"]
        assert d.process_until_idle() == 1


class TestClaiming:
    def test_runs_are_claimed_oldest_first(self, d: Durably) -> None:
        """With one worker, runs execute in trigger order."""
        order.clear()
        handle = d.register(RECORD)
        for i in range(5):
            handle.trigger(In(value=str(i)))
        handle.batch_trigger([In(value=str(i)) for i in range(5, 10)])

        d.process_until_idle()

        assert order == [str(i) for i in range(10)]

    def test_background_worker_claims_oldest_first(self, d: Durably) -> None:
        """A started worker with one slot executes runs in trigger order."""
        order.clear()
        handle = d.register(RECORD)
        ids = [handle.trigger(In(value=str(i))).id for i in range(5)]

        d.start()
        d.wait_for_run(ids[-1], timeout=10)

        assert order == [str(i) for i in range(5)]

    def test_first_claim_sets_lease_generation_to_one(self, d: Durably) -> None:
        """Each claim increments `lease_generation`: a run executed once has generation 1."""
        result = d.register(RECORD).trigger(In())
        assert result.lease_generation == 0

        d.process_until_idle()

        run = d.get_run(result.id)
        assert run is not None
        assert run.lease_generation == 1

    def test_worker_only_claims_runs_of_its_registered_jobs(self, durably_factory: Factory) -> None:
        """An instance leaves runs of jobs it has not registered pending for others."""
        owner = durably_factory(jobs=[RECORD])
        stranger = durably_factory(jobs=[OTHER])
        result = owner.jobs["record"].trigger(In(value="mine"))

        assert stranger.process_until_idle() == 0
        assert status_of(stranger, result.id) == "pending"
        assert owner.process_until_idle() == 1
        assert status_of(owner, result.id) == "completed"

    def test_instance_without_jobs_claims_nothing(self, durably_factory: Factory) -> None:
        """An instance with no registered jobs never claims a run."""
        owner = durably_factory(jobs=[RECORD])
        empty = durably_factory()
        result = owner.jobs["record"].trigger(In())

        assert empty.process_until_idle() == 0
        assert status_of(owner, result.id) == "pending"


class TestConcurrency:
    def test_max_concurrent_runs_bounds_parallel_runs(self, durably_factory: Factory, gates: Any) -> None:
        """A started worker runs up to `max_concurrent_runs` runs at a time, and no more."""
        gate, started = gates(), Started()
        d = durably_factory(jobs=[blocking_job("block", gate, started)], max_concurrent_runs=2)
        ids = [d.jobs["block"].trigger(Payload(value=str(i))).id for i in range(4)]
        d.start()

        wait_until(lambda: started.active == 2)
        leased = [r.id for r in d.get_runs(status="leased")]
        gate.set()
        for run_id in ids:
            d.wait_for_run(run_id, timeout=10)

        assert started.max_active == 2
        assert sorted(leased) == ids[:2]

    def test_same_concurrency_key_never_runs_in_parallel_across_jobs(
        self, durably_factory: Factory, gates: Any
    ) -> None:
        """Runs sharing a concurrency key (even of different jobs) are leased one at a time."""
        gate, started = gates(), Started()
        free_gate = gates()
        free_gate.set()
        d = durably_factory(
            jobs=[
                blocking_job("job-a", gate, started),
                blocking_job("job-b", gate, started),
                blocking_job("free", free_gate, started),
            ],
            max_concurrent_runs=3,
        )
        a = d.jobs["job-a"].trigger(Payload(value="a"), concurrency_key="shared")
        b = d.jobs["job-b"].trigger(Payload(value="b"), concurrency_key="shared")
        free = d.jobs["free"].trigger(Payload(value="free"))
        d.start()

        # The keyless run behind the blocked one still runs: no head-of-line blocking.
        d.wait_for_run(free.id, timeout=10)
        assert status_of(d, a.id) == "leased"
        assert status_of(d, b.id) == "pending"

        gate.set()
        d.wait_for_run(b.id, timeout=10)
        assert started.log.index("end:a") < started.log.index("start:b")
        assert started.max_active <= 2

    def test_blocked_key_does_not_block_runs_with_other_keys(
        self, durably_factory: Factory, gates: Any
    ) -> None:
        """A run waiting for its key never holds up later runs with other keys."""
        gate, started = gates(), Started()
        other_gate = gates()
        other_gate.set()
        d = durably_factory(
            jobs=[
                blocking_job("slow", gate, started),
                blocking_job("slow-too", gate, started),
                blocking_job("fast", other_gate, started),
            ],
            max_concurrent_runs=2,
        )
        # Two jobs, so both runs with key k1 may be pending at once.
        holder = d.jobs["slow"].trigger(Payload(value="holder"), concurrency_key="k1")
        waiter = d.jobs["slow-too"].trigger(Payload(value="waiter"), concurrency_key="k1")
        later = [
            d.jobs["fast"].trigger(Payload(value=f"k{i}"), concurrency_key=f"k{i}").id for i in range(2, 6)
        ]
        d.start()

        for run_id in later:
            d.wait_for_run(run_id, timeout=10)

        assert status_of(d, holder.id) == "leased"
        assert status_of(d, waiter.id) == "pending"
        gate.set()
        d.wait_for_run(waiter.id, timeout=10)

    def test_process_until_idle_skips_runs_whose_key_is_leased(
        self, durably_factory: Factory, gates: Any
    ) -> None:
        """`process_until_idle` elsewhere skips a run whose key is held and runs the rest."""
        gate, started = gates(), Started()
        worker = durably_factory(jobs=[blocking_job("slow", gate, started), RECORD])
        helper = durably_factory(jobs=[blocking_job("slow", gate, started), RECORD])
        holder = worker.jobs["slow"].trigger(Payload(value="h"), concurrency_key="k")
        worker.start()
        wait_until(lambda: started.count() == 1)
        blocked = worker.jobs["slow"].trigger(Payload(value="b"), concurrency_key="k")
        free = worker.jobs["record"].trigger(In(value="free"))

        assert helper.process_until_idle() == 1

        assert status_of(helper, free.id) == "completed"
        assert status_of(helper, blocked.id) == "pending"
        assert status_of(helper, holder.id) == "leased"
        gate.set()
        worker.wait_for_run(blocked.id, timeout=10)


class TestGetWorkers:
    """`Durably.get_workers()` lists the live `durably worker` processes from their heartbeat
    records (the real processes are exercised in test_worker_heartbeats.py)."""

    @staticmethod
    def _plant(root: Path, pid: int, at: str, running: list[str]) -> None:
        folder = root / "workers"
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        body = {"v": 1, "host": "elsewhere", "pid": pid, "jobs": ["add", "record"], "running": running}
        (folder / record_name("elsewhere", pid)).write_text(json.dumps({**body, "started_at": at, "at": at}))

    def test_fresh_records_are_listed_with_their_fields(self, root: Path) -> None:
        """A fresh record is a `WorkerInfo` (host, pid, jobs, runs in flight, times); a record
        not refreshed for longer than STALE_AFTER is left out."""
        self._plant(root, 7, now_iso(), ["01RUN"])
        self._plant(root, 8, iso_epoch(time.time() - STALE_AFTER - 5), [])
        (info,) = Durably(root).get_workers()
        assert isinstance(info, WorkerInfo)
        assert (info.host, info.pid) == ("elsewhere", 7)
        assert (info.jobs, info.running) == (("add", "record"), ("01RUN",))
        assert info.started_at.tzinfo is not None
        assert info.seen_at == info.started_at

    def test_a_root_without_workers_lists_none_and_writes_nothing(self, tmp_path: Path) -> None:
        """Without a `workers/` folder (or a root at all) the list is empty, and nothing is
        created: the call only reads, so it is safe on a read-only root."""
        where = tmp_path / "never-written"
        assert Durably(where).get_workers() == []
        assert not where.exists()
