"""``durably doctor``: check a root for damage and debris, and repair what is safe.

Checks (each problem names its path, relative to the root):

- ``orphan-temp``: a file or deleted-run leftover in ``tmp/`` older than a minute
  (publish-once temp files live for microseconds; older ones were left by a crash).
- ``stale-marker``: a queue or wait marker whose run does not exist (after ten minutes,
  the grace a trigger in flight gets) or has ended; ``bad-marker``: a marker name that is
  not ``<id>.<job hash>.<key hash>`` (in ``wait/``: ``<wake>.<id>.<job hash>.<key
  hash>``) or does not match its run.
- ``unqueued-run``: a run that has not ended but has no marker in ``queue/`` or
  ``wait/`` (no worker would ever claim it again).
- ``corrupt``: a record that does not parse (``run.json``, ``s.<n>``, ``format.json``,
  key records, signal files ``g.<hash>``), a state chain that contradicts itself, or a
  journal damaged *before* its last valid record or short of the length a later state
  fixed for it (a torn tail after the last record is what a crash leaves, and is normal).
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

Each problem says what ``--fix`` would do about it; the repairs themselves and the
``durably doctor`` command line are in ``_repair.py``.
"""

from __future__ import annotations

import dataclasses
import os
import stat
import time
from collections.abc import Iterator
from typing import Any

import orjson

from . import _doorbell as doorbell
from . import _files as files
from . import _layout as layout
from . import _records as records
from . import _schedules as schedules
from ._doctor_runs import TRIGGER_GRACE, RunChecks, ago
from ._errors import DurablyError, FormatError
from ._ids import is_valid_id
from ._keys import KEY_GRACE
from ._queue import RunQueue
from ._records import RunRecord, RunState
from ._store import FileStore

NOT_A_SHARD = "does not belong in runs/ (durably keeps only run shards there)"
TEMP_GRACE = 60.0
"""Seconds a temp file may live before it is an orphan (they normally live microseconds)."""
TEMP_REMOVE_AGE = 3600.0
"""Orphan temp files older than this are removed by ``--fix`` (younger: quarantined)."""


@dataclasses.dataclass
class Problem:
    """One finding: what, where (relative to the root), and what ``--fix`` did."""

    kind: str
    path: str
    message: str
    fix: str | None = None  # what --fix would do: remove, quarantine, requeue, chmod
    fixed: str | None = None  # what --fix did

    def as_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "path": self.path,
            "message": self.message,
            "fixable": self.fix is not None,
            "fixed": self.fixed,
        }


