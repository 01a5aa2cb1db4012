"""Acting on many runs from the command line: ``cancel``, ``delete``, ``retrigger`` and
``resume`` take several run ids, or a filter (``--status``, ``--job``, ``--label``,
``--since``) instead of ids.

Each run acted on is one line on stdout, starting with its id (for ``retrigger`` and
``resume`` the new run's id follows); each run that could not be acted on is one line on
stderr, and the others go on; the exit status is 1 if there was any such run, else 0.
With a single run id and no filter, the command keeps its one-run form: one line (the
new run's id for ``retrigger`` and ``resume``), and an error exits 1 as any other does.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ._cli_args import moment
from ._cli_output import one_line
from ._durably import Durably
from ._errors import DurablyError
from ._models import RunStatus


class SelectionError(ValueError):
    """Run ids and a filter given together, or neither (a usage error)."""


@dataclass(frozen=True)
class Action:
    """What a bulk command does to one run: ``act`` returns the new run's id, or None;
    ``done`` is the word after the run's id when there is no new run (``cancelled``);
    ``single`` the line of the one-run form."""

    act: Callable[[str], str | None]
    done: str
    single: Callable[[str, str | None], str]


def add_selection(p: argparse.ArgumentParser, status_type: Callable[[str], RunStatus]) -> None:
    """The run ids, or the filter, of a bulk command."""
    p.add_argument("runs", nargs="*", metavar="RUN", help="run ids (or give a filter instead)")
    p.add_argument(
        "--status",
        type=status_type,
        action="append",
        metavar="STATUS",
        help="runs with this status (repeatable)",
    )
    p.add_argument("--job", action="append", metavar="JOB", help="runs of this job (repeatable)")
    p.add_argument("--label", action="append", metavar="KEY=VALUE", help="runs with this label (repeatable)")
    p.add_argument(
        "--since", type=moment, metavar="WHEN", help="runs created since then: 2h, 30m, 3d or an ISO time"
    )


def selected(durably: Durably, args: argparse.Namespace, labels: dict[str, str]) -> tuple[list[str], bool]:
    """The run ids to act on, and whether they came from the command line one by one.

    The filter is read once, before acting: the runs an action creates are not acted on.

    Raises:
        SelectionError: run ids and a filter together, or neither.
    """
    filtered = bool(args.status or args.job or labels or args.since is not None)
    if args.runs and filtered:
        raise SelectionError("give run ids or a filter (--status, --job, --label, --since), not both")
    if not args.runs and not filtered:
        raise SelectionError("give one or more run ids, or a filter (--status, --job, --label, --since)")
    if args.runs:
        return list(dict.fromkeys(args.runs)), True
    since: datetime | None = args.since
    runs = durably.get_runs(status=args.status, job_name=args.job, labels=labels or None, created_after=since)
    return [run.id for run in runs], False


def act_on_each(prog: str, run_ids: Sequence[str], action: Action, *, single: bool) -> int:
    """Apply ``action`` to each run; print one line per run; return the exit status.

    Raises:
        DurablyError: the one-run form failed (one run id given, no filter).
    """
    if single and len(run_ids) == 1:
        print(action.single(run_ids[0], action.act(run_ids[0])), flush=True)
        return 0
    refused = 0
    for run_id in run_ids:
        try:
            new: Any = action.act(run_id)
        except DurablyError as exc:
            print(f"{prog}: {run_id}: {one_line(str(exc))}", file=sys.stderr, flush=True)
            refused += 1
            continue
        print(f"{run_id} {action.done if new is None else new}", flush=True)
    if not run_ids:
        print(f"{prog}: no run matches the filter", file=sys.stderr)
    return 1 if refused else 0
