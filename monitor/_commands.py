"""Command palette (ctrl+p) entries for the actions on a run.

`MonitorApp.get_system_commands` yields these, then the open screen's own commands (the run
list's filters and sorts), then Textual's. This module sees the app only through the small
`CommandHost` protocol, so it never imports the app.
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import partial
from typing import Literal, Protocol

from textual.app import SystemCommand

from ._model import RunRow

Action = Literal["cancel", "retrigger", "delete"]


class CommandHost(Protocol):
    """What the palette needs from the app."""

    @property
    def actions_allowed(self) -> bool:
        """False when the monitor must not write."""
        ...

    def target_run(self) -> RunRow | None:
        """The run an action applies to."""
        ...

    def open_run(self, run_id: str) -> None:
        """Show a run's detail."""
        ...

    def action_copy_id(self) -> None:
        """Copy the target run's id."""
        ...

    def action_act(self, action: Action) -> None:
        """Ask, then cancel, retrigger or delete the target run."""
        ...

    def action_signal(self) -> None:
        """Ask for a signal and send it to the target run."""
        ...

    def action_parent(self) -> None:
        """Open the target run's parent."""
        ...

    def action_workers(self) -> None:
        """Show the live worker processes."""
        ...

    def action_pause(self) -> None:
        """Pause or resume live updates."""
        ...

    def action_help(self) -> None:
        """Show every key."""
        ...


def run_commands(host: CommandHost) -> Iterator[SystemCommand]:
    """The actions on the target run (those that write only when allowed), its parent, the
    workers view, pause and help."""
    row = host.target_run()
    if row is not None:
        yield SystemCommand("Copy run id", f"y: copy {row.id}", host.action_copy_id)
        if host.actions_allowed:
            yield SystemCommand("Cancel run", f"c: cancel {row.id}", partial(host.action_act, "cancel"))
            yield SystemCommand("Retrigger run", f"r: rerun {row.id}", partial(host.action_act, "retrigger"))
            yield SystemCommand("Delete run", f"d: delete {row.id}", partial(host.action_act, "delete"))
            if not row.is_terminal:
                yield SystemCommand(
                    "Send signal", f"n: send a signal with JSON data to {row.id}", host.action_signal
                )
        yield SystemCommand("Open run", f"enter: details of {row.id}", partial(host.open_run, row.id))
        if row.parent_id:
            yield SystemCommand("Open parent run", f"p: {row.parent_id}", host.action_parent)
    yield SystemCommand("Workers", "w: the live worker processes", host.action_workers)
    yield SystemCommand("Pause / resume live updates", "space", host.action_pause)
    yield SystemCommand("Help: keys", "?", host.action_help)
