"""The actions that write: cancel, retrigger, delete and send a signal, each asked first.

`RunActions` is the base class of `MonitorApp`: the app provides the source, the state, the
run an action applies to (`target_run`) and what happens once an action is done
(`after_action`: reread the runs it touched). The durably calls run in thread workers.
"""

from __future__ import annotations

import json
from typing import Any

from textual import work
from textual.app import App

from . import _waiting as waiting
from ._backend import Source
from ._commands import Action
from ._dialogs import ConfirmScreen, SignalScreen
from ._model import RunRow
from ._state import MonitorState

RETRIGGER_NEEDS_APP = (
    "Retrigger re-validates the run's input against its job, so the monitor needs your "
    "Durably app: start it with  durably monitor --app module:attr"
)

READ_ONLY_SIGNAL = (
    "This monitor does not write ({why}): signals cannot be sent from here. "
    "Use  durably signal RUN NAME --data JSON  where the root is writable."
)


class RunActions(App[None]):
    """Ask, then act on the target run; the app's base class (see the module docstring)."""

    source: Source
    state: MonitorState

    def target_run(self) -> RunRow | None:
        """The run an action applies to (the app says which)."""
        raise NotImplementedError

    def after_action(self, action: str, run_id: str, new_ids: list[str]) -> None:
        """Called in the action's thread once it is done: reread the runs it touched."""
        raise NotImplementedError

    @property
    def actions_allowed(self) -> bool:
        """False with --read-only or when the root cannot be written."""
        return self.state.actions_allowed

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """Hide the actions that write when the monitor is read-only; the signal key then
        says why it cannot send (`signal_refused`, bound to the same key, not shown)."""
        if action in ("act", "signal"):
            return self.actions_allowed
        if action == "signal_refused":
            return not self.actions_allowed
        return True

    # -- cancel, retrigger, delete -----------------------------------------------------------

    def action_act(self, action: Action) -> None:
        """Ask, then cancel, retrigger or delete the target run."""
        row = self.target_run()
        if row is None or not self.actions_allowed:
            return
        if action == "retrigger" and not self.source.can_retrigger:
            self.notify(RETRIGGER_NEEDS_APP, severity="warning", timeout=8)
            return
        problem = _why_not(action, row)
        if problem:
            self.notify(problem, severity="warning")
            return
        question = {
            "cancel": f"Cancel run {row.id} ({row.job})?",
            "retrigger": f"Start a new run of {row.job} with the input of {row.id}?",
            "delete": f"Delete run {row.id} ({row.job}) and all its files?\nThis cannot be undone.",
        }[action]

        def answered(yes: bool | None) -> None:
            if yes:
                self._run_action(action, row.id)

        yes = {"cancel": "Yes, cancel it", "retrigger": "Yes, run again", "delete": "Yes, delete it"}
        self.push_screen(ConfirmScreen(question, yes=yes[action]), answered)

    @work(thread=True, group="action", exit_on_error=False)
    def _run_action(self, action: Action, run_id: str) -> None:
        perform = {
            "cancel": self.source.cancel,
            "retrigger": self.source.retrigger,
            "delete": self.source.delete,
        }[action]
        new_ids: list[str] = []
        try:
            text, new_ids = perform(run_id)
        except Exception as error:  # noqa: BLE001 (the user sees why it did not work)
            self.call_from_thread(self.notify, f"{action} failed: {error}", severity="error")
        else:
            self.call_from_thread(self.notify, text)
        self.after_action(action, run_id, new_ids)

    # -- signals -----------------------------------------------------------------------------

    def action_signal(self) -> None:
        """Ask for a signal's name and JSON data, confirm, then send it to the target run."""
        row = self.target_run()
        if row is None:
            return
        if not self.actions_allowed:
            self.action_signal_refused()
            return
        if row.status is None:
            self.notify(f"{row.id} is still syncing; try again in a moment.", severity="warning")
            return
        if row.is_terminal:
            self.notify(
                f"{row.id} already finished ({row.status.value}): a signal can no longer reach it.",
                severity="warning",
            )
            return
        wait = waiting.parse(row.waiting_for)
        name = wait.name if wait is not None and wait.kind == "signal" else ""

        def entered(result: tuple[str, Any] | None) -> None:
            if result is not None:
                self._confirm_signal(row, *result)

        self.push_screen(SignalScreen(row.id, row.job, name, waits=bool(name)), entered)

    def action_signal_refused(self) -> None:
        """Say why this monitor cannot send a signal (it is read-only)."""
        why = "a read-only root" if self.state.root_read_only else "--read-only"
        self.notify(READ_ONLY_SIGNAL.format(why=why), severity="warning", timeout=8)

    def _confirm_signal(self, row: RunRow, name: str, data: Any) -> None:
        shown = json.dumps(data, ensure_ascii=False)
        question = f"Send signal {name!r} to run {row.id} ({row.job})?\ndata: {shown}"

        def answered(yes: bool | None) -> None:
            if yes:
                self._send_signal(row.id, name, data)

        self.push_screen(ConfirmScreen(question, yes="Yes, send it"), answered)

    @work(thread=True, group="action", exit_on_error=False)
    def _send_signal(self, run_id: str, name: str, data: Any) -> None:
        try:
            text = self.source.signal(run_id, name, data)
        except Exception as error:  # noqa: BLE001 (ConflictError, NotFoundError: the user sees why)
            text = f"Signal not sent ({type(error).__name__}): {error}"
            self.call_from_thread(self.notify, text, severity="error", timeout=8)
        else:
            self.call_from_thread(self.notify, text)
        self.after_action("signal", run_id, [])


def _why_not(action: Action, row: RunRow) -> str:
    if row.status is None:
        return f"{row.id} is still syncing; try again in a moment."
    if action == "cancel" and row.is_terminal:
        return f"{row.id} already finished ({row.status.value}); nothing to cancel."
    if action in ("retrigger", "delete") and not row.is_terminal:
        return f"{row.id} is {row.status.value}: only finished runs can be {action}d (cancel it first)."
    return ""
