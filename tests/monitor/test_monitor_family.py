"""Child runs linked both ways (`step.invoke`): from a child, `p` opens its parent; from a
parent, `C` lists its children and `enter` opens one; escape walks back. And the workers
view (`w`): every live worker process, kept up to date."""

from __future__ import annotations

from typing import Any

from monitor_fakes import (
    CHILD,
    CHILD_DONE,
    EXPORTING,
    NOW,
    PARENT,
    SIGNAL,
    FakeWorker,
    waiting_sample,
)
from monitor_helpers import make_app, palette, settle, text_of, wait_for
from textual.pilot import Pilot
from textual.widgets import DataTable, Static, TabbedContent

from durably import RunStatus
from durably_monitor._detail import RunDetailScreen
from durably_monitor._dialogs import HelpScreen
from durably_monitor._runlist import RunList
from durably_monitor._workers_screen import WorkersScreen


async def open_detail(pilot: Pilot[Any], run_id: str) -> RunDetailScreen:
    await settle(pilot)
    assert pilot.app.screen.query_one(RunList).select(run_id)
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


def summary(screen: RunDetailScreen) -> str:
    return text_of(screen.query_one("#summary", Static))


def children_rows(screen: RunDetailScreen) -> list[str]:
    table = screen.query_one("#children-table", DataTable)
    return [" ".join(str(c) for c in table.get_row_at(i)) for i in range(table.row_count)]


class TestParent:
    async def test_a_child_names_its_parent_and_p_opens_it(self) -> None:
        """The child's summary names its parent (job and step); `p` opens the parent's
        detail, and escape comes back to the child."""
        app = make_app(waiting_sample())
        async with app.run_test(size=(140, 40)) as pilot:
            child = await open_detail(pilot, CHILD)
            assert f"child of {PARENT} (resize-batch, step image-1)   p opens it" in summary(child)
            await pilot.press("p")
            await detail_of(pilot, PARENT)
            await pilot.press("escape")
            await detail_of(pilot, CHILD)
            await pilot.press("escape")
            await settle(pilot)
            assert isinstance(app.screen.query_one(RunList), RunList)

    async def test_p_works_from_the_list_too(self) -> None:
        """On a selected child row, `p` opens the parent; on a run without one, it says so."""
        app = make_app(waiting_sample())
        async with app.run_test(size=(140, 40)) as pilot:
            await settle(pilot)
            assert app.screen.query_one(RunList).select(CHILD_DONE)
            assert "Open parent run" in palette(app)
            await pilot.press("p")
            await detail_of(pilot, PARENT)
            await pilot.press("escape")
            await settle(pilot)
            assert app.screen.query_one(RunList).select(SIGNAL)
            assert "Open parent run" not in palette(app)
            await pilot.press("p")
            await settle(pilot)
            assert not isinstance(app.screen, RunDetailScreen)


class TestChildren:
    async def test_a_parent_lists_its_children(self) -> None:
        """The parent's summary counts its children; `C` opens the Children tab listing them
        (job, id, the step that invoked each, what each waits for)."""
        app = make_app(waiting_sample())
        async with app.run_test(size=(140, 40)) as pilot:
            parent = await open_detail(pilot, PARENT)
            assert "2 child runs (1 completed, 1 waiting)   C lists them" in summary(parent)
            await pilot.press("C")
            await settle(pilot)
            assert parent.query_one("#tabs", TabbedContent).active == "children"
            rows = children_rows(parent)
            assert len(rows) == 2
            assert "resize-image" in rows[0]
            assert CHILD_DONE[-12:] in rows[0]
            assert "image-0" in rows[0]
            assert rows[0].endswith("completed")
            assert "image-1" in rows[1]
            assert "sleeps until 19:15 (in 45m)" in rows[1]

    async def test_enter_opens_a_child_and_p_goes_back_to_the_parent(self) -> None:
        """From the Children tab `enter` opens the child; `p` there returns to the parent
        below it (the stack does not grow)."""
        app = make_app(waiting_sample())
        async with app.run_test(size=(140, 40)) as pilot:
            await open_detail(pilot, PARENT)
            depth = len(app.screen_stack)
            await pilot.press("C", "j", "enter")
            await detail_of(pilot, CHILD)
            assert len(app.screen_stack) == depth + 1
            await pilot.press("p")
            await detail_of(pilot, PARENT)
            assert len(app.screen_stack) == depth

    async def test_enter_on_a_step_that_invoked_a_child_opens_it(self) -> None:
        """In the step timeline a child step is marked `↗` and `enter` opens its child."""
        app = make_app(waiting_sample())
        async with app.run_test(size=(140, 40)) as pilot:
            await open_detail(pilot, PARENT)
            await pilot.press("g", "enter")
            await detail_of(pilot, CHILD_DONE)

    async def test_the_children_follow_their_changes(self) -> None:
        """A child that ends is shown ended in its parent's Children tab at the next poll."""
        fake = waiting_sample()
        app = make_app(fake)
        async with app.run_test(size=(140, 40)) as pilot:
            parent = await open_detail(pilot, PARENT)
            await pilot.press("C")
            fake.update(CHILD, status=RunStatus.COMPLETED, waiting_for=None, wake_at=None, completed_at=NOW)
            app.poll()
            await wait_for(pilot, lambda: children_rows(parent)[1].endswith("completed"))
            await wait_for(pilot, lambda: "2 child runs (2 completed)" in summary(parent))

    async def test_a_run_without_children_has_no_children_tab(self) -> None:
        """The Children tab is hidden, and `C` says there is nothing to list."""
        app = make_app(waiting_sample())
        async with app.run_test(size=(140, 40)) as pilot:
            screen = await open_detail(pilot, SIGNAL)
            tabs = screen.query_one(TabbedContent)
            assert tabs.get_tab("children").display is False
            await pilot.press("C")
            assert tabs.active != "children"

    async def test_the_palette_opens_each_child(self) -> None:
        """The parent's palette has one entry per child run."""
        app = make_app(waiting_sample())
        async with app.run_test(size=(140, 40)) as pilot:
            await open_detail(pilot, PARENT)
            names = palette(app)
            assert f"Open child run {CHILD}" in names
            assert f"Open child run {CHILD_DONE}" in names


