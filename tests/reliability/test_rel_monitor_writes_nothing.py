"""The monitor (``durably monitor``) writes nothing into the root it watches (plan case
W7 of docs/reliability.md; invariant 7 of docs/architecture.md: readers never block
writers, and the monitor writes nothing). It reads through the same API as every
reader: ``tests/test_invariants.py::TestReadersNeverBlockWriters`` checks that API.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from apps import logged_steps
from helpers import tree
from textual.pilot import Pilot

from durably._driver import claim_next
from durably._durably import runtime_of
from durably._workers import Heartbeat
from durably_monitor import MonitorApp
from durably_monitor._backend import open_source
from durably_monitor._detail import RunDetailScreen
from durably_monitor._workers_screen import WorkersScreen

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
    screens are opened (input/output, error and logs tabs), the feed is polled, the
    workers view reads a worker's heartbeat record; after
    that, no file or directory of the root was created, changed or removed."""
    root = tmp_path / "root"
    d = logged_steps.make(str(root), fsync=False)
    handle = d.get_job("logged-steps")
    assert handle is not None
    ids = {handle.trigger(logged_steps.StepsIn(steps=2), idempotency_key="k").id}
    d.process_until_idle()
    ids.add(handle.trigger(logged_steps.StepsIn(steps=3)).id)
    claim = claim_next(runtime_of(d))
    assert claim is not None
    claim.append(
        {"k": "log", "s": "s0", "l": "info", "m": "hello", "d": None, "t": "2026-01-01T00:00:00.000Z"},
        sync=False,
    )
    claim.release()  # leased by an owner that is gone
    cancelled = handle.trigger(logged_steps.StepsIn()).id
    d.cancel(cancelled)
    ids.add(cancelled)
    handle.trigger(logged_steps.StepsIn(), concurrency_key="c")  # pending: listed, not opened
    Heartbeat(str(root), ["logged-steps"]).beat([])  # a worker's record, for the workers view
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
        await pilot.press("w")  # the workers view reads the heartbeat records
        await _settle(pilot)
        assert isinstance(app.screen, WorkersScreen)
        assert app.screen.worker_rows is not None
        assert len(app.screen.worker_rows) == 1
        await pilot.press("escape")
    assert tree(root) == before
