"""The run detail screen: summary, step timeline, input/output, error, log tail, and the
runs related to it (its children, the runs resumed from it)."""

from __future__ import annotations

from collections.abc import Iterator
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
from textual.widgets import DataTable, Static, TabbedContent, TabPane

from . import _format as fmt
from . import _panes as panes
from . import _summary as summary
from . import _timeline as timeline
from ._backend import Source
from ._log_tab import LogTab
from ._model import RunDetail, RunRow, StepRow
from ._related import RelatedTable
from ._state import MonitorState
from ._steps_table import TimelineTable, failed_row
from ._widgets import MonitorFooter


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
    RunDetailScreen TabPane { padding: 0; }
    RunDetailScreen VerticalScroll { padding: 0 1; }
    """

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,backspace", "back", "Back"),
        Binding("i", "tab('io')", "Input/Output", show=False),
        Binding("e", "tab('error')", "Error", show=False),
        Binding("l", "tab('logs')", "Logs"),
        Binding("C", "children", "Children", show=False),
        Binding("O", "resumes", "Resumes", show=False),
        Binding("s", "resume_from_step", "Resume from step"),
        Binding("F", "follow", "Follow"),
        Binding("v", "level", "Level"),
        Binding("slash", "search_logs", "Search logs"),
    ]

    class Loaded(Message):
        """Fresh data for the screen (None: the run is gone)."""

        def __init__(self, run_id: str, detail: RunDetail | None) -> None:
            self.run_id, self.detail = run_id, detail
            super().__init__()

    class OpenRun(Message):
        """The user asked to open `run_id` (a child run, or the parent)."""

        def __init__(self, run_id: str) -> None:
            self.run_id = run_id
            super().__init__()

    class ResumeFromStep(Message):
        """The user asked to resume `run_id` from `step` (`replayed` completed steps come
        before it)."""

        def __init__(self, run_id: str, step: str, replayed: int) -> None:
            self.run_id, self.step, self.replayed = run_id, step, replayed
            super().__init__()

    def __init__(self, run_id: str, row: RunRow | None, *, source: Source, state: MonitorState) -> None:
        super().__init__()
        self.source = source
        self.state = state
        self.run_id = run_id
        self.row = row
        self.detail: RunDetail | None = None
        self.gone = False
        self.selected_step: int | None = None
        self.timeline: list[timeline.TimelineRow] = []
        """The rows of the step table (attempts, waits), in table order."""
        self.child_runs: list[RunRow] = []
        """The run's child runs (`step.invoke`), oldest first."""
        self.resumed_runs: list[RunRow] = []
        """The runs resumed from this one (`Durably.resume`), oldest first."""
        self._fetching = False
        self._first = True

    def compose(self) -> ComposeResult:
        yield Static(Text("loading…", style="dim"), id="summary")
        with Horizontal(id="body"):
            with Vertical(id="steps-pane"):
                yield Static("STEPS", id="steps-title")
                yield TimelineTable(id="steps")
            with TabbedContent(id="tabs", initial="io"):
                with TabPane("Input / output", id="io"), VerticalScroll():
                    yield Static("", id="io-body")
                with TabPane("Error", id="error"), VerticalScroll():
                    yield Static("", id="error-body")
                with TabPane("Logs", id="logs"):
                    yield LogTab(self.state.tz, id="logtab")
                with TabPane("Children", id="children"):
                    yield RelatedTable("children", id="children-table")
                with TabPane("Resumes", id="resumes"):
                    yield RelatedTable("resumes", id="resumes-table")
        yield MonitorFooter()

    def on_mount(self) -> None:
        self.query_one("#steps", DataTable).focus()
        tabs = self.query_one("#tabs", TabbedContent)
        tabs.hide_tab("children")
        tabs.hide_tab("resumes")
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
            self._relate()
            self._render_summary(self.detail)
            self._render_related()

    def reload(self) -> None:
        """Fetch the run, its steps and its logs again (in a thread); not once it is gone."""
        if not self._fetching and not self.gone:
            self._fetching = True
            self._fetch()

    @work(thread=True, exclusive=True, group="detail", exit_on_error=False)
    def _fetch(self) -> None:
        run_id = self.run_id
        try:
            detail = self.source.detail(run_id)
        except Exception as error:  # noqa: BLE001 (a syncing run: try again on the next tick)
            self.post_message(self.Loaded(run_id, self.detail))
            self.app.call_from_thread(self.notify, f"Cannot read run: {error}", severity="error")
            return
        self.post_message(self.Loaded(run_id, detail))

    def show_run(self, run_id: str, row: RunRow | None) -> None:
        """Show another run here (the run a retrigger or a resume made of this one).

        The screen stays (no screen is removed while its tabs may still be redrawing); its
        state starts over and the new run is read.
        """
        self.run_id, self.row = run_id, row
        self.detail, self.gone, self._first = None, False, True
        self.selected_step, self.timeline = None, []
        self.child_runs, self.resumed_runs = [], []
        self.query_one("#summary", Static).update(Text("loading…", style="dim"))
        self.query_one(LogTab).show((), rebuild=True)
        self.query_one("#tabs", TabbedContent).active = "io"
        self._fetching = False
        self.reload()

    def on_run_detail_screen_loaded(self, message: Loaded) -> None:
        self._fetching = False
        if message.run_id != self.run_id:  # read before the screen moved on to another run
            self.reload()
            return
        detail = message.detail
        if detail is None:
            self.gone = True
            self.query_one("#summary", Static).update(
                Text(f"Run {self.run_id} no longer exists (deleted).", style="bold #ef5350")
            )
            return
        self.detail = detail
        self.row = detail.row
        self._relate()
        self._render_summary(detail)
        self._render_steps(detail)
        self._render_related()
        self.query_one(LogTab).show(detail.logs)
        self._render_panes()

    def _relate(self) -> None:
        """Look the run's children and resumed runs up in the index."""
        self.child_runs = self.state.index.children_of(self.run_id)
        self.resumed_runs = self.state.index.resumes_of(self.run_id)

    # -- rendering -------------------------------------------------------------------------

    def _render_summary(self, detail: RunDetail) -> None:
        related = summary.Related(self.child_runs, self.resumed_runs)
        text = summary.summary(detail, related, self.state, self.state.clock())
        self.query_one("#summary", Static).update(text)

    def _render_steps(self, detail: RunDetail) -> None:
        table = self.query_one("#steps", TimelineTable)
        if not table.show(detail, self.child_runs, self.state.clock()):
            return
        self.timeline = table.timeline
        attempts = sum(1 for r in self.timeline if r.step is not None)
        self.query_one("#steps-title", Static).update(f"STEPS  {attempts}")
        failed = failed_row(detail, self.timeline)
        if self._first and failed is not None:
            table.move_cursor(row=failed, animate=False)
            self.query_one("#tabs", TabbedContent).active = "error"
        self._first = False
        if self.timeline:
            self.selected_step = table.cursor_row

    def _render_related(self) -> None:
        """The Children and Resumes tabs (each hidden while it would be empty)."""
        tabs = self.query_one("#tabs", TabbedContent)
        now, width = self.state.clock(), tabs.size.width
        for tab, runs, title in (
            ("children", self.child_runs, "Children"),
            ("resumes", self.resumed_runs, "Resumes"),
        ):
            table = self.query_one(f"#{tab}-table", RelatedTable)
            had = len(table.runs)
            table.show(runs, width, now, self.state.tz)
            if had == len(runs):
                continue
            if not runs:
                tabs.hide_tab(tab)
                continue
            if not had:
                tabs.show_tab(tab)
            tabs.get_tab(tab).label = f"{title} {len(runs)}"

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

    # -- events and actions ------------------------------------------------------------------

    def on_resize(self, event: events.Resize) -> None:
        if self.detail is not None:  # the TIMELINE column comes or goes with the width
            self._render_steps(self.detail)
            self._render_related()

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        if event.data_table.id == "steps":
            self.selected_step = event.cursor_row
            self._render_panes()

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        """`enter` on a step that invoked a child run, on a child run or on a resumed run:
        open it."""
        if isinstance(event.data_table, RelatedTable):
            chosen = event.data_table.selected_run()
            if chosen is not None:
                self.post_message(self.OpenRun(chosen.id))
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
        if self.resumed_runs:
            yield SystemCommand("Show resumed runs", "O: the Resumes tab", self.action_resumes)
        for resumed in self.resumed_runs:
            word = fmt.row_look(resumed.status, resumed.interrupted).word
            yield SystemCommand(f"Open resumed run {resumed.id}", word, partial(self._open, resumed.id))
        if self.state.actions_allowed:
            yield SystemCommand(
                "Resume from the selected step", "s: asks first", self.action_resume_from_step
            )

    def _open(self, run_id: str) -> None:
        self.post_message(self.OpenRun(run_id))

    def action_children(self) -> None:
        """Show the run's child runs (the Children tab) and put the cursor in them."""
        if not self.child_runs:
            self.notify("This run has no child runs.", timeout=3)
            return
        self.action_tab("children")
        self.query_one("#children-table", DataTable).focus()

    def action_resumes(self) -> None:
        """Show the runs resumed from this one (the Resumes tab), cursor in them."""
        if not self.resumed_runs:
            self.notify("No run was resumed from this one.", timeout=3)
            return
        self.action_tab("resumes")
        self.query_one("#resumes-table", DataTable).focus()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """Resuming from a step writes: hidden when the monitor is read-only."""
        if action == "resume_from_step":
            return self.state.actions_allowed
        return True

    def action_resume_from_step(self) -> None:
        """Ask the app to resume this run from the step selected in the timeline."""
        step = self._step()
        if self.detail is None or step is None:
            self.notify("Select a step in the timeline first (j k), then press s.", timeout=4)
            return
        steps = self.detail.steps
        first = next(i for i, s in enumerate(steps) if s.name == step.name)
        replayed = sum(1 for s in steps[:first] if s.status == "completed")
        self.post_message(self.ResumeFromStep(self.run_id, step.name, replayed))

    def action_back(self) -> None:
        """Close the log search box, else go back to the list."""
        if not self.query_one(LogTab).close_search():
            self.dismiss(None)

    def action_tab(self, tab: str) -> None:
        """Switch to a tab."""
        self.query_one("#tabs", TabbedContent).active = tab

    def action_follow(self) -> None:
        """Follow the log tail on or off."""
        self.query_one(LogTab).toggle_follow()

    def action_level(self) -> None:
        """Cycle the minimum log level: all, warn, error."""
        self.action_tab("logs")
        self.query_one(LogTab).cycle_level()

    def action_search_logs(self) -> None:
        """Search the logs."""
        self.action_tab("logs")
        self.query_one(LogTab).open_search()
