"""Small widgets of the monitor's screens: the step table, the wrapping log, the footer."""

from __future__ import annotations

import textwrap
from collections.abc import Iterable
from typing import ClassVar

from rich.cells import cell_len
from textual import events
from textual.binding import Binding, BindingType
from textual.widget import Widget
from textual.widgets import DataTable, Footer, Log


class StepTable(DataTable[object]):
    """The detail screen's step table: a row cursor that also moves with j, k, g and G."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("j", "cursor_down", "Down", show=False),
        Binding("k", "cursor_up", "Up", show=False),
        Binding("g", "scroll_top", "Top", show=False),
        Binding("G", "scroll_bottom", "Bottom", show=False),
    ]


class RunTable(StepTable):
    """A small table with a row cursor and the same keys: a run's children, the workers."""


class LogView(Log):
    """A `Log` whose entries wrap at its width (Textual's `Log` cuts long lines).

    Entries are kept as given and wrapped again whenever the width changes; continuation
    lines are indented by `indent` cells, so each entry's first column stays readable.
    `j`/`k` scroll by a line, `g`/`G` to the top and the end.

    Args:
        indent: cells of indentation for the second and later lines of an entry.
        max_entries: how many entries are kept (the oldest are dropped).
    """

    DEFAULT_CSS = """
    LogView { overflow-x: hidden; scrollbar-size-vertical: 1; }
    """

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("j", "scroll_down", "Down", show=False),
        Binding("k", "scroll_up", "Up", show=False),
        Binding("g", "scroll_home", "Top", show=False),
        Binding("G", "scroll_end", "End", show=False),
    ]

    def __init__(
        self,
        *,
        indent: int = 0,
        max_entries: int = 10_000,
        highlight: bool = False,
        id: str | None = None,
    ) -> None:
        super().__init__(highlight=highlight, id=id)
        self.indent = indent
        self.max_entries = max_entries
        self.entries: list[str] = []
        self._wrapped_at = 0

    def add_entries(self, entries: Iterable[str]) -> None:
        """Append entries (each may become several lines)."""
        new = list(entries)
        if not new:
            return
        self.entries += new
        if len(self.entries) > self.max_entries:
            del self.entries[: len(self.entries) - self.max_entries]
            self._rewrap()
            return
        width = self.wrap_width
        if width != self._wrapped_at:
            self._rewrap()
        else:
            self.write_lines(self._wrap(new, width))

    def clear_entries(self) -> None:
        """Remove every entry."""
        self.entries = []
        self.clear()

    @property
    def wrap_width(self) -> int:
        """Cells available for text (the scrollbar's column is always left free); 0 if unknown."""
        return max(0, self.size.width - self.styles.scrollbar_size_vertical)

    def on_resize(self, event: events.Resize) -> None:
        if self.wrap_width != self._wrapped_at:
            self._rewrap()

    def _rewrap(self) -> None:
        width = self.wrap_width
        self._wrapped_at = width
        self.clear()
        self.write_lines(self._wrap(self.entries, width))

    def _wrap(self, entries: Iterable[str], width: int) -> list[str]:
        if width <= self.indent + 8:  # not laid out yet, or too narrow to wrap usefully
            return list(entries)
        wrapper = textwrap.TextWrapper(
            width, subsequent_indent=" " * self.indent, break_on_hyphens=False, drop_whitespace=True
        )
        lines: list[str] = []
        for entry in entries:
            lines += (wrapper.wrap(entry) or [""]) if cell_len(entry) > width else [entry]
        return lines


FOOTER_PRIORITY = [
    "open",
    "back",
    "toggle_pause",
    "search",
    "failed",
    "help",
    "act('cancel')",
    "act('retrigger')",
    "act('delete')",
    "quit",
    "act('resume')",
    "resume_from_step",
    "toggle_mark",
    "tab('logs')",
    "signal",
    "follow",
    "level",
    "search_logs",
    "workers",
    "schedules",
    "cycle_job",
    "sort",
    "copy_id",
    "pause",
]
"""Footer keys, most useful first: a narrow footer keeps the first ones that fit."""

ESSENTIAL = 11
"""The footer turns compact when the first this many keys of `FOOTER_PRIORITY` do not fit."""


class MonitorFooter(Footer):
    """A footer that keeps the most useful keys when the terminal is too narrow for all.

    Keys are kept in `FOOTER_PRIORITY` order while they fit (the others stay in `?` and the
    command palette, and their keys still work). When even the essential ones do not fit,
    the footer switches to its compact style.
    """

    def on_resize(self, event: events.Resize) -> None:
        self.fit()

    async def recompose(self) -> None:
        """Rebuild the keys (the bindings changed), then fit them to the width."""
        await super().recompose()
        self.fit()

    def fit(self) -> None:
        """Show the most useful keys that fit in the footer's width."""
        width = self.size.width
        if not width:
            return
        # FooterKey (the type Footer composes its keys of) is not public: select it by name
        keys = [k for k in self.query_children("FooterKey") if not k.has_class("-command-palette")]
        palette = [k for k in self.query_children("FooterKey") if k.has_class("-command-palette")]
        ranked = sorted(keys, key=_rank)
        essential = sum(1 for k in ranked if _rank(k) < ESSENTIAL)
        for compact in (False, True):
            room = width - sum(_width(k, compact) for k in palette)
            shown: list[Widget] = []
            for key in ranked:
                room -= _width(key, compact)
                if room < 0:
                    break
                shown.append(key)
            if len(shown) >= essential:
                break
        self.compact = compact
        for key in keys:
            key.display = key in shown


def _rank(key: Widget) -> int:
    action = str(getattr(key, "action", ""))
    return FOOTER_PRIORITY.index(action) if action in FOOTER_PRIORITY else len(FOOTER_PRIORITY)


def _width(key: Widget, compact: bool) -> int:
    """Cells a footer key takes: its key, its description and their padding."""
    text = f"{getattr(key, 'key_display', '')}{getattr(key, 'description', '')}"
    return cell_len(text) + (2 if compact else 3)
