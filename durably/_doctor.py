"""``durably doctor``: check a root for damage and debris, and repair what is safe.

Checks (each problem names its path, relative to the root):

- ``orphan-temp``: a file or deleted-run leftover in ``tmp/`` older than a minute
  (publish-once temp files live for microseconds; older ones were left by a crash).
- ``stale-marker``: a queue marker whose run does not exist (after ten minutes, the
  grace a trigger in flight gets) or has ended; ``bad-marker``: a marker name that is
  not ``<id>.<job hash>.<key hash>`` or does not match its run.
- ``unqueued-run``: a run that has not ended but has no queue marker (no worker would
  ever claim it again).
- ``corrupt``: a record that does not parse (``run.json``, ``s.<n>``, ``format.json``,
  key records), a state chain that contradicts itself, or a journal damaged *before*
  its last valid record or short of the length a later state fixed for it (a torn
  tail after the last record is what a crash leaves, and is normal).
- ``future-format``: a record written by a newer durably. Reported, never touched.
- ``incomplete-run``: a run directory without ``run.json``, or a run of a
  ``batch_trigger`` that never committed, older than ten minutes.
- ``stuck-lease``: a run leased past its lease by an owner that is gone (same host:
  nobody holds its lock; other hosts: the heartbeat is older than the lease). A worker
  of its job resumes it; ``doctor`` only reports it.
- ``dangling-key``: an idempotency key record (``keys/i``) that names a missing run
  (after a minute), or a key record or concurrency-key slot (``keys/p``, ``keys/x``)
  naming a run whose record does not carry that key. (A slot naming a deleted or ended
  run is normal: the key is free.)
- ``permissions``: a directory not ``0700`` or a file not ``0600``.
- ``special-file``: a symlink, FIFO, socket or device inside the root.
- ``unexpected``: a name durably never creates (a sync tool's temp or conflict copy).

``--fix`` never deletes data: damaged or unknown files are moved into
``ROOT/quarantine/<timestamp>/`` under their relative path. It removes only what is
debris by construction: temp files older than an hour and queue markers of ended or
missing runs. It recreates missing queue markers and tightens permissions. Records of a
newer format are left untouched. Exit code: 0 healthy, 1 problems remain, 2 bad usage.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
import shutil
import stat
import sys
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from typing import Any

import orjson

from . import _files as files
from . import _locks as locks
from ._errors import DurablyError
from ._ids import is_valid_id
from ._store import HOST, TERMINAL_KINDS, RunState, Store

TEMP_GRACE = 60.0
"""Seconds a temp file may live before it is an orphan (they normally live microseconds)."""
TEMP_REMOVE_AGE = 3600.0
"""Orphan temp files older than this are removed by ``--fix`` (younger: quarantined)."""
TRIGGER_GRACE = 600.0
"""Seconds a trigger in flight may leave a marker or run directory without ``run.json``."""
KEY_GRACE = 60.0
"""Seconds a key record may point at a run that is not written yet."""

_TOP = {"format.json", "runs", "queue", "keys", "locks", "feed", "tmp", "quarantine", "batches"}
_TOP_DIRS = _TOP - {"format.json", "quarantine"}
_STATE = re.compile(r"^s\.([1-9][0-9]*)$")
_JOURNAL = re.compile(r"^j\.([1-9][0-9]*)$")
_KEY = re.compile(r"^[0-9a-f]{32}\.json$")
_CHAIN = {"p": re.compile(r"^[0-9a-f]{32}$"), "x": re.compile(r"^[0-9a-f]{16}$")}
_HASH16 = re.compile(r"^[0-9a-f]{16}$")


@dataclasses.dataclass
class Problem:
    """One finding: what, where (relative to the root), and what ``--fix`` did."""

    kind: str
    path: str
    message: str
    fix: str | None = None  # what --fix would do: remove, quarantine, requeue, chmod
    fixed: str | None = None  # what --fix did

    def as_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "path": self.path, "message": self.message,
                "fixable": self.fix is not None, "fixed": self.fixed}


class Doctor:
    """One examination of a root; ``check()`` lists problems, ``fix()`` repairs them."""

    def __init__(self, root: str, *, now: float | None = None) -> None:
        self.root = os.path.abspath(root)
        self.store = Store(self.root, fsync=True)
        self.now = time.time() if now is None else now
        self.problems: list[Problem] = []
        self.counts = {"runs": 0, "markers": 0, "keys": 0, "temp": 0, "files": 0}
        self._quarantine: str | None = None

    # -- helpers ----------------------------------------------------------------------

    def rel(self, path: str) -> str:
        return os.path.relpath(path, self.root)

    def add(self, kind: str, path: str, message: str, fix: str | None = None) -> None:
        self.problems.append(Problem(kind, self.rel(path), message, fix))

    def age(self, path: str) -> float:
        try:
            return self.now - os.lstat(path).st_mtime
        except OSError:
            return 0.0

    def read(self, path: str) -> tuple[dict[str, Any] | None, str | None]:
        """(record, None), or (None, kind of problem, with the message in the problem)."""
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return None, "missing"
        if not stat.S_ISREG(st.st_mode):
            return None, "special"  # reported by the tree walk
        if st.st_size > files.MAX_RECORD_BYTES:
            self.add("corrupt", path, f"{st.st_size} bytes, more than any record durably writes "
                     "(not read)", "quarantine")
            return None, "corrupt"
        try:
            data = files.read_bytes(path)
        except DurablyError:
            return None, "special"  # replaced by a link or FIFO meanwhile
        except OSError as exc:
            self.add("corrupt", path, f"unreadable: {os.strerror(exc.errno or 0)}")
            return None, "unreadable"
        if data is None:
            return None, "missing"
        try:
            rec = files.parse_record(data, path)
        except files.FormatError as exc:
            self.add("future-format", path, f"{exc} (upgrade durably to read it)")
            return None, "future"
        if rec is None:
            what = "empty" if not data else "NUL-filled" if not data.strip(b"\0") else \
                "not a durably record" if _parses(data) else "truncated or damaged JSON"
            self.add("corrupt", path, f"{what} ({len(data)} bytes)", "quarantine")
            return None, "corrupt"
        return rec, None

    # -- checks -----------------------------------------------------------------------

    def check(self) -> list[Problem]:
        """Examine the root; returns (and keeps) the list of problems."""
        self.problems = []
        self._check_top()
        self._check_tree()
        self._check_tmp()
        markers = self._check_queue()
        self._check_runs(markers)
        self._check_keys()
        return self.problems

    def _check_top(self) -> None:
        fmt = os.path.join(self.root, "format.json")
        if os.path.lexists(fmt):
            rec, _ = self.read(fmt)
            if rec is not None and rec.get("format") != "durably":
                self.add("corrupt", fmt, "format.json does not name a durably root")
        for name in sorted(files.list_dir(self.root)):
            if name not in _TOP:
                self.add("unexpected", os.path.join(self.root, name),
                         "not a name durably creates at the top of a root", "quarantine")

    def _walk(self) -> Iterator[tuple[str, os.stat_result]]:
        """Every path under the root (not following links), quarantine excluded."""
        stack = [self.root]
        while stack:
            top = stack.pop()
            try:
                entries = list(os.scandir(top))
            except OSError:
                continue
            for entry in entries:
                if top == self.root and entry.name == "quarantine":
                    continue
                try:
                    st = entry.stat(follow_symlinks=False)
                except OSError:
                    continue
                yield entry.path, st
                if stat.S_ISDIR(st.st_mode):
                    stack.append(entry.path)

    def _check_tree(self) -> None:
        try:
            st = os.lstat(self.root)
        except OSError:
            return
        if stat.S_IMODE(st.st_mode) != 0o700:
            self.problems.append(Problem("permissions", ".", f"root directory mode is "
                                         f"{stat.S_IMODE(st.st_mode):04o}, expected 0700", "chmod"))
        for path, st in self._walk():
            mode = stat.S_IMODE(st.st_mode)
            if stat.S_ISDIR(st.st_mode):
                if mode != 0o700:
                    self.add("permissions", path, f"directory mode is {mode:04o}, expected 0700",
                             "chmod")
                if not _dir_expected(self.rel(path).split(os.sep)):
                    self.add("special-file", path, "a directory where durably keeps a file",
                             "quarantine")
            elif stat.S_ISREG(st.st_mode):
                self.counts["files"] += 1
                if mode != 0o600:
                    self.add("permissions", path, f"file mode is {mode:04o}, expected 0600", "chmod")
            else:
                what = ("symbolic link" if stat.S_ISLNK(st.st_mode) else "FIFO" if stat.S_ISFIFO(st.st_mode)
                        else "socket" if stat.S_ISSOCK(st.st_mode) else "device file")
                self.add("special-file", path, f"{what} inside the root (durably never creates one "
                         "and never follows one)", "quarantine")

    def _check_tmp(self) -> None:
        for name in sorted(files.list_dir(self.store.tmp_dir)):
            path = os.path.join(self.store.tmp_dir, name)
            self.counts["temp"] += 1
            age = self.age(path)
            if age > TEMP_GRACE and not os.path.islink(path):
                fix = "remove" if age > TEMP_REMOVE_AGE else "quarantine"
                self.add("orphan-temp", path, f"temp file left by a crash ({_ago(age)} old)", fix)

    def _check_queue(self) -> dict[str, list[str]]:
        markers: dict[str, list[str]] = {}
        for name in sorted(files.list_dir(self.store.queue_dir)):
            path = os.path.join(self.store.queue_dir, name)
            self.counts["markers"] += 1
            parts = name.split(".")
            if len(parts) != 3 or not is_valid_id(parts[0]) or not _HASH16.match(parts[1]) \
                    or not (parts[2] == "-" or _HASH16.match(parts[2])):
                self.add("bad-marker", path, "not a queue marker name (<run id>.<job hash>.<key hash>)",
                         "quarantine")
                continue
            markers.setdefault(parts[0], []).append(name)
            state, future = self._load(parts[0])
            if future:
                continue
            if state is None:
                if self.age(path) > TRIGGER_GRACE:
                    self.add("stale-marker", path, "queue marker of a run that does not exist (or "
                             "whose run.json is missing or damaged)", "remove")
                continue
            if state.status in TERMINAL_KINDS:
                self.add("stale-marker", path, f"queue marker of a run that ended ({state.status})",
                         "remove")
            elif name != self.store._marker_name(state.record):
                self.add("bad-marker", path, "queue marker does not match its run's job or key",
                         "quarantine")
        return markers

    def _load(self, run_id: str) -> tuple[RunState | None, bool]:
        """(state or None, True if a record of the run has a newer format)."""
        try:
            return self.store.load(run_id), False
        except files.FormatError:
            return None, True
        except DurablyError:
            return None, False

    def _run_dirs(self) -> Iterator[tuple[str, str]]:
        runs = self.store.runs_dir
        for top in sorted(files.list_dir(runs)):
            top_dir = os.path.join(runs, top)
            if not os.path.isdir(top_dir) or os.path.islink(top_dir):
                continue
            for mid in sorted(files.list_dir(top_dir)):
                mid_dir = os.path.join(top_dir, mid)
                if not os.path.isdir(mid_dir) or os.path.islink(mid_dir):
                    continue
                for name in sorted(files.list_dir(mid_dir)):
                    path = os.path.join(mid_dir, name)
                    if os.path.islink(path):
                        continue  # reported as a special file
                    if not is_valid_id(name) or name[:6] != top or name[6:8] != mid:
                        self.add("unexpected", path, "not a run directory of this shard", "quarantine")
                    elif os.path.isdir(path):
                        yield name, path

    def _check_runs(self, markers: dict[str, list[str]]) -> None:
        for run_id, run_dir in self._run_dirs():
            self.counts["runs"] += 1
            self._check_run(run_id, run_dir, markers.get(run_id, []))

    def _check_run(self, run_id: str, run_dir: str, markers: list[str]) -> None:
        names = files.list_dir(run_dir)
        record_path = os.path.join(run_dir, "run.json")
        if "run.json" not in names:
            if self.age(run_dir) > TRIGGER_GRACE:
                self.add("incomplete-run", run_dir, "run directory without run.json (a trigger "
                         "that died, or a copy still arriving)", "quarantine")
            return
        record, err = self.read(record_path)
        if record is None:
            if err == "corrupt":
                self.problems[-1].fix = "quarantine-run"
            return
        if record.get("id") != run_id:
            self.add("corrupt", record_path, f"run.json names run {record.get('id')!r}, "
                     f"not {run_id}", "quarantine-run")
            return
        batch = record.get("batch")
        if batch is not None and not self.store.batch_committed(str(batch)):
            if self.age(record_path) > TRIGGER_GRACE:
                self.add("incomplete-run", run_dir, f"run of batch {batch} that was never "
                         "committed (its batch_trigger died): invisible to every reader",
                         "quarantine")
            return
        states, journals = self._check_names(run_dir, names)
        head_n, head = self._check_states(run_dir, states)
        if head is None and head_n < 0:
            return  # a future-format state: the rest cannot be judged
        state = RunState(run_id, record, head_n, head, run_dir)
        self._check_journals(state, journals)
        if state.status in TERMINAL_KINDS:
            return
        if not markers:
            self.add("unqueued-run", run_dir, f"{state.status} run without a queue marker: no "
                     "worker would claim it", "requeue")
        if state.status == "leased":
            self._check_lease(state)

    def _check_names(self, run_dir: str, names: list[str]) -> tuple[dict[int, str], dict[int, str]]:
        states: dict[int, str] = {}
        journals: dict[int, str] = {}
        for name in names:
            path = os.path.join(run_dir, name)
            if os.path.islink(path) or os.path.isdir(path):
                continue  # reported by the tree walk
            m = _STATE.match(name)
            j = _JOURNAL.match(name)
            if m:
                states[int(m.group(1))] = path
            elif j:
                journals[int(j.group(1))] = path
            elif name not in ("run.json", "lock", "journal.jsonl"):
                self.add("unexpected", path, "not a file durably creates in a run directory "
                         "(a sync tool's temp or conflict copy?)", "quarantine")
        return states, journals

    def _check_states(self, run_dir: str, states: dict[int, str]) -> tuple[int, dict[str, Any] | None]:
        """Check the chain s.1..s.n; return (head number, head record), (-1, None) if unreadable."""
        head_n, head = 0, None
        ended_at = None
        for n in sorted(states):
            path = states[n]
            rec, err = self.read(path)
            if err == "future":
                return -1, None
            if rec is None:
                continue
            kind = rec.get("kind")
            expected_gen = n if kind == "claim" else n - 1
            if kind not in ("claim", *TERMINAL_KINDS):
                self.add("corrupt", path, f"state record of unknown kind {kind!r}", "quarantine")
                continue
            if rec.get("gen") != expected_gen and kind == "claim":
                self.add("corrupt", path, f"claim s.{n} carries generation {rec.get('gen')!r}")
            if ended_at is not None:
                self.add("corrupt", path, f"state s.{n} follows the end of the run (s.{ended_at})")
                continue
            if kind in TERMINAL_KINDS:
                ended_at = n
            head_n, head = n, rec
        if states and head_n and sorted(states)[:head_n] != list(range(1, head_n + 1)):
            self.add("corrupt", run_dir, f"state chain has gaps: {sorted(states)}")
        return head_n, head

    def _check_journals(self, state: RunState, journals: dict[int, str]) -> None:
        cuts = state.cuts
        compacted = os.path.join(state.run_dir, "journal.jsonl")
        if os.path.lexists(compacted) and not os.path.islink(compacted):
            self._check_journal(compacted, None, whole=True)
        for gen, path in sorted(journals.items()):
            if gen > max(state.generation, 0) and state.status not in TERMINAL_KINDS:
                # j.<g> is created just before s.<g> is linked: a claim in flight, or lost.
                continue
            cut = cuts.get(str(gen))
            self._check_journal(path, int(cut) if cut is not None else None, whole=False)

    def _check_journal(self, path: str, cut: int | None, *, whole: bool) -> None:
        try:
            size = os.lstat(path).st_size
            # A huge journal (a sparse file of gigabytes) is read up to its first NUL.
            data = files.read_bytes(path) if size <= files.MAX_RECORD_BYTES else files.read_from(path, 0)
        except FileNotFoundError:
            return
        except DurablyError as exc:
            self.add("special-file", path, str(exc), "quarantine")
            return
        if data is None:
            return
        valid = 0
        for _, end in files.iter_frames(data):
            valid = end
        if cut is not None and valid < cut:
            self.add("corrupt", path, f"journal damaged at byte {valid}: a later state fixed its "
                     f"valid length at {cut} bytes, so committed records are lost")
            return
        if valid == len(data):
            return
        later = _valid_frames_after(data, valid, cut)
        if later or whole:
            what = f"{later} valid record(s) follow" if later else "a compacted journal is written whole"
            self.add("corrupt", path, f"journal damaged at byte {valid} of {len(data)} ({what}); "
                     "records past the damage are ignored")

    def _check_lease(self, state: RunState) -> None:
        head = state.head or {}
        expiry = self.store.lease_expiry(state)
        if head.get("host") == HOST:
            lock_path = os.path.join(state.run_dir, "lock")
            try:
                alive = locks.is_locked_elsewhere(lock_path, root=self.root)
            except DurablyError:
                alive = self.now < expiry  # cannot probe the lock (read-only root)
            if alive or self.now < expiry:
                return
            why = f"its owner (pid {head.get('pid')}) holds no lock"
        else:
            if self.now < expiry:
                return
            why = f"no heartbeat from host {head.get('host')!r} for {_ago(self.now - expiry)} past the lease"
        self.add("stuck-lease", state.run_dir, f"leased (generation {state.generation}, owner "
                 f"{head.get('owner')}) but {why}; a worker of job {state.record.get('job_name')!r} "
                 "will resume it")

    def _check_keys(self) -> None:
        key_dir = os.path.join(self.store.keys_dir, "i")
        for name in sorted(files.list_dir(key_dir)):
            path = os.path.join(key_dir, name)
            if not _KEY.match(name):
                if not os.path.islink(path):
                    self.add("unexpected", path, "not a key record name", "quarantine")
                continue
            self._check_key(path, "idempotency_key", name[:-5], stale_is_dangling=True,
                            per_job=True)
        for sub in ("p", "x"):
            top = os.path.join(self.store.keys_dir, sub)
            for name in sorted(files.list_dir(top)):
                key_chain = os.path.join(top, name)
                if os.path.islink(key_chain):
                    continue
                if _CHAIN[sub].match(name) and os.path.isdir(key_chain):
                    self._check_chain(key_chain, name, per_job=sub == "p")
                else:
                    self.add("unexpected", key_chain, "not a key chain name", "quarantine")

    def _check_chain(self, key_chain: str, name: str, *, per_job: bool) -> None:
        for slot in sorted(files.list_dir(key_chain)):
            path = os.path.join(key_chain, slot)
            if os.path.islink(path):
                continue
            if slot.isdigit() and len(slot) < 19:
                self._check_key(path, "concurrency_key", name, stale_is_dangling=False,
                                per_job=per_job)
            else:
                self.add("unexpected", path, "not a key slot name", "quarantine")

    def _check_key(self, path: str, field: str, name: str, *, stale_is_dangling: bool,
                   per_job: bool) -> None:
        """A key record must name a run holding the key (``field`` hashed to ``name``,
        with the job name when the key is ``per_job``).

        An idempotency key naming a missing run is dangling; a slot of a concurrency
        key's chain naming a missing or ended run just says the key is free.
        """
        self.counts["keys"] += 1
        rec, _ = self.read(path)
        if rec is None:
            return
        run_id = rec.get("run")
        if not isinstance(run_id, str) or not is_valid_id(run_id):
            self.add("corrupt", path, f"key record names an invalid run id {run_id!r}", "quarantine")
            return
        state, future = self._load(run_id)
        if state is None:
            if stale_is_dangling and self.age(path) > KEY_GRACE and not future:
                self.add("dangling-key", path, f"key record points to missing run {run_id}",
                         "quarantine")
            return
        record = state.record
        key = record.get(field)
        expected = None if key is None else (
            files.name_hash(record["job_name"], key) if per_job else files.name_hash(key)[:16])
        if expected != name:
            self.add("dangling-key", path, f"key record points to run {run_id}, which does "
                     f"not hold this {field.replace('_', ' ')}", "quarantine")

    # -- repairs ----------------------------------------------------------------------

    def quarantine_dir(self) -> str:
        if self._quarantine is None:
            stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
            self._quarantine = os.path.join(self.root, "quarantine", stamp)
        return self._quarantine

    def quarantine(self, rel: str) -> str:
        """Move ``rel`` (relative to the root) into the quarantine, keeping its path.

        Both directories are reached without following a symlink (``files.open_dir``); a
        symlink being quarantined is moved itself, never its target.
        """
        src = os.path.join(self.root, rel)
        dst = os.path.join(self.quarantine_dir(), rel)
        with files.opened_dir(self.root, os.path.dirname(src)) as src_fd, \
                files.opened_dir(self.root, os.path.dirname(dst), create=True, sync=True) as dst_fd:
            os.rename(os.path.basename(src), os.path.basename(dst), src_dir_fd=src_fd, dst_dir_fd=dst_fd)
            os.fsync(src_fd)
            os.fsync(dst_fd)
        return self.rel(dst)

    def fix(self) -> list[Problem]:
        """Repair the fixable problems found by ``check()``; return what was done."""
        done = []
        for p in self.problems:
            if p.fix is None or p.fixed:
                continue
            try:
                p.fixed = self._fix_one(p)
            except OSError as exc:
                p.message += f" (fix failed: {os.strerror(exc.errno or 0)})"
                continue
            except DurablyError as exc:
                p.message += f" (fix failed: {exc})"
                continue
            if p.fixed:
                done.append(p)
        return done

    def _fix_one(self, p: Problem) -> str | None:
        path = os.path.join(self.root, p.path)
        if not os.path.lexists(path):
            return "already gone"
        if p.fix == "remove":
            with files.opened_dir(self.root, os.path.dirname(path)) as dir_fd:
                name = os.path.basename(path)
                if stat.S_ISDIR(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode):
                    shutil.rmtree(name, dir_fd=dir_fd)  # never follows a link inside
                else:
                    os.unlink(name, dir_fd=dir_fd)
                os.fsync(dir_fd)
            return "removed"
        if p.fix == "quarantine":
            return "moved to " + self.quarantine(p.path)
        if p.fix == "quarantine-run":
            return "run moved to " + self.quarantine(os.path.dirname(p.path))
        if p.fix == "chmod":
            return _chmod(self.root, path)
        if p.fix == "requeue":
            state, _ = self._load(os.path.basename(path))
            if state is None or state.status in TERMINAL_KINDS:
                return None
            with files.opened_dir(self.root, self.store.queue_dir) as queue_fd:
                files.create_file(queue_fd, self.store._marker_name(state.record), b"", sync=True)
                os.fsync(queue_fd)
            return "queue marker recreated"
        return None


def _chmod(root: str, path: str) -> str | None:
    """Tighten a mode through a descriptor (never follows a link planted meanwhile)."""
    fd = files.open_below(root, path, os.O_RDONLY | os.O_NONBLOCK)
    try:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            os.fchmod(fd, 0o700)
            return "mode set to 0700"
        if stat.S_ISREG(st.st_mode):
            os.fchmod(fd, 0o600)
            return "mode set to 0600"
        return None
    finally:
        os.close(fd)


def _dir_expected(parts: list[str]) -> bool:
    """Whether durably may keep a directory at this path (relative to the root, split).

    Unknown names at the top and in the shards of ``runs/`` are reported as unexpected
    by their own checks, so they count as expected here.
    """
    top = parts[0]
    if len(parts) == 1:
        return top != "format.json"
    if top == "tmp":
        return True  # deleted runs wait there
    if top == "keys":  # keys/i, keys/p, keys/x, and the slot chains in keys/p and keys/x
        return (len(parts) == 2 and parts[1] in ("i", "p", "x")) or (
            len(parts) == 3 and parts[1] in ("p", "x"))
    if top == "runs":
        return len(parts) <= 4
    return top not in _TOP_DIRS


def _parses(data: bytes) -> bool:
    try:
        orjson.loads(data)
    except orjson.JSONDecodeError:
        return False
    return True


def _valid_frames_after(data: bytes, start: int, cut: int | None) -> int:
    """How many valid journal lines follow the first bad one (0 for a torn tail)."""
    limit = len(data) if cut is None else min(cut, len(data))
    count = 0
    pos = data.find(b"\n", start)
    while 0 <= pos < limit:
        nxt = data.find(b"\n", pos + 1)
        if nxt < 0:
            break
        if any(True for _ in files.iter_frames(data[pos + 1: nxt + 1])):
            count += 1
        pos = nxt
    return count


def _ago(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.1f}h"


# -- command line --------------------------------------------------------------------------


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The doctor's arguments (shared by ``durably doctor`` and ``python -m durably._doctor``)."""
    p.add_argument("root_arg", nargs="?", metavar="ROOT", help="root directory (same as --root)")
    p.add_argument("--fix", action="store_true",
                   help="repair what is safe: remove old temp files and stale markers, requeue, "
                        "fix modes, quarantine damaged files (never deletes data)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")


