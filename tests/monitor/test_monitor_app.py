"""The monitor app driven with Pilot over fixed in-memory data."""

from __future__ import annotations

from dataclasses import replace

from monitor_fakes import NOW, FakeDurably, FakeLog, FakeRun, sample
from monitor_helpers import make_app, notifications, palette, settle, text_of, wait_for
from textual.widgets import DataTable, Input, Log, Static, TabbedContent

from durably import RunStatus
from durably_monitor import MonitorApp
from durably_monitor._detail import RunDetailScreen
from durably_monitor._dialogs import ConfirmScreen, HelpScreen
from durably_monitor._runlist import RunList

FAILED = "01JDQ0000000000000000000A2"
RUNNING = "01JDQ0000000000000000000A4"
DONE = "01JDQ0000000000000000000A6"


def shown(app: object) -> list[str]:
    run_list = app.screen.query_one(RunList)  # type: ignore[attr-defined]
    return [run_list.index.id_at(i)[-2:] for i in range(len(run_list.index))]


def select(app: object, run_id: str) -> None:
    assert app.screen.query_one(RunList).select(run_id)  # type: ignore[attr-defined]


class TestList:
    async def test_lists_every_run_newest_first_with_counts(self, fake: FakeDurably) -> None:
        """The first screen lists the runs newest first and counts them per status."""
        app = make_app(fake)
        async with app.run_test(size=(120, 40)) as pilot:
            await settle(pilot)
            assert shown(app) == ["A6", "A5", "A4", "A3", "A2", "A1"]
            counts = text_of(app.screen.query_one("#counts", Static))
            assert "1 failed" in counts
            assert "2 completed" in counts

    async def test_newest_page_first_then_the_rest(self, fake: FakeDurably) -> None:
        """The scan asks for a small first page, then loads the rest in the background."""
        calls: list[tuple[int | None, int | None]] = []
        original = fake.get_runs

        def spy(**kw: int | None) -> list[FakeRun]:
            calls.append((kw.get("limit"), kw.get("offset")))
            return original(**kw)

        fake.get_runs = spy  # type: ignore[method-assign]
        app = make_app(fake, first_page=2)
        async with app.run_test() as pilot:
            await settle(pilot)
            assert calls[0] == (2, 0)
            assert len(shown(app)) == 6

    async def test_a_broken_root_is_reported_not_raised(self) -> None:
        """A read error becomes a notification; the monitor stays up."""
        fake = FakeDurably()
        fake.get_runs = lambda **kw: (_ for _ in ()).throw(OSError("disk gone"))  # type: ignore[method-assign]
        app = make_app(fake)
        told = notifications(app)
        async with app.run_test() as pilot:
            await settle(pilot)
            assert any("disk gone" in n for n in told)
            assert shown(app) == []
            assert app.loading  # the scan is retried; polls wait for it
            fake.get_runs = FakeDurably.get_runs.__get__(fake)  # type: ignore[method-assign]
            fake.put(FakeRun("01JDQ0000000000000000000B1", "late", RunStatus.PENDING))
            app.reload_all()
            await settle(pilot)
            assert shown(app) == ["B1"]
            assert not app.loading

    async def test_click_selects_and_double_click_opens(self, fake: FakeDurably) -> None:
        """Mouse: a click selects a row, a double click opens it."""
        app = make_app(fake)
        async with app.run_test(size=(120, 40)) as pilot:
            await settle(pilot)
            run_list = app.screen.query_one(RunList)
            await pilot.click(RunList, offset=(10, 2))
            assert run_list.selected_id == "01JDQ0000000000000000000A5"
            await pilot.click(RunList, offset=(10, 2), times=2)
            await settle(pilot)
            assert isinstance(app.screen, RunDetailScreen)

    async def test_sort_keys_and_header_click(self, fake: FakeDurably) -> None:
        """`s` cycles the sort column, `I` inverts it, a header click sorts by that column."""
        app = make_app(fake)
        async with app.run_test(size=(120, 40)) as pilot:
            await settle(pilot)
            await pilot.press("s")
            assert app.index.sort_key.value == "job"
            await pilot.press("I")
            assert shown(app)[0] == "A2"  # sync-users, newest id first
            await pilot.click(RunList, offset=(3, 0))  # STATUS header
            assert app.index.sort_key.value == "status"
            assert shown(app)[0] == "A4"

    async def test_time_toggle(self, fake: FakeDurably) -> None:
        """`t` switches start times from relative to absolute."""
        app = make_app(fake)
        async with app.run_test(size=(120, 40)) as pilot:
            await settle(pilot)
            run_list = app.screen.query_one(RunList)
            assert "ago" in run_list.render_line(1).text
            await pilot.press("t")
            assert "11-28 18:28:10" in run_list.render_line(1).text


