"""Key bindings of triggers: idempotency keys and a concurrency key's pending run.

- An idempotency key is a record ``keys/i/<hash>.json`` naming its run, published once,
  so even across hosts exactly one run is ever bound to a key (invariant 5).
- A concurrency key of a job is a slot chain ``keys/p/<hash>/`` (``_chain.py``) whose
  head names the key's latest run: a trigger that finds that run still pending conflicts
  (or coalesces onto it); otherwise it publishes the next slot, and one ``link()`` decides
  between racing triggers, on one host or several. A queued trigger
  (``coalesce="queue"``) publishes the next slot whatever the head's run is doing, and
  its run records the head's run (if it has not ended) as the one it starts after: so
  the runs of a queue form a list in the order their slots were published.

Same-host triggers of one key are serialised by a lock in ``locks/``. Key files are
named by a hash; the original key kept in the run's record is what tells a hash
collision (or a file copied by hand) from the run the key belongs to.
"""

from __future__ import annotations

import os
import time
from typing import Any

from . import _chain as chain
from . import _files as files
from . import _locks as locks
from . import _records as records
from ._errors import ConflictError, StoreError
from ._ids import is_valid_id
from ._layout import Layout
from ._records import KeyRecord, RunRecord, RunState
from ._runs import RunReader

KEY_GRACE = 60.0
"""Seconds a key record may name a run that is not written yet (its trigger is in flight)."""
REMOTE_WAIT = 10.0
"""Seconds a trigger waits for another host's trigger to write the run its key names."""


class KeyTaken(Exception):  # noqa: N818 - internal signal, never escapes the store
    """A key file was published by another trigger between our check and our publish."""


