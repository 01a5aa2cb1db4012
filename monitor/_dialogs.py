"""Modal screens: the confirmation asked before every action, the signal form, the `?` sheet."""

from __future__ import annotations

import json
from typing import Any, ClassVar

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Static


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


class SignalScreen(ModalScreen[tuple[str, Any] | None]):
    """Ask for a signal's name and its data (JSON, checked before it is accepted).

    Dismisses with `(name, data)` (`data` None when left empty), or None on escape.

    Args:
        run_id: the run the signal goes to.
        job: its job (shown in the title).
        name: the signal the run waits for, if any (filled in).
        waits: the run waits for `name` now (else a sent signal is kept until it does).
    """

    DEFAULT_CSS = """
    SignalScreen { align: center middle; }
    SignalScreen > Vertical {
        width: 76; max-width: 96%; height: auto;
        border: thick $primary; background: $surface; padding: 1 2;
    }
    SignalScreen Static { width: 100%; }
    SignalScreen .label { margin-top: 1; color: $text-muted; }
    SignalScreen Input { width: 100%; }
    SignalScreen #signal-problem { color: $error; height: auto; min-height: 1; }
    SignalScreen Horizontal { height: auto; width: 100%; align-horizontal: right; margin-top: 1; }
    SignalScreen Button { margin-left: 2; }
    """

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, run_id: str, job: str, name: str = "", *, waits: bool = False) -> None:
        super().__init__()
        self.run_id, self.job, self.signal_name, self.waits = run_id, job, name, waits

    def compose(self) -> ComposeResult:
        about = (
            f"It waits for signal {self.signal_name!r}."
            if self.waits
            else "It waits for no signal now: a signal sent is kept until it does."
        )
        with Vertical():
            yield Static(f"Send a signal to run {self.run_id} ({self.job})", markup=False, classes="title")
            yield Static(about, markup=False)
            yield Static("Signal name", classes="label")
            yield Input(self.signal_name, placeholder="approval", id="signal-name")
            yield Static("Data, as JSON (left empty: null)", classes="label", markup=False)
            yield Input(placeholder='e.g. {"by": "ana"}', id="signal-data")
            yield Static("", id="signal-problem", markup=False)
            with Horizontal():
                yield Button("Send… (enter)", id="send", variant="primary")
                yield Button("Cancel (esc)", id="cancel", variant="default")

    def on_mount(self) -> None:
        self.query_one("#signal-data" if self.signal_name else "#signal-name", Input).focus()

    def on_input_changed(self, event: Input.Changed) -> None:
        """A problem shown goes away (or changes) as the form is edited."""
        shown = self.query_one("#signal-problem", Static)
        if str(shown.content):
            shown.update(self.problem() or "")

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if event.input.id == "signal-name" and not self.query_one("#signal-data", Input).value:
            self.query_one("#signal-data", Input).focus()
        else:
            self.submit()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "send":
            self.submit()
        else:
            self.dismiss(None)

    def problem(self) -> str | None:
        """Why the form cannot be sent as it is (None when it can)."""
        if not self.query_one("#signal-name", Input).value.strip():
            return "A signal needs a name."
        text = self.query_one("#signal-data", Input).value.strip()
        if text:
            try:
                json.loads(text)
            except ValueError as error:
                return f"The data is not JSON: {error}"
        return None

    def submit(self) -> None:
        """Accept the form if it is valid; else say what is wrong and stay."""
        problem = self.problem()
        if problem:
            self.query_one("#signal-problem", Static).update(problem)
            self.notify(problem, severity="error", timeout=4)
            return
        name = self.query_one("#signal-name", Input).value.strip()
        text = self.query_one("#signal-data", Input).value.strip()
        self.dismiss((name, json.loads(text) if text else None))

    def action_cancel(self) -> None:
        """Close without sending."""
        self.dismiss(None)


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
            ("1 2 3 4 5 6", "toggle pending / running / completed / failed / cancelled / waiting"),
            ("J", "next job filter (in name order), then all jobs"),
            ("l", "filter by label (type label:key=value)"),
            ("0", "clear every filter"),
            ("escape", "unmark every run; with none marked, clear every filter"),
            ("s / I", "next sort column / invert the order; click a header to sort"),
            ("t", "relative or absolute start times"),
            ("space", "mark or unmark the run, then move down"),
            ("*", "mark every run shown (again: unmark them)"),
            ("c r R d with marks", "act on every marked run: asked once, failures reported together"),
        ],
    ),
    (
        "Run detail",
        [
            ("escape / backspace", "back to the list"),
            ("i e l", "input+output, error, logs tab"),
            ("j k  ↑ ↓ in steps", "select a step (its output and error are shown)"),
            ("j k g G in the log", "scroll a line, to the top, to the end"),
            ("enter in the steps", "on a step that invoked a child run: open the child"),
            ("C", "the run's child runs (Children tab; enter opens one)"),
            ("O", "the runs resumed from this one (Resumes tab; enter opens one)"),
            ("s in the steps", "resume from the selected step: it and every step after it run again"),
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
            ("R", "resume a failed or cancelled run: its completed steps are replayed (needs --app)"),
            ("d", "delete a finished run"),
            ("n", "send a signal with JSON data to a waiting run (read-only: says why not)"),
            ("y", "copy the run id to the clipboard"),
        ],
    ),
    (
        "Schedules view (S)",
        [
            ("enter", "open the schedule's last run"),
            ("p", "pause the schedule, or resume a paused one (asks first)"),
            ("escape / S", "back"),
        ],
    ),
    (
        "Anywhere",
        [
            ("p", "open the parent of a child run (escape comes back)"),
            ("o", "open the run a resumed run was resumed from"),
            ("w", "workers: the live durably worker processes"),
            ("S", "schedules: each cron schedule, its next tick and its last run"),
            ("P", "pause or resume live updates"),
            ("ctrl+p", "command palette"),
            ("?", "this help"),
            ("q", "quit"),
        ],
    ),
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
