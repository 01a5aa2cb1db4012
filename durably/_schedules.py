"""Schedule records: one definition per schedule in ``schedules/``, and the tick it fired last.

``schedules/<hash>.json`` holds a schedule's definition (name, job, cron, time zone, the
trigger's options, paused, and ``since``: ticks count strictly after it). It is written
only when a user changes the schedule, by temp file + rename, under a same-host lock.
``schedules/fired/<hash>.json`` holds the tick a worker fired last and that tick's run.
A worker writes it after the run exists, so a crash in between makes the next worker
fire the tick again, and the tick's idempotency key gives it the same run: a tick is
never lost and never fired twice. For the same reason it is written without ``fsync``
(a power cut that loses it makes the next worker find the runs by their keys). It only
moves forward on one host; a slower host writing an older tick makes the next worker
find runs that exist already, nothing more.

Reading every definition costs one ``stat`` of ``schedules/`` while none changed
(firing writes only in ``fired/``): :meth:`ScheduleBook.all` keeps the parsed records
and reads again only the files whose identity (inode, size, mtime) changed. A fired
record is read when its schedule's next tick comes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import time
from collections.abc import Iterator
from typing import Any

from . import _files as files
from . import _locks as locks
from . import _records as records
from ._errors import StoreError
from ._layout import Layout

DEFINITION = ".json"
SETTLE = 2.0
"""Seconds after a change of ``schedules/`` during which its mtime is not trusted to
change again (a second change within one clock tick of the file system keeps it)."""


@dataclasses.dataclass(frozen=True, slots=True)
class ScheduleRecord:
    """A schedule's definition as stored."""

    name: str
    job_name: str
    cron: str
    timezone: str
    input: Any
    labels: dict[str, str]
    concurrency_key: str | None
    coalesce: str | None
    catch_up: str
    paused: bool
    since: str
    """Ticks count strictly after this time (creation, replacement, or resumption)."""
    created_at: str

    def definition(self) -> bytes:
        """What ``schedule()`` compares: the same definition again changes nothing."""
        return records.dumps(
            {
                "job": self.job_name,
                "cron": self.cron,
                "tz": self.timezone,
                "input": self.input,
                "labels": self.labels,
                "ck": self.concurrency_key,
                "coalesce": self.coalesce,
                "catch_up": self.catch_up,
            }
        )

    def to_bytes(self) -> bytes:
        """The record's file."""
        body = {"v": 1, **{f.name: getattr(self, f.name) for f in dataclasses.fields(self)}}
        return records.dumps(body)


@dataclasses.dataclass(frozen=True, slots=True)
class FiredRecord:
    """The tick a schedule fired last (``tick``, stored time) and its run (None: the tick
    was skipped, its concurrency key held by a pending run)."""

    tick: str
    run_id: str | None


def parse_schedule(data: dict[str, Any] | None) -> ScheduleRecord | None:
    """A definition record; None if it is not one."""
    if data is None:
        return None
    try:
        rec = ScheduleRecord(
            **{f.name: data[f.name] for f in dataclasses.fields(ScheduleRecord)},
        )
    except KeyError:
        return None
    text = (rec.name, rec.job_name, rec.cron, rec.timezone, rec.catch_up, rec.since, rec.created_at)
    if not all(isinstance(v, str) for v in text) or not isinstance(rec.labels, dict):
        return None
    return rec


def parse_fired(data: dict[str, Any] | None) -> FiredRecord | None:
    """A fired record; None if it is not one."""
    if data is None or not isinstance(data.get("tick"), str):
        return None
    return FiredRecord(tick=data["tick"], run_id=records.str_or_none(data.get("run_id")))


