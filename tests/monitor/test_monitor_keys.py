"""The monitor next to k9s and lazygit: vim keys, a footer that fits, full ids, readable logs."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from monitor_fakes import FakeDurably, FakeLog
from monitor_helpers import make_app, palette, settle, text_of, wait_for
from textual.pilot import Pilot
from textual.widgets import DataTable, Static

from durably_monitor._detail import RunDetailScreen
from durably_monitor._dialogs import HelpScreen
from durably_monitor._log_tab import LOG_INDENT
from durably_monitor._runlist import RunList
from durably_monitor._widgets import LogView, MonitorFooter

FAILED = "01JDQ0000000000000000000A2"
RUNNING = "01JDQ0000000000000000000A4"
NEWEST = "01JDQ0000000000000000000A6"
OLDEST = "01JDQ0000000000000000000A1"
RETRIED = "01JDQ0000000000000000000AZ"  # the id FakeDurably gives the retrigger of A2


def run_list(app: Any) -> RunList:
    return app.screen.query_one(RunList)  # type: ignore[no-any-return]


async def open_detail(pilot: Pilot[Any], run_id: str) -> RunDetailScreen:
    await settle(pilot)
    assert run_list(pilot.app).select(run_id)
    await pilot.press("enter")
    await settle(pilot)
    screen = pilot.app.screen
    assert isinstance(screen, RunDetailScreen)
    return screen


def footer_text(app: Any) -> str:
    """The keys the footer draws, each checked to be drawn whole inside the footer."""
    footer = app.screen.query_one(MonitorFooter)
    shown = [key for key in footer.query_children("FooterKey") if key.display]
    for key in shown:
        assert footer.region.x <= key.region.x, key
        assert key.region.right <= footer.region.right, key
        assert key.region.width >= len(text_of(key).strip()), key
    return "  ".join(text_of(key).strip() for key in shown)


class TestVimKeys:
    async def test_j_k_g_G_move_in_the_list(self, fake: FakeDurably) -> None:
        """`j`/`k` move down and up a row, `G` to the last run, `g` back to the first."""
        app = make_app(fake)
        async with app.run_test() as pilot:
            await settle(pilot)
            assert run_list(app).selected_id == NEWEST
            await pilot.press("j", "j")
            assert run_list(app).selected_id == RUNNING
            await pilot.press("k")
            assert run_list(app).selected_id == "01JDQ0000000000000000000A5"
            await pilot.press("G")
            assert run_list(app).selected_id == OLDEST
            await pilot.press("g")
            assert run_list(app).selected_id == NEWEST
            assert len(run_list(app).index) == 6  # j is no longer a filter

    async def test_j_k_g_G_move_in_the_steps(self, fake: FakeDurably) -> None:
        """In the detail, the same keys move the step cursor."""
        app = make_app(fake)
        async with app.run_test(size=(120, 40)) as pilot:
            screen = await open_detail(pilot, FAILED)
            steps = screen.query_one("#steps", DataTable)
            assert steps.cursor_row == 3  # opened on the failing step
            await pilot.press("g")
            assert steps.cursor_row == 0
            await pilot.press("j", "j")
            assert steps.cursor_row == 2
            await pilot.press("k")
            assert steps.cursor_row == 1
            await pilot.press("G")
            assert steps.cursor_row == 3

    async def test_j_k_scroll_the_help(self, fake: FakeDurably) -> None:
        """The `?` sheet scrolls with j/k and g/G where it does not fit."""
        app = make_app(fake)
        async with app.run_test(size=(100, 16)) as pilot:
            await settle(pilot)
            await pilot.press("question_mark")
            assert isinstance(app.screen, HelpScreen)
            sheet = app.screen.query_one("VerticalScroll")
            await pilot.press("j", "j")
            assert sheet.scroll_y == 2
            await pilot.press("G")
            assert sheet.scroll_y == sheet.max_scroll_y > 2
            await pilot.press("k", "g")
            assert sheet.scroll_y == 0

    async def test_the_job_filter_moved_to_J(self, fake: FakeDurably) -> None:
        """The job filter is `J`, in the footer, the help and the palette."""
        app = make_app(fake)
        async with app.run_test(size=(160, 30)) as pilot:
            await settle(pilot)
            assert "J Job" in footer_text(app)
            assert "Next job filter" in palette(app)
            await pilot.press("question_mark")
            sheet = text_of(app.screen.query_one("#sheet", Static))
            assert "next job filter" in sheet
            assert "j k" in sheet


class TestNarrowFooter:
    async def test_at_80_columns_the_actions_stay_in_the_footer(self, fake: FakeDurably) -> None:
        """At 80 columns the footer drops the less used keys instead of cutting off the
        actions: cancel, retrigger, delete, help and the palette key all show in full."""
        app = make_app(fake)
        async with app.run_test(size=(80, 24)) as pilot:
            await settle(pilot)
            text = footer_text(app)
            for key in ("Open", "Search", "Failed", "Cancel", "Retrigger", "Delete", "Help", "^p palette"):
                assert key in text, text
            assert "Pause" not in text  # in `?` and the palette instead
            assert "Pause / resume live updates" in palette(app)
            await pilot.press("P")  # and its key still works
            assert app.paused

    async def test_a_wide_footer_shows_every_key(self, fake: FakeDurably) -> None:
        """With room for all of them, every key is in the footer."""
        app = make_app(fake)
        async with app.run_test(size=(180, 24)) as pilot:
            await settle(pilot)
            text = footer_text(app)
            for key in ("Open", "Mark", "Search", "Failed", "Job", "Cancel", "Resume", "Pause", "Quit"):
                assert key in text, text

    async def test_the_detail_footer_fits_too(self, fake: FakeDurably) -> None:
        """The detail screen's footer keeps back, the actions and help at 80 columns."""
        app = make_app(fake)
        async with app.run_test(size=(80, 24)) as pilot:
            await open_detail(pilot, FAILED)
            text = footer_text(app)
            for key in ("Back", "Cancel", "Retrigger", "Delete", "Help", "^p palette"):
                assert key in text, text


