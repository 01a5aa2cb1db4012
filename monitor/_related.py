"""The detail's tables of related runs: a run's children (`step.invoke`) and the runs
resumed from it (`Durably.resume`). Both come from the monitor's index, so they follow every
change at once; `enter` on a row opens that run.
"""

from __future__ import annotations

from datetime import datetime, tzinfo
from typing import Literal

from rich.text import Text

from durably import RunStatus

from . import _format as fmt
from . import _waiting as waiting
from ._model import RunRow
from ._widgets import RunTable

Kind = Literal["children", "resumes"]

_TITLES: dict[Kind, tuple[str, ...]] = {
    "children": (" ", "JOB", "ID", "STEP", "STATUS"),
    "resumes": (" ", "ID", "CREATED", "STATUS"),
}


class RelatedTable(RunTable):
    """One row per related run: its glyph, id (shortened) and status or what it waits for;
    a child also names its job and the step that invoked it, a resumed run when it was made.

    Args:
        kind: `children` or `resumes`.
    """

    def __init__(self, kind: Kind, *, id: str | None = None) -> None:
        super().__init__(id=id, cursor_type="row", zebra_stripes=False)
        self.kind: Kind = kind
        self.runs: tuple[RunRow, ...] = ()
        """The runs shown, in table order."""
        self._shown: tuple[object, ...] | None = None

    def on_mount(self) -> None:
        self.add_columns(*_TITLES[self.kind])

    def show(self, runs: list[RunRow], width: int, now: datetime, tz: tzinfo | None) -> None:
        """Show `runs` in a table `width` cells wide (redrawn only when something changed)."""
        shown = tuple(runs)
        room = max(12, width - self._fixed(shown))
        ticking = int(now.timestamp()) if any(r.status is RunStatus.WAITING for r in shown) else 0
        if (room, ticking, shown) == self._shown:
            return
        keep = self.cursor_row
        self.clear()
        for run in shown:
            look = fmt.row_look(run.status, run.interrupted)
            state = look.word
            if run.status is RunStatus.WAITING:
                state = waiting.list_text(run.waiting_for, run.wake_at, now, tz, room) or state
            glyph = Text(look.glyph, style=look.color)
            short = Text(waiting.short_id(run.id, 12), style="dim")
            status = Text(state, style=look.color)
            if self.kind == "children":
                cells: tuple[object, ...] = (
                    glyph,
                    fmt.clip(run.job, 20),
                    short,
                    run.parent_step or "",
                    status,
                )
            else:
                cells = (glyph, short, f"{fmt.absolute(run.created_at, tz)}", status)
            self.add_row(*cells, key=run.id)
        if shown:
            self.move_cursor(row=min(max(keep, 0), len(shown) - 1), animate=False)
        self.runs = shown
        self._shown = (room, ticking, shown)

    def _fixed(self, runs: tuple[RunRow, ...]) -> int:
        """Cells the columns before STATUS take (glyph 1, id 13, each column padded by 2)."""
        if self.kind == "resumes":
            return 1 + 13 + 14 + 4 * 2 + 2
        jobs = max((len(r.job[:20]) for r in runs), default=0)
        steps = max((len(r.parent_step or "") for r in runs), default=0)
        return 14 + jobs + steps + 10 + 2

    def selected_run(self) -> RunRow | None:
        """The run under the cursor."""
        at = self.cursor_row
        return self.runs[at] if 0 <= at < len(self.runs) else None
