"""The workers view (`w`): the live `durably worker` processes of the root, refreshed live.

Read through `Durably.get_workers()` (their heartbeat records: reading only, so it works on
a read-only root). `enter` on a worker opens the first run it has in flight.
"""

from __future__ import annotations

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
from ._model import WorkerRow
from ._state import MonitorState
from ._widgets import MonitorFooter, RunTable

NARROW = 110
"""Below this width, start times are relative only and run ids shortened."""

REFRESH = 1.0
"""Seconds between two reads of the workers' records (each worker beats every 5 s)."""

NO_WORKERS = (
    "No live worker: start one with  durably worker APP  (a worker started in a program "
    "with Durably.start() keeps no record and is not listed)."
)


class WorkersScreen(Screen[None]):
    """Every live worker process: host, pid, jobs, runs in flight, started, last seen.

    Args:
        source: where the workers are read from.
        state: the clock and time zone.
        refresh: seconds between reads (tests make it long and call `refresh_workers`).
    """

    DEFAULT_CSS = """
    WorkersScreen #workers-title { height: 1; padding: 0 1; background: $panel; }
    WorkersScreen #workers-note { height: auto; padding: 0 1; color: $text-muted; }
    WorkersScreen #workers { height: 1fr; }
    """

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,backspace,w", "back", "Back"),
    ]

    class Loaded(Message):
        """The workers as just read (None: they could not be read; `error` says why)."""

        def __init__(self, workers: list[WorkerRow] | None, error: str = "") -> None:
            self.rows, self.error = workers, error
            super().__init__()

    class OpenRun(Message):
        """The user asked to open `run_id` (a run a worker has in flight)."""

        def __init__(self, run_id: str) -> None:
            self.run_id = run_id
            super().__init__()

    def __init__(self, source: Source, state: MonitorState, *, refresh: float = REFRESH) -> None:
        super().__init__()
        self.source = source
        self.state = state
        self.refresh_every = refresh
        self.worker_rows: list[WorkerRow] | None = None
        """The workers shown (None until the first read)."""
        self._reading = False

    def compose(self) -> ComposeResult:
        yield Static(Text.assemble(("Workers", "bold"), "  ", self.state.label), id="workers-title")
        yield Static(Text("reading…", style="dim"), id="workers-note")
        yield RunTable(id="workers", cursor_type="row", zebra_stripes=False)
        yield MonitorFooter()

    def on_mount(self) -> None:
        table = self.query_one("#workers", DataTable)
        table.add_columns("HOST", "PID", "JOBS", "IN FLIGHT", "STARTED", "LAST SEEN")
        table.focus()
        self.refresh_workers()
        self.set_interval(self.refresh_every, self.refresh_workers)

    def refresh_workers(self) -> None:
        """Read the workers again (in a thread); the table follows."""
        if not self._reading:
            self._reading = True
            self._read()

    @work(thread=True, exclusive=True, group="workers", exit_on_error=False)
    def _read(self) -> None:
        try:
            workers = self.source.workers()
        except Exception as error:  # noqa: BLE001 (shown; the next read tries again)
            self.post_message(self.Loaded(None, str(error)))
            return
        self.post_message(self.Loaded(workers))

    def on_workers_screen_loaded(self, message: Loaded) -> None:
        self._reading = False
        note = self.query_one("#workers-note", Static)
        if message.rows is None:
            note.update(Text(f"Cannot read the workers: {message.error}", style="bold #ef5350"))
            return
        self.worker_rows = message.rows
        self._show()

    def _show(self) -> None:
        workers = self.worker_rows or []
        now = self.state.clock()
        running = sum(len(w.running) for w in workers)
        noun = "worker" if len(workers) == 1 else "workers"
        summary = f"{len(workers)} live {noun}, {running} run{'s' if running != 1 else ''} in flight"
        if running:
            summary += "   enter opens a worker's run in flight"
        self.query_one("#workers-note", Static).update(summary if workers else NO_WORKERS)
        table = self.query_one("#workers", DataTable)
        keep = table.cursor_row
        table.clear()
        narrow = 0 < self.size.width < NARROW
        hosts = max((len(w.host) for w in workers), default=4)
        # what the other columns leave for JOBS (each column is padded by 2 cells)
        room = max(12, self.size.width - hosts - (49 if narrow else 78) - 4) if self.size.width else 40
        for w in workers:
            ids = [waiting.short_id(r, 12) for r in w.running] if narrow else list(w.running)
            flight = Text(" ".join(ids) or "-", style="#e5c07b" if w.running else "dim")
            started = fmt.relative(w.started_at, now)
            if not narrow:
                started = f"{fmt.absolute(w.started_at, self.state.tz)} ({started})"
            table.add_row(
                w.host,
                str(w.pid),
                fmt.clip(", ".join(w.jobs), room),
                flight,
                started,
                fmt.relative(w.seen_at, now),
            )
        if workers:
            table.move_cursor(row=min(max(keep, 0), len(workers) - 1), animate=False)

    def on_resize(self, event: events.Resize) -> None:
        if self.worker_rows is not None:
            self._show()

    def action_back(self) -> None:
        """Back to where the view was opened from."""
        self.dismiss(None)

    def action_open(self) -> None:
        """Open the first run the selected worker has in flight."""
        table = self.query_one("#workers", DataTable)
        workers = self.worker_rows or []
        if not 0 <= table.cursor_row < len(workers):
            return
        worker = workers[table.cursor_row]
        if worker.running:
            self.post_message(self.OpenRun(worker.running[0]))
        else:
            self.notify(f"Worker {worker.host}:{worker.pid} has no run in flight.", timeout=3)

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        self.action_open()
