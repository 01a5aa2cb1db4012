"""Marking several runs in the list (`space`, `*`) and acting on all of them at once: one
question naming the action and how many, one notification with what could not be done."""

from __future__ import annotations

from typing import Any

from monitor_fakes import FakeDurably, FakeRun
from monitor_helpers import make_app, notifications, palette, settle, text_of, wait_for
from textual.pilot import Pilot

from durably import ConflictError
from durably_monitor._detail import RunDetailScreen
from durably_monitor._dialogs import ConfirmScreen
from durably_monitor._runlist import RunList

OLD_DONE = "01JDQ0000000000000000000A1"
FAILED = "01JDQ0000000000000000000A2"
CANCELLED = "01JDQ0000000000000000000A3"
RUNNING = "01JDQ0000000000000000000A4"
PENDING = "01JDQ0000000000000000000A5"
DONE = "01JDQ0000000000000000000A6"
OTHER_FAILED = "01JDQ0000000000000000000B7"


def run_list(app: Any) -> RunList:
    return app.screen.query_one(RunList)  # type: ignore[no-any-return]


def filter_bar(app: Any) -> str:
    return text_of(app.screen.query_one("#filterbar"))


async def mark(pilot: Pilot[Any], *run_ids: str) -> None:
    """Select each run and press space."""
    for run_id in run_ids:
        assert run_list(pilot.app).select(run_id)
        await pilot.press("space")
    await settle(pilot)


def line_of(app: Any, run_id: str) -> str:
    position = run_list(app).index.position_of(run_id)
    assert position is not None
    return run_list(app).render_line(position + 1).text


class TestMarking:
    async def test_space_marks_the_run_and_moves_down(self, fake: FakeDurably) -> None:
        """`space` marks the selected run (drawn `●` before its glyph) and moves to the next
        row; again, it unmarks it. The filter bar counts the marks."""
        app = make_app(fake)
        async with app.run_test(size=(120, 30)) as pilot:
            await settle(pilot)
            assert run_list(app).selected_id == DONE
            await pilot.press("space")
            assert run_list(app).selected_id == PENDING
            assert run_list(app).marked == {DONE}
            assert line_of(app, DONE).startswith("●✔ completed")
            assert line_of(app, PENDING).startswith(" ○ pending")
            assert "1 marked (esc clears)" in filter_bar(app)
            await pilot.press("space", "k", "k", "space")
            assert run_list(app).marked == {PENDING}

    async def test_escape_clears_the_marks_then_the_filter(self, fake: FakeDurably) -> None:
        """With runs marked, escape unmarks them all; the next escape clears the filter."""
        app = make_app(fake)
        async with app.run_test(size=(120, 30)) as pilot:
            await settle(pilot)
            await pilot.press("f", "space")
            assert run_list(app).marked == {FAILED}
            await pilot.press("escape")
            assert run_list(app).marked == set()
            assert "marked" not in filter_bar(app)
            assert len(run_list(app).index) == 1  # the filter is still on
            await pilot.press("escape")
            assert len(run_list(app).index) == 6

    async def test_star_marks_every_shown_run(self, fake: FakeDurably) -> None:
        """`*` marks every run the filter shows; pressed again, it unmarks them."""
        app = make_app(fake)
        async with app.run_test(size=(120, 30)) as pilot:
            await settle(pilot)
            await pilot.press("J")  # resize-images only
            await pilot.press("asterisk")
            assert run_list(app).marked == {RUNNING, DONE}
            await pilot.press("asterisk")
            assert run_list(app).marked == set()

    async def test_a_deleted_run_loses_its_mark(self, fake: FakeDurably) -> None:
        """A marked run that disappears from the root is no longer marked."""
        app = make_app(fake)
        async with app.run_test(size=(120, 30)) as pilot:
            await settle(pilot)
            await mark(pilot, DONE, OLD_DONE)
            fake.delete_run(DONE)
            app.poll()
            await settle(pilot)
            assert run_list(app).marked == {OLD_DONE}
            assert "1 marked" in filter_bar(app)


