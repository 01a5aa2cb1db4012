"""Two "hosts" sharing one root through two bindfs (FUSE) views, and clock skew
between them with libfaketime (plan cases L5, K7, K8 of
docs/reliability.md).

Record locks taken through one FUSE view do not exclude a process on the other view (the
NFS ``local_lock`` situation), and the second process runs with another host name
(``durably._locks.HOST``), so nothing but the files (``link()`` of state files, cuts,
lease expiry) keeps the two workers apart.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from apps import fault_server
from apps.children import REPO_ROOT, child_env, poll
from helpers import run_dir_of

from durably._durably import runtime_of

from .relhelpers import bindfs_view, need_faketime

RUNS, STEPS = 12, 5


def _spawn(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "apps.fault_server", *args],
        env=env or child_env(),
        cwd=str(REPO_ROOT),
        stderr=subprocess.PIPE,
    )


def _finish(proc: subprocess.Popen[bytes], timeout: float = 60) -> str:
    try:
        _, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
    return err.decode(errors="replace")


def _lines(log: Path) -> list[list[str]]:
    return [line.split() for line in log.read_text().splitlines()] if log.exists() else []


@pytest.fixture
def two_views(tmp_path: Path) -> Iterator[tuple[Path, Path, Path]]:
    """(real root, root through view A, root through view B)."""
    shared = tmp_path / "shared"
    shared.mkdir()
    with bindfs_view(shared, tmp_path / "A") as a, bindfs_view(shared, tmp_path / "B") as b:
        yield shared / "root", a / "root", b / "root"


def test_two_hosts_through_two_views_commit_each_step_once(
    tmp_path: Path, two_views: tuple[Path, Path, Path]
) -> None:
    """K8/L5: two workers, one per view and "host", drain the same 12 runs. Every step
    body runs exactly once (no live lease is taken over), every run completes once with
    the right output, and both hosts did part of the work."""
    real, view_a, view_b = two_views
    d = fault_server.make(str(real), fsync=False)
    handle = d.get_job("rel-work")
    assert handle is not None
    ids = [handle.trigger(fault_server.Work(tag=f"r{i}", steps=STEPS)).id for i in range(RUNS)]
    log, stop, go = tmp_path / "exec.log", tmp_path / "stop", tmp_path / "go"
    env = child_env(RELAPP_GO=str(go), RELAPP_STEP_DELAY="0.01")
    workers = [
        _spawn("work", str(view_a), "A", str(log), "", "30", str(stop), env=env),
        _spawn("work", str(view_b), "B", str(log), "hostB", "30", str(stop), env=env),
    ]
    try:
        go.touch()
        poll(
            lambda: all((r := d.get_run(i)) is not None and r.status == "completed" for i in ids),
            timeout=90,
            what="all runs completed",
        )
        stop.touch()
        errs = [_finish(w) for w in workers]
        assert [w.returncode for w in workers] == [0, 0], errs
    finally:
        for w in workers:
            if w.poll() is None:
                w.kill()
                w.communicate()
    executions = Counter((run_id, int(k)) for who, run_id, k, _ in _lines(log))
    assert executions == Counter({(i, k): 1 for i in ids for k in range(STEPS)})
    by_host = Counter(who for who, *_ in _lines(log))
    assert by_host["A"] > 0, by_host
    assert by_host["B"] > 0, by_host
    for i in ids:
        run = d.get_run(i)
        assert run is not None
        assert run.output == fault_server.expected(STEPS, run.input["tag"])
        done = [s.name for s in d.get_steps(i) if s.status == "completed"]
        assert done == [f"step-{k}" for k in range(STEPS)]


def _faketime_env(offset: str, **extra: str) -> dict[str, str]:
    lib = need_faketime()
    return child_env(LD_PRELOAD=lib, FAKETIME=offset, FAKETIME_NO_CACHE="1", **extra)


def test_clock_ahead_takes_over_a_live_lease_but_fencing_holds(
    tmp_path: Path, two_views: tuple[Path, Path, Path]
) -> None:
    """K7: host B's clock is one hour ahead. Documented behaviour (docs/reliability.md):
    lease expiry across hosts is judged on the claimer's wall clock, so B sees A's live
    lease as expired and takes the run over at once. What must still hold is fencing: A's
    step in flight is refused (it never becomes part of the run), every step has exactly
    one completed record, and the run completes once with the right output."""
    real, view_a, view_b = two_views
    d = fault_server.make(str(real), fsync=False)
    handle = d.get_job("rel-work")
    assert handle is not None
    run_id = handle.trigger(fault_server.Work(tag="skew", steps=4)).id
    log, gate, stop = tmp_path / "exec.log", tmp_path / "gate", tmp_path / "stop"
    holder = _spawn("hold", str(view_a), "A", str(log), "", "5", str(gate))
    skewed = None
    try:
        poll(lambda: any(p[:2] == ["A", "blocked"] for p in _lines(log)), what="A inside step 1")
        skewed = _spawn("work", str(view_b), "B", str(log), "hostB", "5", str(stop), env=_faketime_env("+1h"))
        run = poll(
            lambda: (r := d.get_run(run_id)) is not None and r.status == "completed" and r,
            timeout=60,
            what="B completed the run",
        )
        gate.touch()  # A's step 1 returns now, after B's claim: its commit must be refused
        err_a = _finish(holder)
        stop.touch()
        err_b = _finish(skewed)
        assert (holder.returncode, skewed.returncode) == (0, 0), (err_a, err_b)
    finally:
        for p in (holder, skewed):
            if p is not None and p.poll() is None:
                p.kill()
                p.communicate()
    assert run.output == fault_server.expected(4, "skew")
    steps = d.get_steps(run_id)
    done = [(s.name, s.generation) for s in steps if s.status == "completed"]
    assert done == [("step-0", 1), ("step-1", 2), ("step-2", 2), ("step-3", 2)], done
    executed = Counter(
        (who, int(k))
        for who, rid, k, _ in (p for p in _lines(log) if len(p) == 4 and p[2].isdigit())
        if rid == run_id
    )
    assert executed == Counter({("A", 0): 1, ("A", 1): 1, ("B", 1): 1, ("B", 2): 1, ("B", 3): 1})
    state = runtime_of(d).store.load(run_id)
    assert state is not None
    assert state.generation == 2


def test_dead_owner_with_clock_ahead_strands_its_run_for_the_skew(
    tmp_path: Path, two_views: tuple[Path, Path, Path]
) -> None:
    """K7 (reverse): the worker whose clock is one hour ahead claims a run and dies. Its
    lease record says it started an hour from now, so a worker on a correct clock of
    another host will not take the run over before that hour (plus the lease) has passed.
    Documented: hosts sharing a root must agree on the time within a fraction of
    ``lease_duration``; on one host the kernel's lock release makes this moot."""
    real, _, view_b = two_views
    d = fault_server.make(str(real), fsync=False, lease_duration=5, lease_renew_interval=1)
    handle = d.get_job("rel-work")
    assert handle is not None
    run_id = handle.trigger(fault_server.Work(tag="stranded", steps=4)).id
    log, gate = tmp_path / "exec.log", tmp_path / "gate"
    holder = _spawn("hold", str(view_b), "B", str(log), "hostB", "5", str(gate), env=_faketime_env("+1h"))
    try:
        poll(lambda: any(p[:2] == ["B", "blocked"] for p in _lines(log)), what="B inside step 1")
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(holder.pid, signal.SIGKILL)
        _finish(holder)
    state = runtime_of(d).store.load(run_id)
    assert state is not None
    assert state.status == "leased"
    assert runtime_of(d).store.lease_expiry(state) - time.time() > 3000
    assert d.process_one() is False  # this "host" sees a live lease for about an hour
    assert d.get_run(run_id).status == "leased"  # type: ignore[union-attr]


