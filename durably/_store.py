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
      keys/p/<hash>.json                concurrency key -> its pending run (published once)
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
        self.journal.close()
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
                          os.path.join(self.keys_dir, "p")):
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
        target = self.root if os.path.isdir(self.root) else os.path.dirname(self.root)
        return not os.access(target, os.W_OK)

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
            fd = files.open_below(self.root, os.path.join(self.feed_dir, name),
                                  os.O_WRONLY | os.O_APPEND | os.O_CREAT)
            try:
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
            except OSError:
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

    def _key_target(self, key_path: str) -> RunState | None:
        """The published run a key file points to; a stale key file is removed.

        A key whose run does not exist was left by a trigger that died between the two
        (on this host the key lock we hold proves it), or belongs to a trigger on another
        host that is writing the run right now: that one is waited for, up to 10 s.
        """
        deadline = time.monotonic() + 10.0
        while True:
            rec = files.read_record(key_path)
            if rec is None:
                if os.path.exists(key_path) and time.time() - _mtime(key_path) > 60:
                    self._remove(key_path)  # torn by a crash before it was published
                return None
            state = self.load(rec["run"]) if is_valid_id(rec.get("run")) else None
            if state is not None:
                return state
            remote = rec.get("host", HOST) != HOST
            if not remote or time.monotonic() > deadline or time.time() - _mtime(key_path) > 60:
                self._remove(key_path)
                return None
            time.sleep(0.01)  # another host's trigger is between its key and its run.json

    def _create_locked(self, record: dict[str, Any], *, coalesce: bool,
                       attempt: int = 0) -> tuple[RunState, str]:
        job = record["job_name"]
        idem = record.get("idempotency_key")
        conc = record.get("concurrency_key")
        idem_path = conc_path = None
        if idem is not None:
            idem_path = os.path.join(self.keys_dir, "i", files.name_hash(job, idem) + ".json")
            existing = self._key_target(idem_path)
            if existing is not None:
                return existing, "idempotent"
        if conc is not None:
            conc_path = os.path.join(self.keys_dir, "p", files.name_hash(job, conc) + ".json")
            pending = self._pending_for_key(conc_path, job, conc, coalesce=coalesce)
            if pending is not None:
                return pending, "coalesced"
        try:
            return self._write_run(record, idem_path, conc_path), "created"
        except _KeyTaken:
            # Another host published the key between our check and our publish: look
            # again, now that its file exists (idempotent, coalesced or a conflict).
            if attempt >= 5:
                raise ConflictError(
                    f"the keys of job {job!r} keep changing under concurrent triggers") from None
            return self._create_locked(record, coalesce=coalesce, attempt=attempt + 1)

    def _pending_for_key(self, conc_path: str, job: str, conc: str, *,
                         coalesce: bool) -> RunState | None:
        """The pending run holding a concurrency key (to coalesce onto), or None if free.

        Raises:
            ConflictError: the key is held and ``coalesce`` is not set.
        """
        pending = self._key_target(conc_path)
        if pending is None:
            return None
        if pending.status != "pending":
            self._remove(conc_path)  # its run left pending: the key is free again
            return None
        if coalesce:
            return pending
        raise ConflictError(
            f'A pending run already exists for concurrency key "{conc}" in job '
            f'"{job}". Use coalesce="skip" to return the existing run instead.'
        )

    def _write_run(self, record: dict[str, Any], idem_path: str | None,
                   conc_path: str | None) -> RunState:
        job = record["job_name"]
        run_id = record["id"]
        run_dir = self.run_dir(run_id)
        key_body = files.dumps({"v": files.FORMAT_VERSION, "run": run_id, "job": job, "host": HOST})
        try:
            if idem_path and not self._publish(idem_path, key_body):
                raise _KeyTaken
            if conc_path and not self._publish(conc_path, key_body):
                if idem_path:
                    self._remove(idem_path)  # ours, published just above
                raise _KeyTaken
            # All names first, then the fsyncs: on ext4 the first fsync commits the one
            # journal transaction holding every name, and the others cost next to nothing.
            # (A new shard directory is fsynced into its parent at once: once a second.)
            with self._dirs(os.path.dirname(run_dir), self.queue_dir, create=True) as (shard_fd, queue_fd):
                with contextlib.suppress(FileExistsError):  # a crashed trigger's leftover
                    os.mkdir(run_id, 0o700, dir_fd=shard_fd)
                run_fd = files.open_subdir(shard_fd, run_id, run_dir)  # refuses a symlink
                try:
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
        for gen in range(1, state.generation + 1):
            path = os.path.join(state.run_dir, f"j.{gen}")
            recs, mt = self._journal_records(path, cuts.get(str(gen)))
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
        return JournalView(out, mtime)

    def _compacted(self, path: str) -> JournalView:
        out = []
        for rec, _ in files.iter_frames(files.read_bytes(path) or b""):
            out.append((int(rec.pop("g", 0)), rec))
        return JournalView(out, _mtime(path))

    def _journal_records(self, path: str, cut: int | None) -> tuple[list[dict[str, Any]], float]:
        """Valid records of one journal up to ``cut``, and its mtime."""
        recs, _, mtime = self._scan(path, cut)
        return recs, mtime

    def _scan(self, path: str, cut: int | None) -> tuple[list[dict[str, Any]], int, float]:
        """Parse a journal incrementally up to ``cut``: (records, valid length, mtime).

        Parsed records are cached by path, inode and offset, so a claim (which needs the
        valid length), the replay map and later reads parse each byte once.
        """
        try:
            st = os.stat(path, follow_symlinks=False)
        except FileNotFoundError:
            return [], 0, 0.0
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
        """Byte length of the valid prefix of a journal (what a claim or end keeps)."""
        return self._scan(path, None)[1]

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
        run directory. Keyed runs also take the key's execution lock, so at most one run
        per concurrency key executes at a time on this host; across hosts, a live lease
        on another run with the key blocks the claim.
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
        key_lock = self._take_key(run_id, key_hash, blocked_keys)
        if key_lock == "":
            return None
        run_lock = os.path.join(state.run_dir, "lock")
        taken = [p for p in (key_lock, run_lock) if p]
        claim = None
        try:
            if locks.try_lock(run_lock, root=self.root):
                claim = self._claim_locked(run_id, owner, lease_duration, key_lock)
            else:
                taken.remove(run_lock)
        finally:
            if claim is None:
                for path in taken:
                    locks.unlock(path)
        return claim

    def _take_key(self, run_id: str, key_hash: str, blocked_keys: set[str]) -> str | None:
        """Take a concurrency key's execution lock: its path, None if keyless, "" if busy."""
        if key_hash == "-":
            return None
        key_lock = os.path.join(self.locks_dir, "x-" + key_hash)
        if not locks.try_lock(key_lock, root=self.root):
            blocked_keys.add(key_hash)
            return ""
        if self._key_busy_elsewhere(run_id, key_hash):
            locks.unlock(key_lock)
            blocked_keys.add(key_hash)
            return ""
        return key_lock

    def _drop_stale_marker(self, run_id: str) -> None:
        """Remove the marker of a trigger that died before writing run.json (after 10 min)."""
        for name in files.list_dir(self.queue_dir):
            if name.startswith(run_id + "."):
                path = os.path.join(self.queue_dir, name)
                if time.time() - _mtime(path) > 600 and self.load(run_id) is None:
                    self._remove(path)

    def _key_busy_elsewhere(self, run_id: str, key_hash: str) -> bool:
        for other, _, kh in self.queued():
            if kh != key_hash or other == run_id:
                continue
            st = self.load(other)
            if st is not None and st.status == "leased" and (st.head or {}).get("host") != HOST \
                    and time.time() < self.lease_expiry(st):
                return True
        return False

    def _claim_locked(self, run_id: str, owner: str, lease_duration: float,
                      key_lock: str | None) -> Claim | None:
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
            with self._dirs(state.run_dir, self.tmp_dir) as (run_fd, tmp_fd):
                journal = files.Journal(os.path.join(state.run_dir, f"j.{gen}"), dir_fd=run_fd)
                try:
                    won = files.publish_once(tmp_fd, run_fd, f"s.{gen}", files.dumps(claim_rec),
                                             sync=self.sync)
                except BaseException:
                    journal.close()
                    raise
        except OSError as exc:
            raise files.wrap_os_error(exc, "claim run", state.run_dir) from exc
        if not won:
            journal.close()
            return None
        self.notify(run_id)
        new_state = RunState(run_id, state.record, gen, claim_rec, state.run_dir)
        return Claim(self, new_state, gen, journal, owner, lease_duration, key_lock)

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
        """Drop a terminal run's queue marker (idempotent; claimers also do it lazily)."""
        self._remove(os.path.join(self.queue_dir, self._marker_name(state.record)))

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

        The run directory is first renamed into ``tmp/`` so it disappears atomically;
        only then are its keys freed. A crash in between leaves keys pointing at a run
        that no longer exists, which the next trigger of the key treats as stale; the
        reverse order could leave the run alive with its key free, and a second run
        could then be created under the same idempotency key.
        """
        self.ensure_ready()  # refuses a root whose queue/, locks/ or tmp/ is a planted symlink
        record = state.record
        self.unqueue(state)
        trash = f"del-{state.run_id}-{os.urandom(4).hex()}"
        shard = os.path.dirname(state.run_dir)
        try:
            with self._dirs(shard, self.tmp_dir) as (shard_fd, tmp_fd):
                os.rename(state.run_id, trash, src_dir_fd=shard_fd, dst_dir_fd=tmp_fd)
        except FileNotFoundError:
            return
        except OSError as exc:
            raise files.wrap_os_error(exc, "delete run", state.run_dir) from exc
        for sub, key in (("i", record.get("idempotency_key")), ("p", record.get("concurrency_key"))):
            if key is None:
                continue
            key_hash = files.name_hash(record["job_name"], key)
            path = os.path.join(self.keys_dir, sub, key_hash + ".json")
            # Under the key's trigger lock: a trigger that saw this run gone may already
            # have bound the key to a new run; never free that run's key.
            lock_path = os.path.join(self.locks_dir, f"{sub}-{key_hash}")
            locks.lock(lock_path, root=self.root)
            try:
                rec = files.read_record(path)
                if rec is not None and rec.get("run") == state.run_id:
                    self._remove(path)
            finally:
                locks.unlock(lock_path)
        with contextlib.suppress(OSError, files.StoreError), self._dirs(self.tmp_dir) as (tmp_fd,):
            shutil.rmtree(trash, dir_fd=tmp_fd, ignore_errors=True)  # never follows a link
        if self.sync:
            with contextlib.suppress(OSError, files.StoreError), self._dirs(shard) as (shard_fd,):
                os.fsync(shard_fd)
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
                    except FileNotFoundError:
                        continue
                    if st.st_mtime < cutoff:
                        if stat.S_ISDIR(st.st_mode):
                            shutil.rmtree(name, dir_fd=tmp_fd, ignore_errors=True)
                        else:
                            files.remove_file(tmp_fd, name)
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

