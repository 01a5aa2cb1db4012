"""The ``durably`` command line (also ``python -m durably``).

Every subcommand takes ``--root DIR`` (else ``$DURABLY_ROOT``, else ``.durably``).
Errors print one line on stderr and exit non-zero (1 for a refused operation or a run
that failed, 2 for a bad command line or ``APP``), and write nothing.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import Any, NoReturn

import orjson

from . import _cli_bulk as bulk
from . import _cli_schedules as schedules_cli
from . import _repair
from ._app_loader import AppError, load_app
from ._cli_args import duration, instant, moment
from ._cli_follow import follow_logs, print_workers, wait
from ._cli_output import (
    STATUS_ALIASES,
    cell_width,
    colour,
    fit,
    json_text,
    log_line,
    one_line,
    print_run,
    print_steps,
    progress_text,
    run_dict,
    run_duration,
    span,
    status_word,
    step_dict,
    when,
)
from ._durably import Durably
from ._errors import DurablyError, NotFoundError
from ._job import COALESCE_VALUES
from ._models import RunStatus
from ._supervisor import WorkerOptions, run_worker

_BULK = (
    "Several RUNs, or a filter (--status, --job, --label, --since) instead: one line per run "
    "acted on ('RUN %s'), one line on stderr per run refused; exit 1 if any was refused."
)
_DURATION = re.compile(r"^(\d+)([dhms])$")
_UNITS = {"d": "days", "h": "hours", "m": "minutes", "s": "seconds"}


class UsageError(Exception):
    """A bad command line value (exit code 2)."""


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (``durably trigger: error: ...``)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


# -- helpers ----------------------------------------------------------------------------


def _root(args: argparse.Namespace) -> str:
    return str(args.root or os.environ.get("DURABLY_ROOT") or ".durably")


def _open_root(args: argparse.Namespace) -> Durably:
    """An instance over an existing root (reading and managing runs needs no jobs)."""
    root = _root(args)
    if os.path.lexists(root) and not os.path.isdir(root):
        raise UsageError(f"{os.path.abspath(root)} is not a directory (a durably root is one)")
    if not os.path.isdir(root):
        raise UsageError(
            f"no durably root at {os.path.abspath(root)} "
            "(nothing triggered yet? pass --root or set $DURABLY_ROOT)"
        )
    return Durably(root)


def _open_app(args: argparse.Namespace) -> Durably:
    try:
        return load_app(args.app, args.root)
    except AppError as exc:
        raise UsageError(str(exc)) from exc


def _labels(values: Sequence[str] | None) -> dict[str, str]:
    labels: dict[str, str] = {}
    for item in values or ():
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UsageError(f"--label must be KEY=VALUE, got {item!r}")
        if key in labels and labels[key] != value:
            raise UsageError(f"--label {key} given twice ({key}={labels[key]} and {key}={value})")
        labels[key] = value
    return labels


def _status(text: str) -> RunStatus:
    """A ``--status`` value: the words ``durably runs`` and the monitor show, or the API's."""
    try:
        return STATUS_ALIASES[text.strip().lower()]
    except KeyError:
        words = ", ".join(sorted(STATUS_ALIASES))
        raise argparse.ArgumentTypeError(f"invalid status {text!r} (choose from {words})") from None


def _parse_age(text: str) -> timedelta:
    m = _DURATION.match(text.strip())
    if not m:
        raise UsageError(f"--older-than must look like 30d, 12h, 45m or 90s, got {text!r}")
    return timedelta(**{_UNITS[m.group(2)]: int(m.group(1))})


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, got {text!r}")
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {text!r}")
    return value


def _job_timeouts(values: Sequence[str] | None) -> dict[str, float]:
    out: dict[str, float] = {}
    for item in values or ():
        job, sep, seconds = item.rpartition("=")
        if not sep or not job:
            raise UsageError(f"--job-timeout must be JOB=SECONDS, got {item!r}")
        try:
            out[job] = _positive_float(seconds)
        except argparse.ArgumentTypeError as exc:
            raise UsageError(f"--job-timeout {item!r}: {exc}") from None
    return out