def test_dead_owner_on_another_host_is_taken_over_after_its_lease(
    tmp_path: Path, two_views: tuple[Path, Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """L6/invariant 6 across hosts: host B's worker is SIGKILLed inside step 1. No lock
    tells host A it died; once B's lease (2 s, no more heartbeats) has expired, A claims
    the run with the next generation and finishes it without re-running step 0."""
    _, view_a, view_b = two_views
    d = fault_server.make(str(view_a), fsync=False, lease_duration=2, lease_renew_interval=0.5)
    handle = d.get_job("rel-work")
    assert handle is not None
    run_id = handle.trigger(fault_server.Work(tag="dead", steps=4)).id
    log, gate = tmp_path / "exec.log", tmp_path / "gate"
    holder = _spawn("hold", str(view_b), "B", str(log), "hostB", "2", str(gate))
    try:
        poll(lambda: any(p[:2] == ["B", "blocked"] for p in _lines(log)), what="B inside step 1")
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(holder.pid, signal.SIGKILL)
        _finish(holder)
    monkeypatch.setattr(fault_server, "STEP_LOG", str(log))
    monkeypatch.setenv("RELAPP_WHO", "A")
    poll(d.process_one, timeout=60, what="host A takes the run over after B's lease")
    run = d.get_run(run_id)
    assert run is not None
    assert run.status == "completed"
    assert run.output == fault_server.expected(4, "dead")
    state = runtime_of(d).store.load(run_id)
    assert state is not None
    assert state.generation == 2
    executed = Counter(
        (who, int(k))
        for who, rid, k, _ in (p for p in _lines(log) if len(p) == 4 and p[2].isdigit())
        if rid == run_id
    )
    assert executed == Counter({("B", 0): 1, ("B", 1): 1, ("A", 1): 1, ("A", 2): 1, ("A", 3): 1})


def test_fence_seen_late_through_a_lookup_cache_is_still_enforced_by_cuts(tmp_path: Path) -> None:
    """An NFS-like client (bindfs with ``negative_timeout=2``: "no such file" answers are
    cached) executes a run while another host cancels it. The owner checks for ``s.2``
    before each step and may keep seeing "missing" for up to the cache time, so it may
    go on committing steps; the cut in the cancel record keeps every one of them out of
    the run: the run reads as cancelled with only the steps committed before the cancel."""
    shared = tmp_path / "shared"
    shared.mkdir()
    with (
        bindfs_view(shared, tmp_path / "A") as view_a,
        bindfs_view(shared, tmp_path / "B", "entry_timeout=2,negative_timeout=2,attr_timeout=2") as view_b,
    ):
        d = fault_server.make(str(view_a / "root"), fsync=False)
        handle = d.get_job("rel-work")
        assert handle is not None
        run_id = handle.trigger(fault_server.Work(tag="late", steps=200)).id
        log, stop = tmp_path / "exec.log", tmp_path / "stop"
        worker = _spawn(
            "work",
            str(view_b / "root"),
            "B",
            str(log),
            "hostB",
            "30",
            str(stop),
            env=child_env(RELAPP_STEP_DELAY="0.01"),
        )
        try:
            poll(lambda: len(_lines(log)) >= 5, what="B executing steps")
            d.cancel(run_id)
            executed_before = len(_lines(log))
            stop.touch()
            err = _finish(worker)
            assert worker.returncode == 0, err
        finally:
            if worker.poll() is None:
                worker.kill()
                worker.communicate()
        run = d.get_run(run_id)
        assert run is not None
        assert run.status == "cancelled"
        done = [s.name for s in d.get_steps(run_id) if s.status == "completed"]
        assert done == [f"step-{k}" for k in range(len(done))]
        assert len(done) <= executed_before
        assert len(_lines(log)) < 200  # B stopped once it saw the fence
        # Whatever B appended after the cut is in its journal but never part of the run.
        state = runtime_of(d).store.load(run_id)
        assert state is not None
        journal = Path(run_dir_of(d, run_id)) / "j.1"
        assert journal.stat().st_size >= int(state.cuts["1"])
