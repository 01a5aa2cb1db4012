"""Journal entries: one framed line each in ``j.<g>`` and ``journal.jsonl``.

:class:`StepStarted`, :class:`StepEnded`, :class:`ProgressSet` and :class:`LogWritten`
are what a run's journals say. Their keys are short (a journal holds at least one line
per step); :class:`J` declares them. Builders return the dict a journal frames (values
may be ``orjson.Fragment``); :func:`parse_entry` returns a typed entry, or None for a
kind this version does not know (skipped by readers). The rest of the on-disk format is
in ``_records.py``.
"""

from __future__ import annotations

from typing import Any, Final, Literal

import orjson

from ._records import int_or

StepStatus = Literal["completed", "failed", "cancelled"]


class J:
    """The short keys of journal entries, declared once."""

    KIND: Final = "k"
    STEP: Final = "s"
    INDEX: Final = "i"
    AT: Final = "t"
    STARTED: Final = "t0"
    OUTPUT: Final = "o"
    DROPPED: Final = "dropped"
    ERROR: Final = "e"
    ERROR_TYPE: Final = "et"
    TRACEBACK: Final = "tb"
    CURRENT: Final = "c"
    TOTAL: Final = "n"
    MESSAGE: Final = "m"
    LEVEL: Final = "l"
    DATA: Final = "d"
    ATTEMPT: Final = "a"
    """The attempt of a step (1, 2, … when it is retried; absent: 1)."""
    UNTIL: Final = "w"
    """When a step that waits (a sleep, a retry, a signal's timeout) is over."""
    CHILD_RUN: Final = "r"
    WAITS: Final = "wt"
    """Set on the start of a step that waits (a sleep, a signal, a child run)."""
    GEN: Final = "g"
    """Generation of an entry in a compacted ``journal.jsonl`` (``j.<g>`` names it)."""

    START: Final = "start"
    DONE: Final = "done"
    FAIL: Final = "fail"
    CANCEL: Final = "cancel"
    PROGRESS: Final = "p"
    LOG: Final = "log"
    CHILD: Final = "child"
    END: Final = "end"
    """The last line of a compacted ``journal.jsonl``: a copy of the run's end state."""
    STATE: Final = "state"


_END_KINDS: Final[dict[str, StepStatus]] = {J.DONE: "completed", J.FAIL: "failed", J.CANCEL: "cancelled"}
_KIND_OF_STATUS: Final = {v: k for k, v in _END_KINDS.items()}


class _Entry:
    """A journal entry: a view over its parsed line (cheap to make: a replay makes one
    per line, and reads the fields of few of them)."""

    __slots__ = ("raw",)

    def __init__(self, raw: dict[str, Any]) -> None:
        self.raw = raw

    @property
    def at(self) -> str:
        """When it was written (ISO-8601 UTC)."""
        return _text(self.raw.get(J.AT)) or ""

    def __eq__(self, other: object) -> bool:
        return other.__class__ is self.__class__ and other.raw == self.raw

    def __hash__(self) -> int:
        return hash((self.__class__, orjson.dumps(self.raw, option=orjson.OPT_SORT_KEYS)))

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}({self.raw!r})"


class _StepEntry(_Entry):
    __slots__ = ()

    @property
    def name(self) -> str:
        """The step's name."""
        return self.raw[J.STEP]  # type: ignore[no-any-return]  # checked by parse_entry

    @property
    def index(self) -> int:
        """The step's index in its execution."""
        return _index(self.raw.get(J.INDEX))

    @property
    def attempt(self) -> int:
        """The attempt (1 unless the step is retried)."""
        return _index(self.raw.get(J.ATTEMPT)) or 1

    @property
    def until(self) -> str | None:
        """When the wait of this step is over (a sleep, the pause before the next attempt,
        a signal's timeout), if it waits."""
        return _text(self.raw.get(J.UNTIL))


class StepStarted(_StepEntry):
    """A step began executing (written without sync: it only informs watchers, unless
    the step waits: then it fixes when the wait is over)."""

    __slots__ = ()

    @property
    def waits(self) -> bool:
        """Whether the step waits (a sleep, a signal, a child run)."""
        return self.raw.get(J.WAITS) is True