# -- subcommands ------------------------------------------------------------------------


def cmd_worker(args: argparse.Namespace) -> int:
    """``durably worker``."""
    if ":" not in args.app:
        raise UsageError(f"APP must be 'module:attribute' (e.g. myapp.jobs:durably), got {args.app!r}")
    options = WorkerOptions(
        app=args.app,
        processes=args.processes,
        root=args.root,
        cancel_grace=args.cancel_grace,
        run_timeout=args.run_timeout,
        job_timeouts=_job_timeouts(args.job_timeout),
        verbose=args.verbose,
    )
    return run_worker(options)


def cmd_monitor(args: argparse.Namespace) -> int:
    """``durably monitor``."""
    try:
        import durably_monitor as monitor  # noqa: PLC0415 - textual is optional; the core never imports it
    except ImportError as exc:
        raise UsageError(
            f"the monitor is not installed ({exc}); install it with: pip install 'durably[monitor]'"
        ) from None
    root = args.root_arg or _root(args)
    monitor.run(root, read_only=args.read_only, app=args.app, wait_for_root=args.wait_for_root)
    return 0


def _read_input(text: str, option: str = "--input") -> Any:
    """``--input`` (or ``--data``): JSON, or ``-`` for standard input, or ``@FILE``."""
    source = option
    if text == "-":
        text, source = sys.stdin.read(), "standard input"
    elif text.startswith("@"):
        try:
            with open(text[1:], encoding="utf-8") as f:
                text, source = f.read(), text[1:]
        except OSError as exc:
            raise UsageError(f"cannot read {option} file {text[1:]}: {exc.strerror}") from None
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise UsageError(f"{source} is not valid JSON: {exc}") from None


def cmd_trigger(args: argparse.Namespace) -> int:
    """``durably trigger``."""
    payload = _read_input(args.input)
    labels = _labels(args.label)
    durably = _open_app(args)
    handle = durably.get_job(args.job)
    if handle is None:
        known = ", ".join(sorted(durably.jobs)) or "none"
        raise UsageError(f"{args.app} has no job named {args.job!r} (jobs: {known})")
    run = handle.trigger(
        payload,
        idempotency_key=args.idempotency_key,
        concurrency_key=args.concurrency_key,
        coalesce=args.coalesce,
        labels=labels or None,
        delay=args.delay,
        run_at=args.run_at,
    )
    print(run.id, flush=True)
    if not args.wait:
        return 0
    return wait(durably, run.id, args.timeout, app=args.app)


def _each(args: argparse.Namespace, durably: Durably, action: bulk.Action) -> int:
    """A bulk command: each run given, or each run the filter selects."""
    try:
        run_ids, single = bulk.selected(durably, args, _labels(args.label))
    except bulk.SelectionError as exc:
        raise UsageError(str(exc)) from None
    return bulk.act_on_each(f"durably {args.command}", run_ids, action, single=single)


def _new_id(_run_id: str, new: str | None) -> str:
    return str(new)


def cmd_retrigger(args: argparse.Namespace) -> int:
    """``durably retrigger``."""
    durably = _open_app(args)
    return _each(args, durably, bulk.Action(lambda r: durably.retrigger(r).id, "", _new_id))


def cmd_resume(args: argparse.Namespace) -> int:
    """``durably resume``."""
    durably = _open_app(args)
    step = args.from_step
    return _each(args, durably, bulk.Action(lambda r: durably.resume(r, from_step=step).id, "", _new_id))


