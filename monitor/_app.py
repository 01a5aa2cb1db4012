"""The Textual app: owns the run index, the scan and poll workers, and the actions.

Threads only read durably and post messages; every widget and the index are touched on the
event loop, in the message handlers below.
"""

from __future__ import annotations

import bisect
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, tzinfo
from typing import ClassVar

from textual import work
from textual.app import SystemCommand
from textual.binding import Binding, BindingType
from textual.message import Message
from textual.screen import Screen
from textual.timer import Timer

from durably import RunStatus

from ._actions import RunActions
from ._backend import Diff, Source
from ._commands import run_commands
from ._detail import RunDetailScreen
from ._index import RunIndex
from ._model import RunRow
from ._runlist import RunList
from ._runs_screen import RunsScreen
from ._schedules_screen import SchedulesScreen
from ._state import MonitorState
from ._workers_screen import WorkersScreen

ACTIVE_REFRESH = 5.0
"""Seconds between rereads of running runs, whatever the feed says (it is only a hint)."""
ACTIVE_BATCH = 100
"""At most this many running runs are reread per refresh (round-robin)."""

RETRY_LOAD = 5.0
"""Seconds before a scan that failed (root unreadable) is tried again."""

ROOT_CHECK = 0.5
"""Seconds between looks for a root that does not exist yet (`--wait-for-root`)."""


_RUN_ACTIONS = frozenset({"act", "signal", "signal_refused", "parent", "original", "copy_id"})
"""App actions that apply to a run (none does in the workers and schedules views)."""


def utc_now() -> datetime:
    """The default clock."""
    return datetime.now(UTC)


