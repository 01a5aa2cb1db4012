"""The monitor's only door to durably: the public read API, plus the three actions.

Every method here blocks (durably reads files) and is called from a thread worker, never from
the event loop. Nothing here parses run files, takes locks, or writes, except the actions the
user confirmed (`cancel`, `delete`, `retrigger`).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from durably import Durably, DurablyError, NotFoundError
from durably._app_loader import AppError
from durably._app_loader import load_app as _load_app

from ._model import RunDetail, RunRow, detail_from, row_from_run

FULL_RELOAD_THRESHOLD = 2000
"""More changed ids than this in one poll: reread everything instead of run by run."""


@dataclass(frozen=True, slots=True)
class Diff:
    """What changed since the last poll. `reload` means: `upserts` is the whole root."""

    upserts: tuple[RunRow, ...] = ()
    removed: tuple[str, ...] = ()
    reload: bool = False


class Source:
    """Reads one root through a `Durably` instance (or anything with the same read API).

    Args:
        durably: the instance to read through.
        label: how the root is named in the header.
        can_retrigger: the instance has the jobs registered (the monitor was given an APP), so
            `retrigger` can re-validate a run's input against its job.
    """

    def __init__(self, durably: Any, label: str, *, can_retrigger: bool = False) -> None:
        self.durably = durably
        self.label = label
        self.can_retrigger = can_retrigger
        self.has_feed = callable(getattr(durably, "changes", None))

    # -- reading ---------------------------------------------------------------------------

    def is_read_only(self) -> bool:
        """Whether this process cannot write the root (actions are then hidden)."""
        check = getattr(self.durably, "is_read_only", None)
        return bool(check()) if callable(check) else False

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

    def cursor(self) -> str | None:
        """A change-feed cursor at the end of the feed (None without a feed)."""
        if not self.has_feed:
            return None
        _ids, cursor = self.durably.changes(None)
        return str(cursor)

    def poll(self, cursor: str | None, active: list[str]) -> tuple[Diff, str | None]:
        """What changed since `cursor`, and the next cursor.

        With the change feed, only the changed runs (and `active`, the runs the caller
        wants refreshed anyway) are reread. When the feed cannot say (it returns None) or
        too much changed, everything is reread. Without a feed, the newest page and the
        active runs are reread.
        """
        if not self.has_feed:
            ids = [*active, *(r.id for r in self._newest(200))]
            return self.read(dict.fromkeys(ids)), None
        changed, cursor = self.durably.changes(cursor)
        if changed is None or len(changed) > FULL_RELOAD_THRESHOLD:
            rows = [row for page in self.pages(5000) for row in page]
            return Diff(upserts=tuple(rows), reload=True), str(cursor)
        return self.read(dict.fromkeys([*changed, *active])), str(cursor)

    def read(self, ids: Any) -> Diff:
        """Reread `ids` one by one; runs that are gone (or not readable yet) are removed."""
        upserts: list[RunRow] = []
        removed: list[str] = []
        for run_id in ids:
            try:
                run = self._get_run(run_id)
            except DurablyError:  # unreadable right now (syncing): keep what we showed
                continue
            if run is None:
                removed.append(run_id)
            else:
                upserts.append(row_from_run(run))
        return Diff(tuple(upserts), tuple(removed))

    def detail(self, run_id: str) -> RunDetail | None:
        """A run with its steps and logs, or None if it is gone."""
        run = self._get_run(run_id)
        if run is None:
            return None
        steps = list(self.durably.get_steps(run_id))
        logs = list(self.durably.get_logs(run_id))
        return detail_from(run, steps, logs)

    def _get_run(self, run_id: str) -> Any:
        try:
            return self.durably.get_run(run_id)
        except NotFoundError:
            return None

    def _newest(self, limit: int) -> list[RunRow]:
        return [row_from_run(r) for r in self.durably.get_runs(limit=limit)]

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
        return f"Retriggered {run_id} as {run.id}", [str(run.id)]


def load_app(spec: str, root: str | None) -> Any:
    """Import `module:attr` naming a `Durably` instance (with `root` as `$DURABLY_ROOT`)."""
    try:
        return _load_app(spec, root)
    except AppError as exc:
        raise SystemExit(f"durably monitor: {exc}") from None


def open_source(root: str | None, app: str | None) -> Source:
    """The `Source` for `durably monitor [ROOT] [--app APP]`."""
    if app is not None:
        durably = load_app(app, root)
        return Source(durably, _short(str(getattr(durably, "root", None) or root)), can_retrigger=True)
    resolved = root or os.environ.get("DURABLY_ROOT") or ".durably"
    return Source(Durably(resolved), _short(resolved))


def _short(path: str) -> str:
    """`path` relative to the working directory when it is inside it (`.durably`)."""
    relative = os.path.relpath(path)
    return path if relative.startswith("..") else relative
