"""Modal screens: the confirmation asked before every action, and the `?` key sheet."""

from __future__ import annotations

from typing import ClassVar

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, Static


class ConfirmScreen(ModalScreen[bool]):
    """Ask a yes/no question; dismiss with True only on an explicit yes."""

    DEFAULT_CSS = """
    ConfirmScreen { align: center middle; }
    ConfirmScreen > Vertical {
        width: auto; max-width: 90%; min-width: 40; height: auto;
        border: thick $warning; background: $surface; padding: 1 2;
    }
    ConfirmScreen #question { width: auto; max-width: 100%; margin-bottom: 1; }
    ConfirmScreen Horizontal { height: auto; width: auto; align-horizontal: right; }
    ConfirmScreen Button { margin-left: 2; }
    """

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("y", "answer(True)", "Yes"),
        Binding("n,escape", "answer(False)", "No"),
    ]

    def __init__(self, question: str, *, yes: str = "Yes") -> None:
        super().__init__()
        self.question = question
        self.yes = yes

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Static(self.question, id="question", markup=False)
            with Horizontal():
                yield Button(f"{self.yes} (y)", id="yes", variant="error")
                yield Button("No (n)", id="no", variant="default")

    def on_mount(self) -> None:
        self.query_one("#no", Button).focus()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "yes")

    def action_answer(self, answer: bool) -> None:
        """Close the dialog with `answer`."""
        self.dismiss(answer)


HELP: list[tuple[str, list[tuple[str, str]]]] = [
    (
        "Run list",
        [
            ("j k  ↑ ↓", "move down / up; click a row to select it"),
            ("g G  Home End", "first / last run"),
            ("PgUp PgDn", "a screenful up / down"),
            ("enter / double click", "open the run"),
            ("/", "search: free text, or status:failed job:NAME label:k=v"),
            ("f", "failed runs only (again: all)"),
            ("1 2 3 4 5", "toggle pending / running / completed / failed / cancelled"),
            ("J", "next job filter (in name order), then all jobs"),
            ("l", "filter by label (type label:key=value)"),
            ("0 / escape", "clear every filter"),
            ("s / S", "next sort column / reverse order; click a header to sort"),
            ("t", "relative or absolute start times"),
            ("space", "pause or resume live updates"),
        ],
    ),
    (
        "Run detail",
        [
            ("escape / backspace", "back to the list"),
            ("i e l", "input+output, error, logs tab"),
            ("j k  ↑ ↓ in steps", "select a step (its output and error are shown)"),
            ("j k g G in the log", "scroll a line, to the top, to the end"),
            ("F", "follow the log tail on or off"),
            ("v", "log level filter: all, warn and up, errors only"),
            ("/", "search the logs (escape clears)"),
        ],
    ),
    (
        "Actions (ask first; hidden with --read-only or a read-only root)",
        [
            ("c", "cancel a pending or running run"),
            ("r", "retrigger a finished run (needs --app module:attr)"),
            ("d", "delete a finished run"),
            ("y", "copy the run id to the clipboard"),
        ],
    ),
    ("Anywhere", [("ctrl+p", "command palette"), ("?", "this help"), ("q", "quit")]),
]


class HelpScreen(ModalScreen[None]):
    """Every key, grouped by screen."""

    DEFAULT_CSS = """
    HelpScreen { align: center middle; }
    HelpScreen > VerticalScroll {
        width: 84; max-width: 100%; height: auto; max-height: 90%;
        border: thick $primary; background: $surface; padding: 0 1;
    }
    """

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,q,question_mark", "close", "Close"),
        Binding("j,down", "scroll(1)", "Down", show=False),
        Binding("k,up", "scroll(-1)", "Up", show=False),
        Binding("g,home", "scroll(0)", "Top", show=False),
        Binding("G,end", "scroll(2)", "End", show=False),
    ]

    def compose(self) -> ComposeResult:
        parts: list[RenderableType] = []
        for title, rows in HELP:
            table = Table.grid(padding=(0, 2))
            table.add_column(style="bold", no_wrap=True, width=24)
            table.add_column(ratio=1)
            for key, what in rows:
                table.add_row(key, what)
            parts += [Text(title, style="bold underline"), table, Text("")]
        with VerticalScroll():
            yield Static(Group(*parts), id="sheet")

    def action_close(self) -> None:
        """Close the help."""
        self.dismiss(None)

    def action_scroll(self, where: int) -> None:
        """Scroll the sheet: a line down (1) or up (-1), to the top (0) or the end (2)."""
        box = self.query_one(VerticalScroll)
        if where == 1:
            box.scroll_down(animate=False)
        elif where == -1:
            box.scroll_up(animate=False)
        elif where == 0:
            box.scroll_home(animate=False)
        else:
            box.scroll_end(animate=False)
