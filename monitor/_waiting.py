"""How a waiting run reads: `Run.waiting_for` and `Run.wake_at` as a line for people.

durably says what a run waits for in one line (SPEC §9): `start`, `sleep <step>`,
`retry <step> (attempt 2 of 5)`, `signal <name>`, `child <run id>`. The list shows it short
and ticking (`retry 2 of 5 in 30s`), the detail in full (`retries step quote: attempt 2 of
5 at 11-28 18:30:30 (in 30s)`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, tzinfo

from . import _format as fmt

_RETRY = re.compile(r"^retry (?P<step>.+) \(attempt (?P<n>\d+) of (?P<m>\d+)\)$")


@dataclass(frozen=True, slots=True)
class Wait:
    """What a run waits for, read from its `waiting_for` line.

    Attributes:
        kind: `start`, `sleep`, `retry`, `signal`, `child`, or `other` (a line this
            monitor does not know: shown as it is).
        name: the step (sleep, retry), the signal, or the child run's id.
        attempt: for a retry, the attempt that runs after the wait.
        attempts: for a retry, how many attempts the step has.
        text: the line as durably wrote it.
    """

    kind: str
    name: str = ""
    attempt: int = 0
    attempts: int = 0
    text: str = ""


def parse(waiting_for: str | None) -> Wait | None:
    """The wait behind a `waiting_for` line (None when the run waits for nothing)."""
    if not waiting_for:
        return None
    if waiting_for == "start":
        return Wait("start", text=waiting_for)
    retry = _RETRY.match(waiting_for)
    if retry:
        n, m = int(retry["n"]), int(retry["m"])
        return Wait("retry", retry["step"], n, m, text=waiting_for)
    kind, _, name = waiting_for.partition(" ")
    if kind in ("sleep", "signal", "child") and name:
        return Wait(kind, name, text=waiting_for)
    return Wait("other", text=waiting_for)


def countdown(seconds: float) -> str:
    """`30s`, `4m05s`, `2h03m`, `3d04h` (a zero second part is left out: `2h`, `4m`)."""
    whole = max(0, int(seconds + 0.999))  # a countdown rounds up: `1s` until it is due
    for big, small, size, unit in ((86400, 3600, "d", "h"), (3600, 60, "h", "m"), (60, 1, "m", "s")):
        if whole >= big:
            rest = whole % big // small
            return f"{whole // big}{size}" + (f"{rest:02d}{unit}" if rest else "")
    return f"{whole}s"


def short_id(run_id: str, keep: int = 8) -> str:
    """The end of a run id (its random part): `…8FG10ABC`."""
    return run_id if len(run_id) <= keep + 1 else "…" + run_id[-keep:]


def _clock(when: datetime, now: datetime, tz: tzinfo | None) -> str:
    """`14:00` today, `11-29 14:00` another day (local time, or `tz`)."""
    local, today = when.astimezone(tz), now.astimezone(tz)
    return local.strftime("%H:%M" if local.date() == today.date() else "%m-%d %H:%M")


def _left(when: datetime, now: datetime) -> float:
    return (when - now).total_seconds()


def list_text(
    waiting_for: str | None, wake_at: datetime | None, now: datetime, tz: tzinfo | None, width: int = 0
) -> str:
    """The run list's line: `starts 14:00 (in 2h)`, `sleeps until 14:00 (in 2h)`,
    `retry 2 of 5 in 30s`, `waits for signal approval`, `waits for child …8FG10ABC`.

    Given a `width` the line does not fit in, a shorter form that does: without the time
    of day (`waits for signal approval (in 6d23h)`), then compact (`sleeps 1h59m`,
    `retry 2/5 30s`, `signal approval`, `child …8FG10ABC`).
    """
    forms = _list_forms(parse(waiting_for), wake_at, now, tz)
    if not width:
        return forms[0]
    return next((f for f in forms if len(f) <= width), forms[-1])


def _list_forms(wait: Wait | None, wake_at: datetime | None, now: datetime, tz: tzinfo | None) -> list[str]:
    """The list's line for `wait`, longest form first."""
    if wait is None:
        return [""]
    at = "" if wake_at is None else _clock(wake_at, now, tz)
    due = wake_at is not None and _left(wake_at, now) <= 0
    left = "" if wake_at is None else ("due" if due else countdown(_left(wake_at, now)))
    within = "" if not left else ("due" if due else f"in {left}")
    if wait.kind == "retry":
        text = f"retry {wait.attempt} of {wait.attempts}"
        short = f"retry {wait.attempt}/{wait.attempts}"
        return [f"{text} {within}", f"{short} {left}"] if left else [text, short]
    if wait.kind == "start":
        return [f"starts {at} ({within})", f"starts {within}"] if at else ["waits to start"]
    if wait.kind == "sleep":
        if not at:
            return [f"sleeps ({wait.name})", "sleeps"]
        return [f"sleeps until {at} ({within})", f"sleeps ({within})", f"sleeps {left}"]
    if wait.kind == "signal":
        text = f"waits for signal {wait.name}"
        longer = [f"{text} until {at} ({within})", f"{text} ({within})"] if at else []
        return [*longer, text, f"signal {wait.name}"]
    if wait.kind == "child":
        return [f"waits for child {short_id(wait.name)}", f"child {short_id(wait.name)}"]
    return [f"waits for {wait.text}" + (f" until {at} ({within})" if at else ""), wait.text]


def detail_text(
    waiting_for: str | None,
    wake_at: datetime | None,
    now: datetime,
    tz: tzinfo | None,
    child: str = "",
) -> str:
    """The detail's line, with the step's name and the full time; `child` describes the
    child run (`issue-invoice, running`) when the monitor knows it."""
    wait = parse(waiting_for)
    if wait is None:
        return ""
    when = ""
    if wake_at is not None:
        left = _left(wake_at, now)
        when = f"{fmt.absolute(wake_at, tz)} ({'due' if left <= 0 else 'in ' + countdown(left)})"
    if wait.kind == "start":
        return f"starts at {when}: a delayed trigger" if when else "waits to start"
    if wait.kind == "sleep":
        return f"sleeps in step {wait.name} until {when}" if when else f"sleeps in step {wait.name}"
    if wait.kind == "retry":
        text = f"retries step {wait.name}: attempt {wait.attempt} of {wait.attempts}"
        return f"{text} at {when}" if when else text
    if wait.kind == "signal":
        text = f"waits for signal {wait.name}"
        return f"{text} until {when}" if when else f"{text} (no timeout)"
    if wait.kind == "child":
        return f"waits for child run {wait.name}" + (f" ({child})" if child else "")
    return f"waits for {wait.text}" + (f" until {when}" if when else "")
