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


class RunReader:
    """Loads runs of one root, and lists them in creation order."""

    def __init__(self, layout: Layout, journals: JournalReader) -> None:
        self.layout = layout
        self.journals = journals
        self._committed: set[str] = set()
        self._local = threading.local()

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
