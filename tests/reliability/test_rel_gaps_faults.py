"""Faults the rest of the suite did not reach (plan F1 EDQUOT, F4, F6, F7, F8, C6, C9).

- EDQUOT (a quota) at the N-th write/fsync/fdatasync/open/rename of a step commit and
  of a trigger, through the libfiu fault server of ``test_rel_faults.py``;
- inode exhaustion: a tmpfs with ``nr_inodes=`` fills while a run is half done;
- a slow ``fdatasync`` (``strace -e inject=...:delay_enter=``) longer than the lease: the
  heartbeat thread keeps the lease, readers keep reading, nothing is taken over;
- a failing heartbeat (``utimensat`` fails with EIO): reported with the journal's path,
  and the lease is lost safely (another host takes over, fencing refuses the old owner);
- a fault on one run's journal only (``strace -P``): that run fails, the others do not;
- SIGKILL at the N-th ``link``/``fdatasync``/``rename`` with no code hook at all
  (``strace -e inject=...:signal=SIGKILL``), then recovery by a fresh process;
- a ``link`` that happened but reported EIO (NFS retransmits), at each publish (C9).

Closing a file is not injected: libfiu and strace both skip the real ``close`` when they
fail it, so the descriptor (and any record lock on it) would stay open, which Linux never
does; the close path is covered in ``test_rel_gaps_locks.py`` by a close that happens
and then reports EIO (an NFS deferred write error).
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import gapapp
import pytest
from crashapps.proc import Zygote
from pydantic import BaseModel
from relhelpers import HERE, REPO, FaultServer, child_env, need_tool, poll, tmpfs
from test_rel_faults import FDATASYNC, FSYNC, OPEN, RENAME, W, _check_commit_case, _check_trigger_case

import durably

STATS: dict[str, int] = {"edquot_cases": 0, "strace_kill_points": 0, "strace_cases": 0,
                         "post_op_link_cases": 0}

EDQUOT_COMMIT = [(W, 1), (W, 2), (FDATASYNC, 1), (FSYNC, 1), (FSYNC, 2), (OPEN, 1), (OPEN, 2),
                 (RENAME, 1)]
EDQUOT_TRIGGER = [(OPEN, 1), (OPEN, 3), (W, 1), (W, 2), (FSYNC, 1), (FSYNC, 3)]


def test_edquot_at_each_write_sync_open_and_rename(fault_server: FaultServer) -> None:
    """F1 with EDQUOT (the user's quota is exhausted): the N-th write, fsync, fdatasync,
    open or rename of a step commit or of a keyed trigger fails once. The failure names
    the cause; a committed step is kept and never re-run; the same worker retries and
    serves new runs; a trigger leaves no run, or one that its key finds."""
    quota = os.strerror(errno.EDQUOT)
    failed = refused = 0
    for i, (point, nth) in enumerate(EDQUOT_COMMIT):
        STATS["edquot_cases"] += 1
        out = fault_server.call(op="commit", tag=f"q{i}", point=point, nth=nth, errno=errno.EDQUOT)
        _check_commit_case(out, "EDQUOT", f"commit {point} #{nth} EDQUOT")
        if out["run"]["status"] == "failed":
            failed += 1
            assert quota in (out["run"]["error"] or ""), out
    for i, (point, nth) in enumerate(EDQUOT_TRIGGER):
        STATS["edquot_cases"] += 1
        out = fault_server.call(op="trigger", tag=f"qt{i}", point=point, nth=nth, errno=errno.EDQUOT)
        _check_trigger_case(out, "EDQUOT", f"trigger {point} #{nth} EDQUOT")
        refused += out["error"] is not None
    assert failed >= 3, failed  # the faults hit commits, not only harmless calls
    assert refused >= 3, refused


# -- F4: inode exhaustion ------------------------------------------------------------------


def _fill_inodes(directory: Path) -> int:
    """Create empty files until the file system refuses; return the errno."""
    directory.mkdir()
    n = 0
    while True:
        try:
            (directory / str(n)).touch()
        except OSError as exc:
            return exc.errno or 0
        n += 1


def test_inode_exhaustion_is_reported_and_work_resumes(tmp_path: Path) -> None:
    """F4: a tmpfs with few inodes runs out of them while a run is half done. Appending
    steps needs no inode, so the run's steps commit; publishing its end, claiming and
    triggering need one and fail with an error that says the file system has no free
    inodes. Readers keep working; once inodes are freed the same background worker
    finishes the run without re-running a step, and serves a new one."""
    with tmpfs(tmp_path / "mnt", "size=16m,nr_inodes=300,mode=0700") as mnt:
        root = mnt / "root"
        work = tmp_path / "work"  # the execution log lives off the small file system
        work.mkdir()
        gapapp.WORKDIR, gapapp.WHO, gapapp.GATE_WHO = str(work), "me", "me"
        d = gapapp.make(str(root), fsync=True)
        handle = d.get_job("gap-steps")
        assert handle is not None
        errors: list[str] = []
        d.on("worker:error", lambda ev: errors.append(ev.error))
        try:
            run_id = handle.trigger(gapapp.GapIn(steps=4, hold=True)).id
            d.start()
            poll(lambda: "blocked" in (work / "exec.log").read_text()
                 if (work / "exec.log").exists() else False, what="step 1 running")
            ballast = mnt / "ballast"
            assert _fill_inodes(ballast) == errno.ENOSPC
            assert os.statvfs(mnt).f_favail == 0
            with pytest.raises(durably.StoreError) as info:
                handle.trigger(gapapp.GapIn(steps=1))
            assert os.strerror(errno.ENOSPC) in str(info.value)
            assert "no free inodes" in str(info.value), info.value
            run = d.get_run(run_id)  # readers need no inode
            assert run is not None
            assert run.status == "leased"
            assert [s.name for s in d.get_steps(run_id) if s.status == "completed"] == ["s0"]
            (work / "gate").touch()  # the held step returns; s1..s3 append; the end cannot
            poll(lambda: any("no free inodes" in e for e in errors), timeout=60, what="end refused")
            assert [s.name for s in d.get_steps(run_id) if s.status == "completed"] == \
                ["s0", "s1", "s2", "s3"]
            assert d.get_run(run_id).status == "leased"  # type: ignore[union-attr]
            shutil.rmtree(ballast)
            run = poll(lambda: (r := d.get_run(run_id)) is not None and r.status == "completed" and r,
                       timeout=60, what="run completed once inodes were freed")
            assert run.output == gapapp.expected(4)
            counts = Counter(k for _, rid, k in gapapp.executions(work) if rid == run_id)
            assert counts == Counter({0: 1, 1: 1, 2: 1, 3: 1}), counts
            fresh = handle.trigger(gapapp.GapIn(steps=2)).id
            poll(lambda: (r := d.get_run(fresh)) is not None and r.status == "completed",
                 timeout=60, what="a new run completed")
        finally:
            d.stop(timeout=30)
            gapapp.WORKDIR = gapapp.GATE_WHO = ""


# -- strace: slow fsync, failing heartbeat, one run's file, SIGKILL sweep -------------------


def _env() -> dict[str, str]:
    env = child_env()
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "tests"), env["PYTHONPATH"]])
    return env


def _traced(calls: str, inject: str, fn: str, *, path: str | None = None,
            **kwargs: Any) -> subprocess.Popen[bytes]:
    """``python gapapp.py fn kwargs`` under ``strace -f -e inject=...`` (no root needed:
    strace starts the child itself). ``--seccomp-bpf`` (stop only at the traced calls)
    is left out for ``signal=`` injection, which strace 6.1 then never performs."""
    strace = need_tool("strace", "strace")
    fast = [] if "signal=" in inject else ["--seccomp-bpf"]
    return subprocess.Popen(
        [strace, "-f", "-qq", *fast, "-o", "/dev/null", *(["-P", path] if path else []),
         "-e", f"trace={calls}", "-e", f"inject={inject}",
         sys.executable, str(HERE / "gapapp.py"), fn, json.dumps(kwargs)],
        env=_env(), cwd=str(REPO), stderr=subprocess.PIPE)


def _finish(proc: subprocess.Popen[bytes], timeout: float = 60) -> str:
    try:
        _, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
    return err.decode(errors="replace")



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
    d = gapapp.make(str(root), fsync=True)
    handle = d.get_job("gap-steps")
    assert handle is not None
    run_id = handle.trigger(gapapp.GapIn(steps=2)).id
    stop_w, stop_r = str(work / "stop-W"), str(work / "stop-R")
    w = _traced("fdatasync", "fdatasync:delay_enter=2400ms", "worker", root=str(root),
                workdir=str(work), who="W", stop=stop_w, lease=2.0, renew=0.1)
    r = None
    reads_while_leased = 0
    try:
        poll(lambda: gapapp.executions(work), timeout=60, what="W executing step 0")
        r = zygote.spawn("gapapp:worker", root=str(root), workdir=str(work), who="R",
                         stop=stop_r, lease=2.0, renew=0.1, host="other-host")
        while True:
            run = d.get_run(run_id)
            d.get_steps(run_id)
            d.get_runs()
            assert run is not None
            if run.status == "leased":
                reads_while_leased += 1
            if run.status == "completed":
                break
            assert w.poll() is None, _finish(w)
    finally:
        Path(stop_w).touch()
        Path(stop_r).touch()
        err = _finish(w)
    assert w.returncode == 0, err
    assert r is not None
    assert zygote.wait(r) == 0, zygote.stderr()
    assert reads_while_leased > 0
    run = d.get_run(run_id)
    assert run is not None
    assert (run.status, run.lease_generation, run.output) == ("completed", 1, gapapp.expected(2))
    assert (work / "claimed-R").read_text() == "0"
    assert Counter((who, k) for who, rid, k in gapapp.executions(work) if rid == run_id) == \
        Counter({("W", 0): 1, ("W", 1): 1})
    assert not (work / "errors-W.log").exists(), (work / "errors-W.log").read_text()


def test_failing_heartbeat_is_reported_and_the_lease_is_lost_safely(
        tmp_path: Path, zygote: Zygote) -> None:
    """F6: the owner's heartbeat (touching its journal) fails with EIO every time. It
    reports the failure naming the journal and keeps executing; a worker of another host
    takes the run over once the lease (0.6 s) has run out; the old owner's step in
    flight is then refused (LeaseLostError), and every step has one completed record."""
    STATS["strace_cases"] += 1
    root, work = tmp_path / "root", tmp_path / "work"
    work.mkdir()
    d = gapapp.make(str(root), fsync=False)
    handle = d.get_job("gap-steps")
    assert handle is not None
    run_id = handle.trigger(gapapp.GapIn(steps=3, hold=True)).id
    stop_w, stop_r = str(work / "stop-W"), str(work / "stop-R")
    w = _traced("utimensat", "utimensat:error=EIO", "worker", root=str(root), workdir=str(work),
                who="W", stop=stop_w, lease=0.6, renew=0.1, gate_who="W")
    r = None
    try:
        poll(lambda: any(who == "W" and k == 1 for who, _, k in gapapp.executions(work)),
             what="W inside step 1")
        r = zygote.spawn("gapapp:worker", root=str(root), workdir=str(work), who="R",
                         stop=stop_r, lease=0.6, renew=0.1, host="other-host")
        run = poll(lambda: (x := d.get_run(run_id)) is not None and x.status == "completed" and x,
                   timeout=60, what="R completed the run")
        (work / "gate").touch()  # W's step 1 returns now: its commit must be refused
    finally:
        Path(stop_w).touch()
        Path(stop_r).touch()
        err = _finish(w)
    assert w.returncode == 0, err
    assert r is not None
    assert zygote.wait(r) == 0, zygote.stderr()
    assert (run.lease_generation, run.output) == (2, gapapp.expected(3))
    steps = [(s.name, s.generation) for s in d.get_steps(run_id) if s.status == "completed"]
    assert steps == [("s0", 1), ("s1", 2), ("s2", 2)], steps
    errors = (work / "errors-W.log").read_text()
    assert os.strerror(errno.EIO) in errors, errors
    journal = os.path.join(d._store.run_dir(run_id), "j.1")
    assert journal in errors, errors
    assert "Lease lost" in errors or "lost ownership" in errors, errors


def test_fault_on_one_runs_journal_fails_only_that_run(tmp_path: Path) -> None:
    """F7: ``fdatasync`` fails with EIO on one run's journal only (``strace -P``). That
    run fails with an error naming its journal and EIO; the other run completes; the
    same worker then executes a retry of the failed run."""
    STATS["strace_cases"] += 1
    root, work = tmp_path / "root", tmp_path / "work"
    work.mkdir()
    d = gapapp.make(str(root), fsync=True)
    handle = d.get_job("gap-steps")
    assert handle is not None
    bad = handle.trigger(gapapp.GapIn(steps=3)).id
    good = handle.trigger(gapapp.GapIn(steps=3)).id
    journal = os.path.join(d._store.run_dir(bad), "j.1")
    stop = work / "stop"
    w = _traced("fdatasync", "fdatasync:error=EIO", "worker", path=journal, root=str(root),
                workdir=str(work), who="W", stop=str(stop), lease=30.0)
    try:
        poll(lambda: all((r := d.get_run(i)) is not None and r.is_terminal for i in (bad, good)),
             timeout=60, what="both runs ended")
        retry = d.retrigger(bad).id
        poll(lambda: (r := d.get_run(retry)) is not None and r.is_terminal, timeout=60,
             what="the retry ended")
    finally:
        stop.touch()
        err = _finish(w)
    assert w.returncode == 0, err
    failed, done, again = d.get_run(bad), d.get_run(good), d.get_run(retry)
    assert failed is not None
    assert done is not None
    assert again is not None
    assert failed.status == "failed"
    assert journal in (failed.error or ""), failed.error
    assert os.strerror(errno.EIO) in (failed.error or ""), failed.error
    assert (done.status, done.output) == ("completed", gapapp.expected(3))
    assert (again.status, again.output) == ("completed", gapapp.expected(3))


SWEEP_CALLS = ("linkat", "fdatasync", "renameat")  # durably links and renames by dir fd


def test_sigkill_at_each_link_fdatasync_and_rename_without_a_code_hook(
        tmp_path: Path, zygote: Zygote) -> None:
    """C6: a keyed trigger and the execution of its 3-step run, in one process that
    ``strace`` SIGKILLs on entering its N-th ``linkat``, ``fdatasync`` or ``renameat`` (the
    publish of key, claim and end records, each step's commit, the compaction), for
    every N. No code of durably or of the test runs in the process. After each kill a
    fresh process finds the root consistent, finishes the run without re-running an
    acknowledged step, and one run holds the key."""
    template = tmp_path / "template"
    (template / "work").mkdir(parents=True)
    zygote.check("crashapps.jobs:sweep_op", root=str(template / "root"),
                 workdir=str(template / "work"), op="init", kill_at=0,
                 result=str(template / "init.json"))
    probe = tmp_path / "probe"
    shutil.copytree(template, probe)
    trace = tmp_path / "trace.txt"
    strace = need_tool("strace", "strace")
    subprocess.run([strace, "-f", "-qq", "--seccomp-bpf", "-o", str(trace), "-e",
                    "trace=" + ",".join(SWEEP_CALLS), sys.executable, str(HERE / "gapapp.py"),
                    "keyed_workload", json.dumps({"root": str(probe / "root"),
                                                  "workdir": str(probe / "work")})],
                   env=_env(), cwd=str(REPO), check=True, capture_output=True, timeout=120)
    counts = Counter(line.split()[1].split("(")[0] for line in trace.read_text().splitlines()
                     if "(" in line and not line.split()[1].startswith("---"))
    cases = [(call, n) for call in SWEEP_CALLS for n in range(1, counts[call] + 1)]
    assert counts["linkat"] >= 4, counts
    assert counts["fdatasync"] >= 3, counts
    outcomes = []
    for first in range(0, len(cases), 4):  # four at a time: the children mostly wait on fsync
        batch = cases[first:first + 4]
        procs = []
        for call, n in batch:
            case = tmp_path / f"{call}-{n}"
            shutil.copytree(template, case)
            procs.append(_traced(call, f"{call}:signal=SIGKILL:when={n}", "keyed_workload",
                                 root=str(case / "root"), workdir=str(case / "work")))
        for (call, n), proc in zip(batch, procs, strict=True):
            err = _finish(proc)
            assert proc.returncode in (-9, 128 + 9), f"{call} #{n}: exit {proc.returncode}\n{err}"
            STATS["strace_kill_points"] += 1
        for call, n in batch:
            case = tmp_path / f"{call}-{n}"
            result = case / "check.json"
            code = zygote.run("crashapps.jobs:sweep_check", root=str(case / "root"),
                              workdir=str(case / "work"), result=str(result))
            assert code == 0, f"killed at {call} #{n}: recovery failed\n{zygote.stderr()}"
            outcomes.append(json.loads(result.read_text())["status"])
            shutil.rmtree(case)
    assert outcomes == ["completed"] * len(cases)


# -- C9: a publish that happened but reported an error --------------------------------------


class Val(BaseModel):
    tag: str = ""


@pytest.mark.parametrize("nth", [1, 2, 3, 4])
def test_a_link_that_succeeded_but_reported_eio_converges(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
        nth: int) -> None:
    """C9: NFS may report an error for a ``link`` the server performed (a retransmitted
    request). The N-th ``link`` of a keyed trigger and its execution (idempotency key,
    concurrency key, claim, end) is performed, then reported as EIO. The trigger or the
    end raises a DurablyError naming EIO (a claim is skipped with a warning naming it);
    afterwards a fresh process finds one run for the key, finishes it (or finds it
    finished), and no acknowledged step runs again."""
    caplog.set_level("WARNING", logger="durably")
    STATS["post_op_link_cases"] += 1
    ran: Counter[str] = Counter()
    acked: set[str] = set()

    def job(step: durably.Step, payload: Val) -> int:
        return sum(step.run(f"s{k}", lambda k=k: ran.update([f"s{k}"]) or k) for k in range(3))

    definition = durably.define_job(name="postop", input=Val, output=int, run=job)
    root = tmp_path / "root"
    d = durably.Durably(root, jobs=[definition], fsync=False)
    d.on("step:complete", lambda ev: acked.add(ev.step_name))
    d._store.ensure_ready()
    handle = d.get_job("postop")
    assert handle is not None
    real_link = os.link
    calls = {"n": 0}

    def link(src: Any, dst: Any, *args: Any, **kwargs: Any) -> None:
        real_link(src, dst, *args, **kwargs)
        calls["n"] += 1
        if calls["n"] == nth:
            raise OSError(errno.EIO, os.strerror(errno.EIO))

    monkeypatch.setattr(os, "link", link)
    errors = []
    for action in (lambda: handle.trigger(Val(tag="t"), idempotency_key="k", concurrency_key="c"),
                   d.process_one):
        try:
            action()
        except durably.DurablyError as exc:
            errors.append(str(exc))
    monkeypatch.undo()
    assert calls["n"] >= nth, calls
    said = errors + [r.getMessage() for r in caplog.records]
    assert [m for m in said if os.strerror(errno.EIO) in m], said
    fresh = durably.Durably(root, jobs=[definition], fsync=False)
    again = fresh.get_job("postop").trigger(  # type: ignore[union-attr]
        Val(tag="t"), idempotency_key="k", concurrency_key="c", coalesce="skip")
    fresh.process_until_idle()
    runs = fresh.get_runs()
    assert [r.id for r in runs] == [again.id], [(r.id, r.status) for r in runs]
    assert (runs[0].status, runs[0].output) == ("completed", 3)
    assert all(ran[name] == 1 for name in acked), (ran, acked)
    assert set(ran) == {"s0", "s1", "s2"}
