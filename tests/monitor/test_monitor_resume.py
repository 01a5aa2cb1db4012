"""Resuming ended runs from the monitor (`Durably.resume`): `R` resumes a failed or cancelled
run, `s` in the step timeline resumes from the selected step, each asked first; and the
"resumed from" links both ways (`o` opens the original, `O` lists the runs resumed from it)."""

from __future__ import annotations

from typing import Any

import pytest
from monitor_fakes import FakeDurably, FakeRun
from monitor_helpers import make_app, notifications, palette, settle, text_of, wait_for
from textual.pilot import Pilot
from textual.widgets import DataTable, Static, TabbedContent

from durably import ConflictError, NotFoundError, RunStatus, ValidationError
from durably_monitor._detail import RunDetailScreen
from durably_monitor._dialogs import ConfirmScreen
from durably_monitor._index import RunIndex
from durably_monitor._model import row_from_run
from durably_monitor._runlist import RunList
from durably_monitor._widgets import MonitorFooter

FAILED = "01JDQ0000000000000000000A2"
CANCELLED = "01JDQ0000000000000000000A3"
RUNNING = "01JDQ0000000000000000000A4"
DONE = "01JDQ0000000000000000000A6"
RESUMED = "01JDQ0000000000000000000AR"  # the id FakeDurably gives the first resume of A2


def run_list(app: Any) -> RunList:
    return app.screen.query_one(RunList)  # type: ignore[no-any-return]


async def open_detail(pilot: Pilot[Any], run_id: str) -> RunDetailScreen:
    await settle(pilot)
    assert run_list(pilot.app).select(run_id)
    await pilot.press("enter")
    return await detail_of(pilot, run_id)


async def detail_of(pilot: Pilot[Any], run_id: str) -> RunDetailScreen:
    """Wait until the top screen is the loaded detail of `run_id`."""
    await settle(pilot)
    await wait_for(
        pilot,
        lambda: isinstance(pilot.app.screen, RunDetailScreen)
        and pilot.app.screen.run_id == run_id
        and pilot.app.screen.detail is not None,
    )
    screen = pilot.app.screen
    assert isinstance(screen, RunDetailScreen)
    return screen


def question(app: Any) -> str:
    assert isinstance(app.screen, ConfirmScreen)
    return str(app.screen.question)


def summary(screen: RunDetailScreen) -> str:
    return text_of(screen.query_one("#summary", Static)).replace("\n", " ")


def footer_keys(app: Any) -> str:
    footer = app.screen.query_one(MonitorFooter)
    return " ".join(text_of(k).strip() for k in footer.query_children("FooterKey") if k.display)


