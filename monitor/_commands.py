"""Command palette (ctrl+p) entries for the actions on a run, or on the marked runs.

`MonitorApp.get_system_commands` yields these, then the open screen's own commands (the run
list's filters and sorts), then Textual's. This module sees the app only through the small
`CommandHost` protocol, so it never imports the app.
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import partial
from typing import Protocol

from textual.app import SystemCommand

from ._asking import Action
from ._model import RunRow

_ACTIONS: list[tuple[Action, str, str]] = [
    ("cancel", "Cancel", "c"),
    ("retrigger", "Retrigger", "r"),
    ("resume", "Resume", "R"),
    ("delete", "Delete", "d"),
]


class CommandHost(Protocol):
    """What the palette needs from the app."""

    @property
    def actions_allowed(self) -> bool:
        """False when the monitor must not write."""
        ...

    def target_run(self) -> RunRow | None:
        """The run an action applies to."""
        ...

    def marked_runs(self) -> list[RunRow]:
        """The marked runs an action applies to instead (none outside the run list)."""
        ...

    def clear_marks(self) -> None:
        """Unmark every run."""
        ...

    def open_run(self, run_id: str) -> None:
        """Show a run's detail."""
        ...

    def action_copy_id(self) -> None:
        """Copy the target run's id."""
        ...

    def action_act(self, action: Action) -> None:
        """Ask, then cancel, retrigger, delete or resume the target run (or the marked runs)."""
        ...

    def action_signal(self) -> None:
        """Ask for a signal and send it to the target run."""
        ...

    def action_parent(self) -> None:
        """Open the target run's parent."""
        ...

    def action_original(self) -> None:
        """Open the run the target run was resumed from."""
        ...

    def action_workers(self) -> None:
        """Show the live worker processes."""
        ...

    def action_schedules(self) -> None:
        """Show the cron schedules."""
        ...

    def action_pause(self) -> None:
        """Pause or resume live updates."""
        ...

    def action_help(self) -> None:
        """Show every key."""
        ...


def run_commands(host: CommandHost) -> Iterator[SystemCommand]:
    """The actions on the marked runs, else on the target run (those that write only when
    allowed), its parent and original, the workers and schedules views, pause and help."""
    marked = host.marked_runs()
    if marked:
        n = len(marked)
        noun = "run" if n == 1 else "runs"
        if host.actions_allowed:
            for action, verb, key in _ACTIONS:
                yield SystemCommand(
                    f"{verb} the {n} marked {noun}",
                    f"{key}: asks once for all",
                    partial(host.action_act, action),
                )
        yield SystemCommand("Unmark every run", f"escape: clear the {n} marks", host.clear_marks)
    row = host.target_run()
    if row is not None:
        yield SystemCommand("Copy run id", f"y: copy {row.id}", host.action_copy_id)
        if host.actions_allowed and not marked:
            for action, verb, key in _ACTIONS:
                yield SystemCommand(
                    f"{verb} run", f"{key}: {verb.lower()} {row.id}", partial(host.action_act, action)
                )
            if not row.is_terminal:
                yield SystemCommand(
                    "Send signal", f"n: send a signal with JSON data to {row.id}", host.action_signal
                )
        yield SystemCommand("Open run", f"enter: details of {row.id}", partial(host.open_run, row.id))
        if row.parent_id:
            yield SystemCommand("Open parent run", f"p: {row.parent_id}", host.action_parent)
        if row.resumed_from:
            yield SystemCommand("Open the run it resumes", f"o: {row.resumed_from}", host.action_original)
    yield SystemCommand("Workers", "w: the live worker processes", host.action_workers)
    yield SystemCommand("Schedules", "S: the cron schedules, next and last runs", host.action_schedules)
    yield SystemCommand("Pause / resume live updates", "P", host.action_pause)
    yield SystemCommand("Help: keys", "?", host.action_help)
