"""The run detail screen: summary, step timeline, input/output, error, log tail."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import tzinfo
from functools import partial
from typing import ClassVar

from rich.console import Group, RenderableType
from rich.text import Text
from textual import events, work
from textual.app import ComposeResult, SystemCommand
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.message import Message
from textual.screen import Screen
from textual.widgets import DataTable, Input, Static, TabbedContent, TabPane

from durably import RunStatus

from . import _format as fmt
from . import _panes as panes
from . import _summary as summary
from . import _timeline as timeline
from . import _waiting as waiting
from ._backend import Source
from ._model import LogRow, RunDetail, RunRow, StepRow
from ._state import MonitorState
from ._widgets import LogView, MonitorFooter, RunTable, StepTable

LEVELS = ["info", "warn", "error"]
_LEVEL_RANK = {"debug": -1, "info": 0, "warn": 1, "warning": 1, "error": 2}


LOG_INDENT = 15
"""Where a log entry's message starts (`18:04:05 WARN  `): continuation lines align there."""


def log_line(entry: LogRow, tz: tzinfo | None) -> str:
    """One log entry as a line of text; its data (if any) as JSON."""
    at = fmt.absolute(entry.at, tz, date=False)
    step = f"[{entry.step}] " if entry.step else ""
    data = "" if entry.data in (None, {}, []) else f" {fmt.json_text(entry.data)}"
    return f"{at:8} {entry.level.upper():5} {step}{entry.message}{data}".replace("\n", " ⏎ ")


_STEP_TITLES = (" ", "#", "STEP", "TRY", "TOOK", "TIMELINE", "STATUS")


def _columns(with_try: bool, narrow: bool) -> list[int]:
    """Which of `_STEP_TITLES` the step table shows."""
    return [i for i in range(len(_STEP_TITLES)) if (with_try or i != 3) and (not narrow or i != 5)]


def _fits(rows: list[timeline.TimelineRow], columns: list[int], width: int) -> bool:
    """Whether the step table's `columns` fit in `width` cells (each padded by 2)."""
    texts = [[str(c) for c in _cells(r, columns)] for r in rows]
    need = sum(max([len(_STEP_TITLES[i]), *(len(t[n]) for t in texts)]) + 2 for n, i in enumerate(columns))
    return need <= width


def _cells(row: timeline.TimelineRow, columns: list[int]) -> tuple[object, ...]:
    """The step table's cells for one timeline row, in `columns`."""
    cells: list[object] = [
        Text(row.glyph, style=row.color),
        row.index,
        fmt.clip(row.name, 40),
        row.attempt,
        row.took,
        Text(row.bar, style=row.color),
        Text(row.status, style=row.color),
    ]
    return tuple(cells[i] for i in columns)