class TestFilters:
    async def test_failed_is_one_key_away(self, fake: FakeDurably) -> None:
        """`f` shows only failed runs; `f` again shows all."""
        app = make_app(fake)
        async with app.run_test() as pilot:
            await settle(pilot)
            await pilot.press("f")
            assert shown(app) == ["A2"]
            await pilot.press("f")
            assert len(shown(app)) == 6

    async def test_number_keys_toggle_statuses(self, fake: FakeDurably) -> None:
        """`1`…`5` add and remove statuses; `0` clears every filter."""
        app = make_app(fake)
        async with app.run_test() as pilot:
            await settle(pilot)
            await pilot.press("3", "5")
            assert shown(app) == ["A6", "A3", "A1"]
            await pilot.press("3")
            assert shown(app) == ["A3"]
            await pilot.press("0")
            assert len(shown(app)) == 6

    async def test_job_cycle(self, fake: FakeDurably) -> None:
        """`J` steps through the jobs by name, then back to all."""
        app = make_app(fake)
        async with app.run_test() as pilot:
            await settle(pilot)
            await pilot.press("J")
            assert shown(app) == ["A6", "A4"]
            await pilot.press("J", "J")
            assert shown(app) == ["A2", "A1"]
            await pilot.press("J")
            assert len(shown(app)) == 6

    async def test_search_box_filters_as_you_type(self, fake: FakeDurably) -> None:
        """`/` opens the search; typing filters; label: tokens work; escape clears."""
        app = make_app(fake)
        async with app.run_test() as pilot:
            await settle(pilot)
            await pilot.press("slash", *"globex")
            assert shown(app) == ["A2"]
            app.screen.query_one("#search", Input).value = "label:env=prod"
            await pilot.pause()
            assert shown(app) == ["A4"]
            await pilot.press("enter")
            assert isinstance(app.focused, RunList)
            await pilot.press("escape")
            assert len(shown(app)) == 6