class TestActingOnMarkedRuns:
    async def test_one_question_cancels_every_marked_run(self, fake: FakeDurably) -> None:
        """`c` with three runs marked asks once, names how many and which, and says that the
        finished one is left out; `y` cancels the two others, reports in one notification
        and unmarks them all."""
        app = make_app(fake)
        told = notifications(app)
        async with app.run_test(size=(120, 30)) as pilot:
            await settle(pilot)
            await mark(pilot, RUNNING, PENDING, DONE)
            await pilot.press("c")
            assert isinstance(app.screen, ConfirmScreen)
            assert app.screen.question == (
                "Cancel 2 marked runs?\n"
                f"{RUNNING} (resize-images), {PENDING} (send-report)\n"
                "1 other marked run cannot be: already finished (completed); nothing to cancel."
            )
            await pilot.press("y")
            await wait_for(pilot, lambda: any(t.startswith("Cancelled 2 runs") for t in told))
            assert fake.calls == [("cancel", RUNNING), ("cancel", PENDING)]
            report = next(t for t in told if t.startswith("Cancelled 2 runs"))
            assert report == (
                "Cancelled 2 runs.\n"
                f"1 run could not be: {DONE}: already finished (completed); nothing to cancel"
            )
            assert run_list(app).marked == set()
            assert app.index.rows[PENDING].status.value == "cancelled"

    async def test_a_run_durably_refuses_does_not_stop_the_others(self, fake: FakeDurably) -> None:
        """Resuming three marked runs where durably refuses one: the others are resumed, and
        one notification says how many could not be and why."""
        original = fake.resume

        def resume(run_id: str, *, from_step: str | None = None) -> FakeRun:
            if run_id == CANCELLED:
                raise ConflictError("a pending run holds concurrency key 'reports'")
            return original(run_id, from_step=from_step)

        fake.resume = resume  # type: ignore[method-assign]
        fake.put(FakeRun(OTHER_FAILED, "sync-users", fake.runs[FAILED].status))
        app = make_app(fake)
        told = notifications(app)
        async with app.run_test(size=(120, 30)) as pilot:
            await settle(pilot)
            await mark(pilot, FAILED, CANCELLED, OTHER_FAILED, RUNNING)
            await pilot.press("R")
            assert isinstance(app.screen, ConfirmScreen)
            assert app.screen.question.startswith(
                "Resume 3 marked runs (a new run each, replaying its completed steps)?"
            )
            await pilot.press("y")
            await wait_for(pilot, lambda: any(t.startswith("Resumed 2 runs") for t in told))
            report = next(t for t in told if t.startswith("Resumed 2 runs"))
            assert report.startswith(f"Resumed 2 runs (new: {FAILED[:-1]}R, {OTHER_FAILED[:-1]}R).")
            assert "\n2 runs could not be: " in report
            assert f"{RUNNING}: is running: only a failed or cancelled run can be resumed" in report
            assert f"{CANCELLED}: ConflictError: a pending run holds concurrency key 'reports'" in report
            assert FAILED[:-1] + "R" in app.index.rows

    async def test_delete_every_marked_run(self, fake: FakeDurably) -> None:
        """`d` deletes every marked finished run after one question that says it cannot be undone."""
        app = make_app(fake)
        async with app.run_test(size=(120, 30)) as pilot:
            await settle(pilot)
            await mark(pilot, OLD_DONE, DONE, CANCELLED)
            await pilot.press("d")
            assert isinstance(app.screen, ConfirmScreen)
            question = app.screen.question
            assert question.startswith("Delete 3 marked runs and all their files?")
            assert question.endswith("This cannot be undone.")
            await pilot.press("y")
            await wait_for(pilot, lambda: len(app.index.rows) == 3)
            assert {OLD_DONE, DONE, CANCELLED}.isdisjoint(app.index.rows)

    async def test_nothing_to_act_on_asks_nothing(self, fake: FakeDurably) -> None:
        """When no marked run can be acted on, the monitor says why and asks nothing."""
        app = make_app(fake)
        told = notifications(app)
        async with app.run_test(size=(120, 30)) as pilot:
            await settle(pilot)
            await mark(pilot, RUNNING)
            await pilot.press("d")
            assert not isinstance(app.screen, ConfirmScreen)
            assert any(t.startswith("None of the 1 marked run can be deleted: is running") for t in told)
            assert fake.calls == []

    async def test_retrigger_of_marked_runs_needs_the_app(self, fake: FakeDurably) -> None:
        """Without --app, `r` on marked runs says what is needed and asks nothing."""
        app = make_app(fake, can_retrigger=False)
        told = notifications(app)
        async with app.run_test(size=(120, 30)) as pilot:
            await settle(pilot)
            await mark(pilot, FAILED, DONE)
            assert run_list(app).marked == {FAILED, DONE}
            await pilot.press("r")
            assert not isinstance(app.screen, ConfirmScreen)
            assert any("--app module:attr" in t for t in told)

    async def test_in_a_detail_actions_apply_to_the_open_run_only(self, fake: FakeDurably) -> None:
        """Marks belong to the list: in a run's detail, `c` asks about that run alone."""
        app = make_app(fake)
        async with app.run_test(size=(120, 30)) as pilot:
            await settle(pilot)
            await mark(pilot, PENDING)
            assert run_list(app).marked == {PENDING}
            app.open_run(RUNNING)
            await wait_for(pilot, lambda: isinstance(app.screen, RunDetailScreen))
            await pilot.press("c")
            assert isinstance(app.screen, ConfirmScreen)
            assert app.screen.question == f"Cancel run {RUNNING} (resize-images)?"

    async def test_the_palette_offers_the_actions_on_the_marked_runs(self, fake: FakeDurably) -> None:
        """With runs marked, the palette offers each action on all of them and unmarking."""
        app = make_app(fake)
        async with app.run_test(size=(120, 30)) as pilot:
            await settle(pilot)
            await mark(pilot, FAILED, DONE)
            titles = palette(app)
            for wanted in ("Cancel the 2 marked runs", "Resume the 2 marked runs", "Unmark every run"):
                assert wanted in titles
            assert "Cancel run" not in titles
