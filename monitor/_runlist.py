"""The run list: a Line API widget that draws only the rows on screen.

Textual's DataTable builds every row up front (about 13 s for 100k rows); this list asks the
`RunIndex` for the few ids it is about to draw, so first paint costs the same for 10 or 100k
runs. Line 0 is the column header (click it to sort); the cursor follows a run id, not a
position, so live inserts never move the selection. `space` marks runs (drawn `●` before
their status glyph); the actions then apply to every marked run.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, tzinfo
from typing import ClassVar

from rich.segment import Segment
from rich.style import Style
from textual import events
from textual.binding import Binding, BindingType
from textual.geometry import Size
from textual.message import Message
from textual.scroll_view import ScrollView
from textual.strip import Strip

from durably import RunStatus

from . import _format as fmt
from . import _waiting as waiting
from ._index import RunIndex, SortKey
from ._model import RunRow


@dataclass(frozen=True, slots=True)
class Column:
    """One column: what it shows, its width and (optionally) the sort key it stands for."""

    name: str
    title: str
    width: int
    sort: SortKey | None = None


ID_WIDTH = 26
"""Cells of a full run id (a ULID)."""

MARK = "●"
"""Drawn in the first cell of a marked run's row."""
MARK_STYLE = Style(color="#e5c07b", bold=True)

# (name, title, min width, max extra width, sort key) per layout, widest layout first
_LAYOUTS: list[list[tuple[str, str, int, int, SortKey | None]]] = [
    [
        ("glyph", "", 2, 0, None),
        ("status", "STATUS", 11, 0, SortKey.STATUS),  # "interrupted"
        ("job", "JOB", 12, 14, SortKey.JOB),
        ("id", "ID", ID_WIDTH, 0, None),
        ("labels", "LABELS", 12, 16, None),
        ("progress", "PROGRESS", 22, 200, None),
        ("started", "STARTED", 14, 0, SortKey.CREATED),
        ("duration", "DURATION", 8, 0, SortKey.DURATION),
    ],
    [
        ("glyph", "", 2, 0, None),
        ("job", "JOB", 12, 10, SortKey.JOB),
        ("id", "ID", 10, ID_WIDTH - 10, None),
        ("progress", "PROGRESS", 16, 200, None),
        ("started", "STARTED", 14, 0, SortKey.CREATED),
        ("duration", "DURATION", 8, 0, SortKey.DURATION),
    ],
    [
        ("glyph", "", 2, 0, None),
        ("job", "JOB", 8, 10, SortKey.JOB),
        ("progress", "PROGRESS", 8, 200, None),
        ("duration", "DURATION", 8, 0, SortKey.DURATION),
    ],
]


def layout(width: int, *, absolute_times: bool = False) -> list[Column]:
    """Columns for a list `width` cells wide: drop columns until the rest fit, then widen.

    Relative start times (`12m ago`, title `STARTED ▼`) need 9 cells, absolute ones 14.
    """
    started = 14 if absolute_times else 9
    layouts = [
        [(n, t, started if n == "started" else w, g, k) for n, t, w, g, k in spec] for spec in _LAYOUTS
    ]
    for spec in layouts:
        minimum = sum(c[2] for c in spec) + len(spec) - 1
        if minimum <= width or spec is layouts[-1]:
            break
    extra = max(0, width - minimum)
    widths = {name: low for name, _, low, _, _ in spec}
    growth = {name: grow for name, _, _, grow, _ in spec}
    # full run ids first, then a little room for job names, then progress, job, labels, progress
    for name, cap in (
        ("id", ID_WIDTH),
        ("job", 4),
        ("progress", 18),
        ("labels", 8),
        ("job", 99),
        ("labels", 99),
        ("progress", 999),
    ):
        if name in widths:
            take = min(cap, growth[name], extra)
            widths[name] += take
            growth[name] -= take
            extra -= take
    return [Column(name, title, widths[name], sort) for name, title, _, _, sort in spec]


