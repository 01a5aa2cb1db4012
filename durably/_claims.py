"""Claims and leases: who executes a run, and how a dead or stalled owner is taken over.

A claim of generation ``g`` is the publish of the run's next state file with a
:class:`~durably._records.ClaimState` (first writer wins), after the journal ``j.<g>``
it will append to was created, so the claim's single directory fsync makes both names
durable. The claim carries the valid length of every earlier journal (its *cut*).

One rule for leases, on one host or several: **an expired lease is taken over, and a
taken-over owner is fenced.** An owner renews its lease by touching ``j.<g>`` (its
heartbeat); a lease not renewed for its duration has expired, and another worker may
claim the run (publishing its next state fences the old owner: its next step raises
``LeaseLostError``). On the owner's own host there is also a faster signal: the owner
holds a record lock on byte ``g`` of the run's ``lock`` file, which the kernel drops when
the process dies, so a dead owner's run is taken over at once, while a live but stalled
one (stopped, frozen in a debugger, a C extension holding the GIL) is taken over when its
lease expires. Each generation locks its own byte, so the new owner never waits for the
old one.

A keyed run is claimed only while its concurrency key is free. The key's execution chain
``keys/x/<key>`` (one ``link()`` decides, across hosts) names the run executing it; its
claimer holds byte ``n`` (the slot's number) of ``locks/x-<key>`` while it claims and
executes, so same-host claimers see a claim in flight. The slot is the claim's state file
itself, staged once and linked twice (first as the slot, then as ``s.<n>``), and the
claimer remembers it: its next claim of the key reads neither the chain nor the slot (a
slot published meanwhile elsewhere makes that claim's ``link()`` fail). A key held by a run whose lease
expired is freed only after that run is fenced (released, or claimed by this claimer);
a key whose run was ended by another process (a cancel, a timeout) stays held until the
execution that held it stopped: its owner frees the slot when it stops, or its lease
expires.
"""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import logging
import os
import threading
import time

from . import _chain as chain
from . import _files as files
from . import _framing as framing
from . import _locks as locks
from . import _records as records
from ._errors import StoreError
from ._feed import ChangeFeed
from ._ids import is_valid_id
from ._journals import JournalReader
from ._layout import COMPACTED, NO_KEY, RUN_LOCK, Layout, journal_name, state_name
from ._lifecycle import Lifecycle
from ._queue import QueueEntry, RunQueue
from ._records import Clock, EndState, ExecSlot, RunState
from ._runs import RunReader
from ._waits import WaitIndex

log = logging.getLogger("durably")

HEADS_KEPT = 1024
"""How many concurrency keys' execution slots a process remembers (``Claims._remember_head``)."""


@dataclasses.dataclass(frozen=True, slots=True)
class _ExecKey:
    """A concurrency key taken for execution: its lock file (byte ``slot`` is ours), its
    chain, and the slot to publish with the claim."""

    lock: str
    chain: str
    slot: int
    hash: str


class _Key(enum.Enum):
    FREE = "free"
    BUSY = "busy"


