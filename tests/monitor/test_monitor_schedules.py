"""The schedules view (`S`, SPEC §10): every cron schedule with its next tick counting down,
its last run and that run's status; `enter` opens the last run, `p` pauses or resumes."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from monitor_fakes import NOW, FakeDurably, sample, schedules_sample
from monitor_helpers import make_app, notifications, palette, settle, text_of, wait_for
from textual.pilot import Pilot
from textual.widgets import DataTable, Static

from durably_monitor._detail import RunDetailScreen
from durably_monitor._dialogs import ConfirmScreen, HelpScreen
from durably_monitor._runlist import RunList
from durably_monitor._schedules_screen import NO_SCHEDULES, SchedulesScreen
from durably_monitor._widgets import MonitorFooter

FAILED = "01JDQ0000000000000000000A2"


async def open_schedules(pilot: Pilot[Any]) -> SchedulesScreen:
    await settle(pilot)
    await pilot.press("S")
    await wait_for(
        pilot,
        lambda: isinstance(pilot.app.screen, SchedulesScreen) and pilot.app.screen.schedule_rows is not None,
    )
    screen = pilot.app.screen
    assert isinstance(screen, SchedulesScreen)
    return screen


def rows(screen: SchedulesScreen) -> list[str]:
    table = screen.query_one("#schedules", DataTable)
    return ["  ".join(str(c) for c in table.get_row_at(i)) for i in range(table.row_count)]


def note(screen: SchedulesScreen) -> str:
    return text_of(screen.query_one("#schedules-note", Static)).strip()


class TestTable:
    async def test_every_schedule_with_its_next_and_last_run(self) -> None:
        """Each schedule shows its name, job, cron, time zone, next tick (time and countdown),
        last run and that run's status (from the index), and whether it is paused."""
        app = make_app(schedules_sample())
        async with app.run_test(size=(140, 30)) as pilot:
            screen = await open_schedules(pilot)
            assert rows(screen) == [
                "every-5m  resize-images  */5 * * * *  UTC  11-28 18:33:12 (in 3m12s)  -  -  no",
                "nightly-sync  sync-users  30 2 * * *  Europe/Berlin  11-29 01:33:12 (in 7h03m)  "
                f"{FAILED}  ✘ failed  no",
                "weekly-report  send-report  0 8 * * MON  UTC  paused  "
                "01JDQ0000000000000000000A3  ⊘ cancelled  ⏸ yes",
            ]
            assert note(screen).startswith("3 schedules, 1 paused   enter opens the last run")

    async def test_at_80_columns_the_countdown_alone_and_short_ids(self) -> None:
        """On a narrow terminal the next run is a countdown and run ids show their end."""
        app = make_app(schedules_sample())
        async with app.run_test(size=(80, 24)) as pilot:
            screen = await open_schedules(pilot)
            assert "in 3m12s" in rows(screen)[0]
            assert "11-28" not in rows(screen)[0]
            assert rows(screen)[1] == f"nightly-sync  sync-users  30 2 * * *  in 7h03m  ✘ …{FAILED[-12:]}"
            assert rows(screen)[2].startswith("weekly-report  send-report  0 8 * * MON  paused")

    async def test_at_120_columns_the_countdown_and_short_ids_keep_every_column(self) -> None:
        """Where the full table does not fit, the next run is a countdown and ids are short,
        but every column stays."""
        app = make_app(schedules_sample())
        async with app.run_test(size=(120, 24)) as pilot:
            screen = await open_schedules(pilot)
            assert rows(screen)[1] == (
                "nightly-sync  sync-users  30 2 * * *  Europe/Berlin  in 7h03m  "
                f"…{FAILED[-12:]}  ✘ failed  no"
            )

    async def test_the_countdown_moves_on_the_app_tick(self) -> None:
        """The app's once-a-second tick redraws the countdowns and rereads the schedules."""
        now = [NOW]
        fake = schedules_sample()
        app = make_app(fake, clock=lambda: now[0])
        async with app.run_test(size=(140, 30)) as pilot:
            screen = await open_schedules(pilot)
            now[0] = NOW + timedelta(minutes=1)
            app.tick()
            await wait_for(pilot, lambda: "(in 2m12s)" in rows(screen)[0])
            now[0] = NOW + timedelta(minutes=4)
            app.tick()
            await wait_for(pilot, lambda: "(due)" in rows(screen)[0])

    async def test_a_schedule_created_meanwhile_appears(self) -> None:
        """The view rereads the schedules on the tick: a new one shows up."""
        fake = schedules_sample()
        app = make_app(fake)
        async with app.run_test(size=(140, 30)) as pilot:
            screen = await open_schedules(pilot)
            first = fake.schedules["every-5m"]
            fake.schedules["a-new-one"] = type(first)("a-new-one", "quick-math", "0 * * * *")
            app.tick()
            await wait_for(pilot, lambda: len(rows(screen)) == 4)
            assert rows(screen)[0].startswith("a-new-one  quick-math")

    async def test_no_schedules_says_how_to_make_one(self, fake: FakeDurably) -> None:
        """A root without schedules says so, and how to create one."""
        app = make_app(fake)
        async with app.run_test(size=(140, 30)) as pilot:
            screen = await open_schedules(pilot)
            assert rows(screen) == []
            assert note(screen).startswith(NO_SCHEDULES[:40])


