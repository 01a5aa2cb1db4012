"""Helpers for testing jobs: :class:`ManualClock`, a clock that moves only when told."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

from ._errors import ValidationError
from ._retry import seconds

__all__ = ["ManualClock"]


class ManualClock:
    """A clock for ``Durably(clock=...)`` that stands still until advanced, so a test runs
    a job with a 30-day sleep, retries or a timeout in milliseconds::

        clock = ManualClock(datetime(2026, 1, 1, tzinfo=UTC))
        d = Durably(tmp_path, jobs=[nightly], clock=clock)
        d.register(nightly).trigger({})
        d.process_until_idle()          # runs to the sleep; the run is waiting
        clock.advance(timedelta(days=30))
        d.process_until_idle()          # wakes, finishes

    Raises:
        ValidationError: ``start`` is a naive datetime.
    """

    def __init__(self, start: datetime | None = None) -> None:
        self._now = _aware(start) if start is not None else datetime.now(UTC)
        self._lock = threading.Lock()

    def now(self) -> datetime:
        """The clock's time (aware UTC)."""
        with self._lock:
            return self._now

    def advance(self, by: float | timedelta) -> None:
        """Move the clock forward by ``by`` seconds (or a ``timedelta``).

        Raises:
            ValidationError: a negative or non-numeric amount.
        """
        step = timedelta(seconds=seconds(by, "ManualClock.advance"))
        with self._lock:
            self._now += step

    def set(self, when: datetime) -> None:
        """Set the clock to ``when`` (an aware datetime; it may go back).

        Raises:
            ValidationError: a naive datetime.
        """
        moment = _aware(when)
        with self._lock:
            self._now = moment


def _aware(when: object) -> datetime:
    if not isinstance(when, datetime) or when.tzinfo is None or when.utcoffset() is None:
        raise ValidationError(f"ManualClock needs an aware datetime (with a time zone), got {when!r}")
    return when.astimezone(UTC)
