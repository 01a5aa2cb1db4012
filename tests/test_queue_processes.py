"""Queueing on a concurrency key (SPEC §14) with real processes: two `durably worker
--processes 2` supervisors share one root. Runs queued on one key never overlap and start
in trigger order, other keys and unkeyed runs are not starved by a key whose run blocks,
and when the process executing a key's run is SIGKILLed the key passes on only after
that run was resumed and ended. The job appends its start and end to one O_APPEND file,
whose line order is the order of the events (no clocks are compared)."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
from apps.children import poll
from apps.queue_jobs import Item, item
from cli_harness import Worker, pid_alive

import durably
import durably._ids
import durably._trigger
from durably import BatchItem

pytestmark = pytest.mark.slow

APP = "apps.queue_jobs:durably"
KEYS, PER_KEY, UNKEYED = ("a", "b", "c"), 8, 6


def events(path: Path) -> list[list[str]]:
    """The event lines: [kind, run id, key, n, pid]."""
    return [line.split() for line in path.read_text().splitlines()] if path.exists() else []


def started(path: Path, run_id: str) -> list[int]:
    """The pids of the processes that started run ``run_id``, in order."""
    return [int(e[4]) for e in events(path) if e[0] == "start" and e[1] == run_id]


def check_queues(lines: list[list[str]], order: dict[str, list[str]], resumed: set[str]) -> None:
    """Per key: a run starts only once the one before it ended (a run in ``resumed`` may
    start again after the process executing it died), and runs start in trigger order."""
    running: dict[str, str] = {}
    first_starts: dict[str, list[str]] = {key: [] for key in order}
    for kind, run_id, key, _n, _pid in lines:
        if key == "-":
            continue
        if kind == "start":
            current = running.get(key)
            assert current is None or (current == run_id and run_id in resumed), (
                f"key {key}: {run_id} started while {current} had not ended"
            )
            running[key] = run_id
            if run_id not in first_starts[key]:
                first_starts[key].append(run_id)
        else:
            assert running.get(key) == run_id, f"key {key}: {run_id} ended while not the key's run"
            del running[key]
    for key, ids in order.items():
        assert first_starts[key] == ids, f"key {key}: runs started out of trigger order"


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[list[Worker]]:
    root, log = tmp_path / "root", tmp_path / "events"
    env = {"QUEUE_EVENTS": str(log)}
    started_workers = [Worker(root, app=APP, processes=2, extra_env=env) for _ in range(2)]
    try:
        for w in started_workers:
            w.ready(2)
        yield started_workers
    finally:
        for w in started_workers:
            w.kill()


def test_queued_runs_of_a_key_run_one_at_a_time_in_trigger_order_across_processes(
    tmp_path: Path, workers: list[Worker], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Three keys with 8 queued runs each, a key whose first run blocks on a gate, a key
    whose first run's process is SIGKILLed, a key whose first run is delayed, a key whose
    runs' ids sort against their trigger order (as when two triggers race, or hosts'
    clocks differ), and unkeyed runs: two supervisors of two processes drain them all;
    per key no two runs overlap and they start in trigger order; the other keys and the
    unkeyed runs finish while the gated key's first run still blocks; the killed run is
    resumed and ends before the next run of its key starts."""
    root, log = tmp_path / "root", tmp_path / "events"
    gate, crash_gate = tmp_path / "gate", tmp_path / "crash-gate"
    d = durably.Durably(root, jobs=[item], fsync=False)
    handle = d.register(item)
    order: dict[str, list[str]] = {key: [] for key in (*KEYS, "gated", "crash", "late", "rev")}

    def queue(key: str, n: int, gate_file: Path | None = None, delay: float | None = None) -> str:
        run = handle.trigger(
            Item(key=key, n=n, gate=str(gate_file or "")), concurrency_key=key, coalesce="queue", delay=delay
        )
        order[key].append(run.id)
        return run.id

    gated_head = queue("gated", 0, gate)
    crash_head = queue("crash", 0, crash_gate)
    queue("late", 0, delay=1.0)
    for n in range(1, 4):
        queue("gated", n)
        queue("crash", n)
        queue("late", n)
    with monkeypatch.context() as patch:  # ids handed out newest first
        ids = sorted((durably._ids.new_id() for _ in range(4)), reverse=True)
        patch.setattr(durably._trigger, "new_id", lambda: ids.pop(0))
        for n in range(4):
            queue("rev", n)
    assert order["rev"] == sorted(order["rev"], reverse=True)
    # the keys' runs are triggered in rounds while the workers already claim them, and
    # a batch of one key's runs between them (a fan-out)
    for n in range(PER_KEY // 2):
        for key in KEYS:
            queue(key, n)
    unkeyed = [r.id for r in handle.batch_trigger([Item(n=i) for i in range(UNKEYED)])]
    for key in KEYS:
        batch = handle.batch_trigger(
            [
                BatchItem(Item(key=key, n=n), concurrency_key=key, coalesce="queue")
                for n in range(PER_KEY // 2, PER_KEY)
            ]
        )
        order[key].extend(r.id for r in batch)

    def status(run_id: str) -> str:
        run = d.get_run(run_id)
        assert run is not None
        return run.status

    others = [i for key in (*KEYS, "late", "rev") for i in order[key]] + unkeyed
    poll(lambda: all(status(i) == "completed" for i in others), timeout=90, what="the other keys' runs")
    # not starved: everything else finished while the gated key's first run blocks
    assert status(gated_head) == "leased"
    assert all(status(i) == "pending" for i in order["gated"][1:])

    # SIGKILL the process executing the crash key's first run: another process resumes
    # it at once (same host), and the next run of the key has not started meanwhile
    victim = poll(lambda: started(log, crash_head), what="the crash key's first run")[0]
    os.kill(victim, signal.SIGKILL)
    poll(lambda: len(started(log, crash_head)) == 2, what="the killed run resumed")
    assert not pid_alive(victim)
    assert started(log, crash_head)[1] != victim
    assert all(not started(log, i) for i in order["crash"][1:])
    crash_gate.touch()
    gate.touch()
    every = [i for ids in order.values() for i in ids] + unkeyed
    poll(lambda: all(status(i) == "completed" for i in every), timeout=90, what="every run")

    lines = events(log)
    check_queues(lines, order, resumed={crash_head})
    ends = [e[1] for e in lines if e[0] == "end"]
    assert sorted(ends) == sorted(every)  # each run ended once (the killed one never ended)
    assert len({e[4] for e in lines}) >= 3  # the work was spread over the processes
