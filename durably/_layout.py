"""Where everything lives in a root: directory and file names, declared once.

::

    ROOT/
      format.json                       {"v": 1, "format": "durably"}
      runs/<id[:6]>/<id[6:8]>/<id>/     one directory per run (ids sort by creation)
        run.json                        creation record, written once at trigger
        s.<n>                           state chain: one claim or end per file, published once
        j.<g>                           journal of lease generation g: append-only framed entries
        journal.jsonl                   the journals of an ended run, merged
        lock                            record lock held by the process executing the run
        g.<hash>                        a signal delivered to the run (published once)
      queue/<id>.<job hash>.<key hash>  one marker per claimable run that is not ended
      wait/<wake>.<id>.<job>.<key>      the marker of a waiting run instead (<wake>: epoch
                                        ms, or "~" for a wait with no time), by wake time
      keys/i/<hash>.json                idempotency key -> run id (published once)
      keys/p/<hash>/<n>                 concurrency key -> its pending run (a slot chain)
      keys/x/<hash>/<n>                 concurrency key -> the run executing it (a slot chain)
      batches/<batch id>                commit mark of a batch_trigger
      locks/                            lock files of short critical sections
      feed/<YYYYMMDDHH>.log             change feed: one run id per line
      tmp/                              temp files of publish-once and replace; deleted runs
      workers/<host hash>.<pid>.json    heartbeat of a live worker process (``_workers``)
      workers/<host>.<pid>.<tag>.bell   doorbell FIFO of a worker loop (``_doorbell``)
      schedules/<hash>.json             a schedule's definition (``_schedules``)
      schedules/fired/<hash>.json       the tick it fired last, and that tick's run

Names chosen by users (job names, keys) never become paths: they are hashed
(:func:`name_hash`), and the original is kept inside the file (invariant 9).
Run ids are checked against the ULID alphabet before they are joined to a path.
"""

from __future__ import annotations

import hashlib
import os
import re
from typing import Final

from ._errors import NotFoundError
from ._ids import is_valid_id

RUN_RECORD: Final = "run.json"
COMPACTED: Final = "journal.jsonl"
REPLAYED: Final = "replay.jsonl"
"""The checkpoints a resumed run replays, copied from the run it resumes (generation 0)."""
RUN_LOCK: Final = "lock"
FORMAT: Final = "format.json"
QUARANTINE: Final = "quarantine"
TOP_DIRS: Final = frozenset(
    {"runs", "queue", "wait", "keys", "locks", "feed", "tmp", "batches", "workers", "schedules"}
)
"""Directories durably keeps at the top of a root."""
TOP_NAMES: Final = TOP_DIRS | {FORMAT, QUARANTINE}
"""Everything durably may keep at the top of a root."""
KEY_KINDS: Final = ("i", "p", "x")
"""Subdirectories of ``keys/``: idempotency keys, pending chains, execution chains."""
NO_KEY: Final = "-"
"""The key hash of a queue marker whose run has no concurrency key."""

STATE_NAME: Final = re.compile(r"^s\.([1-9][0-9]*)$")
JOURNAL_NAME: Final = re.compile(r"^j\.([1-9][0-9]*)$")
SIGNAL_NAME: Final = re.compile(r"^g\.[0-9a-f]{32}$")
NO_WAKE: Final = "~"
"""The wake key of a wait marker with no time (a signal or a child): sorts last."""
IDEMPOTENCY_NAME: Final = re.compile(r"^[0-9a-f]{32}\.json$")
CHAIN_NAME: Final = {"p": re.compile(r"^[0-9a-f]{32}$"), "x": re.compile(r"^[0-9a-f]{16}$")}
HASH16: Final = re.compile(r"^[0-9a-f]{16}$")
RUN_FILES: Final = frozenset({RUN_RECORD, RUN_LOCK, COMPACTED, REPLAYED})
"""Names in a run directory besides its state files and journals."""


def name_hash(*parts: str) -> str:
    """Hash names (job names, keys) into a bounded, safe file-name component."""
    digest = hashlib.sha256("\x00".join(parts).encode("utf-8", "surrogatepass"))
    return digest.hexdigest()[:32]


def job_hash(job_name: str) -> str:
    """The 16-digit hash of a job name in queue markers."""
    return name_hash(job_name)[:16]


def key_hash(concurrency_key: str | None) -> str:
    """The 16-digit hash of a concurrency key in markers and ``keys/x`` (``-``: none)."""
    return NO_KEY if concurrency_key is None else name_hash(concurrency_key)[:16]


def state_name(n: int) -> str:
    """The file name of state ``n`` of a run's chain."""
    return f"s.{n}"


def journal_name(gen: int) -> str:
    """The file name of the journal of generation ``gen``."""
    return f"j.{gen}"


def marker_name(run_id: str, job_name: str, concurrency_key: str | None) -> str:
    """The name of a run's queue marker: ``<id>.<job hash>.<key hash>``."""
    return f"{run_id}.{job_hash(job_name)}.{key_hash(concurrency_key)}"


def signal_name(name: str) -> str:
    """The file name of a signal delivered to a run."""
    return "g." + name_hash(name)


