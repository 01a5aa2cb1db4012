"""The storage seam: what the engine may ask of a root, and the file store that does it.

The engine above (execution, queries, the facade) sees only :class:`Store` and
:class:`Lease`, never a path. :class:`FileStore` composes the store's parts, one concept
each: names (``_layout``), records (``_records``), reading runs (``_runs``), journals
(``_journals``), the queue (``_queue``), key bindings (``_keys``), claims and leases
(``_claims``), the run lifecycle (``_lifecycle``), schedules (``_schedules``) and the
change feed (``_feed``).
``docs/architecture.md`` explains the layout and the invariant each part serves.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, Protocol

from . import _files as files
from ._claims import Claim, Claims
from ._feed import ChangeFeed
from ._journals import JournalReader, JournalView
from ._keys import KeyBindings
from ._layout import Layout
from ._lifecycle import TMP_MAX_AGE, Lifecycle
from ._queue import QueueEntry, RunQueue
from ._records import Clock, EndState, RunRecord, RunState, SignalRecord, StateRecord, WaitState, system_clock
from ._runs import RunReader
from ._schedules import ScheduleBook
from ._waits import WaitIndex


class Lease(Protocol):
    """A claim this process holds on one run (generation ``gen``).

    Fencing: the owner's writes count only while no later state was published; whoever
    publishes it (a canceller, a claimer taking over, a run timeout) fences the owner.
    """

    run_id: str
    gen: int
    state: RunState
    owner: str
    lease_duration: float

    def fenced(self) -> bool:
        """True once another writer published the next state (one ``stat``)."""

    def fence(self) -> StateRecord | None:
        """The state that fenced this lease (None if none, or not readable yet)."""

    def append(self, entry: dict[str, object], *, sync: bool) -> None:
        """Append a journal entry to this generation's journal. Atomic for readers (a
        framed line: a torn one reads as not written); with ``sync``, on disk when it
        returns (one ``fdatasync``). A failed append is undone.

        Raises:
            StoreError: the append or its sync failed; the entry is not acknowledged.
        """

    def heartbeat(self) -> None:
        """Renew the lease for other hosts (the journal's mtime)."""

    def release(self) -> None:
        """Close the journal and drop this process's locks on the run (idempotent)."""


class Store(Protocol):
    """Every operation the engine performs on a root.

    Readers (``load``, ``run_ids``, ``journal``, ``changes``…) take no lock and write
    nothing (invariant 7). With ``fsync``, every write is durable when it
    returns (invariant 2).
    """

    root: str
    fsync: bool
    schedules: ScheduleBook
    """The schedules of the root (``_schedules``): definitions and the ticks they fired."""

    def ensure_ready(self) -> None:
        """Create the root's directories if missing (idempotent).

        Raises:
            StoreError: the root cannot be created or a directory of it is a planted link.
        """

    def is_read_only(self) -> bool:
        """True when this process cannot write the root."""

    def load(self, run_id: str) -> RunState | None:
        """A run's record and state; None if it does not exist (or is still being written)."""

    def run_ids(
        self, *, newest_first: bool = True, after: str | None = None, before: str | None = None
    ) -> Iterator[str]:
        """Every run id, in creation order, lazily (a page costs a page, not the root).
        ``after``/``before``: only ids whose time prefix (``_ids.time_prefix``) is at least
        ``after`` and less than ``before``; shards outside are never listed."""

    def journal(self, state: RunState) -> JournalView:
        """The run's valid journal entries (every generation, cuts applied)."""

    def lease_expiry(self, state: RunState) -> float:
        """Epoch seconds at which a leased run's lease ends (its last heartbeat + lease)."""

    def owner_alive(self, state: RunState) -> bool:
        """Is the owner of a leased run still executing it? False once its lease expired,
        or at once on its host when its record lock is free (it died). Takes no lock a
        worker waits on (a probe of the lock byte at most).

        Raises:
            StoreError: the run's lock file cannot be probed (a read-only root).
        """

    def create_run(
        self,
        record: RunRecord,
        *,
        coalesce: bool,
        queue: bool = False,
        replayed: Sequence[dict[str, Any]] = (),
    ) -> tuple[RunState, str]:
        """Create a pending run, or return the run its keys bind (``idempotent``,
        ``coalesced``). All or nothing: a crash leaves no run or a complete one; one run
        per idempotency key and at most one pending run per concurrency key, across
        processes and hosts, except that with ``queue`` the run is created behind the
        key's latest run (it is claimable only once that run ended). ``replayed``: the
        journal entries (completed checkpoints) a resumed run starts from, written (and
        synced) before the run becomes visible.

        Raises:
            ConflictError: a pending run holds the concurrency key (and neither
                ``coalesce`` nor ``queue``).
        """

    def queue_ahead(self, state: RunState) -> RunState | None:
        """For a run queued on its concurrency key (``coalesce="queue"``): the first run
        ahead of it that has not ended; None if all have (or it was not queued)."""

    def open_batch(self, batch_id: str | None) -> None:
        """Let this thread see the runs of an uncommitted batch (None: stop)."""

    def commit_batch(self, batch_id: str) -> None:
        """Make every run of a batch visible at once (one durable file)."""

    def queued(self, blocked: set[str] | None = None) -> Iterator[QueueEntry]:
        """Claimable runs that have not ended, oldest first (their queue markers), after
        moving the markers of waiting runs whose time came back into the queue. With
        ``blocked`` (what :meth:`try_claim` found blocked in this pass, filled in while
        the runs are iterated), the rest of a blocked key's or queue's runs are left out."""

    def try_claim(
        self, entry: QueueEntry, owner: str, lease_duration: float, blocked_keys: set[str]
    ) -> Lease | None:
        """Claim a queued run if it is claimable: one ``link()`` of its next state decides
        between racing claimers; the previous owner (if any) is fenced by it."""

    def end(self, state: RunState, after_gen: int, end: EndState) -> RunState | None:
        """Publish the end of a run (first writer wins; None if another writer won),
        fixing the valid length of the journal of ``after_gen``."""

    def wait(self, state: RunState, gen: int, wait: WaitState) -> RunState | None:
        """Publish that a leased run waits (first writer wins; None if another writer won);
        its marker moves to the wait index."""

    def is_due(self, state: RunState) -> bool:
        """Whether a waiting run's wait is over (its time, its signal, its child)."""

    def signal(self, run_id: str, name: str, data: object) -> RunState:
        """Deliver a signal (once per name) and wake the run if it waits for it.

        Raises:
            NotFoundError: no such run. ConflictError: it ended, or the name was sent.
        """

    def read_signal(self, run_id: str, name: str) -> SignalRecord | None:
        """The signal ``name`` delivered to a run, if any."""

    def sweep_waits(self) -> int:
        """Wake waiting runs whose signal or child came without waking them."""

    def cancel(self, run_id: str) -> RunState:
        """End a pending or leased run as cancelled, fencing its owner.

        Raises:
            NotFoundError: no such run. ConflictError: it already ended.
        """

    def compact(self, state: RunState, *, keep_outputs: bool) -> None:
        """Merge an ended run's journals into one file (atomic replace; best effort)."""

    def delete(self, state: RunState) -> None:
        """Remove an ended run (atomically, by one durable rename) and free its keys."""

    def sweep_tmp(self, older_than: float = TMP_MAX_AGE) -> int:
        """Remove temp files and deleted-run leftovers older than ``older_than`` seconds."""

    def notify(self, run_id: str, *, throttle: float = 0.0) -> None:
        """Tell watchers a run changed (a hint, never synced)."""

    def changes(self, cursor: str | None) -> tuple[list[str] | None, str]:
        """Run ids changed since ``cursor`` (None: reload everything), and the next cursor."""


class FileStore:
    """A root directory of plain files (see the module docstring for its parts). The
    methods are those of :class:`Store`, documented there."""

    def __init__(self, root: str, *, fsync: bool, clock: Clock = system_clock) -> None:
        self.layout = layout = Layout(root)
        self.root = layout.root
        self.fsync = fsync
        self.feed = ChangeFeed(layout)
        self.journals = JournalReader(layout, fsync=fsync)
        self.runs = RunReader(layout, self.journals)
        self.queue = RunQueue(layout, self.runs, fsync=fsync)
        self.waits = WaitIndex(layout, self.runs, fsync=fsync, clock=clock)
        self.keys = KeyBindings(layout, self.runs, fsync=fsync)
        self.schedules = ScheduleBook(layout, fsync=fsync)
        self.lifecycle = Lifecycle(
            layout,
            self.runs,
            self.journals,
            self.queue,
            self.keys,
            self.feed,
            self.waits,
            fsync=fsync,
            clock=clock,
        )
        self.claims = Claims(
            layout,
            self.runs,
            self.journals,
            self.queue,
            self.lifecycle,
            self.feed,
            self.waits,
            fsync=fsync,
            clock=clock,
        )

    def ensure_ready(self) -> None:
        self.lifecycle.ensure_ready()

    def is_read_only(self) -> bool:
        return files.is_read_only(self.root)

    def load(self, run_id: str) -> RunState | None:
        return self.runs.load(run_id)

    def run_ids(
        self, *, newest_first: bool = True, after: str | None = None, before: str | None = None
    ) -> Iterator[str]:
        return self.runs.run_ids(newest_first=newest_first, after=after, before=before)

    def journal(self, state: RunState) -> JournalView:
        return self.journals.read(state)

    def lease_expiry(self, state: RunState) -> float:
        return self.claims.lease_expiry(state)

    def owner_alive(self, state: RunState) -> bool:
        return self.claims.owner_alive(state)

    def create_run(
        self,
        record: RunRecord,
        *,
        coalesce: bool,
        queue: bool = False,
        replayed: Sequence[dict[str, Any]] = (),
    ) -> tuple[RunState, str]:
        return self.lifecycle.create(record, coalesce=coalesce, queue=queue, replayed=replayed)

    def queue_ahead(self, state: RunState) -> RunState | None:
        return self.runs.queue_ahead(state)[0]

    def open_batch(self, batch_id: str | None) -> None:
        self.runs.open_batch(batch_id)

    def commit_batch(self, batch_id: str) -> None:
        self.lifecycle.commit_batch(batch_id)

    def queued(self, blocked: set[str] | None = None) -> Iterator[QueueEntry]:
        self.waits.release_due()
        return self.queue.entries(blocked)

    def try_claim(
        self, entry: QueueEntry, owner: str, lease_duration: float, blocked_keys: set[str]
    ) -> Claim | None:
        return self.claims.try_claim(entry, owner, lease_duration, blocked_keys)

    def end(self, state: RunState, after_gen: int, end: EndState) -> RunState | None:
        return self.lifecycle.end(state, after_gen, end)

    def wait(self, state: RunState, gen: int, wait: WaitState) -> RunState | None:
        return self.lifecycle.wait(state, gen, wait)

    def is_due(self, state: RunState) -> bool:
        return self.waits.is_due(state)

    def signal(self, run_id: str, name: str, data: object) -> RunState:
        return self.lifecycle.signal(run_id, name, data)

    def read_signal(self, run_id: str, name: str) -> SignalRecord | None:
        return self.lifecycle.read_signal(run_id, name)

    def sweep_waits(self) -> int:
        return self.waits.sweep()

    def cancel(self, run_id: str) -> RunState:
        return self.lifecycle.cancel(run_id)

    def compact(self, state: RunState, *, keep_outputs: bool) -> None:
        self.lifecycle.compact(state, keep_outputs=keep_outputs)

    def delete(self, state: RunState) -> None:
        self.lifecycle.delete(state)

    def sweep_tmp(self, older_than: float = TMP_MAX_AGE) -> int:
        return self.lifecycle.sweep_tmp(older_than)

    def notify(self, run_id: str, *, throttle: float = 0.0) -> None:
        self.feed.notify(run_id, throttle=throttle)

    def changes(self, cursor: str | None) -> tuple[list[str] | None, str]:
        return self.feed.changes(cursor)
