"""The nightly example: a schedule fires a tick whose run fails at its last step; after
the fix, `resume` replays the fetched pages and runs only the publish step again."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from durably import Durably

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "nightly.py"

pytestmark = pytest.mark.slow


def run_example(cwd: Path, *args: str, up: bool = False) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("DURABLY_ROOT", "WAREHOUSE_UP")}
    if up:  # and the schedule back at 02:30 in Berlin, so no tick falls while resuming
        env["WAREHOUSE_UP"] = "1"
    else:
        env["NIGHTLY_CRON"] = "* * * * * *"  # every second, not at 02:30
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(EXAMPLE.parents[1]), env.get("PYTHONPATH")) if p)
    return subprocess.run(
        [sys.executable, str(EXAMPLE), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_a_tick_fails_and_resuming_it_after_the_fix_fetches_nothing_again(tmp_path: Path) -> None:
    first = run_example(tmp_path)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "failed: ConnectionError: the warehouse API is down" in first.stdout
    assert first.stdout.count("fetching page") == 3
    (schedule,) = Durably(tmp_path / ".durably").get_schedules()
    assert schedule.name == "nightly-import"
    assert schedule.last_run_id is not None
    run = Durably(tmp_path / ".durably").get_run(schedule.last_run_id)
    assert run is not None
    assert run.idempotency_key is not None
    assert run.idempotency_key.startswith("nightly-import@")
    assert run.status == "failed"

    second = run_example(tmp_path, "resume", schedule.last_run_id, up=True)
    assert second.returncode == 0, second.stdout + second.stderr
    assert "completed: 9" in second.stdout
    assert "fetching page" not in second.stdout  # the three pages were replayed
