"""Schedules fired by real ``durably worker`` processes sharing a clock (a file,
``apps/schedule_jobs.py``): racing supervisors fire each tick exactly once, and a worker
SIGKILLed at each point of firing a tick leaves it to the next worker, which gives the
tick exactly one run."""

from __future__ import annotations

import os
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from apps import schedule_jobs as sj
from cli_harness import Worker, durably_cli, wait_until

import durably
from durably._records import iso
from durably._scheduling import tick_key

pytestmark = pytest.mark.slow

START = datetime(2026, 1, 1, 0, 0, 30, tzinfo=UTC)
"""Half a minute past a tick: the schedule's first tick is START's next minute."""
APP = "apps.schedule_jobs:durably"


class Root:
    """A root, its shared clock file and events file, and a test-side instance."""

    def __init__(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, root: Path | None = None) -> None:
        self.base = Path(os.path.realpath(tmp_path))
        self.root = root or self.base / "root"
        self.clock = self.base / "clock"
        self.events = self.base / "events"
        self.once = self.base / "killed"
        sj.set_time(self.clock, START)
        monkeypatch.setenv("SCHED_CLOCK", str(self.clock))
        monkeypatch.setenv("SCHED_EVENTS", str(self.events))
        self.d = durably.Durably(self.root, jobs=[sj.tick], fsync=False, clock=sj.FileClock())
        self.d.schedule(sj.SCHEDULE, sj.tick, "* * * * *", input={}, catch_up="all")

    def env(self, point: str = "", tick: datetime | None = None, *, fsync: bool = False) -> dict[str, str]:
        return {
            "SCHED_CLOCK": str(self.clock),
            "SCHED_EVENTS": str(self.events),
            "SCHED_ONCE": str(self.once),
            "SCHED_ROOT": str(self.root),
            "SCHED_KILL": point,
            "SCHED_TICK": iso(tick) if tick is not None else "",
            "SCHED_FSYNC": "1" if fsync else "0",
        }

    def worker(
        self, processes: int = 1, point: str = "", tick: datetime | None = None, *, fsync: bool = False
    ) -> Worker:
        env = self.env(point, tick, fsync=fsync)
        return Worker(self.root, app=APP, processes=processes, extra_env=env)

    def set_minutes(self, minutes: int) -> None:
        sj.set_time(self.clock, START + timedelta(minutes=minutes))

    def runs(self) -> list[durably.Run[object]]:
        return self.d.get_runs(limit=10_000)

    def completed(self, n: int) -> list[durably.Run[object]] | None:
        runs = self.runs()
        done = [r for r in runs if r.status is durably.RunStatus.COMPLETED]
        return runs if len(done) >= n else None

    def event_lines(self) -> list[list[str]]:
        if not self.events.exists():
            return []
        return [line.split() for line in self.events.read_text().splitlines()]


def expected_keys(n: int) -> list[str]:
    first = START.replace(second=0) + timedelta(minutes=1)
    return [tick_key(sj.SCHEDULE, first + timedelta(minutes=i)) for i in range(n)]


def check_exactly_once(r: Root, n: int, *, leftover: bool = False, posed: str = "") -> None:
    runs = r.runs()
    assert len(runs) == n, f"{len(runs)} runs for {n} ticks"
    assert all(run.status is durably.RunStatus.COMPLETED for run in runs), [run.status for run in runs]
    keys = sorted(run.idempotency_key or "" for run in runs)
    assert keys == expected_keys(n)
    by_id = {run.id: run.idempotency_key for run in runs}
    lines = r.event_lines()
    assert len(lines) == n, f"{len(lines)} step executions for {n} runs"
    assert Counter(line[0] for line in lines) == Counter(by_id.keys())
    assert all(by_id[line[0]] == line[1] for line in lines)
    doctor = durably_cli("doctor", r.root)
    if leftover:
        # the killed trigger's run.json, created and never written: the one problem
        # doctor reports (and repairs); it is no run (get_runs above does not list it)
        problems = [line for line in doctor.stdout.splitlines() if line.startswith("problem")]
        assert len(problems) == 1, doctor.stdout
        assert "run.json: empty (0 bytes)" in problems[0], doctor.stdout
        fixed = durably_cli("doctor", "--fix", r.root)
        assert fixed.returncode == 0, fixed.stdout + fixed.stderr
        doctor = durably_cli("doctor", r.root)
    if posed:  # the lock files of the posing host (``lock@hostB``) are the simulation's
        problems = [line for line in doctor.stdout.splitlines() if line.startswith("problem")]
        others = [line for line in problems if f"lock@{posed}:" not in line]
        assert not others, "\n".join(others)
        return
    assert doctor.returncode == 0, doctor.stdout + doctor.stderr


TICKS = 200


def test_racing_supervisors_fire_each_tick_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    r = Root(tmp_path, monkeypatch)
    workers = [r.worker(processes=2), r.worker(processes=2)]
    try:
        for w in workers:
            w.ready(2)
        for minute in range(1, TICKS + 1):  # no waiting between the advances
            r.set_minutes(minute)
        wait_until(lambda: r.completed(TICKS), timeout=300, interval=0.2)
    finally:
        for w in workers:
            w.kill()
    check_exactly_once(r, TICKS)
    pids = {line[2] for line in r.event_lines()}
    assert len(pids) > 1, "one process executed every run: the workers did not share the work"


def test_racing_hosts_fire_each_tick_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The same race, one supervisor per "host": each through its own bindfs view of the
    root, the second posing as another host (its locks are its own). Host B runs one
    process: ``pose_as_other_host`` maps the lock functions but not every way a worker
    proves it is alive, so two posing processes take each other's live leases (their
    runs' steps ran twice), which says nothing of schedules."""
    from reliability.relhelpers import bindfs_view  # noqa: PLC0415 - skips without bindfs

    shared = Path(os.path.realpath(tmp_path)) / "shared"
    shared.mkdir()
    r = Root(tmp_path, monkeypatch, shared / "root")
    with bindfs_view(shared, tmp_path / "A") as a, bindfs_view(shared, tmp_path / "B") as b:
        workers = [
            Worker(a / "root", app=APP, processes=2, extra_env=r.env()),
            Worker(b / "root", app=APP, processes=1, extra_env={**r.env(), "SCHED_HOST": "hostB"}),
        ]
        try:
            workers[0].ready(2)
            workers[1].ready(1)
            for minute in range(1, TICKS + 1):
                r.set_minutes(minute)
            wait_until(lambda: r.completed(TICKS), timeout=300, interval=0.2)
        finally:
            for w in workers:
                w.kill()
    check_exactly_once(r, TICKS, posed="hostB")


@pytest.mark.parametrize("point", list(sj.POINTS))
def test_sigkill_while_firing_a_tick(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, point: str) -> None:
    r = Root(tmp_path, monkeypatch)
    second = START.replace(second=0) + timedelta(minutes=2)
    w = r.worker(point=point, tick=second, fsync=True)
    try:
        w.ready()
        r.set_minutes(1)  # the first tick fires without a kill
        wait_until(lambda: r.completed(1))
        r.set_minutes(2)  # the second one kills the worker process firing it
        wait_until(r.once.exists)
    finally:
        w.kill()
    # a fresh worker (the kill point is spent: $SCHED_ONCE exists)
    w = r.worker()
    try:
        w.ready()
        wait_until(lambda: r.completed(2))
    finally:
        w.kill()
    check_exactly_once(r, 2, leftover=point == "before-the-run-record-is-written")