class TestResume:
    async def test_R_in_the_detail_resumes_the_failed_run(self, fake: FakeDurably) -> None:
        """`R` asks (naming the run and the steps it replays), then resumes it; the detail
        moves on to the new run and the list's cursor is on it."""
        app = make_app(fake)
        async with app.run_test(size=(120, 40)) as pilot:
            await open_detail(pilot, FAILED)
            await pilot.press("R")
            assert question(app) == (
                f"Resume run {FAILED} (sync-users)?\n"
                "A new run replays its 3 completed steps and runs the rest."
            )
            await pilot.press("y")
            await detail_of(pilot, RESUMED)
            assert fake.resumed == [(FAILED, None)]
            await pilot.press("escape")
            await settle(pilot)
            assert run_list(app).selected_id == RESUMED

    async def test_R_in_the_list_resumes_a_cancelled_run(self, fake: FakeDurably) -> None:
        """From the list, `R` on a cancelled run resumes it and the cursor jumps to the new run."""
        app = make_app(fake)
        told = notifications(app)
        async with app.run_test() as pilot:
            await settle(pilot)
            assert run_list(app).select(CANCELLED)
            await pilot.press("R", "y")
            new = CANCELLED[:-1] + "R"
            await wait_for(pilot, lambda: run_list(app).selected_id == new)
            assert fake.resumed == [(CANCELLED, None)]
            assert f"Resumed {CANCELLED} as {new}" in told

    async def test_s_resumes_from_the_selected_step(self, fake: FakeDurably) -> None:
        """In the step timeline, `s` on a step asks to resume from it (the steps before it
        are replayed) and then does; the detail moves on to the new run."""
        app = make_app(fake)
        async with app.run_test(size=(120, 40)) as pilot:
            await open_detail(pilot, FAILED)
            await pilot.press("g", "j", "j")  # sync-2: fetch-users and sync-1 come before it
            await pilot.press("s")
            assert question(app) == (
                f"Resume run {FAILED} (sync-users) from step 'sync-2'?\n"
                "A new run replays the 2 steps before it; 'sync-2' and every step after it run again."
            )
            await pilot.press("y")
            await detail_of(pilot, RESUMED)
            assert fake.resumed == [(FAILED, "sync-2")]

    async def test_answering_no_resumes_nothing(self, fake: FakeDurably) -> None:
        """`n` or escape on the question writes nothing."""
        app = make_app(fake)
        async with app.run_test(size=(120, 40)) as pilot:
            await open_detail(pilot, FAILED)
            await pilot.press("R")
            assert isinstance(app.screen, ConfirmScreen)
            await pilot.press("n", "s")
            assert isinstance(app.screen, ConfirmScreen)
            await pilot.press("escape")
            await settle(pilot)
            assert isinstance(app.screen, RunDetailScreen)
            assert fake.calls == []

    async def test_without_an_app_resume_says_so(self, fake: FakeDurably) -> None:
        """Without `--app` (resume validates the input against the job) both keys explain
        what to do and ask nothing."""
        app = make_app(fake, can_retrigger=False)
        told = notifications(app)
        async with app.run_test(size=(120, 40)) as pilot:
            await open_detail(pilot, FAILED)
            await pilot.press("R")
            assert not isinstance(app.screen, ConfirmScreen)
            await pilot.press("s")
            assert not isinstance(app.screen, ConfirmScreen)
            needs = [t for t in told if t.startswith("Resume re-validates") and "--app module:attr" in t]
            assert len(needs) == 2
            assert fake.calls == []

    async def test_runs_that_cannot_be_resumed_are_explained(self, fake: FakeDurably) -> None:
        """A running run is not resumed; a completed one only from a step: each is explained,
        nothing is asked."""
        app = make_app(fake)
        told = notifications(app)
        async with app.run_test() as pilot:
            await settle(pilot)
            assert run_list(app).select(RUNNING)
            await pilot.press("R")
            assert not isinstance(app.screen, ConfirmScreen)
            assert run_list(app).select(DONE)
            await pilot.press("R")
            assert not isinstance(app.screen, ConfirmScreen)
            refusal = f"{RUNNING} is running: only a failed or cancelled run can be resumed"
            assert any(refusal in t for t in told)
            assert any("a completed run resumes only from a step" in t and "press s" in t for t in told)
            assert fake.calls == []

    @pytest.mark.parametrize(
        "error",
        [
            ConflictError("a pending run holds concurrency key 'reports'"),
            ValidationError("input no longer matches the job: org_id: field required"),
            NotFoundError("job 'sync-users' is not registered"),
        ],
        ids=["conflict", "validation", "not-found"],
    )
    async def test_durably_refusals_are_shown(self, fake: FakeDurably, error: Exception) -> None:
        """What durably refuses is a notification naming the error and why; the monitor
        stays on the run."""

        def refuse(run_id: str, *, from_step: str | None = None) -> FakeRun:
            raise error

        fake.resume = refuse  # type: ignore[method-assign]
        app = make_app(fake)
        told = notifications(app)
        async with app.run_test(size=(120, 40)) as pilot:
            await open_detail(pilot, FAILED)
            await pilot.press("s", "y")
            await wait_for(pilot, lambda: any(t.startswith("Resume failed") for t in told))
            assert f"Resume failed ({type(error).__name__}): {error}" in told
            assert isinstance(app.screen, RunDetailScreen)
            assert app.screen.run_id == FAILED

    async def test_read_only_hides_both_keys(self, fake: FakeDurably) -> None:
        """With --read-only neither key is in the footer (a writable monitor shows both), and
        pressing them asks nothing."""
        writable = make_app(fake)
        async with writable.run_test(size=(160, 40)) as pilot:
            await open_detail(pilot, FAILED)
            assert "R Resume" in footer_keys(writable)
            assert "s Resume from step" in footer_keys(writable)
        app = make_app(fake, read_only=True)
        async with app.run_test(size=(160, 40)) as pilot:
            await open_detail(pilot, FAILED)
            keys = footer_keys(app)
            assert "Resume" not in keys
            await pilot.press("R", "s")
            assert not isinstance(app.screen, ConfirmScreen)
            assert fake.calls == []

    async def test_the_keys_are_in_the_footer_and_the_palette(self, fake: FakeDurably) -> None:
        """The detail's footer shows resume and resume-from-step; the palette offers both."""
        app = make_app(fake)
        async with app.run_test(size=(160, 40)) as pilot:
            await open_detail(pilot, FAILED)
            keys = footer_keys(app)
            assert "R Resume" in keys
            assert "s Resume from step" in keys
            assert {"Resume run", "Resume from the selected step"} <= set(palette(app))