class TestRunIds:
    async def test_full_ids_at_80_columns(self, fake: FakeDurably) -> None:
        """At 80 columns the id column has room for whole run ids."""
        app = make_app(fake)
        async with app.run_test(size=(80, 24)) as pilot:
            await settle(pilot)
            assert NEWEST in run_list(app).render_line(1).text

    async def test_narrower_ids_keep_their_end(self, fake: FakeDurably) -> None:
        """Where a whole id does not fit, its end (the random part) is shown after `…`."""
        app = make_app(fake)
        async with app.run_test(size=(70, 24)) as pilot:
            await settle(pilot)
            line = run_list(app).render_line(1).text
            assert NEWEST not in line
            assert "…" in line
            assert NEWEST[-12:] in line

    async def test_the_detail_always_shows_the_full_id(self, fake: FakeDurably) -> None:
        """Even on a narrow terminal the detail names the whole run id."""
        app = make_app(fake)
        async with app.run_test(size=(60, 24)) as pilot:
            screen = await open_detail(pilot, FAILED)
            assert FAILED in text_of(screen.query_one("#summary", Static)).replace("\n", "")


class TestLogs:
    async def test_long_lines_wrap_under_the_message(self, fake: FakeDurably) -> None:
        """A long log line wraps at the pane's width, continuation lines under the message;
        a wider terminal wraps it again."""
        words = " ".join(f"word{i}" for i in range(40))
        fake.logs[FAILED].append(FakeLog("info", words, None))
        app = make_app(fake)
        async with app.run_test(size=(100, 30)) as pilot:
            screen = await open_detail(pilot, FAILED)
            await pilot.press("l")
            log = screen.query_one("#log", LogView)
            await wait_for(pilot, lambda: any("word0 " in line for line in log.lines))
            first = next(i for i, line in enumerate(log.lines) if "word0 " in line)
            entry = log.lines[first:]
            assert len(entry) > 1
            assert all(len(line) <= log.wrap_width for line in log.lines)
            assert all(line.startswith(" " * LOG_INDENT) for line in entry[1:])
            assert " ".join(part.strip() for part in entry).endswith(words)
            narrow = len(log.lines)
            await pilot.resize_terminal(200, 30)
            await wait_for(pilot, lambda: len(log.lines) < narrow)

    async def test_log_data_is_json(self, fake: FakeDurably) -> None:
        """Data attached to a log line shows as JSON (true, null, double quotes), not a repr."""
        fake.logs[FAILED].append(FakeLog("info", "checked", None, {"user": 2, "ok": True, "note": None}))
        app = make_app(fake)
        async with app.run_test(size=(140, 30)) as pilot:
            screen = await open_detail(pilot, FAILED)
            log = screen.query_one("#log", LogView)
            await wait_for(pilot, lambda: log.line_count == 5)
            assert log.lines[2].endswith('user 2 has no email {"user": 2}')
            assert log.lines[4].endswith('checked {"user": 2, "ok": true, "note": null}')


