"""The wait index: where a waiting run's marker lives, so claimers never read it early.

A run that has not ended has exactly one marker, moved by ``rename`` (atomic: never
none, never two): in ``queue/`` while it is claimable, in ``wait/`` while it waits.
A wait marker is named ``<wake>.<queue marker name>``, ``<wake>`` being the wake time
in epoch milliseconds (13 digits, so names sort by time) or ``~`` for a wait with no
time (a signal or a child without a timeout). So a claimer lists ``wait/`` and moves
back to ``queue/`` the markers whose time has come, without reading a waiting run; a
signal or a child's end moves its waiter's marker back at once.

The run's state is the truth, the marker only its index:

- a waiting run whose marker is still in ``queue/`` (its owner died between publishing
  the wait and moving the marker, or a waker moved it early) is read by a claimer,
  which claims it if its wait is over, else parks it (moves the marker to ``wait/``);
- every move that can hide a run re-checks its state afterwards (park, then look for
  the signal; deliver the signal, then unpark), so a wake racing a park is never lost;
- a periodic sweep re-checks the waits with no time (across hosts a directory cache
  may hide a signal for a while), and ``durably doctor`` rebuilds lost markers.
"""

from __future__ import annotations

import contextlib
import os
import time

from . import _files as files
from . import _records as records
from ._errors import StoreError
from ._layout import Layout, marker_name, parse_wait_marker, signal_name, wake_key
from ._records import Clock, RunState, warn_once
from ._runs import RunReader

RECHECK = 0.5
"""Seconds a listing of ``wait/`` is trusted for (other processes add waits meanwhile)."""