class TestDetail:
    async def test_failed_run_opens_on_the_error_with_the_failing_step(self, fake: FakeDurably) -> None:
        """A failed run shows its traceback with the failing step selected."""
        app = make_app(fake)
        async with app.run_test(size=(120, 40)) as pilot:
            await settle(pilot)
            select(app, FAILED)
            await pilot.press("enter")
            await settle(pilot)
            screen = app.screen
            assert isinstance(screen, RunDetailScreen)
            assert screen.query_one("#tabs", TabbedContent).active == "error"
            assert screen.query_one("#steps", DataTable).cursor_row == 3
            error = text_of(screen.query_one("#error-body", Static))
            assert "sync-3" in error
            assert "database is read-only" in error

    async def test_input_output_and_step_output(self, fake: FakeDurably) -> None:
        """The input/output tab shows the run's input, output and the selected step's output."""
        app = make_app(fake)
        async with app.run_test(size=(120, 40)) as pilot:
            await settle(pilot)
            select(app, FAILED)
            await pilot.press("enter")
            await settle(pilot)
            await pilot.press("i", "up", "up", "up")
            rendered = text_of(app.screen.query_one("#io-body", Static))
            assert '"org_id": "globex"' in rendered
            assert "fetch-users" in rendered

    async def test_logs_level_filter_and_search(self, fake: FakeDurably) -> None:
        """Logs can be filtered by level (`v`) and searched (`/`)."""
        app = make_app(fake)
        async with app.run_test(size=(120, 40)) as pilot:
            await settle(pilot)
            select(app, FAILED)
            await pilot.press("enter")
            await settle(pilot)
            log = app.screen.query_one("#log", Log)
            assert log.line_count == 4
            await pilot.press("v")
            assert [line.split()[1] for line in log.lines] == ["WARN", "ERROR"]
            await pilot.press("v", "v", "slash", *"user 1")
            assert len(log.lines) == 1
            assert "synced user 1" in log.lines[0]
            await pilot.press("escape")
            assert log.line_count == 4
            await pilot.press("escape")
            assert not isinstance(app.screen, RunDetailScreen)

    async def test_log_follow(self, fake: FakeDurably) -> None:
        """New log lines of a running run appear at the tail; `F` stops following."""
        fake.logs[RUNNING] = [FakeLog("info", f"line {i}", "resize") for i in range(60)]
        app = make_app(fake)
        async with app.run_test(size=(100, 30)) as pilot:
            await settle(pilot)
            select(app, RUNNING)
            await pilot.press("enter", "l")
            await settle(pilot)
            screen = app.screen
            assert isinstance(screen, RunDetailScreen)
            log = screen.query_one("#log", Log)
            await wait_for(pilot, lambda: log.line_count == 60)
            fake.logs[RUNNING].append(FakeLog("warn", "tail line", "resize"))
            screen.reload()
            await wait_for(pilot, lambda: log.line_count == 61)
            await pilot.pause()
            assert log.scroll_y == log.max_scroll_y > 0
            await pilot.press("F")
            assert log.auto_scroll is False
            fake.logs[RUNNING].append(FakeLog("info", "another", "resize"))
            log.scroll_home(animate=False)
            screen.reload()
            await wait_for(pilot, lambda: log.line_count == 62)
            assert log.scroll_y == 0

    async def test_deleted_run_shows_a_notice(self, fake: FakeDurably) -> None:
        """A run deleted while open says so, and keeps saying so, instead of crashing."""
        app = make_app(fake)
        async with app.run_test() as pilot:
            await settle(pilot)
            app.open_run(DONE)
            await settle(pilot)
            screen = app.screen
            assert isinstance(screen, RunDetailScreen)
            summary = screen.query_one("#summary", Static)
            assert DONE in text_of(summary)
            with fake.lock:  # another process deletes it: the feed names it
                del fake.runs[DONE]
                fake.feed.append(DONE)
            app.poll()
            await wait_for(pilot, lambda: "no longer exists" in text_of(summary))
            screen.tick()  # what the screen's timer does twice a second
            await settle(pilot)
            assert "no longer exists" in text_of(summary)