def cmd_runs(args: argparse.Namespace) -> int:
    """``durably runs``."""
    durably = _open_root(args)
    runs = durably.get_runs(
        status=args.status,
        job_name=args.job,
        labels=_labels(args.label) or None,
        limit=args.limit,
        created_after=args.since,
        created_before=args.until,
    )
    if args.json:
        print(json_text([run_dict(r) for r in runs], indent=True))
        return 0
    if not runs:
        print("no runs", file=sys.stderr)
        return 0
    rows = [
        (r.id, r.job_name, status_word(r), progress_text(r.progress), when(r.started_at), span(duration))
        for r, duration in ((r, run_duration(r)) for r in runs)
    ]
    heads = ("ID", "JOB", "STATUS", "PROGRESS", "STARTED", "DURATION")
    widths = [max(len(h), *(cell_width(str(row[i])) for row in rows)) for i, h in enumerate(heads)]
    widths[1] = min(widths[1], 40)
    widths[3] = min(widths[3], 30)
    print("  ".join(h.ljust(w) for h, w in zip(heads, widths, strict=True)).rstrip())
    for row in rows:
        cells = [fit(str(c), w) for c, w in zip(row, widths, strict=True)]
        cells[2] = colour(row[2], sys.stdout) + " " * (widths[2] - len(row[2]))
        print("  ".join(cells).rstrip())
    if len(runs) == args.limit:
        print(f"(the newest {args.limit}; --limit N shows more)", file=sys.stderr)
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    """``durably show``."""
    durably = _open_root(args)
    run = durably.get_run(args.run)
    if run is None:
        raise NotFoundError(f"Run not found: {args.run}", run_id=args.run)
    steps = durably.get_steps(args.run)
    if args.json:
        print(json_text({**run_dict(run), "steps": [step_dict(s) for s in steps]}, indent=True))
        return 0
    print_run(run)
    print_steps(steps, run)
    logs = durably.get_logs(args.run)
    if logs:
        shown = logs[-args.logs :] if args.logs else []
        print(f"\nLogs (last {len(shown)} of {len(logs)}; all: durably logs {run.id}):")
        for entry in shown:
            print("  " + log_line(entry))
    return 0


def cmd_logs(args: argparse.Namespace) -> int:
    """``durably logs``."""
    durably = _open_root(args)
    if args.follow:
        return follow_logs(durably, args.run)
    for entry in durably.get_logs(args.run):
        print(log_line(entry))
    return 0


def cmd_signal(args: argparse.Namespace) -> int:
    """``durably signal``."""
    data = None if args.data is None else _read_input(args.data, "--data")
    _open_root(args).signal(args.run, args.name, data)
    print(f"signalled {args.run} {args.name}")
    return 0


def cmd_workers(args: argparse.Namespace) -> int:
    """``durably workers``."""
    return print_workers(_open_root(args), as_json=args.json)


def cmd_cancel(args: argparse.Namespace) -> int:
    """``durably cancel``."""
    durably = _open_root(args)
    return _each(args, durably, bulk.Action(durably.cancel, "cancelled", "cancelled {0}".format))


def cmd_delete(args: argparse.Namespace) -> int:
    """``durably delete``."""
    durably = _open_root(args)
    return _each(args, durably, bulk.Action(durably.delete_run, "deleted", "deleted {0}".format))


def cmd_purge(args: argparse.Namespace) -> int:
    """``durably purge``."""
    age = _parse_age(args.older_than)
    durably = _open_root(args)
    total = 0
    while True:
        deleted = durably.purge_runs(older_than=age, limit=500)
        total += deleted
        if deleted < 500:
            break
    print(f"purged {total} run(s) that ended more than {args.older_than} ago")
    return 0


def cmd_doctor(args: argparse.Namespace) -> int:
    return _repair.run(str(args.root_arg or _root(args)), fix=args.fix, as_json=args.json)


# -- the parser -------------------------------------------------------------------------


def _worker_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("app", metavar="APP", help="module:attribute naming a durably.Durably instance")
    p.add_argument(
        "--processes",
        "-p",
        type=_positive_int,
        default=1,
        metavar="N",
        help="number of worker processes (default 1)",
    )
    p.add_argument(
        "--cancel-grace",
        type=_positive_float,
        default=30.0,
        metavar="SECONDS",
        help="kill the process of a cancelled or timed-out run that is still "
        "running after this long (default 30)",
    )
    p.add_argument(
        "--run-timeout",
        type=_positive_float,
        metavar="SECONDS",
        help="fail a run whose execution takes longer than this",
    )
    p.add_argument(
        "--job-timeout",
        action="append",
        metavar="JOB=SECONDS",
        help="run timeout for one job (overrides --run-timeout; repeatable)",
    )
    p.add_argument("--verbose", "-v", action="store_true", help="print each run a process starts")


