"""Crash consistency with real processes: SIGKILL at seeded points and at every
file-system call of each operation, then recovery by a fresh process.

Children are forked from a pre-imported fork server (tests/apps/zygote.py) so that
a fresh process costs milliseconds; every run uses ``Durably(root, fsync=True)``.
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import pytest
from apps import crash_jobs
from apps.children import Zygote

import durably

pytestmark = pytest.mark.slow

SEED = 20261128
STEPS = 20
STATS = {"seeded_kills": 0, "kill_points": 0, "batch_kill_points": 0}


def _kill_points(seed: int, count: int) -> list[dict[str, object]]:
    """``count`` kill points in execution order: inside a step's body, just before it
    (the previous step's checkpoint is acknowledged), or at the j-th file-system call
    after the body returned (inside the checkpoint's commit, or whatever follows it)."""
    rng = random.Random(seed)
    points = []
    for _ in range(count):
        k = rng.randrange(STEPS)
        phase = rng.choice(crash_jobs.PHASES)
        points.append({"k": k, "phase": phase, "j": rng.randint(1, 6) if phase == "commit" else 0})
    points.sort(key=lambda p: (p["k"], crash_jobs.PHASES.index(str(p["phase"])), p["j"]))
    return points


def _executions(workdir: Path) -> list[tuple[str, int]]:
    path = workdir / "exec.log"
    if not path.exists():
        return []
    return [(who, int(k)) for who, k in (line.split() for line in path.read_text().splitlines())]


def _completed(d: durably.Durably, run_id: str) -> set[int]:
    return {int(s.name[5:]) for s in d.get_steps(run_id) if s.status == "completed"}


class TestSeededKills:
    def test_job_survives_twenty_sigkills_without_rerunning_completed_steps(
        self, tmp_path: Path, zygote: Zygote
    ) -> None:
        """A 20-step job SIGKILLed at 20 seeded points, each time resumed by a new process,
        ends with the right output; a step acknowledged before a kill never runs again and
        only the step in flight at a kill runs again."""
        root, workdir = tmp_path / "root", tmp_path / "work"
        workdir.mkdir()
        reader = crash_jobs.make(str(root), preserve_steps=True)
        run_id = reader.get_job("steps").trigger(crash_jobs.Tag(steps=STEPS)).id  # type: ignore[union-attr]
        points = _kill_points(SEED, 20)
        done_before: set[int] = set()
        seen = 0
        killed = 0
        for child, point in enumerate([*points, None]):
            who = f"c{child}"
            code = zygote.run(
                "apps.crash_jobs:crash_worker", root=str(root), workdir=str(workdir), who=who, kill=point
            )
            ran = [k for w, k in _executions(workdir)[seen:] if w == who]
            seen = len(_executions(workdir))
            where = f"seed {SEED}, child {child}, kill point {point}"
            assert not set(ran) & done_before, f"{where}: acknowledged steps ran again: {ran}"
            assert len(ran) == len(set(ran)), f"{where}: a step ran twice in one process: {ran}"
            if ran:
                assert ran == list(range(ran[0], ran[0] + len(ran))), f"{where}: order {ran}"
                assert ran[0] == (max(done_before) + 1 if done_before else 0), where
            run = reader.get_run(run_id)
            assert run is not None, where
            done = _completed(reader, run_id)
            assert done_before <= done, f"{where}: acknowledged checkpoints vanished"
            if code == 0:
                assert run.status == "completed", f"{where}: {run.status}"
                break
            assert code == -9, f"{where}: exit {code}\n{zygote.stderr()}"
            killed += 1
            STATS["seeded_kills"] += 1
            # every step whose body finished before the one in flight is acknowledged
            assert set(ran[:-1]) <= done, f"{where}: ran {ran} but only {sorted(done)} committed"
            done_before = done
        assert killed >= 15, f"only {killed} of 20 kill points were hit"
        run = reader.get_run(run_id)
        assert run is not None
        assert run.status == "completed"
        assert run.output == crash_jobs.expected_output(STEPS)
        steps = reader.get_steps(run_id)
        completed = {s.name: s.output for s in steps if s.status == "completed"}
        assert completed == {f"step-{k:02d}": crash_jobs.value_of(k) for k in range(STEPS)}
        counts = {k: 0 for k in range(STEPS)}
        for _, k in _executions(workdir):
            counts[k] += 1
        assert all(n >= 1 for n in counts.values()), counts
        assert sum(counts.values()) - STEPS <= killed, counts


SCENARIOS = {
    # scenario: (setup ops, the operation killed at each of its file-system calls)
    "trigger": (["init"], "trigger"),
    "claim-steps-complete": (["trigger"], "run"),
    "recovery": (["trigger", "kill-in-step"], "run"),
    "cancel-pending": (["trigger"], "cancel"),
    "cancel-orphaned": (["trigger", "kill-in-step"], "cancel"),
    "delete": (["trigger", "run"], "delete"),
    "resume": (["trigger", "kill-in-step", "cancel"], "resume"),
    # a run that waits (apps.crash_jobs.WAITS): a sleep, a retry's pause, a signal, a child
    "wait-published": (["init", "waits-trigger"], "waits@0"),
    "woken-then-retry-waits": (["init", "waits-trigger", "waits@0"], "waits@2"),
    "signal-delivered": (["init", "waits-trigger", "waits@0", "waits@2", "waits@4"], "waits-signal"),
    "woken-then-child-invoked": (
        ["init", "waits-trigger", "waits@0", "waits@2", "waits@4", "waits-signal"],
        "waits@5",
    ),
    "child-ends-and-wakes-parent": (
        ["init", "waits-trigger", "waits@0", "waits@2", "waits@4", "waits-signal", "waits@5"],
        "waits@6",
    ),
}


def _op(zygote: Zygote, case: Path, op: str, kill_at: int) -> tuple[int, dict[str, object]]:
    result = case / f"result-{op}-{kill_at}.json"
    code = zygote.run(
        "apps.crash_jobs:sweep_op",
        root=str(case / "root"),
        workdir=str(case / "work"),
        op=op,
        kill_at=kill_at,
        result=str(result),
    )
    return code, json.loads(result.read_text()) if result.exists() else {}


def _sweep(zygote: Zygote, tmp_path: Path, scenario: str) -> tuple[int, list[str]]:
    setup, op = SCENARIOS[scenario]
    template = tmp_path / f"{scenario}-template"
    (template / "work").mkdir(parents=True)
    for step in setup:
        code, _ = _op(zygote, template, step, 0)
        assert code == (-9 if step == "kill-in-step" else 0), f"setup {step}: {code}\n{zygote.stderr()}"
    probe = tmp_path / f"{scenario}-probe"
    shutil.copytree(template, probe, symlinks=True)
    code, counted = _op(zygote, probe, op, 0)
    assert code == 0, zygote.stderr()
    total = int(counted["count"])  # type: ignore[call-overload]
    trace = list(counted["trace"])  # type: ignore[call-overload]
    assert total > 0
    STATS["kill_points"] += total
    outcomes: list[str] = []
    batch = 6  # cases run side by side: the children mostly wait on fsync
    for first in range(1, total + 1, batch):
        ns = list(range(first, min(first + batch, total + 1)))
        cases = {n: tmp_path / f"{scenario}-{n}" for n in ns}
        for case in cases.values():
            shutil.copytree(template, case, symlinks=True)
        pids = {
            n: zygote.spawn(
                "apps.crash_jobs:sweep_op",
                root=str(case / "root"),
                workdir=str(case / "work"),
                op=op,
                kill_at=n,
                result=str(case / "op.json"),
            )
            for n, case in cases.items()
        }
        for n, pid in pids.items():
            code = zygote.wait(pid)
            where = f"{scenario}: killed at call {n}/{total} ({trace[n - 1]}) of {op!r}"
            assert code in (-9, 0), f"{where}: exit {code}\n{zygote.stderr()}"
        check = (
            "apps.crash_jobs:sweep_check_waits" if op.startswith("waits") else "apps.crash_jobs:sweep_check"
        )
        pids = {
            n: zygote.spawn(
                check,
                root=str(case / "root"),
                workdir=str(case / "work"),
                result=str(case / "check.json"),
            )
            for n, case in cases.items()
        }
        for n, pid in pids.items():
            where = f"{scenario}: killed at call {n}/{total} ({trace[n - 1]}) of {op!r}"
            assert zygote.wait(pid) == 0, f"{where}: recovery check failed:\n{zygote.stderr()}"
            outcomes.append(json.loads((cases[n] / "check.json").read_text())["status"])
            shutil.rmtree(cases[n])
    return total, outcomes


class TestKillAtEveryFileSystemCall:
    @pytest.mark.parametrize("scenario", sorted(SCENARIOS))
    def test_root_stays_consistent_when_killed_at_any_call(
        self, tmp_path: Path, zygote: Zygote, scenario: str
    ) -> None:
        """Killed at each link/rename/write/fsync/mkdir/unlink of the operation, the root
        reads correctly in a fresh process (the run is absent or whole, get_runs works),
        a worker finishes the run without re-running acknowledged steps, and exactly one
        run holds the idempotency key. For the run that waits (killed while it publishes
        a wait and moves its marker to wait/, is woken and claimed again, is sent its
        signal, triggers its child, and while the child's end wakes it): a worker a day
        later ends it, every completed step completed once and not run again, one child,
        nothing left waiting."""
        total, outcomes = _sweep(zygote, tmp_path, scenario)
        assert len(outcomes) == total
        if scenario.startswith("cancel"):
            assert outcomes[-1] == "cancelled"
        elif scenario == "resume":  # no new run, or a whole one that completes
            assert set(outcomes) == {"cancelled", "resumed"}
            assert outcomes[-1] == "resumed"
        else:
            assert set(outcomes) == {"completed"}


class TestBatchTriggerCrash:
    def test_batch_killed_at_any_call_leaves_all_or_none_of_its_runs(
        self, tmp_path: Path, zygote: Zygote
    ) -> None:
        """batch_trigger of 3 runs killed at each of its file-system calls leaves either no
        run or all three (docs/api.md: the batch is all-or-nothing)."""
        template = tmp_path / "template"
        (template / "work").mkdir(parents=True)
        assert _op(zygote, template, "init", 0)[0] == 0
        probe = tmp_path / "probe"
        shutil.copytree(template, probe)
        code, counted = _op(zygote, probe, "batch", 0)
        assert code == 0, zygote.stderr()
        total = int(counted["count"])  # type: ignore[call-overload]
        STATS["batch_kill_points"] += total
        partial = []
        for n in range(1, total + 1):
            case = tmp_path / f"case-{n}"
            shutil.copytree(template, case)
            assert _op(zygote, case, "batch", n)[0] in (-9, 0)
            count = len(crash_jobs.make(str(case / "root")).get_runs())
            if count not in (0, 3):
                partial.append((n, count))
            shutil.rmtree(case)
        assert partial == [], f"{len(partial)} of {total} kill points left a partial batch"
