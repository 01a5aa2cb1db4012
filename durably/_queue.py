"""The queue: one empty marker per run that has not ended, which claimers list.

A marker is named ``<run id>.<job hash>.<key hash>`` (``_layout.marker_name``), so a
claimer can skip runs of jobs it has not registered, and runs blocked behind a busy
concurrency key, without reading them. It is created with the run (before ``run.json``,
so a visible run is always queued) and removed when the run ends; claimers also remove
the markers of ended runs they come across. The run's own files are the truth: a marker
is only an index of them, which ``durably doctor --fix`` can rebuild.
"""

from __future__ import annotations

import bisect
import dataclasses
import heapq
import os
import threading
import time
from collections.abc import Iterator

from . import _files as files
from ._errors import StoreError
from ._layout import NO_KEY, Layout, job_hash, key_hash, marker_name, parse_marker
from ._records import RunRecord, RunState, warn_once
from ._runs import RunReader

STALE_MARKER_AGE = 600.0
"""Seconds after which a marker whose run never appeared is a dead trigger's leftover."""


@dataclasses.dataclass(frozen=True, slots=True)
class QueueEntry:
    """A queued run, as its marker names it."""

    run_id: str
    job_hash: str
    key_hash: str
    queue: str = dataclasses.field(default="", compare=False)
    """The queue a keyed run belongs to (its job and concurrency key): runs queued on a
    key (``coalesce="queue"``) start in trigger order within it."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "queue", f"{self.job_hash}.{self.key_hash}")

    @classmethod
    def of(cls, record: RunRecord) -> QueueEntry:
        """The entry of a run, from its record."""
        return cls(record.id, job_hash(record.job_name), key_hash(record.concurrency_key))

    def blocked(self, blocked_keys: set[str]) -> bool:
        """Whether a claim pass found this run's concurrency key (or its queue) blocked:
        a set lookup, so a pass skips 10,000 runs queued on a busy key cheaply."""
        return self.key_hash != NO_KEY and (self.key_hash in blocked_keys or self.queue in blocked_keys)


def _group(entry: QueueEntry) -> str:
    """The group of a queued run in a listing: its queue, or ``-`` for runs with no key
    (never blocked together)."""
    return NO_KEY if entry.key_hash == NO_KEY else entry.queue


def _run_id(entry: QueueEntry) -> str:
    return entry.run_id


class _Listing:
    """The last listing of ``queue/``: marker names, and the runs they name grouped by
    queue, each group sorted by run id. Refreshed by the changes between two listings;
    a refresh publishes new groups (copy on write), so a pass iterating the old ones in
    another thread is never disturbed."""

    REBUILD = 64
    """More changes than this since the last listing: parse and sort everything again."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._names: set[str] = set()
        self._parsed: dict[str, QueueEntry | None] = {}
        self._groups: dict[str, list[QueueEntry]] = {}

    def refresh(self, listed: list[str]) -> dict[str, list[QueueEntry]]:
        """The groups of the runs ``listed`` names (a new listing of the directory)."""
        names = set(listed)
        with self._lock:
            if names == self._names:
                return self._groups
            added, removed = names - self._names, self._names - names
            if len(added) + len(removed) > self.REBUILD:
                self._rebuild(names)
            else:
                self._update(added, removed)
            self._names = names
            return self._groups

    def _rebuild(self, names: set[str]) -> None:
        parsed = {name: self._parsed[name] if name in self._parsed else _parse(name) for name in names}
        groups: dict[str, list[QueueEntry]] = {}
        for entry in parsed.values():
            if entry is not None:
                groups.setdefault(_group(entry), []).append(entry)
        for group in groups.values():
            group.sort(key=_run_id)
        self._parsed, self._groups = parsed, groups

    def _update(self, added: set[str], removed: set[str]) -> None:
        groups = dict(self._groups)
        copied: set[str] = set()

        def group_of(entry: QueueEntry) -> list[QueueEntry]:
            name = _group(entry)
            if name not in copied:
                copied.add(name)
                groups[name] = list(groups.get(name, ()))
            return groups[name]

        for name in removed:
            entry = self._parsed.pop(name, None)
            if entry is not None:
                group = group_of(entry)
                i = bisect.bisect_left(group, entry.run_id, key=_run_id)
                while i < len(group) and group[i].run_id == entry.run_id:
                    if group[i] == entry:
                        del group[i]
                        break
                    i += 1
        for name in added:
            entry = self._parsed[name] = _parse(name)
            if entry is not None:
                bisect.insort(group_of(entry), entry, key=_run_id)
        self._groups = {name: group for name, group in groups.items() if group}