class StepEnded(_StepEntry):
    """A step ended: ``completed`` (its checkpoint, with ``output``), ``failed`` or
    ``cancelled``. ``dropped``: the output was dropped when the run completed."""

    __slots__ = ()

    @property
    def status(self) -> StepStatus:
        """``completed``, ``failed`` or ``cancelled``."""
        return _END_KINDS[self.raw[J.KIND]]

    @property
    def started_at(self) -> str | None:
        """When the step began."""
        return _text(self.raw.get(J.STARTED))

    @property
    def output(self) -> Any:
        """A completed step's value, as stored (JSON data)."""
        return self.raw.get(J.OUTPUT)

    @property
    def dropped(self) -> bool:
        """Whether the output was dropped when the run completed."""
        return bool(self.raw.get(J.DROPPED))

    @property
    def error(self) -> str | None:
        """A failed step's error."""
        return _text(self.raw.get(J.ERROR))

    @property
    def error_type(self) -> str | None:
        """The name of a failed step's exception type."""
        return _text(self.raw.get(J.ERROR_TYPE))

    @property
    def traceback(self) -> str | None:
        """A failed step's traceback."""
        return _text(self.raw.get(J.TRACEBACK))


class ProgressSet(_Entry):
    """``step.progress(current, total, message)``."""

    __slots__ = ()

    @property
    def current(self) -> float:
        """How far."""
        return _number(self.raw.get(J.CURRENT, 0), 0) or 0

    @property
    def total(self) -> float | None:
        """Out of how much, if known."""
        return _number(self.raw.get(J.TOTAL), None)

    @property
    def message(self) -> str | None:
        """What it is doing."""
        return _text(self.raw.get(J.MESSAGE))


class LogWritten(_Entry):
    """``step.log.<level>(message, data)``, written in step ``step`` (None: outside steps)."""

    __slots__ = ()

    @property
    def step(self) -> str | None:
        """The step it was written in."""
        return _text(self.raw.get(J.STEP))

    @property
    def level(self) -> str:
        """``info``, ``warn`` or ``error``."""
        return _text(self.raw.get(J.LEVEL)) or "info"

    @property
    def message(self) -> str:
        """The message."""
        return _text(self.raw.get(J.MESSAGE)) or ""

    @property
    def data(self) -> Any:
        """Its data (JSON)."""
        return self.raw.get(J.DATA)

    @property
    def position(self) -> int | None:
        """Outside steps: the index of the step that came next when it was written (so a
        replay knows which lines an earlier execution wrote already); None in a step."""
        value = self.raw.get(J.INDEX)
        return value if value.__class__ is int else None


class ChildInvoked(_Entry):
    """``step.invoke`` triggered child run ``child`` in step ``step`` (so a cancel of the
    parent finds its children without reading the root)."""

    __slots__ = ()

    @property
    def step(self) -> str:
        """The invoking step's name."""
        return _text(self.raw.get(J.STEP)) or ""

    @property
    def child(self) -> str:
        """The child run's id."""
        return _text(self.raw.get(J.CHILD_RUN)) or ""


Entry = StepStarted | StepEnded | ProgressSet | LogWritten | ChildInvoked


def _extras(entry: dict[str, Any], attempt: int, until: str | None) -> dict[str, Any]:
    if attempt > 1:
        entry[J.ATTEMPT] = attempt
    if until is not None:
        entry[J.UNTIL] = until
    return entry


def step_started(
    name: str, index: int, at: str, *, attempt: int = 1, until: str | None = None, waits: bool = False
) -> dict[str, Any]:
    """The journal entry of a step that begins (``waits``: a step that waits, ``until``
    then if it has a time)."""
    entry = _extras({J.KIND: J.START, J.STEP: name, J.INDEX: index, J.AT: at}, attempt, until)
    if waits:
        entry[J.WAITS] = True
    return entry


def step_completed(
    name: str, index: int, started_at: str, at: str, output: Any, *, attempt: int = 1
) -> dict[str, Any]:
    """The journal entry of a checkpoint; ``output`` may be an ``orjson.Fragment``."""
    entry = {J.KIND: J.DONE, J.STEP: name, J.INDEX: index, J.STARTED: started_at, J.AT: at, J.OUTPUT: output}
    return _extras(entry, attempt, None)


def step_failed(
    name: str,
    index: int,
    started_at: str,
    at: str,
    *,
    error: str,
    error_type: str,
    traceback: str,
    attempt: int = 1,
    until: str | None = None,
) -> dict[str, Any]:
    """The journal entry of a step that raised (``until``: when its next attempt may run)."""
    entry = {
        J.KIND: J.FAIL,
        J.STEP: name,
        J.INDEX: index,
        J.STARTED: started_at,
        J.AT: at,
        J.ERROR: error,
        J.TRACEBACK: traceback,
        J.ERROR_TYPE: error_type,
    }
    return _extras(entry, attempt, until)


