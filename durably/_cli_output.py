"""How the ``durably`` command line shows runs, steps, logs and progress."""

from __future__ import annotations

import os
import shutil
import sys
import unicodedata
from datetime import UTC, datetime
from typing import IO, Any

import orjson

from ._models import LogEntry, Progress, Run, RunStatus, StepRecord

WORDS = {
    RunStatus.PENDING: "pending",
    RunStatus.WAITING: "waiting",
    RunStatus.LEASED: "running",
    RunStatus.COMPLETED: "completed",
    RunStatus.FAILED: "failed",
    RunStatus.CANCELLED: "cancelled",
}
"""The word for each status, the monitor's too (``--json`` keeps the API's values)."""

INTERRUPTED = "interrupted"
"""A leased run whose owner is gone (``Run.interrupted``): waiting for a worker."""

STATUS_ALIASES = {"leased": RunStatus.LEASED, **{word: status for status, word in WORDS.items()}}
"""What ``--status`` accepts: the words above and the API's values."""

COLOURS = {
    "pending": "33",  # yellow
    "waiting": "34",  # blue: nothing to do until its time, signal or child
    "running": "36",  # cyan
    "completed": "32",  # green
    "failed": "31",  # red
    "cancelled": "35",  # magenta
    INTERRUPTED: "33;1",  # bold yellow: needs a worker
}


def status_word(run: Run[Any]) -> str:
    """How a run's status reads: ``running`` for a leased run, ``interrupted`` when its
    owner is gone."""
    return INTERRUPTED if run.interrupted else WORDS[run.status]


def json_text(value: Any, *, indent: bool = False) -> str:
    """A value as JSON text (what ``--json`` prints)."""
    option = orjson.OPT_INDENT_2 if indent else 0
    return orjson.dumps(value, option=option | orjson.OPT_NON_STR_KEYS, default=str).decode()


def run_dict(run: Run[Any]) -> dict[str, Any]:
    """A run as a JSON object."""
    fields = {name: getattr(run, name) for name in run.__dataclass_fields__}
    fields["status"] = run.status.value
    return fields


def step_dict(step: StepRecord) -> dict[str, Any]:
    """A step attempt as a JSON object."""
    fields = {name: getattr(step, name) for name in step.__dataclass_fields__}
    fields["duration"] = step.duration
    return fields


def when(value: datetime | None) -> str:
    """A time in the local zone, to the second (``-`` for none)."""
    return "-" if value is None else value.astimezone().strftime("%Y-%m-%d %H:%M:%S")


def span(seconds: float | None) -> str:
    """A duration: ``3.2s``, ``42s``, ``5m07s``, ``2h05m`` (``-`` for none)."""
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.1f}s" if seconds < 10 else f"{seconds:.0f}s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    return f"{minutes // 60}h{minutes % 60:02d}m"


def run_duration(run: Run[Any]) -> float | None:
    """Seconds a run has taken so far (None before it started)."""
    if run.started_at is None:
        return None
    if run.interrupted:  # the clock stopped when its owner did
        return max(0.0, (run.updated_at - run.started_at).total_seconds())
    end = run.completed_at or (None if run.is_terminal else datetime.now(UTC))
    return None if end is None else max(0.0, (end - run.started_at).total_seconds())


def char_width(char: str) -> int:
    """Terminal columns of one character: 2 for wide ones (CJK, most emoji), 0 for
    combining marks, joiners and variation selectors, else 1."""
    if unicodedata.combining(char) or unicodedata.category(char) in ("Mn", "Me", "Cf"):
        return 0
    return 2 if unicodedata.east_asian_width(char) in ("W", "F") else 1


def cell_width(text: str) -> int:
    """Terminal columns ``text`` takes (its display width, not its length)."""
    return sum(char_width(c) for c in text)


def fit(text: str, width: int) -> str:
    """``text`` cut to at most ``width`` columns and padded to exactly ``width``."""
    out, used = [], 0
    for char in text:
        w = char_width(char)
        if used + w > width:
            break
        out.append(char)
        used += w
    return "".join(out) + " " * (width - used)


def num(value: float) -> str:
    """A number without trailing zeros."""
    return f"{value:g}"


def progress_text(p: Progress | None) -> str:
    """Progress as ``3/10 message``."""
    if p is None:
        return "-"
    text = num(p.current) if p.total is None else f"{num(p.current)}/{num(p.total)}"
    return f"{text} {p.message}" if p.message else text


def colour(text: str, stream: IO[str]) -> str:
    """A status word (:func:`status_word`), coloured on a terminal (unless ``NO_COLOR``)."""
    if stream.isatty() and not os.environ.get("NO_COLOR"):
        return f"\033[{COLOURS.get(text, '0')}m{text}\033[0m"
    return text