class ScheduleBook:
    """The schedules of one root: read (cached by file identity), written, removed."""

    def __init__(self, layout: Layout, *, fsync: bool) -> None:
        self.layout = layout
        self.fsync = fsync
        self._stamp: tuple[int, int] | None = None
        self._checked = 0.0
        self._files: dict[str, tuple[tuple[int, int, int], ScheduleRecord]] = {}
        self._all: list[ScheduleRecord] = []

    # -- reading -----------------------------------------------------------------------

    def all(self) -> list[ScheduleRecord]:
        """Every readable schedule definition, by name. Damaged records are left out
        (with one warning); unchanged files are not read again."""
        try:
            st = os.stat(self.layout.schedules)
        except FileNotFoundError:
            self._stamp, self._all, self._files = None, [], {}
            return []
        except OSError as exc:
            raise files.wrap_os_error(exc, "list the schedules", self.layout.schedules) from exc
        stamp = (st.st_ino, st.st_mtime_ns)
        now = time.time()
        if stamp == self._stamp and now - st.st_mtime > SETTLE and self._checked > st.st_mtime + SETTLE:
            return self._all
        self._stamp, self._checked = stamp, now
        seen: dict[str, tuple[tuple[int, int, int], ScheduleRecord]] = {}
        for name, est in self._entries():
            ident = (est.st_ino, est.st_size, est.st_mtime_ns)
            cached = self._files.get(name)
            if cached is not None and cached[0] == ident:
                seen[name] = cached
                continue
            path = os.path.join(self.layout.schedules, name)
            try:
                rec = parse_schedule(records.read_json(path))
            except StoreError as exc:
                records.warn_once(f"schedule record {path} cannot be read: {exc}")
                continue
            if rec is None:
                records.warn_once(f"schedule record {path} is damaged; it is left out")
                continue
            seen[name] = (ident, rec)
        self._files = seen
        self._all = sorted((rec for _, rec in seen.values()), key=lambda rec: rec.name)
        return self._all

    def _entries(self) -> list[tuple[str, os.stat_result]]:
        try:
            with files.opened_dir(self.layout.root, self.layout.schedules) as dir_fd:
                listed = files.entries(dir_fd)
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise files.wrap_os_error(exc, "list the schedules", self.layout.schedules) from exc
        return [(name, st) for name, st in listed if name.endswith(DEFINITION)]

    def get(self, name: str) -> ScheduleRecord | None:
        """One schedule's definition by name (read from its file, not the cache)."""
        rec = parse_schedule(records.read_json(self.layout.schedule_file(name, DEFINITION)))
        return rec if rec is not None and rec.name == name else None

    def fired(self, name: str) -> FiredRecord | None:
        """The tick a schedule fired last (None: none yet, or its record is damaged)."""
        return parse_fired(records.read_json(self._fired_path(name)))

    def _fired_path(self, name: str) -> str:
        return self.layout.schedule_fired(name)

    # -- writing -----------------------------------------------------------------------

    @contextlib.contextmanager
    def locked(self, name: str) -> Iterator[None]:
        """Hold the same-host lock of one schedule's records."""
        path = self.layout.schedule_lock(name)
        locks.lock(path, root=self.layout.root)
        try:
            yield
        finally:
            locks.unlock(path)

    def put(self, rec: ScheduleRecord) -> None:
        """Write (or replace) a schedule's definition, atomically."""
        self._replace(self.layout.schedule_file(rec.name, DEFINITION), rec.to_bytes(), "write the schedule")

    def put_fired(self, name: str, fired: FiredRecord) -> None:
        """Record the tick a schedule fired last, unless a later one is recorded (same
        host). Not synced: losing it only makes the next worker find the tick's run again."""
        with self.locked(name):
            current = self.fired(name)
            if current is not None and current.tick >= fired.tick:
                return
            body = records.dumps({"v": 1, "name": name, "tick": fired.tick, "run_id": fired.run_id})
            self._replace(self._fired_path(name), body, "record the fired tick", sync=False)

    def remove(self, name: str) -> bool:
        """Remove a schedule's files; False if it did not exist."""
        removed = files.remove_path(self.layout.root, self.layout.schedule_file(name, DEFINITION))
        files.remove_path(self.layout.root, self._fired_path(name))
        return removed

    def _replace(self, path: str, body: bytes, what: str, *, sync: bool | None = None) -> None:
        try:
            with files.opened_dirs(self.layout.root, self.layout.tmp, os.path.dirname(path), create=True) as (
                tmp_fd,
                dir_fd,
            ):
                files.replace_file(
                    tmp_fd, dir_fd, os.path.basename(path), body, sync=self.fsync if sync is None else sync
                )
        except OSError as exc:
            raise files.wrap_os_error(exc, what, path) from exc
