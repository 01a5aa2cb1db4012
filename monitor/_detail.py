"""The run detail screen: summary, step timeline, input/output, error, log tail."""

from __future__ import annotations

import dataclasses
from datetime import datetime, tzinfo
from typing import Any, ClassVar

from rich.console import Group, RenderableType
from rich.json import JSON
from rich.pretty import Pretty
from rich.syntax import Syntax
from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.message import Message
from textual.screen import Screen
from textual.widgets import DataTable, Input, Static, TabbedContent, TabPane

from . import _format as fmt
from ._backend import Source
from ._model import LogRow, RunDetail, RunRow, StepRow
from ._state import MonitorState
from ._widgets import LogView, MonitorFooter, StepTable

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


def _value(title: str, value: Any) -> RenderableType:
    body: RenderableType
    if value is None:
        body = Text("—", style="dim")
    else:
        try:
            body = JSON.from_data(value, indent=2, default=str, sort_keys=False)
        except (TypeError, ValueError):
            body = Pretty(value)
    return Group(Text(title, style="bold underline"), body, Text(""))


TIMELINE_WIDTH = 12


def _span(detail: RunDetail, now: datetime) -> tuple[datetime, float] | None:
    """Start of the run's first step and the seconds it spans (to its end, or `now`)."""
    starts = [s.started_at for s in detail.steps if s.started_at is not None]
    if not starts:
        return None
    start = min(starts)
    ends = [s.completed_at for s in detail.steps if s.completed_at is not None]
    end = detail.row.completed_at or (now if not detail.row.is_terminal else max(ends, default=start))
    return start, max((end - start).total_seconds(), 1e-6)


def _timeline(step: StepRow, span: tuple[datetime, float] | None, width: int) -> str:
    """Where the step sits in the run, as a bar: `   ▕███▏     `."""
    if span is None or step.started_at is None:
        return ""
    start, total = span
    first = (step.started_at - start).total_seconds() / total * width
    last = first + (step.duration or 0.0) / total * width
    lo, hi = max(0, min(width - 1, round(first))), max(0, min(width, round(last)))
    return " " * lo + "█" * max(1, hi - lo) + " " * max(0, width - max(hi, lo + 1))


def _append_keys(text: Text, detail: RunDetail) -> None:
    keys = [("idempotency", detail.idempotency_key), ("concurrency", detail.concurrency_key)]
    if any(v for _, v in keys):
        text.append("\n")
        for name, value in keys:
            if value:
                text.append(f"{name} key ", style="dim")
                text.append(f"{value}   ")


