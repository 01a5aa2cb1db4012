"""Events: what happened to runs, delivered to listeners registered with ``on()``.

Field names follow the TypeScript original in snake_case; ``duration`` is in seconds.
"""

from __future__ import annotations

import dataclasses
import itertools
import threading
import typing
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Literal

from ._errors import ValidationError
from ._models import Progress

EventType = Literal[
    "run:trigger",
    "run:coalesced",
    "run:leased",
    "run:lease-renewed",
    "run:complete",
    "run:fail",
    "run:cancel",
    "run:delete",
    "run:progress",
    "run:wait",
    "run:signal",
    "step:start",
    "step:complete",
    "step:fail",
    "step:cancel",
    "log:write",
    "worker:error",
    "schedule:fire",
]


@dataclasses.dataclass(frozen=True, kw_only=True)
class Event:
    """Fields every event has. ``sequence`` counts this instance's events from 1."""

    type: str
    run_id: str | None
    job_name: str | None
    labels: dict[str, str]
    sequence: int = 0
    timestamp: datetime = dataclasses.field(default_factory=lambda: datetime.now(UTC))


@dataclasses.dataclass(frozen=True, kw_only=True)
class RunTriggerEvent(Event):
    """A run was created (``run:trigger``)."""

    type: str = "run:trigger"
    input: Any = None


@dataclasses.dataclass(frozen=True, kw_only=True)
class RunCoalescedEvent(Event):
    """A trigger was coalesced onto a pending run (``run:coalesced``)."""

    type: str = "run:coalesced"
    skipped_input: Any = None
    skipped_labels: dict[str, str] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True, kw_only=True)
class RunLeasedEvent(Event):
    """A worker claimed the run and starts executing it (``run:leased``)."""

    type: str = "run:leased"
    input: Any = None
    lease_owner: str | None = None
    lease_expires_at: datetime | None = None
    lease_generation: int = 0


@dataclasses.dataclass(frozen=True, kw_only=True)
class RunLeaseRenewedEvent(Event):
    """The owner extended its lease (``run:lease-renewed``)."""

    type: str = "run:lease-renewed"
    lease_owner: str | None = None
    lease_expires_at: datetime | None = None


@dataclasses.dataclass(frozen=True, kw_only=True)
class RunCompleteEvent(Event):
    """The run completed (``run:complete``); ``duration`` in seconds."""

    type: str = "run:complete"
    output: Any = None
    duration: float = 0.0


@dataclasses.dataclass(frozen=True, kw_only=True)
class RunFailEvent(Event):
    """The run failed (``run:fail``)."""

    type: str = "run:fail"
    error: str = ""
    failed_step_name: str | None = None


@dataclasses.dataclass(frozen=True, kw_only=True)
class RunCancelEvent(Event):
    """The run was cancelled (``run:cancel``)."""

    type: str = "run:cancel"


@dataclasses.dataclass(frozen=True, kw_only=True)
class RunDeleteEvent(Event):
    """The run was deleted (``run:delete``)."""

    type: str = "run:delete"


@dataclasses.dataclass(frozen=True, kw_only=True)
class RunWaitEvent(Event):
    """A started run began waiting, holding no worker (``run:wait``): ``waiting_for`` says
    for what, ``wake_at`` until when (None: until a signal or a child run)."""

    type: str = "run:wait"
    waiting_for: str = ""
    wake_at: datetime | None = None


@dataclasses.dataclass(frozen=True, kw_only=True)
class RunSignalEvent(Event):
    """A signal was delivered to the run (``run:signal``)."""

    type: str = "run:signal"
    name: str = ""


@dataclasses.dataclass(frozen=True, kw_only=True)
class RunProgressEvent(Event):
    """The run reported progress (``run:progress``)."""

    type: str = "run:progress"
    progress: Progress | None = None


@dataclasses.dataclass(frozen=True, kw_only=True)
class StepStartEvent(Event):
    """A step started executing (``step:start``); replayed steps emit nothing."""

    type: str = "step:start"
    step_name: str = ""
    step_index: int = 0


@dataclasses.dataclass(frozen=True, kw_only=True)
class StepCompleteEvent(Event):
    """A step completed and was checkpointed (``step:complete``)."""

    type: str = "step:complete"
    step_name: str = ""
    step_index: int = 0
    output: Any = None
    duration: float = 0.0


@dataclasses.dataclass(frozen=True, kw_only=True)
class StepFailEvent(Event):
    """A step raised (``step:fail``)."""

    type: str = "step:fail"
    step_name: str = ""
    step_index: int = 0
    error: str = ""


@dataclasses.dataclass(frozen=True, kw_only=True)
class StepCancelEvent(Event):
    """A step ended because its run was cancelled (``step:cancel``)."""

    type: str = "step:cancel"
    step_name: str = ""
    step_index: int = 0


@dataclasses.dataclass(frozen=True, kw_only=True)
class LogWriteEvent(Event):
    """A log line was written (``log:write``)."""

    type: str = "log:write"
    step_name: str | None = None
    level: str = "info"
    message: str = ""
    data: Any = None


@dataclasses.dataclass(frozen=True, kw_only=True)
class WorkerErrorEvent(Event):
    """Something went wrong in the worker itself (``worker:error``); it keeps going."""

    type: str = "worker:error"
    error: str = ""
    context: str = ""


@dataclasses.dataclass(frozen=True, kw_only=True)
class ScheduleFireEvent(Event):
    """A schedule's tick created its run (``schedule:fire``); ``scheduled_at`` is the tick."""

    type: str = "schedule:fire"
    schedule_name: str = ""
    scheduled_at: datetime | None = None


EVENT_TYPES: tuple[str, ...] = typing.get_args(EventType)

Listener = Callable[[Any], object]


class Emitter:
    """Synchronous, thread-safe event dispatch with a per-instance sequence."""

    def __init__(self) -> None:
        self._listeners: dict[str, list[Listener]] = {}
        self._lock = threading.Lock()
        self._counter = itertools.count(1)

    def on(self, event_type: str, listener: Listener) -> Callable[[], None]:
        """Register ``listener``; return a function that unregisters it."""
        if event_type not in EVENT_TYPES and event_type != "*":
            raise ValidationError(f"unknown event type {event_type!r}; known: {', '.join(EVENT_TYPES)}")
        with self._lock:
            self._listeners.setdefault(event_type, []).append(listener)

        def unsubscribe() -> None:
            with self._lock:
                listeners = self._listeners.get(event_type, [])
                if listener in listeners:
                    listeners.remove(listener)

        return unsubscribe

    def wants(self, event_type: str) -> bool:
        """True if a listener would receive events of ``event_type``."""
        return bool(self._listeners.get(event_type) or self._listeners.get("*"))

    def skip(self) -> None:
        """Count an event nobody listens to (the sequence still advances), cheaply."""
        next(self._counter)

    def emit(self, event: Event) -> Event:
        """Stamp ``event`` with the next sequence and deliver it; never raises."""
        object.__setattr__(event, "sequence", next(self._counter))
        with self._lock:
            listeners = [*self._listeners.get(event.type, ()), *self._listeners.get("*", ())]
        for listener in listeners:
            try:
                listener(event)
            except Exception as exc:  # noqa: BLE001 - a listener never breaks the worker
                if event.type == "worker:error":
                    continue
                self.emit(
                    WorkerErrorEvent(
                        run_id=event.run_id,
                        job_name=event.job_name,
                        labels=event.labels,
                        error=f"{type(exc).__name__}: {exc}",
                        context=f"listener:{event.type}",
                    )
                )
        return event
