"""Runs that wait survive SIGKILL of their worker at each kind of wait: during a short
sleep spent in the worker, while the run waits for a signal, and while its child runs;
and at each point of a sleep, a retry's pause, a signal wait and a child wait where a
crash could lose something (``TestKillAtEachPointOfAWait``: the worker kills itself on
entering the first file-system call of the point, ``apps/waiting_kills.py``).
Real `durably worker` processes, real signals; nothing completed runs twice, no second
child, the signal is delivered once, no run is left waiting."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from apps import waiting_kills as wk
from apps.children import poll
from apps.waiting_jobs import kid, waiter
from cli_harness import Worker
from cli_harness import env as cli_env
from helpers import run_dir_of

import durably
from durably._doctor import Doctor
from durably._layout import signal_name

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


# -- a kill at each point of each kind of wait ------------------------------------------------

SIGNALLER = ("signaller-killed-then-resent", "signaller-killed-then-a-fresh-worker")
CASES: dict[str, tuple[str, ...]] = {
    "napper": (
        "before-the-wait-is-published",
        "between-the-wait-and-the-marker-move",
        "as-the-time-comes",
        "after-the-wake-before-the-checkpoint",
    ),
    "retrier": (
        "before-the-wait-is-published",
        "between-the-wait-and-the-marker-move",
        "as-the-time-comes",
        "after-the-wake-before-the-checkpoint",
    ),
    "waiter": (
        "before-the-wait-is-published",
        "between-the-wait-and-the-marker-move",
        "after-the-wake-before-the-checkpoint",
        *SIGNALLER,
    ),
    "parent": (
        "while-the-child-is-created",
        "after-the-child-is-created",
        "before-the-wait-is-published",
        "between-the-wait-and-the-marker-move",
        "after-the-child-ended",
        "before-the-parent-is-woken",
        "after-the-wake-before-the-checkpoint",
    ),
}
SIGNAL = {"by": "test"}
STATS = {"wait_kill_points": 0}


@dataclasses.dataclass
class Case:
    """One run of ``job`` whose worker SIGKILLs itself at ``point``, in a root of its own."""

    job: str
    point: str
    base: Path
    run_id: str = ""
    worker: Worker | None = None
    signalled: bool = False
    notes: list[str] = dataclasses.field(default_factory=list)

    def __post_init__(self) -> None:
        self.base.mkdir()
        self.root = Path(os.path.realpath(self.base)) / "root"
        self.d = durably.Durably(self.root, jobs=wk.JOBS, fsync=False, clock=wk.WallClock())

    @property
    def where(self) -> str:
        return f"{self.job} killed {self.point}"

    def env(self, *, kill: bool = True) -> dict[str, str]:
        return {
            "WAITK_EVENTS": str(self.base / "events"),
            "WAITK_ONCE": str(self.base / "killed"),
            "WAITK_ROOT": str(self.root),
            "WAITK_RUN": self.run_id,
            "WAITK_KILL": self.point if kill and self.point not in SIGNALLER else "",
        }

    def start(self) -> None:
        handle = self.d.get_job(self.job)
        assert handle is not None
        self.run_id = handle.trigger({}).id
        self.worker = Worker(self.root, app="apps.waiting_kills:durably", extra_env=self.env())

    def run(self) -> durably.Run[Any]:
        got = self.d.get_run(self.run_id)
        assert got is not None, self.where
        return got

    def killed(self) -> bool:
        return (self.base / "killed").exists()

    def markers(self, of: str | None = None) -> list[str]:
        names = [*os.listdir(self.root / "queue"), *os.listdir(self.root / "wait")]
        return [n for n in names if of is None or of in n]

    def advance(self) -> bool:
        """Do what the case needs next (send the signal, kill the signaller); True once
        its run has ended."""
        run = self.run()
        if run.is_terminal:
            return True
        if self.job == "waiter" and not self.signalled and run.waiting_for == "signal go":
            if self.point in SIGNALLER:
                if any(n.startswith("~." + self.run_id) for n in os.listdir(self.root / "wait")):
                    self.kill_the_signaller()
            elif self.killed() or self.point == "after-the-wake-before-the-checkpoint":
                self.d.signal(self.run_id, "go", SIGNAL)
                self.signalled = True
        return False

    def kill_the_signaller(self) -> None:
        """`durably signal` killed by strace on entering its first rename: the signal's
        file is published, the waiter's marker not moved back (no code hook)."""
        self.signalled = True
        strace = shutil.which("strace")
        if strace is None:
            pytest.skip("needs `strace` (Debian package strace)")
        calls = "rename,renameat,renameat2"
        done = subprocess.run(
            [
                strace,
                *("-f", "-qq", "-o", os.devnull, "-e", f"trace={calls}"),
                *("-e", f"inject={calls}:signal=SIGKILL:when=1"),
                *(sys.executable, "-m", "durably", "signal", self.run_id, "go"),
                *("--data", json.dumps(SIGNAL), "--root", str(self.root)),
            ],
            env={**cli_env(), "PYTHONDONTWRITEBYTECODE": "1"},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode in (-9, 128 + 9), (
            f"{self.where}: signal exited {done.returncode}\n{done.stderr}"
        )
        run_dir = Path(run_dir_of(self.d, self.run_id))
        assert (run_dir / signal_name("go")).exists(), f"{self.where}: the signal was not published"
        assert self.markers(f"~.{self.run_id}"), f"{self.where}: the waiter was woken: {self.markers()}"
        if self.point == "signaller-killed-then-resent":
            # Sending it again: refused (it was delivered), and it wakes the waiter.
            with pytest.raises(durably.ConflictError):
                self.d.signal(self.run_id, "go", {"by": "twice"})
            assert not self.markers(f"~.{self.run_id}"), f"{self.where}: sent again, not woken"
        else:  # the running worker swept its waits at start: a fresh one sweeps them
            assert self.worker is not None
            self.worker.kill()
            self.worker = Worker(self.root, app="apps.waiting_kills:durably", extra_env=self.env(kill=False))

    def check(self) -> list[str]:
        """What is wrong once the run ended (empty: nothing)."""
        out: list[str] = []
        run = self.run()
        if self.point not in SIGNALLER and not self.killed():
            out.append("the kill point was never reached")
        if (run.status, run.output) != ("completed", wk.OUTPUTS[self.job]):
            out.append(f"run ended {run.status.value} {run.output!r} {run.error or ''}")
        lines = (self.base / "events").read_text().splitlines()
        expected = wk.EXPECTED_EVENTS[self.job]
        if lines != expected:
            out.append(f"step bodies ran {lines}, expected {expected}")
        done = Counter(s.name for s in self.d.get_steps(self.run_id) if s.status == "completed")
        if any(n != 1 for n in done.values()):
            out.append(f"completed step records: {dict(done)}")
        if self.job == "retrier":
            attempts = [(s.status, s.attempt) for s in self.d.get_steps(self.run_id) if s.name == "flaky"]
            if attempts != [("failed", 1), ("completed", 2)]:
                out.append(f"attempts of the retried step: {attempts}")
        if self.job == "parent":
            children = self.d.get_runs(parent_id=self.run_id)
            if [(c.status.value, c.output) for c in children] != [("completed", 42)]:
                out.append(f"child runs: {[(c.id, c.status.value, c.output) for c in children]}")
        visible = {r.id for r in self.d.get_runs()}
        left = [n for n in self.markers() if n.split(".")[-3] in visible]
        if left:
            out.append(f"markers left behind: {left}")
        for p in Doctor(str(self.root)).check():
            if not self.leftover(p.kind, p.path):
                out.append(f"doctor: {p.kind} {p.path}: {p.message}")
        return out

    def leftover(self, kind: str, path: str) -> bool:
        """A crash leftover of work that was never acknowledged, which readers ignore and
        idle workers or `doctor --fix` clear: a temp file of a publish that died, or the
        run.json of a child whose creation died before writing it (its key is replaced
        by the next trigger of the parent's step, which makes the child)."""
        if kind == "orphan-temp":
            return True
        run_dir = self.root / os.path.dirname(path)
        return (
            self.point == "while-the-child-is-created"
            and kind == "corrupt"
            and os.path.basename(path) == "run.json"
            and not (run_dir / "run.json").read_bytes()
            and not any(n.startswith("s.") for n in os.listdir(run_dir))
        )


def _drive(tmp_path: Path, job: str) -> None:
    cases = [Case(job, point, tmp_path / f"{job}-{i}") for i, point in enumerate(CASES[job])]
    try:
        for case in cases:
            case.start()
        open_cases = list(cases)
        deadline = time.monotonic() + 90
        while open_cases:
            open_cases = [c for c in open_cases if not c.advance()]
            if time.monotonic() > deadline:
                stuck = {
                    c.where: (c.run().status.value, c.run().waiting_for, c.markers()) for c in open_cases
                }
                raise AssertionError(f"runs not ended within 90 s: {stuck}")
            time.sleep(0.01)
    finally:
        for case in cases:
            if case.worker is not None:
                case.worker.kill()
    problems = {c.where: found for c in cases if (found := c.check())}
    STATS["wait_kill_points"] += len(cases)
    assert not problems, "\n".join(
        f"{where}: {found}\n{next(c for c in cases if c.where == where).worker.output()}"  # type: ignore[union-attr]
        for where, found in problems.items()
    )


class TestKillAtEachPointOfAWait:
    """A real `durably worker` SIGKILLs itself at one point of a wait (one root and one
    worker per point, side by side); the supervisor's fresh process finishes the run.
    Each completed step ran once, no second child, the signal arrived once, no run is
    left waiting, no marker left behind, `durably doctor` finds nothing."""

    def test_a_sleep(self, tmp_path: Path) -> None:
        _drive(tmp_path, "napper")

    def test_a_retry_wait_between_two_attempts(self, tmp_path: Path) -> None:
        _drive(tmp_path, "retrier")

    def test_a_signal_wait_and_a_signaller_killed_before_it_wakes_the_run(self, tmp_path: Path) -> None:
        _drive(tmp_path, "waiter")

    def test_a_child_wait(self, tmp_path: Path) -> None:
        _drive(tmp_path, "parent")
