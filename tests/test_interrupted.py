"""A run whose worker died reads as interrupted (docs/concepts.md): `durably runs`,
`show` and `doctor` say so, and its clock stops where its owner did. Real processes:
a `durably worker` process group is SIGKILLed in the middle of a step."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cli_harness import APP, Worker, durably_cli, wait_until

from durably import Durably, RunStatus


def _interrupted_run(root: Path, tmp_path: Path) -> str:
    """A `gated` run whose worker group was SIGKILLed in its `wait` step."""
    workdir = tmp_path / "work"
    workdir.mkdir()
    worker = Worker(root)
    try:
        worker.ready()
        payload = json.dumps({"workdir": str(workdir), "name": "g"})
        result = durably_cli("trigger", APP, "gated", "--input", payload, "--root", root)
        assert result.returncode == 0, result.stderr
        run_id = result.stdout.strip()
        wait_until((workdir / "started-g").exists)
    finally:
        worker.kill()
    return run_id


@pytest.mark.slow
class TestInterruptedRuns:
    def test_runs_show_and_doctor_say_interrupted(self, root: Path, tmp_path: Path) -> None:
        """After SIGKILL of the worker group, the run's status stays `leased` in the API and
        reads `interrupted` in `runs`, `show` and `doctor`."""
        run_id = _interrupted_run(root, tmp_path)

        run = Durably(root).get_run(run_id)
        assert run is not None
        assert run.status is RunStatus.LEASED
        assert run.interrupted

        listed = durably_cli("runs", "--root", root)
        (line,) = [line for line in listed.stdout.splitlines() if line.startswith(run_id)]
        assert line.split()[2] == "interrupted"

        shown = durably_cli("show", run_id, "--root", root)
        assert shown.stdout.splitlines()[0].endswith("interrupted")
        assert "a worker resumes it" in shown.stdout
        assert "interrupted: the worker stopped during this step" in shown.stdout

        doctor = durably_cli("doctor", "--root", root)
        assert f"interrupted     run {run_id}" in doctor.stdout
        assert "1 run(s) interrupted (waiting for a worker)" in doctor.stdout
        report = json.loads(durably_cli("doctor", "--json", "--root", root).stdout)
        assert [entry["run"] for entry in report["interrupted"]] == [run_id]

    def test_the_clock_of_an_interrupted_run_stops_at_its_owners_last_sign_of_life(
        self, root: Path, tmp_path: Path
    ) -> None:
        """The run's duration and its step's end are the owner's last heartbeat, not now."""
        run_id = _interrupted_run(root, tmp_path)
        d = Durably(root)

        first = durably_cli("show", run_id, "--json", "--root", root)
        data = json.loads(first.stdout)
        (wait_step,) = [s for s in data["steps"] if s["name"] == "wait"]
        assert wait_step["status"] == "running"
        assert wait_step["completed_at"] is not None
        assert wait_step["duration"] is not None
        run = d.get_run(run_id)
        assert run is not None

        def duration() -> str:
            listed = durably_cli("runs", "--root", root).stdout
            (line,) = [line for line in listed.splitlines() if line.startswith(run_id)]
            return line.split()[-1]

        before = duration()
        # a clock that kept counting would show more once two seconds more have passed
        wait_until(lambda: (datetime.now(UTC) - run.updated_at).total_seconds() > 2.0)
        assert duration() == before
        again = json.loads(durably_cli("show", run_id, "--json", "--root", root).stdout)
        assert [s["duration"] for s in again["steps"]] == [s["duration"] for s in data["steps"]]

    def test_a_live_worker_resumes_an_interrupted_run(self, root: Path, tmp_path: Path) -> None:
        """An interrupted run is not interrupted any more once a worker resumes it."""
        run_id = _interrupted_run(root, tmp_path)
        (tmp_path / "work" / "open-g").write_text("")
        worker = Worker(root)
        try:
            worker.ready()
            d = Durably(root)
            run = d.wait_for_run(run_id, timeout=60)
            assert run.status is RunStatus.COMPLETED
            assert not run.interrupted
        finally:
            worker.kill()
