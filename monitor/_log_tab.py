"""The detail's Logs tab: the run's log tail with follow mode, a level filter and a search.

`LogTab` keeps which entries it has shown, so a reread of the run appends only the new ones;
a filter change (level, search) redraws them all.
"""

from __future__ import annotations

from datetime import tzinfo

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import Input, Static

from . import _format as fmt
from ._model import LogRow
from ._widgets import LogView

_LEVEL_RANK = {"debug": -1, "info": 0, "warn": 1, "warning": 1, "error": 2}

LOG_INDENT = 15
"""Where a log entry's message starts (`18:04:05 WARN  `): continuation lines align there."""


def log_line(entry: LogRow, tz: tzinfo | None) -> str:
    """One log entry as a line of text; its data (if any) as JSON."""
    at = fmt.absolute(entry.at, tz, date=False)
    step = f"[{entry.step}] " if entry.step else ""
    data = "" if entry.data in (None, {}, []) else f" {fmt.json_text(entry.data)}"
    return f"{at:8} {entry.level.upper():5} {step}{entry.message}{data}".replace("\n", " ⏎ ")


class LogTab(Vertical):
    """The log bar (follow, level, search, count), the search box and the log itself.

    Args:
        tz: time zone of the log times (None: local time).
    """

    DEFAULT_CSS = """
    LogTab #logbar { height: 1; padding: 0 1; color: $text-muted; }
    LogTab #logsearch { display: none; height: 1; border: none; padding: 0 1; }
    LogTab #logsearch.active { display: block; }
    """

    def __init__(self, tz: tzinfo | None, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.tz = tz
        self.follow = True
        self.min_level: str | None = None
        self.search = ""
        self.logs: tuple[LogRow, ...] = ()
        """Every entry of the run (shown or filtered out)."""
        self._shown = 0

    def compose(self) -> ComposeResult:
        yield Static("", id="logbar")
        yield Input(placeholder="search logs", id="logsearch")
        yield LogView(id="log", indent=LOG_INDENT, highlight=True)

    def on_mount(self) -> None:
        self._update_bar()

    def show(self, logs: tuple[LogRow, ...], *, rebuild: bool = False) -> None:
        """Show `logs`: append the entries not shown yet (all of them with `rebuild`)."""
        log = self.query_one("#log", LogView)
        self.logs = logs
        if rebuild or len(logs) < self._shown:
            log.clear_entries()
            self._shown = 0
        new = logs[self._shown :]
        self._shown = len(logs)
        log.add_entries(log_line(e, self.tz) for e in new if self._keep(e))
        self._update_bar()

    def _keep(self, entry: LogRow) -> bool:
        if self.min_level and _LEVEL_RANK.get(entry.level, 0) < _LEVEL_RANK[self.min_level]:
            return False
        return not self.search or self.search.lower() in entry.message.lower()

    def _update_bar(self) -> None:
        text = Text()
        text.append("follow ● on" if self.follow else "follow ○ off", "bold" if self.follow else "")
        text.append(f"   level ≥ {self.min_level}" if self.min_level else "   all levels")
        if self.search:
            text.append(f"   search {self.search!r}")
        text.append(f"   {len(self.logs)} lines", style="dim")
        self.query_one("#logbar", Static).update(text)

    def toggle_follow(self) -> None:
        """Follow the log tail on or off."""
        self.follow = not self.follow
        log = self.query_one("#log", LogView)
        log.auto_scroll = self.follow
        if self.follow:
            log.scroll_end(animate=False)
        self._update_bar()

    def cycle_level(self) -> None:
        """The minimum level shown: all, warn and up, errors only."""
        cycle: list[str | None] = [None, "warn", "error"]
        self.min_level = cycle[(cycle.index(self.min_level) + 1) % len(cycle)]
        self.show(self.logs, rebuild=True)

    def open_search(self) -> None:
        """Show the search box and type into it."""
        box = self.query_one("#logsearch", Input)
        box.add_class("active")
        box.focus()

    def close_search(self) -> bool:
        """Clear and hide the search box; False if it was not open."""
        box = self.query_one("#logsearch", Input)
        if not box.has_class("active"):
            return False
        box.value = ""
        box.remove_class("active")
        self.query_one("#log", LogView).focus()
        return True

    def on_input_changed(self, event: Input.Changed) -> None:
        if event.input.id == "logsearch":
            event.stop()
            self.search = event.value
            self.show(self.logs, rebuild=True)

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if event.input.id == "logsearch":
            event.stop()
            self.query_one("#log", LogView).focus()
