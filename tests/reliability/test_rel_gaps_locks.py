"""Locks, leases and maintenance the rest of the suite did not reach (plan L2, L3, L7,
L9, K6 control, C7).

- a job's long-lived child started with ``subprocess`` (``close_fds=False``) inherits no
  lock: its worker SIGKILLed, the run resumes at once on the same host (lease: one hour);
- lock files are never unlinked nor replaced while four processes contend on trigger,
  claim and execution locks, and runs of one key never overlap;
- threads of one process calling ``process_until_idle`` together run each step once;
- a closed journal whose ``close`` reports EIO (NFS reports deferred write errors there)
  still releases the run's locks;
- ``locks/`` removed under a running instance: clear errors, no hang, work resumes;
- a paused owner nobody fences: on its host nobody takes it over, and it completes;
- orphan temp files are swept by an idle worker, whatever ``retain_runs`` says.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import signal
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import gapapp
import pytest
from crashapps import jobs
from crashapps.proc import Zygote, poll
from pydantic import BaseModel

import durably
from durably import _files as files
from durably import _locks as locks

STATS: dict[str, int] = {"contenders": 0, "lock_files_watched": 0, "inode_samples": 0,
                         "keyed_runs_raced": 0}



def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except FileNotFoundError:
        return False


def test_a_jobs_subprocess_inherits_no_lock(tmp_path: Path, zygote: Zygote,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """L2: a step starts a long-lived child with ``subprocess.Popen(close_fds=False)``,
    then its worker is SIGKILLed. The child lives on, holds no descriptor of the root
    (every one durably opens is close-on-exec) and no lock (record locks belong to the
    process), so a worker on the same host claims the run at once although its lease
    has an hour to go, and completes it in generation 2."""
    root, work = tmp_path / "root", tmp_path / "work"
    work.mkdir()
    d = gapapp.make(str(root), lease_duration=3600.0)
    handle = d.get_job("gap-spawner")
    assert handle is not None
    run_id = handle.trigger(gapapp.GapIn()).id
    assert zygote.run("gapapp:die_with_subprocess", root=str(root), workdir=str(work)) == -9
    child = int((work / "grandchild").read_text())
    try:
        assert _alive(child)
        held = [os.readlink(f"/proc/{child}/fd/{fd}") for fd in os.listdir(f"/proc/{child}/fd")]
        assert not [p for p in held if p.startswith(str(root))], held
        assert not locks.is_locked_elsewhere(os.path.join(d._store.run_dir(run_id), "lock"),
                                           root=d._store.root)
        run = d.get_run(run_id)
        assert run is not None
        assert run.status == "leased"
        monkeypatch.setattr(gapapp, "WHO", "resumer")
        assert d.process_one() is True
        assert _alive(child)
        run = d.get_run(run_id)
        assert run is not None
        assert (run.status, run.output, run.lease_generation) == ("completed", "resumer", 2)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(child, signal.SIGKILL)


CONTENDERS, ROUNDS = 4, 12


def test_lock_files_are_never_unlinked_under_contention(tmp_path: Path, zygote: Zygote) -> None:
    """L3: four processes, released together, each trigger 12 keyed runs (3 concurrency
    keys, 4 jobs) and execute whatever they can claim. A sampler watches every lock file
    (trigger, execution and run locks): once one exists, it keeps existing with the same
    inode (a lock file unlinked or replaced lets two processes each lock "the" file).
    Runs of one key never overlap, and every run completes."""
    root, work = tmp_path / "root", tmp_path / "work"
    work.mkdir()
    jobs.make(str(root), fsync=False)._store.ensure_ready()
    seen: dict[str, int] = {}
    violations: list[str] = []
    stop = threading.Event()

    def lock_paths() -> Iterator[str]:
        for entry in os.scandir(root / "locks"):
            yield entry.path
        for shard in os.scandir(root / "runs"):
            for mid in os.scandir(shard.path):
                for run in os.scandir(mid.path):
                    yield os.path.join(run.path, "lock")

    def sample() -> None:
        while not stop.is_set():
            for path in list(seen):
                try:
                    ino = os.stat(path).st_ino
                except FileNotFoundError:
                    violations.append(f"{path} was unlinked")
                    continue
                if ino != seen[path]:
                    violations.append(f"{path} was replaced")
            for path in lock_paths():
                with contextlib.suppress(FileNotFoundError):
                    seen.setdefault(path, os.stat(path).st_ino)
            STATS["inode_samples"] += 1

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        pids = [zygote.spawn("gapapp:contend", group="contenders", root=str(root), workdir=str(work),
                             who=f"c{i}", rounds=ROUNDS) for i in range(CONTENDERS)]
        zygote.release("contenders")
        for pid in pids:
            assert zygote.wait(pid, timeout=120) == 0, zygote.stderr()
    finally:
        stop.set()
        sampler.join(30)
    STATS["contenders"] += CONTENDERS
    STATS["lock_files_watched"] += len(seen)
    assert violations == [], violations[:10]
    assert len([p for p in seen if "/locks/" in p]) >= 6, sorted(seen)  # i-, p-, x- locks
    d = jobs.make(str(root), fsync=False)
    runs = d.get_runs(job_name=[f"keyed-{j}" for j in range(4)])
    STATS["keyed_runs_raced"] += len(runs)
    assert runs
    assert {r.status for r in runs} == {"completed"}
    lines = (work / "intervals.log").read_text().splitlines()
    running: dict[str, str] = {}
    for line in lines:
        kind, key, n, who = line.split()
        if kind == "start":
            assert key not in running, f"{who} started run {n} of {key} during {running[key]}"
            running[key] = f"run {n} on {who}"
        else:
            assert running.pop(key) == f"run {n} on {who}"
    assert len(lines) == 2 * len(runs)


class Tag(BaseModel):
    n: int = 0


def test_threads_of_one_process_execute_each_step_once(durably_factory: object) -> None:
    """L7: four threads of one process call ``process_until_idle`` on one instance at once
    (over 24 runs, some sharing a concurrency key): every step body runs exactly once,
    no thread raises, and runs of one key never run at the same time."""
    ran: Counter[tuple[int, int]] = Counter()
    active: dict[str, int] = {}
    overlaps: list[str] = []
    guard = threading.Lock()

    def job(step: durably.Step, payload: Tag) -> int:
        key = f"k{payload.n % 3}" if payload.n % 2 else f"free-{payload.n}"
        with guard:
            active[key] = active.get(key, 0) + 1
            if active[key] > 1:
                overlaps.append(key)
        try:
            for k in range(3):
                step.run(f"s{k}", lambda k=k: ran.update([(payload.n, k)]) or k)
                time.sleep(0.001)
        finally:
            with guard:
                active[key] -= 1
        return payload.n

    d = durably_factory(max_concurrent_runs=4)  # type: ignore[operator]
    handles = [d.register(durably.define_job(name=f"threads-{j}", input=Tag, output=int, run=job))
               for j in range(8)]  # one pending run per (job, key): (n % 8, n % 3) differ
    ids = [handles[n % 8].trigger(Tag(n=n), concurrency_key=f"k{n % 3}" if n % 2 else None).id
           for n in range(24)]
    errors: list[BaseException] = []

    def drain() -> None:
        try:
            d.process_until_idle()
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=drain) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    d.process_until_idle()  # runs skipped because their key was busy in another thread
    assert errors == []
    assert [d.get_run(i).status for i in ids] == ["completed"] * 24  # type: ignore[union-attr]
    assert ran == Counter({(n, k): 1 for n in range(24) for k in range(3)})
    assert overlaps == []


def test_a_close_that_reports_eio_still_releases_the_locks(
        durably_factory: object, monkeypatch: pytest.MonkeyPatch) -> None:
    """NFS reports deferred write errors at ``close``, after the descriptor is gone. When
    closing a run's journal reports EIO, the run's lock and its key's execution lock are
    still released: the next run of the key executes at once, and no other process is
    kept out."""
    real_close = os.close
    armed: dict[str, int] = {}

    def close(fd: int) -> None:
        real_close(fd)
        if armed.get("fd") == fd:
            armed.clear()
            raise OSError(errno.EIO, os.strerror(errno.EIO))

    def job(step: durably.Step, payload: Tag) -> int:
        step.run("s0", lambda: 0)
        if payload.n == 0:
            armed["fd"] = step._ex.claim.journal._fd  # the fd closed at release
        return payload.n

    d = durably_factory()  # type: ignore[operator]
    handle = d.register(durably.define_job(name="closer", input=Tag, output=int, run=job))
    first = handle.trigger(Tag(n=0), concurrency_key="k").id
    monkeypatch.setattr(files.os, "close", close)
    with contextlib.suppress(durably.DurablyError, OSError):
        d.process_one()
    monkeypatch.undo()
    assert not armed
    run_dir = d._store.run_dir(first)
    assert not locks.held_here(os.path.join(run_dir, "lock"))
    assert not [p for p in locks._held if "/locks/x-" in p], locks._held
    assert d.get_run(first).status == "completed"  # type: ignore[union-attr]
    second = handle.trigger(Tag(n=1), concurrency_key="k").id
    assert d.process_one() is True
    assert d.get_run(second).status == "completed"  # type: ignore[union-attr]


def test_lock_directory_removed_under_a_running_instance(
        durably_factory: object, caplog: pytest.LogCaptureFixture) -> None:
    """L9: ``locks/`` is removed while an instance runs. A keyed trigger fails at once
    with an error naming the lock file and ENOENT (no hang); a keyed run is skipped with
    a warning; a run without keys still executes; once a new instance recreated
    ``locks/``, the first one works again."""
    d = durably_factory()  # type: ignore[operator]
    handle = d.register(durably.define_job(name="lockless", input=Tag, output=int,
                                           run=lambda step, p: step.run("s", lambda: p.n)))
    keyed = handle.trigger(Tag(n=1), concurrency_key="k").id
    shutil.rmtree(Path(d.root) / "locks")
    with pytest.raises(durably.StoreError) as info:
        handle.trigger(Tag(n=2), idempotency_key="i")
    assert os.strerror(errno.ENOENT) in str(info.value)
    assert "locks" in str(info.value)
    plain = handle.trigger(Tag(n=3)).id
    caplog.set_level("WARNING", logger="durably")
    d.process_until_idle()
    assert d.get_run(plain).status == "completed"  # type: ignore[union-attr]
    assert d.get_run(keyed).status == "pending"  # type: ignore[union-attr]
    assert any(keyed in r.getMessage() for r in caplog.records), caplog.text
    again = durably_factory()  # type: ignore[operator]
    again.register(durably.define_job(name="lockless", input=Tag, output=int,
                                      run=lambda step, p: step.run("s", lambda: p.n)))
    again._store.ensure_ready()
    assert handle.trigger(Tag(n=4), idempotency_key="i").disposition == "created"
    d.process_until_idle()
    assert d.get_run(keyed).status == "completed"  # type: ignore[union-attr]


def test_a_paused_owner_nobody_fences_is_not_taken_over_on_its_host_and_completes(
        tmp_path: Path, zygote: Zygote) -> None:
    """K6 control: worker A (lease 0.5 s) stops itself inside a step and stays stopped
    well past its lease. On its own host its record lock is still held, so no worker
    takes the run over (a stopped process is not a dead one); after SIGCONT A completes
    the run in generation 1 with every step its own (durably §93: an expired owner that
    nobody re-claimed may finish)."""
    root, work = tmp_path / "root", tmp_path / "work"
    work.mkdir()
    d = jobs.make(str(root), fsync=False)
    handle = d.get_job("fence")
    assert handle is not None
    run_id = handle.trigger(jobs.FenceIn(steps=3, stop_step=1, stop_phase="in")).id
    a = zygote.spawn("crashapps.jobs:fence_worker", root=str(root), workdir=str(work), who="A",
                     host=None, run_id=run_id, lease=0.5)
    try:
        def stopped() -> bool:
            with open(f"/proc/{a}/stat") as f:
                return f.read().rsplit(")", 1)[1].split()[0] == "T"

        poll(stopped, what="A stopped itself")
        state = d._store.load(run_id)
        assert state is not None
        poll(lambda: time.time() > d._store.lease_expiry(state) + 0.5, what="lease expired")
        assert d.process_one() is False  # A's lock is held on this host
        assert d.get_run(run_id).lease_generation == 1  # type: ignore[union-attr]
    finally:
        os.kill(a, signal.SIGCONT)
    assert zygote.wait(a) == 0, zygote.stderr()
    run = d.get_run(run_id)
    assert run is not None
    assert (run.status, run.lease_generation) == ("completed", 1)
    assert run.output == {"values": ["A-0", "A-1", "A-2"], "by": "A"}
    assert json.loads((work / "errors-A.json").read_text()) == []


def test_orphan_temp_files_are_swept_by_an_idle_worker(durably_factory: object) -> None:
    """C7: temp files and deleted-run leftovers a crash left in ``tmp/`` more than an hour
    ago are removed by an idle worker, also without ``retain_runs``; a young temp file
    (a publish in flight in another process) is left alone, and nothing in tmp/ ever
    reads as a run or a step."""
    d = durably_factory()  # type: ignore[operator]
    handle = d.register(durably.define_job(name="sweep", input=Tag, run=lambda step, p: None))
    run_id = handle.trigger(Tag()).id
    tmp = Path(d.root) / "tmp"
    old = time.time() - 7200
    (tmp / "123-deadbeef0000.tmp").write_bytes(b'{"v":1,"kind":"claim"}')
    trash = tmp / f"del-{run_id}-0000"
    (trash / "s.1").parent.mkdir()
    (trash / "s.1").write_bytes(b"{}")
    (tmp / "456-young.tmp").write_bytes(b"{}")
    for p in (tmp / "123-deadbeef0000.tmp", trash / "s.1", trash):
        os.utime(p, (old, old))
    assert d.process_until_idle() == 1
    assert sorted(os.listdir(tmp)) == ["456-young.tmp"]
    assert [r.id for r in d.get_runs()] == [run_id]
