"""durably: long-running Python jobs that survive crashes, checkpointed as plain files.

A job is a function made of named steps; each finished step is checkpointed in the run's
directory under a root; when a process dies, the run is replayed from its checkpoints
and carries on where it stopped. No database, no server.
"""

from ._durably import Durably
from ._errors import (
    CancelledError,
    ConflictError,
    DurablyError,
    FormatError,
    LeaseLostError,
    NotFoundError,
    RunFailedError,
    StoreError,
    ValidationError,
    WaitTimeoutError,
)
from ._events import (
    Event,
    LogWriteEvent,
    RunCancelEvent,
    RunCoalescedEvent,
    RunCompleteEvent,
    RunDeleteEvent,
    RunFailEvent,
    RunLeasedEvent,
    RunLeaseRenewedEvent,
    RunProgressEvent,
    RunSignalEvent,
    RunTriggerEvent,
    RunWaitEvent,
    ScheduleFireEvent,
    StepCancelEvent,
    StepCompleteEvent,
    StepFailEvent,
    StepStartEvent,
    WorkerErrorEvent,
)
from ._handle import JobHandle
from ._job import BatchItem, JobDefinition, define_job
from ._models import (
    LogEntry,
    Progress,
    Run,
    RunStatus,
    Schedule,
    StepRecord,
    TriggerAndWaitResult,
    TriggerResult,
)
from ._retry import Retry
from ._step import AsyncStep, Step
from ._workers import WorkerInfo

__version__ = "0.1.0"

__all__ = [
    "AsyncStep",
    "BatchItem",
    "CancelledError",
    "ConflictError",
    "Durably",
    "DurablyError",
    "Event",
    "FormatError",
    "JobDefinition",
    "JobHandle",
    "LeaseLostError",
    "LogEntry",
    "LogWriteEvent",
    "NotFoundError",
    "Progress",
    "Retry",
    "Run",
    "RunCancelEvent",
    "RunCoalescedEvent",
    "RunCompleteEvent",
    "RunDeleteEvent",
    "RunFailEvent",
    "RunFailedError",
    "RunLeaseRenewedEvent",
    "RunLeasedEvent",
    "RunProgressEvent",
    "RunSignalEvent",
    "RunStatus",
    "RunTriggerEvent",
    "RunWaitEvent",
    "Schedule",
    "ScheduleFireEvent",
    "Step",
    "StepCancelEvent",
    "StepCompleteEvent",
    "StepFailEvent",
    "StepRecord",
    "StepStartEvent",
    "StoreError",
    "TriggerAndWaitResult",
    "TriggerResult",
    "ValidationError",
    "WaitTimeoutError",
    "WorkerErrorEvent",
    "WorkerInfo",
    "define_job",
]