def child_invoked(step: str, child: str, at: str) -> dict[str, Any]:
    """The journal entry of a child run triggered by ``step.invoke``."""
    return {J.KIND: J.CHILD, J.STEP: step, J.CHILD_RUN: child, J.AT: at}


def step_cancelled(name: str, index: int, at: str, *, attempt: int = 1) -> dict[str, Any]:
    """The journal entry of a step stopped by a cancel or a lost lease."""
    return _extras({J.KIND: J.CANCEL, J.STEP: name, J.INDEX: index, J.AT: at}, attempt, None)


def progress_set(current: float, total: float | None, message: str | None, at: str) -> dict[str, Any]:
    """The journal entry of ``step.progress``."""
    return {J.KIND: J.PROGRESS, J.CURRENT: current, J.TOTAL: total, J.MESSAGE: message, J.AT: at}


def log_written(
    step: str | None, level: str, message: str, data: Any, at: str, *, position: int | None = None
) -> dict[str, Any]:
    """The journal entry of a log line; ``data`` may be an ``orjson.Fragment``. A line
    written outside steps carries its ``position`` (the index of the next step)."""
    entry = {J.KIND: J.LOG, J.STEP: step, J.LEVEL: level, J.MESSAGE: message, J.DATA: data, J.AT: at}
    if position is not None:
        entry[J.INDEX] = position
    return entry


def _text(value: object) -> str | None:
    return value if value.__class__ is str else None


def _index(value: object) -> int:
    return value if value.__class__ is int else 0


def _number(value: object, default: float | None) -> float | None:
    return value if value.__class__ in (int, float) else default


_BY_KIND: Final[dict[str, type[Entry]]] = {
    J.START: StepStarted,
    J.DONE: StepEnded,
    J.FAIL: StepEnded,
    J.CANCEL: StepEnded,
    J.PROGRESS: ProgressSet,
    J.LOG: LogWritten,
    J.CHILD: ChildInvoked,
}


_STEP_KINDS: Final = (StepEnded, StepStarted)


def parse_entry(data: dict[str, Any]) -> Entry | None:
    """A journal entry read back; None for a kind this version does not know, or a step
    entry without a step name. Fields are read (and checked) when asked for."""
    kind = data.get(J.KIND)
    cls = _BY_KIND.get(kind) if kind.__class__ is str else None
    if cls is None or (cls in _STEP_KINDS and data.get(J.STEP).__class__ is not str):
        return None
    return cls(data)


def parse_entries(raw: list[dict[str, Any]]) -> list[Entry]:
    """:func:`parse_entry` of each record, the unknown ones left out (the hot path of a
    replay: one loop, no call per record but the entry's own)."""
    by_kind, step_kinds, kind_key, step_key = _BY_KIND, _STEP_KINDS, J.KIND, J.STEP
    out: list[Entry] = []
    append = out.append
    for data in raw:
        kind = data.get(kind_key)
        cls = by_kind.get(kind) if kind.__class__ is str else None
        if cls is not None and (cls not in step_kinds or data.get(step_key).__class__ is str):
            append(cls(data))
    return out


def run_ended(state: bytes) -> dict[str, Any]:
    """The last line of a compacted journal: the end state record (its bytes), so that a
    run whose end state file is lost still reads as ended, and the file can be restored."""
    return {J.KIND: J.END, J.STATE: orjson.Fragment(state)}


def ended_state(data: dict[str, Any]) -> dict[str, Any] | None:
    """The end state record a compacted journal's last line holds, if it is one."""
    state = data.get(J.STATE) if data.get(J.KIND) == J.END else None
    return state if isinstance(state, dict) else None


def take_gen(data: dict[str, Any]) -> int:
    """Remove and return the generation a compacted entry was written in (so the entry
    reads as it did in its ``j.<g>``)."""
    return int_or(data.pop(J.GEN, 0))


def compacted_entry(entry: Entry, gen: int, *, keep_output: bool) -> dict[str, Any]:
    """An entry as ``journal.jsonl`` keeps it: with its generation, and a completed
    step's output dropped unless ``keep_output``."""
    body = dict(entry.raw)
    if not keep_output and isinstance(entry, StepEnded) and entry.status == "completed":
        body[J.OUTPUT] = None
        body[J.DROPPED] = True
    body[J.GEN] = gen
    return body
