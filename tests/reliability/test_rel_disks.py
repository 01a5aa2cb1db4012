"""A full disk and a read-only file system under a running worker (plan F3, F5).

Both need root (mounts). The worker is a real background worker (``Durably.start``): it
must report the fault, keep the runs' committed steps, never crash, and finish the work
once the fault is gone.
"""

from __future__ import annotations

import errno
import logging
import os
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import relapp
from relhelpers import HERE, REPO, child_env, need_root, poll, run_cmd, tmpfs

import durably
from durably._doctor import Doctor

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
        d = relapp.make(str(root), fsync=True, polling_interval=0.02)
        rec = Recorder(d)
        handle = d.get_job("rel-work")
        assert handle is not None
        d._store.ensure_ready()
        st = os.statvfs(mnt)
        ballast = mnt / "ballast"
        ballast.write_bytes(b"\0" * max(0, st.f_bavail * st.f_frsize - 10 * STEP_BYTES))
        run_id = handle.trigger(relapp.Work(tag="full", steps=24, size=STEP_BYTES)).id
        d.start()
        try:
            poll(lambda: any(os.strerror(errno.ENOSPC) in e for e in rec.errors), timeout=60,
                 what="ENOSPC reported")
            # Readers keep working on the full disk, and see only what was acknowledged.
            run = d.get_run(run_id)
            assert run is not None
            assert run.status in ("leased", "failed", "pending")
            done = {s.name for s in d.get_steps(run_id) if s.status == "completed"}
            assert 3 <= len(done) < 24
            assert not [p for p in Doctor(str(root)).check() if p.kind == "corrupt"]
            ballast.unlink()
            run = poll(lambda: (r := d.get_run(run_id)) is not None
                       and r.status in ("completed", "failed") and r, timeout=60, what="run ended")
            if run.status == "failed":  # the failure was recorded (else: resumed): retry it
                assert os.strerror(errno.ENOSPC) in (run.error or ""), run.error
                run_id = d.retrigger(run_id).id
                run = poll(lambda: (r := d.get_run(run_id)) is not None
                           and r.status == "completed" and r, timeout=60, what="retry completed")
            assert run.output == relapp.expected(24, "full")
            steps = [s for s in d.get_steps(run_id) if s.status == "completed"]
            assert [s.name for s in steps] == [f"step-{k}" for k in range(24)]
            assert all(s.output["k"] == k for k, s in enumerate(steps))  # type: ignore[index]
            assert rec.reruns == []
            fresh = handle.trigger(relapp.Work(tag="after", steps=2)).id
            poll(lambda: (r := d.get_run(fresh)) is not None and r.status == "completed",
                 what="fresh run completed")
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
        d = relapp.make(str(root), fsync=True, polling_interval=0.02)
        handle = d.get_job("rel-work")
        assert handle is not None
        run_id = handle.trigger(relapp.Work(tag="ro", steps=4)).id
        holder = subprocess.Popen(
            [sys.executable, str(HERE / "relapp.py"), "hold", str(root), "A", str(log), "", "30",
             str(gate)], env=child_env(), cwd=str(REPO), stderr=subprocess.PIPE)
        try:
            poll(lambda: log.exists() and "blocked" in log.read_text(), what="holder in step 1")
            busy = subprocess.run(["mount", "-o", "remount,ro", str(mnt)], capture_output=True,
                                  timeout=60, check=False)
            if busy.returncode == 0:  # a kernel that allows it: the holder's commit must fail
                gate.touch()
                holder.wait(timeout=60)
            else:
                assert b"busy" in busy.stderr.lower(), busy.stderr
                holder.send_signal(signal.SIGKILL)
                holder.wait(timeout=60)
                # The dead holder's journal descriptor is released asynchronously.
                poll(lambda: subprocess.run(["mount", "-o", "remount,ro", str(mnt)],
                                            capture_output=True, timeout=60,
                                            check=False).returncode == 0,
                     what="remount,ro once the holder is gone")
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
                handle.trigger(relapp.Work(tag="refused"))
            relapp.STEP_LOG = str(log)
            with caplog.at_level(logging.WARNING, logger="durably"):
                assert d.process_one() is False
            assert any(os.strerror(errno.EROFS) in r.getMessage() for r in caplog.records), \
                caplog.records
            d.start()  # a worker on a read-only root keeps polling without crashing
            run_cmd("mount", "-o", "remount,rw", str(mnt))
            run = poll(lambda: (r := d.get_run(run_id)) is not None and r.status == "completed"
                       and r, timeout=60, what="run resumed after remount,rw")
            assert run.output == relapp.expected(4, "ro")
            counts = _exec_counts(log)
            assert counts[(run_id, 0)] == 1, counts  # committed before the fault: never again
            assert all(counts[(run_id, k)] >= 1 for k in range(4)), counts
        finally:
            relapp.STEP_LOG = None
            d.stop(timeout=30)