def log_line(entry: LogEntry) -> str:
    """One log entry on one line."""
    when = entry.created_at.astimezone(UTC).isoformat(timespec="milliseconds")
    step = f" [{entry.step_name}]" if entry.step_name else ""
    data = "" if entry.data is None else " " + json_text(entry.data)
    return f"{when.replace('+00:00', 'Z')} {entry.level:<5}{step} {entry.message}{data}"


def one_line(text: str) -> str:
    """Text with its whitespace runs folded to single spaces."""
    return " ".join(str(text).split())


class ProgressBar:
    """A live bar on a terminal's stderr (plain lines elsewhere), with logs above it."""

    def __init__(self, stream: IO[str]) -> None:
        self.stream = stream
        self.tty = stream.isatty()
        self.shown = ""

    def progress(self, p: Progress) -> None:
        """Show progress (redraws the bar on a terminal)."""
        if not self.tty:
            print(f"progress: {progress_text(p)}", file=self.stream, flush=True)
            return
        columns = shutil.get_terminal_size().columns
        width = max(10, min(40, columns - 40))
        frac = min(1.0, max(0.0, p.current / p.total)) if p.total else 0.0
        bar = "#" * int(frac * width) + "-" * (width - int(frac * width)) if p.total else ""
        shown = f"[{bar}] {progress_text(p)}" if bar else f"progress {progress_text(p)}"
        self.shown = shown[: max(1, columns - 1)]  # one line, or \r cannot redraw it
        self.stream.write("\r\033[K" + self.shown)
        self.stream.flush()

    def log(self, entry: LogEntry) -> None:
        """Print a log line above the bar."""
        if self.tty and self.shown:
            self.stream.write("\r\033[K")
        print(log_line(entry), file=self.stream)
        if self.tty and self.shown:
            self.stream.write(self.shown)
        self.stream.flush()

    def close(self) -> None:
        """Clear the bar."""
        if self.tty and self.shown:
            self.stream.write("\r\033[K")
            self.stream.flush()


def waiting_text(run: Run[Any], now: datetime | None = None) -> str:
    """What a waiting run waits for, and until when: ``sleep nap until 14:00:00 (in 2h)``."""
    text = run.waiting_for or ""
    if run.wake_at is None:
        return text
    left = (run.wake_at - (now or datetime.now(UTC))).total_seconds()
    until = when(run.wake_at)
    return f"{text} until {until} (in {span(left)})" if left > 0 else f"{text} until {until} (due)"


def print_run(run: Run[Any]) -> None:
    """Print a run's fields (``durably show``)."""
    print(f"{run.id}  {run.job_name}  {colour(status_word(run), sys.stdout)}")
    rows: list[tuple[str, Any]] = [
        ("created", when(run.created_at)),
        ("started", when(run.started_at)),
        ("ended", when(run.completed_at)),
        ("duration", span(run_duration(run))),
        ("progress", progress_text(run.progress)),
        ("steps done", run.completed_step_count),
        ("generation", run.lease_generation),
    ]
    optional = [
        ("waits for", waiting_text(run) if run.waiting_for is not None else None),
        ("parent", run.parent_id),
        ("resumed from", run.resumed_from),
        ("labels", " ".join(f"{k}={v}" for k, v in sorted(run.labels.items())) or None),
        ("idem. key", run.idempotency_key),
        ("conc. key", run.concurrency_key),
        ("owner", run.lease_owner or None),
        (
            "interrupted",
            f"its owner stopped at {when(run.updated_at)}; a worker resumes it" if run.interrupted else None,
        ),
    ]
    rows += [(name, value) for name, value in optional if value is not None]
    rows.append(("input", json_text(run.input)))
    if run.status is RunStatus.COMPLETED:
        rows.append(("output", json_text(run.output)))
    if run.error is not None:
        rows.append(("error", run.error))
    if run.failed_step_name:
        rows.append(("failed step", run.failed_step_name))
    for name, value in rows:
        print(f"  {name:<11} {value}")
    if run.error_traceback:
        print("  traceback:")
        for line in run.error_traceback.rstrip().splitlines():
            print(f"        {line}")


def print_steps(steps: list[StepRecord], run: Run[Any] | None = None) -> None:
    """Print a run's step attempts with their errors and tracebacks (a failed step's
    traceback once: the run's, printed above, already holds it)."""
    print(f"\nSteps ({len(steps)}):")
    width = max((len(s.name) for s in steps), default=4)
    for s in steps:
        attempt = f"  attempt {s.attempt}" if s.attempt > 1 else ""
        print(f"  {s.index:>4}  {s.name:<{width}}  {s.status:<9}  {span(s.duration)}{attempt}")
        if s.error:
            print(f"        error: {s.error}")
        shown_above = run is not None and run.error_traceback and s.name == run.failed_step_name
        if s.traceback and not shown_above:
            for line in s.traceback.rstrip().splitlines():
                print(f"        {line}")
