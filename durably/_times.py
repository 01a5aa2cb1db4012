"""The time format of every record: ISO-8601 UTC with milliseconds and ``Z``, as the
TypeScript original writes it, and the clock durably reads (``Durably(clock=)``)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime


def iso(moment: datetime) -> str:
    """An aware datetime as stored: ISO-8601 UTC with milliseconds and ``Z``."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def iso_epoch(seconds: float) -> str:
    """Epoch seconds as stored (see :func:`iso`)."""
    return iso(datetime.fromtimestamp(seconds, UTC))


def now_iso() -> str:
    """The current time as stored (see :func:`iso`)."""
    return iso(datetime.now(UTC))


Clock = Callable[[], datetime]
"""What ``Durably(clock=)`` is reduced to: the current time, aware UTC."""


def system_clock() -> datetime:
    """The default clock: the system's time."""
    return datetime.now(UTC)


def iso_ms(value: str | None) -> int | None:
    """A stored time as epoch milliseconds (None if missing or not a time)."""
    moment = parse_time(value)
    return None if moment is None else int(moment.timestamp() * 1000)


def parse_time(value: object) -> datetime | None:
    """A stored time as an aware UTC datetime; None if missing or not a time."""
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
