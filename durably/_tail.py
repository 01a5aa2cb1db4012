"""Following one run through its files: waits and ``subscribe`` work across processes."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from ._errors import DurablyError
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
from ._models import LogEntry, Progress
from ._store import RunState, parse_time

if TYPE_CHECKING:
    from ._durably import Durably


class RunTail:
    """Reads what was appended to a run's files since the tail was created."""

    def __init__(self, durably: Durably, run_id: str) -> None:
        self.durably = durably
        self.run_id = run_id
        self.state = durably._store.load(run_id) if isinstance(run_id, str) else None
        self.seen = len(self._records(self.state)) if self.state is not None else 0
        self.seq = 0

    def _records(self, state: RunState | None) -> list[tuple[int, dict[str, Any]]]:
        if state is None or not state.generation:
            return []
        return self.durably._store.journal(state).records

    def poll(self, *, on_progress: Callable[[Progress], object] | None = None,
             on_log: Callable[[LogEntry], object] | None = None) -> RunState | None:
        """Reload the run; pass new progress and log records to the callbacks."""
        self.state = self.durably._store.load(self.run_id)
        if self.state is None:
            return None
        if on_progress is None and on_log is None:
            return self.state
        records = self._records(self.state)
        for _, rec in records[self.seen:]:
            try:
                if rec.get("k") == "p" and on_progress is not None:
                    on_progress(Progress(rec.get("c", 0), rec.get("n"), rec.get("m")))
                elif rec.get("k") == "log" and on_log is not None:
                    on_log(LogEntry(run_id=self.run_id, step_name=rec.get("s"),
                                    level=rec.get("l", "info"), message=rec.get("m", ""),
                                    data=rec.get("d"), created_at=parse_time(rec.get("t"))))  # type: ignore[arg-type]
            except Exception:  # noqa: BLE001, S112 - a callback never breaks the wait
                continue
        self.seen = len(records)
        return self.state

    def events(self, poll_interval: float) -> Iterator[Event]:
        """Yield the run's events until it ends or is deleted."""
        state = self.state
        if state is None:
            return
        base = self._base(state)
        if state.status == "leased":
            yield RunLeasedEvent(**base, input=state.record.get("input"),
                                 lease_owner=(state.head or {}).get("owner"),
                                 lease_generation=state.generation)
        if state.status in ("completed", "failed", "cancelled"):
            yield self._end_event(state, base)
            return
        head_n = state.head_n
        while True:
            time.sleep(poll_interval)
            try:
                new = self.durably._store.load(self.run_id)
            except DurablyError:
                continue
            if new is None:
                self.seq += 1
                yield RunDeleteEvent(**{**base, "sequence": self.seq})
                return
            records = self._records(new)
            for _, rec in records[self.seen:]:
                event = self._record_event(rec, base)
                if event is not None:
                    yield event
            self.seen = len(records)
            if new.head_n != head_n:
                head_n = new.head_n
                if new.status == "leased":
                    self.seq += 1
                    yield RunLeasedEvent(**{**base, "sequence": self.seq},
                                         input=new.record.get("input"),
                                         lease_owner=(new.head or {}).get("owner"),
                                         lease_generation=new.generation)
                else:
                    yield self._end_event(new, base)
                    return

    def _base(self, state: RunState) -> dict[str, Any]:
        return {"run_id": self.run_id, "job_name": state.record["job_name"],
                "labels": dict(state.record.get("labels") or {}), "sequence": 0}

    def _end_event(self, state: RunState, base: dict[str, Any]) -> Event:
        head = state.head or {}
        self.seq += 1
        fields = {**base, "sequence": self.seq}
        if state.status == "completed":
            started = parse_time(head.get("started_at"))
            ended = parse_time(head.get("at"))
            duration = (ended - started).total_seconds() if started and ended else 0.0
            return RunCompleteEvent(**fields, output=head.get("output"), duration=duration)
        if state.status == "failed":
            return RunFailEvent(**fields, error=head.get("error") or "",
                                failed_step_name=head.get("failed_step"))
        return RunCancelEvent(**fields)

    def _record_event(self, rec: dict[str, Any], base: dict[str, Any]) -> Event | None:
        self.seq += 1
        fields = {**base, "sequence": self.seq}
        kind = rec.get("k")
        step = {"step_name": rec.get("s", ""), "step_index": int(rec.get("i", 0))}
        if kind == "start":
            return StepStartEvent(**fields, **step)
        if kind == "done":
            t0, t1 = parse_time(rec.get("t0")), parse_time(rec.get("t"))
            return StepCompleteEvent(**fields, **step, output=rec.get("o"),
                                     duration=(t1 - t0).total_seconds() if t0 and t1 else 0.0)
        if kind == "fail":
            return StepFailEvent(**fields, **step, error=rec.get("e", ""))
        if kind == "cancel":
            return StepCancelEvent(**fields, **step)
        if kind == "p":
            return RunProgressEvent(**fields, progress=Progress(rec.get("c", 0), rec.get("n"), rec.get("m")))
        if kind == "log":
            return LogWriteEvent(**fields, step_name=rec.get("s"), level=rec.get("l", "info"),
                                 message=rec.get("m", ""), data=rec.get("d"))
        self.seq -= 1
        return None
