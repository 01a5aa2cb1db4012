"""The schedules view (`S`): the root's cron schedules (SPEC §10), with the next tick
counting down and the last run fired, looked up in the monitor's index for its status.

Read through `Durably.get_schedules()` on the app's once-a-second tick. `enter` opens a
schedule's last run; `p` pauses or resumes it (`Durably.pause_schedule`,
`resume_schedule`), asked first and hidden when the monitor is read-only.
"""

from __future__ import annotations

from datetime import datetime, tzinfo
from typing import ClassVar

from rich.text import Text
from textual import events, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.message import Message
from textual.screen import Screen
from textual.widgets import DataTable, Static

from . import _format as fmt
from . import _waiting as waiting
from ._backend import Source
from ._dialogs import ConfirmScreen
from ._model import ScheduleRow
from ._state import MonitorState
from ._widgets import MonitorFooter, RunTable

LAYOUTS = ("wide", "medium", "compact")
"""The table's forms, widest first; the first that fits the screen is shown. `medium` gives
the next tick as a countdown only and shortens run ids; `compact` also puts the last run's
status glyph before its id and leaves out TIME ZONE and PAUSED (NEXT RUN says `paused`)."""

_FULL = ("NAME", "JOB", "CRON", "TIME ZONE", "NEXT RUN", "LAST RUN", "STATUS", "PAUSED")
TITLES = {"wide": _FULL, "medium": _FULL, "compact": ("NAME", "JOB", "CRON", "NEXT RUN", "LAST RUN")}

NO_SCHEDULES = (
    "No schedules in this root: create one with  durably.schedule(name, job, cron, input=...)  "
    "(see docs/schedules.md)."
)

PAUSED_LOOK = ("⏸", "#e5c07b")


def next_text(row: ScheduleRow, now: datetime, narrow: bool, tz: tzinfo | None = None) -> str:
    """`in 3m12s` (with the time of the tick when there is room), `due`, or `paused`."""
    if row.paused or row.next_run_at is None:
        return "paused"
    left = (row.next_run_at - now).total_seconds()
    countdown = "due" if left <= 0 else f"in {waiting.countdown(left)}"
    if narrow:
        return countdown
    return f"{fmt.absolute(row.next_run_at, tz)} ({countdown})"


