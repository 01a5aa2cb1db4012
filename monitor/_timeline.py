"""The step timeline of the detail screen: every attempt and every wait, one row each.

A retried step has one row per attempt (`StepRecord.attempt`), each with its own status and
error; while the run waits between attempts, a last row says when the next one runs. A step
that waits (a sleep, a signal, a child run) says so while it waits; a step that invoked a
child run is marked `↗`, and `enter` on it opens the child.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from durably import RunStatus

from . import _format as fmt
from . import _waiting as waiting
from ._model import RunDetail, RunRow, StepRow

TIMELINE_WIDTH = 12
"""Cells of the bar placing each step within the run."""

WAIT_LOOK = fmt.STATUS_LOOK[RunStatus.WAITING]


@dataclass(frozen=True, slots=True)
class TimelineRow:
    """One row of the step table (a step attempt, or the next attempt of a retry)."""

    glyph: str
    color: str
    index: str
    name: str
    attempt: str
    took: str
    bar: str
    status: str
    step: StepRow | None = None
    """None for the row of an attempt that has not started yet."""
    child: RunRow | None = None
    """The child run this step invoked (`step.invoke`), when the monitor knows it."""
    waits: bool = False
    """The run waits in this step right now."""


def span(detail: RunDetail, now: datetime) -> tuple[datetime, float] | None:
    """Start of the run's first step and the seconds it spans (to its end, or `now`)."""
    starts = [s.started_at for s in detail.steps if s.started_at is not None]
    if not starts:
        return None
    start = min(starts)
    ends = [s.completed_at for s in detail.steps if s.completed_at is not None]
    end = detail.row.completed_at or (now if not detail.row.is_terminal else max(ends, default=start))
    return start, max((end - start).total_seconds(), 1e-6)


def bar(
    step: StepRow, span: tuple[datetime, float] | None, width: int, *, until: datetime | None = None
) -> str:
    """Where the step sits in the run: `   ███      `; a step that waits until `until`
    (now) is drawn with `░` up to then."""
    if span is None or step.started_at is None:
        return ""
    start, total = span
    took = step.duration
    if until is not None:
        took = max(0.0, (until - step.started_at).total_seconds())
    first = (step.started_at - start).total_seconds() / total * width
    last = first + (took or 0.0) / total * width
    lo, hi = max(0, min(width - 1, round(first))), max(0, min(width, round(last)))
    fill = "░" if until is not None else "█"
    return " " * lo + fill * max(1, hi - lo) + " " * max(0, width - max(hi, lo + 1))


def _waiting_step(detail: RunDetail, wait: waiting.Wait | None, children: dict[str, RunRow]) -> str | None:
    """The name of the step the run waits in now (a sleep, a signal, a child run)."""
    if wait is None or detail.row.status is not RunStatus.WAITING:
        return None
    if wait.kind in ("sleep", "signal"):
        return wait.name
    if wait.kind == "child":
        child = next((c for c in children.values() if c.id == wait.name), None)
        return None if child is None else child.parent_step
    return None


def rows(
    detail: RunDetail, children: list[RunRow], now: datetime, *, compact: bool = False
) -> list[TimelineRow]:
    """The timeline of a run: its step attempts, then the attempt a retry waits for
    (`retry in 30s`; `compact`: `in 30s`)."""
    row = detail.row
    wait = waiting.parse(row.waiting_for) if row.status is RunStatus.WAITING else None
    by_step = {c.parent_step: c for c in children if c.parent_step}
    waits_in = _waiting_step(detail, wait, by_step)
    retried = {s.name for s in detail.steps if s.attempt > 1}
    if wait is not None and wait.kind == "retry":
        retried.add(wait.name)
    whole = span(detail, now)
    out: list[TimelineRow] = []
    last = len(detail.steps) - 1
    for position, step in enumerate(detail.steps):
        look = fmt.step_look(step.status)
        child = by_step.get(step.name)
        now_waiting = step.status == "running" and step.name == waits_in and position == last
        status = step.status
        if now_waiting:
            look = WAIT_LOOK
            status = _waiting_status(wait)
        out.append(
            TimelineRow(
                glyph=look.glyph,
                color=look.color,
                index=str(step.index),
                name=step.name if child is None else f"{step.name} ↗",
                attempt=str(step.attempt) if step.name in retried else "",
                took=fmt.duration(step.duration) if not now_waiting else _since(step, now),
                bar=bar(step, whole, TIMELINE_WIDTH, until=now if now_waiting else None),
                status=status,
                step=step,
                child=child,
                waits=now_waiting,
            )
        )
    if wait is not None and wait.kind == "retry":
        left = (
            "due"
            if row.wake_at is None or row.wake_at <= now
            else "in " + waiting.countdown((row.wake_at - now).total_seconds())
        )
        out.append(
            TimelineRow(
                glyph=WAIT_LOOK.glyph,
                color=WAIT_LOOK.color,
                index="",
                name=wait.name,
                attempt=f"{wait.attempt}/{wait.attempts}",
                took="",
                bar="",
                status=left if compact else f"retry {left}",
                waits=True,
            )
        )
    return out


def _since(step: StepRow, now: datetime) -> str:
    if step.started_at is None:
        return "-"
    return fmt.duration(max(0.0, (now - step.started_at).total_seconds()))


def _waiting_status(wait: waiting.Wait | None) -> str:
    """`sleeping`, `awaits signal`, `awaits child` (the summary above says until when)."""
    kind = "" if wait is None else wait.kind
    if kind == "sleep":
        return "sleeping"
    if kind == "signal":
        return "awaits signal"
    if kind == "child":
        return "awaits child"
    return "waiting"
