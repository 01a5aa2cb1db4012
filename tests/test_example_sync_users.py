"""The seed example crashes its process once, and the next invocation resumes the run."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "sync_users.py"

pytestmark = pytest.mark.slow


def run_example(cwd: Path, root: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "DURABLY_ROOT"}
    if root is not None:
        env["DURABLY_ROOT"] = str(root)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(EXAMPLE.parents[1]), env.get("PYTHONPATH")) if p)
    return subprocess.run(
        [sys.executable, str(EXAMPLE)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


class TestSyncUsersExample:
    def test_first_run_crashes_and_second_run_resumes_from_checkpoints(self, tmp_path: Path) -> None:
        """Invocation 1 dies in u4's step; invocation 2 replays 4 steps and completes."""
        first = run_example(tmp_path)
        assert first.returncode == 1, first.stdout + first.stderr
        assert "created" in first.stdout
        assert "api: GET /orgs/org_123/users" in first.stdout
        for user in ("u1", "u2", "u3"):
            assert f"{user} synced now" in first.stdout
        assert "Crashed mid-run" in first.stdout
        assert "output:" not in first.stdout
        assert (tmp_path / ".durably").is_dir()  # the default root, in the working dir

        second = run_example(tmp_path)
        assert second.returncode == 0, second.stdout + second.stderr
        assert "resumed" in second.stdout
        assert "api: GET" not in second.stdout  # fetch-users was replayed, not re-called
        for user in ("u1", "u2", "u3"):
            assert f"{user} replayed" in second.stdout
        # u4's step was in flight during the crash: at-least-once, so it ran again.
        assert "u4 synced now" in second.stdout
        assert "u6 synced now" in second.stdout
        assert "resumed: 4 steps replayed from checkpoints, 3 run now" in second.stdout
        assert 'output: {"synced_count":5,"errors":["u5: invalid email \'not-an-email\'"]}' in second.stdout

    def test_a_third_run_finds_the_run_completed(self, tmp_path: Path) -> None:
        """Once completed, the idempotent trigger returns the finished run and runs nothing."""
        run_example(tmp_path)
        run_example(tmp_path)
        third = run_example(tmp_path)
        assert third.returncode == 0, third.stdout + third.stderr
        assert "already completed" in third.stdout
        assert "synced now" not in third.stdout
        assert "replayed" not in third.stdout
        assert '"synced_count":5' in third.stdout

    def test_durably_root_env_var_chooses_the_root(self, tmp_path: Path) -> None:
        """With $DURABLY_ROOT set, the runs and the crash marker live there."""
        root = tmp_path / "elsewhere"
        first = run_example(tmp_path, root=root)
        assert first.returncode == 1, first.stdout + first.stderr
        assert root.is_dir()
        assert not (tmp_path / ".durably").exists()
        second = run_example(tmp_path, root=root)
        assert second.returncode == 0, second.stdout + second.stderr
        assert "resumed: 4 steps replayed" in second.stdout
