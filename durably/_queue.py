"""The queue: one empty marker per run that has not ended, which claimers list.

A marker is named ``<run id>.<job hash>.<key hash>`` (``_layout.marker_name``), so a
claimer can skip runs of jobs it has not registered, and runs blocked behind a busy
concurrency key, without reading them. It is created with the run (before ``run.json``,
so a visible run is always queued) and removed when the run ends; claimers also remove
the markers of ended runs they come across. The run's own files are the truth: a marker
is only an index of them, which ``durably doctor --fix`` can rebuild.
"""

from __future__ import annotations

import dataclasses
import os
import time

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


class RunQueue:
    """The queue markers of one root."""

    def __init__(self, layout: Layout, runs: RunReader, *, fsync: bool) -> None:
        self.layout = layout
        self.runs = runs
        self.fsync = fsync
        self._parsed: dict[str, QueueEntry | None] = {}  # marker name -> entry, as last listed

    @staticmethod
    def name(record: RunRecord) -> str:
        """The marker name of a run."""
        return marker_name(record.id, record.job_name, record.concurrency_key)

    def entries(self) -> list[QueueEntry]:
        """Every queued run, oldest first. Names are parsed once and kept while listed
        (a claim pass lists the queue each time, and a long queue on one key is mostly
        the same names every pass)."""
        known, parsed = self._parsed, {}
        for name in files.list_dir(self.layout.queue):
            if name in known:
                parsed[name] = known[name]
            else:
                marker = parse_marker(name)
                parsed[name] = None if marker is None else QueueEntry(*marker)
        self._parsed = parsed
        return [entry for name in sorted(parsed) if (entry := parsed[name]) is not None]

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
