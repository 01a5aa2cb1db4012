"""The monitor shows what durably knows of a run: an interrupted run (its owner is gone)
in its status cell and detail, with its clock stopped; a failed run's traceback in the
Error tab, also when the exception was raised outside any step."""

from __future__ import annotations

from datetime import timedelta

from monitor_fakes import NOW, FakeDurably, FakeRun, FakeStep
from monitor_helpers import make_app, settle, text_of
from textual.widgets import Static, TabbedContent

from durably import RunStatus
from durably_monitor._detail import RunDetailScreen
from durably_monitor._runlist import RunList

STOPPED = "01JDQ0000000000000000000C1"
RAISED = "01JDQ0000000000000000000C2"
TRACEBACK = (
    "Traceback (most recent call last):\n"
    '  File "/app/jobs.py", line 12, in import_catalogue\n'
    "    return helper({})\n"
    '  File "/app/jobs.py", line 4, in helper\n'
    '    return data["missing"]\n'
    "KeyError: 'missing'\n"
)


def _fake() -> FakeDurably:
    fake = FakeDurably(
        [
            FakeRun(
                STOPPED,
                "thumbnails",
                RunStatus.LEASED,
                lease_generation=1,
                lease_owner="vm:4242",
                started_at=NOW - timedelta(minutes=10),
                updated_at=NOW - timedelta(minutes=8),
                interrupted=True,
            ),
            FakeRun(
                RAISED,
                "import",
                RunStatus.FAILED,
                error="KeyError: 'missing'",
                error_traceback=TRACEBACK,
                started_at=NOW - timedelta(minutes=1),
                completed_at=NOW,
            ),
        ]
    )
    fake.steps[STOPPED] = [FakeStep("resize", 0, "running", started_at=NOW - timedelta(minutes=9))]
    fetch = FakeStep("fetch", 0, "completed", started_at=NOW - timedelta(minutes=1), completed_at=NOW)
    fake.steps[RAISED] = [fetch]
    return fake


def _line_of(app: object, run_id: str) -> str:
    run_list = app.screen.query_one(RunList)  # type: ignore[attr-defined]
    for y in range(1, len(run_list.index) + 1):
        line = run_list.render_line(y).text
        if run_id[-2:] in line or run_id in line:
            return str(line)
    raise AssertionError(f"{run_id} not listed")


async def _open(app: object, pilot: object, run_id: str) -> RunDetailScreen:
    assert app.screen.query_one(RunList).select(run_id)  # type: ignore[attr-defined]
    await pilot.press("enter")  # type: ignore[attr-defined]
    await settle(pilot)  # type: ignore[arg-type]
    screen = app.screen  # type: ignore[attr-defined]
    assert isinstance(screen, RunDetailScreen)
    return screen


class TestInterrupted:
    async def test_the_status_cell_says_interrupted_and_the_clock_stops(self) -> None:
        """An interrupted run reads `interrupted` (not `running`), its duration stops at
        its owner's last sign of life (2 minutes after it started, not 10)."""
        app = make_app(_fake())
        async with app.run_test(size=(160, 40)) as pilot:
            await settle(pilot)
            line = _line_of(app, STOPPED)
            assert "interrupted" in line
            assert "running" not in line
            assert line.split()[-1].startswith("2m")  # the duration column, not 10m
            run_list = app.screen.query_one(RunList)
            assert run_list.index.rows[STOPPED].duration(NOW + timedelta(hours=1)) == 120.0

    async def test_the_detail_says_a_worker_resumes_it(self) -> None:
        """The detail names the interrupted state, when its owner stopped and what happens next."""
        app = make_app(_fake())
        async with app.run_test(size=(120, 40)) as pilot:
            await settle(pilot)
            screen = await _open(app, pilot, STOPPED)
            summary = text_of(screen.query_one("#summary", Static))
            assert "interrupted" in summary
            assert "a worker of 'thumbnails' resumes it" in summary


class TestErrorTab:
    async def test_the_error_tab_shows_the_traceback_of_an_error_outside_any_step(self) -> None:
        """A run failed outside any step: the Error tab shows the typed error and its traceback."""
        app = make_app(_fake())
        async with app.run_test(size=(120, 40)) as pilot:
            await settle(pilot)
            screen = await _open(app, pilot, RAISED)
            screen.query_one("#tabs", TabbedContent).active = "error"
            await settle(pilot)
            error = text_of(screen.query_one("#error-body", Static))
            assert "KeyError: 'missing'" in error
            assert "Traceback (most recent call last)" in error
            assert "in helper" in error
