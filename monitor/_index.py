"""The run index: every known run in plain Python, filtered and sorted outside any widget.

The list widget only asks the index for the id at a position, so it can draw 100k runs as
cheaply as 10. Changes arrive as keyed diffs (`apply`): rows are replaced or dropped by id, the
visible order is patched with `bisect`, and the per-status counts are kept incrementally.
"""

from __future__ import annotations

import bisect
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from durably import RunStatus

from ._model import RunRow

BULK_THRESHOLD = 1000
"""Diffs larger than this re-sort the view once instead of inserting row by row."""


class SortKey(StrEnum):
    """Columns the list can be sorted by."""

    CREATED = "created"  #: creation order (run ids sort by creation)
    JOB = "job"  #: job name, then creation
    STATUS = "status"  #: status (pending → leased → failed → cancelled → completed)
    DURATION = "duration"  #: how long the run took (or has been running)


STATUS_ORDER: dict[RunStatus | None, int] = {
    RunStatus.LEASED: 0,
    RunStatus.WAITING: 1,
    RunStatus.PENDING: 2,
    RunStatus.FAILED: 3,
    RunStatus.CANCELLED: 4,
    RunStatus.COMPLETED: 5,
    None: 6,
}


@dataclass(frozen=True, slots=True)
class RunFilter:
    """What the list shows. Empty fields match everything."""

    statuses: frozenset[RunStatus] = frozenset()
    job: str | None = None
    label: tuple[str, str | None] | None = None
    text: str = ""

    @classmethod
    def parse(cls, query: str, base: RunFilter | None = None) -> RunFilter:
        """Read a search box query: `status:failed job:NAME label:k=v` tokens plus free text.

        Status, job and label tokens replace those of `base`; the rest becomes the text search.
        """
        current = base or cls()
        words: list[str] = []
        statuses = set(current.statuses)
        job, label = current.job, current.label
        for token in query.split():
            key, sep, value = token.partition(":")
            if sep and key in {"status", "s"}:
                names = [_STATUS_ALIASES.get(v, v) for v in value.split(",")]
                statuses = {RunStatus(v) for v in names if v in _STATUS_VALUES}
            elif sep and key in {"job", "j"}:
                job = value or None
            elif sep and key in {"label", "l"}:
                name, eq, wanted = value.partition("=")
                label = (name, wanted if eq else None) if name else None
            else:
                words.append(token)
        return cls(frozenset(statuses), job, label, " ".join(words))

    def matches(self, row: RunRow) -> bool:
        """Whether `row` passes every part of the filter."""
        if self.statuses and row.status not in self.statuses:
            return False
        if self.job is not None and row.job != self.job:
            return False
        if self.label is not None:
            name, wanted = self.label
            values = [v for k, v in row.labels if k == name]
            if not values or (wanted is not None and wanted not in values):
                return False
        if self.text:
            needle = self.text.lower()
            hay = f"{row.id} {row.job} {row.label_text} {row.error or ''} {row.progress_message or ''}"
            if needle not in hay.lower():
                return False
        return True

    def describe(self) -> str:
        """A short human description (empty when the filter shows everything)."""
        parts = []
        if self.statuses:
            names = sorted(s.value for s in self.statuses)
            parts.append("status:" + ",".join(names))
        if self.job is not None:
            parts.append(f"job:{self.job}")
        if self.label is not None:
            name, wanted = self.label
            parts.append(f"label:{name}" + (f"={wanted}" if wanted is not None else ""))
        if self.text:
            parts.append(repr(self.text))
        return " ".join(parts)


_STATUS_VALUES = {s.value for s in RunStatus}
_STATUS_ALIASES = {"running": "leased", "done": "completed", "canceled": "cancelled"}


