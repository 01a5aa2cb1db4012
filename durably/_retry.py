"""``Retry``: how often a failing step runs again, and how long it waits in between."""

from __future__ import annotations

import math
import random
from datetime import timedelta
from typing import Any

from ._errors import CancelledError, LeaseLostError, StoreError, ValidationError


def seconds(value: object, what: str, *, allow_zero: bool = True) -> float:
    """A duration given as seconds (int or float) or a ``timedelta``, as seconds.

    Raises:
        ValidationError: not a number or a timedelta, negative, NaN or infinite (naming
            ``what``).
    """
    if isinstance(value, timedelta):
        value = value.total_seconds()
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValidationError(f"{what} must be a finite number of seconds or a timedelta, got {value!r}")
    if value < 0 or (value == 0 and not allow_zero):
        raise ValidationError(f"{what} must not be negative, got {value!r}")
    return float(value)


class Retry:
    """How a failing step is retried: ``step.run(..., retry=Retry(...))`` or
    ``define_job(..., retry=...)`` (every step's default). ``retry=5`` means
    ``Retry(max_attempts=5)``.

    The wait before attempt ``n + 1`` is ``min(max_delay, delay * backoff ** (n - 1))``
    seconds, spread by up to ±20 % when ``jitter``. An exception that is not a
    ``retry_on`` or is a ``give_up_on`` is not retried; neither are ``ValidationError``
    (an unstorable value), ``CancelledError``, ``LeaseLostError`` and store failures.

    Raises:
        ValidationError: ``max_attempts < 1``, a negative ``delay`` or ``max_delay``,
            ``backoff < 1``, or exception classes that are not exception classes.
    """

    __slots__ = ("backoff", "delay", "give_up_on", "jitter", "max_attempts", "max_delay", "retry_on")

    def __init__(
        self,
        max_attempts: int = 3,
        *,
        delay: float | timedelta = 1.0,
        backoff: float = 2.0,
        max_delay: float | timedelta = 300.0,
        jitter: bool = True,
        retry_on: tuple[type[BaseException], ...] = (Exception,),
        give_up_on: tuple[type[BaseException], ...] = (),
    ) -> None:
        if isinstance(max_attempts, bool) or not isinstance(max_attempts, int) or max_attempts < 1:
            raise ValidationError(f"Retry max_attempts must be an int of at least 1, got {max_attempts!r}")
        if isinstance(backoff, bool) or not isinstance(backoff, int | float) or not math.isfinite(backoff):
            raise ValidationError(f"Retry backoff must be a finite number of at least 1, got {backoff!r}")
        if backoff < 1:
            raise ValidationError(f"Retry backoff must be at least 1, got {backoff!r}")
        self.max_attempts = max_attempts
        self.delay = seconds(delay, "Retry delay")
        self.backoff = float(backoff)
        self.max_delay = seconds(max_delay, "Retry max_delay")
        self.jitter = bool(jitter)
        self.retry_on = _classes(retry_on, "retry_on")
        self.give_up_on = _classes(give_up_on, "give_up_on")

    def __repr__(self) -> str:
        return (
            f"Retry(max_attempts={self.max_attempts}, delay={self.delay}, backoff={self.backoff}, "
            f"max_delay={self.max_delay}, jitter={self.jitter})"
        )

    def wait_before(self, attempt: int) -> float:
        """Seconds to wait before attempt ``attempt`` (2 or more)."""
        try:
            base = min(self.max_delay, self.delay * self.backoff ** (attempt - 2))
        except OverflowError:
            base = self.max_delay
        if self.jitter and base > 0:
            base *= random.uniform(0.8, 1.2)  # noqa: S311 - spreading retries, not security
        return max(0.0, base)

    def retries(self, exc: BaseException) -> bool:
        """Whether ``exc`` is worth another attempt under this policy."""
        if isinstance(exc, ValidationError | CancelledError | LeaseLostError | StoreError):
            return False
        return isinstance(exc, self.retry_on) and not isinstance(exc, self.give_up_on)


def _classes(value: Any, what: str) -> tuple[type[BaseException], ...]:
    if isinstance(value, type):
        value = (value,)
    if not isinstance(value, tuple) or not all(
        isinstance(c, type) and issubclass(c, BaseException) for c in value
    ):
        raise ValidationError(f"Retry {what} must be a tuple of exception classes, got {value!r}")
    return value


def as_retry(value: object, what: str) -> Retry | None:
    """``retry=``: None, a ``Retry``, or an int (``Retry(max_attempts=n)``).

    Raises:
        ValidationError: anything else (naming ``what``).
    """
    if value is None or isinstance(value, Retry):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return Retry(max_attempts=value, jitter=True)
    raise ValidationError(f"{what} must be a Retry, an int or None, got {value!r}")
