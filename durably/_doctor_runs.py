"""``durably doctor``: the checks of one run directory — its record, its state chain,
its journals and its lease (see ``_doctor.py`` for the list of problems)."""

from __future__ import annotations

import os
from typing import Any, Protocol

from . import _files as files
from . import _framing as framing
from . import _layout as layout
from . import _locks as locks
from . import _records as records
from ._errors import DurablyError
from ._queue import STALE_MARKER_AGE
from ._records import RunRecord, RunState, StateRecord
from ._store import FileStore

TRIGGER_GRACE = STALE_MARKER_AGE
"""Seconds a trigger in flight may leave a marker or run directory without ``run.json``."""


class Examiner(Protocol):
    """What the run checks need of the doctor."""

    root: str
    now: float
    store: FileStore
    layout: layout.Layout
    problems: list[Any]
    interrupted: list[tuple[str, str]]
    """Runs whose owner is gone, still within its lease: (run id, what to say)."""

    def add(self, kind: str, path: str, message: str, fix: str | None = None) -> None:
        """Record a problem."""

    def read(self, path: str) -> tuple[dict[str, Any] | None, str | None]:
        """A record, or the kind of problem reading it was (already recorded)."""

    def age(self, path: str) -> float:
        """Seconds since ``path`` was modified."""