class RunList(ScrollView, can_focus=True):
    """Scrollable list of the runs in a `RunIndex`, one line each."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("up,k", "cursor(-1)", "Up", show=False),
        Binding("down,j", "cursor(1)", "Down", show=False),
        Binding("pageup", "page(-1)", "Page up", show=False),
        Binding("pagedown", "page(1)", "Page down", show=False),
        Binding("home,g", "jump(0)", "Top", show=False),
        Binding("end,G", "jump(-1)", "Bottom", show=False),
        Binding("enter", "open", "Open", show=True),
        Binding("space", "toggle_mark", "Mark"),
        Binding("asterisk", "mark_all", "Mark all", show=False),
    ]

    COMPONENT_CLASSES: ClassVar[set[str]] = {
        "run-list--header",
        "run-list--cursor",
        "run-list--dim",
        "run-list--marked",
    }

    DEFAULT_CSS = """
    RunList {
        height: 1fr;
        overflow-x: hidden;
        scrollbar-size-vertical: 1;
    }
    RunList > .run-list--header { text-style: bold; color: $text-muted; }
    RunList > .run-list--cursor { background: $accent 30%; }
    RunList:focus > .run-list--cursor { background: $accent 50%; }
    RunList > .run-list--dim { color: $text-muted; }
    RunList > .run-list--marked { background: $warning 15%; }
    """

    class Highlighted(Message):
        """The cursor moved to `run_id` (None when the list is empty)."""

        def __init__(self, run_id: str | None) -> None:
            self.run_id = run_id
            super().__init__()

    class Opened(Message):
        """The user asked to open `run_id` (enter or double click)."""

        def __init__(self, run_id: str) -> None:
            self.run_id = run_id
            super().__init__()

    class MarksChanged(Message):
        """Runs were marked or unmarked (`RunList.marked` says which are marked now)."""

    class SortRequested(Message):
        """The user clicked a column header."""

        def __init__(self, key: SortKey) -> None:
            self.key = key
            super().__init__()

    def __init__(self, index: RunIndex, clock: Callable[[], datetime], tz: tzinfo | None) -> None:
        super().__init__()
        self.index = index
        self.clock = clock
        self.tz = tz
        self.absolute_times = False
        self.cursor = 0
        self.selected_id: str | None = None
        self.marked: set[str] = set()
        """Ids of the marked runs (kept while a filter hides them; dropped once deleted)."""
        self._pinned = False  # select() put the cursor on a run: no tail mode until a move
        self._now = clock()

    # -- model -> view ---------------------------------------------------------------------

    def on_mount(self) -> None:
        self.sync()

    def on_resize(self, event: events.Resize) -> None:
        self.virtual_size = Size(event.size.width, len(self.index) + 1)
        self._scroll_to_cursor()

    def sync(self) -> None:
        """Re-read the index after a change: keep the selected run under the cursor.

        When the user put the cursor on the very top row, it stays there, so new runs appear
        under it (tail mode); otherwise (and after `select`) the selected run keeps the cursor.
        """
        count = len(self.index)
        self.virtual_size = Size(self.size.width, count + 1)
        if self.marked:
            rows = self.index.rows
            self.marked = {i for i in self.marked if i in rows}
        at_top = self.cursor == 0 and self.scroll_y == 0 and not self._pinned
        previous_offset = self.cursor - int(self.scroll_y)
        position = None if at_top or self.selected_id is None else self.index.position_of(self.selected_id)
        if position is None:
            position = min(self.cursor, max(0, count - 1)) if not at_top else 0
        else:
            self.scroll_to(y=max(0, position - previous_offset), animate=False, immediate=True)
        self._move_to(position)
        self.refresh()

    def select(self, run_id: str) -> bool:
        """Put the cursor on `run_id` and keep it there as runs come and go (until the user
        moves it); False (cursor unchanged) if the filter hides the run."""
        position = self.index.position_of(run_id)
        if position is None:
            return False
        self._move_to(position)
        self._pinned = True
        return True

    def to_top(self) -> None:
        """Cursor and view back to the first row (tail mode), e.g. after a new filter."""
        self._pinned = False
        self.cursor = 0
        self.scroll_to(y=0, animate=False, immediate=True)
        self.sync()

    def _move_to(self, position: int) -> None:
        count = len(self.index)
        self.cursor = max(0, min(position, count - 1)) if count else 0
        new_id = self.index.id_at(self.cursor) if count else None
        self._scroll_to_cursor()
        if new_id != self.selected_id:
            self.selected_id = new_id
            self.post_message(self.Highlighted(new_id))
        self.refresh()

    def _scroll_to_cursor(self) -> None:
        rows = max(1, self.scrollable_content_region.height - 1)
        top = int(self.scroll_y)
        if self.cursor < top:
            self.scroll_to(y=self.cursor, animate=False, immediate=True)
        elif self.cursor >= top + rows:
            self.scroll_to(y=self.cursor - rows + 1, animate=False, immediate=True)

    # -- actions ---------------------------------------------------------------------------

    def action_cursor(self, delta: int) -> None:
        """Move the cursor by `delta` rows."""
        self._pinned = False
        self._move_to(self.cursor + delta)

    def action_page(self, direction: int) -> None:
        """Move the cursor by a screenful."""
        rows = max(1, self.scrollable_content_region.height - 2)
        self._pinned = False
        self.scroll_to(y=max(0, int(self.scroll_y) + direction * rows), animate=False)
        self._move_to(self.cursor + direction * rows)

    def action_jump(self, position: int) -> None:
        """Go to the first (0) or last (-1) row."""
        self._pinned = False
        self._move_to(len(self.index) - 1 if position < 0 else position)

    def action_toggle_mark(self) -> None:
        """Mark the selected run, or unmark it, and move to the next row."""
        run_id = self.selected_id
        if run_id is None:
            return
        self.marked ^= {run_id}
        self.post_message(self.MarksChanged())
        self.action_cursor(1)

    def action_mark_all(self) -> None:
        """Mark every run the filter shows; if they all are marked already, unmark them."""
        shown = {self.index.id_at(i) for i in range(len(self.index))}
        if shown <= self.marked:
            self.marked -= shown
        else:
            self.marked |= shown
        self.post_message(self.MarksChanged())
        self.refresh()

    def clear_marks(self) -> None:
        """Unmark every run."""
        if self.marked:
            self.marked = set()
            self.post_message(self.MarksChanged())
            self.refresh()

    def action_open(self) -> None:
        """Open the selected run."""
        if self.selected_id is not None:
            self.post_message(self.Opened(self.selected_id))

    async def _on_click(self, event: events.Click) -> None:
        if event.y == 0:
            x = 0
            for column in layout(self.scrollable_content_region.width, absolute_times=self.absolute_times):
                if x <= event.x < x + column.width + 1 and column.sort is not None:
                    self.post_message(self.SortRequested(column.sort))
                x += column.width + 1
            return
        position = int(self.scroll_y) + event.y - 1
        if 0 <= position < len(self.index):
            self._pinned = False
            self._move_to(position)
            if event.chain >= 2:
                self.action_open()

    def tick(self) -> None:
        """Redraw with a fresh clock (relative times, running durations)."""
        self._now = self.clock()
        self.refresh()

    # -- drawing ---------------------------------------------------------------------------

    def render_line(self, y: int) -> Strip:
        """Draw line `y` of the visible region: the header, a run, or blank."""
        width = self.scrollable_content_region.width
        base = self.rich_style
        if y == 0:
            return self._header(width, base)
        position = int(self.scroll_y) + y - 1
        if position >= len(self.index):
            return Strip.blank(width, base)
        row = self.index.row_at(position)
        style = base
        if row.id in self.marked:
            style = base + self.get_component_rich_style("run-list--marked")
        if position == self.cursor:
            style = base + self.get_component_rich_style("run-list--cursor")
        return self._row(row, width, style)

    def _header(self, width: int, base: Style) -> Strip:
        style = base + self.get_component_rich_style("run-list--header")
        segments = []
        for column in layout(width, absolute_times=self.absolute_times):
            title = column.title
            if column.sort is self.index.sort_key and column.sort is not None:
                title += " ▼" if self.index.descending else " ▲"
            segments.append(Segment(title.ljust(column.width + 1)[: column.width + 1], style))
        return Strip(segments).adjust_cell_length(width, style)

    def _row(self, row: RunRow, width: int, style: Style) -> Strip:
        look = fmt.row_look(row.status, row.interrupted)
        color = Style(color=look.color)
        dim = self.get_component_rich_style("run-list--dim", partial=True)
        segments: list[Segment] = []
        for column in layout(width, absolute_times=self.absolute_times):
            for text, extra in self._cell(column, row, look, color, dim):
                segments.append(Segment(text, style + extra if extra else style))
            segments.append(Segment(" ", style))
        return Strip(segments).adjust_cell_length(width, style)

    def _cell(
        self, column: Column, row: RunRow, look: fmt.StatusLook, color: Style, dim: Style
    ) -> list[tuple[str, Style | None]]:
        w = column.width
        name = column.name
        if name == "glyph":
            return [(MARK, MARK_STYLE) if row.id in self.marked else (" ", None), (look.glyph, color)]
        if name == "status":
            return [(look.word.ljust(w), color)]
        if name == "job":
            return [(fmt.clip(row.job, w).ljust(w), None)]
        if name == "id":
            text = row.id if len(row.id) <= w else "…" + row.id[-(w - 1) :]
            return [(text.ljust(w), dim)]
        if name == "labels":
            return [(fmt.clip(row.label_text, w).ljust(w), dim)]
        if name == "progress":
            return self._progress(row, w, color, dim)
        if name == "started":
            when = row.started_at or row.created_at
            text = fmt.absolute(when, self.tz) if self.absolute_times else fmt.relative(when, self._now)
            return [(text.rjust(w)[:w], dim if row.started_at is None else None)]
        return [(fmt.duration(row.duration(self._now)).rjust(w)[:w], None)]

    def _progress(self, row: RunRow, w: int, color: Style, dim: Style) -> list[tuple[str, Style | None]]:
        if row.error and row.status is not None and row.is_terminal:
            return [(fmt.clip(row.error, w).ljust(w), color)]
        if row.waiting_for and row.status is RunStatus.WAITING:
            text = waiting.list_text(row.waiting_for, row.wake_at, self._now, self.tz, w)
            return [(fmt.clip(text, w).ljust(w), color)]
        cells: list[tuple[str, Style | None]] = []
        used = 0
        if row.progress_total and w >= 16:
            bar_width = min(10, w // 3)
            cells.append((fmt.bar(row.progress_current, row.progress_total, bar_width), color))
            cells.append((" ", None))
            used = bar_width + 1
        counter = fmt.progress_text(row.progress_current, row.progress_total)
        if not counter and row.completed_steps:
            counter = f"{row.completed_steps} step" + ("s" if row.completed_steps > 1 else "")
        if counter:
            counter = fmt.clip(counter, w - used)
            cells.append((counter, None))
            used += len(counter)
        if row.progress_message and used + 2 <= w:
            text = fmt.clip(row.progress_message, w - used - 1)
            cells.append((" " + text, dim))
            used += len(text) + 1
        cells.append((" " * max(0, w - used), None))
        return cells