class KeyBindings:
    """The idempotency keys and pending-run chains of one root."""

    def __init__(self, layout: Layout, runs: RunReader, *, fsync: bool) -> None:
        self.layout = layout
        self.runs = runs
        self.fsync = fsync

    def trigger_locks(self, record: RunRecord) -> list[str]:
        """The same-host locks a trigger of ``record`` takes, in order."""
        out = []
        if record.idempotency_key is not None:
            out.append(self.layout.idempotency_lock(record.job_name, record.idempotency_key))
        if record.concurrency_key is not None:
            out.append(self.layout.pending_lock(record.job_name, record.concurrency_key))
        return out

    def _target(self, key_path: str, data: dict[str, Any] | None, *, remove_stale: bool) -> RunState | None:
        """The published run a key record (read from ``key_path``) points to.

        A key whose run does not exist was left by a trigger that died between the two
        (on this host the key lock we hold proves it), or belongs to a trigger on another
        host that is writing the run right now: that one is waited for, up to
        :data:`REMOTE_WAIT`. A stale idempotency key file is removed (``remove_stale``);
        a stale slot of a chain is simply superseded by the next one.
        """
        deadline = time.monotonic() + REMOTE_WAIT
        while True:
            key = records.parse_key(data)
            if key is None:
                return None  # no record (or a damaged one: bound_run decides)
            state = self.runs.load(key.run) if is_valid_id(key.run) else None
            if state is not None:
                return state
            remote = (key.host or locks.HOST) != locks.HOST
            if not remote or time.monotonic() > deadline or time.time() - files.mtime(key_path) > KEY_GRACE:
                if remove_stale:
                    files.remove_path(self.layout.root, key_path)
                return None
            time.sleep(0.01)  # another host's trigger is between its key and its run.json
            data = records.read_json(key_path)

    def bound_run(self, record: RunRecord) -> RunState | None:
        """The run ``record``'s idempotency key is bound to, if any (a stale key is removed).

        A key record that is missing or damaged (deleted by hand, a bad sector) is
        recovered from the copy kept in the key's trigger lock file, and repaired: a
        trigger never creates a second run because a key file was lost.

        Raises:
            ConflictError: the key file names a run that holds another key.
            StoreError: the key record is damaged and no copy names a run of the key.
        """
        key = record.idempotency_key
        if key is None:
            return None
        path = self.layout.idempotency_key(record.job_name, key)
        raw = files.read_bytes(path, files.MAX_RECORD_BYTES)
        data = None if raw is None else records.parse_json(raw, path)
        # Damaged only if what was read does not parse: a record missing at the read and
        # published by another host a moment later is not damage (it is read next time).
        damaged = raw is not None and data is None
        existing = None if damaged else self._target(path, data, remove_stale=True)
        if existing is None and data is None:
            existing = self._from_copy(record, key, path, damaged=damaged)
        if existing is not None:
            _check_owner(existing, "idempotency_key", record.job_name, key, path)
        return existing

    def _from_copy(self, record: RunRecord, key: str, path: str, *, damaged: bool) -> RunState | None:
        """The run the copy of a lost or damaged key record names (the record restored)."""
        lock = self.layout.idempotency_lock(record.job_name, key)
        try:  # through the lock's own descriptor: closing another would drop the lock
            copy = records.parse_key(records.parse_json(locks.read_note(lock), lock))
        except StoreError:
            copy = None
        state = self.runs.load(copy.run) if copy is not None and is_valid_id(copy.run) else None
        if (
            copy is not None
            and state is not None
            and state.record.job_name == record.job_name
            and state.record.idempotency_key == key
        ):
            write_key_record(self.layout, path, copy.to_bytes(), replace=damaged, fsync=self.fsync)
            return state
        if damaged:
            raise StoreError(
                f"idempotency key record {path} is damaged, and no copy of it names a run of key "
                f"{key!r} of job {record.job_name!r}: refusing to create a second run for the key "
                "(durably doctor --fix rebuilds key records from the runs)",
                path=path,
            )
        return None

    def _head(self, record: RunRecord) -> tuple[RunState | None, int, str]:
        """The key's latest run that has not ended, if any, the number of the head slot of
        ``record``'s concurrency-key chain, and the slot's path. That is the run the head
        slot names, or, if it was queued and cancelled before it started, the first run
        ahead of it that has not ended (the queue's live tail); None when the key's runs
        all ended (or the slot's run never appeared)."""
        key_chain = self.layout.pending_chain(record.job_name, record.concurrency_key or "")
        n, data = chain.head(key_chain)
        slot = os.path.join(key_chain, str(n))
        bound = self._target(slot, data, remove_stale=False)
        if bound is not None and bound.is_terminal:
            same = (bound.record.job_name, bound.record.concurrency_key) == (
                record.job_name,
                record.concurrency_key,
            )  # (a slot naming another key's run is refused below only while that run is live)
            bound = self.runs.queue_ahead(bound)[0] if same and not bound.generation else None
        return bound, n, slot

    def pending_run(self, record: RunRecord, *, coalesce: bool) -> tuple[RunState | None, int]:
        """The pending run bound to ``record``'s concurrency key (to coalesce onto), or
        None if the key is free; and the head slot of the key's chain that was read.

        Raises:
            ConflictError: the key is held by a pending run and ``coalesce`` is not set,
                or the key's slot names a run that holds another key.
        """
        key = record.concurrency_key
        if key is None:
            return None, -1
        bound, n, slot = self._head(record)
        if bound is None or not (bound.status == "pending" or bound.not_started):
            return None, n  # the key's run started (or never appeared): it is free
        # (a delayed run, waiting to start, is the key's pending run)
        _check_owner(bound, "concurrency_key", record.job_name, key, slot)
        if coalesce:
            return bound, n
        raise ConflictError(
            f'A pending run already exists for concurrency key "{key}" in job '
            f'"{record.job_name}". Use coalesce="skip" to return the existing run instead, '
            'or coalesce="queue" to run this one after it.'
        )

    def queue_tail(self, record: RunRecord) -> tuple[str | None, int]:
        """For a queued trigger (``coalesce="queue"``) of ``record``'s concurrency key: the
        run to start after (the key's latest run, pending, waiting or executing, while it
        has not ended; None if it ended or there is none), and the head slot read (the
        new run publishes the next one: the chain's head is always its queue's tail).

        Raises:
            ConflictError: the key's slot names a run that holds another key.
        """
        key = record.concurrency_key
        if key is None:
            return None, -1
        bound, n, slot = self._head(record)
        if bound is None:
            return None, n
        _check_owner(bound, "concurrency_key", record.job_name, key, slot)
        return bound.run_id, n

    def bind(self, record: RunRecord, pending_head: int) -> None:
        """Publish ``record``'s keys: its idempotency key, and slot ``pending_head + 1``
        of its concurrency key's chain (``pending_head`` from :meth:`pending_run`).

        Raises:
            KeyTaken: another trigger published a key first (nothing of ours remains).
        """
        body = KeyRecord(run=record.id, job=record.job_name, host=locks.HOST).to_bytes()
        idem_path = None
        if record.idempotency_key is not None:
            idem_path = self.layout.idempotency_key(record.job_name, record.idempotency_key)
            if not files.publish_path(self.layout.root, self.layout.tmp, idem_path, body, sync=self.fsync):
                raise KeyTaken
            # A copy beside the key's lock (held by this trigger): a lost or damaged key
            # record is recovered from it, so it never leads to a second run.
            locks.write_note(self.layout.idempotency_lock(record.job_name, record.idempotency_key), body)
        if record.concurrency_key is not None:
            key_chain = self.layout.pending_chain(record.job_name, record.concurrency_key)
            if not chain.publish(
                self.layout.root, self.layout.tmp, key_chain, pending_head + 1, body, sync=self.fsync
            ):
                if idem_path:
                    files.remove_path(self.layout.root, idem_path)  # ours, published just above
                raise KeyTaken

    def unbind(self, record: RunRecord) -> None:
        """Free the idempotency key of a deleted run.

        Under the key's trigger lock: a trigger that saw the run gone may already have
        bound the key to a new run; that run's key is never freed. (A concurrency key
        bound to an ended or missing run is free already: its chain stays.)
        """
        key = record.idempotency_key
        if key is None:
            return
        path = self.layout.idempotency_key(record.job_name, key)
        lock_path = self.layout.idempotency_lock(record.job_name, key)
        locks.lock(lock_path, root=self.layout.root)
        try:
            if records.key_run(records.read_json(path)) == record.id:
                files.remove_path(self.layout.root, path)
            if records.key_run(records.parse_json(locks.read_note(lock_path), lock_path)) == record.id:
                locks.write_note(lock_path, b"")
        finally:
            locks.unlock(lock_path)


def _check_owner(state: RunState, field: str, job: str, key: str, path: str) -> None:
    """Refuse a key file whose run holds another key (invariant 9).

    Raises:
        ConflictError: the run does not hold this key; the two are never merged.
    """
    rec = state.record
    held = rec.idempotency_key if field == "idempotency_key" else rec.concurrency_key
    if rec.job_name != job or held != key:
        raise ConflictError(
            f"key file {path} names run {state.run_id}, which holds another "
            f"{field.replace('_', ' ')}: a hash collision or a copied file; refusing to "
            "merge the two (durably doctor reports it)",
            run_id=state.run_id,
            path=path,
        )


def write_key_record(layout: Layout, path: str, body: bytes, *, replace: bool, fsync: bool) -> None:
    """Write a key record again (a lost one published, a damaged one replaced atomically)."""
    if not replace:
        files.publish_path(layout.root, layout.tmp, path, body, sync=fsync)
        return
    with files.opened_dirs(layout.root, layout.tmp, os.path.dirname(path)) as (tmp_fd, dir_fd):
        files.replace_file(tmp_fd, dir_fd, os.path.basename(path), body, sync=fsync)
