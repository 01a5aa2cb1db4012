"""Worker heartbeats (docs/workers.md): each `durably worker` process keeps a record in
`workers/`; `durably workers` lists the live ones; `trigger --wait` warns when no live
worker serves the job, and Ctrl-C while waiting says the run goes on. Real processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from cli_harness import APP, TESTS, Worker, durably_cli, env, wait_until

from durably import Durably, RunStatus
from durably._locks import HOST
from durably._records import iso_epoch, now_iso
from durably._workers import STALE_AFTER, live_workers, record_name

pytestmark = pytest.mark.slow


def _listed(root: Path) -> list[dict[str, Any]]:
    result = durably_cli("workers", "--json", "--root", root)
    assert result.returncode == 0, result.stderr
    listed: list[dict[str, Any]] = json.loads(result.stdout)
    return listed


def _records(root: Path) -> list[str]:
    folder = root / "workers"
    return sorted(n for n in os.listdir(folder) if n.endswith(".json")) if folder.exists() else []


class TestWorkersList:
    def test_each_worker_process_is_listed_with_its_jobs_and_runs_in_flight(
        self, root: Path, tmp_path: Path
    ) -> None:
        """Two worker processes: two records (host, pid, jobs, started); a run in flight
        shows under the process that executes it."""
        worker = Worker(root, processes=2)
        try:
            pids = worker.ready(2)
            listed = _listed(root)
            assert sorted(w["pid"] for w in listed) == sorted(pids)
            assert {w["host"] for w in listed} == {HOST}
            assert all("gated" in w["jobs"] and w["running"] == [] for w in listed)
            assert all(w["started_at"] for w in listed)

            payload = json.dumps({"workdir": str(tmp_path), "name": "g"})
            run_id = durably_cli("trigger", APP, "gated", "--input", payload, "--root", root).stdout.strip()
            wait_until(lambda: any(w["running"] == [run_id] for w in _listed(root)))
            text = durably_cli("workers", "--root", root).stdout
            assert run_id in text
            assert text.splitlines()[0].split() == ["HOST", "PID", "STARTED", "SEEN", "RUNNING", "JOBS"]
            (tmp_path / "open-g").write_text("")
            wait_until(lambda: all(w["running"] == [] for w in _listed(root)))
        finally:
            worker.kill()

    def test_a_clean_stop_removes_the_records(self, root: Path) -> None:
        """SIGTERM: the processes finish and remove their records; nothing is listed."""
        worker = Worker(root, processes=2)
        worker.ready(2)
        assert len(_records(root)) == 2
        worker.signal(signal.SIGTERM)
        assert worker.wait() == 0
        assert os.listdir(root / "workers") == []  # records and doorbells alike
        result = durably_cli("workers", "--root", root)
        assert (result.returncode, result.stdout, result.stderr.strip()) == (0, "", "no live workers")

    def test_workers_killed_with_sigkill_are_not_listed(self, root: Path) -> None:
        """SIGKILL of the worker group leaves its records behind, but dead pids are not listed."""
        worker = Worker(root, processes=2)
        worker.ready(2)
        worker.kill()
        assert len(_records(root)) == 2
        assert _listed(root) == []
        assert durably_cli("doctor", "--root", root).returncode == 0
        again = Worker(root)  # the next worker removes the records of the dead ones
        try:
            (pid,) = again.ready()
            assert [w["pid"] for w in _listed(root)] == [pid]
            assert len(_records(root)) == 1
        finally:
            again.kill()

    def test_a_record_not_refreshed_for_a_while_is_stale(self, root: Path) -> None:
        """A record of another host is listed while it is refreshed, not once it is old."""
        folder = root / "workers"
        folder.mkdir(mode=0o700, parents=True)

        def plant(at: str) -> None:
            body = {"v": 1, "host": "elsewhere", "pid": 1, "jobs": ["add"], "running": []}
            path = folder / record_name("elsewhere", 1)
            path.write_text(json.dumps({**body, "started_at": at, "at": at}))
            os.chmod(path, 0o600)

        plant(now_iso())
        assert [w.host for w in live_workers(str(root))] == ["elsewhere"]
        plant(iso_epoch(time.time() - STALE_AFTER - 5))
        assert live_workers(str(root)) == []


class _Waiter:
    """`durably trigger --wait` in its own process, its stderr read line by line."""

    def __init__(self, root: Path, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "durably", "trigger", APP, *args, "--wait", "--root", str(root)],
            cwd=TESTS,
            env=env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: list[str] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        with self.proc.stderr:
            for line in self.proc.stderr:
                self.lines.append(line.rstrip("\n"))

    def close(self) -> None:
        """Stop the process if it still runs, and close its pipes."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(30)
        self.reader.join(10)
        assert self.proc.stdout is not None
        self.proc.stdout.close()

    def has(self, needle: str) -> bool:
        return any(needle in line for line in list(self.lines))


class TestTriggerWait:
    def test_wait_without_a_worker_warns_and_ctrl_c_says_the_run_goes_on(self, root: Path) -> None:
        """No live worker serves the job: `--wait` warns; Ctrl-C ends the wait with exit 130
        and a line naming how to follow the run, which stays pending."""
        waiter = _Waiter(root, "add", "--input", '{"a": 1, "b": 2}')
        try:
            wait_until(lambda: waiter.has("no live worker serves job 'add'"))
            assert waiter.proc.stdout is not None
            run_id = waiter.proc.stdout.readline().strip()
            waiter.proc.send_signal(signal.SIGINT)
            assert waiter.proc.wait(30) == 130
            wait_until(lambda: waiter.has("goes on"))
            assert waiter.has(f"durably logs {run_id} --follow")
            run = Durably(root).get_run(run_id)
            assert run is not None
            assert run.status is RunStatus.PENDING
        finally:
            waiter.close()

    def test_wait_with_a_live_worker_does_not_warn(self, root: Path, tmp_path: Path) -> None:
        """A live worker serves the job: no warning, even while the run waits its turn."""
        worker = Worker(root)
        try:
            worker.ready()
            payload = json.dumps({"workdir": str(tmp_path), "name": "busy"})
            durably_cli("trigger", APP, "gated", "--input", payload, "--root", root)
            wait_until((tmp_path / "started-busy").exists)  # the only process is busy
            waiter = _Waiter(root, "add", "--input", '{"a": 1, "b": 2}')
            # the wait looks for a worker after a few seconds: once it has (the run still
            # pending behind the busy one), let the worker go on
            wait_until(lambda: _pending_for(root, 4.0))
            (tmp_path / "open-busy").write_text("")
            try:
                assert waiter.proc.wait(60) == 0
                assert not waiter.has("no live worker")
            finally:
                waiter.close()
        finally:
            worker.kill()


def _pending_for(root: Path, seconds: float) -> bool:
    """Whether the newest run is still pending `seconds` after it was created."""
    d = Durably(root)
    runs = d.get_runs(limit=1)
    return (
        bool(runs)
        and runs[0].status is RunStatus.PENDING
        and (datetime.now(UTC) - runs[0].created_at).total_seconds() > seconds
    )