def resumed_sample(fake: FakeDurably) -> FakeDurably:
    """`fake` with two runs resumed from the failed run: one failed again, one pending."""
    fake.put(
        FakeRun(FAILED[:-1] + "R", "sync-users", RunStatus.FAILED, error="boom", resumed_from=FAILED)
    )
    fake.put(FakeRun(FAILED[:-1] + "S", "sync-users", RunStatus.PENDING, resumed_from=FAILED))
    return fake


class TestResumedFrom:
    async def test_a_resumed_run_names_its_original_and_o_opens_it(self, fake: FakeDurably) -> None:
        """The resumed run's summary says `resumed from <id> (failed)   o opens it`; `o`
        opens the original, escape comes back."""
        app = make_app(resumed_sample(fake))
        async with app.run_test(size=(140, 40)) as pilot:
            screen = await open_detail(pilot, RESUMED)
            assert f"resumed from {FAILED} (failed)   o opens it" in summary(screen)
            await pilot.press("o")
            await detail_of(pilot, FAILED)
            await pilot.press("escape")
            await detail_of(pilot, RESUMED)

    async def test_o_works_from_the_list_and_explains_otherwise(self, fake: FakeDurably) -> None:
        """On a selected resumed run `o` opens its original; on another run it says why not."""
        app = make_app(resumed_sample(fake))
        told = notifications(app)
        async with app.run_test(size=(140, 40)) as pilot:
            await settle(pilot)
            assert run_list(app).select(RESUMED)
            assert "Open the run it resumes" in palette(app)
            await pilot.press("o")
            await detail_of(pilot, FAILED)
            await pilot.press("escape")
            await settle(pilot)
            assert run_list(app).select(DONE)
            await pilot.press("o")
            assert f"{DONE} was not resumed from another run." in told

    async def test_the_original_lists_the_runs_resumed_from_it(self, fake: FakeDurably) -> None:
        """The original's summary counts its resumed runs; `O` opens the Resumes tab
        listing them (id, created, status), and `enter` opens one."""
        app = make_app(resumed_sample(fake))
        async with app.run_test(size=(140, 40)) as pilot:
            screen = await open_detail(pilot, FAILED)
            assert (
                f"resumed as 2 runs (1 failed, 1 pending), newest {FAILED[:-1]}S   O lists them"
                in summary(screen)
            )
            await pilot.press("O")
            await settle(pilot)
            assert screen.query_one("#tabs", TabbedContent).active == "resumes"
            table = screen.query_one("#resumes-table", DataTable)
            rows = [" ".join(str(c) for c in table.get_row_at(i)) for i in range(table.row_count)]
            assert len(rows) == 2
            assert RESUMED[-12:] in rows[0]
            assert rows[0].endswith("failed")
            assert rows[1].endswith("pending")
            await pilot.press("j", "enter")
            await detail_of(pilot, FAILED[:-1] + "S")

    async def test_a_run_resumed_from_the_monitor_shows_up_in_its_original(self, fake: FakeDurably) -> None:
        """After `R`, the original's detail (opened from the new run with `o`) lists it."""
        app = make_app(fake)
        async with app.run_test(size=(140, 40)) as pilot:
            await open_detail(pilot, FAILED)
            await pilot.press("R", "y")
            new = await detail_of(pilot, RESUMED)
            await wait_for(pilot, lambda: "resumed from" in summary(new))
            await pilot.press("o")
            original = await detail_of(pilot, FAILED)
            await wait_for(pilot, lambda: "resumed as 1 run (1 pending)" in summary(original))

    async def test_a_run_never_resumed_has_no_resumes_tab(self, fake: FakeDurably) -> None:
        """Without resumed runs the tab stays hidden and `O` says so."""
        app = make_app(fake)
        told = notifications(app)
        async with app.run_test(size=(140, 40)) as pilot:
            screen = await open_detail(pilot, FAILED)
            await pilot.press("O")
            assert screen.query_one("#tabs", TabbedContent).active != "resumes"
            assert "No run was resumed from this one." in told


class TestIndex:
    def test_resumes_follow_the_diffs(self, fake: FakeDurably) -> None:
        """The index knows the runs resumed from a run, and forgets one that is deleted."""
        resumed_sample(fake)
        index = RunIndex()
        index.replace_all([row_from_run(r) for r in fake.runs.values()], fake.runs[FAILED].created_at)
        assert [r.id[-2:] for r in index.resumes_of(FAILED)] == ["AR", "AS"]
        index.apply([], [RESUMED])
        assert [r.id[-2:] for r in index.resumes_of(FAILED)] == ["AS"]
        index.apply([], [FAILED[:-1] + "S"])
        assert index.resumes_of(FAILED) == []
