"""The life of a run on disk: created, waiting, signalled, ended (completed, failed or
cancelled), compacted, deleted.

Every state change is the publish of the run's next state file: a temp file in ``tmp/``,
fsynced, ``link()``-ed to ``s.<n>`` (``EEXIST``: another writer decided first), then the
run directory fsynced. So exactly one writer decides each state (invariants 3
and 4) and readers never see a partial one (invariant 1).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import time
from collections.abc import Sequence
from typing import Any

from . import _doorbell as doorbell
from . import _entries as entries
from . import _files as files
from . import _framing as framing
from . import _locks as locks
from . import _records as records
from ._errors import ConflictError, DurablyError, NotFoundError, StoreError
from ._feed import ChangeFeed
from ._journals import JournalReader
from ._keys import KeyBindings, KeyTaken
from ._layout import COMPACTED, REPLAYED, RUN_RECORD, Layout, journal_name, signal_name, state_name
from ._queue import RunQueue
from ._records import Clock, EndState, ReleaseState, RunRecord, RunState, SignalRecord, WaitState
from ._runs import RunReader
from ._waits import WaitIndex

log = logging.getLogger("durably")

TMP_MAX_AGE = 3600.0
"""Temp files and deleted-run leftovers older than this are swept by idle maintenance."""


class Lifecycle:
    """Creating, ending, compacting and deleting the runs of one root."""

    def __init__(
        self,
        layout: Layout,
        runs: RunReader,
        journals: JournalReader,
        queue: RunQueue,
        keys: KeyBindings,
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
        self.keys = keys
        self.feed = feed
        self.waits = waits
        self.fsync = fsync
        self.clock = clock
        self._ready = False

    def ensure_ready(self) -> None:
        """Create the root's directories on first write (construction does no I/O)."""
        if self._ready:
            return
        layout = self.layout
        try:
            files.ensure_dir(layout.root, sync=self.fsync)
            existing = records.read_json(layout.format)
            for d in layout.top_dirs():
                os.close(files.open_dir(layout.root, d, create=True, sync=self.fsync))
            if existing is None:
                files.publish_path(
                    layout.root, layout.tmp, layout.format, records.format_bytes(), sync=self.fsync
                )
        except OSError as exc:
            raise files.wrap_os_error(exc, "initialise the durably root", layout.root) from exc
        self._ready = True

    # -- creating ----------------------------------------------------------------------

    def create(
        self,
        record: RunRecord,
        *,
        coalesce: bool,
        queue: bool = False,
        replayed: Sequence[dict[str, Any]] = (),
    ) -> tuple[RunState, str]:
        """Create a pending run, honouring its idempotency and concurrency keys; with
        ``queue``, behind the concurrency key's latest run (``RunRecord.after``).

        Returns the run and its disposition (``created``, ``idempotent``, ``coalesced``).
        The run becomes visible when ``run.json`` is written, after its keys and queue
        marker, so a crash at any point leaves either no run or a complete one (a key
        naming a run that never appeared is stale and is replaced by the next trigger).
        ``replayed``: the journal entries a resumed run starts from (``replay.jsonl``),
        written before ``run.json``.

        Raises:
            ConflictError: a pending run holds the concurrency key (and neither
                ``coalesce`` nor ``queue``).
        """
        self.ensure_ready()
        taken: list[str] = []
        try:
            for path in self.keys.trigger_locks(record):
                locks.lock(path, root=self.layout.root)  # may fail (EMFILE): release the ones taken
                taken.append(path)
            for _attempt in range(6):
                existing = self.keys.bound_run(record)
                if existing is not None:
                    self.queue.ensure(existing)
                    return existing, "idempotent"
                if queue:
                    after, head = self.keys.queue_tail(record)
                    record = dataclasses.replace(record, after=after)
                else:
                    pending, head = self.keys.pending_run(record, coalesce=coalesce)
                    if pending is not None:
                        self.queue.ensure(pending)
                        return pending, "coalesced"
                try:
                    self.keys.bind(record, head)
                except KeyTaken:
                    # Another host published a key between our check and our publish: look
                    # again, now that its file exists (idempotent, coalesced or a conflict).
                    continue
                except OSError as exc:
                    raise files.wrap_os_error(exc, "create run", self.layout.run_dir(record.id)) from exc
                return self._write(record, replayed), "created"
            raise ConflictError(
                f"the keys of job {record.job_name!r} keep changing under concurrent triggers"
            )
        finally:
            for path in reversed(taken):
                locks.unlock(path)

    def _write(self, record: RunRecord, replayed: Sequence[dict[str, Any]]) -> RunState:
        run_id = record.id
        run_dir = self.layout.run_dir(run_id)
        try:
            # All names first, then the fsyncs: on ext4 the first fsync commits the one
            # journal transaction holding every name, and the others cost next to nothing.
            # (A new shard directory is fsynced into its parent at once: once a second.)
            # A delayed run's marker goes straight into wait/: claimers never read it early.
            state = RunState(run_id, record, 0, None)
            if record.wake_at is None:
                marker_dir, marker = self.layout.queue, self.queue.name(record)
            else:
                marker_dir, marker = self.layout.wait, self.waits.marker(state)
            with files.opened_dirs(
                self.layout.root, os.path.dirname(run_dir), marker_dir, create=True, sync=self.fsync
            ) as (shard_fd, queue_fd):
                made = files.make_subdir(shard_fd, run_id)  # False: a crashed trigger's leftover
                run_fd = files.open_subdir(shard_fd, run_id, run_dir)  # refuses a symlink
                try:
                    if made:
                        files.own_only(run_fd, 0o700)  # whatever the umask
                    files.create_file(queue_fd, marker, b"", sync=False)
                    if replayed:  # whole (and synced) before run.json makes the run visible
                        body = b"".join(framing.frame(entry) for entry in replayed)
                        files.create_file(run_fd, REPLAYED, body, sync=self.fsync)
                    files.create_file(run_fd, RUN_RECORD, record.to_bytes(), sync=self.fsync)
                    if self.fsync:
                        for fd in (queue_fd, run_fd, shard_fd):
                            files.sync_dir(fd)
                finally:
                    os.close(run_fd)
        except OSError as exc:
            raise files.wrap_os_error(exc, "create run", run_dir) from exc
        if record.wake_at is not None:
            self.waits.noted(state)
        self.feed.notify(run_id)
        return state

    def commit_batch(self, batch_id: str) -> None:
        """Publish the commit mark of a ``batch_trigger``: every run of the batch becomes
        visible at once."""
        try:
            with files.opened_dir(
                self.layout.root, self.layout.batches, create=True, sync=self.fsync
            ) as batches_fd:
                files.create_file(batches_fd, batch_id, b"", sync=self.fsync)
                if self.fsync:
                    files.sync_dir(batches_fd)
        except OSError as exc:
            raise files.wrap_os_error(exc, "commit batch", self.layout.batches) from exc
        self.runs.committed(batch_id)

    # -- ending ------------------------------------------------------------------------

    def _publish_next(
        self, state: RunState, after_gen: int, rec: EndState | ReleaseState | WaitState, what: str
    ) -> RunState | None:
        """Publish ``rec`` as the run's next state file (first writer wins; None if another
        writer won), its time, generation and cuts filled in: the valid length of the
        journal of ``after_gen`` is fixed, so nothing a stale owner appends later counts."""
        cuts = state.cuts
        if after_gen:
            cuts[str(after_gen)] = self.journals.valid_length(state.run_id, after_gen)
        rec = dataclasses.replace(
            rec, gen=after_gen, at=records.iso(self.clock()), started_at=state.started_at, cut=cuts
        )
        path = self.layout.run_file(state.run_id, state_name(state.head_n + 1))
        try:
            won = files.publish_path(
                self.layout.root, self.layout.tmp, path, records.state_bytes(rec), sync=self.fsync
            )
        except OSError as exc:
            raise files.wrap_os_error(exc, what, self.layout.run_dir(state.run_id)) from exc
        if not won:
            return None
        self.feed.notify(state.run_id)
        return RunState(state.run_id, state.record, state.head_n + 1, rec)

    def end(self, state: RunState, after_gen: int, end: EndState) -> RunState | None:
        """Publish the end of a run as its next state file; None if another writer won."""
        ended = self._publish_next(state, after_gen, end, "record the end of run")
        if ended is not None:
            self.runs.note_ended(ended)  # read next by the run queued behind it, if any
            self.queue.remove(ended)
            if state.status == "waiting":
                self.waits.remove(state)
            if ended.record.parent_id is not None:
                self._wake_parent(ended)
        return ended

    def _wake_parent(self, child: RunState) -> None:
        """A child run ended: wake its parent if it waits for it (best effort: the sweep of
        waits wakes it otherwise)."""
        try:
            parent = self.runs.load(child.record.parent_id or "")
            if parent is not None and parent.wait is not None and parent.wait.child == child.run_id:
                self.waits.unpark(parent)
                doorbell.ring(self.layout.root)
        except DurablyError as exc:
            log.warning(
                "could not wake run %s after its child %s ended: %s",
                child.record.parent_id,
                child.run_id,
                exc,
            )

    def wait(self, state: RunState, gen: int, wait: WaitState) -> RunState | None:
        """Publish that a leased run waits (its owner, generation ``gen``, stops executing
        it); None if another writer decided the next state first. Its marker moves to
        ``wait/`` after the state is published: a crash in between leaves it in
        ``queue/``, where a claimer finds it waiting and parks it."""
        waiting = self._publish_next(state, gen, wait, "record the wait of run")
        if waiting is not None:
            self.waits.park(waiting)
        return waiting

    def signal(self, run_id: str, name: str, data: object) -> RunState:
        """Deliver signal ``name`` to a run (published once), and wake the run if it waits
        for it. The signal is written before the run's state is read again, and a parked
        run looks for its signal after parking: one of the two sees the other. A signal
        sent again is refused, and wakes the run too (if its first sender died between
        the two).

        Raises:
            NotFoundError: no such run.
            ConflictError: the run ended, or a signal of that name was already sent.
        """
        self.ensure_ready()
        state = self.runs.load(run_id)
        if state is None:
            raise NotFoundError(f"Run not found: {run_id}", run_id=run_id)
        if state.is_terminal:
            raise ConflictError(f"Cannot signal {state.status} run: {run_id}", run_id=run_id)
        path = self.layout.run_file(run_id, signal_name(name))
        body = SignalRecord(name=name, data=data, at=records.iso(self.clock())).to_bytes()
        try:
            won = files.publish_path(self.layout.root, self.layout.tmp, path, body, sync=self.fsync)
        except OSError as exc:
            raise files.wrap_os_error(exc, "signal run", path) from exc
        if not won:
            # Delivered already; its sender may have died before waking the waiter (the
            # sweep of waits would, within a minute): sending it again wakes it now.
            self._wake_signalled(run_id, name)
            raise ConflictError(f"Signal {name!r} was already sent to run {run_id}", run_id=run_id)
        self.feed.notify(run_id)
        return self._wake_signalled(run_id, name) or state

    def _wake_signalled(self, run_id: str, name: str) -> RunState | None:
        """Wake a run if it waits for signal ``name`` (delivered); its state."""
        state = self.runs.load(run_id)
        if state is not None and state.wait is not None and state.wait.signal == name:
            self.waits.unpark(state)
            doorbell.ring(self.layout.root)
        return state

    def read_signal(self, run_id: str, name: str) -> SignalRecord | None:
        """The signal ``name`` delivered to a run, if any."""
        return records.parse_signal(records.read_json(self.layout.run_file(run_id, signal_name(name))))

    def release(self, state: RunState, reason: str) -> RunState | None:
        """Take a leased run's lease away: its owner is fenced and the run is pending
        again (None if another writer decided the next state first)."""
        return self._publish_next(state, state.generation, records.release(reason), "release run")

    def cancel(self, run_id: str) -> RunState:
        """Cancel a pending or leased run at once; its owner is fenced by the end state.

        Raises:
            NotFoundError: no such run.
            ConflictError: the run is already terminal.
        """
        self.ensure_ready()  # refuses a root whose tmp/ is a planted symlink
        for _ in range(100):
            state = self.runs.load(run_id)
            if state is None:
                raise NotFoundError(f"Run not found: {run_id}", run_id=run_id)
            if state.is_terminal:
                word = "already cancelled" if state.status == "cancelled" else state.status
                raise ConflictError(f"Cannot cancel {word} run: {run_id}", run_id=run_id)
            ended = self.end(state, state.generation, records.ending("cancelled"))
            if ended is not None:
                self._cancel_children(ended)
                return ended
        raise ConflictError(f"Cannot cancel run {run_id}: its state keeps changing", run_id=run_id)

    def _cancel_children(self, parent: RunState) -> None:
        """Cancel the active child runs of a cancelled run (those its journal names)."""
        if not parent.generation:
            return
        for _gen, entry in self.journals.read(parent).entries:
            if isinstance(entry, entries.ChildInvoked):
                with contextlib.suppress(ConflictError, NotFoundError):
                    self.cancel(entry.child)

    def compact(self, state: RunState, *, keep_outputs: bool) -> None:
        """Merge an ended run's journals into ``journal.jsonl`` (its last line a copy of the
        end state); drop outputs if asked."""
        view = self.journals.read(state)
        out = [
            framing.frame(entries.compacted_entry(entry, gen, keep_output=keep_outputs))
            for gen, entry in view.entries
        ]
        if state.end is not None:
            out.append(framing.frame(entries.run_ended(records.state_bytes(state.end))))
        run_dir = self.layout.run_dir(state.run_id)
        try:
            with files.opened_dirs(self.layout.root, run_dir, self.layout.tmp) as (run_fd, tmp_fd):
                files.replace_file(tmp_fd, run_fd, COMPACTED, b"".join(out), sync=self.fsync)
                for gen in range(1, state.generation + 1):
                    files.remove_file(run_fd, journal_name(gen))
                if state.record.resumed_from is not None:  # journal.jsonl holds its entries
                    files.remove_file(run_fd, REPLAYED)
        except (OSError, StoreError) as exc:
            log.warning("could not compact run %s: %s", state.run_id, exc)

    # -- deleting ----------------------------------------------------------------------

    def delete(self, state: RunState) -> None:
        """Remove every file of an ended run and free its keys.

        The run directory is first renamed into ``tmp/`` so it disappears atomically,
        and the rename is made durable (fsync of the shard); only then are its keys
        freed and its files removed. A crash in between leaves keys pointing at a run
        that no longer exists, which the next trigger of the key treats as stale; the
        reverse order could leave the run alive with its key free, and a second run
        could then be created under the same idempotency key. (Without the fsync first,
        a file system that does not commit directory changes in order could keep the
        key's removal, or the removal of the run's files, and lose the rename.)
        """
        self.ensure_ready()  # refuses a root whose queue/, locks/ or tmp/ is a planted symlink
        self.queue.remove(state)
        trash = f"del-{state.run_id}-{os.urandom(4).hex()}"
        run_dir = self.layout.run_dir(state.run_id)
        try:
            with files.opened_dirs(self.layout.root, os.path.dirname(run_dir), self.layout.tmp) as (
                shard_fd,
                tmp_fd,
            ):
                files.move(shard_fd, state.run_id, tmp_fd, trash, sync=False)
                if self.fsync:
                    with contextlib.suppress(OSError):
                        files.sync_dir(shard_fd)
        except FileNotFoundError:
            return
        except OSError as exc:
            raise files.wrap_os_error(exc, "delete run", run_dir) from exc
        self.keys.unbind(state.record)
        with (
            contextlib.suppress(OSError, StoreError),
            files.opened_dir(self.layout.root, self.layout.tmp) as tmp_fd,
        ):
            files.remove_tree(tmp_fd, trash, ignore_errors=True)  # never follows a link
        self.feed.notify(state.run_id)

    def sweep_tmp(self, older_than: float = TMP_MAX_AGE) -> int:
        """Remove temp files and deleted-run leftovers older than ``older_than`` seconds."""
        removed = 0
        cutoff = time.time() - older_than
        try:
            with files.opened_dir(self.layout.root, self.layout.tmp) as tmp_fd:
                for name, st in files.entries(tmp_fd):
                    if st.st_mtime >= cutoff:
                        continue
                    try:
                        files.remove_entry(tmp_fd, name)
                    except OSError as exc:  # a read-only root: nothing to do until it is not
                        log.debug("temp file %s not removed: %s", name, exc)
                        continue
                    removed += 1
        except FileNotFoundError:
            return removed
        except OSError as exc:
            raise files.wrap_os_error(exc, "clean up", self.layout.tmp) from exc
        return removed
