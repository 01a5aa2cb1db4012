"""Stalled owners and the runs and keys they hold (issue 12.1, issue 14.4 and 14.5).

One rule: an expired lease is taken over, and a taken-over owner is fenced, on one host
or several. A worker stopped with SIGSTOP (a debugger, a C extension holding the GIL)
is alive but makes no progress; once its lease expired, another worker takes its run
(or its concurrency key) over, and when the stalled worker wakes, nothing it does
becomes part of the run and none of its steps runs beside the key's next run.

Worker processes are forked by the fork server and run ``apps.stalls.worker``; their step
events are appended to one log, whose line order is the order of the events.
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
from apps import stalls as stallapp
from apps.children import Zygote, poll

from .relhelpers import bindfs_view

LEASE, RENEW = 1.5, 0.3


def _stopped(pid: int) -> bool:
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0] == "T"


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def _resume(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGCONT)


@pytest.mark.parametrize("phase", ["in", "between", "end"])
def test_a_stalled_owner_past_its_lease_is_taken_over_on_its_host_and_fenced(
    tmp_path: Path, zygote: Zygote, phase: str
) -> None:
    """Worker A (lease 1.5 s, renewed every 0.3 s) stops itself with SIGSTOP inside step 1,
    between steps 1 and 2, or at the publish of the run's end. Its process lives, but its
    lease is not renewed: worker B on the same host claims the run once the lease expired
    and completes it. After SIGCONT, A is fenced: its ``step.signal`` is set, its next
    ``step.run`` raises ``LeaseLostError``, no step of A after B's claim is part of the run,
    A starts no further step, and A does not end the run (the output is B's)."""
    root, work = tmp_path / "root", tmp_path / "work"
    work.mkdir()
    d = stallapp.make(str(root))
    handle = d.get_job("stall")
    assert handle is not None
    run_id = handle.trigger(
        stallapp.StallIn(steps=4, stop_at=1 if phase != "end" else 3, stop=phase, watch_signal=True)
    ).id
    a = zygote.spawn(
        "apps.stalls:worker", root=str(root), workdir=str(work), who="A", lease=LEASE, renew=RENEW, once=True
    )
    try:
        poll(lambda: _stopped(a), timeout=60, what="A stops itself")
        b = zygote.spawn(
            "apps.stalls:worker", root=str(root), workdir=str(work), who="B", lease=LEASE, renew=RENEW
        )
        poll(
            lambda: (r := d.get_run(run_id)) is not None and r.status == "completed",
            timeout=30,
            what="B takes the stalled run over and completes it",
        )
        a_before = [e for e in stallapp.events(work) if e[0] == "A"]
        _resume(a)
        assert zygote.wait(a, 60) == 0, zygote.stderr()
        (work / "stop").touch()
        assert zygote.wait(b, 60) == 0, zygote.stderr()
    finally:
        _resume(a)
        (work / "stop").touch()
    a_after = [e for e in stallapp.events(work) if e[0] == "A"][len(a_before) :]
    assert [e for e in a_after if e[3] == "start"] == [], "A started a step after it was fenced"
    run = d.get_run(run_id)
    assert run is not None
    assert run.status == "completed"
    assert run.lease_generation >= 2
    a_done = {"in": 1, "between": 2, "end": 4}[phase]  # A's steps committed before it stalled
    values = [f"A-{k}" if k < a_done else f"B-{k}" for k in range(4)]
    assert run.output == {"values": values, "by": "B"}
    steps = [s for s in d.get_steps(run_id) if s.status == "completed"]
    assert [(s.name, s.output["v"]) for s in steps] == [(f"s{k}", values[k]) for k in range(4)]
    raised = _lines(work / "raised.log")
    if phase == "in":  # the fenced step's value is not checkpointed; it or the next raises
        assert _lines(work / "signal.log") == ["A True"]
        assert raised in (["A s1 LeaseLostError"], ["A s2 LeaseLostError"]), raised
    elif phase == "between":
        assert _lines(work / "signal.log") == ["A True"]
        assert raised == ["A s2 LeaseLostError"], raised


@pytest.fixture
def two_views(tmp_path: Path) -> Iterator[tuple[Path, Path, Path]]:
    """(real root, root through view A, root through view B): two "hosts" of one root."""
    shared = tmp_path / "shared"
    shared.mkdir()
    with bindfs_view(shared, tmp_path / "A") as a, bindfs_view(shared, tmp_path / "B") as b:
        yield shared / "root", a / "root", b / "root"


def test_a_key_freed_from_a_stalled_owner_fences_it_before_the_next_run_executes(
    tmp_path: Path, zygote: Zygote, two_views: tuple[Path, Path, Path]
) -> None:
    """Host A executes keyed run A (20 steps) and stops inside step 2 (SIGSTOP) past its
    lease (2 s); run B of the same key (another job, registered only on host B) is leased
    on host B once A's lease expired. After SIGCONT, no step of run A starts while run B
    executes (from its first step's start to its last step's end): freeing the key's
    execution slot fenced run A first."""
    real, view_a, view_b = two_views
    work = tmp_path / "work"
    work.mkdir()
    d = stallapp.make(str(real))
    run_a = (
        d.get_job("stall")
        .trigger(  # type: ignore[union-attr]
            stallapp.StallIn(steps=20, stop_at=2, stop="in"), concurrency_key="k"
        )
        .id
    )
    a = zygote.spawn(
        "apps.stalls:worker",
        root=str(view_a),
        workdir=str(work),
        who="A",
        lease=2.0,
        renew=0.4,
        once=True,
        jobs=["stall"],
    )
    try:
        poll(lambda: _stopped(a), timeout=60, what="A stops itself inside step 2")
        run_b = (
            d.get_job("stall-b")
            .trigger(  # type: ignore[union-attr]
                stallapp.StallIn(steps=40, delay=0.1), concurrency_key="k"
            )
            .id
        )
        b = zygote.spawn(
            "apps.stalls:worker",
            root=str(view_b),
            workdir=str(work),
            who="B",
            lease=2.0,
            renew=0.4,
            host="hostB",
            jobs=["stall-b"],
        )
        poll(
            lambda: any(e[:2] == ("B", run_b) for e in stallapp.events(work)),
            timeout=60,
            what="host B starts run B once A's lease expired",
        )
        _resume(a)
        assert zygote.wait(a, 90) == 0, zygote.stderr()
        poll(
            lambda: (r := d.get_run(run_b)) is not None and r.status == "completed",
            timeout=90,
            what="run B completes",
        )
        (work / "stop").touch()
        assert zygote.wait(b, 60) == 0, zygote.stderr()
    finally:
        _resume(a)
        (work / "stop").touch()
    log = stallapp.events(work)
    b_events = [i for i, e in enumerate(log) if e[1] == run_b]
    overlap = [
        (k, what) for who, rid, k, what in log[b_events[0] : b_events[-1]] if rid == run_a and what == "start"
    ]
    assert overlap == [], f"steps of run A started while run B of its key executed: {overlap}"


def test_a_cancelled_keyed_run_holds_its_key_until_its_step_stopped(
    tmp_path: Path, zygote: Zygote, two_views: tuple[Path, Path, Path]
) -> None:
    """Host A executes keyed run A, whose step 1 ignores ``step.signal`` and runs on for
    4 s after the cancel (lease 30 s, renewed: the owner is alive). Host B waits with run B
    of the same key (another job, registered only there). Cancel run A: run B's first step
    must not start before A's cancelled step finished (the key is released when the
    cancelled execution stopped, or its lease expired)."""
    real, view_a, view_b = two_views
    work = tmp_path / "work"
    work.mkdir()
    d = stallapp.make(str(real))
    run_a = (
        d.get_job("stall")
        .trigger(  # type: ignore[union-attr]
            stallapp.StallIn(steps=3, ignore_at=1, hold=4.0), concurrency_key="k"
        )
        .id
    )
    a = zygote.spawn(
        "apps.stalls:worker",
        root=str(view_a),
        workdir=str(work),
        who="A",
        lease=30.0,
        renew=1.0,
        once=True,
        jobs=["stall"],
    )
    try:
        poll(lambda: ("A", run_a, 1, "start") in stallapp.events(work), timeout=60, what="A inside step 1")
        run_b = (
            d.get_job("stall-b")
            .trigger(  # type: ignore[union-attr]
                stallapp.StallIn(steps=2), concurrency_key="k"
            )
            .id
        )
        b = zygote.spawn(
            "apps.stalls:worker",
            root=str(view_b),
            workdir=str(work),
            who="B",
            lease=30.0,
            renew=1.0,
            host="hostB",
            jobs=["stall-b"],
        )
        poll((work / "ready-B").exists, timeout=60, what="host B's worker is up")
        d.cancel(run_a)
        (work / "cancelled").touch()
        assert zygote.wait(a, 90) == 0, zygote.stderr()
        poll(
            lambda: (r := d.get_run(run_b)) is not None and r.status == "completed",
            timeout=90,
            what="run B completes",
        )
        (work / "stop").touch()
        assert zygote.wait(b, 60) == 0, zygote.stderr()
    finally:
        (work / "cancelled").touch()
        (work / "stop").touch()
    assert d.get_run(run_a).status == "cancelled"  # type: ignore[union-attr]
    log = stallapp.events(work)
    a_end = log.index(("A", run_a, 1, "end"))
    b_start = log.index(("B", run_b, 0, "start"))
    assert a_end < b_start, (
        f"run B of the key started (event {b_start}) while cancelled run A's "
        f"step still ran (it ended at event {a_end})"
    )
