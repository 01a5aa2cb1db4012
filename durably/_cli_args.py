"""Values the command line parses: durations and times (``--delay``, ``--run-at``,
``--since``, ``--until``)."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime, timedelta


def duration(text: str) -> float:
    """``--delay``: seconds, or ``90s``, ``15m``, ``2h``, ``3d``."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    number, unit = (text[:-1], text[-1]) if text and text[-1] in units else (text, "s")
    try:
        value = float(number) * units[unit]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (use 90s, 15m, 2h or 3d)") from None
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (it must not be negative)")
    return value


def instant(text: str) -> datetime:
    """``--run-at``: an ISO-8601 time with its time zone (``Z`` or an offset)."""
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO-8601 time: {text!r}") from None
    if moment.tzinfo is None:
        raise argparse.ArgumentTypeError(f"{text!r} has no time zone (add Z or an offset such as +02:00)")
    return moment


def moment(text: str) -> datetime:
    """``--since``/``--until``: that long ago (``90s``, ``15m``, ``2h``, ``3d``), or an
    ISO-8601 time with its time zone."""
    if text[:1].isdigit() and text[-1:] in "smhd" and "T" not in text and "-" not in text:
        return datetime.now(UTC) - timedelta(seconds=duration(text))
    return instant(text)
