"""The detail's step table: the rows of `_timeline` (every attempt and wait) as a table that
leaves its TIMELINE column out when the pane is too narrow for it."""

from __future__ import annotations

from datetime import datetime

from rich.text import Text

from durably import RunStatus

from . import _format as fmt
from . import _timeline as timeline
from . import _waiting as waiting
from ._model import RunDetail, RunRow
from ._widgets import StepTable

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


class TimelineTable(StepTable):
    """A run's step attempts and waits, one row each (see `_timeline`)."""

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id, cursor_type="row", zebra_stripes=False)
        self.timeline: list[timeline.TimelineRow] = []
        """The rows shown, in table order."""
        self._shown: tuple[object, ...] | None = None

    def show(self, detail: RunDetail, children: list[RunRow], now: datetime) -> bool:
        """Show `detail`'s timeline; False (nothing redrawn) when it looks the same as before.

        The cursor stays on its row.
        """
        # a pane too narrow for every column leaves TIMELINE out (80 columns: 39 cells)
        width = self.size.width - 1
        width = width if width > 0 else 999  # not laid out yet: a resize comes later
        rows = timeline.rows(detail, children, now)
        columns = _columns(any(r.attempt for r in rows), narrow=False)
        if not _fits(rows, columns, width):
            rows = timeline.rows(detail, children, now, compact=True)
            columns = _columns(any(r.attempt for r in rows), narrow=True)
        cells = [_cells(r, columns) for r in rows]
        shown = (tuple(columns), *cells)
        if shown == self._shown:
            return False
        keep = self.cursor_row
        if self._shown is None or self._shown[0] != shown[0]:
            self.clear(columns=True)
            self.add_columns(*(_STEP_TITLES[i] for i in columns))
        else:
            self.clear()
        for row in cells:
            self.add_row(*row)
        self.timeline = rows
        self._shown = shown
        if rows:
            self.move_cursor(row=min(max(keep, 0), len(rows) - 1), animate=False)
        return True


def failed_row(detail: RunDetail, rows: list[timeline.TimelineRow]) -> int | None:
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