class WaitIndex:
    """The wait markers of one root."""

    def __init__(self, layout: Layout, runs: RunReader, *, fsync: bool, clock: Clock) -> None:
        self.layout = layout
        self.runs = runs
        self.fsync = fsync
        self.clock = clock
        self._listed_at = -RECHECK  # time.monotonic() of the last listing
        self._earliest: int | None = None  # the earliest future wake key seen (epoch ms)

    def now_ms(self) -> int:
        """The clock's time, in epoch milliseconds."""
        return int(self.clock().timestamp() * 1000)

    @staticmethod
    def queue_name(state: RunState) -> str:
        """The queue marker name of a run."""
        rec = state.record
        return marker_name(rec.id, rec.job_name, rec.concurrency_key)

    def wake_ms(self, state: RunState) -> int | None:
        """When a waiting run's marker comes due by time (None: no time)."""
        return records.iso_ms(state.wake_at)

    def marker(self, state: RunState) -> str:
        """The wait marker name of a waiting run."""
        return f"{wake_key(self.wake_ms(state))}.{self.queue_name(state)}"

    # -- moving markers ---------------------------------------------------------------

    def _move(self, src: str, name: str, dst: str, new_name: str) -> bool:
        """Rename a marker between ``queue/`` and ``wait/``; False if it was not there."""
        with files.opened_dirs(self.layout.root, src, dst, create=True, sync=self.fsync) as (src_fd, dst_fd):
            try:
                files.move(src_fd, name, dst_fd, new_name, sync=False)
            except FileNotFoundError:
                return False
            if self.fsync:  # the new name first: a power cut never leaves neither
                files.sync_dir(dst_fd)
                files.sync_dir(src_fd)
        return True

    def park(self, state: RunState) -> None:
        """Move a waiting run's marker from ``queue/`` into ``wait/`` (creating it if the
        run has none), then move it back at once if its wait turned out to be over (a
        signal delivered or a child ended meanwhile: the waker may have missed the move).

        Raises:
            StoreError: the marker could not be moved or created.
        """
        name = self.marker(state)
        try:
            if not self._move(self.layout.queue, self.queue_name(state), self.layout.wait, name):
                with files.opened_dir(self.layout.root, self.layout.wait, create=True) as wait_fd:
                    if files.create_file(wait_fd, name, b"", sync=False) and self.fsync:
                        files.sync_dir(wait_fd)
        except OSError as exc:
            raise files.wrap_os_error(exc, "park waiting run", os.path.join(self.layout.wait, name)) from exc
        self.noted(state)
        if self.is_due(state):
            self.unpark(state)

    def noted(self, state: RunState) -> None:
        """A wait marker of this run was just made: look at ``wait/`` again by its time."""
        wake = self.wake_ms(state)
        if wake is not None and (self._earliest is None or wake < self._earliest):
            self._earliest = wake

    def unpark(self, state: RunState) -> bool:
        """Move a waiting run's marker back to ``queue/`` (it is claimable now); False if
        it was not in ``wait/`` (already moved back, or the run moved on).

        Raises:
            StoreError: the marker could not be moved.
        """
        name = self.marker(state)
        try:
            return self._move(self.layout.wait, name, self.layout.queue, self.queue_name(state))
        except OSError as exc:
            raise files.wrap_os_error(exc, "wake waiting run", os.path.join(self.layout.wait, name)) from exc

    def remove(self, state: RunState) -> None:
        """Drop the wait marker of a waiting run that ended (a cancel, a timeout)."""
        path = os.path.join(self.layout.wait, self.marker(state))
        try:
            files.remove_path(self.layout.root, path)
        except (OSError, StoreError) as exc:
            warn_once(
                f"cannot remove the wait marker {path} of ended run {state.run_id}: {exc} (durably doctor)"
            )

    # -- finding due runs ---------------------------------------------------------------

    def release_due(self) -> int:
        """Move every wait marker whose time has come back to ``queue/``; the number moved.
        Lists ``wait/`` only when a wait may have come due (the earliest time seen has
        passed, or the last listing is older than :data:`RECHECK`)."""
        now = self.now_ms()
        if time.monotonic() < self._listed_at + RECHECK and (self._earliest is None or now < self._earliest):
            return 0
        self._listed_at = time.monotonic()
        self._earliest = None
        moved = 0
        for name in sorted(files.list_dir(self.layout.wait)):
            parsed = parse_wait_marker(name)
            if parsed is None:
                continue
            key, queue_name = parsed
            if key == "~" or int(key) > now:
                if key != "~":
                    self._earliest = int(key)
                break  # sorted: the rest are later (and "~" sorts last)
            try:
                moved += self._move(self.layout.wait, name, self.layout.queue, queue_name)
            except OSError as exc:
                raise files.wrap_os_error(
                    exc, "wake waiting run", os.path.join(self.layout.wait, name)
                ) from exc
        return moved

    def is_due(self, state: RunState) -> bool:
        """Whether a waiting run's wait is over: its time came, its signal was delivered,
        or its child ended (a run that is not waiting is due)."""
        wake = self.wake_ms(state)
        if wake is not None and wake <= self.now_ms():
            return True
        wait = state.wait
        if wait is None:
            return state.record.wake_at is None
        if wait.signal is not None:
            return self.signal_exists(state.run_id, wait.signal)
        if wait.child is not None:
            child = self.runs.load(wait.child)
            return child is None or child.is_terminal
        return False

    def signal_exists(self, run_id: str, name: str) -> bool:
        """Whether signal ``name`` was delivered to a run: its file reads as that signal
        (a damaged one, which the waiting step cannot read either, wakes nobody: else the
        run would be claimed, wait again and be woken again, forever)."""
        path = self.layout.run_file(run_id, signal_name(name))
        return records.parse_signal(records.read_json(path)) is not None

    def sweep(self) -> int:
        """Re-check the waits with no time: wake those whose signal or child came without
        waking them (a waker that died, a cache of another host); drop the markers of runs
        that no longer wait. Returns the number woken."""
        woken = 0
        for name in files.list_dir(self.layout.wait):
            parsed = parse_wait_marker(name)
            if parsed is None or parsed[0] != "~":
                continue
            run_id = parsed[1].split(".")[0]
            state = self.runs.load(run_id)
            if state is None:
                continue
            if state.is_terminal:
                with contextlib.suppress(OSError, StoreError):
                    files.remove_path(self.layout.root, os.path.join(self.layout.wait, name))
            elif state.status != "waiting" or self.is_due(state):
                woken += self._move(self.layout.wait, name, self.layout.queue, parsed[1])
        return woken
