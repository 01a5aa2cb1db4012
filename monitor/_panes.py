"""What the detail's tabs show: values as JSON, and the Error tab (the run's error, every
attempt of the selected step, its traceback)."""

from __future__ import annotations

import dataclasses
from typing import Any

from rich.console import Group, RenderableType
from rich.json import JSON
from rich.pretty import Pretty
from rich.syntax import Syntax
from rich.text import Text

from . import _format as fmt
from . import _waiting as waiting
from ._model import RunDetail, StepRow


def value_view(title: str, value: Any) -> RenderableType:
    """A titled value, as JSON (a dash for None)."""
    body: RenderableType
    if value is None:
        body = Text("—", style="dim")
    else:
        try:
            body = JSON.from_data(value, indent=2, default=str, sort_keys=False)
        except (TypeError, ValueError):
            body = Pretty(value)
    return Group(Text(title, style="bold underline"), body, Text(""))


def error_view(detail: RunDetail, step: StepRow | None) -> RenderableType:
    """The Error tab: the run's error and traceback, then the selected step's attempts and error."""
    if step is None or not step.error:
        step = next((s for s in detail.steps if s.error), step)
    parts: list[RenderableType] = []
    if detail.row.error:
        parts += [Text("Run error", style="bold underline"), Text(detail.row.error, "#ef5350")]
        if detail.error_traceback:
            parts.append(_traceback(detail.error_traceback))
        parts.append(Text(""))
        if detail.error_traceback and step is not None and step.name == detail.failed_step:
            step = dataclasses.replace(step, traceback=None)  # the run's holds it already
    if step is not None:
        parts += _attempts(detail, step)
    if step is not None and (step.error or step.traceback):
        attempt = f" attempt {step.attempt}" if _retried(detail, step) else ""
        parts.append(Text(f"Step {step.index} {step.name!r}{attempt} ({step.status})", "bold underline"))
        if step.error:
            parts.append(Text(step.error, style="#ef5350"))
        if step.traceback:
            parts.append(_traceback(step.traceback))
    if not parts:
        parts.append(Text("No error.", style="dim"))
    return Group(*parts)


def _retried(detail: RunDetail, step: StepRow) -> bool:
    """Whether `step` was retried, or the run waits to retry it."""
    wait = waiting.parse(detail.row.waiting_for)
    if wait is not None and wait.kind == "retry" and wait.name == step.name:
        return True
    return any(s.name == step.name and s.attempt > 1 for s in detail.steps)


def _attempts(detail: RunDetail, step: StepRow) -> list[RenderableType]:
    """Every attempt of a retried step, one line each with its error (empty otherwise)."""
    if not _retried(detail, step):
        return []
    tries = [s for s in detail.steps if s.name == step.name]
    lines = Text()
    for s in tries:
        look = fmt.step_look(s.status)
        lines.append(f"{look.glyph} attempt {s.attempt}  ", style=look.color)
        lines.append(f"{s.status:9} {fmt.duration(s.duration):>6}  ")
        lines.append(fmt.clip(s.error or "", 200), style="#ef5350")
        lines.append("\n")
    lines.rstrip()
    return [Text(f"Attempts of step {step.name!r}", style="bold underline"), lines, Text("")]


def _traceback(text: str) -> Text:
    """A traceback, highlighted as Text (not a Syntax renderable) so long lines wrap."""
    return Syntax("", "pytb", theme="ansi_dark", word_wrap=True).highlight(text.rstrip())