class TestKeys:
    async def test_enter_opens_the_last_run_and_escape_comes_back(self) -> None:
        """`enter` opens the schedule's last run; escape returns to the schedules, then to
        the list; a schedule that has not fired says so."""
        app = make_app(schedules_sample())
        told = notifications(app)
        async with app.run_test(size=(140, 30)) as pilot:
            await open_schedules(pilot)
            await pilot.press("enter")
            assert "Schedule 'every-5m' has not fired a run yet." in told
            await pilot.press("j", "enter")
            await wait_for(pilot, lambda: getattr(app.screen, "run_id", None) == FAILED)
            assert isinstance(app.screen, RunDetailScreen)
            await pilot.press("escape")
            assert isinstance(app.screen, SchedulesScreen)
            await pilot.press("escape")
            assert app.screen.query_one(RunList) is not None

    async def test_p_pauses_a_schedule_after_asking(self) -> None:
        """`p` on an active schedule asks, then pauses it; the table shows it paused."""
        fake = schedules_sample()
        app = make_app(fake)
        told = notifications(app)
        async with app.run_test(size=(140, 30)) as pilot:
            screen = await open_schedules(pilot)
            await pilot.press("j", "p")
            assert isinstance(app.screen, ConfirmScreen)
            assert app.screen.question == (
                "Pause schedule 'nightly-sync' (sync-users, 30 2 * * * Europe/Berlin)?\n"
                "Its ticks do not fire while it is paused (they are not caught up later)."
            )
            await pilot.press("y")
            await wait_for(pilot, lambda: rows(screen)[1].endswith("⏸ yes"))
            assert fake.calls == [("pause_schedule", "nightly-sync")]
            assert "Paused schedule 'nightly-sync': its ticks do not fire until it is resumed" in told
            assert "  paused  " in rows(screen)[1]

    async def test_p_resumes_a_paused_schedule(self) -> None:
        """`p` on a paused schedule asks to resume it; `n` does nothing, `y` resumes."""
        fake = schedules_sample()
        app = make_app(fake)
        async with app.run_test(size=(140, 30)) as pilot:
            screen = await open_schedules(pilot)
            await pilot.press("G", "p")
            assert isinstance(app.screen, ConfirmScreen)
            assert app.screen.question.startswith("Resume schedule 'weekly-report'")
            await pilot.press("n")
            assert fake.calls == []
            await pilot.press("p", "y")
            await wait_for(pilot, lambda: rows(screen)[2].endswith("no"))
            assert fake.calls == [("resume_schedule", "weekly-report")]

    async def test_a_schedule_deleted_meanwhile_is_reported(self) -> None:
        """Pausing a schedule deleted since it was shown says what durably answered."""
        fake = schedules_sample()
        app = make_app(fake)
        told = notifications(app)
        async with app.run_test(size=(140, 30)) as pilot:
            await open_schedules(pilot)
            await pilot.press("p")
            del fake.schedules["every-5m"]
            await pilot.press("y")
            await wait_for(pilot, lambda: any(t.startswith("Pause failed") for t in told))
            assert "Pause failed (NotFoundError): No schedule named 'every-5m'" in told

    async def test_read_only_hides_pause(self) -> None:
        """With --read-only, `p` is neither shown nor acted on; the view still reads."""
        fake = schedules_sample()
        app = make_app(fake, read_only=True)
        async with app.run_test(size=(140, 30)) as pilot:
            screen = await open_schedules(pilot)
            footer = screen.query_one(MonitorFooter)
            keys = " ".join(text_of(k) for k in footer.query_children("FooterKey") if k.display)
            assert "Pause/resume" not in keys
            await pilot.press("p")
            assert not isinstance(app.screen, ConfirmScreen)
            assert "p pauses" not in note(screen)

    async def test_no_run_actions_in_the_schedules_view(self) -> None:
        """The run actions do not apply here: `c` asks nothing."""
        fake = schedules_sample()
        app = make_app(fake)
        async with app.run_test(size=(140, 30)) as pilot:
            await open_schedules(pilot)
            await pilot.press("c", "d")
            assert not isinstance(app.screen, ConfirmScreen)
            assert fake.calls == []

    async def test_in_the_palette_and_the_help(self) -> None:
        """`S` is in the palette and the `?` sheet, with the view's own keys."""
        app = make_app(sample())
        async with app.run_test(size=(120, 50)) as pilot:
            await settle(pilot)
            assert "Schedules" in palette(app)
            await pilot.press("question_mark")
            assert isinstance(app.screen, HelpScreen)
            sheet = text_of(app.screen.query_one("#sheet", Static))
            assert "schedules: each cron schedule" in sheet
            assert "pause the schedule, or resume a paused one" in sheet
