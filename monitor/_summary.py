"""The summary at the top of a run's detail: status, times, lease, what the run waits for,
its parent and children, the run it resumes and the runs resumed from it, keys, progress
and error."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from rich.text import Text

from durably import RunStatus

from . import _format as fmt
from . import _waiting as waiting
from ._model import RunDetail, RunRow
from ._state import MonitorState


@dataclass(frozen=True, slots=True)
class Related:
    """The runs the summary names besides the run itself (from the monitor's index)."""

    children: list[RunRow] = field(default_factory=list)
    """Its child runs (`step.invoke`), oldest first."""
    resumes: list[RunRow] = field(default_factory=list)
    """The runs resumed from it (`Durably.resume`), oldest first."""


def summary(detail: RunDetail, related: Related, state: MonitorState, now: datetime) -> Text:
    """The summary at the top of a run's detail."""
    row, tz = detail.row, state.tz
    look = fmt.row_look(row.status, row.interrupted)
    text = Text()
    text.append(f"{look.glyph} {look.word}", style=f"bold {look.color}")
    text.append(f"   {row.job}", style="bold")
    text.append(f"   {row.id}", style="dim")
    if row.labels:
        text.append(f"   {row.label_text}", style="#8ab4f8")
    text.append("\n")
    parts = [
        ("created", row.created_at),
        ("started", row.started_at),
        ("finished", row.completed_at),
    ]
    for name, when in parts:
        if when is not None:
            text.append(f"{name} ", style="dim")
            text.append(f"{fmt.absolute(when, tz)} ({fmt.relative(when, now)})   ")
    text.append("took ", style="dim")
    text.append(fmt.duration(row.duration(now)))
    text.append(f"   steps {row.completed_steps}", style="dim")
    if detail.lease_generation:
        text.append(f"   lease #{detail.lease_generation}", style="dim")
    if detail.lease_owner and not row.is_terminal:
        text.append(f" by {detail.lease_owner}", style="dim")
    if row.waiting_for and row.status is RunStatus.WAITING:
        text.append("\n")
        text.append(_wait_line(row, state, now), style=f"bold {look.color}")
        wait = waiting.parse(row.waiting_for)
        if wait is not None and wait.kind == "signal" and state.actions_allowed:
            text.append("   n sends it", style="dim")
    _append_family(text, row, related.children, state)
    _append_resumes(text, row, related.resumes, state)
    if row.interrupted:
        text.append("\n")
        stopped = fmt.absolute(row.updated_at, tz)
        text.append(
            f"interrupted: its worker stopped at {stopped}; a worker of {row.job!r} resumes it",
            style=f"bold {fmt.INTERRUPTED_LOOK.color}",
        )
    _append_keys(text, detail)
    _append_progress(text, row, look.color)
    if row.error:
        text.append("\n")
        text.append(fmt.clip(row.error, 300), style="bold #ef5350")
    return text


def _wait_line(row: RunRow, state: MonitorState, now: datetime) -> str:
    """What the run waits for, in full (the child named by its job and status)."""
    wait = waiting.parse(row.waiting_for)
    about = ""
    if wait is not None and wait.kind == "child":
        child = state.index.rows.get(wait.name)
        if child is not None:
            about = f"{child.job}, {fmt.row_look(child.status, child.interrupted).word}"
    return waiting.detail_text(row.waiting_for, row.wake_at, now, state.tz, about)


def _append_family(text: Text, row: RunRow, child_runs: list[RunRow], state: MonitorState) -> None:
    """The parent (`p` opens it) and the children (`C` lists them) of the run."""
    if row.parent_id:
        parent = state.index.rows.get(row.parent_id)
        text.append("\nchild of ", style="dim")
        text.append(row.parent_id)
        if parent is not None:
            step = f", step {row.parent_step}" if row.parent_step else ""
            text.append(f" ({parent.job}{step})", style="dim")
        text.append("   p opens it", style="dim")
    if child_runs:
        counts: dict[str, int] = {}
        for child in child_runs:
            word = fmt.row_look(child.status, child.interrupted).word
            counts[word] = counts.get(word, 0) + 1
        summary = ", ".join(f"{n} {word}" for word, n in counts.items())
        noun = "child run" if len(child_runs) == 1 else "child runs"
        text.append(f"\n{len(child_runs)} {noun}", style="bold")
        text.append(f" ({summary})   C lists them", style="dim")


def _append_resumes(text: Text, row: RunRow, resumes: list[RunRow], state: MonitorState) -> None:
    """The run this one resumes (`o` opens it) and the runs resumed from it (`O` lists them)."""
    if row.resumed_from:
        original = state.index.rows.get(row.resumed_from)
        text.append("\nresumed from ", style="dim")
        text.append(row.resumed_from)
        if original is not None:
            text.append(f" ({fmt.row_look(original.status, original.interrupted).word})", style="dim")
            text.append("   o opens it", style="dim")
        elif not state.loading:
            text.append(" (no longer in the root)", style="dim")
    if resumes:
        counts: dict[str, int] = {}
        for resumed in resumes:
            word = fmt.row_look(resumed.status, resumed.interrupted).word
            counts[word] = counts.get(word, 0) + 1
        about = ", ".join(f"{n} {word}" for word, n in counts.items())
        noun = "run" if len(resumes) == 1 else "runs"
        text.append(f"\nresumed as {len(resumes)} {noun}", style="bold")
        text.append(f" ({about}), newest {resumes[-1].id}   O lists them", style="dim")


def _append_keys(text: Text, detail: RunDetail) -> None:
    keys = [("idempotency", detail.idempotency_key), ("concurrency", detail.concurrency_key)]
    if any(v for _, v in keys):
        text.append("\n")
        for name, value in keys:
            if value:
                text.append(f"{name} key ", style="dim")
                text.append(f"{value}   ")


def _append_progress(text: Text, row: RunRow, color: str) -> None:
    if row.progress_current is None and not row.progress_message:
        return
    text.append("\n")
    if row.progress_total:
        text.append(fmt.bar(row.progress_current, row.progress_total, 30), style=color)
        text.append(" ")
    text.append(fmt.progress_text(row.progress_current, row.progress_total))
    if row.progress_message:
        text.append(f"  {row.progress_message}", style="dim")
