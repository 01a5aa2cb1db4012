"""Following one run through its files: waits and ``subscribe`` work across processes."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

from ._codec import Codec
from ._entries import Entry, LogWritten, ProgressSet, StepEnded, StepStarted
from ._errors import (
    CancelledError,
    DurablyError,
    NotFoundError,
    RunFailedError,
    ValidationError,
    WaitTimeoutError,
)
from ._events import (
    Event,
    LogWriteEvent,
    RunCancelEvent,
    RunCompleteEvent,
    RunDeleteEvent,
    RunFailEvent,
    RunLeasedEvent,
    RunProgressEvent,
    StepCancelEvent,
    StepCompleteEvent,
    StepFailEvent,
    StepStartEvent,
)
from ._journals import JournalView
from ._models import LogEntry, Progress, Run, RunStatus
from ._readmodel import log_entry, progress_of, to_run
from ._records import RunState, parse_time
from ._store import Store


class RunTail:
    """Reads what was appended to a run's files since the tail was created."""

    def __init__(self, store: Store, run_id: str) -> None:
        self.store = store
        self.run_id = run_id
        self.state = store.load(run_id) if isinstance(run_id, str) else None
        self.seen = len(self._entries(self.state)) if self.state is not None else 0
        self.seq = 0

    def _entries(self, state: RunState | None) -> list[tuple[int, Entry]]:
        if state is None or not state.generation:
            return []
        view: JournalView = self.store.journal(state)
        return view.entries

    def poll(
        self,
        *,
        on_progress: Callable[[Progress], object] | None = None,
        on_log: Callable[[LogEntry], object] | None = None,
    ) -> RunState | None:
        """Reload the run; pass new progress and log entries to the callbacks."""
        self.state = self.store.load(self.run_id)
        if self.state is None:
            return None
        if on_progress is None and on_log is None:
            return self.state
        entries = self._entries(self.state)
        for _, entry in entries[self.seen :]:
            try:
                if isinstance(entry, ProgressSet) and on_progress is not None:
                    on_progress(progress_of(entry))
                elif isinstance(entry, LogWritten) and on_log is not None:
                    on_log(log_entry(self.run_id, entry))
            except Exception:  # noqa: BLE001, S112 - a callback never breaks the wait
                continue
        self.seen = len(entries)
        return self.state

    def events(self, poll_interval: float) -> Iterator[Event]:
        """Yield the run's events until it ends or is deleted."""
        state = self.state
        if state is None:
            return
        base = self._base(state)
        if state.status == "leased":
            yield self._leased(state, base)
        if state.is_terminal:
            yield self._end_event(state, base)
            return
        head_n = state.head_n
        while True:
            time.sleep(poll_interval)
            try:
                new = self.store.load(self.run_id)
            except DurablyError:
                continue
            if new is None:
                self.seq += 1
                yield RunDeleteEvent(**{**base, "sequence": self.seq})
                return
            entries = self._entries(new)
            for _, entry in entries[self.seen :]:
                event = self._entry_event(entry, base)
                if event is not None:
                    yield event
            self.seen = len(entries)
            if new.head_n != head_n:
                head_n = new.head_n
                if new.status == "leased":
                    self.seq += 1
                    yield self._leased(new, {**base, "sequence": self.seq})
                elif new.is_terminal:
                    yield self._end_event(new, base)
                    return

    def _base(self, state: RunState) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "job_name": state.record.job_name,
            "labels": dict(state.record.labels),
            "sequence": 0,
        }

    @staticmethod
    def _leased(state: RunState, fields: dict[str, Any]) -> Event:
        claim = state.claim
        return RunLeasedEvent(
            **fields,
            input=state.record.input,
            lease_owner=claim.owner if claim else None,
            lease_generation=state.generation,
        )

    def _end_event(self, state: RunState, base: dict[str, Any]) -> Event:
        end = state.end
        self.seq += 1
        fields = {**base, "sequence": self.seq}
        if end is not None and end.kind == "completed":
            started, ended = parse_time(end.started_at), parse_time(end.at)
            duration = (ended - started).total_seconds() if started and ended else 0.0
            return RunCompleteEvent(**fields, output=end.output, duration=duration)
        if end is not None and end.kind == "failed":
            return RunFailEvent(**fields, error=end.error or "", failed_step_name=end.failed_step)
        return RunCancelEvent(**fields)

    def _entry_event(self, entry: Entry, base: dict[str, Any]) -> Event | None:
        self.seq += 1
        fields = {**base, "sequence": self.seq}
        if isinstance(entry, StepStarted):
            return StepStartEvent(**fields, step_name=entry.name, step_index=entry.index)
        if isinstance(entry, StepEnded):
            step: dict[str, Any] = {"step_name": entry.name, "step_index": entry.index}
            if entry.status == "completed":
                t0, t1 = parse_time(entry.started_at), parse_time(entry.at)
                return StepCompleteEvent(
                    **fields,
                    **step,
                    output=entry.output,
                    duration=(t1 - t0).total_seconds() if t0 and t1 else 0.0,
                )
            if entry.status == "failed":
                return StepFailEvent(**fields, **step, error=entry.error or "")
            return StepCancelEvent(**fields, **step)
        if isinstance(entry, ProgressSet):
            return RunProgressEvent(**fields, progress=progress_of(entry))
        if isinstance(entry, LogWritten):
            return LogWriteEvent(
                **fields, step_name=entry.step, level=entry.level, message=entry.message, data=entry.data
            )
        self.seq -= 1
        return None


def wait_for(
    store: Store,
    run_id: str,
    *,
    timeout: float | None,
    on_progress: Callable[[Progress], object] | None,
    on_log: Callable[[LogEntry], object] | None,
    output: Codec | None = None,
) -> Run[Any]:
    """Wait until a run ends, whichever process executes it; return it if completed.

    Raises:
        NotFoundError: no such run (or it was deleted while waiting).
        RunFailedError: the run failed. CancelledError: it was cancelled.
        WaitTimeoutError: ``timeout`` seconds passed; the run goes on.
    """
    if timeout is not None and (
        isinstance(timeout, bool) or not isinstance(timeout, int | float) or not 0 <= timeout < float("inf")
    ):
        raise ValidationError(f"timeout must be a non-negative number of seconds, got {timeout!r}")
    deadline = None if timeout is None else time.monotonic() + timeout
    tail = RunTail(store, run_id)
    while True:
        state = tail.poll(on_progress=on_progress, on_log=on_log)
        if state is None:
            raise NotFoundError(f"Run not found: {run_id}", run_id=run_id)
        if state.is_terminal:
            run = to_run(store, state, output)
            if run.status is RunStatus.COMPLETED:
                return run
            if run.status is RunStatus.CANCELLED:
                raise CancelledError(run_id)
            raise RunFailedError(run_id, run.error)
        if deadline is not None and time.monotonic() >= deadline:
            raise WaitTimeoutError(
                f"wait_for_run timed out after {timeout}s: run {run_id} is still {state.status}",
                run_id=run_id,
            )
        wait = 0.05 if deadline is None else min(0.05, max(0.0, deadline - time.monotonic()))
        time.sleep(wait)