def run(root: str, *, fix: bool, as_json: bool, out: Any = None) -> int:
    """Examine (and with ``fix``, repair) ``root``; print the report; return the exit code."""
    out = out or sys.stdout
    if not os.path.isdir(root) or os.path.islink(root):
        print(f"durably doctor: error: no durably root at {os.path.abspath(root)}", file=sys.stderr)
        return 2
    doctor = Doctor(root)
    doctor.check()
    fixed: list[Problem] = []
    if fix:
        for _ in range(3):  # a repair can reveal another (a quarantined run's keys dangle)
            done = doctor.fix()
            fixed.extend(done)
            if not done:
                break
            doctor.now = time.time()
            doctor.check()
    remaining = [p for p in doctor.problems if not p.fixed]
    if as_json:
        report = {"root": doctor.root, "healthy": not remaining, "checked": doctor.counts,
                  "problems": [p.as_dict() for p in remaining], "fixed": [p.as_dict() for p in fixed]}
        out.write(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        for p in fixed:
            out.write(f"fixed    {p.kind:<15} {p.path}: {p.message} -> {p.fixed}\n")
        for p in remaining:
            hint = " (--fix can repair this)" if p.fix and not fix else ""
            out.write(f"problem  {p.kind:<15} {p.path}: {p.message}{hint}\n")
        c = doctor.counts
        summary = (f"checked {c['runs']} run(s), {c['markers']} marker(s), {c['keys']} key(s), "
                   f"{c['files']} file(s): ")
        out.write(summary + (f"{len(remaining)} problem(s) remain\n" if remaining else "healthy\n"))
    return 1 if remaining else 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m durably._doctor [ROOT] [--fix] [--json]``."""
    p = argparse.ArgumentParser(prog="durably doctor", description=__doc__.splitlines()[0])
    p.add_argument("--root", metavar="DIR")
    add_arguments(p)
    args = p.parse_args(argv)
    root = args.root_arg or args.root or os.environ.get("DURABLY_ROOT") or ".durably"
    return run(root, fix=args.fix, as_json=args.json)


if __name__ == "__main__":
    raise SystemExit(main())
