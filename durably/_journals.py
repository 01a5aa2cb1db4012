"""Reading a run's journals: the valid entries of every generation, cuts applied.

Each lease generation ``g`` appends to its own ``j.<g>`` (the writer is
``_framing.JournalWriter``); an ended run's journals are merged into ``journal.jsonl``.
A resumed run starts with ``replay.jsonl``, the checkpoints it replays, as generation 0.
A journal line is framed with a checksum: a reader takes the longest valid prefix, and
ignores bytes past the *cut* a later claim or the end fixed for that journal, so nothing
a stale owner appended after being fenced is ever read (invariants 1 and 3).
Parsed entries are cached by path, inode and offset, so a claim (which needs the valid
length), the replay map and later reads parse each byte once.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import stat
import threading

from . import _entries as entries
from . import _files as files
from . import _framing as framing
from . import _records as records
from ._entries import Entry
from ._errors import StoreError
from ._layout import COMPACTED, REPLAYED, Layout, journal_name
from ._records import RunState, warn_once

log = logging.getLogger("durably")


@dataclasses.dataclass(frozen=True)
class JournalView:
    """The valid entries of a run's journals, in order, each with its generation;
    ``mtime`` is the newest journal's modification time (0.0 if none)."""

    entries: list[tuple[int, Entry]]
    mtime: float


