"""The monitor (``durably monitor``) writes nothing into the root it watches (plan W7,
DESIGN.md invariant 7: "the monitor writes nothing unless the user asks for an action").
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import gapapp
import pytest
from helpers import tree
from textual.pilot import Pilot

from monitor import MonitorApp
from monitor._backend import open_source
from monitor._detail import RunDetailScreen

os.environ.setdefault("TEXTUAL_ANIMATIONS", "none")



async def _settle(pilot: Pilot[Any]) -> None:
    await pilot.app.workers.wait_for_complete()
    await pilot.pause()
    await pilot.app.workers.wait_for_complete()
    await pilot.pause()


@pytest.mark.asyncio
async def test_the_monitor_never_writes_into_the_root(tmp_path: Path) -> None:
    """W7: the monitor over a root holding a completed run, one leased by a dead owner
    (with a log line), a cancelled and a pending one: it lists them all, the detail
    screens are opened (input/output, error and logs tabs), the feed is polled; after
    that, no file or directory of the root was created, changed or removed."""
    root = tmp_path / "root"
    d = gapapp.make(str(root), fsync=False)
    handle = d.get_job("gap-steps")
    assert handle is not None
    ids = {handle.trigger(gapapp.GapIn(steps=2), idempotency_key="k").id}
    d.process_until_idle()
    ids.add(handle.trigger(gapapp.GapIn(steps=3)).id)
    claim = d._claim_next()
    assert claim is not None
    claim.append({"k": "log", "s": "s0", "l": "info", "m": "hello", "d": None,
                  "t": "2026-01-01T00:00:00.000Z"}, sync=False)
    claim.release()  # leased by an owner that is gone
    cancelled = handle.trigger(gapapp.GapIn()).id
    d.cancel(cancelled)
    ids.add(cancelled)
    handle.trigger(gapapp.GapIn(), concurrency_key="c")  # pending: listed, not opened
    before = tree(root)
    app = MonitorApp(open_source(str(root), None), poll_interval=3600)  # polled below
    async with app.run_test(size=(120, 30)) as pilot:
        await _settle(pilot)
        assert set(app.index.rows) > ids
        for _ in ids:
            await pilot.press("enter")
            await _settle(pilot)
            assert isinstance(app.screen, RunDetailScreen)
            await pilot.press("i", "e", "l", "escape", "down")
        app.poll()
        await _settle(pilot)
    assert tree(root) == before