class Claim:
    """A lease this process holds on one run: generation ``gen``, state file ``s.<n>``.

    The owner appends to its journal while the next state file does not exist; whoever
    publishes that file (a canceller, a claimer taking over, a run timeout) fences it.
    """

    def __init__(
        self,
        state: RunState,
        journal: framing.JournalWriter,
        *,
        claims: Claims,
        key: _ExecKey | None,
        owner: str,
        lease_duration: float,
    ) -> None:
        self.state = state
        self.run_id = state.run_id
        self.gen = state.generation
        self.owner = owner
        self.lease_duration = lease_duration
        self._journal = journal
        self._claims = claims
        self._next_state = claims.layout.run_file(state.run_id, state_name(state.head_n + 1))
        self._run_lock = claims.layout.run_file(state.run_id, RUN_LOCK)
        self._key = key
        self._released = False

    def fenced(self) -> bool:
        """True once another writer decided the next state (cancel, or a new claim). One stat."""
        return os.path.exists(self._next_state)

    def fence(self) -> records.StateRecord | None:
        """The state that fenced this claim, if any (None also while it cannot be read)."""
        data = records.read_json(self._next_state)
        return None if data is None else records.parse_state(data)

    def append(self, entry: dict[str, object], *, sync: bool) -> None:
        """Append a journal entry (from ``_entries``); fdatasync it when ``sync``.

        Raises:
            StoreError: the write or the sync failed; the entry is not acknowledged.
        """
        self._journal.append(entry, sync=sync)

    def heartbeat(self) -> None:
        """Renew the lease: move the journal's mtime forward (what other hosts read).

        Raises:
            StoreError: the heartbeat could not be written.
        """
        self._journal.touch()

    def release(self) -> None:
        """Close the journal, free the concurrency key if another process ended the run,
        and drop the locks (idempotent)."""
        if self._released:
            return
        self._released = True
        try:
            self._journal.close()
        except OSError as exc:  # NFS reports deferred write errors here; every append was synced
            log.warning("closing journal %s failed: %s", self._journal.path, os.strerror(exc.errno or 0))
        finally:  # the locks go whatever happens: a kept lock would strand the run
            try:
                if self._key is not None:
                    self._free_key(self._key)
            finally:
                if self._key is not None:
                    locks.unlock(self._key.lock, self._key.slot)
                locks.unlock(self._run_lock, self.gen)

    def _free_key(self, key: _ExecKey) -> None:
        """Tell other hosts this execution stopped, if the run was ended by another
        process (a cancel): until then they count the key as held. Best effort: the
        lease's expiry frees the key too."""
        c = self._claims
        # Usually the owner's own end: this process remembers it (an end never changes),
        # so the state file that fenced the claim is not read again.
        ended = c.runs.remembered_end(self.run_id)
        fence = ended.head if ended is not None and ended.head_n == self.state.head_n + 1 else self.fence()
        if not (isinstance(fence, EndState) and fence.owner is None):
            return
        c.forget_head(key.hash)
        try:
            chain.publish(
                c.layout.root,
                c.layout.tmp,
                key.chain,
                key.slot + 1,
                ExecSlot.freed(self.run_id),
                sync=c.fsync,
            )
        except (OSError, StoreError) as exc:
            log.warning("could not free the concurrency key of run %s: %s", self.run_id, exc)


