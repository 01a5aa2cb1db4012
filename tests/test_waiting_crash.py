"""Runs that wait survive SIGKILL of their worker at each kind of wait: during a short
sleep spent in the worker, while the run waits for a signal, and while its child runs.
Real `durably worker` processes, real signals; nothing completed runs twice, no second
child, the signal is delivered once."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
from apps.children import poll
from apps.waiting_jobs import kid, waiter
from cli_harness import Worker

import durably

pytestmark = pytest.mark.slow


def lines(path: Path) -> list[str]:
    return path.read_text().split() if path.exists() else []


def test_sigkill_at_each_wait_loses_nothing(tmp_path: Path) -> None:
    root = tmp_path / "root"
    events, gate = tmp_path / "events", tmp_path / "gate"
    env = {"WAIT_EVENTS": str(events), "WAIT_GATE": str(gate)}
    d = durably.Durably(root, jobs=[waiter, kid], fsync=True)
    run = d.register(waiter).trigger({})

    def get() -> durably.Run[object]:
        got = d.get_run(run.id)
        assert got is not None
        return got

    # 1. killed during the short sleep (spent in the worker, its end already fixed)
    w = Worker(root, app="apps.waiting_jobs:durably", extra_env=env)
    poll(lambda: ("nap", "running") in [(s.name, s.status) for s in d.get_steps(run.id)], what="the sleep")
    w.signal(signal.SIGKILL, group=True)
    w.wait()
    assert "b" not in lines(events)

    # 2. a new worker finishes the sleep, then the run waits for its signal; killed there
    w = Worker(root, app="apps.waiting_jobs:durably", extra_env=env)
    poll(lambda: get().waiting_for == "signal go", what="waiting for the signal")
    w.signal(signal.SIGKILL, group=True)
    w.wait()
    d.signal(run.id, "go", {"by": "test"})
    with pytest.raises(durably.ConflictError):
        d.signal(run.id, "go", {"by": "twice"})

    # 3. a new worker takes the signal and invokes the child; killed while the child runs
    w = Worker(root, app="apps.waiting_jobs:durably", extra_env=env)
    poll(lambda: "kid" in lines(events), what="the child's step")
    w.signal(signal.SIGKILL, group=True)
    w.wait()
    parent = get()
    assert parent.status is durably.RunStatus.WAITING
    assert parent.waiting_for is not None
    assert parent.waiting_for.startswith("child ")

    # 4. the last worker resumes the child; its end wakes the parent, which completes
    gate.touch()
    w = Worker(root, app="apps.waiting_jobs:durably", extra_env=env)
    try:
        done = poll(lambda: get() if get().is_terminal else None, timeout=60, what="the run's end")
    finally:
        w.kill()
    assert done.status is durably.RunStatus.COMPLETED, done.error
    assert done.output == {"approval": {"by": "test"}, "doubled": 42}
    seen = lines(events)
    assert seen.count("a") == 1
    assert seen.count("b") == 1
    assert seen.count("c") == 1
    assert seen.count("kid") == 2  # the child's step was in flight at the kill: at-least-once
    children = d.get_runs(parent_id=run.id)
    assert len(children) == 1
    assert children[0].status is durably.RunStatus.COMPLETED
    steps = [(s.name, s.status) for s in d.get_steps(run.id)]
    assert ("nap", "completed") in steps
    assert ("go", "completed") in steps
    assert ("child", "completed") in steps