def _trigger_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("app", metavar="APP", help="module:attribute naming a durably.Durably instance")
    p.add_argument("job", metavar="JOB", help="job name")
    p.add_argument(
        "--input",
        default="{}",
        metavar="JSON",
        help="the job's input as JSON, - for standard input, @FILE for a file (default {})",
    )
    p.add_argument("--idempotency-key", metavar="K")
    p.add_argument("--concurrency-key", metavar="K")
    p.add_argument(
        "--coalesce",
        choices=COALESCE_VALUES,
        help="while a run with the concurrency key is pending: skip (print that run's id) "
        "or queue (a new run, started after the key's earlier runs ended)",
    )
    p.add_argument("--label", action="append", metavar="KEY=VALUE", help="a label (repeatable)")
    when = p.add_mutually_exclusive_group()
    when.add_argument("--delay", type=duration, metavar="DURATION", help="start after 90s, 15m, 2h or 3d")
    when.add_argument("--run-at", type=instant, metavar="ISO", help="start at this time (with its time zone)")
    p.add_argument("--wait", action="store_true", help="wait for the run and print its output")
    p.add_argument(
        "--timeout",
        type=_positive_float,
        metavar="SECONDS",
        help="with --wait: give up after this long (exit 1; the run goes on)",
    )


def _bulk_commands(add: Callable[..., argparse.ArgumentParser]) -> None:
    """``cancel``, ``retrigger``, ``resume`` and ``delete``: runs by id, or by a filter."""
    p = add("cancel", cmd_cancel, "cancel pending, waiting or running runs", _BULK % "cancelled")
    bulk.add_selection(p, _status)

    p = add(
        "retrigger", cmd_retrigger, "start a new run with an ended run's input; print its id", _BULK % "NEW"
    )
    p.add_argument("app", metavar="APP", help="module:attribute naming a durably.Durably instance")
    bulk.add_selection(p, _status)

    p = add(
        "resume",
        cmd_resume,
        "start a new run that replays an ended run's checkpoints; print its id",
        "A failed or cancelled run (a completed one with --from-step) goes on in a new run: "
        "its completed steps are replayed, the rest run. " + _BULK % "NEW",
    )
    p.add_argument("app", metavar="APP", help="module:attribute naming a durably.Durably instance")
    bulk.add_selection(p, _status)
    p.add_argument(
        "--from-step",
        metavar="NAME",
        help="replay only the steps before the first step NAME (it and the rest run again)",
    )

    p = add("delete", cmd_delete, "delete ended runs and all their files", _BULK % "deleted")
    bulk.add_selection(p, _status)