class SchedulesScreen(Screen[None]):
    """Every schedule: name, job, cron, time zone, next run, last run and its status, paused.

    Args:
        source: where the schedules are read from.
        state: the clock, the time zone and the index (the last runs' statuses).
    """

    DEFAULT_CSS = """
    SchedulesScreen #schedules-title { height: 1; padding: 0 1; background: $panel; }
    SchedulesScreen #schedules-note { height: auto; padding: 0 1; color: $text-muted; }
    SchedulesScreen #schedules { height: 1fr; }
    """

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,backspace,S", "back", "Back"),
        Binding("p", "toggle_pause", "Pause/resume"),
    ]

    class Loaded(Message):
        """The schedules as just read (None: they could not be read; `error` says why)."""

        def __init__(self, schedules: list[ScheduleRow] | None, error: str = "") -> None:
            self.rows, self.error = schedules, error
            super().__init__()

    class OpenRun(Message):
        """The user asked to open `run_id` (a schedule's last run)."""

        def __init__(self, run_id: str) -> None:
            self.run_id = run_id
            super().__init__()

    def __init__(self, source: Source, state: MonitorState) -> None:
        super().__init__()
        self.source = source
        self.state = state
        self.schedule_rows: list[ScheduleRow] | None = None
        """The schedules shown (None until the first read)."""
        self._reading = False
        self._layout = ""

    def compose(self) -> ComposeResult:
        yield Static(Text.assemble(("Schedules", "bold"), "  ", self.state.label), id="schedules-title")
        yield Static(Text("reading…", style="dim"), id="schedules-note")
        yield RunTable(id="schedules", cursor_type="row", zebra_stripes=False)
        yield MonitorFooter()

    def on_mount(self) -> None:
        self.query_one("#schedules", DataTable).focus()
        self.refresh_schedules()

    # -- reading ---------------------------------------------------------------------------

    def tick(self) -> None:
        """The app's once-a-second tick: countdowns move on, and the schedules are reread."""
        if not self.is_attached:
            return
        if self.schedule_rows is not None:
            self._show()
        self.refresh_schedules()

    def refresh_schedules(self) -> None:
        """Read the schedules again (in a thread); the table follows."""
        if not self._reading:
            self._reading = True
            self._read()

    @work(thread=True, exclusive=True, group="schedules", exit_on_error=False)
    def _read(self) -> None:
        try:
            schedules = self.source.schedules()
        except Exception as error:  # noqa: BLE001 (shown; the next read tries again)
            self.post_message(self.Loaded(None, str(error)))
            return
        self.post_message(self.Loaded(schedules))

    def on_schedules_screen_loaded(self, message: Loaded) -> None:
        self._reading = False
        if not self.is_attached:  # a read that ends after the view was closed
            return
        if message.rows is None:
            note = self.query_one("#schedules-note", Static)
            note.update(Text(f"Cannot read the schedules: {message.error}", style="bold #ef5350"))
            return
        self.schedule_rows = message.rows
        self._show()

    # -- drawing ---------------------------------------------------------------------------

    def _show(self) -> None:
        rows = self.schedule_rows or []
        paused = sum(1 for r in rows if r.paused)
        noun = "schedule" if len(rows) == 1 else "schedules"
        note = f"{len(rows)} {noun}, {paused} paused   enter opens the last run"
        if self.state.actions_allowed:
            note += "   p pauses or resumes"
        self.query_one("#schedules-note", Static).update(note if rows else NO_SCHEDULES)
        table = self.query_one("#schedules", DataTable)
        width = self.size.width - 2  # the table's scrollbar
        for layout in LAYOUTS:
            cells = [self._cells(row, layout) for row in rows]
            need = sum(
                max([len(title), *(len(str(c[i])) for c in cells)]) + 2
                for i, title in enumerate(TITLES[layout])
            )
            if need <= width or width <= 0 or layout == LAYOUTS[-1]:
                break
        keep = table.cursor_row
        if layout != self._layout:
            table.clear(columns=True)
            table.add_columns(*TITLES[layout])
            self._layout = layout
        else:
            table.clear()
        for row_cells in cells:
            table.add_row(*row_cells)
        if rows:
            table.move_cursor(row=min(max(keep, 0), len(rows) - 1), animate=False)

    def _cells(self, row: ScheduleRow, layout: str) -> tuple[object, ...]:
        """One schedule's cells in `layout` (see `LAYOUTS`)."""
        now, tz, wide = self.state.clock(), self.state.tz, layout == "wide"
        run = self.state.index.rows.get(row.last_run_id) if row.last_run_id else None
        look = fmt.row_look(run.status, run.interrupted) if run is not None else None
        if row.last_run_id is None:
            last, status = Text("-", style="dim"), Text("-", style="dim")
        else:
            last = Text(row.last_run_id if wide else waiting.short_id(row.last_run_id, 12), style="dim")
            status = Text("…", style="dim") if look is None else Text(f"{look.glyph} {look.word}", look.color)
        glyph, color = PAUSED_LOOK
        upcoming = Text(next_text(row, now, not wide, tz), style=color if row.paused else "")
        if layout == "compact":  # the status's glyph before the run, no time zone, no PAUSED
            if row.last_run_id is not None:
                mark = Text("… ", style="dim") if look is None else Text(f"{look.glyph} ", look.color)
                last = mark + last
            return (fmt.clip(row.name, 20), fmt.clip(row.job, 14), row.cron, upcoming, last)
        paused = Text(f"{glyph} yes", style=color) if row.paused else Text("no", style="dim")
        return (
            fmt.clip(row.name, 30),
            fmt.clip(row.job, 20),
            row.cron,
            row.timezone,
            upcoming,
            last,
            status,
            paused,
        )

    def on_resize(self, event: events.Resize) -> None:
        if self.schedule_rows is not None:
            self._show()

    # -- keys ------------------------------------------------------------------------------

    def selected(self) -> ScheduleRow | None:
        """The schedule under the cursor."""
        rows = self.schedule_rows or []
        at = self.query_one("#schedules", DataTable).cursor_row
        return rows[at] if 0 <= at < len(rows) else None

    def action_back(self) -> None:
        """Back to where the view was opened from."""
        self.dismiss(None)

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        """`enter`: open the selected schedule's last run."""
        event.stop()
        row = self.selected()
        if row is None:
            return
        if row.last_run_id is None:
            self.notify(f"Schedule {row.name!r} has not fired a run yet.", timeout=3)
            return
        self.post_message(self.OpenRun(row.last_run_id))

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """Pausing and resuming write: hidden when the monitor is read-only."""
        if action == "toggle_pause":
            return self.state.actions_allowed
        return True

    def action_toggle_pause(self) -> None:
        """Ask, then pause the selected schedule (or resume it if it is paused)."""
        row = self.selected()
        if row is None:
            return
        about = f"{row.job}, {row.cron} {row.timezone}"
        if row.paused:
            text = f"Resume schedule {row.name!r} ({about})?\nIt fires again from its next tick after now."
            yes = "Yes, resume it"
        else:
            text = (
                f"Pause schedule {row.name!r} ({about})?\n"
                "Its ticks do not fire while it is paused (they are not caught up later)."
            )
            yes = "Yes, pause it"

        def answered(ok: bool | None) -> None:
            if ok:
                self._set_paused(row.name, not row.paused)

        self.app.push_screen(ConfirmScreen(text, yes=yes), answered)

    @work(thread=True, group="schedule-action", exit_on_error=False)
    def _set_paused(self, name: str, paused: bool) -> None:
        try:
            text = self.source.pause_schedule(name, paused)
        except Exception as error:  # noqa: BLE001 (NotFoundError: deleted meanwhile; the user sees why)
            verb = "Pause" if paused else "Resume"
            message = f"{verb} failed ({type(error).__name__}): {error}"
            self.app.call_from_thread(self.notify, message, severity="error", timeout=8)
        else:
            self.app.call_from_thread(self.notify, text)
        self.app.call_from_thread(self.tick)
