"""The monitor's only door to durably: the public read API, plus the actions.

Every method here blocks (durably reads files) and is called from a thread worker, never from
the event loop. Nothing here parses run files, takes locks, or writes, except the actions the
user confirmed (`cancel`, `delete`, `retrigger`, `resume`, `signal`, `pause_schedule`,
`resume_schedule`).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from durably import Durably, DurablyError, LogEntry, NotFoundError, Run, Schedule, StepRecord, WorkerInfo
from durably._app_loader import AppError
from durably._app_loader import load_app as _load_app

from ._model import (
    RunDetail,
    RunRow,
    ScheduleRow,
    WorkerRow,
    detail_from,
    row_from_run,
    schedule_from,
    worker_from,
)

FULL_RELOAD_THRESHOLD = 2000
"""More changed ids than this in one poll: reread everything instead of run by run."""


@dataclass(frozen=True, slots=True)
class Diff:
    """What changed since the last poll. `reload` means: `upserts` is the whole root."""

    upserts: tuple[RunRow, ...] = ()
    removed: tuple[str, ...] = ()
    reload: bool = False


class DurablyReader(Protocol):
    """Exactly what the monitor calls on a `durably.Durably` (which satisfies this protocol).

    The reads never write and take no lock a worker waits on; `cancel`, `delete_run`,
    `retrigger`, `resume`, `signal`, `pause_schedule` and `resume_schedule` run only after
    the user confirmed them.
    """

    def get_runs(self, *, limit: int | None = None, offset: int | None = None) -> Sequence[Run[Any]]:
        """Runs newest first, one page."""
        ...

    def get_run(self, run_id: str) -> Run[Any] | None:
        """One run, or None when it is gone."""
        ...

    def get_steps(self, run_id: str) -> Sequence[StepRecord]:
        """The run's step attempts in execution order."""
        ...

    def get_logs(self, run_id: str) -> Sequence[LogEntry]:
        """The run's log lines in the order they were written."""
        ...

    def changes(self, cursor: str | None = None) -> tuple[Sequence[str] | None, str]:
        """Run ids changed since `cursor` (None: reload everything) and the next cursor."""
        ...

    def is_read_only(self) -> bool:
        """Whether this process cannot write the root."""
        ...

    def get_workers(self) -> Sequence[WorkerInfo]:
        """The live `durably worker` processes of the root (their heartbeat records)."""
        ...

    def get_schedules(self) -> Sequence[Schedule]:
        """Every cron schedule of the root, by name."""
        ...

    def cancel(self, run_id: str) -> None:
        """Cancel a pending or running run."""
        ...

    def delete_run(self, run_id: str) -> None:
        """Delete a finished run and all its files."""
        ...

    def retrigger(self, run_id: str) -> Run[Any]:
        """Start a new run with a finished run's input, labels and concurrency key."""
        ...

    def resume(self, run_id: str, *, from_step: str | None = None) -> Run[Any]:
        """Start a new run that replays an ended run's checkpoints (before `from_step`)."""
        ...

    def signal(self, run_id: str, name: str, data: Any = None) -> None:
        """Send signal `name` with JSON `data` to a run."""
        ...

    def pause_schedule(self, name: str) -> None:
        """Stop firing a schedule's ticks."""
        ...

    def resume_schedule(self, name: str) -> None:
        """Fire a paused schedule's ticks again, counting from now."""
        ...