def build_parser() -> argparse.ArgumentParser:
    """The ``durably`` argument parser."""
    common = _Parser(add_help=False)
    common.add_argument(
        "--root", metavar="DIR", help="root directory (default: $DURABLY_ROOT, else .durably)"
    )
    parser = _Parser(
        prog="durably",
        description="durably: crash-proof Python jobs, "
        "checkpointed as plain files. Run and inspect jobs and runs.",
    )
    from . import __version__  # noqa: PLC0415

    parser.add_argument("--version", action="version", version=f"durably {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True, parser_class=_Parser)

    def add(
        name: str, func: Callable[[argparse.Namespace], int], help_: str, description: str | None = None
    ) -> argparse.ArgumentParser:
        p = sub.add_parser(name, parents=[common], help=help_, description=description or help_)
        p.set_defaults(func=func)
        return p

    p = add(
        "worker",
        cmd_worker,
        "run worker processes that execute runs",
        "Run N worker processes under one supervisor. Each imports APP and executes runs "
        "of its jobs, one at a time. SIGINT/SIGTERM: stop claiming, let runs in flight "
        "finish, exit 0; a second signal stops at once. A process that dies is replaced.",
    )
    _worker_arguments(p)

    p = add("monitor", cmd_monitor, "open the terminal monitor (needs durably[monitor])")
    p.add_argument("root_arg", nargs="?", metavar="ROOT", help="root directory (same as --root)")
    p.add_argument("--read-only", action="store_true", help="hide every action that writes")
    p.add_argument(
        "--app",
        metavar="APP",
        help="module:attribute naming a Durably instance (enables retrigger and resume)",
    )
    p.add_argument(
        "--wait-for-root", action="store_true", help="open on a root that does not exist yet and wait for it"
    )

    p = add(
        "trigger",
        cmd_trigger,
        "trigger a run and print its id",
        "Trigger a run of JOB and print its id. With --wait, show its progress and logs "
        "on stderr, then print its output as JSON; exit 1 if it fails or is cancelled.",
    )
    _trigger_arguments(p)

    p = add("runs", cmd_runs, "list runs, newest first")
    p.add_argument(
        "--status",
        type=_status,
        action="append",
        metavar="STATUS",
        help="only runs with this status: pending, running (or leased), completed, failed, "
        "cancelled (repeatable)",
    )
    p.add_argument("--job", action="append", metavar="JOB", help="only runs of this job (repeatable)")
    p.add_argument(
        "--label",
        action="append",
        metavar="KEY=VALUE",
        help="only runs with this label (repeatable; all must match)",
    )
    p.add_argument("--since", type=moment, metavar="WHEN", help="created since: 2h, 30m, 3d or an ISO time")
    p.add_argument("--until", type=moment, metavar="WHEN", help="created before: 2h, 30m, 3d or an ISO time")
    p.add_argument("--limit", type=_positive_int, default=50, metavar="N", help="at most N runs (default 50)")
    p.add_argument("--json", action="store_true", help="print a JSON list of runs")

    p = add("show", cmd_show, "show a run: its state, steps, errors and last logs")
    p.add_argument("run", metavar="RUN", help="run id")
    p.add_argument("--json", action="store_true", help="print the run with its steps as JSON")
    p.add_argument("--logs", type=int, default=20, metavar="N", help="last N logs (default 20)")

    p = add("logs", cmd_logs, "print a run's logs, one per line")
    p.add_argument("run", metavar="RUN", help="run id")
    p.add_argument("--follow", "-f", action="store_true", help="keep printing until the run ends")

    p = add(
        "signal",
        cmd_signal,
        "send a signal to a run",
        "Send signal NAME (with --data JSON) to RUN: it wakes the run if it waits for it "
        "(step.wait_for_signal), else it is kept until the run does. Each name once.",
    )
    p.add_argument("run", metavar="RUN", help="run id")
    p.add_argument("name", metavar="NAME", help="the signal's name")
    p.add_argument("--data", metavar="JSON", help="its data as JSON, - for standard input, @FILE for a file")

    p = add("workers", cmd_workers, "list the live worker processes of the root")
    p.add_argument("--json", action="store_true", help="print a JSON list of workers")

    _bulk_commands(add)
    schedules_cli.add_commands(add, _open_root)

    p = add(
        "doctor",
        cmd_doctor,
        "check a root for damage and debris; --fix repairs what is safe",
        "Check ROOT: orphan temp files, stale queue markers, corrupt or newer-format records, "
        "stuck leases, dangling keys, modes, links and FIFOs. Exit 0 if healthy, 1 if "
        "problems remain. --fix quarantines damage under ROOT/quarantine/ (never deletes data).",
    )
    _repair.add_arguments(p)

    p = add("purge", cmd_purge, "delete ended runs older than an age")
    p.add_argument("--older-than", required=True, metavar="AGE", help="e.g. 30d, 12h, 45m")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``durably`` command line; return the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    prog = f"durably {args.command}"
    try:
        code: int = args.func(args)
    except UsageError as exc:
        print(f"{prog}: error: {one_line(str(exc))}", file=sys.stderr)
        return 2
    except DurablyError as exc:
        print(f"{prog}: error: {one_line(str(exc))}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)  # a waited-for run goes on
        return 130
    except BrokenPipeError:  # `durably runs | head`: the reader left; say nothing
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1
    return code
