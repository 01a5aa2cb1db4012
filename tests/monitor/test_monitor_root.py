"""A root that does not exist, or is a plain file: one line and exit 2, or waited for."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from monitor_fakes import sample
from monitor_helpers import settle, text_of, wait_for

import durably_monitor
from durably_monitor import MonitorApp, Source
from durably_monitor._runlist import RunList


@pytest.fixture
def started(monkeypatch: pytest.MonkeyPatch) -> list[MonitorApp]:
    """Apps `durably_monitor.run` would have shown (the terminal is not taken over)."""
    apps: list[MonitorApp] = []
    monkeypatch.setattr(MonitorApp, "run", lambda self, *a, **kw: apps.append(self))
    return apps


def one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


class TestRun:
    def test_a_missing_root_is_one_line_and_exit_2(
        self, tmp_path: Path, started: list[MonitorApp], capsys: pytest.CaptureFixture[str]
    ) -> None:
        """`run()` on a root that does not exist says so on stderr and opens no screen."""
        missing = tmp_path / "nowhere"
        with pytest.raises(SystemExit) as exit_:
            durably_monitor.run(str(missing))
        assert exit_.value.code == 2
        line = one_line(capsys.readouterr().err)
        assert line.startswith("durably monitor: error: no durably root at ")
        assert str(missing) in line
        assert started == []
        assert not missing.exists()

    def test_a_plain_file_is_refused_even_when_waiting(
        self, tmp_path: Path, started: list[MonitorApp], capsys: pytest.CaptureFixture[str]
    ) -> None:
        """A file where the root should be is an error, with or without --wait-for-root."""
        plain = tmp_path / "notes.txt"
        plain.write_text("not a root\n")
        for wait in (False, True):
            with pytest.raises(SystemExit) as exit_:
                durably_monitor.run(str(plain), wait_for_root=wait)
            assert exit_.value.code == 2
            assert "is not a directory" in one_line(capsys.readouterr().err)
        assert started == []

    def test_wait_for_root_opens_on_a_missing_root(self, tmp_path: Path, started: list[MonitorApp]) -> None:
        """With wait_for_root a missing root opens the monitor (which waits), creating nothing."""
        missing = tmp_path / "later"
        durably_monitor.run(str(missing), wait_for_root=True)
        assert len(started) == 1
        assert started[0].source.root == str(missing)
        assert not missing.exists()

    def test_an_existing_root_opens(self, tmp_path: Path, started: list[MonitorApp]) -> None:
        """An existing (even empty) root directory opens the monitor."""
        durably_monitor.run(str(tmp_path))
        assert len(started) == 1


class TestCommandLine:
    @pytest.mark.parametrize("command", [["-m", "durably", "monitor"], ["-m", "durably_monitor"]])
    def test_missing_root_from_the_command_line(self, tmp_path: Path, command: list[str]) -> None:
        """`durably monitor ROOT` and `python -m durably_monitor ROOT`: one line, exit 2."""
        missing = tmp_path / "nowhere"
        env = {k: v for k, v in os.environ.items() if k != "DURABLY_ROOT"}
        result = subprocess.run(
            [sys.executable, *command, str(missing)],
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode == 2
        assert result.stdout == ""
        assert one_line(result.stderr).startswith("durably monitor: error: no durably root at ")


class TestCoreCommand:
    def test_durably_monitor_passes_its_options_to_the_monitor(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """`durably monitor ROOT --read-only --app A --wait-for-root` calls run() with them."""
        seen: list[tuple[Any, ...]] = []
        monkeypatch.setattr(durably_monitor, "run", lambda root, **kw: seen.append((root, kw)))
        from durably._cli import main  # noqa: PLC0415

        assert main(["monitor", str(tmp_path / "r"), "--read-only", "--app", "m:d", "--wait-for-root"]) == 0
        assert seen == [(str(tmp_path / "r"), {"read_only": True, "app": "m:d", "wait_for_root": True})]


class TestWaiting:
    async def test_waits_for_the_root_then_lists_it(self, tmp_path: Path) -> None:
        """Over a missing root the header says it waits (not "live"); once the root exists
        the runs are listed and the monitor is live."""
        root = tmp_path / "root"
        app = MonitorApp(Source(sample(), "root", root=str(root)), poll_interval=3600)
        async with app.run_test(size=(120, 30)) as pilot:
            await settle(pilot)
            live = app.screen.query_one("#live")
            assert "waiting for root" in text_of(live)
            assert "live" not in text_of(live).replace("waiting", "")
            assert "does not exist yet" in text_of(app.screen.query_one("#filterbar"))
            assert len(app.screen.query_one(RunList).index) == 0
            root.mkdir()
            await wait_for(pilot, lambda: "● live" in text_of(live))
            await settle(pilot)
            assert len(app.screen.query_one(RunList).index) == 6
            assert not root.joinpath("runs").exists()  # the monitor created nothing
