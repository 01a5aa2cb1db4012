"""Snapshots of the monitor's main screens over fixed data and a frozen clock."""

from __future__ import annotations

from typing import Any

import pytest
from monitor_fakes import PARENT, RETRY, SIGNAL, FakeDurably, sample, schedules_sample, waiting_sample
from monitor_helpers import make_app, settle
from textual.pilot import Pilot

from durably_monitor._runlist import RunList

FAILED = "01JDQ0000000000000000000A2"
RUNNING = "01JDQ0000000000000000000A4"
RESUMED = "01JDQ0000000000000000000AR"

Snap = Any


async def ready(pilot: Pilot[Any]) -> None:
    await settle(pilot)


def choose(run_id: str, *keys: str) -> Any:
    async def run_before(pilot: Pilot[Any]) -> None:
        await settle(pilot)
        assert pilot.app.screen.query_one(RunList).select(run_id)
        await pilot.press(*keys)
        await settle(pilot)

    return run_before


@pytest.mark.parametrize("size", [(120, 40), (80, 24)], ids=["120x40", "80x24"])
def test_run_list(snap_compare: Snap, size: tuple[int, int]) -> None:
    """The run list with every status, progress, labels and the header counts."""
    assert snap_compare(make_app(sample()), terminal_size=size, run_before=ready)


def test_failed_filter(snap_compare: Snap) -> None:
    """`f`: only failed runs, with the filter shown in the bar."""
    assert snap_compare(make_app(sample()), terminal_size=(120, 30), press=["f"], run_before=ready)


def test_detail_error(snap_compare: Snap) -> None:
    """A failed run opens on its traceback with the failing step selected."""
    assert snap_compare(make_app(sample()), terminal_size=(120, 40), run_before=choose(FAILED, "enter"))


def test_detail_logs(snap_compare: Snap) -> None:
    """The log tab of a failed run."""
    assert snap_compare(make_app(sample()), terminal_size=(120, 30), run_before=choose(FAILED, "enter", "l"))


def test_detail_running(snap_compare: Snap) -> None:
    """A running run: progress bar, labels, input."""
    assert snap_compare(make_app(sample()), terminal_size=(100, 30), run_before=choose(RUNNING, "enter"))


def test_confirm_cancel(snap_compare: Snap) -> None:
    """The confirmation asked before cancelling."""
    assert snap_compare(make_app(sample()), terminal_size=(100, 24), run_before=choose(RUNNING, "c"))


def test_help(snap_compare: Snap) -> None:
    """The `?` key sheet."""
    assert snap_compare(
        make_app(sample()), terminal_size=(100, 40), run_before=choose(RUNNING, "question_mark")
    )


def test_read_only_root(snap_compare: Snap) -> None:
    """A read-only root: notice in the bar, no actions in the footer."""
    fake: FakeDurably = sample()
    fake.read_only = True
    assert snap_compare(make_app(fake), terminal_size=(120, 24), run_before=ready)


@pytest.mark.parametrize("size", [(120, 40), (80, 24)], ids=["120x40", "80x24"])
def test_waiting_runs(snap_compare: Snap, size: tuple[int, int]) -> None:
    """Runs that wait: what each waits for in the progress column (compact at 80 columns)."""
    assert snap_compare(make_app(waiting_sample()), terminal_size=size, run_before=ready)


def test_detail_retry(snap_compare: Snap) -> None:
    """A run between two attempts: the failed attempt, the next one's countdown, the Error
    tab with every attempt."""
    app = make_app(waiting_sample())
    assert snap_compare(app, terminal_size=(120, 30), run_before=choose(RETRY, "enter"))


def test_detail_children(snap_compare: Snap) -> None:
    """A parent waiting for its child: the step it waits in, its children in their tab."""
    app = make_app(waiting_sample())
    assert snap_compare(app, terminal_size=(120, 30), run_before=choose(PARENT, "enter", "C"))


def test_signal_form(snap_compare: Snap) -> None:
    """The signal form, the waited-for name filled in and JSON typed."""
    app = make_app(waiting_sample())
    keys = ["n", *'{"by": "ana"}']
    assert snap_compare(app, terminal_size=(100, 30), run_before=choose(SIGNAL, *keys))


def test_workers(snap_compare: Snap) -> None:
    """The workers view."""
    assert snap_compare(make_app(waiting_sample()), terminal_size=(120, 24), press=["w"], run_before=ready)


def test_marked_runs(snap_compare: Snap) -> None:
    """Two runs marked (`space`): the `●` before their glyph and the count in the filter bar."""

    async def run_before(pilot: Pilot[Any]) -> None:
        await settle(pilot)
        for run_id in (FAILED, RUNNING):
            assert pilot.app.screen.query_one(RunList).select(run_id)
            await pilot.press("space")
        await settle(pilot)

    assert snap_compare(make_app(sample()), terminal_size=(120, 24), run_before=run_before)


def test_schedules(snap_compare: Snap) -> None:
    """The schedules view: next ticks counting down, last runs and their statuses, paused."""
    app = make_app(schedules_sample())
    assert snap_compare(app, terminal_size=(120, 24), press=["S"], run_before=ready)


def test_detail_resumed(snap_compare: Snap) -> None:
    """A run resumed from a failed one: `resumed from … o opens it` in its summary."""
    fake = sample()
    fake.resume(FAILED)
    assert snap_compare(make_app(fake), terminal_size=(120, 30), run_before=choose(RESUMED, "enter"))