class JournalReader:
    """Reads the journals of one root's runs (no locks, no writes)."""

    def __init__(self, layout: Layout, *, fsync: bool) -> None:
        self.layout = layout
        self.fsync = fsync
        self._cache: dict[str, tuple[int, int, list[Entry]]] = {}
        self._lock = threading.Lock()

    def read(self, state: RunState) -> JournalView:
        """The valid entries of a run across its generations, cuts applied.

        An ended run's journals are merged into ``journal.jsonl``; it is read whenever it
        exists (also when the end state file that should go with it is lost), and the
        journals of generations it does not cover (claimed after that loss) follow it.
        """
        run_dir = self.layout.run_dir(state.run_id)
        compacted = os.path.join(run_dir, COMPACTED)
        whole = self._compacted(compacted) if os.path.exists(compacted) else None
        out, mtime, short = self._journals(state, run_dir)
        if whole is not None:
            merged, covered, wmtime = whole
            early = [(g, e) for g, e in out if g <= covered]
            # A copy of the root (rsync --inplace) can hold journal.jsonl half-written
            # next to the j.<g> it replaces: never show fewer entries than they hold.
            # (Where it was compacted, the j.<g> are gone and journal.jsonl is whole.)
            base = merged if len(merged) >= len(early) else early
            return JournalView(base + [(g, e) for g, e in out if g > covered], max(wmtime, mtime))
        if os.path.exists(compacted):
            # Compacted while we read: journal.jsonl is renamed in before the j.<g> are
            # removed, so it holds everything, and what we read may be missing parts.
            return self.read(state)
        for message in short:  # committed steps that do not read: say so, once
            warn_once(message)
        return JournalView(out, mtime)

    def _journals(self, state: RunState, run_dir: str) -> tuple[list[tuple[int, Entry]], float, list[str]]:
        """The entries of every ``j.<g>``, the newest mtime, and warnings of short ones."""
        cuts = state.cuts
        out: list[tuple[int, Entry]] = []
        mtime = 0.0
        short = []
        if state.record.resumed_from is not None:
            # A resumed run's checkpoints copied from the run it resumes: generation 0,
            # written whole before run.json (so never torn once the run is visible).
            found, _valid, mtime = self._scan(os.path.join(run_dir, REPLAYED), None)
            out.extend((0, e) for e in found)
        for gen in range(1, state.generation + 1):
            path = os.path.join(run_dir, journal_name(gen))
            cut = cuts.get(str(gen))
            found, valid, mt = self._scan(path, cut)
            if cut is not None and mt and valid < cut:
                short.append(
                    f"run {state.run_id}: {path} holds {valid} valid bytes of the {cut} "
                    "committed when the run moved on: incomplete (a copy still arriving) "
                    "or damaged (durably doctor)"
                )
            mtime = max(mtime, mt)
            out.extend((gen, e) for e in found)
        return out, mtime, short

    def _compacted(self, path: str) -> tuple[list[tuple[int, Entry]], int, float]:
        """A compacted journal's entries, the last generation it covers, its mtime."""
        out = []
        covered = 0
        for data in framing.read_frames(files.read_from(path, 0))[0]:
            end = entries.ended_state(data)
            if end is not None:
                state = records.parse_state(end)
                covered = max(covered, state.gen if state is not None else 0)
                continue
            entry = entries.parse_entry(data)
            if entry is not None:
                gen = entries.take_gen(data)
                covered = max(covered, gen)
                out.append((gen, entry))
        return out, covered, files.mtime(path)

    def ended(self, run_id: str) -> records.EndState | None:
        """The end state a run's compacted journal keeps (its last line), if it has one."""
        try:
            data = files.read_from(self.layout.run_file(run_id, COMPACTED), 0)
        except (OSError, StoreError):
            return None
        for line in reversed(framing.read_frames(data)[0]):
            end = entries.ended_state(line)
            if end is not None:
                state = records.parse_state(end)
                return state if isinstance(state, records.EndState) else None
        return None

    def _scan(self, path: str, cut: int | None) -> tuple[list[Entry], int, float]:
        """Parse a journal incrementally up to ``cut``: (entries, valid length, mtime)."""
        try:
            st = os.stat(path, follow_symlinks=False)
        except FileNotFoundError:
            return [], 0, 0.0
        if not stat.S_ISREG(st.st_mode):  # a FIFO, directory or link planted in its place
            raise StoreError(f"{path} is not a regular file; refusing to read it", path=path)
        limit = st.st_size if cut is None else min(cut, st.st_size)
        with self._lock:
            cached = self._cache.get(path)
        if cached is None or cached[0] != st.st_ino or cached[1] > limit:
            cached = (st.st_ino, 0, [])
        ino, offset, found = cached
        if offset < limit:
            try:  # a failed read must never shorten a journal's valid length: raise
                data = files.read_from(path, offset)[: limit - offset]
            except OSError as exc:
                raise files.wrap_os_error(exc, "read", path) from exc
            raw, consumed = framing.read_frames(data)
            found = found + entries.parse_entries(raw)
            offset += consumed
            with self._lock:
                if len(self._cache) > 512:
                    self._cache.clear()
                self._cache[path] = (ino, offset, found)
        return found, offset, st.st_mtime

    def valid_length(self, run_id: str, gen: int) -> int:
        """Byte length of the valid prefix of ``j.<gen>`` (what a claim or an end keeps).

        With fsync, the journal is then fdatasynced, before the caller publishes this
        length as a cut: entries appended without a sync (a step's start, logs, progress)
        are inside the cut, and a power loss must not leave the journal shorter than its
        cut (the doctor reads that as committed entries lost). A sync that fails is
        logged, not raised: a failing disk must not keep a run from ending.
        """
        path = self.layout.run_file(run_id, journal_name(gen))
        length = self._scan(path, None)[1]
        if self.fsync and length:
            try:
                files.sync_file(path)
            except OSError as exc:
                # The disk refuses to sync this journal (its step commits failed the same
                # way): the run must still be able to end or be taken over, so the cut
                # is published anyway; only a power loss on top could leave it short.
                log.warning(
                    "could not sync journal %s before fixing its length: %s",
                    path,
                    files.wrap_os_error(exc, "sync journal", path),
                )
        return length

    def heartbeat(self, run_id: str, gen: int) -> float:
        """When the owner of generation ``gen`` last renewed its lease (the journal's mtime)."""
        return files.mtime(self.layout.run_file(run_id, journal_name(gen)))