class RunDetailScreen(Screen[None]):
    """Everything about one run, kept up to date while it runs.

    Args:
        run_id: the run to show.
        row: its row in the list, if known (shown until the detail is read).
        source: where the run is read from.
        state: the clock and time zone (shared with the app).
    """

    DEFAULT_CSS = """
    RunDetailScreen #summary { height: auto; padding: 0 1; background: $panel; }
    RunDetailScreen #body { height: 1fr; }
    RunDetailScreen #tabs { width: 1fr; }
    RunDetailScreen #steps-pane { width: 50%; max-width: 64; border-right: vkey $primary 30%; }
    RunDetailScreen #steps-title { height: 1; padding: 0 1; text-style: bold; }
    RunDetailScreen #steps { height: 1fr; }
    RunDetailScreen #logbar { height: 1; padding: 0 1; color: $text-muted; }
    RunDetailScreen #logsearch { display: none; height: 1; border: none; padding: 0 1; }
    RunDetailScreen #logsearch.active { display: block; }
    RunDetailScreen TabPane { padding: 0; }
    RunDetailScreen VerticalScroll { padding: 0 1; }
    """

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,backspace", "back", "Back"),
        Binding("i", "tab('io')", "Input/Output", show=False),
        Binding("e", "tab('error')", "Error", show=False),
        Binding("l", "tab('logs')", "Logs"),
        Binding("C", "children", "Children", show=False),
        Binding("F", "follow", "Follow"),
        Binding("v", "level", "Level"),
        Binding("slash", "search", "Search logs"),
    ]

    class Loaded(Message):
        """Fresh data for the screen (None: the run is gone)."""

        def __init__(self, detail: RunDetail | None) -> None:
            self.detail = detail
            super().__init__()

    class OpenRun(Message):
        """The user asked to open `run_id` (a child run, or the parent)."""

        def __init__(self, run_id: str) -> None:
            self.run_id = run_id
            super().__init__()

    def __init__(self, run_id: str, row: RunRow | None, *, source: Source, state: MonitorState) -> None:
        super().__init__()
        self.source = source
        self.state = state
        self.run_id = run_id
        self.row = row
        self.detail: RunDetail | None = None
        self.gone = False
        self.follow = True
        self.min_level: str | None = None
        self.search = ""
        self.selected_step: int | None = None
        self.timeline: list[timeline.TimelineRow] = []
        """The rows of the step table (attempts, waits), in table order."""
        self.child_runs: list[RunRow] = []
        """The run's child runs (`step.invoke`), oldest first."""
        self._steps_shown: tuple[object, ...] | None = None
        self._children_shown: tuple[int, int, tuple[RunRow, ...]] | None = None
        self._logs_shown = 0
        self._fetching = False
        self._first = True

    def compose(self) -> ComposeResult:
        yield Static(Text("loading…", style="dim"), id="summary")
        with Horizontal(id="body"):
            with Vertical(id="steps-pane"):
                yield Static("STEPS", id="steps-title")
                yield StepTable(id="steps", cursor_type="row", zebra_stripes=False)
            with TabbedContent(id="tabs", initial="io"):
                with TabPane("Input / output", id="io"), VerticalScroll():
                    yield Static("", id="io-body")
                with TabPane("Error", id="error"), VerticalScroll():
                    yield Static("", id="error-body")
                with TabPane("Logs", id="logs"):
                    yield Static("", id="logbar")
                    yield Input(placeholder="search logs", id="logsearch")
                    yield LogView(id="log", indent=LOG_INDENT, highlight=True)
                with TabPane("Children", id="children"):
                    yield RunTable(id="children-table", cursor_type="row", zebra_stripes=False)
        yield MonitorFooter()

    def on_mount(self) -> None:
        self.query_one("#steps", DataTable).focus()
        self.query_one("#children-table", DataTable).add_columns(" ", "JOB", "ID", "STEP", "STATUS")
        self.query_one("#tabs", TabbedContent).hide_tab("children")
        self._update_logbar()
        self.reload()
        self.set_interval(0.5, self.tick)

    # -- data ------------------------------------------------------------------------------

    def tick(self) -> None:
        """Twice a second: reread a run that is not finished; else move relative times on.

        A run that is gone is neither reread nor redrawn: its notice stays.
        """
        if self.gone:
            return
        if self.detail is None or not self.detail.row.is_terminal:
            self.reload()
        else:
            self.child_runs = self.state.index.children_of(self.run_id)
            self._render_summary(self.detail)
            self._render_children()

    def reload(self) -> None:
        """Fetch the run, its steps and its logs again (in a thread); not once it is gone."""
        if not self._fetching and not self.gone:
            self._fetching = True
            self._fetch()

    @work(thread=True, exclusive=True, group="detail", exit_on_error=False)
    def _fetch(self) -> None:
        try:
            detail = self.source.detail(self.run_id)
        except Exception as error:  # noqa: BLE001 (a syncing run: try again on the next tick)
            self.post_message(self.Loaded(self.detail))
            self.app.call_from_thread(self.notify, f"Cannot read run: {error}", severity="error")
            return
        self.post_message(self.Loaded(detail))

    def on_run_detail_screen_loaded(self, message: Loaded) -> None:
        self._fetching = False
        detail = message.detail
        if detail is None:
            self.gone = True
            self.query_one("#summary", Static).update(
                Text(f"Run {self.run_id} no longer exists (deleted).", style="bold #ef5350")
            )
            return
        self.detail = detail
        self.row = detail.row
        self.child_runs = self.state.index.children_of(self.run_id)
        self._render_summary(detail)
        self._render_steps(detail)
        self._render_children()
        self._render_logs(detail)
        self._render_panes()

    # -- rendering -------------------------------------------------------------------------

    def _render_summary(self, detail: RunDetail) -> None:
        text = summary.summary(detail, self.child_runs, self.state, self.state.clock())
        self.query_one("#summary", Static).update(text)

    def _render_steps(self, detail: RunDetail) -> None:
        # a pane too narrow for every column leaves TIMELINE out (80 columns: 39 cells)
        now, width = self.state.clock(), self.query_one("#steps", DataTable).size.width - 1
        width = width if width > 0 else 999  # not laid out yet: a resize comes later
        rows = timeline.rows(detail, self.child_runs, now)
        columns = _columns(any(r.attempt for r in rows), narrow=False)
        if not _fits(rows, columns, width):
            rows = timeline.rows(detail, self.child_runs, now, compact=True)
            columns = _columns(any(r.attempt for r in rows), narrow=True)
        cells = [_cells(r, columns) for r in rows]
        shown = (tuple(columns), *cells)
        if shown == self._steps_shown:
            return
        table = self.query_one("#steps", DataTable)
        keep = table.cursor_row
        if self._steps_shown is None or self._steps_shown[0] != shown[0]:
            table.clear(columns=True)
            table.add_columns(*(_STEP_TITLES[i] for i in columns))
        else:
            table.clear()
        for row in cells:
            table.add_row(*row)
        self.timeline = rows
        attempts = sum(1 for r in rows if r.step is not None)
        self.query_one("#steps-title", Static).update(f"STEPS  {attempts}")
        self._steps_shown = shown
        failed = self._failed_row(detail, rows)
        if self._first and failed is not None:
            keep = failed
            self.query_one("#tabs", TabbedContent).active = "error"
        self._first = False
        if rows:
            table.move_cursor(row=min(max(keep, 0), len(rows) - 1), animate=False)
            self.selected_step = table.cursor_row

    @staticmethod
    def _failed_row(detail: RunDetail, rows: list[timeline.TimelineRow]) -> int | None:
        """The row to open on, with the Error tab: the failing step of a failed run, or the
        failed attempt a retry waits after."""
        wait = waiting.parse(detail.row.waiting_for)
        retrying = detail.row.status is RunStatus.WAITING and wait is not None and wait.kind == "retry"
        if detail.row.status is not RunStatus.FAILED and not retrying:
            return None
        for i in range(len(rows) - 1, -1, -1):
            step = rows[i].step
            if step is not None and (step.status == "failed" or step.name == detail.failed_step):
                return i
        return None

    def _render_children(self) -> None:
        """The Children tab (hidden while the run has none)."""
        children = tuple(self.child_runs)
        # what the tab's width leaves for STATUS (glyph and ID are 1 and 13 cells, and each
        # of the 5 columns is padded by 2)
        jobs = max((len(c.job[:20]) for c in children), default=0)
        steps = max((len(c.parent_step or "") for c in children), default=0)
        room = max(12, self.query_one("#tabs").size.width - 14 - jobs - steps - 10 - 2)
        now = self.state.clock()
        ticking = int(now.timestamp()) if any(c.status is RunStatus.WAITING for c in children) else 0
        if (room, ticking, children) == self._children_shown:
            return
        tabs = self.query_one("#tabs", TabbedContent)
        if not children:
            tabs.hide_tab("children")
        elif not self._children_shown or not self._children_shown[2]:
            tabs.show_tab("children")
        tabs.get_tab("children").label = f"Children {len(children)}"
        table = self.query_one("#children-table", DataTable)
        keep = table.cursor_row
        table.clear()
        for child in children:
            look = fmt.row_look(child.status, child.interrupted)
            state = look.word
            if child.status is RunStatus.WAITING:
                state = waiting.list_text(child.waiting_for, child.wake_at, now, self.state.tz, room) or state
            table.add_row(
                Text(look.glyph, style=look.color),
                fmt.clip(child.job, 20),
                Text(waiting.short_id(child.id, 12), style="dim"),
                child.parent_step or "",
                Text(state, style=look.color),
                key=child.id,
            )
        if children:
            table.move_cursor(row=min(max(keep, 0), len(children) - 1), animate=False)
        self._children_shown = (room, ticking, children)

    def _render_panes(self) -> None:
        detail = self.detail
        if detail is None:
            return
        step = self._step()
        io: list[RenderableType] = [
            panes.value_view("Input", detail.input),
            panes.value_view("Output", detail.output),
        ]
        if step is not None:
            at = fmt.absolute(step.started_at, self.state.tz, date=False)
            attempt = f" attempt {step.attempt}" if step.attempt > 1 else ""
            took = fmt.duration(step.duration)
            title = f"Step {step.index} {step.name!r}{attempt} output (started {at}, took {took})"
            io.append(panes.value_view(title, step.output))
        chosen = self._row()
        if chosen is not None and chosen.child is not None:
            child = chosen.child
            word = fmt.row_look(child.status, child.interrupted).word
            io.append(Text(f"Child run {child.id} ({child.job}, {word}): enter opens it", style="bold"))
        self.query_one("#io-body", Static).update(Group(*io))
        self.query_one("#error-body", Static).update(panes.error_view(detail, step))

    def _row(self) -> timeline.TimelineRow | None:
        """The selected row of the step table."""
        at = self.selected_step
        return self.timeline[at] if at is not None and 0 <= at < len(self.timeline) else None

    def _step(self) -> StepRow | None:
        row = self._row()
        return None if row is None else row.step

    def _render_logs(self, detail: RunDetail, *, rebuild: bool = False) -> None:
        log = self.query_one("#log", LogView)
        if rebuild or len(detail.logs) < self._logs_shown:
            log.clear_entries()
            self._logs_shown = 0
        new = detail.logs[self._logs_shown :]
        self._logs_shown = len(detail.logs)
        log.add_entries(log_line(e, self.state.tz) for e in new if self._keep(e))
        self._update_logbar()

    def _keep(self, entry: LogRow) -> bool:
        if self.min_level and _LEVEL_RANK.get(entry.level, 0) < _LEVEL_RANK[self.min_level]:
            return False
        return not self.search or self.search.lower() in entry.message.lower()

    def _update_logbar(self) -> None:
        total = len(self.detail.logs) if self.detail else 0
        text = Text()
        text.append("follow ● on" if self.follow else "follow ○ off", "bold" if self.follow else "")
        text.append(f"   level ≥ {self.min_level}" if self.min_level else "   all levels")
        if self.search:
            text.append(f"   search {self.search!r}")
        text.append(f"   {total} lines", style="dim")
        self.query_one("#logbar", Static).update(text)

    # -- events and actions ------------------------------------------------------------------

    def on_resize(self, event: events.Resize) -> None:
        if self.detail is not None:  # the TIMELINE column comes or goes with the width
            self._render_steps(self.detail)
            self._render_children()

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        if event.data_table.id == "steps":
            self.selected_step = event.cursor_row
            self._render_panes()

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        """`enter` on a step that invoked a child run, or on a child run: open it."""
        if event.data_table.id == "children-table" and 0 <= event.cursor_row < len(self.child_runs):
            self.post_message(self.OpenRun(self.child_runs[event.cursor_row].id))
        elif event.data_table.id == "steps":
            row = self._row()
            if row is not None and row.child is not None:
                self.post_message(self.OpenRun(row.child.id))

    def commands(self) -> Iterator[SystemCommand]:
        """This screen's entries in the command palette: the child runs, each one to open."""
        if self.child_runs:
            yield SystemCommand("Show child runs", "C: the Children tab", self.action_children)
        for child in self.child_runs:
            about = f"{child.job}, step {child.parent_step}" if child.parent_step else child.job
            yield SystemCommand(f"Open child run {child.id}", about, partial(self._open, child.id))

    def _open(self, run_id: str) -> None:
        self.post_message(self.OpenRun(run_id))

    def action_children(self) -> None:
        """Show the run's child runs (the Children tab) and put the cursor in them."""
        if not self.child_runs:
            self.notify("This run has no child runs.", timeout=3)
            return
        self.action_tab("children")
        self.query_one("#children-table", DataTable).focus()

    def action_back(self) -> None:
        """Close the search box, else go back to the list."""
        box = self.query_one("#logsearch", Input)
        if box.has_class("active"):
            box.value = ""
            box.remove_class("active")
            self.query_one("#log", LogView).focus()
            return
        self.dismiss(None)

    def action_tab(self, tab: str) -> None:
        """Switch to a tab."""
        self.query_one("#tabs", TabbedContent).active = tab

    def action_follow(self) -> None:
        """Follow the log tail on or off."""
        self.follow = not self.follow
        log = self.query_one("#log", LogView)
        log.auto_scroll = self.follow
        if self.follow:
            log.scroll_end(animate=False)
        self._update_logbar()

    def action_level(self) -> None:
        """Cycle the minimum log level: all, warn, error."""
        cycle: list[str | None] = [None, "warn", "error"]
        self.min_level = cycle[(cycle.index(self.min_level) + 1) % len(cycle)]
        self._relog()

    def action_search(self) -> None:
        """Search the logs."""
        self.action_tab("logs")
        box = self.query_one("#logsearch", Input)
        box.add_class("active")
        box.focus()

    def on_input_changed(self, event: Input.Changed) -> None:
        if event.input.id == "logsearch":
            self.search = event.value
            self._relog()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if event.input.id == "logsearch":
            self.query_one("#log", LogView).focus()

    def _relog(self) -> None:
        self.action_tab("logs")
        if self.detail is not None:
            self._render_logs(self.detail, rebuild=True)
        else:
            self._update_logbar()