class RunChecks:
    """The checks of run directories, reporting to the doctor."""

    def __init__(self, doctor: Examiner) -> None:
        self.doctor = doctor

    def check(self, run_id: str, run_dir: str, markers: list[str]) -> RunRecord | None:
        """Check one run directory (``markers``: the queue or wait markers naming the run); return
        its record if it reads."""
        names = files.list_dir(run_dir)
        record = self._record(run_id, run_dir, names)
        if record is None:
            return None
        states, journals = self._check_names(run_dir, names)
        head_n, head = self._check_states(run_dir, states)
        if head is None and head_n < 0:
            return record  # a future-format state: the rest cannot be judged
        state = RunState(run_id, record, head_n, head)
        self._check_journals(state, run_dir, journals)
        if layout.COMPACTED in names and not state.is_terminal:
            self._lost_end(state, run_dir)
        elif state.is_terminal:
            if not journals and layout.COMPACTED not in names and state.generation:
                end = state.end
                self.doctor.add(
                    "corrupt",
                    run_dir,
                    f"the run's journal is missing (no {layout.COMPACTED}, no j.<g>): its "
                    f"{end.steps if end else 0} completed step(s) and its logs cannot be read",
                )
        else:
            if not markers:
                self.doctor.add(
                    "unqueued-run",
                    run_dir,
                    f"{state.status} run without a queue or wait marker: no worker would claim it",
                    "requeue",
                )
            if state.status == "leased":
                self._check_lease(state)
                self._check_live_journal(state, run_dir, journals)
        return record

    def _record(self, run_id: str, run_dir: str, names: list[str]) -> RunRecord | None:
        """The run's record, if it reads and the run is visible; else the problem is added."""
        record_path = os.path.join(run_dir, layout.RUN_RECORD)
        if layout.RUN_RECORD not in names:
            written = [
                n
                for n in names
                if layout.STATE_NAME.match(n) or layout.JOURNAL_NAME.match(n) or n == layout.COMPACTED
            ]
            if written:  # claimed or ended: its trigger finished long ago, so run.json is lost
                self.doctor.add(
                    "corrupt",
                    run_dir,
                    f"run.json is missing, but the run was claimed ({', '.join(sorted(written))}): its "
                    "input, job and keys are lost; the run is invisible to every reader",
                    "quarantine",
                )
            elif self.doctor.age(run_dir) > TRIGGER_GRACE:
                self.doctor.add(
                    "incomplete-run",
                    run_dir,
                    "run directory without run.json (a trigger that died, or a copy still arriving)",
                    "quarantine",
                )
            return None
        data, err = self.doctor.read(record_path)
        if data is None:
            if err == "corrupt":
                self.doctor.problems[-1].fix = "quarantine-run"
            return None
        record = records.parse_run_record(data)
        if record is None or record.id != run_id:
            named = data.get("id")
            self.doctor.add(
                "corrupt",
                record_path,
                f"run.json names run {named!r}, not {run_id}"
                if record is not None or isinstance(named, str)
                else "run.json is not a run record",
                "quarantine-run",
            )
            return None
        batch = record.batch
        if batch is not None and not self.doctor.store.runs.batch_visible(batch):
            if self.doctor.age(record_path) > TRIGGER_GRACE:
                self.doctor.add(
                    "incomplete-run",
                    run_dir,
                    f"run of batch {batch} that was never "
                    "committed (its batch_trigger died): invisible to every reader",
                    "quarantine",
                )
            return None
        return record

    def _check_names(self, run_dir: str, names: list[str]) -> tuple[dict[int, str], dict[int, str]]:
        states: dict[int, str] = {}
        journals: dict[int, str] = {}
        for name in names:
            path = os.path.join(run_dir, name)
            if os.path.islink(path) or os.path.isdir(path):
                continue  # reported by the tree walk
            m = layout.STATE_NAME.match(name)
            j = layout.JOURNAL_NAME.match(name)
            if m:
                states[int(m.group(1))] = path
            elif j:
                journals[int(j.group(1))] = path
            elif layout.SIGNAL_NAME.match(name):
                self._check_signal(path)
            elif name not in layout.RUN_FILES:
                self.doctor.add(
                    "unexpected",
                    path,
                    "not a file durably creates in a run directory (a sync tool's temp or conflict copy?)",
                    "quarantine",
                )
        return states, journals

    def _check_signal(self, path: str) -> None:
        """A signal delivered to the run: a record naming its signal (a damaged one is never
        read as delivered, and refuses the same signal sent again until quarantined)."""
        data, _err = self.doctor.read(path)
        if data is not None and records.parse_signal(data) is None:
            self.doctor.add("corrupt", path, "not a signal record", "quarantine")

    def _check_states(self, run_dir: str, states: dict[int, str]) -> tuple[int, StateRecord | None]:
        """Check the chain s.1..s.n; return (head number, head record), (-1, None) if unreadable."""
        head_n: int = 0
        head: StateRecord | None = None
        ended_at = None
        claims = 0
        for n in sorted(states):
            path = states[n]
            data, err = self.doctor.read(path)
            if err == "future":
                return -1, None
            if data is None:
                continue
            rec = records.parse_state(data)
            if rec is None:
                self.doctor.add(
                    "corrupt", path, f"state record of unknown kind {data.get('kind')!r}", "quarantine"
                )
                continue
            if isinstance(rec, records.ClaimState):
                claims += 1
                if rec.gen != claims:
                    self.doctor.add("corrupt", path, f"claim s.{n} carries generation {data.get('gen')!r}")
            elif isinstance(rec, records.ReleaseState) and rec.gen != claims:
                self.doctor.add(
                    "corrupt",
                    path,
                    f"release s.{n} names generation {data.get('gen')!r}, not the last claimed ({claims})",
                )
            if ended_at is not None:
                self.doctor.add("corrupt", path, f"state s.{n} follows the end of the run (s.{ended_at})")
                continue
            if isinstance(rec, records.EndState):
                ended_at = n
            head_n, head = n, rec
        if states and head_n and sorted(states)[:head_n] != list(range(1, head_n + 1)):
            self.doctor.add("corrupt", run_dir, f"state chain has gaps: {sorted(states)}")
        return head_n, head

    def _check_journals(self, state: RunState, run_dir: str, journals: dict[int, str]) -> None:
        cuts = state.cuts
        compacted = os.path.join(run_dir, layout.COMPACTED)
        if os.path.lexists(compacted) and not os.path.islink(compacted):
            self._check_journal(compacted, None, whole=True)
        for gen, path in sorted(journals.items()):
            if gen > max(state.generation, 0) and not state.is_terminal:
                # j.<g> is created just before s.<g> is linked: a claim in flight, or lost.
                continue
            cut = cuts.get(str(gen))
            self._check_journal(path, int(cut) if cut is not None else None, whole=False)

    def _check_journal(self, path: str, cut: int | None, *, whole: bool) -> None:
        for kind, message, fix in journal_problems(path, cut, whole=whole):
            self.doctor.add(kind, path, message, fix)

    def _lost_end(self, state: RunState, run_dir: str) -> None:
        """A compacted journal, which only an ended run has, next to a head that is not an
        end: the end state file is lost or damaged."""
        end = self.doctor.store.journals.ended(state.run_id)
        n = state.head_n + 1
        if end is None:
            self.doctor.add(
                "lost-end",
                run_dir,
                f"the run ended but its end state (s.{n}) is lost, and its compacted journal "
                "(written by an older durably) does not say how: a worker of its job resumes it, "
                "replaying every completed step",
            )
            return
        self.doctor.add(
            "lost-end",
            run_dir,
            f"its end state (s.{n}) is missing or damaged; the copy in {layout.COMPACTED} says it "
            f"ended {end.kind}",
            "restore-end",
        )

    def _check_live_journal(self, state: RunState, run_dir: str, journals: dict[int, str]) -> None:
        """The journal of the lease in force, as its owner sees it: deleted or truncated
        under a live owner on this host (its descriptor still open; read from /proc)."""
        claim = state.claim
        if claim is None:
            return
        path = os.path.join(run_dir, layout.journal_name(claim.gen))
        if claim.gen not in journals:
            self.doctor.add(
                "corrupt",
                path,
                "the journal of the lease in force is missing: the steps its owner commits are lost",
            )
            return
        if claim.host != locks.HOST:
            return
        for fd_path, position in _open_by(claim.pid, path):
            if fd_path.endswith(" (deleted)"):
                self.doctor.add(
                    "corrupt",
                    path,
                    f"the journal its owner (pid {claim.pid}) appends to "
                    "was deleted; this one is another file",
                )
            elif position > files.size(path):
                self.doctor.add(
                    "corrupt",
                    path,
                    f"the journal was truncated under its owner (pid "
                    f"{claim.pid}): {files.size(path)} bytes of the {position} it wrote",
                )

    def _check_lease(self, state: RunState) -> None:
        claim = state.claim
        if claim is None:
            return
        run_dir = self.doctor.layout.run_dir(state.run_id)
        expiry = self.doctor.store.lease_expiry(state)
        if claim.host == locks.HOST:
            lock_path = os.path.join(run_dir, layout.RUN_LOCK)
            try:
                alive = locks.is_locked_elsewhere(lock_path, root=self.doctor.root, offset=claim.gen)
            except DurablyError:
                alive = self.doctor.now < expiry  # cannot probe the lock (read-only root)
            if alive:
                return
            why = f"its owner (pid {claim.pid}) holds no lock"
            if self.doctor.now < expiry:  # not a problem (yet): a worker of its job resumes it
                self.doctor.interrupted.append(
                    (
                        state.run_id,
                        f"job {state.record.job_name!r}, owner {claim.owner} (pid {claim.pid}) is gone; "
                        "a worker of its job resumes it",
                    )
                )
                return
        else:
            if self.doctor.now < expiry:
                return
            why = f"no heartbeat from host {claim.host!r} for {ago(self.doctor.now - expiry)} past the lease"
        self.doctor.add(
            "stuck-lease",
            run_dir,
            f"leased (generation {state.generation}, owner "
            f"{claim.owner}) but {why}; a worker of job {state.record.job_name!r} "
            "will resume it",
        )