class RunIndex:
    """All runs by id, the filtered and sorted view, counts and throughput."""

    def __init__(self) -> None:
        self.rows: dict[str, RunRow] = {}
        self.counts: Counter[RunStatus | None] = Counter()
        self.filter = RunFilter()
        self.sort_key = SortKey.CREATED
        self.descending = True
        self._finished: Counter[datetime] = Counter()
        self._keys: list[tuple[Any, ...]] = []  # ascending sort keys of visible runs
        self._sort_now: datetime | None = None
        self.jobs: Counter[str] = Counter()
        self._children: dict[str, set[str]] = {}
        self._resumes: dict[str, set[str]] = {}

    def __len__(self) -> int:
        return len(self._keys)

    def id_at(self, position: int) -> str:
        """The run id shown at `position` (0 = top of the list)."""
        if self.descending:
            position = len(self._keys) - 1 - position
        return str(self._keys[position][-1])

    def row_at(self, position: int) -> RunRow:
        """The run shown at `position`."""
        return self.rows[self.id_at(position)]

    def position_of(self, run_id: str) -> int | None:
        """Where `run_id` is shown, or None if the filter hides it."""
        row = self.rows.get(run_id)
        if row is None or not self.filter.matches(row):
            return None
        key = self._key(row)
        i = bisect.bisect_left(self._keys, key)
        if i >= len(self._keys) or self._keys[i] != key:
            return None
        return len(self._keys) - 1 - i if self.descending else i

    def children_of(self, run_id: str) -> list[RunRow]:
        """The known child runs of `run_id` (`step.invoke`), oldest first.

        Children are created after their parent and the scan reads the newest runs first,
        so a parent in the index has its children in it too.
        """
        return [self.rows[i] for i in sorted(self._children.get(run_id, ())) if i in self.rows]

    def resumes_of(self, run_id: str) -> list[RunRow]:
        """The known runs resumed from `run_id` (`Run.resumed_from`), oldest first.

        Like children, they are created after the run they resume, so the newest-first
        scan has them once it has that run; no extra read is needed.
        """
        return [self.rows[i] for i in sorted(self._resumes.get(run_id, ())) if i in self.rows]

    # -- changes ---------------------------------------------------------------------------

    def replace_all(self, rows: Iterable[RunRow], now: datetime) -> None:
        """Forget everything and load `rows`."""
        self.rows = {}
        self.counts.clear()
        self._finished.clear()
        self.jobs.clear()
        self._children = {}
        self._resumes = {}
        for row in rows:
            self._account(row, 1)
            self.rows[row.id] = row
        self.resort(now)

    def apply(self, upserts: Iterable[RunRow], removed: Iterable[str] = ()) -> set[str]:
        """Apply a keyed diff; return the ids whose row actually changed."""
        upserts = list(upserts)
        if len(upserts) > BULK_THRESHOLD:
            return self._apply_bulk(upserts, removed)
        changed: set[str] = set()
        for run_id in removed:
            old = self.rows.pop(run_id, None)
            if old is not None:
                self._unview(old)
                self._account(old, -1)
                changed.add(run_id)
        for row in upserts:
            old = self.rows.get(row.id)
            if old == row:
                continue
            if old is not None:
                self._unview(old)
                self._account(old, -1)
            self.rows[row.id] = row
            self._account(row, 1)
            if self.filter.matches(row):
                bisect.insort(self._keys, self._key(row))
            changed.add(row.id)
        return changed

    def _apply_bulk(self, upserts: list[RunRow], removed: Iterable[str]) -> set[str]:
        """A big diff (a page of the initial scan): update the rows, then sort once."""
        changed: set[str] = set()
        for run_id in removed:
            old = self.rows.pop(run_id, None)
            if old is not None:
                self._account(old, -1)
                changed.add(run_id)
        for row in upserts:
            old = self.rows.get(row.id)
            if old == row:
                continue
            if old is not None:
                self._account(old, -1)
            self.rows[row.id] = row
            self._account(row, 1)
            changed.add(row.id)
        if changed:
            match = self.filter.matches
            self._keys = sorted(self._key(r) for r in self.rows.values() if match(r))
        return changed

    # -- view ------------------------------------------------------------------------------

    def set_filter(self, run_filter: RunFilter, now: datetime) -> None:
        """Show only the runs matching `run_filter`."""
        self.filter = run_filter
        self.resort(now)

    def set_sort(self, key: SortKey, descending: bool, now: datetime) -> None:
        """Sort by `key`."""
        self.sort_key, self.descending = key, descending
        self.resort(now)

    def resort(self, now: datetime) -> None:
        """Rebuild the visible order (durations of running runs are taken at `now`)."""
        self._sort_now = now
        match = self.filter.matches
        self._keys = sorted(self._key(r) for r in self.rows.values() if match(r))

    def throughput(self, now: datetime, minutes: int = 30) -> list[float]:
        """Runs finished in each of the last `minutes` minutes, oldest first."""
        end = now.replace(second=0, microsecond=0)
        return [float(self._finished.get(end - timedelta(minutes=m), 0)) for m in range(minutes - 1, -1, -1)]

    def _key(self, row: RunRow) -> tuple[Any, ...]:
        if self.sort_key is SortKey.JOB:
            return (row.job, row.id)
        if self.sort_key is SortKey.STATUS:
            return (-STATUS_ORDER[row.status], row.id)
        if self.sort_key is SortKey.DURATION:
            now = self._sort_now or row.updated_at
            duration = row.duration(now) if now is not None else None
            return (-1.0 if duration is None else duration, row.id)
        return (row.id,)

    def _unview(self, row: RunRow) -> None:
        if not self.filter.matches(row):
            return
        key = self._key(row)
        i = bisect.bisect_left(self._keys, key)
        if i < len(self._keys) and self._keys[i] == key:
            del self._keys[i]
        else:  # a duration key drifted since it was sorted: fall back to a scan
            for j, k in enumerate(self._keys):
                if k[-1] == row.id:
                    del self._keys[j]
                    break

    def _account(self, row: RunRow, sign: int) -> None:
        _link(self._children, row.parent_id, row.id, sign)
        _link(self._resumes, row.resumed_from, row.id, sign)
        self.counts[row.status] += sign
        self.jobs[row.job] += sign
        if self.jobs[row.job] <= 0:
            del self.jobs[row.job]
        if row.is_terminal and row.completed_at is not None:
            minute = row.completed_at.replace(second=0, microsecond=0)
            self._finished[minute] += sign
            if self._finished[minute] <= 0:
                del self._finished[minute]


def _link(links: dict[str, set[str]], to: str | None, run_id: str, sign: int) -> None:
    """Add (`sign` > 0) or drop `run_id` in the set of runs that point `to` a run."""
    if to is None:
        return
    linked = links.setdefault(to, set())
    if sign > 0:
        linked.add(run_id)
    else:
        linked.discard(run_id)
        if not linked:
            del links[to]


def mark_syncing(row: RunRow) -> RunRow:
    """The same row, shown as syncing (durably could not read it completely)."""
    return replace(row, status=None)
