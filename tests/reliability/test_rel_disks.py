"""A full disk, a file system out of inodes and a read-only file system under a running
worker (plan cases F3, F4, F5 of docs/reliability.md).

All need root (mounts). The worker is a real background worker (``Durably.start``): it
must report the fault, keep the runs' committed steps, never crash, and finish the work
once the fault is gone.
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from apps import fault_server, logged_steps
from apps.children import REPO_ROOT, child_env, poll

import durably
from durably._doctor import Doctor
from durably._durably import runtime_of

from .relhelpers import need_root, run_cmd, tmpfs

STEP_BYTES = 64 * 1024


class Recorder:
    """Executions and acknowledgements of steps, to check acknowledged steps never re-run."""

    def __init__(self, d: durably.Durably) -> None:
        self.acked: set[tuple[str, str]] = set()
        self.reruns: list[tuple[str, str]] = []
        self.errors: list[str] = []
        d.on("step:start", self._start)
        d.on("step:complete", lambda ev: self.acked.add((ev.run_id, ev.step_name)))
        d.on("step:fail", lambda ev: self.errors.append(ev.error))
        d.on("run:fail", lambda ev: self.errors.append(ev.error))
        d.on("worker:error", lambda ev: self.errors.append(ev.error))

    def _start(self, ev: Any) -> None:
        if (ev.run_id, ev.step_name) in self.acked:
            self.reruns.append((ev.run_id, ev.step_name))


def test_disk_full_mid_run_then_recovers(tmp_path: Path) -> None:
    """F3: a 4 MiB tmpfs fills up during a run of 64 KiB steps. The failure names ENOSPC,
    acknowledged steps are kept and never run again, readers keep working, and once space
    is freed the same worker finishes the run and serves a new one."""
    need_root("a size-limited tmpfs")
    with tmpfs(tmp_path / "mnt", "size=4m,mode=0700") as mnt:
        root = mnt / "root"
        d = fault_server.make(str(root), fsync=True, polling_interval=0.02)
        rec = Recorder(d)
        handle = d.get_job("rel-work")
        assert handle is not None
        runtime_of(d).store.ensure_ready()
        st = os.statvfs(mnt)
        ballast = mnt / "ballast"
        ballast.write_bytes(b"\0" * max(0, st.f_bavail * st.f_frsize - 10 * STEP_BYTES))
        run_id = handle.trigger(fault_server.Work(tag="full", steps=24, size=STEP_BYTES)).id
        d.start()
        try:
            poll(
                lambda: any(os.strerror(errno.ENOSPC) in e for e in rec.errors),
                timeout=60,
                what="ENOSPC reported",
            )
            # Readers keep working on the full disk, and see only what was acknowledged.
            run = d.get_run(run_id)
            assert run is not None
            assert run.status in ("leased", "failed", "pending")
            done = {s.name for s in d.get_steps(run_id) if s.status == "completed"}
            assert 3 <= len(done) < 24
            assert not [p for p in Doctor(str(root)).check() if p.kind == "corrupt"]
            ballast.unlink()
            run = poll(
                lambda: (r := d.get_run(run_id)) is not None and r.status in ("completed", "failed") and r,
                timeout=60,
                what="run ended",
            )
            if run.status == "failed":  # the failure was recorded (else: resumed): retry it
                assert os.strerror(errno.ENOSPC) in (run.error or ""), run.error
                run_id = d.retrigger(run_id).id
                run = poll(
                    lambda: (r := d.get_run(run_id)) is not None and r.status == "completed" and r,
                    timeout=60,
                    what="retry completed",
                )
            assert run.output == fault_server.expected(24, "full")
            steps = [s for s in d.get_steps(run_id) if s.status == "completed"]
            assert [s.name for s in steps] == [f"step-{k}" for k in range(24)]
            assert all(s.output["k"] == k for k, s in enumerate(steps))
            assert rec.reruns == []
            fresh = handle.trigger(fault_server.Work(tag="after", steps=2)).id
            poll(
                lambda: (r := d.get_run(fresh)) is not None and r.status == "completed",
                what="fresh run completed",
            )
        finally:
            d.stop(timeout=30)


def _exec_counts(log: Path) -> Counter[tuple[str, int]]:
    counts: Counter[tuple[str, int]] = Counter()
    if log.exists():
        for line in log.read_text().splitlines():
            parts = line.split()
            if len(parts) == 4 and parts[2].isdigit():
                counts[(parts[1], int(parts[2]))] += 1
    return counts


def test_readonly_remount_mid_run(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """F5: the file system goes read-only while a run is half done. Linux refuses
    ``remount,ro`` while the executing worker holds its journal open for writing
    (EBUSY), so the remount happens once that worker is gone (SIGKILL). Then: readers
    work, a trigger and a claim fail naming EROFS, the worker keeps running; after
    ``remount,rw`` it resumes the run without re-running its committed step."""
    need_root("tmpfs remounts")
    with tmpfs(tmp_path / "mnt", "size=16m,mode=0700") as mnt:
        root = mnt / "root"
        log = tmp_path / "exec.log"
        gate = tmp_path / "gate"  # never created: the holder blocks in step 1
        d = fault_server.make(str(root), fsync=True, polling_interval=0.02)
        handle = d.get_job("rel-work")
        assert handle is not None
        run_id = handle.trigger(fault_server.Work(tag="ro", steps=4)).id
        holder = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "apps.fault_server",
                "hold",
                str(root),
                "A",
                str(log),
                "",
                "30",
                str(gate),
            ],
            env=child_env(),
            cwd=str(REPO_ROOT),
            stderr=subprocess.PIPE,
        )
        try:
            poll(lambda: log.exists() and "blocked" in log.read_text(), what="holder in step 1")
            busy = subprocess.run(
                ["mount", "-o", "remount,ro", str(mnt)], capture_output=True, timeout=60, check=False
            )
            if busy.returncode == 0:  # a kernel that allows it: the holder's commit must fail
                gate.touch()
                holder.wait(timeout=60)
            else:
                assert b"busy" in busy.stderr.lower(), busy.stderr
                holder.send_signal(signal.SIGKILL)
                holder.wait(timeout=60)
                # The dead holder's journal descriptor is released asynchronously.
                poll(
                    lambda: (
                        subprocess.run(
                            ["mount", "-o", "remount,ro", str(mnt)],
                            capture_output=True,
                            timeout=60,
                            check=False,
                        ).returncode
                        == 0
                    ),
                    what="remount,ro once the holder is gone",
                )
        finally:
            if holder.poll() is None:
                holder.kill()
                holder.wait()
            assert holder.stderr is not None
            holder.stderr.close()
        try:
            # Readers work and see the committed step.
            run = d.get_run(run_id)
            assert run is not None
            assert run.status == "leased"
            assert [s.name for s in d.get_steps(run_id) if s.status == "completed"] == ["step-0"]
            assert [r.id for r in d.get_runs()] == [run_id]
            assert not [p for p in Doctor(str(root)).check() if p.kind == "corrupt"]
            with pytest.raises(durably.StoreError, match=os.strerror(errno.EROFS)):
                handle.trigger(fault_server.Work(tag="refused"))
            fault_server.STEP_LOG = str(log)
            reported: list[str] = []
            d.on("worker:error", lambda ev: reported.append(ev.error))
            with caplog.at_level(logging.WARNING, logger="durably"):
                assert d.process_one() is False
            said = reported + [r.getMessage() for r in caplog.records]
            assert any(os.strerror(errno.EROFS) in m for m in said), said  # a store failure, reported
            d.start()  # a worker on a read-only root keeps polling without crashing
            run_cmd("mount", "-o", "remount,rw", str(mnt))
            run = poll(
                lambda: (r := d.get_run(run_id)) is not None and r.status == "completed" and r,
                timeout=60,
                what="run resumed after remount,rw",
            )
            assert run.output == fault_server.expected(4, "ro")
            counts = _exec_counts(log)
            assert counts[(run_id, 0)] == 1, counts  # committed before the fault: never again
            assert all(counts[(run_id, k)] >= 1 for k in range(4)), counts
        finally:
            fault_server.STEP_LOG = None
            d.stop(timeout=30)


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
        logged_steps.WORKDIR, logged_steps.WHO, logged_steps.GATE_WHO = str(work), "me", "me"
        d = logged_steps.make(str(root), fsync=True)
        handle = d.get_job("logged-steps")
        assert handle is not None
        errors: list[str] = []
        d.on("worker:error", lambda ev: errors.append(ev.error))
        try:
            run_id = handle.trigger(logged_steps.StepsIn(steps=4, hold=True)).id
            d.start()
            poll(
                lambda: (
                    "blocked" in (work / "exec.log").read_text() if (work / "exec.log").exists() else False
                ),
                what="step 1 running",
            )
            ballast = mnt / "ballast"
            assert _fill_inodes(ballast) == errno.ENOSPC
            assert os.statvfs(mnt).f_favail == 0
            with pytest.raises(durably.StoreError) as info:
                handle.trigger(logged_steps.StepsIn(steps=1))
            assert os.strerror(errno.ENOSPC) in str(info.value)
            assert "no free inodes" in str(info.value), info.value
            run = d.get_run(run_id)  # readers need no inode
            assert run is not None
            assert run.status == "leased"
            assert [s.name for s in d.get_steps(run_id) if s.status == "completed"] == ["s0"]
            (work / "gate").touch()  # the held step returns; s1..s3 append; the end cannot
            poll(lambda: any("no free inodes" in e for e in errors), timeout=60, what="end refused")
            assert [s.name for s in d.get_steps(run_id) if s.status == "completed"] == [
                "s0",
                "s1",
                "s2",
                "s3",
            ]
            assert d.get_run(run_id).status == "leased"  # type: ignore[union-attr]
            shutil.rmtree(ballast)
            run = poll(
                lambda: (r := d.get_run(run_id)) is not None and r.status == "completed" and r,
                timeout=60,
                what="run completed once inodes were freed",
            )
            assert run.output == logged_steps.expected(4)
            counts = Counter(k for _, rid, k in logged_steps.executions(work) if rid == run_id)
            assert counts == Counter({0: 1, 1: 1, 2: 1, 3: 1}), counts
            fresh = handle.trigger(logged_steps.StepsIn(steps=2)).id
            poll(
                lambda: (r := d.get_run(fresh)) is not None and r.status == "completed",
                timeout=60,
                what="a new run completed",
            )
        finally:
            d.stop(timeout=30)
            logged_steps.WORKDIR = logged_steps.GATE_WHO = ""