def journal_problems(path: str, cut: int | None, *, whole: bool) -> list[tuple[str, str, str | None]]:
    """(kind, message, fix) of what is wrong with one journal file: damage before its
    last valid line, or short of the ``cut`` a later state fixed (a torn tail after the
    last valid line is what a crash leaves, and is normal, unless the journal was
    written ``whole``: a compacted one)."""
    try:
        size = os.lstat(path).st_size
        # A huge journal (a sparse file of gigabytes) is read up to its first NUL.
        data = files.read_bytes(path) if size <= files.MAX_RECORD_BYTES else files.read_from(path, 0)
    except FileNotFoundError:
        return []
    except DurablyError as exc:
        return [("special-file", str(exc), "quarantine")]
    if data is None:
        return []
    valid = 0
    for _, end in framing.iter_frames(data):
        valid = end
    if cut is not None and valid < cut:
        return [
            (
                "corrupt",
                f"journal damaged at byte {valid}: a later state fixed its valid "
                f"length at {cut} bytes, so committed records are lost",
                None,
            )
        ]
    if valid == len(data):
        return []
    later = _valid_frames_after(data, valid, cut)
    if later or whole:
        what = f"{later} valid record(s) follow" if later else "a compacted journal is written whole"
        return [
            (
                "corrupt",
                f"journal damaged at byte {valid} of {len(data)} ({what}); "
                "records past the damage are ignored",
                None,
            )
        ]
    return []


def _valid_frames_after(data: bytes, start: int, cut: int | None) -> int:
    """How many valid journal lines follow the first bad one (0 for a torn tail)."""
    limit = len(data) if cut is None else min(cut, len(data))
    count = 0
    pos = data.find(b"\n", start)
    while 0 <= pos < limit:
        nxt = data.find(b"\n", pos + 1)
        if nxt < 0:
            break
        if any(True for _ in framing.iter_frames(data[pos + 1 : nxt + 1])):
            count += 1
        pos = nxt
    return count


def ago(seconds: float) -> str:
    """A duration in a problem's message: ``42s``, ``12m``, ``3.5h``."""
    seconds = max(0.0, seconds)
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.1f}h"


def _open_by(pid: int, path: str) -> list[tuple[str, int]]:
    """(target, file position) of each descriptor of process ``pid`` open on ``path`` (or
    on a deleted file that had that name), from /proc; [] where /proc cannot tell."""
    out: list[tuple[str, int]] = []
    fd_dir = f"/proc/{pid}/fd"
    try:
        fds = os.listdir(fd_dir)
    except OSError:
        return out
    for fd in fds:
        try:
            target = os.readlink(os.path.join(fd_dir, fd))
            if target not in (path, path + " (deleted)"):
                continue
            with open(f"/proc/{pid}/fdinfo/{fd}", encoding="ascii") as info:
                position = next((int(line.split()[1]) for line in info if line.startswith("pos:")), 0)
        except (OSError, ValueError):
            continue
        out.append((target, position))
    return out
