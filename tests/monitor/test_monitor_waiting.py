"""Runs that wait (SPEC §9) in the monitor: what each waits for, in the list and the detail,
ticking down; the step timeline with every attempt of a retried step and each wait."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from monitor_fakes import (
    CHILD,
    DELAYED,
    NOW,
    PARENT,
    RETRIED_OK,
    RETRY,
    SIGNAL,
    SLEEP,
    waiting_sample,
)
from monitor_helpers import make_app, settle, text_of, wait_for
from textual.pilot import Pilot
from textual.widgets import DataTable, Static, TabbedContent

from durably_monitor import _waiting as waiting
from durably_monitor._detail import RunDetailScreen
from durably_monitor._runlist import RunList


def line_of(app: Any, run_id: str) -> str:
    """The list's line of `run_id`, as drawn."""
    run_list = app.screen.query_one(RunList)
    for y in range(1, len(run_list.index) + 1):
        line = run_list.render_line(y).text
        if run_id in line or run_id[-8:] in line:
            return str(line)
    raise AssertionError(f"{run_id} not listed")


async def open_detail(pilot: Pilot[Any], run_id: str) -> RunDetailScreen:
    await settle(pilot)
    assert pilot.app.screen.query_one(RunList).select(run_id)
    await pilot.press("enter")
    await settle(pilot)
    screen = pilot.app.screen
    assert isinstance(screen, RunDetailScreen)
    await wait_for(pilot, lambda: screen.detail is not None)
    return screen


def steps_text(screen: RunDetailScreen) -> list[str]:
    """The step table's rows as plain text, one string per row."""
    table = screen.query_one("#steps", DataTable)
    return [" ".join(str(cell) for cell in table.get_row_at(i)) for i in range(table.row_count)]


class Clock:
    """A clock a test moves on."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


class TestListTexts:
    @pytest.mark.parametrize(
        ("run_id", "text"),
        [
            (SIGNAL, "waits for signal approval until 12-05 18:30 (in 7d)"),
            (SLEEP, "sleeps until 20:30 (in 2h)"),
            (RETRY, "retry 2 of 5 in 30s"),
            (DELAYED, "starts 20:30 (in 2h)"),
            (PARENT, f"waits for child …{CHILD[-8:]}"),
        ],
        ids=["signal", "sleep", "retry", "start", "child"],
    )
    async def test_the_progress_column_says_what_the_run_waits_for(self, run_id: str, text: str) -> None:
        """A wide list shows each wait in full: its signal, the end of its sleep, the attempt
        a retry waits for, a delayed start, the child run (by the end of its id)."""
        app = make_app(waiting_sample())
        async with app.run_test(size=(180, 30)) as pilot:
            await settle(pilot)
            line = line_of(app, run_id)
            assert "◷ waiting" in line
            assert text in line

    async def test_narrow_columns_get_a_compact_form(self) -> None:
        """At 80 columns the progress column is 16 cells: the compact forms fit whole."""
        app = make_app(waiting_sample())
        async with app.run_test(size=(80, 30)) as pilot:
            await settle(pilot)
            assert "retry 2/5 30s" in line_of(app, RETRY)
            assert "signal approval" in line_of(app, SIGNAL)
            assert "sleeps (in 2h)" in line_of(app, SLEEP)
            assert "starts in 2h" in line_of(app, DELAYED)
            assert f"child …{CHILD[-8:]}" in line_of(app, PARENT)

    async def test_the_countdown_ticks(self) -> None:
        """The list's countdown follows the clock on each tick (once a second), and a wait
        whose time has come says it is due."""
        clock = Clock(NOW)
        app = make_app(waiting_sample(), clock=clock)
        async with app.run_test(size=(180, 30)) as pilot:
            await settle(pilot)
            assert "retry 2 of 5 in 30s" in line_of(app, RETRY)
            clock.now = NOW + timedelta(seconds=12)
            app.tick()
            await wait_for(pilot, lambda: "retry 2 of 5 in 18s" in line_of(app, RETRY))
            clock.now = NOW + timedelta(minutes=1)
            app.tick()
            await wait_for(pilot, lambda: "retry 2 of 5 due" in line_of(app, RETRY))

    async def test_status_6_shows_only_waiting_runs(self) -> None:
        """The waiting status has its number key like the others."""
        app = make_app(waiting_sample())
        async with app.run_test(size=(120, 30)) as pilot:
            await settle(pilot)
            await pilot.press("6")
            index = app.screen.query_one(RunList).index
            assert len(index) == 6
            assert all(index.row_at(i).waiting_for for i in range(len(index)))


class TestWaitingText:
    @pytest.mark.parametrize(
        ("seconds", "text"),
        [
            (0.2, "1s"),
            (30, "30s"),
            (90, "1m30s"),
            (240, "4m"),
            (7200, "2h"),
            (7380, "2h03m"),
            (90000, "1d01h"),
        ],
    )
    def test_countdown(self, seconds: float, text: str) -> None:
        """A countdown rounds up to the second and leaves out a zero second part."""
        assert waiting.countdown(seconds) == text

    @pytest.mark.parametrize(
        ("waiting_for", "kind", "name", "attempt"),
        [
            ("start", "start", "", 0),
            ("sleep cool-off", "sleep", "cool-off", 0),
            ("retry fetch page 3 (attempt 2 of 5)", "retry", "fetch page 3", 2),
            ("signal approval", "signal", "approval", 0),
            ("child 01M97WNW9E3VPCK1VZ1BR8FG10", "child", "01M97WNW9E3VPCK1VZ1BR8FG10", 0),
            ("something new", "other", "", 0),
        ],
    )
    def test_the_line_durably_writes_is_read_back(
        self, waiting_for: str, kind: str, name: str, attempt: int
    ) -> None:
        """Each kind of `waiting_for` line is recognised (a step name may hold spaces); an
        unknown one is kept as it is."""
        wait = waiting.parse(waiting_for)
        assert wait is not None
        assert (wait.kind, wait.name, wait.attempt, wait.text) == (kind, name, attempt, waiting_for)

    def test_another_day_shows_the_date(self) -> None:
        """A wake time on another day names the day; in the list, the time in local time."""
        text = waiting.list_text("sleep nap", NOW + timedelta(days=1), NOW, UTC)
        assert text == "sleeps until 11-29 18:30 (in 1d)"


class TestDetail:
    @pytest.mark.parametrize(
        ("run_id", "text"),
        [
            (SIGNAL, "waits for signal approval until 12-05 18:30:00 (in 7d)"),
            (SLEEP, "sleeps in step cool-off until 11-28 20:30:00 (in 2h)"),
            (RETRY, "retries step download: attempt 2 of 5 at 11-28 18:30:30 (in 30s)"),
            (DELAYED, "starts at 11-28 20:30:00 (in 2h): a delayed trigger"),
            (PARENT, f"waits for child run {CHILD} (resize-image, waiting)"),
        ],
        ids=["signal", "sleep", "retry", "start", "child"],
    )
    async def test_the_summary_says_what_the_run_waits_for(self, run_id: str, text: str) -> None:
        """The detail says it in full: the step, the full time, the child's job and status."""
        app = make_app(waiting_sample())
        async with app.run_test(size=(160, 40)) as pilot:
            screen = await open_detail(pilot, run_id)
            assert text in text_of(screen.query_one("#summary", Static))

    async def test_the_summary_ticks_too(self) -> None:
        """The detail's countdown follows the clock (the screen redraws twice a second)."""
        clock = Clock(NOW)
        app = make_app(waiting_sample(), clock=clock)
        async with app.run_test(size=(160, 40)) as pilot:
            screen = await open_detail(pilot, RETRY)
            clock.now = NOW + timedelta(seconds=20)
            await wait_for(pilot, lambda: "(in 10s)" in text_of(screen.query_one("#summary", Static)))


