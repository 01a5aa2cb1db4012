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

from durably_monitor import MonitorApp, Source


def make_app(fake: FakeDurably, *, can_retrigger: bool = True, **options: Any) -> MonitorApp:
    """A monitor over `fake`, frozen in time, polling only when a test calls `app.poll()`."""
    options.setdefault("poll_interval", 3600)
    options.setdefault("clock", frozen_clock)
    app = MonitorApp(Source(fake, "/srv/jobs/.durably", can_retrigger=can_retrigger), tz=UTC, **options)
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


def notifications(app: MonitorApp) -> list[str]:
    """Record every notification `app` shows from now on (the list fills as it runs)."""
    told: list[str] = []
    show = app.notify

    def record(message: str, **options: Any) -> None:
        told.append(message)
        show(message, **options)

    app.notify = record  # type: ignore[method-assign]
    return told


def palette(app: MonitorApp) -> list[str]:
    """The titles the command palette offers on the current screen."""
    return [command.title for command in app.get_system_commands(app.screen)]


def text_of(widget: Widget) -> str:
    """What a widget shows, as plain text."""
    size = widget.region.size or widget.size  # padding included
    lines = widget.render_lines(Region(0, 0, size.width, size.height))
    return "\n".join(line.text for line in lines)
