"""Which run the keys apply to, and where they take the user: a run's detail, its parent, the
run it resumes, the workers and schedules views, the help.

`Navigation` is the first base class of `MonitorApp` (then `_actions.RunActions`): it owns the
screen stack's moves, so the actions and the app only say which run to show.
"""

from __future__ import annotations

from textual.app import App

from ._backend import Source
from ._detail import RunDetailScreen
from ._dialogs import HelpScreen
from ._model import RunRow
from ._runlist import RunList
from ._runs_screen import RunsScreen
from ._schedules_screen import SchedulesScreen
from ._state import MonitorState
from ._workers_screen import WorkersScreen


class Navigation(App[None]):
    """The run the keys apply to, and the moves between screens (see the module docstring)."""

    source: Source
    state: MonitorState

    @property
    def runs_screen(self) -> RunsScreen | None:
        """The main screen, at the bottom of the stack; None once the app closed its screens
        (a timer or a late message can still run then, on a loaded machine)."""
        stack = self.screen_stack
        screen = stack[0] if stack else None
        return screen if isinstance(screen, RunsScreen) else None

    def target_run(self) -> RunRow | None:
        """The run an action applies to: the open run, else the selected row (none from the
        workers and schedules views)."""
        for screen in reversed(self.screen_stack):
            if isinstance(screen, WorkersScreen | SchedulesScreen):
                return None
            if isinstance(screen, RunDetailScreen):
                return self.state.index.rows.get(screen.run_id) or screen.row
            if isinstance(screen, RunsScreen):
                break
        screen = self.runs_screen
        selected = None if screen is None else screen.run_list.selected_id
        return None if selected is None else self.state.index.rows.get(selected)

    def marked_runs(self) -> list[RunRow]:
        """The runs marked in the run list, oldest first, while the list is on top (in a
        run's detail an action applies to that run only)."""
        screen = self.runs_screen
        if screen is None or self.screen is not screen:
            return []
        rows = self.state.index.rows
        return [rows[i] for i in sorted(screen.run_list.marked) if i in rows]

    def clear_marks(self) -> None:
        """Unmark every run."""
        screen = self.runs_screen
        if screen is not None:
            screen.run_list.clear_marks()

    def open_run(self, run_id: str) -> None:
        """Show the detail screen of `run_id`; if it is the detail just below (a child
        opened from its parent, then the parent from the child), go back to it instead."""
        stack = self.screen_stack
        below = stack[-2] if len(stack) >= 2 else None
        if isinstance(below, RunDetailScreen) and below.run_id == run_id:
            self.pop_screen()
            return
        self.push_screen(self.detail_screen(run_id))

    def detail_screen(self, run_id: str) -> RunDetailScreen:
        """A new detail screen of `run_id`."""
        return RunDetailScreen(
            run_id, self.state.index.rows.get(run_id), source=self.source, state=self.state
        )

    def show_new_run(self, run_id: str, new_id: str) -> None:
        """Put the cursor on `new_id`, made from `run_id` by a retrigger or a resume (showing
        every run if the filter hides it); a detail screen of `run_id` moves on to it."""
        screen = self.runs_screen
        if screen is None:
            return
        if not screen.run_list.select(new_id):
            screen.action_clear_filters()
            screen.run_list.select(new_id)
            self.notify("Filter cleared to show the new run", timeout=3)
        top = self.screen
        if isinstance(top, RunDetailScreen) and top.run_id == run_id:
            top.show_run(new_id, self.state.index.rows.get(new_id))

    def action_parent(self) -> None:
        """Open the parent of the target run (a child run of `step.invoke`)."""
        row = self.target_run()
        if row is None:
            return
        if row.parent_id is None:
            self.notify(f"{row.id} is not a child run: it has no parent.", timeout=3)
            return
        self.open_run(row.parent_id)

    def action_original(self) -> None:
        """Open the run the target run was resumed from (`Run.resumed_from`)."""
        row = self.target_run()
        if row is None:
            return
        if row.resumed_from is None:
            self.notify(f"{row.id} was not resumed from another run.", timeout=3)
            return
        self.open_run(row.resumed_from)

    def action_workers(self) -> None:
        """Show the live worker processes."""
        if not isinstance(self.screen, WorkersScreen):
            self.push_screen(WorkersScreen(self.source, self.state))

    def action_schedules(self) -> None:
        """Show the root's cron schedules."""
        if not isinstance(self.screen, SchedulesScreen):
            self.push_screen(SchedulesScreen(self.source, self.state))

    def action_help(self) -> None:
        """Show every key."""
        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen())

    def action_copy_id(self) -> None:
        """Copy the run id to the clipboard."""
        row = self.target_run()
        if row is not None:
            self.copy_to_clipboard(row.id)
            self.notify(f"Copied {row.id}", timeout=2)

    def on_run_detail_screen_open_run(self, message: RunDetailScreen.OpenRun) -> None:
        self.open_run(message.run_id)

    def on_workers_screen_open_run(self, message: WorkersScreen.OpenRun) -> None:
        self.open_run(message.run_id)

    def on_schedules_screen_open_run(self, message: SchedulesScreen.OpenRun) -> None:
        self.open_run(message.run_id)

    def on_run_list_opened(self, message: RunList.Opened) -> None:
        self.open_run(message.run_id)