class TestTimeline:
    async def test_a_retry_shows_each_attempt_and_the_next_one(self) -> None:
        """A run waiting between attempts: its failed attempt, then a row for attempt 2 of 5
        with its countdown; it opens on the Error tab with the attempt's error."""
        app = make_app(waiting_sample())
        async with app.run_test(size=(140, 40)) as pilot:
            screen = await open_detail(pilot, RETRY)
            rows = steps_text(screen)
            assert rows[0].split()[1:5] == ["0", "download", "1", "0.0s"]
            assert rows[0].endswith("failed")
            assert rows[1].split()[0] == "◷"
            assert "download 2/5" in rows[1]
            assert rows[1].endswith("retry in 30s")
            assert screen.query_one("#tabs", TabbedContent).active == "error"
            error = text_of(screen.query_one("#error-body", Static))
            assert "Attempts of step 'download'" in error
            assert "attempt 1  failed" in error
            assert "503 Service Unavailable" in error

    async def test_a_retried_step_that_succeeded_lists_both_attempts(self) -> None:
        """Each attempt is a row with its own status; the Error tab of the second lists the
        first one's error; a run that completed opens on Input / output."""
        app = make_app(waiting_sample())
        async with app.run_test(size=(140, 40)) as pilot:
            screen = await open_detail(pilot, RETRIED_OK)
            rows = steps_text(screen)
            assert [r.split()[3] for r in rows] == ["1", "2"]
            assert rows[0].endswith("failed")
            assert rows[1].endswith("completed")
            assert screen.query_one("#tabs", TabbedContent).active == "io"
            await pilot.press("j", "e")
            error = text_of(screen.query_one("#error-body", Static))
            assert "attempt 1  failed" in error
            assert "TimeoutError: read timed out" in error
            assert "attempt 2  completed" in error

    @pytest.mark.parametrize(
        ("run_id", "step", "took", "status"),
        [
            (SLEEP, "cool-off", "4m00s", "sleeping"),
            (SIGNAL, "approval", "5m00s", "awaits signal"),
            (PARENT, "image-1 ↗", "3m00s", "awaits child"),
        ],
    )
    async def test_the_step_the_run_waits_in_says_so(
        self, run_id: str, step: str, took: str, status: str
    ) -> None:
        """The step a run waits in has the waiting glyph, the time spent so far, and what it
        waits for; without a TRY column when nothing retried."""
        app = make_app(waiting_sample())
        async with app.run_test(size=(140, 40)) as pilot:
            screen = await open_detail(pilot, run_id)
            table = screen.query_one("#steps", DataTable)
            assert "TRY" not in [str(c.label) for c in table.columns.values()]
            last = steps_text(screen)[-1]
            assert last.startswith("◷")
            assert step in last
            assert last.endswith(status)
            assert took in last

    async def test_at_80_columns_the_timeline_bar_gives_way(self) -> None:
        """A narrow steps pane drops the TIMELINE column so the status stays whole."""
        app = make_app(waiting_sample())
        async with app.run_test(size=(80, 24)) as pilot:
            screen = await open_detail(pilot, RETRY)
            table = screen.query_one("#steps", DataTable)
            titles = [str(c.label) for c in table.columns.values()]
            assert "TIMELINE" not in titles
            assert "STATUS" in titles
            assert steps_text(screen)[-1].endswith("in 30s")
