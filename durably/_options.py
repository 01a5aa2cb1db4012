"""The options of a ``Durably`` instance, validated once and frozen."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from datetime import datetime, timedelta

import pydantic

from ._errors import ValidationError

_DURATION = re.compile(r"^(\d+)([dhm])$")


def parse_retain(value: timedelta | str | None) -> timedelta | None:
    """``retain_runs``: a positive ``timedelta`` or ``"<int>d|h|m"`` (or None).

    Raises:
        ValidationError: anything else.
    """
    if value is None or isinstance(value, timedelta):
        if isinstance(value, timedelta) and value <= timedelta(0):
            raise ValidationError("retain_runs must be positive")
        return value
    if isinstance(value, str):
        m = _DURATION.match(value)
        if m:
            n = int(m.group(1))
            return {"d": timedelta(days=n), "h": timedelta(hours=n), "m": timedelta(minutes=n)}[m.group(2)]
    raise ValidationError(
        f"Invalid duration format for retain_runs: {value!r} (use a timedelta or '<int>d|h|m')"
    )


def positive(name: str, value: object) -> float:
    """A positive finite number of seconds.

    Raises:
        ValidationError: anything else (naming the option).
    """
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not value > 0
        or value == float("inf")
    ):
        raise ValidationError(f"{name} must be a positive finite number, got {value!r}")
    return float(value)


@dataclasses.dataclass(frozen=True)
class Options:
    """What ``Durably(...)`` was given (see its docstring), validated."""

    polling_interval: float = 1.0
    max_concurrent_runs: int = 1
    lease_duration: float = 30.0
    lease_renew_interval: float = 5.0
    preserve_steps: bool = False
    retain_runs: timedelta | None = None
    labels: type[pydantic.BaseModel] | None = None
    fsync: bool = True
    clock: Callable[[], datetime] | None = None

    @classmethod
    def validated(
        cls,
        *,
        polling_interval: object,
        max_concurrent_runs: object,
        lease_duration: object,
        lease_renew_interval: object,
        preserve_steps: object,
        retain_runs: timedelta | str | None,
        labels: object,
        fsync: object,
        clock: object = None,
    ) -> Options:
        """Check every option.

        Raises:
            ValidationError: an option is out of range (the message names it).
        """
        if (
            isinstance(max_concurrent_runs, bool)
            or not isinstance(max_concurrent_runs, int)
            or not 1 <= max_concurrent_runs <= 1000
        ):
            raise ValidationError("max_concurrent_runs must be between 1 and 1000")
        interval = positive("polling_interval", polling_interval)
        lease = positive("lease_duration", lease_duration)
        renew = positive("lease_renew_interval", lease_renew_interval)
        if renew >= lease:
            raise ValidationError("lease_renew_interval must be less than lease_duration")
        retain = parse_retain(retain_runs)
        if labels is not None and not (isinstance(labels, type) and issubclass(labels, pydantic.BaseModel)):
            raise ValidationError("labels must be a pydantic model class")
        return cls(
            clock=_clock(clock),
            polling_interval=interval,
            max_concurrent_runs=max_concurrent_runs,
            lease_duration=lease,
            lease_renew_interval=renew,
            preserve_steps=bool(preserve_steps),
            retain_runs=retain,
            labels=labels,
            fsync=bool(fsync),
        )


def _clock(clock: object) -> Callable[[], datetime] | None:
    """``clock=``: None, or an object whose ``now()`` returns an aware datetime (checked
    once here, and again each time durably reads it)."""
    if clock is None:
        return None
    now = getattr(clock, "now", None)
    if not callable(now):
        raise ValidationError(f"clock must have a now() method, got {clock!r}")

    def read() -> datetime:
        value = now()
        if not isinstance(value, datetime) or value.tzinfo is None or value.utcoffset() is None:
            raise ValidationError(f"clock.now() must return an aware datetime, got {value!r}")
        return value

    read()
    return read