def _parse(name: str) -> QueueEntry | None:
    marker = parse_marker(name)
    return None if marker is None else QueueEntry(*marker)


class RunQueue:
    """The queue markers of one root."""

    def __init__(self, layout: Layout, runs: RunReader, *, fsync: bool) -> None:
        self.layout = layout
        self.runs = runs
        self.fsync = fsync
        self._listing = _Listing()

    @staticmethod
    def name(record: RunRecord) -> str:
        """The marker name of a run."""
        return marker_name(record.id, record.job_name, record.concurrency_key)

    def entries(self, blocked: set[str] | None = None) -> Iterator[QueueEntry]:
        """Every queued run, oldest first, lazily; with ``blocked`` (the keys and queues a
        claim pass found blocked so far, see :meth:`QueueEntry.blocked`), the rest of a
        blocked key's or queue's runs are left out as soon as one of them is found
        blocked, without looking at them one by one.

        The listing is kept between passes, its runs grouped by queue: a pass costs one
        ``listdir`` of ``queue/`` and the changes since the last one, however many runs
        wait behind a busy key.
        """
        groups = self._listing.refresh(files.list_dir(self.layout.queue))
        if len(groups) == 1:  # the usual case: no key, or one queue
            (only,) = groups.values()
            for entry in only:
                if blocked is not None and entry.blocked(blocked):
                    return
                yield entry
            return
        heap = [(group[0].run_id, name, 0) for name, group in groups.items()]
        heapq.heapify(heap)
        while heap:
            _, name, i = heapq.heappop(heap)
            group = groups[name]
            entry = group[i]
            if blocked is not None and entry.blocked(blocked):
                continue  # and so are the others of its group: it is dropped
            yield entry
            if i + 1 < len(group):
                heapq.heappush(heap, (group[i + 1].run_id, name, i + 1))

    def ensure(self, state: RunState) -> None:
        """Recreate the marker of a run that has not ended, if a power loss took it.

        ``run.json`` and the marker are made durable by one batch of directory fsyncs, so
        a file system that orders metadata per directory may keep the run and lose its
        marker (a trigger that was never acknowledged); the retry of that trigger, which
        finds the run through its key, queues it again. One ``open(O_EXCL)`` that fails.
        """
        if state.is_terminal or state.status == "waiting":
            return  # a waiting run's marker is in wait/ (``_waits``)
        name = self.name(state.record)
        try:
            with files.opened_dir(self.layout.root, self.layout.queue) as queue_fd:
                if files.create_file(queue_fd, name, b"", sync=False) and self.fsync:
                    files.sync_dir(queue_fd)
        except OSError as exc:
            raise files.wrap_os_error(exc, "queue run", os.path.join(self.layout.queue, name)) from exc

    def remove(self, state: RunState) -> None:
        """Drop an ended run's marker (idempotent; claimers also do it lazily).

        A marker that cannot be removed (a directory planted in its place, a read-only
        root) is reported, never raised: the run has ended whatever happens to it.
        """
        path = os.path.join(self.layout.queue, self.name(state.record))
        try:
            files.remove_path(self.layout.root, path)
        except (OSError, StoreError) as exc:
            warn_once(
                f"cannot remove the queue marker {path} of ended run {state.run_id}: {exc} (durably doctor)"
            )

    def drop_stale(self, run_id: str) -> None:
        """Remove the marker of a trigger that died before writing ``run.json`` (after
        :data:`STALE_MARKER_AGE`)."""
        for name in files.list_dir(self.layout.queue):
            if name.startswith(run_id + "."):
                path = os.path.join(self.layout.queue, name)
                if time.time() - files.mtime(path) > STALE_MARKER_AGE and self.runs.load(run_id) is None:
                    files.remove_path(self.layout.root, path)