class Source:
    """Reads one root through a `Durably` instance (or anything with its read API).

    Args:
        durably: the instance to read through.
        label: how the root is named in the header.
        root: the root directory's path, when known (the monitor waits while it is missing).
        can_retrigger: the instance has the jobs registered (the monitor was given an APP), so
            `retrigger` and `resume` can re-validate a run's input against its job.
    """

    def __init__(
        self, durably: DurablyReader, label: str, *, root: str | None = None, can_retrigger: bool = False
    ) -> None:
        self.durably = durably
        self.label = label
        self.root = root
        self.can_retrigger = can_retrigger

    # -- reading ---------------------------------------------------------------------------

    def root_exists(self) -> bool:
        """Whether the root directory is there (True when its path is not known)."""
        return self.root is None or os.path.isdir(self.root)

    def is_read_only(self) -> bool:
        """Whether this process cannot write the root (actions are then hidden)."""
        return self.durably.is_read_only()

    def pages(self, first: int, growth: int = 8) -> Iterator[list[RunRow]]:
        """The newest `first` runs, then the rest in pages `growth` times larger each time.

        `get_runs(offset=...)` reads the runs it skips (durably has no keyset paging), so
        pages grow to keep the whole scan within ~1.2 passes over the root, while the first
        screen needs only the newest page.
        """
        offset, limit = 0, first
        while True:
            runs = self.durably.get_runs(limit=limit, offset=offset)
            yield [row_from_run(r) for r in runs]
            if len(runs) < limit:
                return
            offset, limit = offset + len(runs), limit * growth

    def cursor(self) -> str:
        """A change-feed cursor at the end of the feed."""
        _ids, cursor = self.durably.changes(None)
        return cursor

    def poll(self, cursor: str | None, active: Iterable[str]) -> tuple[Diff, str]:
        """What changed since `cursor`, and the next cursor.

        Only the changed runs (and `active`, the runs the caller wants refreshed anyway) are
        reread. When the feed cannot say (it returns None) or too much changed, everything
        is reread.
        """
        changed, cursor = self.durably.changes(cursor)
        if changed is None or len(changed) > FULL_RELOAD_THRESHOLD:
            rows = [row for page in self.pages(5000) for row in page]
            return Diff(upserts=tuple(rows), reload=True), cursor
        return self.read(dict.fromkeys([*changed, *active])), cursor

    def read(self, ids: Iterable[str]) -> Diff:
        """Reread `ids` one by one; runs that are gone are removed.

        A run durably cannot read right now (still syncing, damaged) keeps its last row.
        """
        upserts: list[RunRow] = []
        removed: list[str] = []
        for run_id in ids:
            try:
                run = self.durably.get_run(run_id)
            except DurablyError:
                continue
            if run is None:
                removed.append(run_id)
            else:
                upserts.append(row_from_run(run))
        return Diff(tuple(upserts), tuple(removed))

    def detail(self, run_id: str) -> RunDetail | None:
        """A run with its steps and logs, or None if it is gone."""
        run = self.durably.get_run(run_id)
        if run is None:
            return None
        try:
            steps = list(self.durably.get_steps(run_id))
            logs = list(self.durably.get_logs(run_id))
        except NotFoundError:  # deleted between the reads
            return None
        return detail_from(run, steps, logs)

    def workers(self) -> list[WorkerRow]:
        """The live worker processes, oldest first."""
        return [worker_from(w) for w in self.durably.get_workers()]

    def schedules(self) -> list[ScheduleRow]:
        """The root's cron schedules, by name."""
        return [schedule_from(s) for s in self.durably.get_schedules()]

    # -- actions (only after the user confirmed) -----------------------------------------

    def cancel(self, run_id: str) -> tuple[str, list[str]]:
        """Cancel a pending or running run. Returns a message and the new run ids (none)."""
        self.durably.cancel(run_id)
        return f"Cancelled {run_id}", []

    def delete(self, run_id: str) -> tuple[str, list[str]]:
        """Delete a finished run and all its files."""
        self.durably.delete_run(run_id)
        return f"Deleted {run_id}", []

    def retrigger(self, run_id: str) -> tuple[str, list[str]]:
        """Start a new run with the same input, labels and concurrency key."""
        run = self.durably.retrigger(run_id)
        return f"Retriggered {run_id} as {run.id}", [run.id]

    def resume(self, run_id: str, from_step: str | None = None) -> tuple[str, list[str]]:
        """Start a new run that replays `run_id`'s checkpoints (those before `from_step`)."""
        run = self.durably.resume(run_id, from_step=from_step)
        where = "" if from_step is None else f" from step {from_step!r}"
        return f"Resumed {run_id}{where} as {run.id}", [run.id]

    def signal(self, run_id: str, name: str, data: Any) -> str:
        """Send signal `name` with `data` to a run; returns the message to show."""
        self.durably.signal(run_id, name, data)
        return f"Sent signal {name!r} to {run_id}"

    def pause_schedule(self, name: str, paused: bool) -> str:
        """Pause a schedule (`paused`) or resume it; returns the message to show."""
        if paused:
            self.durably.pause_schedule(name)
            return f"Paused schedule {name!r}: its ticks do not fire until it is resumed"
        self.durably.resume_schedule(name)
        return f"Resumed schedule {name!r}: it fires from its next tick"


def load_app(spec: str, root: str | None) -> Durably:
    """Import `module:attr` naming a `Durably` instance (with `root` as `$DURABLY_ROOT`)."""
    try:
        return _load_app(spec, root)
    except AppError as exc:
        raise SystemExit(f"durably monitor: {exc}") from None


def open_source(root: str | None, app: str | None) -> Source:
    """The `Source` for `durably monitor [ROOT] [--app APP]` (it may name a missing root)."""
    if app is not None:
        durably = load_app(app, root)
        return Source(durably, _short(durably.root), root=durably.root, can_retrigger=True)
    resolved = root or os.environ.get("DURABLY_ROOT") or ".durably"
    # mypy checks here that `Durably` satisfies `DurablyReader`
    return Source(Durably(resolved), _short(resolved), root=resolved)


def root_problem(path: str) -> str | None:
    """Why `path` cannot be watched (missing, or not a directory), or None if it can."""
    where = os.path.abspath(path)
    if os.path.isdir(where):
        return None
    if os.path.exists(where):
        return f"{where} is not a directory (ROOT must be a durably root directory)"
    return f"no durably root at {where} (nothing triggered yet? pass --root or set $DURABLY_ROOT)"


def _short(path: str) -> str:
    """`path` relative to the working directory when it is inside it (`.durably`)."""
    relative = os.path.relpath(path)
    return path if relative.startswith("..") else relative