def workers_rows(screen: WorkersScreen) -> list[str]:
    table = screen.query_one("#workers", DataTable)
    return [" ".join(str(c) for c in table.get_row_at(i)) for i in range(table.row_count)]


async def open_workers(pilot: Pilot[Any]) -> WorkersScreen:
    await settle(pilot)
    await pilot.press("w")
    await settle(pilot)
    screen = pilot.app.screen
    assert isinstance(screen, WorkersScreen)
    await wait_for(pilot, lambda: screen.worker_rows is not None)
    return screen


class TestWorkers:
    async def test_w_lists_every_live_worker(self) -> None:
        """Host, pid, jobs, runs in flight, started and last seen; escape goes back."""
        app = make_app(waiting_sample())
        async with app.run_test(size=(160, 30)) as pilot:
            screen = await open_workers(pilot)
            rows = workers_rows(screen)
            assert rows[0].split()[:4] == ["vm-1", "4242", "approve-order,", "slow-export"]
            assert EXPORTING in rows[0]
            assert "11-28 17:30:00 (1h ago)" in rows[0]
            assert rows[0].endswith("3s ago")
            assert rows[1].split()[:2] == ["vm-2", "977"]
            note = text_of(screen.query_one("#workers-note", Static))
            assert "2 live workers, 1 run in flight" in note
            await pilot.press("escape")
            await settle(pilot)
            assert not isinstance(app.screen, WorkersScreen)

    async def test_at_80_columns_every_column_fits(self) -> None:
        """A narrow view shortens start times, run ids and job lists so that nothing is cut."""
        app = make_app(waiting_sample())
        async with app.run_test(size=(80, 24)) as pilot:
            screen = await open_workers(pilot)
            table = screen.query_one("#workers", DataTable)
            await wait_for(pilot, lambda: table.virtual_size.width <= table.size.width)
            row = workers_rows(screen)[0]
            assert f"…{EXPORTING[-12:]}" in row
            assert row.endswith("1h ago 3s ago")

    async def test_the_view_follows_the_heartbeats(self) -> None:
        """A worker that starts, and one that stops, show at the next read (every second)."""
        fake = waiting_sample()
        app = make_app(fake)
        async with app.run_test(size=(160, 30)) as pilot:
            screen = await open_workers(pilot)
            with fake.lock:
                fake.workers = [fake.workers[0], FakeWorker("vm-3", 12, ("resize-image",), ())]
            screen.refresh_workers()
            await wait_for(pilot, lambda: [r.split()[0] for r in workers_rows(screen)] == ["vm-1", "vm-3"])
            with fake.lock:
                fake.workers = []
            await wait_for(pilot, lambda: workers_rows(screen) == [], timeout=5)
            assert "No live worker" in text_of(screen.query_one("#workers-note", Static))

    async def test_enter_opens_the_run_a_worker_has_in_flight(self) -> None:
        """`enter` on a busy worker opens its run; escape comes back to the workers."""
        fake = waiting_sample()
        app = make_app(fake)
        async with app.run_test(size=(160, 30)) as pilot:
            await open_workers(pilot)
            await pilot.press("enter")
            await detail_of(pilot, EXPORTING)
            await pilot.press("escape")
            await settle(pilot)
            assert isinstance(app.screen, WorkersScreen)

    async def test_no_run_actions_in_the_workers_view(self) -> None:
        """The workers view has no selected run: its footer and palette offer no run action."""
        fake = waiting_sample()
        app = make_app(fake)
        async with app.run_test(size=(160, 30)) as pilot:
            await open_workers(pilot)
            assert "Cancel run" not in palette(app)
            assert "Workers" in palette(app)
            await pilot.press("c")
            await settle(pilot)
            assert fake.calls == []

    async def test_it_works_on_a_read_only_root(self) -> None:
        """Reading heartbeats writes nothing: the view is there on a read-only root."""
        fake = waiting_sample()
        fake.read_only = True
        app = make_app(fake)
        async with app.run_test(size=(160, 30)) as pilot:
            screen = await open_workers(pilot)
            assert len(workers_rows(screen)) == 2

    async def test_the_new_keys_are_in_the_help(self) -> None:
        """`?` lists the signal, parent, children and workers keys (80 columns has no room
        for them in the footer)."""
        app = make_app(waiting_sample())
        async with app.run_test(size=(80, 24)) as pilot:
            await settle(pilot)
            await pilot.press("question_mark")
            await settle(pilot)
            assert isinstance(app.screen, HelpScreen)
            sheet = text_of(app.screen.query_one("#sheet", Static))
            for words in ("send a signal", "open the parent", "child runs", "workers: the live"):
                assert words in sheet