class TestActions:
    async def test_cancel_asks_then_cancels(self, fake: FakeDurably) -> None:
        """`c` asks for confirmation; `y` cancels the run and the row updates."""
        app = make_app(fake)
        async with app.run_test() as pilot:
            await settle(pilot)
            select(app, RUNNING)
            await pilot.press("c")
            assert isinstance(app.screen, ConfirmScreen)
            await pilot.press("y")
            await settle(pilot)
            assert fake.calls == [("cancel", RUNNING)]
            assert app.index.rows[RUNNING].status is RunStatus.CANCELLED

    async def test_answering_no_does_nothing(self, fake: FakeDurably) -> None:
        """`n` (or escape) closes the question and writes nothing."""
        app = make_app(fake)
        async with app.run_test() as pilot:
            await settle(pilot)
            select(app, RUNNING)
            await pilot.press("c", "n", "c", "escape")
            await settle(pilot)
            assert fake.calls == []

    async def test_retrigger_creates_a_run(self, fake: FakeDurably) -> None:
        """`r` on a finished run (with an APP) starts a new run, which appears."""
        app = make_app(fake)
        async with app.run_test() as pilot:
            await settle(pilot)
            select(app, FAILED)
            await pilot.press("r", "y")
            await settle(pilot)
            assert fake.calls == [("retrigger", FAILED)]
            assert "01JDQ0000000000000000000AZ" in app.index.rows

    async def test_retrigger_without_app_explains(self, fake: FakeDurably) -> None:
        """Without an APP the monitor explains why it cannot retrigger, and asks nothing."""
        app = make_app(fake, can_retrigger=False)
        told = notifications(app)
        async with app.run_test() as pilot:
            await settle(pilot)
            select(app, FAILED)
            await pilot.press("r")
            assert not isinstance(app.screen, ConfirmScreen)
            assert any("--app module:attr" in n for n in told)
            assert fake.calls == []

    async def test_delete_from_the_detail_screen(self, fake: FakeDurably) -> None:
        """`d` in the detail screen deletes the open run after confirmation."""
        app = make_app(fake)
        async with app.run_test() as pilot:
            await settle(pilot)
            app.open_run(DONE)
            await settle(pilot)
            await pilot.press("d")
            assert isinstance(app.screen, ConfirmScreen)
            await pilot.press("y")
            await settle(pilot)
            assert fake.calls == [("delete", DONE)]
            assert DONE not in app.index.rows

    async def test_refuses_impossible_actions_without_asking(self, fake: FakeDurably) -> None:
        """Cancelling a finished run or deleting a running one is explained, not attempted."""
        app = make_app(fake)
        async with app.run_test() as pilot:
            await settle(pilot)
            select(app, DONE)
            await pilot.press("c")
            select(app, RUNNING)
            await pilot.press("d")
            assert not isinstance(app.screen, ConfirmScreen)
            assert fake.calls == []

    async def test_copy_run_id(self, fake: FakeDurably) -> None:
        """`y` copies the selected run id to the clipboard."""
        app = make_app(fake)
        async with app.run_test() as pilot:
            await settle(pilot)
            await pilot.press("y")
            assert app.clipboard == DONE


class TestReadOnly:
    async def test_flag_hides_actions(self, fake: FakeDurably) -> None:
        """With --read-only the actions are not offered and their keys do nothing."""
        app = make_app(fake, read_only=True)
        async with app.run_test(size=(160, 30)) as pilot:
            await settle(pilot)
            select(app, RUNNING)
            await pilot.press("c", "d", "r")
            assert not isinstance(app.screen, ConfirmScreen)
            assert app.check_action("act", ("cancel",)) is False
            assert "Cancel run" not in palette(app)
            assert fake.calls == []

    async def test_read_only_root_is_detected(self) -> None:
        """A root durably reports as read-only hides the actions with a notice."""
        fake = sample()
        fake.read_only = True
        app = make_app(fake)
        async with app.run_test(size=(120, 30)) as pilot:
            await settle(pilot)
            assert not app.actions_allowed
            assert "read-only root" in text_of(app.screen.query_one("#filterbar", Static))
            select(app, RUNNING)
            await pilot.press("c")
            assert not isinstance(app.screen, ConfirmScreen)


