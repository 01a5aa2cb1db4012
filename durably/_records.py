"""The on-disk format: every record durably writes, built and parsed in this one module.

A root holds five kinds of records, each a JSON object with ``"v"`` (the format version):

- ``run.json`` — :class:`RunRecord`, written once when a run is triggered;
- ``s.<n>`` — the run's state chain, one :class:`ClaimState`, :class:`WaitState`,
  :class:`ReleaseState` or :class:`EndState` per file, each published once
  (``docs/architecture.md``: the state chain);
- ``g.<hash>`` — a :class:`SignalRecord` delivered to a run, published once;
- key records and key slots — :class:`KeyRecord` (idempotency keys, a concurrency
  key's pending run) and :class:`ExecSlot` (the run executing a concurrency key);
- journal entries — one framed line each in ``j.<g>`` and ``journal.jsonl``: their own
  module, ``_entries.py``, since a journal's format is read on the hot path of a replay.

Builders return what is written (bytes, or a dict for the journal's framing); parsers
take what was read and return a typed record, or None for anything that is not a valid
record of this version (readers treat that as "not written yet", invariant 1).
Nothing else in durably reads a stored record by its keys. Times are ISO-8601 UTC
strings with milliseconds and ``Z``, as the TypeScript original writes them.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from typing import Any, Final, Literal

import orjson

from . import _files as files
from ._errors import FormatError
from ._times import Clock as Clock  # noqa: PLC0414 - re-exported
from ._times import iso as iso  # noqa: PLC0414 - re-exported
from ._times import iso_epoch as iso_epoch  # noqa: PLC0414 - re-exported
from ._times import iso_ms as iso_ms  # noqa: PLC0414 - re-exported
from ._times import now_iso as now_iso  # noqa: PLC0414 - re-exported
from ._times import parse_time as parse_time  # noqa: PLC0414 - re-exported
from ._times import system_clock as system_clock  # noqa: PLC0414 - re-exported

log = logging.getLogger("durably")

FORMAT_VERSION: Final = 1
"""Version of every record durably writes; newer records are refused, never rewritten."""

TERMINAL_KINDS: Final = frozenset({"completed", "failed", "cancelled"})
"""State kinds (and run statuses) that end a run; nothing follows them."""

EndKind = Literal["completed", "failed", "cancelled"]


def dumps(record: dict[str, Any]) -> bytes:
    """Serialise a record (orjson)."""
    return orjson.dumps(record)


_warned: set[str] = set()


def warn_once(message: str) -> None:
    """Log a warning about a damaged or incomplete record once per process (readers poll
    often, and a file still arriving from a sync tool reads as damaged for a while)."""
    if message not in _warned:
        _warned.add(message)
        log.warning("%s", message)


def parse_json(data: bytes, path: str) -> dict[str, Any] | None:
    """A record file's bytes as a dict; None if incomplete (empty, truncated, NUL-filled,
    damaged) or not a durably record (no integer ``"v"``).

    Raises:
        FormatError: the record names a newer format version (it is never rewritten).
    """
    try:
        record = orjson.loads(data)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(record, dict):
        return None
    version = record.get("v")
    if not isinstance(version, int) or isinstance(version, bool):
        return None
    if version > FORMAT_VERSION:
        raise FormatError(
            f"{path} was written by a newer durably (format {version}, this one reads "
            f"{FORMAT_VERSION}); it is left untouched",
            path=path,
        )
    return record


def read_json(path: str) -> dict[str, Any] | None:
    """Read and parse a record file; None when missing or incomplete (see :func:`parse_json`).

    Raises:
        StoreError: it is not a regular file, or larger than any record durably writes.
        FormatError: it was written by a newer durably.
    """
    data = files.read_bytes(path, files.MAX_RECORD_BYTES)
    return None if data is None else parse_json(data, path)


def str_or_none(value: object) -> str | None:
    """``value`` if it is a string, else None."""
    return value if isinstance(value, str) else None


def int_or(value: object, default: int = 0) -> int:
    """``value`` if it is an int (not a bool), else ``default``."""
    return value if isinstance(value, int) and not isinstance(value, bool) else default


def _cuts(value: object) -> dict[str, int]:
    if not isinstance(value, dict):
        return {}
    return {str(k): v for k, v in value.items() if isinstance(v, int) and not isinstance(v, bool)}


# -- run.json ----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class RunRecord:
    """``run.json``: what a trigger asked for. Written once; a run exists once it does.
    ``batch``: its ``batch_trigger`` (invisible until the batch's commit mark exists);
    ``wake_at``: a delayed run's start; ``parent_id``: the run that invoked it; ``after``:
    the run it is queued behind (``coalesce="queue"``); ``resumed_from``: the ended run
    whose checkpoints it replays (``durably.resume``)."""

    id: str
    job_name: str
    input: Any
    labels: dict[str, str]
    idempotency_key: str | None
    concurrency_key: str | None
    created_at: str
    batch: str | None = None
    wake_at: str | None = None
    parent_id: str | None = None
    after: str | None = None
    resumed_from: str | None = None

    def to_bytes(self) -> bytes:
        """The bytes of ``run.json``."""
        body: dict[str, Any] = {
            "v": FORMAT_VERSION,
            "id": self.id,
            "job_name": self.job_name,
            "input": self.input,
            "labels": self.labels,
            "idempotency_key": self.idempotency_key,
            "concurrency_key": self.concurrency_key,
            "created_at": self.created_at,
        }
        for name in ("batch", "wake_at", "parent_id", "after", "resumed_from"):
            value = getattr(self, name)
            if value is not None:
                body[name] = value
        return dumps(body)


def parse_run_record(data: dict[str, Any]) -> RunRecord | None:
    """A ``run.json`` read back; None if it is not one."""
    run_id, job = data.get("id"), data.get("job_name")
    if not isinstance(run_id, str) or not isinstance(job, str):
        return None
    labels = data.get("labels")
    batch = data.get("batch")
    return RunRecord(
        id=run_id,
        job_name=job,
        input=data.get("input"),
        labels={str(k): str(v) for k, v in labels.items()} if isinstance(labels, dict) else {},
        idempotency_key=str_or_none(data.get("idempotency_key")),
        concurrency_key=str_or_none(data.get("concurrency_key")),
        created_at=str_or_none(data.get("created_at")) or "",
        batch=None if batch is None else str(batch),
        wake_at=str_or_none(data.get("wake_at")),
        parent_id=str_or_none(data.get("parent_id")),
        after=str_or_none(data.get("after")),
        resumed_from=str_or_none(data.get("resumed_from")),
    )


# -- the state chain -----------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class ClaimState:
    """``s.<n>`` of a claim: generation ``gen`` leased to ``owner`` on ``host``.

    ``cut`` holds the valid length of each earlier journal when the claim was decided:
    readers ignore bytes a stale owner appended past it.
    """

    gen: int
    at: str
    started_at: str
    owner: str
    host: str
    pid: int
    lease: float
    cut: dict[str, int]
    kind: Literal["claim"] = "claim"


@dataclasses.dataclass(frozen=True, slots=True)
class EndState:
    """``s.<n>`` of the end of a run: completed, failed or cancelled. Nothing follows it.

    ``gen`` is the generation whose owner (or the canceller, or the run timeout) ended
    the run; ``cut`` fixes the valid length of every journal. ``owner`` is the lease
    owner that ended its own execution; None when another process ended the run (a
    cancel, a timeout), whose owner may still be running the step it was in.
    """

    kind: EndKind
    gen: int
    at: str
    started_at: str | None
    cut: dict[str, int]
    output: Any = None
    steps: int = 0
    progress: dict[str, Any] | None = None
    error: str | None = None
    failed_step: str | None = None
    traceback: str | None = None
    reason: str | None = None
    owner: str | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class ReleaseState:
    """``s.<n>`` of a lease taken away: the owner of generation ``gen`` is fenced (its
    lease expired, or its concurrency key was taken over), and the run is pending again,
    claimable by any worker of its job. ``cut`` fixes the valid length of ``j.<gen>``."""

    gen: int
    at: str
    started_at: str | None
    cut: dict[str, int]
    reason: str
    kind: Literal["release"] = "release"


@dataclasses.dataclass(frozen=True, slots=True)
class WaitState:
    """``s.<n>`` of a run that waits without holding a worker, published by the owner of
    generation ``gen`` (``cut`` fixes the valid length of ``j.<gen>``): for a time
    (``wake_at``), a signal named ``signal`` (until ``wake_at``, its timeout, if any),
    or the end of the child run ``child``. Any worker claims it once the wait is over.
    ``waiting_for`` is the line users read (``"sleep nap"``, ``"signal approval"``).
    """

    gen: int
    at: str
    started_at: str | None
    cut: dict[str, int]
    waiting_for: str
    wake_at: str | None = None
    signal: str | None = None
    child: str | None = None
    kind: Literal["wait"] = "wait"


StateRecord = ClaimState | EndState | ReleaseState | WaitState


def ending(
    kind: EndKind,
    *,
    output: Any = None,
    steps: int = 0,
    progress: dict[str, Any] | None = None,
    error: str | None = None,
    failed_step: str | None = None,
    traceback: str | None = None,
    reason: str | None = None,
    owner: str | None = None,
) -> EndState:
    """An end for the store to publish (it fills in the time, generation and cuts)."""
    return EndState(
        kind=kind,
        gen=0,
        at="",
        started_at=None,
        cut={},
        output=output,
        steps=steps,
        progress=progress,
        error=error,
        failed_step=failed_step,
        traceback=traceback,
        reason=reason,
        owner=owner,
    )


def release(reason: str) -> ReleaseState:
    """A release for the store to publish (it fills in the time, generation and cuts)."""
    return ReleaseState(gen=0, at="", started_at=None, cut={}, reason=reason)


def waiting(
    waiting_for: str, *, wake_at: str | None = None, signal: str | None = None, child: str | None = None
) -> WaitState:
    """A wait for the store to publish (it fills in the time, generation and cuts)."""
    return WaitState(
        gen=0,
        at="",
        started_at=None,
        cut={},
        waiting_for=waiting_for,
        wake_at=wake_at,
        signal=signal,
        child=child,
    )


def claim_state(
    *, gen: int, at: str, started_at: str, owner: str, host: str, lease: float, cut: dict[str, int]
) -> ClaimState:
    """A claim made by this process."""
    return ClaimState(
        gen=gen, at=at, started_at=started_at, owner=owner, host=host, pid=os.getpid(), lease=lease, cut=cut
    )


def state_bytes(state: StateRecord, run: str | None = None) -> bytes:
    """The bytes of a state file. An end's ``output`` may be an ``orjson.Fragment``. A
    claim given its ``run`` reads as its :class:`ExecSlot` too (one file, two names)."""
    body: dict[str, Any] = {
        "v": FORMAT_VERSION,
        "kind": state.kind,
        "gen": state.gen,
        "at": state.at,
        "started_at": state.started_at,
        "cut": state.cut,
    }
    if isinstance(state, ClaimState):
        body.update(owner=state.owner, host=state.host, pid=state.pid, lease=state.lease)
        if run is not None:
            body["run"] = run
        return dumps(body)
    if isinstance(state, ReleaseState):
        body["reason"] = state.reason
        return dumps(body)
    if isinstance(state, WaitState):
        body["waiting_for"] = state.waiting_for
        for name in ("wake_at", "signal", "child"):
            value = getattr(state, name)
            if value is not None:
                body[name] = value
        return dumps(body)
    for name in ("output", "steps", "progress", "error", "failed_step", "traceback", "reason", "owner"):
        value = getattr(state, name)
        if value is not None:
            body[name] = value
    return dumps(body)


def parse_state(data: dict[str, Any]) -> StateRecord | None:
    """A state file read back; None if it is not one (an unknown kind is damage)."""
    kind = data.get("kind")
    if kind == "claim":
        lease = data.get("lease", 30.0)
        return ClaimState(
            gen=int_or(data.get("gen")),
            at=str_or_none(data.get("at")) or "",
            started_at=str_or_none(data.get("started_at")) or str_or_none(data.get("at")) or "",
            owner=str_or_none(data.get("owner")) or "",
            host=str_or_none(data.get("host")) or "",
            pid=int_or(data.get("pid")),
            lease=float(lease) if isinstance(lease, int | float) else 30.0,
            cut=_cuts(data.get("cut")),
        )
    if kind == "release":
        return ReleaseState(
            gen=int_or(data.get("gen")),
            at=str_or_none(data.get("at")) or "",
            started_at=str_or_none(data.get("started_at")),
            cut=_cuts(data.get("cut")),
            reason=str_or_none(data.get("reason")) or "",
        )
    if kind == "wait":
        return WaitState(
            gen=int_or(data.get("gen")),
            at=str_or_none(data.get("at")) or "",
            started_at=str_or_none(data.get("started_at")),
            cut=_cuts(data.get("cut")),
            waiting_for=str_or_none(data.get("waiting_for")) or "",
            wake_at=str_or_none(data.get("wake_at")),
            signal=str_or_none(data.get("signal")),
            child=str_or_none(data.get("child")),
        )
    if kind not in TERMINAL_KINDS:
        return None
    progress = data.get("progress")
    return EndState(
        kind=kind,
        gen=int_or(data.get("gen")),
        at=str_or_none(data.get("at")) or "",
        started_at=str_or_none(data.get("started_at")),
        cut=_cuts(data.get("cut")),
        output=data.get("output"),
        steps=int_or(data.get("steps")),
        progress=progress if isinstance(progress, dict) else None,
        error=str_or_none(data.get("error")),
        failed_step=str_or_none(data.get("failed_step")),
        traceback=str_or_none(data.get("traceback")),
        reason=str_or_none(data.get("reason")),
        owner=str_or_none(data.get("owner")),
    )


@dataclasses.dataclass(frozen=True, slots=True)
class RunState:
    """What the files of one run say at one moment: its record and the head of its chain.

    ``head_n`` is the number of the head state file (0: none yet, the run is pending,
    or waiting to start if it was triggered with a delay; a release makes it pending
    again).
    """

    run_id: str
    record: RunRecord
    head_n: int
    head: StateRecord | None

    @property
    def status(self) -> str:
        """``pending``, ``waiting``, ``leased``, ``completed``, ``failed`` or ``cancelled``."""
        head = self.head
        if head is None:
            return "pending" if self.record.wake_at is None else "waiting"
        if isinstance(head, ReleaseState):
            return "pending"
        if isinstance(head, WaitState):
            return "waiting"
        return "leased" if isinstance(head, ClaimState) else head.kind

    @property
    def not_started(self) -> bool:
        """True while the run waits for its first claim (pending, or delayed)."""
        return self.head is None

    @property
    def wait(self) -> WaitState | None:
        """The head, if it is a wait."""
        return self.head if isinstance(self.head, WaitState) else None

    @property
    def wake_at(self) -> str | None:
        """When a waiting run becomes claimable by time (None: not waiting, or waiting
        only for a signal or a child)."""
        if self.head is None:
            return self.record.wake_at
        return self.head.wake_at if isinstance(self.head, WaitState) else None

    @property
    def is_terminal(self) -> bool:
        """True once the run has ended."""
        return isinstance(self.head, EndState)

    @property
    def generation(self) -> int:
        """The latest lease generation (0 if never claimed)."""
        return 0 if self.head is None else self.head.gen

    @property
    def cuts(self) -> dict[str, int]:
        """Valid lengths of earlier journals, fixed by later claims or by the end (a copy)."""
        return {} if self.head is None else dict(self.head.cut)

    @property
    def started_at(self) -> str | None:
        """When the run was first claimed (None if never)."""
        return None if self.head is None else self.head.started_at

    @property
    def claim(self) -> ClaimState | None:
        """The head, if it is a claim."""
        return self.head if isinstance(self.head, ClaimState) else None

    @property
    def end(self) -> EndState | None:
        """The head, if it is an end."""
        return self.head if isinstance(self.head, EndState) else None


# -- keys ------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class KeyRecord:
    """An idempotency key (``keys/i``) or a slot of a concurrency key's pending chain
    (``keys/p``): the run it is bound to, and the host of the trigger that bound it."""

    run: str
    job: str
    host: str

    def to_bytes(self) -> bytes:
        """The bytes of the key file."""
        return dumps({"v": FORMAT_VERSION, "run": self.run, "job": self.job, "host": self.host})


@dataclasses.dataclass(frozen=True, slots=True)
class ExecSlot:
    """A slot of a concurrency key's execution chain (``keys/x``): the run (and the
    generation) executing the key, claimed on ``host`` for ``lease`` seconds. It is the
    run's claim itself, a second name of its state file (:func:`state_bytes` with ``run``;
    a slot of an older version holds only these fields)."""

    run: str
    gen: int
    host: str
    lease: float

    @staticmethod
    def freed(run_id: str) -> bytes:
        """The bytes of a slot that frees the key: the execution of ``run_id`` stopped."""
        return dumps({"v": FORMAT_VERSION, "run": None, "freed": run_id})


def key_run(data: dict[str, Any] | None) -> str | None:
    """The run id a key record or slot names (unchecked), or None."""
    return None if data is None else str_or_none(data.get("run"))


def parse_key(data: dict[str, Any] | None) -> KeyRecord | None:
    """A key record read back; None if missing or not one."""
    run = key_run(data)
    if data is None or run is None:
        return None
    return KeyRecord(
        run=run, job=str_or_none(data.get("job")) or "", host=str_or_none(data.get("host")) or ""
    )


def parse_exec_slot(data: dict[str, Any] | None) -> ExecSlot | None:
    """An execution slot read back; None if missing or not one."""
    run = key_run(data)
    if data is None or run is None:
        return None
    lease = data.get("lease", 30.0)
    return ExecSlot(
        run=run,
        gen=int_or(data.get("gen")),
        host=str_or_none(data.get("host")) or "",
        lease=float(lease) if isinstance(lease, int | float) else 30.0,
    )


# -- signals -------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class SignalRecord:
    """A signal delivered to a run (``g.<hash>`` in its directory), published once: a
    second signal of the same name is refused."""

    name: str
    data: Any
    at: str

    def to_bytes(self) -> bytes:
        """The bytes of the signal file."""
        return dumps({"v": FORMAT_VERSION, "name": self.name, "data": self.data, "at": self.at})


def parse_signal(data: dict[str, Any] | None) -> SignalRecord | None:
    """A signal file read back; None if missing or not one."""
    if data is None or not isinstance(data.get("name"), str):
        return None
    return SignalRecord(name=data["name"], data=data.get("data"), at=str_or_none(data.get("at")) or "")


def format_bytes() -> bytes:
    """The bytes of ``format.json``, which names a directory as a durably root."""
    return dumps({"v": FORMAT_VERSION, "format": "durably"})


def is_format_record(data: dict[str, Any]) -> bool:
    """Whether ``format.json`` names a durably root."""
    return data.get("format") == "durably"