class TestRetriggerJump:
    async def test_the_cursor_jumps_to_the_new_run(self, fake: FakeDurably) -> None:
        """After a retrigger the list cursor is on the new run."""
        app = make_app(fake)
        async with app.run_test() as pilot:
            await settle(pilot)
            assert run_list(app).select(FAILED)
            await pilot.press("r", "y")
            await wait_for(pilot, lambda: run_list(app).selected_id == RETRIED)

    async def test_the_cursor_stays_on_the_new_run_as_newer_runs_arrive(self, fake: FakeDurably) -> None:
        """The new run is the newest, on the top row; runs triggered after it do not carry
        the cursor away (the top row's tail mode is for a cursor the user put there)."""
        app = make_app(fake)
        async with app.run_test() as pilot:
            await settle(pilot)
            assert run_list(app).select(FAILED)
            await pilot.press("r", "y")
            await wait_for(pilot, lambda: run_list(app).selected_id == RETRIED)
            assert run_list(app).cursor == 0
            fake.put(replace(fake.runs[NEWEST], id="01JDQ0000000000000000000B1"))
            app.poll()
            await settle(pilot)
            assert run_list(app).index.id_at(0) == "01JDQ0000000000000000000B1"
            assert run_list(app).selected_id == RETRIED
            await pilot.press("g")  # back to the top row: tail mode again
            fake.put(replace(fake.runs[NEWEST], id="01JDQ0000000000000000000B2"))
            app.poll()
            await settle(pilot)
            assert run_list(app).selected_id == "01JDQ0000000000000000000B2"

    async def test_a_filter_that_hides_the_new_run_is_cleared(self, fake: FakeDurably) -> None:
        """Retriggering from the failed-only list shows every run, with the cursor on the new one."""
        app = make_app(fake)
        async with app.run_test() as pilot:
            await settle(pilot)
            await pilot.press("f")
            assert run_list(app).selected_id == FAILED
            await pilot.press("r", "y")
            await wait_for(pilot, lambda: run_list(app).selected_id == RETRIED)
            assert len(run_list(app).index) == 7

    async def test_from_the_detail_the_new_run_opens(self, fake: FakeDurably) -> None:
        """Retriggering from a run's detail moves the detail on to the new run."""
        app = make_app(fake)
        async with app.run_test(size=(120, 30)) as pilot:
            await open_detail(pilot, FAILED)
            await pilot.press("r", "y")
            await wait_for(pilot, lambda: getattr(app.screen, "run_id", None) == RETRIED)
            await pilot.press("escape")
            assert run_list(app).selected_id == RETRIED