class TestLive:
    async def test_changes_are_applied_by_id(self, fake: FakeDurably) -> None:
        """A poll rereads only the changed runs: new runs appear, changed rows update."""
        app = make_app(fake)
        async with app.run_test() as pilot:
            await settle(pilot)
            new = FakeRun(
                "01JDQ0000000000000000000A7", "send-report", RunStatus.PENDING, created_at=NOW, updated_at=NOW
            )
            fake.put(new)
            app.poll()
            await settle(pilot)
            assert shown(app)[0] == "A7"
            fake.update(new.id, status=RunStatus.COMPLETED, started_at=NOW, completed_at=NOW)
            reads: list[str] = []
            original = fake.get_run
            fake.get_run = lambda rid: reads.append(rid) or original(rid)  # type: ignore[method-assign]
            app.poll()
            await settle(pilot)
            assert reads == [new.id]
            assert app.index.rows[new.id].status is RunStatus.COMPLETED

    async def test_feed_that_cannot_say_reloads_everything(self, fake: FakeDurably) -> None:
        """When changes() returns None the monitor rereads the whole root."""
        app = make_app(fake)
        async with app.run_test() as pilot:
            await settle(pilot)
            with fake.lock:
                fake.runs.pop(FAILED)
            fake.feed_broken = True
            app.poll()
            await settle(pilot)
            assert "A2" not in shown(app)

    async def test_pause_stops_applying_changes(self, fake: FakeDurably) -> None:
        """`P` pauses live updates; resuming catches up from the feed."""
        app = make_app(fake)
        async with app.run_test() as pilot:
            await settle(pilot)
            await pilot.press("P")
            fake.update(RUNNING, status=RunStatus.COMPLETED, completed_at=NOW)
            app.poll()
            await settle(pilot)
            assert app.index.rows[RUNNING].status is RunStatus.LEASED
            await pilot.press("P")
            app.poll()
            await settle(pilot)
            assert app.index.rows[RUNNING].status is RunStatus.COMPLETED

    async def test_selection_stays_on_its_run(self, fake: FakeDurably) -> None:
        """A new run on top does not move the selection off the selected run."""
        app = make_app(fake)
        async with app.run_test() as pilot:
            await settle(pilot)
            select(app, FAILED)
            fake.put(replace(fake.runs[DONE], id="01JDQ0000000000000000000A8"))
            app.poll()
            await settle(pilot)
            assert app.screen.query_one(RunList).selected_id == FAILED

    async def test_timer_polls_by_itself(self, fake: FakeDurably) -> None:
        """With a short interval the timer picks up changes without help."""
        app = make_app(fake, poll_interval=0.05)
        async with app.run_test() as pilot:
            await settle(pilot)
            fake.update(RUNNING, status=RunStatus.FAILED, error="boom", completed_at=NOW)
            await wait_for(pilot, lambda: app.index.rows[RUNNING].status is RunStatus.FAILED)


class TestClosing:
    async def test_timers_that_fire_while_the_app_closes_do_nothing(self, fake: FakeDurably) -> None:
        """On a loaded machine the once-a-second tick (or a late scan result) can run after
        the app closed its screens: it then does nothing instead of raising."""
        app = make_app(fake)
        async with app.run_test() as pilot:
            await settle(pilot)
        assert not app.screen_stack
        app.tick()
        app.on_monitor_app_runs_loaded(MonitorApp.RunsLoaded([], first=True, last=True))
        app.on_monitor_app_new_run(MonitorApp.NewRun(FAILED, DONE))
        assert app.target_run() is None


class TestKeyboard:
    async def test_help_screen(self, fake: FakeDurably) -> None:
        """`?` opens the key sheet, escape closes it."""
        app = make_app(fake)
        async with app.run_test() as pilot:
            await settle(pilot)
            await pilot.press("question_mark")
            assert isinstance(app.screen, HelpScreen)
            await pilot.press("escape")
            assert not isinstance(app.screen, HelpScreen)

    async def test_command_palette_lists_actions(self, fake: FakeDurably) -> None:
        """The palette provider offers the actions on the selected run and the filters."""
        app = make_app(fake)
        async with app.run_test() as pilot:
            await settle(pilot)
            names = palette(app)
            for wanted in (
                "Cancel run",
                "Retrigger run",
                "Delete run",
                "Copy run id",
                "Show failed runs",
                "Filter by job: sync-users",
            ):
                assert wanted in names
            await pilot.press("ctrl+p", *"failed")
            await settle(pilot)
            await pilot.press("enter")
            await settle(pilot)
            assert shown(app) == ["A2"]
