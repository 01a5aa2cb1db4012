"""Record locks: never inherited, never unlinked, shared by threads, released on every
path (plan cases L2, L3, L7 and L9 of docs/reliability.md).

- a job's long-lived child started with ``subprocess`` (``close_fds=False``) inherits no
  lock: its worker SIGKILLed, the run resumes at once on the same host (lease: one hour);
- lock files are never unlinked nor replaced while four processes contend on trigger,
  claim and execution locks, and runs of one key never overlap;
- threads of one process calling ``process_until_idle`` together run each step once;
- a closed journal whose ``close`` reports EIO (NFS reports deferred write errors there)
  still releases the run's locks;
- ``locks/`` removed under a running instance: clear errors, no hang, work resumes.

Two hosts, whose record locks do not meet, are in ``test_rel_hosts.py``; a lock released
by the kernel when its owner dies, in ``tests/test_invariants.py`` (invariant 6).
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path

import pytest
from apps import crash_jobs
from apps.children import Zygote
from helpers import run_dir_of, status_of
from pydantic import BaseModel

import durably
from durably import _locks as locks
from durably._durably import runtime_of

Factory = Callable[..., durably.Durably]
STATS: dict[str, int] = {"contenders": 0, "lock_files_watched": 0, "inode_samples": 0, "keyed_runs_raced": 0}


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except FileNotFoundError:
        return False


def test_a_jobs_subprocess_inherits_no_lock(
    tmp_path: Path, zygote: Zygote, monkeypatch: pytest.MonkeyPatch
) -> None:
    """L2: a step starts a long-lived child with ``subprocess.Popen(close_fds=False)``,
    then its worker is SIGKILLed. The child lives on, holds no descriptor of the root
    (every one durably opens is close-on-exec) and no lock (record locks belong to the
    process), so a worker on the same host claims the run at once although its lease
    has an hour to go, and completes it in generation 2."""
    root, work = tmp_path / "root", tmp_path / "work"
    work.mkdir()
    d = crash_jobs.make(str(root), lease_duration=3600.0)
    handle = d.get_job("forker")
    assert handle is not None
    run_id = handle.trigger(crash_jobs.OrphanIn(how="subprocess")).id
    assert zygote.run("apps.crash_jobs:die_holding_run", root=str(root), workdir=str(work)) == -9
    child = int((work / "grandchild").read_text())
    try:
        assert _alive(child)
        held = [os.readlink(f"/proc/{child}/fd/{fd}") for fd in os.listdir(f"/proc/{child}/fd")]
        assert not [p for p in held if p.startswith(str(root))], held
        assert not locks.is_locked_elsewhere(
            os.path.join(run_dir_of(d, run_id), "lock"), root=runtime_of(d).store.root
        )
        run = d.get_run(run_id)
        assert run is not None
        assert run.status == "leased"
        monkeypatch.setattr(crash_jobs, "WHO", "resumer")
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
    runtime_of(crash_jobs.make(str(root), fsync=False)).store.ensure_ready()
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
        pids = [
            zygote.spawn(
                "apps.crash_jobs:contend",
                group="contenders",
                root=str(root),
                workdir=str(work),
                who=f"c{i}",
                rounds=ROUNDS,
            )
            for i in range(CONTENDERS)
        ]
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
    d = crash_jobs.make(str(root), fsync=False)
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


def test_threads_of_one_process_execute_each_step_once(durably_factory: Factory) -> None:
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

        def one(k: int) -> int:
            ran.update([(payload.n, k)])
            return k

        try:
            for k in range(3):
                step.run(f"s{k}", partial(one, k))
                time.sleep(0.001)
        finally:
            with guard:
                active[key] -= 1
        return payload.n

    d = durably_factory(max_concurrent_runs=4)
    handles = [
        d.register(durably.define_job(name=f"threads-{j}", input=Tag, output=int, run=job)) for j in range(8)
    ]  # one pending run per (job, key): (n % 8, n % 3) differ
    ids = [
        handles[n % 8].trigger(Tag(n=n), concurrency_key=f"k{n % 3}" if n % 2 else None).id for n in range(24)
    ]
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
    assert [status_of(d, i) for i in ids] == ["completed"] * 24
    assert ran == Counter({(n, k): 1 for n in range(24) for k in range(3)})
    assert overlaps == []


def test_a_close_that_reports_eio_still_releases_the_locks(
    durably_factory: Factory, monkeypatch: pytest.MonkeyPatch
) -> None:
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
            # The file store's lease (a Claim) holds the journal: its fd is closed at release.
            armed["fd"] = step._ex.lease._journal._fd  # type: ignore[attr-defined]
        return payload.n

    d = durably_factory()
    handle = d.register(durably.define_job(name="closer", input=Tag, output=int, run=job))
    first = handle.trigger(Tag(n=0), concurrency_key="k").id
    monkeypatch.setattr(os, "close", close)  # durably._files calls os.close at call time
    with contextlib.suppress(durably.DurablyError, OSError):
        d.process_one()
    monkeypatch.undo()
    assert not armed
    run_dir = run_dir_of(d, first)
    assert not locks.held_here(os.path.join(run_dir, "lock"))
    assert not [p for p in locks._held if "/locks/x-" in p], locks._held
    assert status_of(d, first) == "completed"
    second = handle.trigger(Tag(n=1), concurrency_key="k").id
    assert d.process_one() is True
    assert status_of(d, second) == "completed"


def test_lock_directory_removed_under_a_running_instance(
    durably_factory: Factory, caplog: pytest.LogCaptureFixture
) -> None:
    """L9: ``locks/`` is removed while an instance runs. A keyed trigger fails at once
    with an error naming the lock file and ENOENT (no hang); a keyed run is skipped with
    a warning; a run without keys still executes; once a new instance recreated
    ``locks/``, the first one works again."""
    d = durably_factory()
    handle = d.register(
        durably.define_job(
            name="lockless", input=Tag, output=int, run=lambda step, p: step.run("s", lambda: p.n)
        )
    )
    keyed = handle.trigger(Tag(n=1), concurrency_key="k").id
    shutil.rmtree(Path(d.root) / "locks")
    with pytest.raises(durably.StoreError) as info:
        handle.trigger(Tag(n=2), idempotency_key="i")
    assert os.strerror(errno.ENOENT) in str(info.value)
    assert "locks" in str(info.value)
    plain = handle.trigger(Tag(n=3)).id
    caplog.set_level("WARNING", logger="durably")
    d.process_until_idle()
    assert status_of(d, plain) == "completed"
    assert status_of(d, keyed) == "pending"
    assert any(keyed in r.getMessage() for r in caplog.records), caplog.text
    again = durably_factory()
    again.register(
        durably.define_job(
            name="lockless", input=Tag, output=int, run=lambda step, p: step.run("s", lambda: p.n)
        )
    )
    runtime_of(again).store.ensure_ready()
    assert handle.trigger(Tag(n=4), idempotency_key="i").disposition == "created"
    d.process_until_idle()
    assert status_of(d, keyed) == "completed"