def _append_progress(text: Text, row: RunRow, color: str) -> None:
    if row.progress_current is None and not row.progress_message:
        return
    text.append("\n")
    if row.progress_total:
        text.append(fmt.bar(row.progress_current, row.progress_total, 30), style=color)
        text.append(" ")
    text.append(fmt.progress_text(row.progress_current, row.progress_total))
    if row.progress_message:
        text.append(f"  {row.progress_message}", style="dim")


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
        Binding("F", "follow", "Follow"),
        Binding("v", "level", "Level"),
        Binding("slash", "search", "Search logs"),
    ]

    class Loaded(Message):
        """Fresh data for the screen (None: the run is gone)."""

        def __init__(self, detail: RunDetail | None) -> None:
            self.detail = detail
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
        self._steps_shown: tuple[StepRow, ...] | None = None
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
        yield MonitorFooter()

    def on_mount(self) -> None:
        table = self.query_one("#steps", DataTable)
        table.add_columns(" ", "#", "STEP", "TOOK", "TIMELINE", "STATUS")
        table.focus()
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
            self._render_summary(self.detail)

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
        self._render_summary(detail)
        self._render_steps(detail)
        self._render_logs(detail)
        self._render_panes()

    # -- rendering -------------------------------------------------------------------------

    def _render_summary(self, detail: RunDetail) -> None:
        row, tz = detail.row, self.state.tz
        now = self.state.clock()
        look = fmt.row_look(row.status, row.interrupted)
        text = Text()
        text.append(f"{look.glyph} {look.word}", style=f"bold {look.color}")
        text.append(f"   {row.job}", style="bold")
        text.append(f"   {row.id}", style="dim")
        if row.labels:
            text.append(f"   {row.label_text}", style="#8ab4f8")
        text.append("\n")
        parts = [
            ("created", row.created_at),
            ("started", row.started_at),
            ("finished", row.completed_at),
        ]
        for name, when in parts:
            if when is not None:
                text.append(f"{name} ", style="dim")
                text.append(f"{fmt.absolute(when, tz)} ({fmt.relative(when, now)})   ")
        text.append("took ", style="dim")
        text.append(fmt.duration(row.duration(now)))
        text.append(f"   steps {row.completed_steps}", style="dim")
        if detail.lease_generation:
            text.append(f"   lease #{detail.lease_generation}", style="dim")
        if detail.lease_owner and not row.is_terminal:
            text.append(f" by {detail.lease_owner}", style="dim")
        if row.waiting_for:
            text.append("\n")
            text.append(f"waits for {row.waiting_for}", style=f"bold {look.color}")
            if row.wake_at is not None:
                text.append(f" until {fmt.absolute(row.wake_at, tz)} ({fmt.relative(row.wake_at, now)})")
        if row.parent_id:
            text.append(f"\nchild of {row.parent_id}", style="dim")
        if row.interrupted:
            text.append("\n")
            stopped = fmt.absolute(row.updated_at, tz)
            text.append(
                f"interrupted: its worker stopped at {stopped}; a worker of {row.job!r} resumes it",
                style=f"bold {fmt.INTERRUPTED_LOOK.color}",
            )
        _append_keys(text, detail)
        _append_progress(text, row, look.color)
        if row.error:
            text.append("\n")
            text.append(fmt.clip(row.error, 300), style="bold #ef5350")
        self.query_one("#summary", Static).update(text)

    def _render_steps(self, detail: RunDetail) -> None:
        if detail.steps == self._steps_shown:
            return
        table = self.query_one("#steps", DataTable)
        keep = table.cursor_row
        table.clear()
        span = _span(detail, self.state.clock())
        for step in detail.steps:
            look = fmt.step_look(step.status)
            table.add_row(
                Text(look.glyph, style=look.color),
                str(step.index),
                fmt.clip(step.name, 40),
                fmt.duration(step.duration),
                Text(_timeline(step, span, TIMELINE_WIDTH), style=look.color),
                Text(step.status, style=look.color),
            )
        self.query_one("#steps-title", Static).update(f"STEPS  {len(detail.steps)}")
        self._steps_shown = detail.steps
        failed = next(
            (
                i
                for i, s in reversed(list(enumerate(detail.steps)))
                if s.status == "failed" or (detail.failed_step and s.name == detail.failed_step)
            ),
            None,
        )
        if self._first and failed is not None:
            keep = failed
            self.query_one("#tabs", TabbedContent).active = "error"
        self._first = False
        if detail.steps:
            table.move_cursor(row=min(max(keep, 0), len(detail.steps) - 1), animate=False)
            self.selected_step = table.cursor_row

    def _render_panes(self) -> None:
        detail = self.detail
        if detail is None:
            return
        step = self._step()
        io: list[RenderableType] = [_value("Input", detail.input), _value("Output", detail.output)]
        if step is not None:
            at = fmt.absolute(step.started_at, self.state.tz, date=False)
            title = (
                f"Step {step.index} {step.name!r} output (started {at}, took {fmt.duration(step.duration)})"
            )
            io.append(_value(title, step.output))
        self.query_one("#io-body", Static).update(Group(*io))
        self.query_one("#error-body", Static).update(self._error(detail, step))

    def _step(self) -> StepRow | None:
        if self.detail is None or self.selected_step is None:
            return None
        steps = self.detail.steps
        return steps[self.selected_step] if 0 <= self.selected_step < len(steps) else None

    def _error(self, detail: RunDetail, step: StepRow | None) -> RenderableType:
        if step is None or not step.error:
            step = next((s for s in detail.steps if s.error), step)
        parts: list[RenderableType] = []
        if detail.row.error:
            parts += [Text("Run error", style="bold underline"), Text(detail.row.error, "#ef5350")]
            if detail.error_traceback:
                parts.append(_traceback(detail.error_traceback))
            parts.append(Text(""))
            if detail.error_traceback and step is not None and step.name == detail.failed_step:
                step = dataclasses.replace(step, traceback=None)  # the run's holds it already
        if step is not None and (step.error or step.traceback):
            parts.append(Text(f"Step {step.index} {step.name!r} ({step.status})", "bold underline"))
            if step.error:
                parts.append(Text(step.error, style="#ef5350"))
            if step.traceback:
                parts.append(_traceback(step.traceback))
        if not parts:
            parts.append(Text("No error.", style="dim"))
        return Group(*parts)

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

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        self.selected_step = event.cursor_row
        self._render_panes()

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


def _traceback(text: str) -> Text:
    """A traceback, highlighted as Text (not a Syntax renderable) so long lines wrap."""
    return Syntax("", "pytb", theme="ansi_dark", word_wrap=True).highlight(text.rstrip())
