"""The store: runs as directories of files under one root. The engine never touches paths.

Layout (docs/architecture.md explains each choice and the invariant it serves)::

    ROOT/
      format.json                       {"v": 1, "format": "durably"}
      runs/<id[:6]>/<id[6:8]>/<id>/     one directory per run (ids sort by creation)
        run.json                        creation record, written once at trigger
        s.<n>                           state chain: s.<g> is the claim of generation g,
                                        s.<last gen + 1> the end (completed/failed/cancelled);
                                        each name is published once (link), first writer wins
        j.<g>                           journal of generation g: append-only framed records
                                        (step start/done/fail/cancel, logs, progress)
        lock                            record lock held by the executing process
      queue/<id>.<job hash>.<key hash>  one marker per run that is not terminal yet
      keys/i/<hash>.json                idempotency key -> run id (published once)
      keys/p/<hash>/<n>                 concurrency key -> its pending run: a slot chain
                                        (_chain.py), the highest slot is the binding
      keys/x/<hash>/<n>                 concurrency key -> the run executing it (slot chain)
      locks/                            lock files for short critical sections
      feed/<YYYYMMDDHH>.log             change feed: one run id per line, for watchers
      tmp/                              temp files for publish-once and replace

Fencing: the owner of generation g may commit steps to j.<g> only while s.<g+1> does not
exist; a claimer of g+1 or a canceller publishes s.<g+1> with the valid length of j.<g>
(``cut``), and readers ignore journal bytes past a cut. So a stale owner can never change
what a run's steps or state read as, and the next state is decided by one link().
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import shutil
import socket
import stat
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

from . import _chain as chain
from . import _files as files
from . import _locks as locks
from ._errors import ConflictError, NotFoundError
from ._ids import is_valid_id

log = logging.getLogger("durably")

HOST = socket.gethostname()
TERMINAL_KINDS = frozenset({"completed", "failed", "cancelled"})


def now_iso() -> str:
    """Current time as ISO-8601 UTC with milliseconds and ``Z`` (the original's format)."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_time(value: str | None) -> datetime | None:
    """Parse a stored timestamp."""
    if not value:
        return None
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


@dataclasses.dataclass
class RunState:
    """What the files of one run say, at one moment."""

    run_id: str
    record: dict[str, Any]
    head_n: int
    head: dict[str, Any] | None
    run_dir: str

    @property
    def status(self) -> str:
        """pending, leased, completed, failed or cancelled."""
        if self.head is None:
            return "pending"
        kind = str(self.head["kind"])
        return "leased" if kind == "claim" else kind

    @property
    def generation(self) -> int:
        """The latest lease generation (0 if never claimed)."""
        return 0 if self.head is None else int(self.head.get("gen", 0))

    @property
    def cuts(self) -> dict[str, int]:
        """Valid lengths of earlier journals, fixed by later claims or by the end."""
        return {} if self.head is None else dict(self.head.get("cut", {}))


@dataclasses.dataclass(frozen=True)
class _ExecKey:
    """A concurrency key taken for execution: its lock, its chain, the slot to publish."""

    lock: str
    chain: str
    slot: int


@dataclasses.dataclass
class JournalView:
    """The valid records of a run's journals, in order, with the generation of each."""

    records: list[tuple[int, dict[str, Any]]]
    mtime: float


class Claim:
    """A lease this process holds on one run, generation ``gen``."""

    def __init__(self, store: Store, state: RunState, gen: int, journal: files.Journal,
                 owner: str, lease_duration: float, key_lock: str | None) -> None:
        self.store = store
        self.state = state
        self.run_id = state.run_id
        self.gen = gen
        self.journal = journal
        self.owner = owner
        self.lease_duration = lease_duration
        self.key_lock = key_lock
        self.next_state_path = os.path.join(state.run_dir, f"s.{gen + 1}")
        self.run_lock = os.path.join(state.run_dir, "lock")
        self.released = False

    def fenced(self) -> bool:
        """True once another writer decided the next state (cancel, or a new claim)."""
        return os.path.exists(self.next_state_path)

    def next_state(self) -> dict[str, Any] | None:
        """The record that fenced this claim, if any."""
        return files.read_record(self.next_state_path)

    def append(self, record: dict[str, Any], *, sync: bool) -> None:
        """Append to this generation's journal (fdatasync when ``sync``)."""
        self.journal.append(record, sync=sync)

    def release(self) -> None:
        """Close the journal and drop the locks (idempotent)."""
        if self.released:
            return
        self.released = True
        try:
            self.journal.close()
        except OSError as exc:  # NFS reports deferred write errors here; every append was synced
            log.warning("closing journal %s failed: %s", self.journal.path, os.strerror(exc.errno or 0))
        finally:  # the locks go whatever close said: a kept lock would strand the run
            if self.key_lock:
                locks.unlock(self.key_lock)
            locks.unlock(self.run_lock)


class Store:
    """All reads and writes of one root directory.

    Atomicity and fencing of each operation are in its docstring. Readers take no lock
    (DESIGN.md invariant 7) and write nothing.
    """

    def __init__(self, root: str, *, fsync: bool) -> None:
        self.root = os.path.abspath(root)
        self.sync = fsync
        self.runs_dir = os.path.join(self.root, "runs")
        self.queue_dir = os.path.join(self.root, "queue")
        self.keys_dir = os.path.join(self.root, "keys")
        self.locks_dir = os.path.join(self.root, "locks")
        self.tmp_dir = os.path.join(self.root, "tmp")
        self.feed_dir = os.path.join(self.root, "feed")
        self._ready = False
        self._ready_lock = threading.Lock()
        self._feed_last: dict[str, float] = {}
        self._jcache: dict[str, tuple[int, int, list[dict[str, Any]]]] = {}
        self._jcache_lock = threading.Lock()
        self._committed: set[str] = set()
        self._local = threading.local()

    # -- setup ------------------------------------------------------------------------

    def ensure_ready(self) -> None:
        """Create the root's directories on first write (construction does no I/O)."""
        if self._ready:
            return
        with self._ready_lock:
            if self._ready:
                return
            try:
                files.ensure_dir(self.root, sync=self.sync)
                existing = files.read_record(os.path.join(self.root, "format.json"))
                for d in (self.runs_dir, self.queue_dir, self.locks_dir, self.tmp_dir,
                          self.feed_dir, os.path.join(self.keys_dir, "i"),
                          os.path.join(self.keys_dir, "p"), os.path.join(self.keys_dir, "x")):
                    os.close(files.open_dir(self.root, d, create=True, sync=self.sync))
                if existing is None:
                    with self._dirs(self.tmp_dir, self.root) as (tmp_fd, root_fd):
                        files.publish_once(tmp_fd, root_fd, "format.json",
                                           files.dumps({"v": files.FORMAT_VERSION, "format": "durably"}),
                                           sync=self.sync)
            except OSError as exc:
                raise files.wrap_os_error(exc, "initialise the durably root", self.root) from exc
            self._ready = True

    def is_read_only(self) -> bool:
        """True when this process cannot write the root."""
        return files.is_read_only(self.root)

    # -- paths ------------------------------------------------------------------------

    def _dirs(self, *paths: str, create: bool = False) -> contextlib.AbstractContextManager[list[int]]:
        """Descriptors of directories of the root, reached without following any symlink
        below the root (``files.opened_dirs``): every name is created, linked, renamed or
        removed relative to one (DESIGN.md invariant 9)."""
        return files.opened_dirs(self.root, *paths, create=create, sync=self.sync)

    def _publish(self, path: str, data: bytes) -> bool:
        """``files.publish_once`` of ``path`` (a temp file in ``tmp/``, then ``link``)."""
        with self._dirs(self.tmp_dir, os.path.dirname(path)) as (tmp_fd, dir_fd):
            return files.publish_once(tmp_fd, dir_fd, os.path.basename(path), data, sync=self.sync)

    def _remove(self, path: str) -> bool:
        """Remove a file of the root; False if it (or its directory) was already gone.

        Raises:
            StoreError: it could not be removed (the error names it and the cause).
        """
        try:
            with self._dirs(os.path.dirname(path)) as (dir_fd,):
                return files.remove_file(dir_fd, os.path.basename(path))
        except FileNotFoundError:
            return False
        except OSError as exc:
            raise files.wrap_os_error(exc, "remove", path) from exc

    def run_dir(self, run_id: str) -> str:
        """Directory of a run; ids are checked so a crafted id cannot leave the root."""
        if not is_valid_id(run_id):
            raise NotFoundError(f"Run not found: {run_id}", run_id=str(run_id))
        return os.path.join(self.runs_dir, run_id[:6], run_id[6:8], run_id)

    def _marker_name(self, record: dict[str, Any]) -> str:
        conc = record.get("concurrency_key")
        conc_h = files.name_hash(conc)[:16] if conc is not None else "-"
        return f"{record['id']}.{files.name_hash(record['job_name'])[:16]}.{conc_h}"

    # -- feed -------------------------------------------------------------------------

    def notify(self, run_id: str, *, throttle: float = 0.0) -> None:
        """Append ``run_id`` to the change feed (best effort, no fsync: it is a hint)."""
        now = time.monotonic()
        if throttle and now - self._feed_last.get(run_id, 0.0) < throttle:
            return
        self._feed_last[run_id] = now
        if len(self._feed_last) > 10000:
            self._feed_last.clear()
        name = datetime.now(UTC).strftime("%Y%m%d%H") + ".log"
        try:
            # O_NONBLOCK: a FIFO planted in feed/ fails (ENXIO) instead of blocking every writer.
            fd = files.open_below(self.root, os.path.join(self.feed_dir, name),
                                  os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NONBLOCK)
            try:
                files.own_only(fd, 0o600)
                os.write(fd, run_id.encode() + b"\n")
            finally:
                os.close(fd)
        except (OSError, files.StoreError) as exc:
            log.debug("change feed not written: %s", exc)

    def changes(self, cursor: str | None) -> tuple[list[str] | None, str]:
        """Run ids appended to the feed since ``cursor``; see Durably.changes."""
        names = sorted(n for n in files.list_dir(self.feed_dir) if n.endswith(".log"))
        if cursor is None:
            if not names:
                return [], ":0"
            last = names[-1]
            return [], f"{last}:{_size(os.path.join(self.feed_dir, last))}"
        fname, _, off = cursor.rpartition(":")
        try:
            offset = int(off)
        except ValueError:
            return None, self.changes(None)[1]
        if fname and fname not in names and (not names or fname < names[0]):
            return None, self.changes(None)[1]
        seen: dict[str, None] = {}
        end_name, end_off = fname, offset
        for name in names:
            if fname and name < fname:
                continue
            start = offset if name == fname else 0
            try:
                data = files.read_from(os.path.join(self.feed_dir, name), start)
            except (OSError, files.StoreError):
                return None, self.changes(None)[1]  # unreadable feed: reload everything
            complete = data[: data.rfind(b"\n") + 1]
            for line in complete.split(b"\n"):
                if line:
                    seen[line.decode(errors="replace")] = None
            end_name, end_off = name, start + len(complete)
        return list(seen), f"{end_name}:{end_off}"

    # -- trigger ----------------------------------------------------------------------

    def create_run(self, record: dict[str, Any], *, coalesce: bool) -> tuple[RunState, str]:
        """Create a pending run, honouring its idempotency and concurrency keys.

        Returns the run and its disposition (``created``, ``idempotent``, ``coalesced``).
        Same-host triggers of one key are serialised by a lock; the key files are
        published once, so even across hosts at most one run is bound to a key. The run
        becomes visible when ``run.json`` is written, after its queue marker and keys, so
        a crash at any point leaves either no run or a complete one (a key pointing at a
        run that never appeared is stale and is replaced by the next trigger).

        Raises:
            ConflictError: a pending run holds the concurrency key (and not ``coalesce``).
        """
        self.ensure_ready()
        job = record["job_name"]
        idem = record.get("idempotency_key")
        conc = record.get("concurrency_key")
        lock_paths = []
        if idem is not None:
            lock_paths.append(os.path.join(self.locks_dir, "i-" + files.name_hash(job, idem)))
        if conc is not None:
            lock_paths.append(os.path.join(self.locks_dir, "p-" + files.name_hash(job, conc)))
        taken: list[str] = []
        try:
            for path in lock_paths:
                locks.lock(path, root=self.root)  # may fail (EMFILE, EACCES): release the ones taken
                taken.append(path)
            return self._create_locked(record, coalesce=coalesce)
        finally:
            for path in reversed(taken):
                locks.unlock(path)

    def _key_target(self, key_path: str, rec: dict[str, Any] | None, *,
                    remove_stale: bool) -> RunState | None:
        """The published run a key record ``rec`` (read from ``key_path``) points to.

        A key whose run does not exist was left by a trigger that died between the two
        (on this host the key lock we hold proves it), or belongs to a trigger on another
        host that is writing the run right now: that one is waited for, up to 10 s. A
        stale idempotency key file is removed (``remove_stale``); a stale slot of a
        chain is simply superseded by the next one.
        """
        deadline = time.monotonic() + 10.0
        while True:
            if rec is None:
                if remove_stale and os.path.exists(key_path) and time.time() - _mtime(key_path) > 60:
                    self._remove(key_path)  # torn by a crash before it was published
                return None
            state = self.load(rec["run"]) if is_valid_id(rec.get("run")) else None
            if state is not None:
                return state
            remote = rec.get("host", HOST) != HOST
            if not remote or time.monotonic() > deadline or time.time() - _mtime(key_path) > 60:
                if remove_stale:
                    self._remove(key_path)
                return None
            time.sleep(0.01)  # another host's trigger is between its key and its run.json
            rec = files.read_record(key_path)

    def _create_locked(self, record: dict[str, Any], *, coalesce: bool,
                       attempt: int = 0) -> tuple[RunState, str]:
        job = record["job_name"]
        idem = record.get("idempotency_key")
        conc = record.get("concurrency_key")
        idem_path = conc_slot = None
        if idem is not None:
            idem_path = os.path.join(self.keys_dir, "i", files.name_hash(job, idem) + ".json")
            existing = self._key_target(idem_path, files.read_record(idem_path), remove_stale=True)
            if existing is not None:
                _check_key_owner(existing, "idempotency_key", job, idem, idem_path)
                return self._requeued(existing), "idempotent"
        if conc is not None:
            conc_chain = os.path.join(self.keys_dir, "p", files.name_hash(job, conc))
            pending, n = self._pending_for_key(conc_chain, job, conc, coalesce=coalesce)
            if pending is not None:
                return self._requeued(pending), "coalesced"
            conc_slot = (conc_chain, n + 1)
        try:
            return self._write_run(record, idem_path, conc_slot), "created"
        except _KeyTaken:
            # Another host published the key between our check and our publish: look
            # again, now that its file exists (idempotent, coalesced or a conflict).
            if attempt >= 5:
                raise ConflictError(
                    f"the keys of job {job!r} keep changing under concurrent triggers") from None
            return self._create_locked(record, coalesce=coalesce, attempt=attempt + 1)

    def _requeued(self, state: RunState) -> RunState:
        """Recreate the queue marker of a run that is not ended, if a power loss took it.

        ``run.json`` and the marker are made durable by one batch of directory fsyncs, so
        a file system that orders metadata per directory may keep the run and lose its
        marker (a trigger that was never acknowledged); the retry of that trigger, which
        finds the run through its key, queues it again. One ``open(O_EXCL)`` that fails.
        """
        if state.status not in TERMINAL_KINDS:
            name = self._marker_name(state.record)
            try:
                with self._dirs(self.queue_dir) as (queue_fd,):
                    if files.create_file(queue_fd, name, b"", sync=False) and self.sync:
                        os.fsync(queue_fd)
            except OSError as exc:
                raise files.wrap_os_error(exc, "queue run", os.path.join(self.queue_dir, name)) from exc
        return state

    def _pending_for_key(self, conc_chain: str, job: str, conc: str, *,
                         coalesce: bool) -> tuple[RunState | None, int]:
        """The pending run bound to a concurrency key (to coalesce onto), or None if the
        key is free; and the head slot of the key's chain that was read.

        Raises:
            ConflictError: the key is held and ``coalesce`` is not set.
        """
        n, rec = chain.head(conc_chain)
        bound = self._key_target(os.path.join(conc_chain, str(n)), rec, remove_stale=False)
        if bound is None or bound.status != "pending":
            return None, n  # the key's run left pending (or never appeared): it is free
        _check_key_owner(bound, "concurrency_key", job, conc, os.path.join(conc_chain, str(n)))
        if coalesce:
            return bound, n
        raise ConflictError(
            f'A pending run already exists for concurrency key "{conc}" in job '
            f'"{job}". Use coalesce="skip" to return the existing run instead.'
        )

    def _write_run(self, record: dict[str, Any], idem_path: str | None,
                   conc_slot: tuple[str, int] | None) -> RunState:
        job = record["job_name"]
        run_id = record["id"]
        run_dir = self.run_dir(run_id)
        key_body = files.dumps({"v": files.FORMAT_VERSION, "run": run_id, "job": job, "host": HOST})
        try:
            if idem_path and not self._publish(idem_path, key_body):
                raise _KeyTaken
            if conc_slot and not chain.publish(self.root, self.tmp_dir, *conc_slot, key_body,
                                               sync=self.sync):
                if idem_path:
                    self._remove(idem_path)  # ours, published just above
                raise _KeyTaken
            # All names first, then the fsyncs: on ext4 the first fsync commits the one
            # journal transaction holding every name, and the others cost next to nothing.
            # (A new shard directory is fsynced into its parent at once: once a second.)
            with self._dirs(os.path.dirname(run_dir), self.queue_dir, create=True) as (shard_fd, queue_fd):
                made = False
                with contextlib.suppress(FileExistsError):  # a crashed trigger's leftover
                    os.mkdir(run_id, 0o700, dir_fd=shard_fd)
                    made = True
                run_fd = files.open_subdir(shard_fd, run_id, run_dir)  # refuses a symlink
                try:
                    if made:
                        files.own_only(run_fd, 0o700)  # whatever the umask
                    files.create_file(queue_fd, self._marker_name(record), b"", sync=False)
                    files.create_file(run_fd, "run.json", files.dumps(record), sync=self.sync)
                    if self.sync:
                        for fd in (queue_fd, run_fd, shard_fd):
                            os.fsync(fd)
                finally:
                    os.close(run_fd)
        except OSError as exc:
            raise files.wrap_os_error(exc, "create run", run_dir) from exc
        self.notify(run_id)
        return RunState(run_id, record, 0, None, run_dir)

    # -- reading ----------------------------------------------------------------------

    def load(self, run_id: str) -> RunState | None:
        """Read a run's creation record and current state; None if it does not exist.

        A run whose files are incomplete (being written or synced) reads as missing.

        Raises:
            FormatError: a record of the run names a newer format.
        """
        try:
            run_dir = self.run_dir(run_id)
        except NotFoundError:
            return None
        names = files.list_dir(run_dir)
        if "run.json" not in names:
            return None
        self._refuse_links(run_dir)
        record = files.read_record(os.path.join(run_dir, "run.json"))
        states = [int(n[2:]) for n in names if n.startswith("s.") and n[2:].isdigit()]
        if record is None or record.get("id") != run_id:
            if states:  # claimed before, so its run.json was complete: it is damaged now
                _warn_once(f"run {run_id}: {run_dir}/run.json is damaged or incomplete; "
                           "the run is skipped until it reads again (durably doctor)")
            return None
        batch = record.get("batch")
        if batch is not None and not self.batch_committed(str(batch)):
            return None  # part of a batch_trigger that has not committed (yet, or ever)
        head_n = max(states, default=0)
        head = None
        while head_n > 0:
            head = files.read_record(os.path.join(run_dir, f"s.{head_n}"))
            if head is not None:
                break
            # A state file still arriving from a sync tool reads as not there yet; a
            # damaged one too, but say so: the run shows its previous state meanwhile.
            _warn_once(f"run {run_id}: {run_dir}/s.{head_n} is incomplete or damaged; "
                       "showing the state before it (durably doctor)")
            head_n -= 1
        return RunState(run_id, record, head_n, head, run_dir)

    # -- batches ------------------------------------------------------------------------

    def batch_committed(self, batch_id: str) -> bool:
        """True once ``batch_trigger``'s runs are all written and the batch is committed.

        Runs of a batch carry its id and stay invisible (to readers and claimers) until
        ``batches/<id>`` exists, so a crash mid-batch leaves none of its runs. Runs of the
        batch being created in this thread are visible to it (for keys within a batch).
        """
        if batch_id in self._committed or batch_id == getattr(self._local, "batch", None):
            return True
        if not is_valid_id(batch_id):
            return False
        if os.path.exists(os.path.join(self.root, "batches", batch_id)):
            self._committed.add(batch_id)
            return True
        return False

    def open_batch(self, batch_id: str | None) -> None:
        """Make this thread see the runs of ``batch_id`` before it commits (None: stop)."""
        self._local.batch = batch_id

    def commit_batch(self, batch_id: str) -> None:
        """Publish ``batches/<id>``: every run of the batch becomes visible at once."""
        directory = os.path.join(self.root, "batches")
        try:
            with self._dirs(directory, create=True) as (batches_fd,):
                files.create_file(batches_fd, batch_id, b"", sync=self.sync)
                if self.sync:
                    os.fsync(batches_fd)
        except OSError as exc:
            raise files.wrap_os_error(exc, "commit batch", directory) from exc
        self._committed.add(batch_id)

    def _refuse_links(self, run_dir: str) -> None:
        """Refuse a run reached through a symlink planted in the root (DESIGN.md
        invariant 9): the run directory, its two shard directories and ``runs/``.

        Raises:
            StoreError: one of them is a symbolic link.
        """
        path = run_dir
        while len(path) > len(self.root):
            if os.path.islink(path):
                raise files.StoreError(
                    f"{path} is a symbolic link planted in the root; durably never follows it",
                    path=path)
            path = os.path.dirname(path)

    def run_ids(self, *, newest_first: bool = True) -> Iterator[str]:
        """Yield run ids in creation order (newest first by default), lazily by shard."""
        for top in sorted(files.list_dir(self.runs_dir), reverse=newest_first):
            top_dir = os.path.join(self.runs_dir, top)
            for mid in sorted(files.list_dir(top_dir), reverse=newest_first):
                ids = [n for n in files.list_dir(os.path.join(top_dir, mid)) if is_valid_id(n)]
                yield from sorted(ids, reverse=newest_first)

    def journal(self, state: RunState) -> JournalView:
        """The valid journal records of a run across its generations, cuts applied."""
        cuts = state.cuts
        out: list[tuple[int, dict[str, Any]]] = []
        mtime = 0.0
        compacted = os.path.join(state.run_dir, "journal.jsonl")
        whole = None
        if state.status in TERMINAL_KINDS and os.path.exists(compacted):
            whole = self._compacted(compacted)
        short = []
        for gen in range(1, state.generation + 1):
            path = os.path.join(state.run_dir, f"j.{gen}")
            cut = cuts.get(str(gen))
            recs, valid, mt = self._scan(path, cut)
            if cut is not None and mt and valid < int(cut):
                short.append(f"run {state.run_id}: {path} holds {valid} valid bytes of the {cut} "
                             "committed when the run moved on: incomplete (a copy still arriving) "
                             "or damaged (durably doctor)")
            mtime = max(mtime, mt)
            out.extend((gen, r) for r in recs)
        if whole is not None:
            # A copy of the root (rsync --inplace) can hold journal.jsonl half-written
            # next to the j.<g> it replaces: never show fewer records than they hold.
            # (Where it was compacted, the j.<g> are gone and journal.jsonl is whole.)
            return whole if len(whole.records) >= len(out) else JournalView(out, mtime)
        if state.status in TERMINAL_KINDS and os.path.exists(compacted):
            # Compacted while we read: journal.jsonl is renamed in before the j.<g> are
            # removed, so it holds everything, and what we read may be missing parts.
            return self._compacted(compacted)
        for message in short:  # committed steps that do not read: say so, once
            _warn_once(message)
        return JournalView(out, mtime)

    def _compacted(self, path: str) -> JournalView:
        out = []
        for rec, _ in files.iter_frames(files.read_from(path, 0)):
            out.append((int(rec.pop("g", 0)), rec))
        return JournalView(out, _mtime(path))

    def _scan(self, path: str, cut: int | None) -> tuple[list[dict[str, Any]], int, float]:
        """Parse a journal incrementally up to ``cut``: (records, valid length, mtime).

        Parsed records are cached by path, inode and offset, so a claim (which needs the
        valid length), the replay map and later reads parse each byte once.
        """
        try:
            st = os.stat(path, follow_symlinks=False)
        except FileNotFoundError:
            return [], 0, 0.0
        if not stat.S_ISREG(st.st_mode):  # a FIFO, directory or link planted in its place
            raise files.StoreError(f"{path} is not a regular file; refusing to read it", path=path)
        limit = st.st_size if cut is None else min(cut, st.st_size)
        with self._jcache_lock:
            cached = self._jcache.get(path)
        if cached is None or cached[0] != st.st_ino or cached[1] > limit:
            cached = (st.st_ino, 0, [])
        ino, offset, recs = cached
        if offset < limit:
            try:  # a failed read must never shorten a journal's valid length: raise
                data = files.read_from(path, offset)[: limit - offset]
            except OSError as exc:
                raise files.wrap_os_error(exc, "read", path) from exc
            recs = list(recs)
            consumed = 0
            for rec, end in files.iter_frames(data):
                recs.append(rec)
                consumed = end
            offset += consumed
            with self._jcache_lock:
                if len(self._jcache) > 512:
                    self._jcache.clear()
                self._jcache[path] = (ino, offset, recs)
        return recs, offset, st.st_mtime

    def valid_length(self, path: str) -> int:
        """Byte length of the valid prefix of a journal (what a claim or end keeps).

        With fsync, the journal is then fdatasynced, before the caller publishes this
        length as a cut: records appended without a sync (a step's start, logs,
        progress) are inside the cut, and a power loss must not leave the journal
        shorter than its cut (the doctor reads that as committed records lost). A sync
        that fails is logged, not raised: a failing disk must not keep a run from
        ending.
        """
        length = self._scan(path, None)[1]
        if self.sync and length:
            try:
                files.sync_file(path)
            except OSError as exc:
                # The disk refuses to sync this journal (its step commits failed the same
                # way): the run must still be able to end or be taken over, so the cut
                # is published anyway; only a power loss on top could leave it short.
                log.warning("could not sync journal %s before fixing its length: %s", path,
                            files.wrap_os_error(exc, "sync journal", path))
        return length

    # -- claiming ---------------------------------------------------------------------

    def queued(self) -> list[tuple[str, str, str]]:
        """(run id, job hash, key hash) of every run not yet known to be terminal, oldest first."""
        out = []
        for name in sorted(files.list_dir(self.queue_dir)):
            parts = name.split(".")
            if len(parts) == 3 and is_valid_id(parts[0]):
                out.append((parts[0], parts[1], parts[2]))
        return out

    def owner_alive(self, state: RunState) -> bool:
        """Is the owner of a leased run still executing it?

        Same host: its record lock on ``lock`` is held (the kernel drops it when the
        process dies, so a dead owner is seen at once). Other hosts: its journal's
        heartbeat is younger than the lease duration it recorded.
        """
        head = state.head or {}
        if head.get("host") == HOST:
            return locks.held_here(os.path.join(state.run_dir, "lock")) or locks.is_locked_elsewhere(
                os.path.join(state.run_dir, "lock"), root=self.root)
        return time.time() < self.lease_expiry(state)

    def lease_expiry(self, state: RunState) -> float:
        """Epoch seconds at which a leased run's lease ends (heartbeat + lease)."""
        head = state.head or {}
        started = parse_time(head.get("at"))
        beat = started.timestamp() if started else 0.0
        beat = max(beat, _mtime(os.path.join(state.run_dir, f"j.{state.generation}")))
        return beat + float(head.get("lease", 30.0))

    def try_claim(self, run_id: str, key_hash: str, owner: str, lease_duration: float,
                  blocked_keys: set[str]) -> Claim | None:
        """Claim one queued run if it is claimable; None otherwise.

        Claimable: pending, or leased by an owner that is gone. The claim is the publish
        of ``s.<g+1>`` (first writer wins), carrying the valid length of every earlier
        journal; the new journal and the claim name are made durable by one fsync of the
        run directory. A keyed run is claimed only while the key is free: on this host
        the key's execution lock serialises claimers, and across hosts the key's slot
        chain ``keys/x/<key>`` (one ``link()`` decides) names the run executing it.
        """
        state = self.load(run_id)
        if state is None:
            self._drop_stale_marker(run_id)
            return None
        if state.status in TERMINAL_KINDS:
            self.unqueue(state)
            return None
        if state.status == "leased" and self.owner_alive(state):
            if key_hash != "-":
                blocked_keys.add(key_hash)
            return None
        if key_hash in blocked_keys:
            return None
        key = None
        if key_hash != "-":
            key = self._take_key(key_hash)
            if key is None:
                blocked_keys.add(key_hash)
                return None
        run_lock = os.path.join(state.run_dir, "lock")
        taken = [p for p in (key and key.lock, run_lock) if p]
        claim = None
        try:
            if locks.try_lock(run_lock, root=self.root):
                claim = self._claim_locked(run_id, owner, lease_duration, key)
            else:
                taken.remove(run_lock)
        finally:
            if claim is None:
                for path in taken:
                    locks.unlock(path)
        return claim

    def _take_key(self, key_hash: str) -> _ExecKey | None:
        """Take a concurrency key for execution (its lock, and the next slot of its
        chain to publish with the claim); None if the key is busy."""
        key_lock = os.path.join(self.locks_dir, "x-" + key_hash)
        if not locks.try_lock(key_lock, root=self.root):
            return None
        n = self._key_free(key_hash)
        if n is None:
            locks.unlock(key_lock)
            return None
        return _ExecKey(key_lock, os.path.join(self.keys_dir, "x", key_hash), n + 1)

    def _key_free(self, key_hash: str) -> int | None:
        """The head slot of a key's execution chain if the key is free, else None.

        Busy: the run named by the head slot is leased by a live owner, or its claim is
        still being published (the slot is newer than its claim: on this host the key
        lock we hold proves the claimer gave up; on another host it may be in flight,
        for up to the lease it asked for).
        """
        key_chain = os.path.join(self.keys_dir, "x", key_hash)
        n, rec = chain.head(key_chain)
        if rec is None or not is_valid_id(rec.get("run")):
            return n
        state = self.load(rec["run"])
        if state is None or state.status in TERMINAL_KINDS:
            return n
        if state.generation < int(rec.get("gen", 0)):  # its claim is not published (yet)
            if rec.get("host") == HOST:
                return n
            alive = time.time() < chain.slot_mtime(key_chain, n) + float(rec.get("lease", 30.0))
            return None if alive else n
        if state.status == "leased" and self.owner_alive(state):
            return None
        return n

    def _drop_stale_marker(self, run_id: str) -> None:
        """Remove the marker of a trigger that died before writing run.json (after 10 min)."""
        for name in files.list_dir(self.queue_dir):
            if name.startswith(run_id + "."):
                path = os.path.join(self.queue_dir, name)
                if time.time() - _mtime(path) > 600 and self.load(run_id) is None:
                    self._remove(path)

    def _claim_locked(self, run_id: str, owner: str, lease_duration: float,
                      key: _ExecKey | None) -> Claim | None:
        state = self.load(run_id)
        if state is None or state.status in TERMINAL_KINDS:
            return None
        if state.status == "leased" and (state.head or {}).get("host") != HOST \
                and time.time() < self.lease_expiry(state):
            return None
        gen = state.generation + 1
        cuts = state.cuts
        if state.generation:
            cuts[str(state.generation)] = self.valid_length(
                os.path.join(state.run_dir, f"j.{state.generation}"))
        at = now_iso()
        head = state.head or {}
        claim_rec = {
            "v": files.FORMAT_VERSION, "kind": "claim", "gen": gen, "at": at,
            "started_at": head.get("started_at", at), "owner": owner, "host": HOST,
            "pid": os.getpid(), "lease": lease_duration, "cut": cuts,
        }
        try:
            if key is not None:
                slot = files.dumps({"v": files.FORMAT_VERSION, "run": run_id, "gen": gen,
                                    "host": HOST, "lease": lease_duration})
                if not chain.publish(self.root, self.tmp_dir, key.chain, key.slot, slot,
                                     sync=self.sync):
                    return None  # another host took the key first
            with self._dirs(state.run_dir, self.tmp_dir) as (run_fd, tmp_fd):
                journal = files.Journal(os.path.join(state.run_dir, f"j.{gen}"), dir_fd=run_fd)
                try:
                    won = files.publish_once(tmp_fd, run_fd, f"s.{gen}", files.dumps(claim_rec),
                                             sync=self.sync)
                except BaseException:
                    journal.close()
                    raise
        except OSError as exc:  # the journal, if opened, was closed above
            raise files.wrap_os_error(exc, "claim run", state.run_dir) from exc
        if not won:
            journal.close()
            return None
        self.notify(run_id)
        new_state = RunState(run_id, state.record, gen, claim_rec, state.run_dir)
        return Claim(self, new_state, gen, journal, owner, lease_duration,
                     key.lock if key else None)

    # -- ending -----------------------------------------------------------------------

    def end(self, state: RunState, after_gen: int, record: dict[str, Any]) -> RunState | None:
        """Publish the end of a run as ``s.<after_gen + 1>``; None if another writer won.

        The record is a completion, failure or cancellation. It fixes the valid length of
        the current journal, so nothing a stale owner appends later counts.
        """
        cuts = state.cuts
        if after_gen:
            cuts[str(after_gen)] = self.valid_length(os.path.join(state.run_dir, f"j.{after_gen}"))
        head = state.head or {}
        rec = {"v": files.FORMAT_VERSION, "gen": after_gen, "at": now_iso(),
               "started_at": head.get("started_at"), "cut": cuts, **record}
        path = os.path.join(state.run_dir, f"s.{state.head_n + 1}")
        try:
            won = self._publish(path, files.dumps(rec))
        except OSError as exc:
            raise files.wrap_os_error(exc, "record the end of run", state.run_dir) from exc
        if not won:
            return None
        ended = RunState(state.run_id, state.record, state.head_n + 1, rec, state.run_dir)
        self.unqueue(ended)
        self.notify(state.run_id)
        return ended

    def unqueue(self, state: RunState) -> None:
        """Drop a terminal run's queue marker (idempotent; claimers also do it lazily).

        A marker that cannot be removed (a directory planted in its place, a read-only
        root) is reported, never raised: the run has ended whatever happens to it.
        """
        path = os.path.join(self.queue_dir, self._marker_name(state.record))
        try:
            self._remove(path)
        except (OSError, files.StoreError) as exc:
            _warn_once(f"cannot remove the queue marker {path} of ended run {state.run_id}: "
                       f"{exc} (durably doctor)")

    def compact(self, state: RunState, *, keep_outputs: bool) -> None:
        """Merge a terminal run's journals into ``journal.jsonl``; drop outputs if asked."""
        view = self.journal(state)
        out = []
        for gen, original in view.records:
            rec = {**original, "g": gen}
            if not keep_outputs and "o" in rec:
                rec["o"] = None
                rec["dropped"] = True
            out.append(files.frame(rec))
        try:
            with self._dirs(state.run_dir, self.tmp_dir) as (run_fd, tmp_fd):
                files.replace_file(tmp_fd, run_fd, "journal.jsonl", b"".join(out), sync=self.sync)
                for gen in range(1, state.generation + 1):
                    files.remove_file(run_fd, f"j.{gen}")
        except (OSError, files.StoreError) as exc:
            log.warning("could not compact run %s: %s", state.run_id, exc)

    def cancel(self, run_id: str) -> RunState:
        """Cancel a pending or leased run at once; the owner is fenced by ``s.<n+1>``.

        Raises:
            NotFoundError: no such run.
            ConflictError: the run is already terminal.
        """
        self.ensure_ready()  # refuses a root whose tmp/ is a planted symlink
        for _ in range(100):
            state = self.load(run_id)
            if state is None:
                raise NotFoundError(f"Run not found: {run_id}", run_id=run_id)
            if state.status in TERMINAL_KINDS:
                word = "already cancelled" if state.status == "cancelled" else state.status
                raise ConflictError(f"Cannot cancel {word} run: {run_id}", run_id=run_id)
            ended = self.end(state, state.generation, {"kind": "cancelled"})
            if ended is not None:
                return ended
        raise ConflictError(f"Cannot cancel run {run_id}: its state keeps changing", run_id=run_id)

    def delete(self, state: RunState) -> None:
        """Remove every file of a terminal run and free its keys.

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
        record = state.record
        self.unqueue(state)
        trash = f"del-{state.run_id}-{os.urandom(4).hex()}"
        shard = os.path.dirname(state.run_dir)
        try:
            with self._dirs(shard, self.tmp_dir) as (shard_fd, tmp_fd):
                os.rename(state.run_id, trash, src_dir_fd=shard_fd, dst_dir_fd=tmp_fd)
                if self.sync:
                    with contextlib.suppress(OSError):
                        os.fsync(shard_fd)
        except FileNotFoundError:
            return
        except OSError as exc:
            raise files.wrap_os_error(exc, "delete run", state.run_dir) from exc
        key = record.get("idempotency_key")
        if key is not None:
            key_hash = files.name_hash(record["job_name"], key)
            path = os.path.join(self.keys_dir, "i", key_hash + ".json")
            # Under the key's trigger lock: a trigger that saw this run gone may already
            # have bound the key to a new run; never free that run's key. (A concurrency
            # key bound to a terminal or missing run is free already: its chain stays.)
            lock_path = os.path.join(self.locks_dir, f"i-{key_hash}")
            locks.lock(lock_path, root=self.root)
            try:
                rec = files.read_record(path)
                if rec is not None and rec.get("run") == state.run_id:
                    self._remove(path)
            finally:
                locks.unlock(lock_path)
        with contextlib.suppress(OSError, files.StoreError), self._dirs(self.tmp_dir) as (tmp_fd,):
            shutil.rmtree(trash, dir_fd=tmp_fd, ignore_errors=True)  # never follows a link
        self.notify(state.run_id)

    def sweep_tmp(self, older_than: float = 3600.0) -> int:
        """Remove temp files and deleted-run leftovers older than ``older_than`` seconds."""
        removed = 0
        cutoff = time.time() - older_than
        try:
            with self._dirs(self.tmp_dir) as (tmp_fd,):
                for name in os.listdir(tmp_fd):
                    try:
                        st = os.stat(name, dir_fd=tmp_fd, follow_symlinks=False)
                        if st.st_mtime >= cutoff:
                            continue
                        if stat.S_ISDIR(st.st_mode):
                            shutil.rmtree(name, dir_fd=tmp_fd, ignore_errors=True)
                        else:
                            files.remove_file(tmp_fd, name)
                    except FileNotFoundError:
                        continue
                    except OSError as exc:  # a read-only root: nothing to do until it is not
                        log.debug("temp file %s not removed: %s", name, exc)
                        continue
                    removed += 1
        except FileNotFoundError:
            return removed
        except OSError as exc:
            raise files.wrap_os_error(exc, "clean up", self.tmp_dir) from exc
        return removed


_warned: set[str] = set()


def _warn_once(message: str) -> None:
    """Log a warning about a damaged file once per process (readers poll often)."""
    if message not in _warned:
        _warned.add(message)
        log.warning("%s", message)


def _check_key_owner(state: RunState, field: str, job: str, key: str, path: str) -> None:
    """Refuse a key file whose run holds another key: key files are named by a hash, and
    the original key kept in the run is what tells a collision (or a file copied by
    hand) from the run the key belongs to (DESIGN.md invariant 9).

    Raises:
        ConflictError: the run does not hold this key; the two are never merged.
    """
    rec = state.record
    if rec.get("job_name") != job or rec.get(field) != key:
        raise ConflictError(
            f"key file {path} names run {state.run_id}, which holds another "
            f"{field.replace('_', ' ')}: a hash collision or a copied file; refusing to "
            "merge the two (durably doctor reports it)", run_id=state.run_id, path=path)


class _KeyTaken(Exception):  # noqa: N818 - internal signal, never escapes the store
    """A key file was published by another trigger between our check and our publish."""


def _mtime(path: str) -> float:
    try:
        return os.stat(path, follow_symlinks=False).st_mtime
    except OSError:
        return 0.0


def _size(path: str) -> int:
    try:
        return os.stat(path, follow_symlinks=False).st_size
    except OSError:
        return 0

