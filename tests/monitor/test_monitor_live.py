"""The monitor over a real durably root, changed by another process."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest
from monitor_helpers import settle, text_of, wait_for

from durably import RunStatus
from durably_monitor import MonitorApp
from durably_monitor._backend import open_source
from durably_monitor._dialogs import ConfirmScreen
from durably_monitor._runlist import RunList

HERE = Path(__file__).parent


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "root"


def start_other_process(root: Path, gate: Path) -> subprocess.Popen[str]:
    env = {**os.environ, "DURABLY_ROOT": str(root)}
    env["PYTHONPATH"] = os.pathsep.join([str(HERE), str(HERE.parent.parent), env.get("PYTHONPATH", "")])
    return subprocess.Popen(
        [sys.executable, str(HERE / "monitor_live_app.py"), str(gate)],
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )


@pytest.mark.slow
class TestLiveRoot:
    async def test_run_from_another_process_appears_and_completes(self, root: Path, tmp_path: Path) -> None:
        """A run triggered and executed by another process appears, then completes, on screen."""
        app = MonitorApp(open_source(str(root), None), poll_interval=0.05)
        async with app.run_test(size=(120, 30)) as pilot:
            await settle(pilot)
            assert app.index.rows == {}
            gate = tmp_path / "go"
            proc = start_other_process(root, gate)
            try:
                assert proc.stdout is not None
                run_id = (await asyncio.to_thread(proc.stdout.readline)).strip()
                await wait_for(pilot, lambda: run_id in app.index.rows)
                assert app.index.rows[run_id].status is RunStatus.PENDING
                run_list = app.screen.query_one(RunList)
                assert "pending" in run_list.render_line(1).text
                gate.touch()
                await wait_for(pilot, lambda: app.index.rows[run_id].status is RunStatus.COMPLETED)
                await pilot.pause()
                line = run_list.render_line(1).text
                assert "completed" in line
                assert "3/3" in line
                assert "origin=othe" in line
            finally:
                await asyncio.to_thread(proc.communicate, timeout=60)
            assert proc.returncode == 0

    async def test_detail_and_retrigger_with_an_app(self, root: Path, tmp_path: Path) -> None:
        """With --app, a finished run shows its steps and logs and can be retriggered."""
        gate = tmp_path / "go"
        gate.touch()
        proc = start_other_process(root, gate)
        out, _ = await asyncio.to_thread(proc.communicate, timeout=60)
        assert proc.returncode == 0
        run_id = out.strip()
        sys.modules.pop("monitor_live_app", None)
        try:
            source = open_source(str(root), "monitor_live_app:durably")
        finally:
            os.environ.pop("DURABLY_ROOT", None)
            sys.modules.pop("monitor_live_app", None)
        assert source.can_retrigger
        assert source.durably.root == str(root)
        app = MonitorApp(source, poll_interval=0.05)
        async with app.run_test(size=(120, 30)) as pilot:
            await settle(pilot)
            await pilot.press("enter")
            await wait_for(pilot, lambda: getattr(app.screen, "detail", None) is not None)
            assert "step-2" in text_of(app.screen.query_one("#steps"))
            await pilot.press("l")
            await wait_for(pilot, lambda: app.screen.query_one("#log").line_count == 1)
            await pilot.press("escape", "r")
            assert isinstance(app.screen, ConfirmScreen)
            await pilot.press("y")
            await wait_for(pilot, lambda: len(app.index.rows) == 2)
            new_id = next(r for r in app.index.rows if r != run_id)
            assert app.index.rows[new_id].status is RunStatus.PENDING
            await pilot.press("d")
            assert not isinstance(app.screen, ConfirmScreen)  # pending: explained, not asked
            source.durably.stop()


@pytest.mark.slow
def test_live_demo_example_runs(tmp_path: Path) -> None:
    """examples/live_demo.py --runs N triggers N varied runs and waits for them all."""
    root = tmp_path / "demo"
    out = subprocess.run(
        [
            sys.executable,
            str(HERE.parent.parent / "examples" / "live_demo.py"),
            str(root),
            "--runs",
            "6",
            "--interval",
            "0",
            "--seed",
            "1",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert "triggered 6 runs" in out.stdout
    from durably import Durably  # noqa: PLC0415

    runs = Durably(str(root)).get_runs()
    assert len(runs) == 6
    assert all(r.status.is_terminal for r in runs)


class TestOpenSource:
    def test_app_must_name_an_attribute(self) -> None:
        """An APP without `:attr` is a clear usage error."""
        with pytest.raises(SystemExit, match="module:attribute"):
            open_source(None, "monitor_live_app")

    def test_app_must_be_a_durably_instance(self) -> None:
        """An APP naming something else is refused."""
        with pytest.raises(SystemExit, match="not a Durably instance"):
            open_source(None, "monitor_live_app:LiveIn")

    def test_app_root_must_match(self, tmp_path: Path) -> None:
        """An app whose explicit root differs from ROOT is refused (like `durably worker`)."""
        sys.modules.pop("monitor_live_app", None)
        try:
            os.environ["DURABLY_ROOT"] = str(tmp_path / "elsewhere")
            import monitor_live_app  # noqa: F401, PLC0415
        finally:
            os.environ.pop("DURABLY_ROOT", None)
        try:
            with pytest.raises(SystemExit, match="uses root"):
                open_source(str(tmp_path / "root"), "monitor_live_app:durably")
        finally:
            sys.modules.pop("monitor_live_app", None)
            os.environ.pop("DURABLY_ROOT", None)

    def test_root_defaults(self, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
        """Without ROOT the monitor reads $DURABLY_ROOT, and it creates nothing."""
        monkeypatch.setenv("DURABLY_ROOT", str(tmp_path / "r"))
        source = open_source(None, None)
        assert source.label == str(tmp_path / "r")
        assert source.durably.get_runs() == []
        assert not (tmp_path / "r").exists()


class TestDamagedRoot:
    async def test_a_damaged_run_is_absent_not_a_crash(self, root: Path) -> None:
        """A run whose files durably cannot read is simply not listed; the rest is."""
        from pydantic import BaseModel  # noqa: PLC0415

        from durably import Durably, Step, define_job  # noqa: PLC0415

        class Empty(BaseModel):
            pass

        @define_job(name="noop", input=Empty)
        def noop(step: Step, payload: Empty) -> None:
            return None

        writer = Durably(str(root), jobs=[noop], fsync=False)
        good = writer.jobs["noop"].trigger({}).id
        bad = writer.jobs["noop"].trigger({}).id
        damaged = next(p for p in root.rglob("run.json") if p.parent.name == bad)
        damaged.write_bytes(b'{"id": "trunc')  # what a half-synced copy can look like
        app = MonitorApp(open_source(str(root), None), poll_interval=3600)
        async with app.run_test() as pilot:
            await settle(pilot)
            assert set(app.index.rows) == {good}
            writer.cancel(good)  # puts `good` in the feed; rereading `bad` must not fail
            app.poll()
            await settle(pilot)
            assert app.index.rows[good].status is RunStatus.CANCELLED
            assert set(app.index.rows) == {good}
            diff = app.source.read([good, bad])  # what a poll does when the feed names `bad`
            assert [r.id for r in diff.upserts] == [good]


def test_python_dash_m_monitor_passes_its_arguments(monkeypatch: pytest.MonkeyPatch) -> None:
    """`python -m durably_monitor ROOT --read-only --app A --wait-for-root` calls run() with those."""
    import durably_monitor.__main__ as entry  # noqa: PLC0415

    calls: list[tuple[object, ...]] = []

    def record(root: str | None, *, read_only: bool, app: str | None, wait_for_root: bool) -> None:
        calls.append((root, read_only, app, wait_for_root))

    monkeypatch.setattr(entry, "run", record)
    entry.main(["some/root", "--read-only", "--app", "pkg.mod:durably", "--wait-for-root"])
    entry.main([])
    assert calls == [("some/root", True, "pkg.mod:durably", True), (None, False, None, False)]