class MonitorApp(RunActions):
    """`durably monitor`: a live terminal UI over one root directory.

    Args:
        source: where runs are read from (see `durably_monitor.Source`).
        read_only: hide every action that writes (`--read-only`).
        clock: returns the current aware datetime; tests freeze it.
        tz: time zone for absolute times (None: local time).
        poll_interval: seconds between change-feed polls.
        first_page: how many of the newest runs the first screen loads before the rest.
    """

    TITLE = "durably monitor"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("c", "act('cancel')", "Cancel"),
        Binding("r", "act('retrigger')", "Retrigger"),
        Binding("d", "act('delete')", "Delete"),
        Binding("R", "act('resume')", "Resume"),
        Binding("n", "signal", "Signal"),
        Binding("n", "signal_refused", "Signal", show=False),
        Binding("p", "parent", "Parent", show=False),
        Binding("o", "original", "Original", show=False),
        Binding("w", "workers", "Workers"),
        Binding("S", "schedules", "Schedules"),
        Binding("y", "copy_id", "Copy id"),
        Binding("P", "pause", "Pause"),
        Binding("question_mark", "help", "Help"),
        Binding("q", "quit", "Quit"),
    ]

    class RunsLoaded(Message):
        """A page of the initial scan (or a full reload) arrived."""

        def __init__(self, rows: list[RunRow], *, first: bool, last: bool, failed: bool = False) -> None:
            self.rows, self.first, self.last, self.failed = rows, first, last, failed
            super().__init__()

    class RunsChanged(Message):
        """A poll found changes."""

        def __init__(self, diff: Diff, cursor: str | None, *, from_poll: bool = True) -> None:
            self.diff, self.cursor, self.from_poll = diff, cursor, from_poll
            super().__init__()

    class Failed(Message):
        """Reading the root failed (shown as a notification; the monitor keeps going)."""

        def __init__(self, text: str) -> None:
            self.text = text
            super().__init__()

    class NewRun(Message):
        """`run_id` was retriggered or resumed as `new_id`, which the index now holds."""

        def __init__(self, run_id: str, new_id: str) -> None:
            self.run_id, self.new_id = run_id, new_id
            super().__init__()

    class ReadOnly(Message):
        """Whether the root can be written."""

        def __init__(self, read_only: bool) -> None:
            self.read_only = read_only
            super().__init__()

    def __init__(
        self,
        source: Source,
        *,
        read_only: bool = False,
        clock: Callable[[], datetime] = utc_now,
        tz: tzinfo | None = None,
        poll_interval: float = 0.3,
        first_page: int = 200,
    ) -> None:
        super().__init__()
        self.source = source
        self.state = MonitorState(source.label, clock, tz, read_only_flag=read_only)
        """What the screens draw from (the app alone changes it)."""
        self.poll_interval = poll_interval
        self.first_page = first_page
        self.cursor: str | None = None
        self._polling = False
        self._root_timer: Timer | None = None
        self._last_error = ""
        self._active_refreshed = time.monotonic()
        self._active_mark = ""
        self._started = time.monotonic()
        self.timings: dict[str, float] = {}
        """Seconds from start to `first_page` and `loaded` (for benchmarks)."""

    # -- lifecycle -------------------------------------------------------------------------

    def get_default_screen(self) -> Screen[None]:
        return RunsScreen(self.state)

    def on_mount(self) -> None:
        self.set_interval(self.poll_interval, self.poll)
        self.set_interval(1.0, self.tick)
        if self.source.root_exists():
            self.load()
        else:  # --wait-for-root: polls wait (state.loading) until the first scan is done
            self.state.waiting = True
            self._refresh_views()
            self._root_timer = self.set_interval(ROOT_CHECK, self._check_root)

    def _check_root(self) -> None:
        """While the root is missing: look again; once it is there, scan it."""
        if not self.source.root_exists():
            return
        if self._root_timer is not None:
            self._root_timer.stop()
        self.state.waiting = False
        self.load()

    @property
    def index(self) -> RunIndex:
        """Every known run (`state.index`)."""
        return self.state.index

    @property
    def loading(self) -> bool:
        """The first scan (or a full reload) has not finished yet."""
        return self.state.loading

    @property
    def paused(self) -> bool:
        """Live updates are paused."""
        return self.state.paused

    # -- reading (thread workers) ----------------------------------------------------------

    @work(thread=True, exclusive=True, group="load", exit_on_error=False)
    def load(self) -> None:
        """Scan the root: the newest page first, then the rest; then start polling."""
        try:
            self.post_message(self.ReadOnly(self.source.is_read_only()))
            cursor = self.source.cursor()
            first = True
            for page in self.source.pages(self.first_page):
                self.post_message(self.RunsLoaded(page, first=first, last=False))
                first = False
            self.post_message(self.RunsLoaded([], first=first, last=True))
            self.post_message(self.RunsChanged(Diff(), cursor))
        except Exception as error:  # noqa: BLE001 (shown to the user; the monitor keeps going)
            self.post_message(self.Failed(f"Cannot read {self.source.label}: {error}"))
            self.post_message(self.RunsLoaded([], first=False, last=True, failed=True))

    def reload_all(self) -> None:
        """Scan the whole root again (polls pause until it is done)."""
        self.state.loading = True
        self.load()

    def poll(self) -> None:
        """Ask the change feed what changed (called every `poll_interval` seconds)."""
        if self.paused or self.loading or self._polling:
            return
        self._polling = True
        active: list[str] = []
        now = time.monotonic()
        if now - self._active_refreshed >= ACTIVE_REFRESH:
            # the feed is a hint written without fsync: reread running runs now and then
            self._active_refreshed = now
            active = self._next_active()
        self._poll(self.cursor, active)

    def _next_active(self) -> list[str]:
        """Up to ACTIVE_BATCH running runs to reread, round-robin over all running runs."""
        running = sorted(r.id for r in self.index.rows.values() if r.status is RunStatus.LEASED)
        if len(running) <= ACTIVE_BATCH:
            return running
        start = bisect.bisect_right(running, self._active_mark)
        batch = (running[start:] + running[:start])[:ACTIVE_BATCH]
        self._active_mark = batch[-1]
        return batch

    @work(thread=True, group="poll", exit_on_error=False)
    def _poll(self, cursor: str | None, active: list[str]) -> None:
        try:
            diff, cursor = self.source.poll(cursor, active)
        except Exception as error:  # noqa: BLE001
            self.post_message(self.Failed(f"Cannot poll {self.source.label}: {error}"))
            diff = Diff()
        self.post_message(self.RunsChanged(diff, cursor))

    # -- applying (event loop) -------------------------------------------------------------

    def on_monitor_app_runs_loaded(self, message: RunsLoaded) -> None:
        now = self.state.clock()
        if message.first:
            self.index.replace_all(message.rows, now)
        elif message.rows:
            self.index.apply(message.rows)
        if message.failed:  # try the whole scan again in a while; polls wait for it
            self.set_timer(RETRY_LOAD, self.reload_all)
        elif message.last:
            self.state.loading = False
        self._refresh_views()
        if not message.failed:
            stage = "loaded" if message.last else "first_page"
            self.timings.setdefault(stage, time.monotonic() - self._started)

    def on_monitor_app_runs_changed(self, message: RunsChanged) -> None:
        if message.from_poll:
            self._polling = False
            self.cursor = message.cursor
        diff = message.diff
        if diff.reload:
            self.index.replace_all(diff.upserts, self.state.clock())
            changed: set[str] = {r.id for r in diff.upserts}
        else:
            changed = self.index.apply(diff.upserts, diff.removed)
        if changed or diff.reload:
            self._refresh_views()
            for screen in self.screen_stack:
                if isinstance(screen, RunDetailScreen) and self._concerns(screen.run_id, changed):
                    screen.reload()

    def _concerns(self, run_id: str, changed: set[str]) -> bool:
        """Whether a change touches run `run_id`'s detail: the run, or one of its children."""
        if run_id in changed:
            return True
        rows = self.index.rows
        return any(
            (row := rows.get(i)) is not None and run_id in (row.parent_id, row.resumed_from) for i in changed
        )

    def on_monitor_app_failed(self, message: Failed) -> None:
        if message.text != self._last_error:
            self._last_error = message.text
            self.notify(message.text, severity="error", timeout=6)

    def on_monitor_app_read_only(self, message: ReadOnly) -> None:
        self.state.root_read_only = message.read_only
        if message.read_only:
            self.notify("This root is read-only: cancel, retrigger, resume, delete and signal are hidden.")
        self.refresh_bindings()
        self._refresh_views()

    def _refresh_views(self) -> None:
        screen = self.runs_screen
        if screen is None:
            return
        for run_list in screen.query(RunList):
            run_list.sync()
            screen.refresh_header()

    def tick(self) -> None:
        """Once a second: relative times, running durations and the sparkline move on; the
        schedules view rereads the schedules."""
        stack = self.screen_stack
        if stack and isinstance(stack[-1], SchedulesScreen):
            stack[-1].tick()
        screen = self.runs_screen
        if screen is None:
            return
        for run_list in screen.query(RunList):
            run_list.tick()
            screen.refresh_header()

    # -- actions ---------------------------------------------------------------------------

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """No run actions in the workers and schedules views (they have no selected run);
        elsewhere, the actions that write are hidden when the monitor is read-only."""
        if isinstance(self.screen, WorkersScreen | SchedulesScreen) and action in _RUN_ACTIONS:
            return False
        return super().check_action(action, parameters)

    def action_pause(self) -> None:
        """Stop or resume applying changes (the feed keeps them until resumed)."""
        self.state.paused = not self.state.paused
        self.notify("Live updates paused" if self.state.paused else "Live updates resumed", timeout=2)
        self._refresh_views()

    def on_run_detail_screen_resume_from_step(self, message: RunDetailScreen.ResumeFromStep) -> None:
        row = self.index.rows.get(message.run_id)
        if row is not None:
            self.ask_resume_from(row, message.step, message.replayed)

    def get_system_commands(self, screen: Screen[object]) -> Iterable[SystemCommand]:
        """The command palette: actions on the run, the screen's own commands, Textual's."""
        yield from run_commands(self)
        if isinstance(screen, RunsScreen | RunDetailScreen):
            yield from screen.commands()
        yield from super().get_system_commands(screen)

    def after_action(self, action: str, run_ids: list[str], new_ids: list[str], *, follow: bool) -> None:
        """In the action's thread: reread the runs it touched and the new ones; with
        `follow`, the cursor (and a detail of the run) moves on to the new run."""
        try:
            diff = self.source.read([*run_ids, *new_ids])
        except Exception:  # noqa: BLE001 (the next poll will catch up)
            return
        self.post_message(self.RunsChanged(diff, None, from_poll=False))
        new = [row.id for row in diff.upserts if row.id in new_ids]
        if follow and new and run_ids:
            self.post_message(self.NewRun(run_ids[0], new[0]))

    def on_monitor_app_new_run(self, message: NewRun) -> None:
        self.show_new_run(message.run_id, message.new_id)
