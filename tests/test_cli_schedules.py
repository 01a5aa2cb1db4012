"""`durably schedules` and `durably schedule pause|resume|delete` (SPEC §10), as a user
runs them: a real subprocess over a root whose schedule another process stored."""

from __future__ import annotations

import json
from pathlib import Path

from cli_harness import durably_cli
from test_schedules import START, In, sync

from durably import Durably
from durably.testing import ManualClock


def stored(root: Path, clock: ManualClock | None = None) -> Durably:
    d = Durably(root, jobs=[sync], clock=clock or ManualClock(START), fsync=False)
    d.schedule("nightly-sync", sync, "30 2 * * *", input=In(org="o1"), timezone="Europe/Berlin")
    return d


def test_the_table_lists_each_schedule(tmp_path: Path) -> None:
    stored(tmp_path)
    out = durably_cli("schedules", "--root", tmp_path)
    assert out.returncode == 0, out.stderr
    head, row = out.stdout.splitlines()
    assert head.split() == [
        "NAME",
        "JOB",
        "CRON",
        "TIMEZONE",
        "NEXT",
        "RUN",
        "LAST",
        "RUN",
        "STATUS",
        "PAUSED",
    ]
    assert row.startswith("nightly-sync  sync  30 2 * * *  Europe/Berlin")
    assert row.endswith("no")


def test_json_has_every_field_and_the_last_runs_status(tmp_path: Path) -> None:
    clock = ManualClock(START)
    d = stored(tmp_path, clock)
    clock.advance(86400)
    d.process_until_idle()
    out = durably_cli("schedules", "--root", tmp_path, "--json")
    (item,) = json.loads(out.stdout)
    assert item["name"] == "nightly-sync"
    assert item["timezone"] == "Europe/Berlin"
    assert item["input"] == {"org": "o1"}
    assert item["last_run_at"] == "2026-01-01T01:30:00+00:00"
    assert item["last_run_status"] == "completed"
    assert item["paused"] is False


def test_pause_resume_and_delete(tmp_path: Path) -> None:
    stored(tmp_path)
    assert (
        durably_cli("schedule", "pause", "nightly-sync", "--root", tmp_path).stdout == "paused nightly-sync\n"
    )
    (item,) = json.loads(durably_cli("schedules", "--root", tmp_path, "--json").stdout)
    assert item["paused"] is True
    assert item["next_run_at"] is None
    assert "paused" in durably_cli("schedules", "--root", tmp_path).stdout.splitlines()[1]
    assert durably_cli("schedule", "resume", "nightly-sync", "--root", tmp_path).returncode == 0
    (item,) = json.loads(durably_cli("schedules", "--root", tmp_path, "--json").stdout)
    assert item["paused"] is False
    assert durably_cli("schedule", "delete", "nightly-sync", "--root", tmp_path).returncode == 0
    out = durably_cli("schedules", "--root", tmp_path)
    assert out.stdout == ""
    assert out.stderr == "no schedules\n"


def test_an_unknown_name_is_one_line_and_exit_1(tmp_path: Path) -> None:
    stored(tmp_path)
    out = durably_cli("schedule", "pause", "nope", "--root", tmp_path)
    assert out.returncode == 1
    assert out.stderr == "durably schedule: error: Schedule not found: 'nope'\n"


def test_a_bad_action_is_a_usage_error(tmp_path: Path) -> None:
    stored(tmp_path)
    out = durably_cli("schedule", "explode", "nightly-sync", "--root", tmp_path)
    assert out.returncode == 2
    assert "invalid choice: 'explode'" in out.stderr


def test_doctor_accepts_schedules_and_names_a_damaged_record(tmp_path: Path) -> None:
    clock = ManualClock(START)
    d = stored(tmp_path, clock)
    clock.advance(86400)
    d.process_until_idle()  # writes schedules/fired/
    healthy = durably_cli("doctor", "--root", tmp_path)
    assert healthy.returncode == 0, healthy.stdout
    (record,) = (tmp_path / "schedules").glob("*.json")
    record.write_bytes(b'{"v": 1, "name": "nightly-sy')
    sick = durably_cli("doctor", "--root", tmp_path)
    assert sick.returncode == 1
    assert f"schedules/{record.name}: a damaged schedule record" in sick.stdout