class Doctor:
    """One examination of a root; ``check()`` lists problems, ``fix()`` repairs them."""

    def __init__(self, root: str, *, now: float | None = None) -> None:
        self.root = os.path.abspath(root)
        self.store = FileStore(self.root, fsync=True)
        self.layout = self.store.layout
        self.now = time.time() if now is None else now
        self.problems: list[Problem] = []
        self.counts: dict[str, int] = {}
        self.interrupted: list[tuple[str, str]] = []
        """Leased runs whose owner is gone, within its lease (not problems: they wait for
        a worker); past its lease such a run is a ``stuck-lease`` problem."""
        self.key_owners: dict[str, str] = {}
        """Idempotency key hash -> the run whose record holds the key (filled by check())."""
        self._runs = RunChecks(self)

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
            self.add(
                "corrupt",
                path,
                f"{st.st_size} bytes, more than any record durably writes (not read)",
                "quarantine",
            )
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
            rec = records.parse_json(data, path)
        except FormatError as exc:
            self.add("future-format", path, f"{exc} (upgrade durably to read it)")
            return None, "future"
        if rec is None:
            what = (
                "empty"
                if not data
                else "NUL-filled"
                if not data.strip(b"\0")
                else "not a durably record"
                if _parses(data)
                else "truncated or damaged JSON"
            )
            self.add("corrupt", path, f"{what} ({len(data)} bytes)", "quarantine")
            return None, "corrupt"
        return rec, None

    # -- checks -----------------------------------------------------------------------

    def check(self) -> list[Problem]:
        """Examine the root; returns (and keeps) the list of problems."""
        self.problems = []
        self.interrupted = []
        self.counts = {"runs": 0, "markers": 0, "keys": 0, "temp": 0, "files": 0}
        self._check_top()
        self._check_tree()
        self._check_tmp()
        markers = self._check_queue()
        self._check_runs(markers)
        self._check_keys()
        self._check_schedules()
        return self.problems

    def _check_top(self) -> None:
        fmt = self.layout.format
        if os.path.lexists(fmt):
            rec, _ = self.read(fmt)
            if rec is not None and not records.is_format_record(rec):
                self.add("corrupt", fmt, "format.json does not name a durably root")
        for name in sorted(files.list_dir(self.root)):
            if name not in layout.TOP_NAMES:
                self.add(
                    "unexpected",
                    os.path.join(self.root, name),
                    "not a name durably creates at the top of a root",
                    "quarantine",
                )

    def _check_tree(self) -> None:
        try:
            st = os.lstat(self.root)
        except OSError:
            return
        if stat.S_IMODE(st.st_mode) != 0o700:
            self.problems.append(
                Problem(
                    "permissions",
                    ".",
                    f"root directory mode is {stat.S_IMODE(st.st_mode):04o}, expected 0700",
                    "chmod",
                )
            )
        for path, st in _walk(self.root):
            mode = stat.S_IMODE(st.st_mode)
            if stat.S_ISDIR(st.st_mode):
                if mode != 0o700:
                    self.add("permissions", path, f"directory mode is {mode:04o}, expected 0700", "chmod")
                if not _dir_expected(self.rel(path).split(os.sep)):
                    self.add("special-file", path, "a directory where durably keeps a file", "quarantine")
            elif stat.S_ISREG(st.st_mode):
                self.counts["files"] += 1
                if mode != 0o600:
                    self.add("permissions", path, f"file mode is {mode:04o}, expected 0600", "chmod")
            elif stat.S_ISFIFO(st.st_mode) and doorbell.is_bell(self.rel(path)):
                continue  # a worker's doorbell (durably's only FIFO)
            else:
                what = (
                    "symbolic link"
                    if stat.S_ISLNK(st.st_mode)
                    else "FIFO"
                    if stat.S_ISFIFO(st.st_mode)
                    else "socket"
                    if stat.S_ISSOCK(st.st_mode)
                    else "device file"
                )
                self.add(
                    "special-file",
                    path,
                    f"{what} inside the root (durably never creates one and never follows one)",
                    "quarantine",
                )

    def _check_tmp(self) -> None:
        for name in sorted(files.list_dir(self.layout.tmp)):
            path = os.path.join(self.layout.tmp, name)
            self.counts["temp"] += 1
            age = self.age(path)
            if age > TEMP_GRACE and not os.path.islink(path):
                fix = "remove" if age > TEMP_REMOVE_AGE else "quarantine"
                self.add("orphan-temp", path, f"temp file left by a crash ({ago(age)} old)", fix)

    def _check_queue(self) -> dict[str, list[str]]:
        """The markers of ``queue/`` and ``wait/`` (a waiting run's marker is in ``wait/``,
        named ``<wake>.<queue marker name>``), by run id."""
        markers: dict[str, list[str]] = {}
        for name in sorted(files.list_dir(self.layout.queue)):
            self._check_marker(markers, os.path.join(self.layout.queue, name), name, "queue")
        for name in sorted(files.list_dir(self.layout.wait)):
            parsed = layout.parse_wait_marker(name)
            queue_name = "" if parsed is None else parsed[1]
            self._check_marker(markers, os.path.join(self.layout.wait, name), queue_name, "wait")
        return markers

    def _check_marker(self, markers: dict[str, list[str]], path: str, name: str, kind: str) -> None:
        """Check one marker; ``name`` is its queue marker name ("" if it has none)."""
        self.counts["markers"] += 1
        parsed = layout.parse_marker(name)
        if parsed is None:
            shape = "<run id>.<job hash>.<key hash>"
            if kind == "wait":
                shape = "<13-digit wake time or ~>." + shape
            self.add("bad-marker", path, f"not a {kind} marker name ({shape})", "quarantine")
            return
        markers.setdefault(parsed[0], []).append(name)
        state, future = self.load(parsed[0])
        if future:
            return
        if state is None:
            if self.age(path) > TRIGGER_GRACE:
                self.add(
                    "stale-marker",
                    path,
                    f"{kind} marker of a run that does not exist (or whose run.json is missing or damaged)",
                    "remove",
                )
            return
        if state.is_terminal:
            self.add("stale-marker", path, f"{kind} marker of a run that ended ({state.status})", "remove")
        elif name != RunQueue.name(state.record):
            self.add("bad-marker", path, f"{kind} marker does not match its run's job or key", "quarantine")

    def load(self, run_id: str) -> tuple[RunState | None, bool]:
        """(state or None, True if a record of the run has a newer format)."""
        try:
            return self.store.load(run_id), False
        except FormatError:
            return None, True
        except DurablyError:
            return None, False

    def _run_dirs(self) -> Iterator[tuple[str, str]]:
        runs = self.layout.runs
        for top in sorted(files.list_dir(runs)):
            top_dir = os.path.join(runs, top)
            if os.path.islink(top_dir):
                continue  # reported as a special file
            if not os.path.isdir(top_dir) or len(top) != 6 or not is_valid_id(top + "0" * 20):
                self.add("unexpected", top_dir, NOT_A_SHARD, "quarantine")
                continue
            for mid in sorted(files.list_dir(top_dir)):
                mid_dir = os.path.join(top_dir, mid)
                if os.path.islink(mid_dir):
                    continue
                if not os.path.isdir(mid_dir) or len(mid) != 2 or not is_valid_id(top + mid + "0" * 18):
                    self.add("unexpected", mid_dir, NOT_A_SHARD, "quarantine")
                    continue
                for name in sorted(files.list_dir(mid_dir)):
                    path = os.path.join(mid_dir, name)
                    if os.path.islink(path):
                        continue  # reported as a special file
                    if not is_valid_id(name) or name[:6] != top or name[6:8] != mid:
                        self.add(
                            "unexpected",
                            path,
                            "does not belong in this shard (not a run directory of it)",
                            "quarantine",
                        )
                    elif os.path.isdir(path):
                        yield name, path

    def _check_runs(self, markers: dict[str, list[str]]) -> None:
        self.key_owners = {}
        for run_id, run_dir in self._run_dirs():
            self.counts["runs"] += 1
            record = self._runs.check(run_id, run_dir, markers.get(run_id, []))
            if record is not None and record.idempotency_key is not None:
                self.key_owners[layout.name_hash(record.job_name, record.idempotency_key)] = run_id

    def _check_keys(self) -> None:
        key_dir = os.path.join(self.layout.keys, "i")
        present = set(files.list_dir(key_dir))
        for key, run_id in sorted(self.key_owners.items()):
            if key + ".json" not in present:
                self.add(
                    "missing-key",
                    os.path.join(key_dir, key + ".json"),
                    f"run {run_id} holds an idempotency key whose record is missing",
                    "rebuild-key",
                )
        for name in sorted(present):
            path = os.path.join(key_dir, name)
            if not layout.IDEMPOTENCY_NAME.match(name):
                if not os.path.islink(path):
                    self.add("unexpected", path, "not a key record name", "quarantine")
                continue
            self._check_key(path, "idempotency_key", name[:-5], stale_is_dangling=True, per_job=True)
        for sub in ("p", "x"):
            top = os.path.join(self.layout.keys, sub)
            for name in sorted(files.list_dir(top)):
                key_chain = os.path.join(top, name)
                if os.path.islink(key_chain):
                    continue
                if layout.CHAIN_NAME[sub].match(name) and os.path.isdir(key_chain):
                    self._check_chain(key_chain, name, per_job=sub == "p")
                else:
                    self.add("unexpected", key_chain, "not a key chain name", "quarantine")

    def _check_schedules(self) -> None:
        """Schedule definitions and fired records must parse (a damaged one is left out
        by workers: its schedule no longer fires)."""
        for folder, parse in (
            (self.layout.schedules, schedules.parse_schedule),
            (os.path.join(self.layout.schedules, "fired"), schedules.parse_fired),
        ):
            for name in sorted(files.list_dir(folder)):
                path = os.path.join(folder, name)
                if os.path.islink(path) or (name == "fired" and folder == self.layout.schedules):
                    continue
                if not name.endswith(".json") or not layout.IDEMPOTENCY_NAME.match(name):
                    self.add("unexpected", path, "not a schedule record name", "quarantine")
                    continue
                try:
                    parsed = parse(records.read_json(path))
                except DurablyError:
                    parsed = None
                if parsed is None:
                    self.add(
                        "corrupt",
                        path,
                        "a damaged schedule record (its schedule does not fire)",
                        "quarantine",
                    )

    def _check_chain(self, key_chain: str, name: str, *, per_job: bool) -> None:
        for slot in sorted(files.list_dir(key_chain)):
            path = os.path.join(key_chain, slot)
            if os.path.islink(path):
                continue
            if slot.isdigit() and len(slot) < 19:
                self._check_key(path, "concurrency_key", name, stale_is_dangling=False, per_job=per_job)
            else:
                self.add("unexpected", path, "not a key slot name", "quarantine")

    def _check_key(self, path: str, field: str, name: str, *, stale_is_dangling: bool, per_job: bool) -> None:
        """A key record must name a run holding the key (``field`` hashed to ``name``,
        with the job name when the key is ``per_job``).

        An idempotency key naming a missing run is dangling; a slot of a concurrency
        key's chain naming a missing or ended run just says the key is free.
        """
        self.counts["keys"] += 1
        owner = self.key_owners.get(name) if field == "idempotency_key" else None
        data, err = self.read(path)
        if data is None:
            if err == "corrupt" and owner is not None:
                self.problems[-1].fix = "rebuild-key"  # rebuilt from the run that holds it
                self.problems[-1].message += f"; run {owner} holds this key"
            return
        run_id = records.key_run(data)
        if run_id is None or not is_valid_id(run_id):
            run_id = data.get("run")
            self.add("corrupt", path, f"key record names an invalid run id {run_id!r}", "quarantine")
            return
        state, future = self.load(run_id)
        if state is None:
            if stale_is_dangling and self.age(path) > KEY_GRACE and not future:
                fix = "rebuild-key" if owner is not None else "quarantine"
                self.add("dangling-key", path, f"key record points to missing run {run_id}", fix)
            return
        expected = _key_name(state.record, field, per_job=per_job)
        if expected != name:
            self.add(
                "dangling-key",
                path,
                f"key record points to run {run_id}, which does not hold this {field.replace('_', ' ')}",
                "quarantine",
            )


def _walk(root: str) -> Iterator[tuple[str, os.stat_result]]:
    """Every path under a root (not following links), the quarantine excluded."""
    stack = [root]
    while stack:
        top = stack.pop()
        try:
            entries = list(os.scandir(top))
        except OSError:
            continue
        for entry in entries:
            if top == root and entry.name == layout.QUARANTINE:
                continue
            try:
                st = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            yield entry.path, st
            if stat.S_ISDIR(st.st_mode):
                stack.append(entry.path)


def _key_name(record: RunRecord, field: str, *, per_job: bool) -> str | None:
    """The file name a key of ``record`` hashes to (None: the run holds no such key)."""
    key = record.idempotency_key if field == "idempotency_key" else record.concurrency_key
    if key is None:
        return None
    return layout.name_hash(record.job_name, key) if per_job else layout.key_hash(key)


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
            len(parts) == 3 and parts[1] in ("p", "x")
        )
    if top == "runs":
        return len(parts) <= 4
    if top == "schedules":  # schedules/fired: the ticks they fired last
        return parts[1:] == ["fired"]
    return top not in layout.TOP_DIRS


def _parses(data: bytes) -> bool:
    try:
        orjson.loads(data)
    except orjson.JSONDecodeError:
        return False
    return True
