"""Command palette (ctrl+p) entries for the monitor's actions and filters."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from functools import partial
from typing import TYPE_CHECKING

from textual.command import DiscoveryHit, Hit, Hits, Provider

if TYPE_CHECKING:
    from ._app import MonitorApp

Command = tuple[str, str, Callable[[], object]]


class RunCommands(Provider):
    """Actions on the selected run, filters, sorting and view toggles."""

    def _commands(self) -> Iterator[Command]:
        from ._app import MonitorApp  # noqa: PLC0415 (import cycle)
        from ._runs_screen import RunsScreen  # noqa: PLC0415

        app = self.app
        if not isinstance(app, MonitorApp):
            return
        row = app.target_run()
        if row is not None:
            yield ("Copy run id", f"copy {row.id}", app.action_copy_id)
            if app.actions_allowed:
                yield ("Cancel run", f"cancel {row.id}", partial(app.action_act, "cancel"))
                yield ("Retrigger run", f"rerun {row.id}", partial(app.action_act, "retrigger"))
                yield ("Delete run", f"delete {row.id}", partial(app.action_act, "delete"))
            yield ("Open run", f"details of {row.id}", partial(app.open_run, row.id))
        yield ("Pause / resume live updates", "space", app.action_pause)
        yield ("Help: keys", "?", app.action_help)
        screen = app.runs_screen
        if not isinstance(screen, RunsScreen) or self.screen is not screen:
            return
        yield ("Show failed runs", "f", screen.action_failed)
        yield ("Show all runs", "clear every filter", screen.action_clear_filters)
        yield ("Search runs", "/", screen.action_search)
        yield ("Next sort column", "s", screen.action_sort)
        yield ("Reverse sort order", "S", screen.action_reverse)
        yield ("Relative / absolute times", "t", screen.action_toggle_time)
        for job in sorted(_jobs(app)):
            yield (f"Filter by job: {job}", "show only this job", partial(_only_job, app, job))

    async def discover(self) -> Hits:
        """Every command, for the empty palette."""
        for name, help_text, callback in self._commands():
            yield DiscoveryHit(name, callback, help=help_text)

    async def search(self, query: str) -> Hits:
        """Commands whose name matches `query`."""
        matcher = self.matcher(query)
        for name, help_text, callback in self._commands():
            score = matcher.match(name)
            if score > 0:
                yield Hit(score, matcher.highlight(name), callback, help=help_text)


def _jobs(app: MonitorApp) -> list[str]:
    return list(app.index.jobs)


def _only_job(app: MonitorApp, job: str) -> None:
    from ._index import RunFilter  # noqa: PLC0415

    screen = app.runs_screen
    current = app.index.filter
    screen.apply_filter(RunFilter(current.statuses, job, current.label, current.text))
