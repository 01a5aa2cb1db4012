"""The actions that write: cancel, retrigger, delete, resume and send a signal, each asked
first, on one run or on every marked run.

`RunActions` is a base class of `MonitorApp`, over `_navigation.Navigation` (which says the
run an action applies to, `target_run`, and the marked runs, `marked_runs`); the app says
what happens once an action is done (`after_action`: reread the runs it touched). The
durably calls run in thread workers; what is asked and said comes from `_asking`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from textual import work

from . import _asking as asking
from . import _waiting as waiting
from ._asking import Action
from ._dialogs import ConfirmScreen, SignalScreen
from ._model import RunRow
from ._navigation import Navigation

NEEDS_APP = (
    "{what} re-validates the run's input against its job, so the monitor needs your "
    "Durably app: start it with  durably monitor --app module:attr"
)
RETRIGGER_NEEDS_APP = NEEDS_APP.format(what="Retrigger")
RESUME_NEEDS_APP = NEEDS_APP.format(what="Resume")

READ_ONLY_SIGNAL = (
    "This monitor does not write ({why}): signals cannot be sent from here. "
    "Use  durably signal RUN NAME --data JSON  where the root is writable."
)


class RunActions(Navigation):
    """Ask, then act on the target run or the marked runs; a base class of the app (see the
    module docstring)."""

    def after_action(self, action: str, run_ids: list[str], new_ids: list[str], *, follow: bool) -> None:
        """Called in the action's thread once it is done: reread the runs it touched; with
        `follow`, put the cursor on the new run."""
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

    def _needs_app(self, action: Action) -> bool:
        """Say so (and True) when `action` needs the jobs registered and the monitor has no APP."""
        if action in ("retrigger", "resume") and not self.source.can_retrigger:
            text = RETRIGGER_NEEDS_APP if action == "retrigger" else RESUME_NEEDS_APP
            self.notify(text, severity="warning", timeout=8)
            return True
        return False

    def _ask(self, text: str, yes: str, then: Callable[[], object]) -> None:
        """Ask `text` in the confirmation dialog; on yes, call `then`."""

        def answered(ok: bool | None) -> None:
            if ok:
                then()

        self.push_screen(ConfirmScreen(text, yes=yes), answered)

    # -- cancel, retrigger, delete, resume ---------------------------------------------------

    def action_act(self, action: Action) -> None:
        """Ask, then cancel, retrigger, delete or resume the target run (or every marked run)."""
        if not self.actions_allowed:
            return
        marked = self.marked_runs()
        if marked:
            self._ask_many(action, marked)
            return
        row = self.target_run()
        if row is None or self._needs_app(action):
            return
        problem = asking.why_not(action, row)
        if problem:
            self.notify(problem, severity="warning")
            return
        self._ask(asking.question(action, row), asking.YES[action], lambda: self._run_action(action, row.id))

    def ask_resume_from(self, row: RunRow, step: str, replayed: int) -> None:
        """Ask, then resume `row` from `step` (`replayed` completed steps come before it)."""
        if not self.actions_allowed or self._needs_app("resume"):
            return
        problem = asking.why_not("resume", row, from_step=step)
        if problem:
            self.notify(problem, severity="warning")
            return
        text = asking.resume_from_question(row, step, replayed)
        self._ask(text, asking.YES["resume"], lambda: self._run_action("resume", row.id, step))

    def _perform(self, action: Action, run_id: str, from_step: str | None = None) -> tuple[str, list[str]]:
        """Call durably (in a thread): the message to show and the new run ids."""
        if action == "resume":
            return self.source.resume(run_id, from_step)
        perform = {
            "cancel": self.source.cancel,
            "retrigger": self.source.retrigger,
            "delete": self.source.delete,
        }
        return perform[action](run_id)

    @work(thread=True, group="action", exit_on_error=False)
    def _run_action(self, action: Action, run_id: str, from_step: str | None = None) -> None:
        new_ids: list[str] = []
        try:
            text, new_ids = self._perform(action, run_id, from_step)
        except Exception as error:  # noqa: BLE001 (ConflictError, ValidationError, ...: the user sees why)
            self.call_from_thread(self.notify, asking.error_text(action, error), severity="error", timeout=8)
        else:
            self.call_from_thread(self.notify, text)
        self.after_action(action, [run_id], new_ids, follow=True)

    def _ask_many(self, action: Action, rows: list[RunRow]) -> None:
        """One question for every marked run the action applies to; the others are named."""
        if self._needs_app(action):
            return
        plan = asking.plan(action, rows)
        if not plan.runs:
            self.notify(asking.plan_nothing(plan), severity="warning", timeout=8)
            return
        yes = f"Yes, {action} {len(plan.runs)}"
        self._ask(asking.plan_question(plan), yes, lambda: self._run_many(plan))

    @work(thread=True, group="action", exit_on_error=False)
    def _run_many(self, plan: asking.Plan) -> None:
        """Act on each run of `plan` in turn; a run that fails does not stop the others. One
        notification says how many were acted on and which could not be, and why."""
        done: list[tuple[str, list[str]]] = []
        failed = list(plan.skipped)
        for row in plan.runs:
            try:
                _text, new_ids = self._perform(plan.action, row.id)
            except Exception as error:  # noqa: BLE001 (reported with the others)
                failed.append((row.id, f"{type(error).__name__}: {error}"))
            else:
                done.append((row.id, new_ids))
        self.call_from_thread(self.clear_marks)
        text = asking.report(plan.action, done, failed)
        severity = "warning" if failed else "information"
        self.call_from_thread(self.notify, text, severity=severity, timeout=10 if failed else 5)
        new_ids = [i for _, ids in done for i in ids]
        self.after_action(plan.action, [r.id for r in plan.runs], new_ids, follow=False)

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
        self._ask(question, "Yes, send it", lambda: self._send_signal(row.id, name, data))

    @work(thread=True, group="action", exit_on_error=False)
    def _send_signal(self, run_id: str, name: str, data: Any) -> None:
        try:
            text = self.source.signal(run_id, name, data)
        except Exception as error:  # noqa: BLE001 (ConflictError, NotFoundError: the user sees why)
            text = f"Signal not sent ({type(error).__name__}): {error}"
            self.call_from_thread(self.notify, text, severity="error", timeout=8)
        else:
            self.call_from_thread(self.notify, text)
        self.after_action("signal", [run_id], [], follow=False)