class Claims:
    """Claiming runs of one root, and judging leases."""

    def __init__(
        self,
        layout: Layout,
        runs: RunReader,
        journals: JournalReader,
        queue: RunQueue,
        lifecycle: Lifecycle,
        feed: ChangeFeed,
        waits: WaitIndex,
        *,
        fsync: bool,
        clock: Clock,
    ) -> None:
        self.layout = layout
        self.runs = runs
        self.journals = journals
        self.queue = queue
        self.lifecycle = lifecycle
        self.feed = feed
        self.waits = waits
        self.fsync = fsync
        self.clock = clock
        self._heads: dict[str, tuple[int, ExecSlot]] = {}
        self._heads_lock = threading.Lock()

    # -- leases ------------------------------------------------------------------------

    def lease_expiry(self, state: RunState) -> float:
        """Epoch seconds at which a leased run's lease ends (last heartbeat + lease)."""
        claim = state.claim
        if claim is None:
            return 0.0
        at = records.parse_time(claim.at)
        beat = at.timestamp() if at else 0.0
        return max(beat, self.journals.heartbeat(state.run_id, state.generation)) + claim.lease

    def owner_alive(self, state: RunState) -> bool:
        """Is the owner of a leased run still executing it, within its lease?

        A lease not renewed for its duration has expired, on any host: its owner is
        taken over even if its process lives (stalled). On the owner's host, a free
        record lock on its generation's byte says it died: taken over at once.
        """
        claim = state.claim
        if claim is None:
            return False
        lock = self.layout.run_file(state.run_id, RUN_LOCK)
        if claim.host == locks.HOST and locks.held_here(lock, claim.gen):
            return True  # this process executes it
        if time.time() >= self.lease_expiry(state):
            return False
        if claim.host == locks.HOST:
            return locks.is_locked_elsewhere(lock, root=self.layout.root, offset=claim.gen)
        return True

    # -- claiming ----------------------------------------------------------------------

    def try_claim(
        self, entry: QueueEntry, owner: str, lease_duration: float, blocked_keys: set[str]
    ) -> Claim | None:
        """Claim one queued run if it is claimable, or the run it is queued behind; None
        if neither is.

        Claimable: pending, waiting with its wait over, or leased by an owner that is gone
        or whose lease expired; and, for a run queued on a concurrency key, the run it is
        queued behind has ended. A waiting run whose wait is not over is parked (its
        marker moves to ``wait/``). A blocked key is added to ``blocked_keys`` and its
        runs are skipped for the rest of the pass without being read, never waited on (a
        blocked run never blocks runs behind it with other keys). A queued run whose
        predecessor has not ended blocks its queue (its job and key) for the pass, and
        the predecessor is tried instead: its id may sort after its successor's (two
        triggers raced, or another host's clock), and it must not wait for itself.
        """
        if entry.blocked(blocked_keys):
            return None  # known blocked in this pass: not even read (10,000 queued stay cheap)
        state = self.runs.load(entry.run_id)
        tried = {entry.run_id}
        while True:
            if not self._claimable(entry, state, blocked_keys) or state is None:
                return None
            ahead, ended = self._ahead(state)
            if ahead is None:
                break
            blocked_keys.add(entry.queue)
            if ahead.run_id in tried:
                return None  # a cycle: only a hand-made record can make one
            if ahead.status == "waiting":
                if not self.waits.is_due(ahead):
                    return None  # it waits to start (or sleeps): so does its queue
                self.waits.unpark(ahead)  # due: claimed from queue/ like any other
            tried.add(ahead.run_id)
            entry, state = QueueEntry.of(ahead.record), ahead
        return self._claim(entry, state, owner, lease_duration, blocked_keys, ended=ended)

    def _ahead(self, state: RunState) -> tuple[RunState | None, RunState | None]:
        """The first run ahead of a queued run that has not ended (None: its turn came),
        and the ended run right ahead of it if one was read. A run that started once is
        past this check for good (an ended run never changes again)."""
        if state.record.after is None or state.generation:
            return None, None
        return self.runs.queue_ahead(state)

    def _claim(
        self,
        entry: QueueEntry,
        state: RunState,
        owner: str,
        lease_duration: float,
        blocked_keys: set[str],
        *,
        ended: RunState | None,
    ) -> Claim | None:
        """Claim a run found claimable: take its concurrency key (if any), its lock byte,
        and publish its claim. ``ended``: the ended run it was queued behind, if read
        (usually the key's last holder: not read twice)."""
        run_id, key_hash = entry.run_id, entry.key_hash
        key = None
        if key_hash != NO_KEY:
            key = self._take_key(key_hash, state, ended)
            if key is None:
                blocked_keys.add(key_hash)
                return None
        gen = state.generation + 1
        run_lock = self.layout.run_file(run_id, RUN_LOCK)
        claim = None
        try:
            if locks.try_lock(run_lock, root=self.layout.root, offset=gen):
                try:
                    claim = self._claim_locked(run_id, gen, owner, lease_duration, key)
                finally:
                    if claim is None:
                        locks.unlock(run_lock, gen)
        finally:
            if claim is None and key is not None:
                locks.unlock(key.lock, key.slot)
        return claim

    def _claimable(self, entry: QueueEntry, state: RunState | None, blocked_keys: set[str]) -> bool:
        """Whether a queued run may be claimed now (see :meth:`try_claim`); tidies the
        markers of runs that ended, never appeared or wait."""
        if state is None:
            self.queue.drop_stale(entry.run_id)
            return False
        if state.is_terminal:
            self.queue.remove(state)
            return False
        if state.status == "waiting" and not self.waits.is_due(state):
            self.waits.park(state)
            return False
        if state.status == "leased" and self.owner_alive(state):
            if entry.key_hash != NO_KEY:
                blocked_keys.add(entry.key_hash)
            return False
        return entry.key_hash not in blocked_keys

    def _take_key(self, key_hash: str, candidate: RunState, ended: RunState | None) -> _ExecKey | None:
        """Take a concurrency key for execution: lock the byte of the slot to publish
        with the claim; None if the key is busy. A run holding the key past its lease is
        fenced first (released), unless it is the candidate itself (the claim fences it)."""
        key_chain = self.layout.exec_chain(key_hash)
        key_lock = self.layout.exec_lock(key_hash)
        with self._heads_lock:
            head = self._heads.get(key_hash)
        slot: ExecSlot | None
        if head is not None:  # the slot this process published last: see :meth:`_remember_head`
            n, slot = head
        else:
            n, data = chain.head(key_chain)
            slot = records.parse_exec_slot(data)
        holder = self._key_holder(key_lock, key_chain, n, slot, candidate.run_id, ended)
        if holder is _Key.BUSY:
            return None
        if not locks.try_lock(key_lock, root=self.layout.root, offset=n + 1):
            self.forget_head(key_hash)
            return None  # a claimer of this host is taking the next slot
        if (
            isinstance(holder, RunState)
            and holder.run_id != candidate.run_id
            and self.lifecycle.release(holder, "its concurrency key was taken over") is None
        ):
            locks.unlock(key_lock, n + 1)
            return None  # its state moved on meanwhile: look again next time
        return _ExecKey(key_lock, key_chain, n + 1, key_hash)

    def _remember_head(self, key: _ExecKey, slot: ExecSlot) -> None:
        """Remember the slot this process just published as its key's head, so that the
        next claim of the key reads neither the chain nor the slot.

        Safe however stale it gets: a claim publishes the next slot only if that slot is
        free and no higher one exists after its ``link()`` (``_chain.publish``), which
        proves the remembered slot was the head all along (the head never goes backwards,
        and a slot is rewritten only after a higher one exists); the holder it names is
        judged from the run's state, read at that time as before. A publish that fails
        forgets it, and so does anything that moves the chain on from this process."""
        with self._heads_lock:
            self._heads[key.hash] = (key.slot, slot)
            while len(self._heads) > HEADS_KEPT:
                del self._heads[next(iter(self._heads))]

    def forget_head(self, key_hash: str) -> None:
        """Read key ``key_hash``'s chain again at its next claim (see :meth:`_remember_head`)."""
        with self._heads_lock:
            self._heads.pop(key_hash, None)

    def _key_holder(
        self,
        key_lock: str,
        key_chain: str,
        n: int,
        slot: ExecSlot | None,
        candidate: str,
        ended: RunState | None = None,
    ) -> _Key | RunState:
        """Who holds a key whose execution chain's head is slot ``n``: nobody (FREE), a
        live execution or a run that waits (BUSY: a started run keeps its key while it
        waits; FREE for the waiting run itself), or a run whose owner is gone or past its
        lease (the run, to fence before the key is taken). ``ended``: an ended run already
        read by the claimer, used instead of reading it again if the slot names it."""
        if slot is None or not is_valid_id(slot.run):
            return _Key.FREE
        # An ended run read a moment ago reads the same now (an end never changes).
        state = ended if ended is not None and ended.run_id == slot.run else self.runs.load_ended(slot.run)
        if state is None:
            return _Key.FREE
        if state.generation < slot.gen:  # its claim is not published (yet)
            return _Key.BUSY if self._slot_held(key_lock, key_chain, n, slot, since_slot=True) else _Key.FREE
        end = state.end
        if end is not None:
            if end.owner is not None or end.gen != slot.gen:
                return _Key.FREE  # its owner ended it: nothing of it runs any more
            # Ended by another process (a cancel) while this slot's execution ran: held
            # until that execution stopped (it frees the slot) or its lease expired.
            return _Key.BUSY if self._slot_held(key_lock, key_chain, n, slot, since_slot=False) else _Key.FREE
        if state.claim is not None:
            return _Key.BUSY if self.owner_alive(state) else state
        if state.wait is not None:
            return _Key.FREE if state.run_id == candidate else _Key.BUSY
        return _Key.FREE  # pending again (released)

    def _slot_held(self, key_lock: str, key_chain: str, n: int, slot: ExecSlot, *, since_slot: bool) -> bool:
        """Whether the execution that published slot ``n`` may still be running: on its
        host, its claimer holds the slot's byte of the key lock; elsewhere, the slot (a
        claim in flight) or the journal of its generation (an execution) was touched
        within its lease."""
        if slot.host == locks.HOST and not (
            locks.held_here(key_lock, n)
            or locks.is_locked_elsewhere(key_lock, root=self.layout.root, offset=n)
        ):
            return False
        beat = chain.slot_mtime(key_chain, n)
        if not since_slot:
            beat = max(beat, self.journals.heartbeat(slot.run, slot.gen))
        return time.time() < beat + slot.lease

    def _publish_slot(self, key: _ExecKey, slot: ExecSlot, tmp_fd: int, staged: str) -> bool:
        """Publish the execution slot of a claim, before the claim: another name of the
        claim's state file, staged as ``staged``. False if another claimer published it
        first."""
        won = False
        try:
            won = chain.link(self.layout.root, key.chain, key.slot, tmp_fd, staged, sync=self.fsync)
        finally:
            if won:
                self._remember_head(key, slot)
            else:
                self.forget_head(key.hash)
        return won

    def _claim_locked(
        self, run_id: str, gen: int, owner: str, lease_duration: float, key: _ExecKey | None
    ) -> Claim | None:
        state = self.runs.load(run_id)
        if state is None or state.is_terminal or state.generation + 1 != gen:
            return None  # ended, or claimed by another host meanwhile
        if state.claim is not None and self.owner_alive(state):
            return None
        cuts = state.cuts
        if state.generation:
            cuts[str(state.generation)] = self.journals.valid_length(run_id, state.generation)
        new = records.claim_state(
            gen=gen,
            at=records.now_iso(),  # leases use real time; what users read, the clock's
            started_at=state.started_at or records.iso(self.clock()),
            owner=owner,
            host=locks.HOST,
            lease=lease_duration,
            cut=cuts,
        )
        # A keyed claim's state file is also its execution slot: one file, written and
        # synced once, linked first as the key's next slot, then as the run's next state.
        slot = None if key is None else ExecSlot(run=run_id, gen=gen, host=new.host, lease=new.lease)
        body = records.state_bytes(new, run=None if slot is None else run_id)
        run_dir = self.layout.run_dir(run_id)
        n = state.head_n + 1
        journal = None
        won = False
        try:  # one walk to the run directory and to tmp/ serves both names
            with files.opened_dirs(self.layout.root, run_dir, self.layout.tmp) as (run_fd, tmp_fd):
                staged = files.stage(tmp_fd, body, sync=self.fsync)
                try:
                    if (
                        key is not None
                        and slot is not None
                        and not self._publish_slot(key, slot, tmp_fd, staged)
                    ):
                        return None  # another claimer took the key first
                    journal = framing.JournalWriter(os.path.join(run_dir, journal_name(gen)), dir_fd=run_fd)
                    won = files.link_once(tmp_fd, staged, run_fd, state_name(n), sync=self.fsync)
                    if not won:
                        journal.close()
                        _drop_recreated_journal(run_fd, gen)
                finally:
                    with contextlib.suppress(OSError):
                        files.remove_file(tmp_fd, staged)
        except OSError as exc:
            raise files.wrap_os_error(exc, "claim run", run_dir) from exc
        finally:
            if not won and journal is not None:
                journal.close()
        if not won:
            return None
        self.feed.notify(run_id)
        return Claim(
            RunState(run_id, state.record, n, new),
            journal,
            claims=self,
            key=key,
            owner=owner,
            lease_duration=lease_duration,
        )


def _drop_recreated_journal(run_fd: int, gen: int) -> None:
    """Remove the empty ``j.<gen>`` a losing claimer created in a run that ended and was
    compacted since it read the run's state (another host's claimer, which no lock
    excludes, won that generation, finished and merged its journals). Where the run was
    not compacted the file is the winner's (or compaction removes it later): left alone.
    """
    with contextlib.suppress(OSError):
        os.stat(COMPACTED, dir_fd=run_fd, follow_symlinks=False)
        name = journal_name(gen)
        if os.stat(name, dir_fd=run_fd, follow_symlinks=False).st_size == 0:
            os.unlink(name, dir_fd=run_fd)
