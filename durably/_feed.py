"""The change feed: a hint for watchers of which runs changed, one run id per line.

Writers append a run id (no fsync: it is a hint) on every trigger, claim, step, progress,
log, end and delete, to ``feed/<YYYYMMDDHH>.log``; step traffic is throttled to one line
per run per 0.2 s. Watchers (the monitor) follow it with a cursor to re-read only the runs
that changed. A feed that cannot be written loses hints, never data.
"""

from __future__ import annotations

import logging
import os
import time
from datetime import UTC, datetime

from . import _files as files
from ._errors import StoreError
from ._layout import Layout

log = logging.getLogger("durably")


class ChangeFeed:
    """Appends to and reads the change feed of one root."""

    def __init__(self, layout: Layout) -> None:
        self.layout = layout
        self._last: dict[str, float] = {}

    def notify(self, run_id: str, *, throttle: float = 0.0) -> None:
        """Append ``run_id`` (best effort, no fsync); at most once per ``throttle`` seconds."""
        now = time.monotonic()
        if throttle and now - self._last.get(run_id, 0.0) < throttle:
            return
        self._last[run_id] = now
        if len(self._last) > 10000:
            self._last.clear()
        path = self.layout.feed_file(datetime.now(UTC).strftime("%Y%m%d%H") + ".log")
        try:
            # O_NONBLOCK: a FIFO planted in feed/ fails (ENXIO) instead of blocking every writer.
            fd = files.open_below(
                self.layout.root, path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NONBLOCK
            )
            try:
                files.own_only(fd, 0o600)
                os.write(fd, run_id.encode() + b"\n")
            finally:
                os.close(fd)
        except (OSError, StoreError) as exc:
            log.debug("change feed not written: %s", exc)

    def _names(self) -> list[str]:
        return sorted(n for n in files.list_dir(self.layout.feed) if n.endswith(".log"))

    def _end(self, names: list[str]) -> str:
        if not names:
            return ":0"
        return f"{names[-1]}:{files.size(self.layout.feed_file(names[-1]))}"

    def changes(self, cursor: str | None) -> tuple[list[str] | None, str]:
        """Run ids appended since ``cursor``, and the cursor to pass next time.

        ``cursor=None`` gives ``([], the end)``. None instead of a list: the feed cannot
        tell (rotated past the cursor, or unreadable): reload everything.
        """
        names = self._names()
        if cursor is None:
            return [], self._end(names)
        fname, _, off = cursor.rpartition(":")
        try:
            offset = int(off)
        except ValueError:
            return None, self._end(names)
        if fname and fname not in names and (not names or fname < names[0]):
            return None, self._end(names)
        seen: dict[str, None] = {}
        end_name, end_off = fname, offset
        for name in names:
            if fname and name < fname:
                continue
            start = offset if name == fname else 0
            try:
                data = files.read_from(self.layout.feed_file(name), start)
            except (OSError, StoreError):
                return None, self._end(self._names())  # unreadable feed: reload everything
            complete = data[: data.rfind(b"\n") + 1]
            for line in complete.split(b"\n"):
                if line:
                    seen[line.decode(errors="replace")] = None
            end_name, end_off = name, start + len(complete)
        return list(seen), f"{end_name}:{end_off}"
