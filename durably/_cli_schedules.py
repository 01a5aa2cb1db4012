"""Schedules on the command line: ``durably schedules`` (a table, or ``--json``) and
``durably schedule pause|resume|delete NAME``. Neither needs the app: schedules are
records of the root."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from ._cli_output import cell_width, colour, fit, json_text, span, status_word, when
from ._durably import Durably
from ._models import Schedule

Opener = Callable[[argparse.Namespace], Durably]
Adder = Callable[..., argparse.ArgumentParser]


def _next(s: Schedule, now: datetime) -> str:
    if s.next_run_at is None:
        return "paused"
    left = (s.next_run_at - now).total_seconds()
    return f"{when(s.next_run_at)} (in {span(left)})" if left >= 0 else f"{when(s.next_run_at)} (due)"


def schedule_dict(s: Schedule, durably: Durably) -> dict[str, Any]:
    """A schedule as a JSON object, with its last run's status."""
    fields = {name: getattr(s, name) for name in s.__dataclass_fields__}
    run = durably.get_run(s.last_run_id) if s.last_run_id else None
    fields["last_run_status"] = status_word(run) if run is not None else None
    return fields


def print_schedules(durably: Durably, *, as_json: bool) -> int:
    """The table of ``durably schedules``."""
    schedules = durably.get_schedules()
    if as_json:
        print(json_text([schedule_dict(s, durably) for s in schedules], indent=True))
        return 0
    if not schedules:
        print("no schedules", file=sys.stderr)
        return 0
    now = datetime.now(UTC)
    rows = []
    for s in schedules:
        run = durably.get_run(s.last_run_id) if s.last_run_id else None
        last = "-" if s.last_run_at is None else f"{when(s.last_run_at)} {s.last_run_id}"
        rows.append(
            (
                s.name,
                s.job_name,
                s.cron,
                s.timezone,
                _next(s, now),
                last,
                status_word(run) if run else "-",
                "yes" if s.paused else "no",
            )
        )
    heads = ("NAME", "JOB", "CRON", "TIMEZONE", "NEXT RUN", "LAST RUN", "STATUS", "PAUSED")
    widths = [max(len(h), *(cell_width(row[i]) for row in rows)) for i, h in enumerate(heads)]
    widths[0] = min(widths[0], 40)
    print("  ".join(h.ljust(w) for h, w in zip(heads, widths, strict=True)).rstrip())
    for row in rows:
        cells = [fit(c, w) for c, w in zip(row, widths, strict=True)]
        if row[6] != "-":
            cells[6] = colour(row[6], sys.stdout) + " " * (widths[6] - len(row[6]))
        print("  ".join(cells).rstrip())
    return 0


def add_commands(add: Adder, open_root: Opener) -> None:
    """Add ``schedules`` and ``schedule`` to the ``durably`` parser."""

    def cmd_schedules(args: argparse.Namespace) -> int:
        return print_schedules(open_root(args), as_json=args.json)

    def cmd_schedule(args: argparse.Namespace) -> int:
        durably = open_root(args)
        act = {
            "pause": durably.pause_schedule,
            "resume": durably.resume_schedule,
            "delete": durably.unschedule,
        }
        act[args.action](args.name)
        print(f"{ {'pause': 'paused', 'resume': 'resumed', 'delete': 'deleted'}[args.action] } {args.name}")
        return 0

    p = add("schedules", cmd_schedules, "list the schedules of the root: next run, last run, paused")
    p.add_argument("--json", action="store_true", help="print a JSON list of schedules")
    p = add(
        "schedule",
        cmd_schedule,
        "pause, resume or delete a schedule",
        "Pause a schedule (its ticks are not fired until it is resumed), resume it (counting "
        "ticks from now), or delete it (the runs it fired stay).",
    )
    p.add_argument("action", choices=("pause", "resume", "delete"), help="what to do")
    p.add_argument("name", metavar="NAME", help="the schedule's name")