def wake_key(wake_ms: int | None) -> str:
    """The first part of a wait marker: 13-digit epoch milliseconds, or :data:`NO_WAKE`."""
    return NO_WAKE if wake_ms is None else f"{max(0, wake_ms):013d}"


def parse_wait_marker(name: str) -> tuple[str, str] | None:
    """(wake key, queue marker name) of a wait marker name; None if it is not one."""
    key, _, rest = name.partition(".")
    if not (key == NO_WAKE or (len(key) == 13 and key.isdigit())) or parse_marker(rest) is None:
        return None
    return key, rest


def parse_marker(name: str) -> tuple[str, str, str] | None:
    """(run id, job hash, key hash) of a marker name; None if it is not one."""
    parts = name.split(".")
    if (
        len(parts) != 3
        or not is_valid_id(parts[0])
        or not HASH16.match(parts[1])
        or not (parts[2] == NO_KEY or HASH16.match(parts[2]))
    ):
        return None
    return parts[0], parts[1], parts[2]


class Layout:
    """The paths of one root (absolute); nothing here touches the disk."""

    def __init__(self, root: str) -> None:
        self.root = os.path.abspath(root)
        join = os.path.join
        self.runs = join(self.root, "runs")
        self.queue = join(self.root, "queue")
        self.wait = join(self.root, "wait")
        self.keys = join(self.root, "keys")
        self.locks = join(self.root, "locks")
        self.tmp = join(self.root, "tmp")
        self.feed = join(self.root, "feed")
        self.batches = join(self.root, "batches")
        self.workers = join(self.root, "workers")
        self.schedules = join(self.root, "schedules")
        self.format = join(self.root, FORMAT)
        self.quarantine = join(self.root, QUARANTINE)

    def top_dirs(self) -> list[str]:
        """Every directory a root needs before its first write."""
        return [
            self.runs,
            self.queue,
            self.wait,
            self.locks,
            self.tmp,
            self.feed,
            *(os.path.join(self.keys, kind) for kind in KEY_KINDS),
        ]

    # -- runs --------------------------------------------------------------------------

    def run_dir(self, run_id: str) -> str:
        """A run's directory. Ids are checked, so a crafted id cannot leave the root.

        Raises:
            NotFoundError: not a run id.
        """
        if not is_valid_id(run_id):
            raise NotFoundError(f"Run not found: {run_id}", run_id=str(run_id))
        return os.path.join(self.runs, run_id[:6], run_id[6:8], run_id)

    def run_file(self, run_id: str, name: str) -> str:
        """A file of a run's directory."""
        return os.path.join(self.run_dir(run_id), name)

    def marker(self, run_id: str, job_name: str, concurrency_key: str | None) -> str:
        """A run's queue marker."""
        return os.path.join(self.queue, marker_name(run_id, job_name, concurrency_key))

    def batch_mark(self, batch_id: str) -> str:
        """The commit mark of a ``batch_trigger``."""
        return os.path.join(self.batches, batch_id)

    # -- keys --------------------------------------------------------------------------

    def idempotency_key(self, job_name: str, key: str) -> str:
        """The record binding an idempotency key of a job to its run."""
        return os.path.join(self.keys, "i", name_hash(job_name, key) + ".json")

    def pending_chain(self, job_name: str, key: str) -> str:
        """The slot chain binding a concurrency key of a job to its pending run."""
        return os.path.join(self.keys, "p", name_hash(job_name, key))

    def exec_chain(self, key_hash16: str) -> str:
        """The slot chain naming the run that executes a concurrency key (any job)."""
        return os.path.join(self.keys, "x", key_hash16)

    # -- schedules ---------------------------------------------------------------------

    def schedule_file(self, name: str, suffix: str) -> str:
        """A file of a schedule in ``schedules/``: ``.json``, its definition."""
        return os.path.join(self.schedules, name_hash(name) + suffix)

    def schedule_fired(self, name: str) -> str:
        """The record of the tick a schedule fired last: ``schedules/fired/<hash>.json``."""
        return os.path.join(self.schedules, "fired", name_hash(name) + ".json")

    def schedule_lock(self, name: str) -> str:
        """Serialises same-host changes of one schedule's records."""
        return os.path.join(self.locks, "s-" + name_hash(name))

    # -- locks -------------------------------------------------------------------------

    def idempotency_lock(self, job_name: str, key: str) -> str:
        """Serialises same-host triggers (and deletes) of one idempotency key."""
        return os.path.join(self.locks, "i-" + name_hash(job_name, key))

    def pending_lock(self, job_name: str, key: str) -> str:
        """Serialises same-host triggers of one concurrency key of a job."""
        return os.path.join(self.locks, "p-" + name_hash(job_name, key))

    def exec_lock(self, key_hash16: str) -> str:
        """Held by the process executing a run of a concurrency key (same-host exclusion)."""
        return os.path.join(self.locks, "x-" + key_hash16)

    # -- the change feed ---------------------------------------------------------------

    def feed_file(self, name: str) -> str:
        """A file of the change feed (``<YYYYMMDDHH>.log``)."""
        return os.path.join(self.feed, name)

    def relative(self, path: str) -> str:
        """A path of the root, relative to it (for messages)."""
        return os.path.relpath(path, self.root)
