"""Reading runs: a run's record and the head of its state chain, and the ids of a root.

Readers take no lock and write nothing (invariant 7). A run exists once its
``run.json`` reads; its state is the highest ``s.<n>`` that reads (a state file still
arriving from a sync tool reads as not there yet). Runs of a ``batch_trigger`` stay
invisible until the batch's commit mark exists, so a crash mid-batch leaves none of them.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator

from . import _files as files
from . import _records as records
from ._errors import NotFoundError, StoreError
from ._ids import is_valid_id
from ._journals import JournalReader
from ._layout import COMPACTED, RUN_RECORD, Layout, state_name
from ._records import EndState, RunState, warn_once

ENDED_KEPT = 256
"""How many ended runs a reader remembers (:meth:`RunReader.note_ended`)."""


class RunReader:
    """Loads runs of one root, and lists them in creation order."""

    def __init__(self, layout: Layout, journals: JournalReader) -> None:
        self.layout = layout
        self.journals = journals
        self._committed: set[str] = set()
        self._local = threading.local()
        self._ended: dict[str, RunState] = {}  # the last ENDED_KEPT runs seen ending
        self._ended_lock = threading.Lock()

    def load(self, run_id: str) -> RunState | None:
        """A run's record and current state; None if it does not exist (or not yet).

        Raises:
            FormatError: a record of the run names a newer format.
            StoreError: the run is reached through a symlink planted in the root.
        """
        try:
            run_dir = self.layout.run_dir(run_id)
        except NotFoundError:
            return None
        names = files.list_dir(run_dir)
        if RUN_RECORD not in names:
            return None
        self._refuse_links(run_dir)
        data = records.read_json(os.path.join(run_dir, RUN_RECORD))
        record = None if data is None else records.parse_run_record(data)
        states = [int(n[2:]) for n in names if n.startswith("s.") and n[2:].isdigit()]
        if record is None or record.id != run_id:
            if states:  # claimed before, so its run.json was complete: it is damaged now
                warn_once(
                    f"run {run_id}: {run_dir}/{RUN_RECORD} is damaged or incomplete; "
                    "the run is skipped until it reads again (durably doctor)"
                )
            return None
        if record.batch is not None and not self.batch_visible(record.batch):
            return None  # part of a batch_trigger that has not committed (yet, or ever)
        head_n = max(states, default=0)
        head = None
        while head_n > 0:
            raw = records.read_json(os.path.join(run_dir, state_name(head_n)))
            head = None if raw is None else records.parse_state(raw)
            if head is not None:
                break
            # A state file still arriving from a sync tool reads as not there yet; a
            # damaged one too, but say so: the run shows its previous state meanwhile.
            warn_once(
                f"run {run_id}: {run_dir}/{state_name(head_n)} is incomplete or damaged; "
                "showing the state before it (durably doctor)"
            )
            head_n -= 1
        if not isinstance(head, EndState) and COMPACTED in names:
            # Only an ended run has a compacted journal: its end state file is lost or
            # damaged. The journal's last line keeps a copy (durably doctor --fix restores
            # the file); the run reads as ended, and no worker runs it again.
            end = self.journals.ended(run_id)
            if end is not None:
                warn_once(
                    f"run {run_id}: its end state is missing or damaged; its compacted journal "
                    f"says it ended {end.kind} (durably doctor --fix restores it)"
                )
                head = end
        return RunState(run_id, record, head_n, head)

    def note_ended(self, state: RunState) -> None:
        """Remember a run this process saw end (its end never changes), for
        :meth:`load_ended`: the run queued behind it reads it next, usually here."""
        if not state.is_terminal:
            return
        with self._ended_lock:
            self._ended[state.run_id] = state
            while len(self._ended) > ENDED_KEPT:
                del self._ended[next(iter(self._ended))]

    def remembered_end(self, run_id: str) -> RunState | None:
        """The run, if this process remembers it as ended (:meth:`note_ended`); reads
        nothing."""
        with self._ended_lock:
            return self._ended.get(run_id)

    def load_ended(self, run_id: str) -> RunState | None:
        """:meth:`load`, answered from the runs remembered as ended when it is one of
        them: for the questions an end answers for good (has it ended, how, by whom).
        A run deleted since may still read as ended here, which is what it is to a run
        queued behind it."""
        state = self.remembered_end(run_id)
        if state is not None:
            return state
        state = self.load(run_id)
        if state is not None:
            self.note_ended(state)
        return state

    def queue_ahead(self, state: RunState) -> tuple[RunState | None, RunState | None]:
        """For a run queued on its concurrency key (``coalesce="queue"``): the first run
        ahead of it that has not ended, or None if every run ahead of it ended; and the
        ended run read first (the one right ahead, when it ended: callers reuse it).

        The walk follows ``after`` past runs that ended without ever starting (cancelled
        while queued), and stops at one that ended after it started: that one started
        only once every run ahead of it had ended. A run of another job or key (a record
        copied by hand), a cycle, or a run that is gone ends the walk (a deleted run had
        ended; ``delete_run`` refuses one that never started while runs ahead of it
        remain).
        """
        key = (state.record.job_name, state.record.concurrency_key)
        seen = {state.run_id}
        first_ended: RunState | None = None
        after = state.record.after
        while after is not None and after not in seen and is_valid_id(after):
            seen.add(after)
            ahead = self.load_ended(after)
            if ahead is None or (ahead.record.job_name, ahead.record.concurrency_key) != key:
                break
            if not ahead.is_terminal:
                return ahead, first_ended
            first_ended = first_ended or ahead
            if ahead.generation:
                break  # it started: everything ahead of it had ended
            after = ahead.record.after
        return None, first_ended

    def _refuse_links(self, run_dir: str) -> None:
        """Refuse a run reached through a symlink planted in the root (invariant 9): the
        run directory, its two shard directories and ``runs/``.

        Raises:
            StoreError: one of them is a symbolic link.
        """
        path = run_dir
        while len(path) > len(self.layout.root):
            if os.path.islink(path):
                raise StoreError(
                    f"{path} is a symbolic link planted in the root; durably never follows it", path=path
                )
            path = os.path.dirname(path)

    def run_ids(
        self, *, newest_first: bool = True, after: str | None = None, before: str | None = None
    ) -> Iterator[str]:
        """Run ids in creation order (newest first by default), lazily, shard by shard.

        ``after`` (inclusive) and ``before`` (exclusive) bound the ids' 10-character time
        prefix: shards are named by the prefix's first 6 and 8 characters, so only the
        shards that can hold such ids are listed (a time window costs its own runs).
        """
        low, high = after or "", before or "~"  # "~" sorts after the whole id alphabet

        def within(name: str) -> bool:
            n = len(name)
            return low[:n] <= name <= high[:n] and not (n >= len(high) and name[: len(high)] >= high)

        runs = self.layout.runs
        for top in sorted(files.list_dir(runs), reverse=newest_first):
            if not within(top):
                continue
            top_dir = os.path.join(runs, top)
            for mid in sorted(files.list_dir(top_dir), reverse=newest_first):
                if not within(top + mid):
                    continue
                ids = [
                    n
                    for n in files.list_dir(os.path.join(top_dir, mid))
                    if is_valid_id(n) and low <= n[:10] < high
                ]
                yield from sorted(ids, reverse=newest_first)

    # -- batches ---------------------------------------------------------------------------

    def batch_visible(self, batch_id: str) -> bool:
        """True once a ``batch_trigger``'s runs are all written and the batch committed;
        the runs of a batch being created in this thread are visible to it (for keys
        within a batch)."""
        if batch_id in self._committed or batch_id == getattr(self._local, "batch", None):
            return True
        if not is_valid_id(batch_id):
            return False
        if os.path.exists(self.layout.batch_mark(batch_id)):
            self._committed.add(batch_id)
            return True
        return False

    def open_batch(self, batch_id: str | None) -> None:
        """Make this thread see the runs of ``batch_id`` before it commits (None: stop)."""
        self._local.batch = batch_id

    def committed(self, batch_id: str) -> None:
        """Remember that ``batch_id`` was committed by this process."""
        self._committed.add(batch_id)
