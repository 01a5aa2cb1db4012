"""How values look: status glyphs and colours (keyed off `durably.RunStatus`), times, bars."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, tzinfo
from typing import Any

from durably import RunStatus


@dataclass(frozen=True, slots=True)
class StatusLook:
    """Glyph, colour and word for one run status."""

    glyph: str
    color: str
    word: str


STATUS_LOOK: dict[RunStatus | None, StatusLook] = {
    RunStatus.PENDING: StatusLook("○", "#8a8fa3", "pending"),
    RunStatus.WAITING: StatusLook("◷", "#56b6c2", "waiting"),
    RunStatus.LEASED: StatusLook("◐", "#e5c07b", "running"),
    RunStatus.COMPLETED: StatusLook("✔", "#5fbf5f", "completed"),
    RunStatus.FAILED: StatusLook("✘", "#ef5350", "failed"),
    RunStatus.CANCELLED: StatusLook("⊘", "#b07fd0", "cancelled"),
    None: StatusLook("…", "#6c7086", "syncing"),
}
"""Every member of `RunStatus` has a look; `None` is a run durably reports as syncing."""

INTERRUPTED_LOOK = StatusLook("◌", "#ff9e64", "interrupted")
"""A leased run whose owner is gone: it waits for a worker to resume it."""


def row_look(status: RunStatus | None, interrupted: bool = False) -> StatusLook:
    """The look of a run: its status's, or the interrupted look."""
    return INTERRUPTED_LOOK if interrupted and status is RunStatus.LEASED else STATUS_LOOK[status]


STATUS_KEYS: dict[str, RunStatus] = {
    "1": RunStatus.PENDING,
    "2": RunStatus.LEASED,
    "3": RunStatus.COMPLETED,
    "4": RunStatus.FAILED,
    "5": RunStatus.CANCELLED,
    "6": RunStatus.WAITING,
}
"""Number keys that toggle a status filter."""

STEP_LOOK: dict[str, StatusLook] = {
    "completed": STATUS_LOOK[RunStatus.COMPLETED],
    "failed": STATUS_LOOK[RunStatus.FAILED],
    "cancelled": STATUS_LOOK[RunStatus.CANCELLED],
    "running": STATUS_LOOK[RunStatus.LEASED],
    "started": STATUS_LOOK[RunStatus.LEASED],
}

LEVEL_COLORS = {"info": "#8ab4f8", "warn": "#e5c07b", "warning": "#e5c07b", "error": "#ef5350"}


def step_look(status: str) -> StatusLook:
    """The look of a step status (unknown statuses get a neutral look)."""
    return STEP_LOOK.get(status, StatusLook("·", "#8a8fa3", status))


def relative(when: datetime | None, now: datetime) -> str:
    """`12s ago`, `3m ago`, `5h ago`, `2d ago`, `in 2h` for a time ahead (or `-`)."""
    if when is None:
        return "-"
    seconds = (now - when).total_seconds()
    if -1 < seconds < 1:
        return "now"
    ahead, seconds = seconds < 0, abs(seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            amount = f"{int(seconds // size)}{unit}"
            return f"in {amount}" if ahead else f"{amount} ago"
    return f"in {int(seconds)}s" if ahead else f"{int(seconds)}s ago"


def absolute(when: datetime | None, tz: tzinfo | None, *, date: bool = True) -> str:
    """`11-28 18:04:05` in `tz` (local time when `tz` is None)."""
    if when is None:
        return "-"
    local = when.astimezone(tz)
    return local.strftime("%m-%d %H:%M:%S" if date else "%H:%M:%S")


def full_time(when: datetime | None, tz: tzinfo | None) -> str:
    """`2026-11-28 18:04:05.123 +0000`."""
    if when is None:
        return "-"
    local = when.astimezone(tz)
    return local.strftime("%Y-%m-%d %H:%M:%S.") + f"{local.microsecond // 1000:03d} {local:%z}"


def duration(seconds: float | None) -> str:
    """`0.4s`, `12.0s`, `3m04s`, `2h03m`, `3d04h` (or `-`)."""
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.1f}s"
    whole = int(seconds)
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    if whole < 86400:
        return f"{whole // 3600}h{whole % 3600 // 60:02d}m"
    return f"{whole // 86400}d{whole % 86400 // 3600:02d}h"


def number(value: float) -> str:
    """An int-looking float without the `.0`."""
    return str(int(value)) if float(value).is_integer() else f"{value:.1f}"


def bar(current: float | None, total: float | None, width: int) -> str:
    """A block progress bar such as `████▌░░░` (empty string when there is no total)."""
    if current is None or not total or width <= 0:
        return ""
    fraction = min(1.0, max(0.0, current / total))
    eighths = round(fraction * width * 8)
    full, part = divmod(eighths, 8)
    partial = " ▏▎▍▌▋▊▉"[part] if part and full < width else ""
    return ("█" * full + partial).ljust(width, "░")[:width]


def progress_text(current: float | None, total: float | None) -> str:
    """`3/10`, `7` (no total) or empty."""
    if current is None:
        return ""
    if total:
        return f"{number(current)}/{number(total)}"
    return number(current)


def clip(text: str, width: int) -> str:
    """Cut `text` to `width` cells, ending in `…` when cut; newlines become spaces."""
    text = text.replace("\n", " ").replace("\r", " ")
    if width <= 0:
        return ""
    if len(text) <= width:
        return text
    return text[: width - 1] + "…"


def json_text(value: Any) -> str:
    """`value` as one line of JSON (`{"user": 2, "ok": true}`); a repr if it is not JSON data."""
    try:
        return json.dumps(value, ensure_ascii=False, default=str)
    except (TypeError, ValueError):
        return repr(value)
