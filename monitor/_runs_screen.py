"""The main screen: header with counts and throughput, filter bar, the run list."""

from __future__ import annotations

from collections.abc import Iterator
from functools import partial
from typing import ClassVar

from rich.text import Text
from textual.app import ComposeResult, SystemCommand
from textual.binding import Binding, BindingType
from textual.containers import Horizontal
from textual.screen import Screen
from textual.timer import Timer
from textual.widgets import Input, Sparkline, Static

from durably import RunStatus

from . import _format as fmt
from ._index import RunFilter, SortKey
from ._runlist import RunList
from ._state import MonitorState
from ._widgets import MonitorFooter

DEBOUNCE_ABOVE = 20_000
"""With more runs than this, the search box filters 0.2 s after the last keystroke."""

_SORT_CYCLE = [SortKey.CREATED, SortKey.JOB, SortKey.STATUS, SortKey.DURATION]


class RunsScreen(Screen[None]):
    """Live list of every run under the root.

    Args:
        state: what to draw (the app keeps it up to date and calls `refresh_header`).
    """

    DEFAULT_CSS = """
    RunsScreen #top { height: 1; background: $panel; }
    RunsScreen #title { width: 1fr; padding: 0 1; text-wrap: nowrap; text-overflow: ellipsis; }
    RunsScreen #spark { width: 20; margin: 0 1; }
    RunsScreen #rate { width: auto; padding-right: 1; color: $text-muted; }
    RunsScreen #live { width: auto; padding: 0 1; }
    RunsScreen #counts { height: 1; padding: 0 1; }
    RunsScreen #filterbar { height: 1; padding: 0 1; color: $text-muted; background: $boost; }
    RunsScreen #search { display: none; height: 1; border: none; padding: 0 1; }
    RunsScreen #search.active { display: block; }
    """

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("slash", "search", "Search"),
        Binding("f", "failed", "Failed"),
        Binding("J", "cycle_job", "Job"),
        Binding("l", "label", "Label", show=False),
        Binding("s", "sort", "Sort"),
        Binding("I", "reverse", "Reverse", show=False),
        Binding("t", "toggle_time", "Times", show=False),
        Binding("0", "clear_filters", "All", show=False),
        Binding("escape", "escape", "Clear", show=False),
        *(
            Binding(key, f"toggle_status('{status.value}')", status.value, show=False)
            for key, status in fmt.STATUS_KEYS.items()
        ),
    ]

    def __init__(self, state: MonitorState) -> None:
        super().__init__()
        self.state = state
        self._search_timer: Timer | None = None

    def compose(self) -> ComposeResult:
        state = self.state
        with Horizontal(id="top"):
            yield Static(Text.assemble(("durably monitor", "bold"), "  ", state.label), id="title")
            yield Sparkline([], id="spark")
            yield Static("", id="rate")
            yield Static("", id="live")
        yield Static("", id="counts")
        yield Static("", id="filterbar")
        yield Input(placeholder="search: text  status:failed  job:NAME  label:k=v", id="search")
        yield RunList(state.index, state.clock, state.tz)
        yield MonitorFooter()

    def on_mount(self) -> None:
        self.query_one(RunList).focus()
        self.refresh_header()

    @property
    def run_list(self) -> RunList:
        """The list widget."""
        return self.query_one(RunList)

    # -- header ----------------------------------------------------------------------------

    def refresh_header(self) -> None:
        """Redraw counts, throughput, live state and the filter bar from the index."""
        state = self.state
        index = state.index
        counts = Text()
        for status, look in fmt.STATUS_LOOK.items():
            n = index.counts.get(status, 0)
            if status is None and not n:
                continue
            if counts:
                counts.append("   ")
            counts.append(f"{look.glyph} {n:,} {look.word}", style=look.color if n else "dim")
        self.query_one("#counts", Static).update(counts)
        now = state.clock()
        series = index.throughput(now)
        self.query_one("#spark", Sparkline).data = series
        self.query_one("#rate", Static).update(f"{int(sum(series)):,} done/30m")
        live = Text("⏸ paused", style="bold #e5c07b") if state.paused else Text("● live", "#5fbf5f")
        if state.loading:
            live = Text("… loading", style="dim")
        if state.waiting:
            live = Text("… waiting for root", style="bold #e5c07b")
        self.query_one("#live", Static).update(live)
        bar = Text()
        if state.waiting:
            bar.append(f"{state.label} does not exist yet: the list starts when it is created")
            self.query_one("#filterbar", Static).update(bar)
            return
        description = index.filter.describe()
        bar.append(f"filter {description}" if description else "all runs")
        bar.append(f"  ·  {len(index):,} of {len(index.rows):,} runs")
        marked = len(self.run_list.marked)
        if marked:
            bar.append("  ·  ")
            bar.append(f"{marked:,} marked", style="bold #e5c07b")
            if self.size.width >= 100:
                bar.append(" (esc clears)")
        arrow = "▼" if index.descending else "▲"
        bar.append(f"  ·  sort {index.sort_key.value} {arrow}")
        for notice in state.notices:
            bar.append("  ·  ")
            bar.append(notice, style="bold #e5c07b")
        self.query_one("#filterbar", Static).update(bar)

    # -- filters ---------------------------------------------------------------------------

    def apply_filter(self, run_filter: RunFilter) -> None:
        """Show only the runs matching `run_filter`, from the top."""
        self.state.index.set_filter(run_filter, self.state.clock())
        self.run_list.to_top()
        self.refresh_header()

    def action_search(self, prefix: str = "") -> None:
        """Show the search box."""
        box = self.query_one("#search", Input)
        box.add_class("active")
        if prefix:
            box.value = prefix
        box.focus()

    def action_label(self) -> None:
        """Start a label filter in the search box."""
        self.action_search(f"{self.query_one('#search', Input).value} label:".lstrip())

    def on_input_changed(self, event: Input.Changed) -> None:
        if event.input.id != "search":
            return
        if self._search_timer is not None:
            self._search_timer.stop()
            self._search_timer = None
        if len(self.state.index.rows) > DEBOUNCE_ABOVE:  # big roots: filter when typing pauses
            self._search_timer = self.set_timer(0.2, lambda: self._search(event.value))
        else:
            self._search(event.value)

    def _search(self, query: str) -> None:
        self._search_timer = None
        index = self.state.index
        base = RunFilter(index.filter.statuses, index.filter.job, index.filter.label)
        self.apply_filter(RunFilter.parse(query, base))

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if event.input.id == "search":
            self._close_search()

    def _close_search(self) -> None:
        box = self.query_one("#search", Input)
        if not box.value:
            box.remove_class("active")
        self.run_list.focus()

    def action_failed(self) -> None:
        """Failed runs only; pressed again, all statuses."""
        current = self.state.index.filter
        failed = frozenset({RunStatus.FAILED})
        statuses = frozenset() if current.statuses == failed else failed
        self.apply_filter(RunFilter(statuses, current.job, current.label, current.text))

    def action_toggle_status(self, value: str) -> None:
        """Add or remove one status from the status filter."""
        current = self.state.index.filter
        statuses = set(current.statuses) ^ {RunStatus(value)}
        self.apply_filter(RunFilter(frozenset(statuses), current.job, current.label, current.text))

    def action_cycle_job(self) -> None:
        """Show only the next job (in name order); after the last, every job."""
        current = self.state.index.filter
        jobs = sorted(self.state.index.jobs)
        if current.job in jobs:
            at = jobs.index(current.job) + 1
            job = jobs[at] if at < len(jobs) else None
        else:
            job = jobs[0] if jobs else None
        self.apply_filter(RunFilter(current.statuses, job, current.label, current.text))
        if job is not None:
            self.notify(f"job: {job}", timeout=1.5)

    def action_escape(self) -> None:
        """Unmark every marked run; with none marked, clear every filter."""
        if self.run_list.marked:
            self.run_list.clear_marks()
        else:
            self.action_clear_filters()

    def on_run_list_marks_changed(self, event: RunList.MarksChanged) -> None:
        self.refresh_header()

    def action_clear_filters(self) -> None:
        """Show every run."""
        box = self.query_one("#search", Input)
        box.value = ""
        box.remove_class("active")
        self.apply_filter(RunFilter())
        self.run_list.focus()

    def action_sort(self) -> None:
        """Sort by the next column."""
        index = self.state.index
        key = _SORT_CYCLE[(_SORT_CYCLE.index(index.sort_key) + 1) % len(_SORT_CYCLE)]
        self.sort_by(key)

    def sort_by(self, key: SortKey) -> None:
        """Sort by `key` (clicking the sorted column again reverses it)."""
        index = self.state.index
        descending = not index.descending if key is index.sort_key else key is not SortKey.JOB
        index.set_sort(key, descending, self.state.clock())
        self.run_list.sync()
        self.refresh_header()

    def action_reverse(self) -> None:
        """Reverse the sort order."""
        index = self.state.index
        index.set_sort(index.sort_key, not index.descending, self.state.clock())
        self.run_list.sync()
        self.refresh_header()

    def action_toggle_time(self) -> None:
        """Switch start times between relative and absolute."""
        self.run_list.absolute_times = not self.run_list.absolute_times
        self.run_list.refresh()

    def on_run_list_sort_requested(self, event: RunList.SortRequested) -> None:
        self.sort_by(event.key)

    # -- command palette -------------------------------------------------------------------

    def commands(self) -> Iterator[SystemCommand]:
        """This screen's entries in the command palette: filters, sorts, time display."""
        yield SystemCommand("Show failed runs", "f", self.action_failed)
        yield SystemCommand("Show all runs", "0: clear every filter", self.action_clear_filters)
        yield SystemCommand("Search runs", "/", self.action_search)
        yield SystemCommand("Next job filter", "J", self.action_cycle_job)
        yield SystemCommand("Next sort column", "s", self.action_sort)
        yield SystemCommand("Reverse sort order", "I", self.action_reverse)
        yield SystemCommand("Mark every shown run", "*: again unmarks them", self.run_list.action_mark_all)
        yield SystemCommand("Relative / absolute times", "t", self.action_toggle_time)
        for job in sorted(self.state.index.jobs):
            yield SystemCommand(f"Filter by job: {job}", "show only this job", partial(self.only_job, job))

    def only_job(self, job: str) -> None:
        """Show only the runs of `job` (other filters stay)."""
        current = self.state.index.filter
        self.apply_filter(RunFilter(current.statuses, job, current.label, current.text))
