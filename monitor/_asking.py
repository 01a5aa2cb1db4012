"""What each action asks before it writes, what it refuses without asking, and what it says
once done, for one run or for every marked run.

Pure functions over `RunRow`s: the app (`_actions.RunActions`) shows the texts and runs the
durably calls.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from durably import RunStatus

from . import _format as fmt
from ._model import RunRow

Action = Literal["cancel", "retrigger", "delete", "resume"]

SHOWN = 3
"""How many run ids a question or a report about many runs names before `… and n more`."""

_VERB = {"cancel": "Cancel", "retrigger": "Retrigger", "delete": "Delete", "resume": "Resume"}
_DONE = {"cancel": "Cancelled", "retrigger": "Retriggered", "delete": "Deleted", "resume": "Resumed"}
YES = {
    "cancel": "Yes, cancel it",
    "retrigger": "Yes, run again",
    "delete": "Yes, delete it",
    "resume": "Yes, resume it",
}


def why_not(action: Action, row: RunRow, *, from_step: str | None = None) -> str:
    """Why `action` cannot apply to `row` (asked of no one), or "" when it can be asked."""
    if row.status is None:
        return f"{row.id} is still syncing; try again in a moment."
    status = fmt.row_look(row.status, row.interrupted).word  # `running`, as the list says
    if action == "cancel" and row.is_terminal:
        return f"{row.id} already finished ({status}); nothing to cancel."
    if action in ("retrigger", "delete") and not row.is_terminal:
        return f"{row.id} is {status}: only finished runs can be {action}d (cancel it first)."
    if action == "resume" and not row.is_terminal:
        return f"{row.id} is {status}: only a failed or cancelled run can be resumed (cancel it first)."
    if action == "resume" and from_step is None and row.status is RunStatus.COMPLETED:
        return (
            f"{row.id} completed: a completed run resumes only from a step "
            "(open it, select a step in the timeline, press s)."
        )
    return ""


def question(action: Action, row: RunRow) -> str:
    """The question asked before `action` on one run."""
    if action == "cancel":
        return f"Cancel run {row.id} ({row.job})?"
    if action == "retrigger":
        return f"Start a new run of {row.job} with the input of {row.id}?"
    if action == "resume":
        n = row.completed_steps
        steps = "1 completed step" if n == 1 else f"{n} completed steps"
        return f"Resume run {row.id} ({row.job})?\nA new run replays its {steps} and runs the rest."
    return f"Delete run {row.id} ({row.job}) and all its files?\nThis cannot be undone."


def resume_from_question(row: RunRow, step: str, replayed: int) -> str:
    """The question asked before resuming `row` from `step` (`replayed` steps come before it)."""
    return (
        f"Resume run {row.id} ({row.job}) from step {step!r}?\n"
        f"A new run replays the {_steps(replayed)} before it; {step!r} and every step after it "
        "run again."
    )


@dataclass(frozen=True, slots=True)
class Plan:
    """An action on several runs: those it applies to, and those it cannot (with why)."""

    action: Action
    runs: tuple[RunRow, ...]
    skipped: tuple[tuple[str, str], ...] = ()
    """(run id, why) for each marked run the action cannot apply to."""


def plan(action: Action, rows: Sequence[RunRow]) -> Plan:
    """Split the marked `rows` into those `action` applies to and those it cannot."""
    runs: list[RunRow] = []
    skipped: list[tuple[str, str]] = []
    for row in rows:
        problem = why_not(action, row)
        if problem:
            skipped.append((row.id, _reason(problem, row.id)))
        else:
            runs.append(row)
    return Plan(action, tuple(runs), tuple(skipped))


def plan_question(p: Plan) -> str:
    """The one question asked before acting on every run of `p`: how many, which action,
    the first few ids, and how many marked runs are left out."""
    n = len(p.runs)
    noun = "run" if n == 1 else "runs"
    head = {
        "cancel": f"Cancel {n} marked {noun}?",
        "retrigger": f"Retrigger {n} marked {noun} (a new run each, with the same input)?",
        "delete": f"Delete {n} marked {noun} and all their files?",
        "resume": f"Resume {n} marked {noun} (a new run each, replaying its completed steps)?",
    }[p.action]
    lines = [head, _listing([f"{r.id} ({r.job})" for r in p.runs])]
    if p.action == "delete":
        lines.append("This cannot be undone.")
    if p.skipped:
        lines.append(f"{len(p.skipped)} other marked {_runs(len(p.skipped))} cannot be: {p.skipped[0][1]}.")
    return "\n".join(lines)


def plan_nothing(p: Plan) -> str:
    """What is said when no marked run can be acted on (nothing is asked)."""
    n = len(p.skipped)
    first = p.skipped[0][1] if p.skipped else ""
    return f"None of the {n} marked {_runs(n)} can be {_DONE[p.action].lower()}: {first}."


def report(action: Action, done: Sequence[tuple[str, list[str]]], failed: Sequence[tuple[str, str]]) -> str:
    """One notification for an action on many runs: how many were acted on, then how many
    could not be and why (the first few)."""
    text = f"{_DONE[action]} {len(done)} {_runs(len(done))}"
    new = [i for _, ids in done for i in ids]
    if new:
        text += f" (new: {', '.join(new[:SHOWN])}{_more(len(new))})"
    text += "."
    if failed:
        reasons = "; ".join(f"{run_id}: {why}" for run_id, why in failed[:SHOWN])
        text += f"\n{len(failed)} {_runs(len(failed))} could not be: {reasons}{_more(len(failed))}"
    return text


def error_text(action: Action, error: Exception) -> str:
    """`Resume failed (ConflictError): …`: the error's type names what was wrong."""
    return f"{_VERB[action]} failed ({type(error).__name__}): {error}"


def _reason(problem: str, run_id: str) -> str:
    """A refusal without the run id it starts with (the report names the run already)."""
    return problem.removeprefix(f"{run_id} ").rstrip(".")


def _listing(items: list[str]) -> str:
    return ", ".join(items[:SHOWN]) + _more(len(items))


def _more(n: int) -> str:
    return f" … and {n - SHOWN} more" if n > SHOWN else ""


def _runs(n: int) -> str:
    return "run" if n == 1 else "runs"


def _steps(n: int) -> str:
    return "1 step" if n == 1 else f"{n} steps"
