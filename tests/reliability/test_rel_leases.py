"""Leases under slow and failing syncs (plan cases F6 and F8 of docs/reliability.md).

- a slow ``fdatasync`` (``strace -e inject=...:delay_enter=``) longer than the lease: the
  heartbeat thread keeps the lease, readers keep reading, nothing is taken over;
- a failing heartbeat (``utimensat`` fails with EIO): reported with the journal's path,
  and the lease is lost safely (another host takes over, fencing refuses the old owner).

The owner runs ``apps.logged_steps:worker`` under ``strace``; the other worker, posing as
another host, is forked by the fork server. A stale owner paused past its lease, and its
control (a paused owner nobody re-claims), are in ``tests/test_races.py``; stalled owners
and the keys they hold in ``test_rel_stalled_owners.py``.
"""

from __future__ import annotations

import errno
import os
from collections import Counter
from pathlib import Path

from apps import logged_steps
from apps.children import Zygote, poll
from helpers import run_dir_of

from .relhelpers import finish_traced, traced

STATS: dict[str, int] = {"strace_cases": 0}


def test_slow_fsync_keeps_the_lease_and_readers_going(tmp_path: Path, zygote: Zygote) -> None:
    """F8: every ``fdatasync`` of the worker (each step's commit) takes 2.4 s, longer
    than its lease (2 s; the margin keeps a loaded machine's scheduling out of it). The
    heartbeat runs in its own thread, so the lease stays alive: a worker of another host
    trying all along never takes the run over (no step runs twice). Readers keep reading
    while the commits are stuck (they take no lock), and the run completes in generation
    1 with no error reported."""
    STATS["strace_cases"] += 1
    root, work = tmp_path / "root", tmp_path / "work"
    work.mkdir()
    d = logged_steps.make(str(root), fsync=True)
    handle = d.get_job("logged-steps")
    assert handle is not None
    run_id = handle.trigger(logged_steps.StepsIn(steps=2)).id
    stop_w, stop_r = str(work / "stop-W"), str(work / "stop-R")
    w = traced(
        "fdatasync",
        "fdatasync:delay_enter=2400ms",
        "apps.logged_steps:worker",
        root=str(root),
        workdir=str(work),
        who="W",
        stop=stop_w,
        lease=2.0,
        renew=0.1,
    )
    r = None
    reads_while_leased = 0
    try:
        poll(lambda: logged_steps.executions(work), timeout=60, what="W executing step 0")
        r = zygote.spawn(
            "apps.logged_steps:worker",
            root=str(root),
            workdir=str(work),
            who="R",
            stop=stop_r,
            lease=2.0,
            renew=0.1,
            host="other-host",
        )
        while True:
            run = d.get_run(run_id)
            d.get_steps(run_id)
            d.get_runs()
            assert run is not None
            if run.status == "leased":
                reads_while_leased += 1
            if run.status == "completed":
                break
            assert w.poll() is None, finish_traced(w)
    finally:
        Path(stop_w).touch()
        Path(stop_r).touch()
        err = finish_traced(w)
    assert w.returncode == 0, err
    assert r is not None
    assert zygote.wait(r) == 0, zygote.stderr()
    assert reads_while_leased > 0
    run = d.get_run(run_id)
    assert run is not None
    assert (run.status, run.lease_generation, run.output) == ("completed", 1, logged_steps.expected(2))
    assert (work / "claimed-R").read_text() == "0"
    assert Counter((who, k) for who, rid, k in logged_steps.executions(work) if rid == run_id) == Counter(
        {("W", 0): 1, ("W", 1): 1}
    )
    assert not (work / "errors-W.log").exists(), (work / "errors-W.log").read_text()


def test_failing_heartbeat_is_reported_and_the_lease_is_lost_safely(tmp_path: Path, zygote: Zygote) -> None:
    """F6: the owner's heartbeat (touching its journal) fails with EIO every time. It
    reports the failure naming the journal and keeps executing; a worker of another host
    takes the run over once the lease (0.6 s) has run out; the old owner's step in
    flight is then refused (LeaseLostError), and every step has one completed record."""
    STATS["strace_cases"] += 1
    root, work = tmp_path / "root", tmp_path / "work"
    work.mkdir()
    d = logged_steps.make(str(root), fsync=False)
    handle = d.get_job("logged-steps")
    assert handle is not None
    run_id = handle.trigger(logged_steps.StepsIn(steps=3, hold=True)).id
    stop_w, stop_r = str(work / "stop-W"), str(work / "stop-R")
    w = traced(
        "utimensat",
        "utimensat:error=EIO",
        "apps.logged_steps:worker",
        root=str(root),
        workdir=str(work),
        who="W",
        stop=stop_w,
        lease=0.6,
        renew=0.1,
        gate_who="W",
    )
    r = None
    try:
        poll(
            lambda: any(who == "W" and k == 1 for who, _, k in logged_steps.executions(work)),
            what="W inside step 1",
        )
        r = zygote.spawn(
            "apps.logged_steps:worker",
            root=str(root),
            workdir=str(work),
            who="R",
            stop=stop_r,
            lease=0.6,
            renew=0.1,
            host="other-host",
        )
        run = poll(
            lambda: (x := d.get_run(run_id)) is not None and x.status == "completed" and x,
            timeout=60,
            what="R completed the run",
        )
        (work / "gate").touch()  # W's step 1 returns now: its commit must be refused
    finally:
        Path(stop_w).touch()
        Path(stop_r).touch()
        err = finish_traced(w)
    assert w.returncode == 0, err
    assert r is not None
    assert zygote.wait(r) == 0, zygote.stderr()
    assert (run.lease_generation, run.output) == (2, logged_steps.expected(3))
    steps = [(s.name, s.generation) for s in d.get_steps(run_id) if s.status == "completed"]
    assert steps == [("s0", 1), ("s1", 2), ("s2", 2)], steps
    errors = (work / "errors-W.log").read_text()
    assert os.strerror(errno.EIO) in errors, errors
    journal = os.path.join(run_dir_of(d, run_id), "j.1")
    assert journal in errors, errors
    assert "Lease lost" in errors or "lost ownership" in errors, errors
