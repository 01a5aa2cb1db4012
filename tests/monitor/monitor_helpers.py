"""Helpers for the monitor tests: an app over fixed data, waiting on conditions."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from datetime import UTC
from typing import Any

os.environ["TEXTUAL_ANIMATIONS"] = "none"

from monitor_fakes import FakeDurably, frozen_clock
from textual.geometry import Region
from textual.pilot import Pilot
from textual.widget import Widget

from monitor import MonitorApp, Source


def make_app(fake: FakeDurably, *, can_retrigger: bool = True, **options: Any) -> MonitorApp:
    """A monitor over `fake`, frozen in time, polling only when a test calls `app.poll()`."""
    options.setdefault("poll_interval", 3600)
    app = MonitorApp(
        Source(fake, "/srv/jobs/.durably", can_retrigger=can_retrigger),
        clock=frozen_clock,
        tz=UTC,
        **options,
    )
    app.animation_level = "none"
    return app


async def settle(pilot: Pilot[Any]) -> None:
    """Let every worker finish and every posted message land."""
    await pilot.app.workers.wait_for_complete()
    await pilot.pause()
    await pilot.app.workers.wait_for_complete()
    await pilot.pause()


async def wait_for(pilot: Pilot[Any], condition: Callable[[], bool], timeout: float = 10.0) -> None:
    """Wait until `condition()` holds (checked after each round of messages)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await pilot.pause(0.05)


def text_of(widget: Widget) -> str:
    """What a widget shows, as plain text."""
    lines = widget.render_lines(Region(0, 0, widget.size.width, widget.size.height))
    return "\n".join(line.text for line in lines)
